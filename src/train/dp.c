/*
 * dp.c - data-parallel steps over ranks and threads with a canonical
 * gradient sum, ZeRO-1 shards, the per-tensor gradient norm (see dp.h).
 * Collectives go through src/dist.
 */
#include "dp.h"
#include "tinternal.h"
#include "../core/thread.h"
#include "../dist/dist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* An aligned tree node: the sum of units [start, start + size), size a power
 * of two, start a multiple of size (clipped at U); buf its gradient (or its
 * slice of the arena). */
typedef struct { int64_t start, size; float *buf; } node;

static void add_serial(float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] += b[i];
}

typedef struct { float *a; const float *b; } add_ctx;

static void add_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    add_ctx *c = vc;
    add_serial(c->a + i0, c->b + i0, i1 - i0);
}

/* a += b elementwise: the same bits whatever the thread split */
static void add_par(float *a, const float *b, int64_t n) {
    add_ctx c = { a, b };
    ds_par_for(n, 1 << 15, add_worker, &c);
}

/* Merges the top two nodes while they are the two halves of one node. */
static void settle(node *st, int *n, int64_t len, bool par) {
    while (*n >= 2) {
        node *a = &st[*n - 2], *b = &st[*n - 1];
        if (a->size != b->size || a->start % (2 * a->size) != 0 || a->start + a->size != b->start) break;
        if (par) add_par(a->buf, b->buf, len);
        else add_serial(a->buf, b->buf, len);
        a->size *= 2;
        (*n)--;
    }
}

/* The right edge: what is left of the tree over [0, U) once every pair of
 * siblings is merged is a run of nodes of decreasing size; the tree clipped
 * at U sums them from the right. */
static void fold_right(node *st, int n, int64_t len) {
    for (int i = n - 1; i >= 1; i--) add_par(st[i - 1].buf, st[i].buf, len);
}

static int ceil_log2(int64_t x) {
    int k = 0;
    while (((int64_t)1 << k) < x) k++;
    return k;
}

/* ---------------------------------------------------------------- setup */

int ds_dp_init(ds_dp *dp, const ds_tmodel *m, ds_err *e) {
    memset(dp, 0, sizeof *dp);
    dp->rank = ds_dist_rank();
    dp->n = ds_dist_size();
    dp->n_floats = m->n_floats;
    dp->shard = malloc((size_t)(dp->n + 1) * sizeof *dp->shard);
    if (!dp->shard) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int64_t nc = (m->n_floats + DS_ADAM_CHUNK - 1) / DS_ADAM_CHUNK;
    for (int q = 0; q <= dp->n; q++) dp->shard[q] = DS_MIN(m->n_floats, nc * q / dp->n * DS_ADAM_CHUNK);
    dp->lo = dp->shard[dp->rank];
    dp->hi = dp->shard[dp->rank + 1];
    return DS_OK;
}

void ds_dp_free(ds_dp *dp) {
    if (!dp) return;
    for (int i = 0; i < dp->n_bufs; i++) ds_free(dp->bufs[i]);
    free(dp->bufs);
    free(dp->shard);
    memset(dp, 0, sizeof *dp);
}

void ds_dp_units(const ds_dp *dp, int64_t U, int q, int64_t *u0, int64_t *u1) {
    *u0 = U * q / dp->n;
    *u1 = U * (q + 1) / dp->n;
}

/* ---------------------------------------------------------------- the units of this rank */

#define MAX_WORKERS 64

typedef struct {
    ds_dp *dp;
    ds_tmodel *m;
    const int32_t *tok;
    int64_t G, T, u0, nu, nw, depth;   /* units of G sequences of T tokens */
    ds_loss_opts o;
    ds_losses *ls;           /* [nu] */
    node *st;                /* [nw · depth] each worker's open nodes */
    int nst[MAX_WORKERS];
    int rc[MAX_WORKERS];
    ds_err err[MAX_WORKERS];
} run_ctx;

