/*
 * dp.c - data-parallel steps over ranks and threads with a canonical
 * gradient sum, ZeRO-1 shards, the per-tensor gradient norm (see dp.h).
 * Collectives go through src/dist.
 */
#include "dp.h"
#include "tgemm.h"
#include "tinternal.h"
#include "tops.h"
#include "../core/thread.h"
#include "../dist/dist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* An aligned tree node: the sum of units [start, start + size), size a power
 * of two, start a multiple of size (clipped at U); buf its gradient (or its
 * slice of the arena). */
typedef struct { int64_t start, size; float *buf; } node;

/* The owner's side of the expert weight gradients (dp.h): per source rank p
 * a stack of tree nodes over p's units (contiguous, in order), each node
 * this rank's expert region (nx floats); at the end of the step the
 * sources' nodes are merged in source order: the fixed tree over all units. */
struct ds_dp_ep {
    int64_t nx, depth;       /* expert region floats; stack depth per source */
    node *st;                /* [n · depth] */
    int *nst;                /* [n] */
    float **pool;            /* free node buffers (nx floats each) */
    int npool, cap;
};

/* a += b elementwise (vectorized, the same bits as the plain loop) */
static void add_serial(float *a, const float *b, int64_t n) { tr_vec_add(a, b, n); }

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

/* a += b, then b = 0, in L2-sized chunks (b's lines are zeroed while still
 * cached, instead of a later memset over the whole cold arena); a's bits
 * are tr_vec_add's */
static void add_zero(float *a, float *b, int64_t n) {
    const int64_t ch = 1 << 14;
    for (int64_t i = 0; i < n; i += ch) {
        int64_t m = DS_MIN(ch, n - i);
        tr_vec_add(a + i, b + i, m);
        memset(b + i, 0, (size_t)m * sizeof(float));
    }
}

/* memset of the ranges [r[2i], r[2i + 1]) of buf, i < nr */
static void zero_ranges(float *buf, const int64_t *r, int nr) {
    for (int i = 0; i < nr; i++) memset(buf + r[2 * i], 0, (size_t)(r[2 * i + 1] - r[2 * i]) * sizeof(float));
}

/* Merges the top two nodes while they are the two halves of one node. With
 * zeroed (a unit worker's stack: serial), each merged right half is left
 * zeroed — all of it (add_zero), or with rest (direct mode: the other
 * tensors are written before they are read) only the n_rest ranges rest —
 * and zeroed[its stack position] set, for positions < 64; without, par says
 * whether the adds are split over threads. */
