/*
 * moe_exchange.c - the expert exchange of the MoE pipeline (see
 * model_internal.h): routed rows out to the processes owning their
 * experts, expert outputs back.
 *
 * Ranks own contiguous, ascending expert ranges (m->rank_experts; without
 * it this process, [expert_lo, expert_hi), is the only one), so the rows
 * for rank q are one contiguous run of the packed rows. In one process
 * every rank is served here: its run of rows and their bookkeeping is
 * what a send would carry and is handed over in place (no copy), its
 * local experts run, and the outputs land at the run's packed positions
 * (what a receive would deliver). With m->distributed the ranks are the
 * processes of the MPI job (exchange_mpi, through src/dist).
 */
#include "model_internal.h"
#include "../dist/dist.h"

/* Across the processes of the MPI job: every rank holds the same packed
 * rows (attention, router and pack are replicated, on the same tokens), so
 * the rows need no sending; each rank runs its own experts on its run of
 * rows (and its shared experts), then an all-gather hands every rank the
 * outputs of all runs at their packed positions. The combine then adds
 * them in the fixed packed order on every rank. */
static int exchange_mpi(const ds_model *m, int64_t l, const ds_moe_slot *slot, const float *x, int64_t R, float *y,
                        const ds_moe_shared *sh, ds_arena *a, ds_err *e) {
    int64_t D = m->cfg.hidden_size, n_ranks = m->n_ranks, q = ds_dist_rank();
    const int64_t *bound = m->rank_experts;
    ds_arena_mark mk = ds_arena_get_mark(a);
    int64_t *off = ds_arena_array(a, (size_t)n_ranks + 1, sizeof(int64_t));  /* rank p's rows: [off[p], off[p+1]) */
    if (!off) return ds_err_set(e, DS_ENOMEM, "out of memory in the expert exchange of layer %lld", (long long)l);
    int64_t r = 0;
    if (R > 0 && slot[0].expert < bound[0]) r = -1;
    for (int64_t p = 0; p < n_ranks && r >= 0; p++) {
        off[p] = r;
        while (r < R && slot[r].expert < bound[p + 1]) r++;
    }
    if (r != R) {
        ds_arena_release(a, mk);
        return ds_err_set(e, DS_EINVAL, "layer %lld: expert %d is owned by no process (ranks own [%lld, %lld))",
                          (long long)l, slot[r < 0 ? 0 : r].expert, (long long)bound[0], (long long)bound[n_ranks]);
    }
    off[n_ranks] = R;
    int rc = ds_moe_local_experts(m, l, bound[q], bound[q + 1], slot + off[q], x + off[q] * D, off[q + 1] - off[q],
                                  y + off[q] * D, sh, a, e);
    if (!rc) rc = ds_dist_allgather_rows(y, (size_t)D * sizeof(float), off, e);
    ds_arena_release(a, mk);
    return rc;
}

int ds_moe_exchange(const ds_model *m, int64_t l, const ds_moe_slot *slot, const float *x, int64_t R, float *y,
                    const ds_moe_shared *sh, ds_arena *a, ds_err *e) {
    if (m->distributed) return exchange_mpi(m, l, slot, x, R, y, sh, a, e);
    int64_t D = m->cfg.hidden_size;
    int64_t own[2] = { m->expert_lo, m->expert_hi };
    const int64_t *bound = m->n_ranks > 0 ? m->rank_experts : own;  /* rank q owns [bound[q], bound[q+1]) */
    int64_t n_ranks = m->n_ranks > 0 ? m->n_ranks : 1, r0 = 0;
    for (int64_t q = 0; q < n_ranks && r0 < R; q++) {
        if (slot[r0].expert < bound[q]) break;  /* below this rank's range: owned by none */
        int64_t r1 = r0;
        while (r1 < R && slot[r1].expert < bound[q + 1]) r1++;
        int64_t n = r1 - r0;
        if (n == 0) continue;
        /* in one process the rank's rows are sent and its outputs received
         * in place: the slices themselves, bookkeeping included */
        int rc = ds_moe_local_experts(m, l, bound[q], bound[q + 1], slot + r0, x + r0 * D, n, y + r0 * D, sh, a, e);
        if (rc) return rc;
        sh = NULL;  /* run once, with the first rank served here */
        r0 = r1;
    }
    int rc;
    if (sh && (rc = ds_moe_local_experts(m, l, 0, 0, NULL, NULL, 0, NULL, sh, a, e))) return rc;
    if (r0 < R)
        return ds_err_set(e, DS_EINVAL, "layer %lld: expert %d is owned by no process (ranks own [%lld, %lld))",
                          (long long)l, slot[r0].expert, (long long)bound[0], (long long)bound[n_ranks]);
    return DS_OK;
}