static void unit_worker(void *vc, int64_t w0, int64_t w1, int tid) {
    (void)tid;
    run_ctx *c = vc;
    int64_t nf = c->m->n_floats;
    for (int64_t w = w0; w < w1; w++) {
        int64_t a = c->u0 + c->nu * w / c->nw, b = c->u0 + c->nu * (w + 1) / c->nw;
        ds_tmodel *wm = w == 0 ? c->m : c->m->workers[w - 1];
        node *st = c->st + w * c->depth;
        int n = 0;
        for (int64_t u = a; u < b; u++) {
            if (!c->o.no_grad) memset(wm->g, 0, (size_t)nf * sizeof(float));
            int rc = tr_step_one(wm, c->tok + u * c->G * c->T, c->G, c->T, &c->o, &c->ls[u - c->u0], &c->err[w]);
            if (rc) { c->rc[w] = rc; break; }
            if (c->o.no_grad) continue;
            if (n && st[n - 1].size == 1 && st[n - 1].start % 2 == 0 && st[n - 1].start + 1 == u) {
                add_serial(st[n - 1].buf, wm->g, nf);   /* the left sibling is open: add in place */
                st[n - 1].size = 2;
            } else {
                if (n >= c->depth) { c->rc[w] = ds_err_set(&c->err[w], DS_EINVAL, "gradient tree deeper than planned"); break; }
                float **slot = &c->dp->bufs[w * c->depth + n];
                if (!*slot && !(*slot = ds_alloc_huge((size_t)nf * sizeof(float)))) {
                    c->rc[w] = ds_err_set(&c->err[w], DS_ENOMEM, "out of memory for a gradient buffer (%lld floats)",
                                          (long long)nf);
                    break;
                }
                memcpy(*slot, wm->g, (size_t)nf * sizeof(float));
                st[n++] = (node){ u, 1, *slot };
            }
            settle(st, &n, nf, false);
        }
        c->nst[w] = n;
    }
}

/* ---------------------------------------------------------------- the step */