static void settle(node *st, int *n, int64_t len, bool par, bool *zeroed, const int64_t *rest, int n_rest) {
    while (*n >= 2) {
        node *a = &st[*n - 2], *b = &st[*n - 1];
        if (a->size != b->size || a->start % (2 * a->size) != 0 || a->start + a->size != b->start) break;
        if (zeroed && !rest) add_zero(a->buf, b->buf, len);
        else if (par) add_par(a->buf, b->buf, len);
        else add_serial(a->buf, b->buf, len);
        if (zeroed) {
            if (rest) zero_ranges(b->buf, rest, n_rest);
            if (*n - 1 < 64) zeroed[*n - 1] = true;
        }
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

static void ep_sum_free(ds_dp_ep *s);

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
    dp->n_floats = m->n_rep;   /* the tree and the ZeRO-1 shards: the replicated region */
    if (m->ep_n > 1 && (m->ep_n != dp->n || m->ep_rank != dp->rank))
        return ds_err_set(e, DS_EINVAL, "the model holds the experts of rank %d of %d, but this is rank %d of %d",
                          m->ep_rank, m->ep_n, dp->rank, dp->n);
    dp->shard = malloc((size_t)(dp->n + 1) * sizeof *dp->shard);
    if (!dp->shard) return ds_err_set(e, DS_ENOMEM, "out of memory");
    if (m->ep_n <= 1) {
        int64_t nc = (m->n_floats + DS_ADAM_CHUNK - 1) / DS_ADAM_CHUNK;
        for (int q = 0; q <= dp->n; q++) dp->shard[q] = DS_MIN(m->n_floats, nc * q / dp->n * DS_ADAM_CHUNK);
    } else {
        /* cut where the one-process arena crosses a DS_ADAM_CHUNK multiple
         * inside a replicated tensor: every piece of the norm stays whole */
        int64_t nk = 1, *cut;
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1) {
                if (!(cut = malloc((size_t)(nk + 1) * sizeof *cut))) return ds_err_set(e, DS_ENOMEM, "out of memory");
                nk = 0;
                cut[nk++] = 0;
            }
            for (int64_t i = 0; i < m->n_params; i++) {
                const ds_tparam *p = &m->params[i];
                if (p->off < 0 || p->off >= m->n_rep) continue;
                for (int64_t c0 = (p->coff / DS_ADAM_CHUNK + 1) * DS_ADAM_CHUNK; c0 < p->coff + p->numel; c0 += DS_ADAM_CHUNK) {
                    if (pass == 1) cut[nk] = p->off + (c0 - p->coff);
                    nk++;
                }
            }
        }
        cut[nk] = m->n_rep;   /* cuts [0, nk]: nk pieces */
        for (int q = 0; q <= dp->n; q++) dp->shard[q] = cut[nk * q / dp->n];
        free(cut);
        if (!(dp->ep = calloc(1, sizeof *dp->ep)) || !(dp->ep->nst = calloc((size_t)dp->n, sizeof(int))))
            return ds_err_set(e, DS_ENOMEM, "out of memory");
        if (!m->ep) {
            int rc = tr_ep_init((ds_tmodel *)m, e);
            if (rc) return rc;
        }
    }
    dp->lo = dp->shard[dp->rank];
    dp->hi = dp->shard[dp->rank + 1];
    return DS_OK;
}

void ds_dp_free(ds_dp *dp) {
    if (!dp) return;
    for (int i = 0; i < dp->n_bufs; i++) ds_free(dp->bufs[i]);
    free(dp->bufs);
    free(dp->shard);
    ep_sum_free(dp->ep);
    tr_gemm_freeze_release();   /* the packed weight panels of its steps */
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
    const bool *direct;      /* [n_params] or NULL: a right sibling adds these tensors' gradients straight into
                              * its left sibling's node (tr_param_one_product, tr_linear_dw_once) */
    const int64_t *rest;     /* [2 · n_rest] arena ranges [a, b) holding every other tensor (the rest is zero) */
    int n_rest;
    const int64_t *dten;     /* [2 · n_dten] the direct tensors' [off, off + numel), ascending */
    int n_dten;
    bool *written;           /* [nw · n_dten] per worker: which of them the current opener has written */
    int nst[MAX_WORKERS];
    int rc[MAX_WORKERS];
    ds_err err[MAX_WORKERS];
} run_ctx;

/* An opening unit's first writes: dW = dyᵀ·x (tr_set_dw_hook) for a product
 * that covers whole direct tensors not yet written; afterwards the direct
 * tensors it never wrote (an expert without rows) are zeroed. */
typedef struct { const run_ctx *c; const float *base; bool *written; } first_ctx;

static bool first_write(void *vc, const float *dW, int64_t n) {
    first_ctx *f = vc;
    const run_ctx *c = f->c;
    if (dW < f->base || dW + n > f->base + c->dp->n_floats) return false;
    int64_t off = dW - f->base, lo = 0, hi = c->n_dten;
    while (lo < hi) {   /* the first direct tensor starting at or after off */
        int64_t mid = (lo + hi) / 2;
        if (c->dten[2 * mid] < off) lo = mid + 1; else hi = mid;
    }
    int64_t k = lo, end = off;
    for (; end < off + n; k++)
        if (k >= c->n_dten || c->dten[2 * k] != end || f->written[k]) return false;
        else end = c->dten[2 * k + 1];
    if (end != off + n) return false;
    for (int64_t j = lo; j < k; j++) f->written[j] = true;
    return true;
}

