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
 * processes of the MPI job (exchange_mpi, through src/dist); with
 * m->expert_servers too, rank 0 alone runs the forward and the other ranks
 * are its expert servers (exchange_served, ds_model_serve_experts).
 */
#include "model_internal.h"
#include "../dist/dist.h"

#include <stdlib.h>
#include <string.h>

/* rank p's rows: [off[p], off[p+1]) of the packed rows (grouped by expert
 * ascending); DS_EINVAL when an expert is owned by no rank */
static int rank_runs(const ds_model *m, int64_t l, const ds_moe_slot *slot, int64_t R, int64_t *off, ds_err *e) {
    int64_t n_ranks = m->n_ranks, r = 0;
    const int64_t *bound = m->rank_experts;
    if (R > 0 && slot[0].expert < bound[0]) r = -1;
    for (int64_t p = 0; p < n_ranks && r >= 0; p++) {
        off[p] = r;
        while (r < R && slot[r].expert < bound[p + 1]) r++;
    }
    if (r != R)
        return ds_err_set(e, DS_EINVAL, "layer %lld: expert %d is owned by no process (ranks own [%lld, %lld))",
                          (long long)l, slot[r < 0 ? 0 : r].expert, (long long)bound[0], (long long)bound[n_ranks]);
    off[n_ranks] = R;
    return DS_OK;
}

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
    int rc = rank_runs(m, l, slot, R, off, e);
    if (rc) {
        ds_arena_release(a, mk);
        return rc;
    }
    rc = ds_moe_local_experts(m, l, bound[q], bound[q + 1], slot + off[q], x + off[q] * D, off[q + 1] - off[q],
                                  y + off[q] * D, sh, a, e);
    if (!rc) rc = ds_dist_allgather_rows(y, (size_t)D * sizeof(float), off, e);
    ds_arena_release(a, mk);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Expert servers (serve on N ranks).
 *
 * Design, for `mpirun -np N deepseek serve`: rank 0 owns HTTP, the
 * scheduler, every KV cache, the prefix and disk caches and runs the whole
 * forward alone (attention, dense layers, router, shared experts, its own
 * share of the routed experts); ranks > 0 hold no state but their experts'
 * weights and answer one request per MoE layer: the routed rows for their
 * experts (slots + rows, the run of the packed rows exchange_mpi would
 * hand them) in, their outputs back into the same packed positions. The
 * expert math and the combine order are those of exchange_mpi, so the
 * logits are bit-identical to one process. The alternative, every rank
 * mirroring the scheduler's batch plan and KV mutations (prefix-cache
 * copies, disk loads, MTP drafts, frees) to run the same forward, would
 * replicate attention work that buys no speed (each rank would do all of
 * it) for a protocol as wide as the scheduler; here the protocol is one
 * message each way per MoE layer and rank, the same bytes as the
 * all-gather moves, and workers need no KV memory.
 *
 * Messages (tags below): rank 0 -> q: DS_SRV_ROWS [int64 layer, int64 n]
 * + slot[n] + x (n, D) f32; q -> 0: DS_SRV_OUT [int64 status] + y (n, D)
 * f32, or on failure [status] + the error message; 0 -> q: DS_SRV_STOP. */
enum { DS_SRV_ROWS = 71, DS_SRV_OUT = 72, DS_SRV_STOP = 73 };
#define SRV_HDR (2 * sizeof(int64_t))

static size_t reply_bytes(int64_t n, int64_t D) {
    return sizeof(int64_t) + DS_MAX((size_t)(n * D) * sizeof(float), sizeof(((ds_err *)0)->msg));
}