int ds_dp_step(ds_dp *dp, ds_tmodel *m, const int32_t *tokens, int64_t U, int64_t G, int64_t T, const ds_loss_opts *o,
               ds_losses *out, ds_err *e) {
    memset(out, 0, sizeof *out);
    if (U < 1 || G < 1 || T < 2)
        return ds_err_set(e, DS_EINVAL, "a training step needs U >= 1 units of G >= 1 sequences of T >= 2 tokens");
    for (int64_t i = 0; i < U * G * T; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return ds_err_set(e, DS_ERANGE, "token id %d at position %lld is out of range (vocab_size %lld)", tokens[i],
                              (long long)i, (long long)m->cfg.vocab_size);
    int64_t u0, u1;
    ds_dp_units(dp, U, dp->rank, &u0, &u1);
    int64_t nu = u1 - u0, nf = m->n_floats;
    int nt = ds_threads_get();
    int64_t nw = DS_MAX(1, DS_MIN(DS_MIN((int64_t)nt, nu), MAX_WORKERS));
    int wrc = tr_workers_reserve(m, nw - 1, e);
    if (wrc) return wrc;
    int64_t depth = 2 * ceil_log2(U + 1) + 3;
    if (!o->no_grad && dp->n_bufs < nw * depth) {
        float **b = realloc(dp->bufs, (size_t)(nw * depth) * sizeof *b);
        if (!b) return ds_err_set(e, DS_ENOMEM, "out of memory");
        memset(b + dp->n_bufs, 0, (size_t)(nw * depth - dp->n_bufs) * sizeof *b);
        dp->bufs = b;
        dp->n_bufs = (int)(nw * depth);
    }
    run_ctx *c = calloc(1, sizeof *c);
    ds_losses *ls_all = calloc((size_t)U, sizeof *ls_all);
    node *st = calloc((size_t)(nw * depth), sizeof *st), *rn = calloc((size_t)(nw * depth), sizeof *rn);
    int64_t *off = malloc((size_t)(dp->n + 1) * sizeof *off);
    int rc = !c || !ls_all || !st || !rn || !off ? ds_err_set(e, DS_ENOMEM, "out of memory") : DS_OK;
    if (rc) goto done;
    *c = (run_ctx){ .dp = dp, .m = m, .tok = tokens, .G = G, .T = T, .u0 = u0, .nu = nu, .nw = nw, .depth = depth, .o = *o,
                    .ls = ls_all + u0, .st = st };
    c->o.grad_scale = (float)((double)o->grad_scale / (double)U);   /* each unit: its share of the mean */
    for (int64_t w = 0; w < nw; w++) ds_tmodel_reset_load(w == 0 ? m : m->workers[w - 1]);
    if (nu > 0) {
        /* one unit per thread at a time, every kernel serial inside: with a
         * single worker the env is narrowed to one thread for the same bits */
        ds_par_env *env = ds_par_env_cur();
        int saved = env ? env->n_threads : 0;
        if (nw == 1 && env) env->n_threads = 1;
        ds_par_for(nw, 1, unit_worker, c);
        if (nw == 1 && env) env->n_threads = saved;
    }
    for (int64_t w = 0; w < nw; w++)
        if (c->rc[w]) { rc = ds_err_set(e, c->rc[w], "%s", c->err[w].msg); goto done; }

    /* global losses: every unit's, summed in unit order */
    for (int q = 0; q <= dp->n; q++) off[q] = U * q / dp->n;
    if ((rc = ds_dist_allgather_rows(ls_all, sizeof *ls_all, off, e))) goto done;
    for (int64_t u = 0; u < U; u++) {
        out->loss += ls_all[u].loss;
        out->ce += ls_all[u].ce;
        out->mtp += ls_all[u].mtp;
        out->balance += ls_all[u].balance;
    }
    out->loss /= (double)U; out->ce /= (double)U; out->mtp /= (double)U; out->balance /= (double)U;
    if (o->no_grad) goto done;

    /* global expert loads: integers, exact in any order */
    int64_t nl = (m->cfg.n_layer + m->n_mtp) * DS_MAX(m->cfg.n_routed_experts, 1);
    for (int64_t w = 1; w < nw; w++)
        for (int64_t i = 0; i < nl; i++) m->load[i] += m->workers[w - 1]->load[i];
    if ((rc = ds_dist_allreduce_sum_i64(m->load, nl, e))) goto done;

    /* this rank's nodes: its workers' lists, merged where siblings meet */
    int k = 0;
    for (int64_t w = 0; w < nw; w++)
        for (int i = 0; i < c->nst[w]; i++) {
            rn[k++] = st[w * depth + i];
            settle(rn, &k, nf, true);
        }
    if (dp->n == 1) {
        fold_right(rn, k, nf);
        memcpy(m->g, rn[0].buf, (size_t)nf * sizeof(float));
        goto done;
    }
    rc = DS_OK;
    {
        /* every rank's node list, then each shard's slices to its owner */
        int N = dp->n, me = dp->rank;
        int64_t *K = calloc((size_t)(N + 1), sizeof *K), *desc = NULL;
        int64_t *cnt = calloc((size_t)(4 * N), sizeof *cnt);
        float *sendb = NULL, *recvb = NULL;
        node *all = NULL;
        int64_t len = dp->hi - dp->lo;
        if (!K || !cnt) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto xdone; }
        if ((rc = ds_dist_allgather_i64(k, K + 1, e))) goto xdone;
        K[0] = 0;
        for (int q = 0; q < N; q++) K[q + 1] += K[q];   /* now offsets: rank q's nodes are [K[q], K[q+1]) */
        int64_t ktot = K[N];
        desc = malloc((size_t)DS_MAX(ktot, 1) * 2 * sizeof *desc);
        all = calloc((size_t)DS_MAX(ktot, 1), sizeof *all);
        sendb = ds_alloc_huge((size_t)DS_MAX(k * nf, 1) * sizeof(float));
        recvb = ds_alloc_huge((size_t)DS_MAX(ktot * len, 1) * sizeof(float));
        if (!desc || !all || !sendb || !recvb) {
            rc = ds_err_set(e, DS_ENOMEM, "out of memory for the gradient exchange (%lld + %lld floats)",
                            (long long)(k * nf), (long long)(ktot * len));
            goto xdone;
        }
        for (int i = 0; i < k; i++) { desc[2 * (K[me] + i)] = rn[i].start; desc[2 * (K[me] + i) + 1] = rn[i].size; }
        if ((rc = ds_dist_allgather_rows(desc, 2 * sizeof *desc, K, e))) goto xdone;
        /* owner-major: owner q's block is [k·shard[q], k·shard[q+1]), node i at k·shard[q] + i·len_q */
        int64_t *scnt = cnt, *sdsp = cnt + N, *rcnt = cnt + 2 * N, *rdsp = cnt + 3 * N;
        for (int q = 0; q < N; q++) {
            int64_t lq = dp->shard[q + 1] - dp->shard[q];
            scnt[q] = k * lq;
            sdsp[q] = k * dp->shard[q];
            for (int i = 0; i < k; i++) memcpy(sendb + sdsp[q] + i * lq, rn[i].buf + dp->shard[q], (size_t)lq * sizeof(float));
            rcnt[q] = (K[q + 1] - K[q]) * len;
            rdsp[q] = K[q] * len;
        }
        if ((rc = ds_dist_alltoallv_f32(sendb, scnt, sdsp, recvb, rcnt, rdsp, e))) goto xdone;
        if (len > 0) {
            int ka = 0;
            for (int64_t j = 0; j < ktot; j++) {
                all[ka++] = (node){ desc[2 * j], desc[2 * j + 1], recvb + j * len };
                settle(all, &ka, len, true);
            }
            fold_right(all, ka, len);
            memcpy(m->g + dp->lo, all[0].buf, (size_t)len * sizeof(float));
        }
    xdone:
        free(K); free(desc); free(cnt); free(all);
        ds_free(sendb); ds_free(recvb);
    }
done:
    free(c); free(ls_all); free(st); free(rn); free(off);
    return rc;
}