/* A unit that opens a node computes its gradient straight into the node's
 * buffer (slot = stack position; the gradient pointers rebound to it); a
 * right sibling of an open node computes into the model's own arena and is
 * added in place. Either way the node holds left + right, as the tree says.
 * With c->direct, a right sibling's linear weights accumulate straight into
 * the open node: each gets one dW += dyᵀ·x with one rounding, left + s, the
 * bits of left + (0 + s) (tgemm.h tr_gemm_acc_once); only the other
 * tensors (c->rest: embeddings, heads, norms) go through the own arena.
 * And an opening unit writes its direct tensors (first_write) instead of adding
 * them to zeros (s, the bits of 0 + s: s is summed from +0, never −0), so a
 * node buffer needs only c->rest zeroed (zero[]: c->rest is zero there).
 * A buffer added into another is left zeroed (add_zero), so the next unit
 * to use it in this step skips the arena-wide memset (zero[] per stack
 * position, own_zero for the own arena; nothing known at a step's start). */
static void unit_worker(void *vc, int64_t w0, int64_t w1, int tid) {
    (void)tid;
    run_ctx *c = vc;
    int64_t nf = c->dp->n_floats;
    for (int64_t w = w0; w < w1; w++) {
        int64_t a = c->u0 + c->nu * w / c->nw, b = c->u0 + c->nu * (w + 1) / c->nw;
        ds_tmodel *wm = w == 0 ? c->m : c->m->workers[w - 1];
        float *own = wm->g;
        node *st = c->st + w * c->depth;
        int n = 0;
        bool own_zero = false, zero[64] = { 0 };   /* depth <= 2·63 + 3 stack slots: see ds_dp_step */
        bool split = false;   /* wm's gradients bound partly into an open node (c->direct) */
        DS_ASSERT(c->depth <= 64 * 2);
        for (int64_t u = a; u < b; u++) {
            bool right = n && st[n - 1].size == 1 && st[n - 1].start % 2 == 0 && st[n - 1].start + 1 == u;
            float *dst = own;
            if (!c->o.no_grad && !right) {
                if (n >= c->depth) { c->rc[w] = ds_err_set(&c->err[w], DS_EINVAL, "gradient tree deeper than planned"); break; }
                float **slot = &c->dp->bufs[w * c->depth + n];
                if (!*slot && !(*slot = ds_alloc_huge((size_t)nf * sizeof(float)))) {
                    c->rc[w] = ds_err_set(&c->err[w], DS_ENOMEM, "out of memory for a gradient buffer (%lld floats)",
                                          (long long)nf);
                    break;
                }
                dst = *slot;
            }
            if (!c->o.no_grad) {
                bool *z = right ? &own_zero : n < 64 ? &zero[n] : NULL;
                if (z && *z) {
                } else if (c->direct) {   /* the direct tensors: written first (opener) or untouched (own arena) */
                    zero_ranges(dst, c->rest, c->n_rest);
                } else {
                    memset(dst, 0, (size_t)nf * sizeof(float));
                }
                if (z) *z = false;
                if (right && c->direct) {
                    tr_bind_grad_split(wm, dst, st[n - 1].buf, c->direct);
                    split = true;
                } else if (wm->g != dst || split) {
                    tr_bind_grad(wm, dst);
                    split = false;
                }
            }
            bool first = c->direct && !c->o.no_grad && !right;
            first_ctx fc = { c, dst, first ? c->written + w * c->n_dten : NULL };   /* written: NULL without direct tensors */
            if (first) {
                memset(fc.written, 0, (size_t)c->n_dten * sizeof(bool));
                tr_set_dw_hook(first_write, &fc);
            }
            int rc = tr_step_one(wm, c->tok + u * c->G * c->T, c->G, c->T, &c->o, &c->ls[u - c->u0], &c->err[w]);
            if (first) {
                tr_set_dw_hook(NULL, NULL);
                for (int i = 0; i < c->n_dten; i++)
                    if (!fc.written[i])
                        memset(dst + c->dten[2 * i], 0, (size_t)(c->dten[2 * i + 1] - c->dten[2 * i]) * sizeof(float));
            }
            if (rc) { c->rc[w] = rc; break; }
            if (c->o.no_grad) continue;
            if (right) {   /* the left sibling is open: add in place */
                if (c->direct)
                    for (int i = 0; i < c->n_rest; i++)
                        add_zero(st[n - 1].buf + c->rest[2 * i], dst + c->rest[2 * i], c->rest[2 * i + 1] - c->rest[2 * i]);
                else
                    add_zero(st[n - 1].buf, dst, nf);
                own_zero = true;
                st[n - 1].size = 2;
            } else {
                st[n++] = (node){ u, 1, dst };
            }
            /* the merged right halves left zeroed, except after the worker's last unit (no
             * later unit of this step reuses them; the next step zeroes what it needs) */
            settle(st, &n, nf, false, u + 1 < b ? zero : NULL, c->direct ? c->rest : NULL, c->n_rest);
        }
        if (wm->g != own || split) tr_bind_grad(wm, own);
        c->nst[w] = n;
    }
}