static int exchange_served(const ds_model *m, int64_t l, const ds_moe_slot *slot, const float *x, int64_t R, float *y,
                           const ds_moe_shared *sh, ds_arena *a, ds_err *e) {
    int64_t D = m->cfg.hidden_size, n_ranks = m->n_ranks;
    const int64_t *bound = m->rank_experts;
    ds_arena_mark mk = ds_arena_get_mark(a);
    int64_t *off = ds_arena_array(a, (size_t)n_ranks + 1, sizeof(int64_t));
    char **msg = ds_arena_calloc(a, (size_t)n_ranks, sizeof(char *));      /* [q]: request, then reply */
    ds_dist_req *req = ds_arena_calloc(a, (size_t)n_ranks, sizeof(ds_dist_req));
    if (!off || !msg || !req) return ds_err_set(e, DS_ENOMEM, "out of memory in the expert exchange of layer %lld", (long long)l);
    int rc = rank_runs(m, l, slot, R, off, e);
    int64_t q_sent = 1;   /* requests [1, q_sent) are in flight */
    for (int64_t q = 1; !rc && q < n_ranks; q++, q_sent = q) {
        int64_t n = off[q + 1] - off[q];
        if (n == 0) continue;   /* nothing for rank q in this layer */
        size_t bytes = SRV_HDR + (size_t)n * sizeof(ds_moe_slot) + (size_t)(n * D) * sizeof(float);
        if (!(msg[q] = ds_arena_array(a, DS_MAX(bytes, reply_bytes(n, D)), 1))) {
            rc = ds_err_set(e, DS_ENOMEM, "out of memory in the expert exchange of layer %lld", (long long)l);
            break;
        }
        int64_t hdr[2] = { l, n };
        memcpy(msg[q], hdr, SRV_HDR);
        memcpy(msg[q] + SRV_HDR, slot + off[q], (size_t)n * sizeof(ds_moe_slot));
        memcpy(msg[q] + SRV_HDR + (size_t)n * sizeof(ds_moe_slot), x + off[q] * D, (size_t)(n * D) * sizeof(float));
        rc = ds_dist_isend((int)q, DS_SRV_ROWS, msg[q], bytes, &req[q], e);
        if (rc) msg[q] = NULL;
    }
    /* The requests are delivered before rank 0 turns to its own experts:
     * a message above the transport's eager size moves only while the
     * sender is inside MPI (shared memory without single-copy, TCP), so
     * returning to compute right after the send would leave the other ranks
     * waiting for their rows until rank 0 had finished its own experts. */
    for (int64_t q = 1; !rc && q < q_sent; q++)
        if (msg[q]) rc = ds_dist_wait(&req[q], e);
    /* rank 0's own experts (and the shared ones) while the other ranks run theirs */
    if (!rc)
        rc = ds_moe_local_experts(m, l, bound[0], bound[1], slot + off[0], x + off[0] * D, off[1] - off[0],
                                  y + off[0] * D, sh, a, e);
    /* every request in flight is answered and waited for, even after an error */
    for (int64_t q = 1; q < q_sent; q++) {
        if (!msg[q]) continue;
        int64_t n = off[q + 1] - off[q];
        ds_err e2 = { 0 };
        int rc2 = ds_dist_wait(&req[q], &e2);   /* done already unless the loop above stopped early */
        size_t got = 0;
        if (!rc2) rc2 = ds_dist_recv((int)q, DS_SRV_OUT, msg[q], reply_bytes(n, D), &got, &e2);
        int64_t st = 0;
        if (!rc2 && got >= sizeof st) memcpy(&st, msg[q], sizeof st);
        if (!rc2 && st != 0) {
            char *text = msg[q] + sizeof st;
            if (got > sizeof st) text[DS_MIN(got - sizeof st, sizeof e2.msg) - 1] = 0;
            else text = "(no message)";
            rc2 = ds_err_set(&e2, (int)st, "rank %lld of %lld (expert server): %s", (long long)q, (long long)n_ranks, text);
        } else if (!rc2 && got != sizeof st + (size_t)(n * D) * sizeof(float)) {
            rc2 = ds_err_set(&e2, DS_EIO, "rank %lld of %lld (expert server): reply of %zu bytes for %lld rows of layer %lld",
                             (long long)q, (long long)n_ranks, got, (long long)n, (long long)l);
        }
        if (!rc2) memcpy(y + off[q] * D, msg[q] + sizeof st, (size_t)(n * D) * sizeof(float));
        if (rc2 && !rc) {
            rc = rc2;
            *e = e2;
        }
    }
    ds_arena_release(a, mk);
    return rc;
}

/* One request on an expert server: checks it, runs the local experts into
 * out + 8 (n, D). */
static int serve_one(const ds_model *m, const char *in, size_t bytes, char *out, ds_arena *a, ds_err *e) {
    int64_t D = m->cfg.hidden_size, hdr[2];
    if (bytes < SRV_HDR) return ds_err_set(e, DS_EINVAL, "expert request of %zu bytes (no header)", bytes);
    memcpy(hdr, in, SRV_HDR);
    int64_t l = hdr[0], n = hdr[1], L = m->cfg.n_layer + m->n_mtp;
    if (l < 0 || l >= L || !m->layers[l].experts)
        return ds_err_set(e, DS_EINVAL, "expert request for layer %lld, which is not a MoE layer of this model", (long long)l);
    if (n < 1 || bytes != SRV_HDR + (size_t)n * (sizeof(ds_moe_slot) + (size_t)D * sizeof(float)))
        return ds_err_set(e, DS_EINVAL, "expert request for layer %lld: %lld rows in %zu bytes", (long long)l, (long long)n, bytes);
    /* the rows follow 8-byte aligned slots: copy them to aligned memory */
    ds_moe_slot *slot = ds_arena_array(a, (size_t)n, sizeof *slot);
    float *x = ds_arena_array(a, (size_t)(n * D), sizeof(float));
    if (!slot || !x) return ds_err_set(e, DS_ENOMEM, "out of memory for %lld rows of layer %lld", (long long)n, (long long)l);
    memcpy(slot, in + SRV_HDR, (size_t)n * sizeof *slot);
    memcpy(x, in + SRV_HDR + (size_t)n * sizeof *slot, (size_t)(n * D) * sizeof(float));
    float *y = ds_arena_array(a, (size_t)(n * D), sizeof(float));
    if (!y) return ds_err_set(e, DS_ENOMEM, "out of memory for %lld rows of layer %lld", (long long)n, (long long)l);
    int rc = ds_moe_local_experts(m, l, m->expert_lo, m->expert_hi, slot, x, n, y, NULL, a, e);
    if (!rc) memcpy(out + sizeof(int64_t), y, (size_t)(n * D) * sizeof(float));
    return rc;
}