/* ---------------------------------------------------------------- norm, gathers */

/* The norm's pieces: each trainable tensor (table order) cut where the
 * arena crosses a multiple of DS_ADAM_CHUNK, so a piece lies in one ZeRO-1
 * shard; pc[i] = (param index, arena start, end). */
typedef struct { int64_t p, a, b; } piece;

static int64_t norm_pieces(const ds_tmodel *m, piece *pc) {
    int64_t k = 0;
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        if (!p->trainable) continue;
        for (int64_t a = p->off, end = p->off + p->numel; a < end;) {
            int64_t b = DS_MIN(end, (a / DS_ADAM_CHUNK + 1) * DS_ADAM_CHUNK);
            if (pc) pc[k] = (piece){ i, a, b };
            k++;
            a = b;
        }
    }
    return k;
}

typedef struct { const float *g; const piece *pc; double *sums; const ds_dp *dp; } norm_ctx;

static void norm_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    norm_ctx *c = vc;
    for (int64_t j = i0; j < i1; j++) {
        int64_t p = c->pc[j].a, q = c->pc[j].b;
        if (p < c->dp->lo || q > c->dp->hi) continue;   /* another rank's shard: it contributes the piece */
        double l[4] = { 0 };   /* four lanes by position in the piece, folded in order */
        int64_t i = p;
        for (; i + 4 <= q; i += 4)
            for (int t = 0; t < 4; t++) l[t] += (double)c->g[i + t] * c->g[i + t];
        for (; i < q; i++) l[0] += (double)c->g[i] * c->g[i];
        c->sums[j] = (l[0] + l[1]) + (l[2] + l[3]);
    }
}

int ds_dp_grad_norm(ds_dp *dp, const ds_tmodel *m, const ds_adamw *o, double *norm, ds_err *e) {
    (void)o;
    int64_t np = norm_pieces(m, NULL);
    piece *pc = malloc((size_t)DS_MAX(np, 1) * sizeof *pc);
    double *sums = calloc((size_t)DS_MAX(np, 1), sizeof *sums);
    if (!pc || !sums) { free(pc); free(sums); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    norm_pieces(m, pc);
    norm_ctx c = { m->g, pc, sums, dp };
    ds_par_for(np, 1, norm_worker, &c);
    /* every piece came from exactly one rank (0.0 elsewhere): the sum is exact */
    int rc = ds_dist_allreduce_sum_f64(sums, np, e);
    double s = 0, t = 0;
    for (int64_t j = 0; j < np; j++) {
        t += sums[j];
        if (j + 1 == np || pc[j + 1].p != pc[j].p) { s += t; t = 0; }   /* the tensor's sum, in table order */
    }
    *norm = sqrt(s);
    free(pc);
    free(sums);
    return rc;
}

int ds_dp_allgather_params(ds_dp *dp, ds_tmodel *m, ds_err *e) { return ds_dist_allgatherv_f32(m->w, dp->shard, e); }

int ds_dp_gather_grads(ds_dp *dp, ds_tmodel *m, ds_err *e) {
    return ds_dist_gatherv_f32(m->g + dp->lo, m->g, dp->shard, e);
}

int ds_dp_gather_shards(ds_dp *dp, const float *shard_vals, float *all, ds_err *e) {
    return ds_dist_gatherv_f32(shard_vals, all, dp->shard, e);
}
