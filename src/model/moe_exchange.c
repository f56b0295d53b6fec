/*
 * moe_exchange.c - the expert exchange of the MoE pipeline (see
 * model_internal.h): routed rows out to the processes owning their
 * experts, expert outputs back.
 *
 * Ranks own contiguous, ascending expert ranges (m->rank_experts; without
 * it this process, [expert_lo, expert_hi), is the only one), so the rows
 * for rank q are one contiguous run of the packed rows. In one process
 * every rank is served here: its rows and their bookkeeping are copied
 * out (what a send would carry), its local experts run, and the outputs
 * are copied back into their packed positions (what a receive would
 * deliver). An MPI layer replaces the copies with an all-to-all each way.
 */
#include "model_internal.h"

#include <string.h>

int ds_moe_exchange(const ds_model *m, int64_t l, const ds_moe_slot *slot, const float *x, int64_t R, float *y,
                    ds_arena *a, ds_err *e) {
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
        ds_arena_mark mk = ds_arena_get_mark(a);
        /* send: the rows and their bookkeeping */
        ds_moe_slot *rs = ds_arena_array(a, (size_t)n, sizeof *rs);            /* (n) */
        float *rx = ds_arena_array(a, (size_t)(n * D), sizeof(float));          /* (n, D) */
        float *ry = ds_arena_array(a, (size_t)(n * D), sizeof(float));          /* (n, D) */
        if (!rs || !rx || !ry) return ds_err_set(e, DS_ENOMEM, "out of memory in the expert exchange");
        memcpy(rs, slot + r0, (size_t)n * sizeof *rs);
        memcpy(rx, x + r0 * D, (size_t)(n * D) * sizeof(float));
        /* the owner computes */
        int rc = ds_moe_local_experts(m, l, bound[q], bound[q + 1], rs, rx, n, ry, a, e);
        if (rc) return rc;
        /* receive: outputs back at the rows' packed positions */
        memcpy(y + r0 * D, ry, (size_t)(n * D) * sizeof(float));
        ds_arena_release(a, mk);
        r0 = r1;
    }
    if (r0 < R)
        return ds_err_set(e, DS_EINVAL, "layer %lld: expert %d is owned by no process (ranks own [%lld, %lld))",
                          (long long)l, slot[r0].expert, (long long)bound[0], (long long)bound[n_ranks]);
    return DS_OK;
}