int ds_model_serve_experts(const ds_model *m, ds_err *e) {
    if (!m->distributed || !m->expert_servers || ds_dist_rank() == 0)
        return ds_err_set(e, DS_EINVAL, "ds_model_serve_experts: not an expert server (rank > 0 of a model opened with expert_servers)");
    int64_t D = m->cfg.hidden_size;
    ds_ctx *cx = NULL;
    int rc = ds_ctx_new(&cx, e);
    char *in = NULL, *out = NULL;
    size_t in_cap = 0, out_cap = 0;
    while (!rc) {
        int tag;
        size_t bytes;
        if ((rc = ds_dist_probe(0, &tag, &bytes, e))) break;
        if (tag == DS_SRV_STOP) {
            rc = ds_dist_recv(0, DS_SRV_STOP, NULL, 0, NULL, e);
            break;
        }
        if (bytes > in_cap) {
            free(in);
            if (!(in = malloc(bytes))) { rc = ds_err_set(e, DS_ENOMEM, "out of memory for an expert request of %zu bytes", bytes); break; }
            in_cap = bytes;
        }
        if ((rc = ds_dist_recv(0, tag, in, bytes, NULL, e))) break;
        if (tag != DS_SRV_ROWS) {
            rc = ds_err_set(e, DS_EIO, "expert server: unexpected message (tag %d) from rank 0", tag);
            break;
        }
        int64_t n = 0;
        if (bytes >= SRV_HDR) memcpy(&n, in + sizeof(int64_t), sizeof n);
        size_t rb = reply_bytes(n > 0 && bytes >= SRV_HDR + (size_t)n * sizeof(ds_moe_slot) ? n : 0, D);
        if (rb > out_cap) {
            free(out);
            if (!(out = malloc(rb))) { rc = ds_err_set(e, DS_ENOMEM, "out of memory for an expert reply of %zu bytes", rb); break; }
            out_cap = rb;
        }
        /* the forward's scratch discipline: arena reset per request, this context's kernel scratch bound */
        ds_arena_reset(&cx->arena);
        cx->env.failed = false;
        ds_par_env *prev = ds_par_env_bind(&cx->env);
        ds_err e1 = { 0 };
        int r1 = serve_one(m, in, bytes, out, &cx->arena, &e1);
        ds_par_env_bind(prev);
        if (!r1 && cx->env.failed) r1 = ds_err_set(&e1, DS_ENOMEM, "out of memory for kernel scratch");
        int64_t st = r1;
        memcpy(out, &st, sizeof st);
        size_t len = sizeof st + (size_t)(n * D) * sizeof(float);
        if (r1) {   /* the error goes back to rank 0, which fails the step with it */
            size_t ml = strlen(e1.msg) + 1;
            memcpy(out + sizeof st, e1.msg, ml);
            len = sizeof st + ml;
        }
        ds_dist_req rq;
        if ((rc = ds_dist_isend(0, DS_SRV_OUT, out, len, &rq, e)) || (rc = ds_dist_wait(&rq, e))) break;
    }
    free(in);
    free(out);
    ds_ctx_free(cx);
    return rc;
}

int ds_model_stop_expert_servers(ds_err *e) {
    for (int q = 1; q < ds_dist_size(); q++) {
        ds_dist_req rq;
        int rc = ds_dist_isend(q, DS_SRV_STOP, NULL, 0, &rq, e);
        if (!rc) rc = ds_dist_wait(&rq, e);
        if (rc) return rc;
    }
    return DS_OK;
}

int ds_moe_exchange(const ds_model *m, int64_t l, const ds_moe_slot *slot, const float *x, int64_t R, float *y,
                    const ds_moe_shared *sh, ds_arena *a, ds_err *e) {
    if (m->distributed && m->expert_servers) return exchange_served(m, l, slot, x, R, y, sh, a, e);
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