/* ---------------------------------------------------------------- expert parallel rounds */

static void ep_sum_free(ds_dp_ep *s) {
    if (!s) return;
    for (int i = 0; i < s->npool; i++) ds_free(s->pool[i]);
    free(s->pool); free(s->st); free(s->nst); free(s);
}

static float *ep_buf(ds_dp_ep *s, ds_err *e) {
    if (s->npool > 0) return s->pool[--s->npool];
    float *b = ds_alloc_huge((size_t)DS_MAX(s->nx, 1) * sizeof(float));
    if (!b) ds_err_set(e, DS_ENOMEM, "out of memory for an expert gradient node (%lld floats)", (long long)s->nx);
    return b;
}

static int ep_unbuf(ds_dp_ep *s, float *b, ds_err *e) {
    if (s->npool == s->cap) {
        int nc = s->cap * 2 + 8;
        float **p = realloc(s->pool, (size_t)nc * sizeof *p);
        if (!p) { ds_free(b); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
        s->pool = p, s->cap = nc;
    }
    s->pool[s->npool++] = b;
    return DS_OK;
}

/* After round r: every source's r-th unit's expert gradient (ep->gsrc[p])
 * onto p's stack. */
static int ep_push_sources(ds_dp *dp, ds_tmodel *m, int64_t U, int64_t r, ds_err *e) {
    ds_dp_ep *s = dp->ep;
    tr_ep *ep = m->ep;
    if (s->nx == 0) return DS_OK;
    for (int p = 0; p < dp->n; p++) {
        int64_t a, b;
        ds_dp_units(dp, U, p, &a, &b);
        if (r >= b - a) continue;   /* source p had no unit this round */
        float *buf = ep_buf(s, e);
        if (!buf) return DS_ENOMEM;
        memcpy(buf, ep->gsrc[p], (size_t)s->nx * sizeof(float));
        node *st = s->st + p * s->depth;
        int *n = &s->nst[p];
        if (*n >= s->depth) return ds_err_set(e, DS_EINVAL, "expert gradient tree deeper than planned");
        st[(*n)++] = (node){ a + r, 1, buf };
        int before = *n;
        settle(st, n, s->nx, false, NULL, NULL, 0);
        for (int i = *n; i < before; i++)   /* the merged right halves */
            if (ep_unbuf(s, st[i].buf, e)) return DS_ENOMEM;
    }
    return DS_OK;
}

/* Every source's nodes, in source order, summed into out[nx]. */
static int ep_finish_sources(ds_dp *dp, float *out, ds_err *e) {
    ds_dp_ep *s = dp->ep;
    int k = 0, tot = 0, rc = DS_OK;
    for (int p = 0; p < dp->n; p++) tot += s->nst[p];
    node *all = calloc((size_t)DS_MAX(tot, 1), sizeof *all);
    if (!all) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (int p = 0; p < dp->n; p++)
        for (int i = 0; i < s->nst[p]; i++) {
            all[k++] = s->st[p * s->depth + i];
            settle(all, &k, s->nx, true, NULL, NULL, 0);
        }
    if (k > 0) {
        fold_right(all, k, s->nx);
        memcpy(out, all[0].buf, (size_t)s->nx * sizeof(float));
    } else memset(out, 0, (size_t)s->nx * sizeof(float));
    for (int p = 0; p < dp->n; p++) {   /* every node buffer back to the pool */
        for (int i = 0; i < s->nst[p] && !rc; i++) rc = ep_unbuf(s, s->st[p * s->depth + i].buf, e);
        s->nst[p] = 0;
    }
    free(all);
    return rc;
}

static int ep_sum_begin(ds_dp *dp, const ds_tmodel *m, int64_t U, ds_err *e) {
    ds_dp_ep *s = dp->ep;
    int64_t depth = 2 * ceil_log2(U + 1) + 3;
    s->nx = m->n_floats - m->n_rep;
    if (depth > s->depth) {
        free(s->st);
        s->depth = depth;
        s->st = calloc((size_t)(dp->n * depth), sizeof *s->st);
        if (!s->st) return ds_err_set(e, DS_ENOMEM, "out of memory");
    }
    memset(s->nst, 0, (size_t)dp->n * sizeof *s->nst);
    return DS_OK;
}

/* Lockstep rounds: in round r every rank runs its r-th unit, or, past its
 * last, a throw-away one that sends no rows but still serves its experts
 * (units per rank differ by at most one). One worker, serial kernels. */
static int ep_units(run_ctx *c, int64_t U, ds_err *e) {
    ds_tmodel *m = c->m;
    tr_ep *ep = m->ep;
    int64_t nt = c->dp->n_floats, nx = m->n_floats - m->n_rep, R = (U + c->dp->n - 1) / c->dp->n;
    int64_t nl = (m->cfg.n_layer + m->n_mtp) * DS_MAX(m->cfg.n_routed_experts, 1);
    int64_t *saved = malloc((size_t)nl * sizeof *saved);
    if (!saved) return ds_err_set(e, DS_ENOMEM, "out of memory");
    node *st = c->st;
    int n = 0, rc = c->o.no_grad ? DS_OK : ep_sum_begin(c->dp, m, U, e);
    for (int64_t r = 0; r < R && !rc; r++) {
        bool idle = r >= c->nu;
        int64_t u = c->u0 + r;
        ds_losses dummy;
        if (!c->o.no_grad) {
            memset(m->g, 0, (size_t)nt * sizeof(float));
            for (int p = 0; p < c->dp->n; p++) memset(ep->gsrc[p], 0, (size_t)nx * sizeof(float));
        }
        if (idle) { memcpy(saved, m->load, (size_t)nl * sizeof *saved); ep->idle = true; }
        ep->rc = 0;
        rc = tr_step_one(m, c->tok + (idle ? 0 : u * c->G * c->T), c->G, c->T, &c->o, idle ? &dummy : &c->ls[r], e);
        if (!rc && ep->rc) rc = ds_err_set(e, ep->rc, "%s", ep->err.msg);
        if (idle) { memcpy(m->load, saved, (size_t)nl * sizeof *saved); ep->idle = false; }
        if (rc || c->o.no_grad) continue;
        if ((rc = ep_push_sources(c->dp, m, U, r, e))) break;
        if (idle) continue;
        if (n && st[n - 1].size == 1 && st[n - 1].start % 2 == 0 && st[n - 1].start + 1 == u) {
            add_serial(st[n - 1].buf, m->g, nt);
            st[n - 1].size = 2;
        } else {
            if (n >= c->depth) { rc = ds_err_set(e, DS_EINVAL, "gradient tree deeper than planned"); break; }
            float **slot = &c->dp->bufs[n];
            if (!*slot && !(*slot = ds_alloc_huge((size_t)DS_MAX(nt, 1) * sizeof(float)))) {
                rc = ds_err_set(e, DS_ENOMEM, "out of memory for a gradient buffer");
                break;
            }
            memcpy(*slot, m->g, (size_t)nt * sizeof(float));
            st[n++] = (node){ u, 1, *slot };
        }
        settle(st, &n, nt, false, NULL, NULL, 0);
    }
    c->nst[0] = n;
    free(saved);
    return rc;
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
    int64_t nu = u1 - u0, nf = dp->n_floats;
    int nt = ds_threads_get();
    int64_t nw = m->ep ? 1 : DS_MAX(1, DS_MIN(DS_MIN((int64_t)nt, nu), MAX_WORKERS));
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
    bool *direct = NULL, *written = NULL;
    int64_t *rest = NULL, *dten = NULL;
    int rc = !c || !ls_all || !st || !rn || !off ? ds_err_set(e, DS_ENOMEM, "out of memory") : DS_OK;
    if (rc) goto done;
    *c = (run_ctx){ .dp = dp, .m = m, .tok = tokens, .G = G, .T = T, .u0 = u0, .nu = nu, .nw = nw, .depth = depth, .o = *o,
                    .ls = ls_all + u0, .st = st };
    c->o.grad_scale = (float)((double)o->grad_scale / (double)U);   /* each unit: its share of the mean */
    /* right siblings add their linear weights' gradients straight into the open
     * node when every such dW is one single-rounding product (G·T rows at most) */
    if (!o->no_grad && !m->ep && nf == m->n_floats && tr_linear_dw_once(G * T)) {
        direct = calloc((size_t)DS_MAX(m->n_params, 1), sizeof *direct);
        rest = malloc((size_t)(2 * m->n_params + 2) * sizeof *rest);
        dten = malloc((size_t)(2 * m->n_params + 2) * sizeof *dten);
        written = malloc((size_t)(nw * m->n_params + 1) * sizeof *written);
        if (!direct || !rest || !dten || !written) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
        int64_t pos = 0;   /* params are in arena order: the gaps between direct tensors are the rest */
        int nr = 0, nd = 0;
        for (int64_t i = 0; i < m->n_params; i++) {
            const ds_tparam *p = &m->params[i];
            if (p->off < 0 || !tr_param_one_product(m, i)) continue;
            DS_ASSERT(p->off >= pos);
            direct[i] = true;
            if (p->off > pos) { rest[2 * nr] = pos; rest[2 * nr + 1] = p->off; nr++; }
            dten[2 * nd] = p->off; dten[2 * nd + 1] = p->off + p->numel; nd++;
            pos = p->off + p->numel;
        }
        if (nf > pos) { rest[2 * nr] = pos; rest[2 * nr + 1] = nf; nr++; }
        c->direct = direct;
        c->rest = rest;
        c->n_rest = nr;
        c->dten = dten;
        c->n_dten = nd;
        c->written = written;
    }
    for (int64_t w = 0; w < nw; w++) ds_tmodel_reset_load(w == 0 ? m : m->workers[w - 1]);
    /* the weights stay fixed while the units run: x·Wᵀ transposes each W into
     * its GEMM panels once per step, not once per unit (tgemm.h) */
    tr_gemm_freeze_begin(m->w, m->n_floats);
    if (m->ep) {
        ds_par_env *env = ds_par_env_cur();
        int saved = env ? env->n_threads : 0;
        if (env) env->n_threads = 1;
        rc = ep_units(c, U, e);
        if (env) env->n_threads = saved;
        if (rc) goto done;
    } else if (nu > 0) {
        /* one unit per thread at a time, every kernel serial inside: with a
         * single worker the env is narrowed to one thread for the same bits */
        ds_par_env *env = ds_par_env_cur();
        int saved = env ? env->n_threads : 0;
        if (nw == 1 && env) env->n_threads = 1;
        ds_par_for(nw, 1, unit_worker, c);
        if (nw == 1 && env) env->n_threads = saved;
    }
    tr_gemm_freeze_end();
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
            settle(rn, &k, nf, true, NULL, NULL, 0);
        }
    if (dp->n == 1) {
        fold_right(rn, k, nf);
        /* the root becomes m->g: its tree buffer and m->g's arena trade places
         * (both ds_alloc_huge of n_floats) instead of a copy of the arena */
        int j = 0;
        while (j < dp->n_bufs && dp->bufs[j] != rn[0].buf) j++;
        if (j < dp->n_bufs && nf == m->n_floats) {
            dp->bufs[j] = m->g;
            tr_bind_grad(m, rn[0].buf);
        } else {
            memcpy(m->g, rn[0].buf, (size_t)nf * sizeof(float));
        }
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
                settle(all, &ka, len, true, NULL, NULL, 0);
            }
            fold_right(all, ka, len);
            memcpy(m->g + dp->lo, all[0].buf, (size_t)len * sizeof(float));
        }
        /* the own experts' gradient: summed here, where it stays */
        if (!rc && m->ep) rc = ep_finish_sources(dp, m->g + m->n_rep, e);
    xdone:
        free(K); free(desc); free(cnt); free(all);
        ds_free(sendb); ds_free(recvb);
    }
done:
    tr_gemm_freeze_end();   /* (already, unless the units failed) */
    free(c); free(ls_all); free(st); free(rn); free(off); free(direct); free(rest); free(dten); free(written);
    return rc;
}

/* ---------------------------------------------------------------- norm, gathers */

/* The norm's pieces: each trainable tensor (table order) cut where the
 * one-process arena crosses a multiple of DS_ADAM_CHUNK, so a piece lies in
 * one ZeRO-1 shard (or on its expert's owner); pc[i] = (param index, start,
 * end in the one-process arena). */
typedef struct { int64_t p, a, b; } piece;

static int64_t norm_pieces(const ds_tmodel *m, piece *pc) {
    int64_t k = 0;
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        if (!p->trainable) continue;
        for (int64_t a = p->coff, end = p->coff + p->numel; a < end;) {
            int64_t b = DS_MIN(end, (a / DS_ADAM_CHUNK + 1) * DS_ADAM_CHUNK);
            if (pc) pc[k] = (piece){ i, a, b };
            k++;
            a = b;
        }
    }
    return k;
}

typedef struct { const ds_tmodel *m; const piece *pc; double *sums; const ds_dp *dp; } norm_ctx;

static void norm_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    norm_ctx *c = vc;
    for (int64_t j = i0; j < i1; j++) {
        const ds_tparam *t = &c->m->params[c->pc[j].p];
        if (t->off < 0) continue;   /* another rank's expert: its owner contributes it */
        int64_t p = t->off + (c->pc[j].a - t->coff), q = t->off + (c->pc[j].b - t->coff);   /* here */
        if (t->off < c->m->n_rep && (p < c->dp->lo || q > c->dp->hi)) continue;   /* another rank's shard */
        const float *g = c->m->g;
        double l[4] = { 0 };   /* four lanes by position in the piece, folded in order */
        int64_t i = p;
        for (; i + 4 <= q; i += 4)
            for (int k = 0; k < 4; k++) l[k] += (double)g[i + k] * g[i + k];
        for (; i < q; i++) l[0] += (double)g[i] * g[i];
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
    norm_ctx c = { m, pc, sums, dp };
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
