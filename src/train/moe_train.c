/*
 * moe_train.c - feed-forward blocks for training: dense SwiGLU and
 * DeepSeekMoE (shared + routed experts), forward with saved activations
 * and backward, plus the sequence-wise balance loss.
 *
 *   MLP(x) = down(silu(gate x) ⊙ up x)
 *   MoE(x) = Σ_k w_k · Expert_{idx_k}(x) + Shared(x)
 * Routing (ds_moe_route, the inference code): s = sigmoid|softmax(router x),
 * idx = top-K of s (+ bias, group limits), w_k = s_idx_k (/ Σ_k s_idx_k) · rsf.
 * Gradients: d w_k -> d s (through the renormalization) -> d logits
 * (sigmoid' or softmax Jacobian) -> router; the selection itself and the
 * bias get none.
 * Balance (per sequence of T tokens, main MoE layers):
 *   f_i = E/(K·T)·#{t : i ∈ idx_t},  P_i = mean_t s_{i,t}/Σ_j s_{j,t},  bal = Σ_i f_i P_i
 *   ∂bal/∂s_{j,t} = (1/T)·(f_j/S_t − Σ_i f_i s_{i,t}/S_t²),  S_t = Σ_j s_{j,t}
 * The forward is inference's pipeline: route -> pack -> experts -> combine.
 * In one process the experts are all local. Expert parallel (m->ep, one
 * unit per rank per round, dp.c): the packed rows go to the experts'
 * owners (src/train/ep.h), which run each source's rows of each expert as
 * one batch and return the outputs; backward sends the output gradients,
 * gets the input gradients back, and the owner keeps each source's expert
 * weight gradient apart (ep->gsrc) for dp.c's fixed-order sum.
 * Experts run one after another on their gathered rows (token order), so
 * sums are deterministic; each matmul uses both cores.
 */
#include "tinternal.h"
#include "tgemm.h"
#include "tops.h"
#include "../core/thread.h"
#include "../model/model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- routing grads */

void tr_route_backward(const ds_config *c, float *dlogits, const float *dwt, const float *dscores_extra,
                       const float *scores, const int32_t *idx) {
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok;
    float rsf = (float)c->routed_scaling_factor;
    float *ds = tr_scratch(ds_thread_id(), 1, (size_t)E);  /* (E) d scores */
    for (int64_t i = 0; i < E; i++) ds[i] = dscores_extra ? dscores_extra[i] : 0.0f;
    if (c->norm_topk_prob && K > 1) {
        /* w_k = rsf · s_k / S, S = Σ_k s_k  ->  ds_k += rsf·(dw_k − Σ_j dw_j w_j/rsf)/S */
        double S = 0.0, dot = 0.0;
        for (int64_t k = 0; k < K; k++) S += scores[idx[k]];
        for (int64_t k = 0; k < K; k++) dot += (double)dwt[k] * scores[idx[k]];
        for (int64_t k = 0; k < K; k++)
            ds[idx[k]] += (float)((double)rsf * ((double)dwt[k] / S - dot / (S * S)));
    } else {
        for (int64_t k = 0; k < K; k++) ds[idx[k]] += rsf * dwt[k];
    }
    if (c->scoring_func == DS_SCORE_SIGMOID) {
        for (int64_t i = 0; i < E; i++) dlogits[i] += ds[i] * scores[i] * (1.0f - scores[i]);
    } else {
        double dot = 0.0;
        for (int64_t i = 0; i < E; i++) dot += (double)ds[i] * scores[i];
        for (int64_t i = 0; i < E; i++) dlogits[i] += scores[i] * (ds[i] - (float)dot);
    }
}

void tr_balance_backward(float *dscores, const float *scores, const float *f, int64_t E, int64_t T, float scale) {
    double S = 0.0, fs = 0.0;
    for (int64_t i = 0; i < E; i++) { S += scores[i]; fs += (double)f[i] * scores[i]; }
    for (int64_t j = 0; j < E; j++)
        dscores[j] += (float)((double)scale / (double)T * ((double)f[j] / S - fs / (S * S)));
}

/* ---------------------------------------------------------------- dense MLP */

/* out[n, D] = down(silu(g) ⊙ u), [g | u] = x·[gate; up]ᵀ: one GEMM over the
 * (2F, D) gate+up matrix (adjacent in the arena); saves gu (n, 2F), sig, h (n, F) */
static void mlp_forward(float *out, float *gu, float *sig, float *h, const float *x, const ds_tmlp *w, int64_t n, int64_t D,
                        int64_t F) {
    DS_ASSERT(w->up == w->gate + F * D);
    tr_linear_forward(gu, x, w->gate, n, D, 2 * F);
    tr_swiglu_forward_gu(h, sig, gu, n, F);
    tr_linear_forward(out, h, w->down, n, F, D);
}

/* dx += ... (dx = ... when dx_set), grads += ...; dh (n, F), dgu (n, 2F):
 * scratch, written before being read. dx and d[gate; up] come from one GEMM
 * each over the concatenated gate+up matrix. */
static void mlp_backward(float *dx, bool dx_set, ds_tmlp *gw, const float *dout, const float *x, const float *gu,
                         const float *sig, const float *h, const ds_tmlp *w, int64_t n, int64_t D, int64_t F, float *dh,
                         float *dgu) {
    DS_ASSERT(gw->up == gw->gate + F * D);
    tr_linear_backward_set(dh, gw->down, dout, h, w->down, n, F, D);
    tr_swiglu_backward_gu(dgu, dh, gu, sig, n, F);
    if (dx_set) tr_linear_backward_set(dx, gw->gate, dgu, x, w->gate, n, D, 2 * F);
    else tr_linear_backward(dx, gw->gate, dgu, x, w->gate, n, D, 2 * F);
}

/* ---------------------------------------------------------------- slot loops
 *
 * Per-slot and per-row loops over the gathered expert rows, split across
 * threads when the step itself is not (single-sequence steps; fwd_bwd.c
 * gives each thread its own sequences otherwise). Each output element is written by one iteration, and a row's K
 * slot contributions are added in ascending slot order (row_slots), so the
 * sums do not depend on the thread count. */

typedef struct {
    const tr_block_acts *a;
    float *xe;                /* (N·K, D) gathered inputs */
    const float *dout;        /* backward: (N, D) gradient of the block output */
    tr_grad_scratch *gs;
    int64_t D, K;
    float *rows;              /* combine: (N, D) output; scatter: (N, D) input gradient */
} slot_ctx;

static void gather_worker(void *vc, int64_t s0, int64_t s1, int tid) {
    (void)tid;
    const slot_ctx *c = vc;
    for (int64_t sl = s0; sl < s1; sl++)
        memcpy(c->xe + sl * c->D, c->a->xn2 + (int64_t)c->a->slot_row[sl] * c->D, (size_t)c->D * sizeof(float));
}

/* out[n] += Σ_k w_k · y[slot], slots ascending */
static void combine_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    const slot_ctx *c = vc;
    const tr_block_acts *a = c->a;
    for (int64_t n = n0; n < n1; n++)
        for (int64_t j = 0; j < c->K; j++) {
            int64_t sl = a->row_slots[n * c->K + j];
            tr_vec_axpy(c->rows + n * c->D, a->wt[n * c->K + a->slot_k[sl]], a->ey + sl * c->D, c->D);
        }
}

/* gathered inputs again; dy_slot = w_k · dout[row], dw_k = dout[row] · y_slot */
static void slot_grad_worker(void *vc, int64_t s0, int64_t s1, int tid) {
    (void)tid;
    const slot_ctx *c = vc;
    const tr_block_acts *a = c->a;
    for (int64_t sl = s0; sl < s1; sl++) {
        int64_t n = a->slot_row[sl], k = a->slot_k[sl];
        const float *d = c->dout + n * c->D;
        memcpy(c->xe + sl * c->D, a->xn2 + n * c->D, (size_t)c->D * sizeof(float));
        tr_vec_scale(c->gs->eslot_dy + sl * c->D, a->wt[n * c->K + k], d, c->D);
        c->gs->dwt[n * c->K + k] = (float)tr_vec_dot(d, a->ey + sl * c->D, c->D);
    }
}

/* dxn2[n] += Σ dx_slot, slots ascending */
static void scatter_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    const slot_ctx *c = vc;
    for (int64_t n = n0; n < n1; n++)
        for (int64_t j = 0; j < c->K; j++)
            tr_vec_add(c->rows + n * c->D, c->gs->eslot_dx + (int64_t)c->a->row_slots[n * c->K + j] * c->D, c->D);
}

typedef struct {
    const ds_config *c;
    const tr_block_acts *a;
    tr_grad_scratch *gs;
    float balance_scale;
} router_ctx;

/* d wt (+ balance) -> d router logits, per token row */
static void router_grad_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    const router_ctx *rc = vc;
    const tr_block_acts *a = rc->a;
    int64_t E = rc->c->n_routed_experts, K = rc->c->num_experts_per_tok;
    float *bal_extra = tr_scratch(tid, 0, (size_t)E);  /* (E); slot 1 is tr_route_backward's */
    for (int64_t n = n0; n < n1; n++) {
        const float *extra = NULL;
        if (a->bal_f && rc->balance_scale != 0.0f) {
            memset(bal_extra, 0, (size_t)E * sizeof(float));
            tr_balance_backward(bal_extra, a->scores + n * E, a->bal_f + (n / a->T) * E, E, a->T, rc->balance_scale);
            extra = bal_extra;
        }
        tr_route_backward(rc->c, rc->gs->dscores + n * E, rc->gs->dwt + n * K, extra, a->scores + n * E,
                          a->idx + n * K);
    }
}


/* ---------------------------------------------------------------- expert parallel */

int tr_ep_init(ds_tmodel *m, ds_err *e) {
    int64_t nl = m->cfg.n_layer + m->n_mtp;
    tr_ep *ep = calloc(1, sizeof *ep);
    if (!ep) return ds_err_set(e, DS_ENOMEM, "out of memory");
    ep->n = m->ep_n, ep->rank = m->ep_rank;
    ep->lay = calloc((size_t)nl, sizeof *ep->lay);
    ep->gsrc = calloc((size_t)ep->n, sizeof *ep->gsrc);
    if (!ep->lay || !ep->gsrc) { tr_ep_free(ep, nl); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    for (int64_t l = 0; l < nl; l++) {
        if (!m->W.layers[l].is_moe) continue;
        int rc = ds_ep_plan_init(&ep->lay[l].plan, m->cfg.n_routed_experts, ep->n, ep->rank, e);
        if (rc) { tr_ep_free(ep, nl); return rc; }
    }
    for (int p = 0; p < ep->n; p++)
        if (!(ep->gsrc[p] = ds_alloc_huge((size_t)DS_MAX(m->n_floats - m->n_rep, 1) * sizeof(float)))) {
            tr_ep_free(ep, nl);
            return ds_err_set(e, DS_ENOMEM, "out of memory");
        }
    m->ep = ep;
    return DS_OK;
}

static void ep_layer_bufs_free(tr_ep_layer *L) {
    free(L->xr); free(L->gu); free(L->sig); free(L->h); free(L->y); free(L->dx); free(L->dh); free(L->dgu);
    L->xr = L->gu = L->sig = L->h = L->y = L->dx = L->dh = L->dgu = NULL;
    L->cap = 0;
}

void tr_ep_free(tr_ep *ep, int64_t nl) {
    if (!ep) return;
    for (int64_t l = 0; ep->lay && l < nl; l++) { ds_ep_plan_free(&ep->lay[l].plan); ep_layer_bufs_free(&ep->lay[l]); }
    for (int p = 0; ep->gsrc && p < ep->n; p++) ds_free(ep->gsrc[p]);
    free(ep->lay); free(ep->gsrc); free(ep);
}

static int ep_grow(tr_ep_layer *L, int64_t R, int64_t D, int64_t F, ds_err *e) {
    if (R <= L->cap) return DS_OK;
    ep_layer_bufs_free(L);
    int64_t c = DS_MAX(R, 16);
    L->xr = malloc((size_t)(c * D) * sizeof(float)); L->y = malloc((size_t)(c * D) * sizeof(float));
    L->dx = malloc((size_t)(c * D) * sizeof(float));
    L->gu = malloc((size_t)(c * 2 * F) * sizeof(float)); L->dgu = malloc((size_t)(c * 2 * F) * sizeof(float));
    L->sig = malloc((size_t)(c * F) * sizeof(float)); L->h = malloc((size_t)(c * F) * sizeof(float));
    L->dh = malloc((size_t)(c * F) * sizeof(float));
    if (!L->xr || !L->y || !L->dx || !L->gu || !L->dgu || !L->sig || !L->h || !L->dh) {
        ep_layer_bufs_free(L);
        return ds_err_set(e, DS_ENOMEM, "out of memory for the expert exchange (%lld rows)", (long long)R);
    }
    L->cap = c;
    return DS_OK;
}

/* rows out to the owners, own experts on each source's rows (one batch per
 * source and expert, as that source's one-process run), outputs back into
 * a->ey at the packed positions */
static int ep_forward(tr_step *s, int64_t l, tr_block_acts *a, const float *xe, ds_err *e) {
    ds_tmodel *m = s->m;
    tr_ep *ep = m->ep;
    tr_ep_layer *L = &ep->lay[l];
    const ds_tlayer *w = &m->W.layers[l];
    int64_t E = m->cfg.n_routed_experts, D = m->cfg.hidden_size, F = m->cfg.moe_intermediate_size;
    int64_t *cnt = ds_arena_array(s->a, (size_t)E, sizeof(int64_t));
    if (!cnt) return ds_err_set(e, DS_ENOMEM, "out of memory in MoE");
    for (int64_t x = 0; x < E; x++) cnt[x] = ep->idle ? 0 : a->ex_off[x + 1] - a->ex_off[x];
    int rc = ds_ep_plan_exchange(&L->plan, cnt, e);
    const ds_ep_plan *p = &L->plan;
    if (!rc) rc = ep_grow(L, p->roff[p->n], D, F, e);
    if (!rc) rc = ds_ep_dispatch(p, xe, L->xr, D, e);
    if (rc) return rc;
    int64_t ne = p->hi - p->lo;
    for (int src = 0; src < p->n; src++)
        for (int64_t j = 0; j < ne; j++) {
            int64_t r0 = p->rex[src * (ne + 1) + j], nr = p->rex[src * (ne + 1) + j + 1] - r0;
            if (nr == 0) continue;
            mlp_forward(L->y + r0 * D, L->gu + r0 * 2 * F, L->sig + r0 * F, L->h + r0 * F, L->xr + r0 * D,
                        &w->experts[p->lo + j], nr, D, F);
        }
    if (ep->idle) memset(a->ey, 0, (size_t)(a->N * m->cfg.num_experts_per_tok * D) * sizeof(float));
    return ds_ep_return(p, L->y, a->ey, D, e);
}

/* output gradients out, input gradients back into gs->eslot_dx; the owner
 * keeps each source's expert weight gradient in ep->gsrc[source] */
static void ep_backward(tr_step *s, int64_t l, tr_block_acts *a, tr_grad_scratch *gs, const float *xe_unused) {
    (void)a; (void)xe_unused;
    ds_tmodel *m = s->m;
    tr_ep *ep = m->ep;
    tr_ep_layer *L = &ep->lay[l];
    const ds_tlayer *w = &m->W.layers[l];
    const ds_tlayer *gw = &m->G.layers[l];
    int64_t D = m->cfg.hidden_size, F = m->cfg.moe_intermediate_size;
    const ds_ep_plan *p = &L->plan;
    int rc = ds_ep_dispatch(p, gs->eslot_dy, L->y, D, &ep->err);
    if (rc) { ep->rc = rc; return; }
    int64_t ne = p->hi - p->lo;
    for (int src = 0; src < p->n; src++)
        for (int64_t j = 0; j < ne; j++) {
            int64_t x = p->lo + j, r0 = p->rex[src * (ne + 1) + j], nr = p->rex[src * (ne + 1) + j + 1] - r0;
            if (nr == 0) continue;
            float *gx = ep->gsrc[src] - m->n_rep;   /* gsrc[src][i - n_rep]: arena float i of the expert region */
            ds_tmlp g = { gx + (gw->experts[x].gate - m->g), gx + (gw->experts[x].up - m->g),
                          gx + (gw->experts[x].down - m->g) };
            mlp_backward(L->dx + r0 * D, true, &g, L->y + r0 * D, L->xr + r0 * D, L->gu + r0 * 2 * F, L->sig + r0 * F,
                         L->h + r0 * F, &w->experts[x], nr, D, F, L->dh + r0 * F, L->dgu + r0 * 2 * F);
        }
    rc = ds_ep_return(p, L->dx, gs->eslot_dx, D, &ep->err);
    if (rc) ep->rc = rc;
}

/* ---------------------------------------------------------------- forward */

typedef struct {
    const ds_config *c;
    tr_block_acts *a;
    const float *bias;
} route_ctx;

static void route_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    route_ctx *rc = vc;
    int64_t E = rc->c->n_routed_experts, K = rc->c->num_experts_per_tok;
    float *tmp = tr_scratch(tid, 1, (size_t)(E + rc->c->n_group + 16));
    if (!tmp) return;
    for (int64_t n = n0; n < n1; n++)
        ds_moe_route(rc->c, rc->a->rlog + n * E, rc->bias, rc->a->idx + n * K, rc->a->wt + n * K, rc->a->scores + n * E,
                     tmp);
}

/* pack: the slots grouped by expert id ascending, token rows ascending
 * within (ex_off, slot_row, slot_k, row_slots), their inputs gathered into
 * xe (N·K, D), and the routing load counted */
static int moe_pack(tr_step *s, int64_t l, tr_block_acts *a, float **xe_out, ds_err *e) {
    ds_tmodel *m = s->m;
    int64_t N = a->N, D = m->cfg.hidden_size, E = m->cfg.n_routed_experts, K = m->cfg.num_experts_per_tok;
    int64_t *count = m->load + l * E;
    memset(a->ex_off, 0, (size_t)(E + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < N * K; i++) a->ex_off[a->idx[i] + 1]++;
    for (int64_t x = 0; x < E; x++) {
        if (!s->no_grad) count[x] += a->ex_off[x + 1];   /* evaluation does not count as load */
        a->ex_off[x + 1] += a->ex_off[x];
    }
    int64_t *fill = ds_arena_calloc(s->a, (size_t)E, sizeof(int64_t));
    float *xe = ds_arena_array(s->a, (size_t)(N * K * D), sizeof(float));   /* gathered inputs */
    if (!fill || !xe) return ds_err_set(e, DS_ENOMEM, "out of memory in MoE");
    for (int64_t n = 0; n < N; n++) {
        int32_t *rs = a->row_slots + n * K;
        for (int64_t k = 0; k < K; k++) {
            int32_t x = a->idx[n * K + k];
            int64_t sl = a->ex_off[x] + fill[x]++;
            a->slot_row[sl] = (int32_t)n;
            a->slot_k[sl] = (int32_t)k;
            int64_t j = k;   /* insert sl into the row's ascending slot list */
            for (; j > 0 && rs[j - 1] > sl; j--) rs[j] = rs[j - 1];
            rs[j] = (int32_t)sl;
        }
    }
    slot_ctx sl_c = { .a = a, .xe = xe, .D = D, .K = K };
    ds_par_for(N * K, 256, gather_worker, &sl_c);
    *xe_out = xe;
    return DS_OK;
}

/* local experts: ey of the packed slots of experts [lo, hi), each expert on
 * its rows in turn (sums deterministic) */
static void moe_local_experts(const ds_tlayer *w, tr_block_acts *a, const float *xe, int64_t lo, int64_t hi, int64_t D,
                              int64_t F) {
    for (int64_t x = lo; x < hi; x++) {
        int64_t o = a->ex_off[x], n = a->ex_off[x + 1] - o;
        if (n == 0) continue;
        mlp_forward(a->ey + o * D, a->egu + o * 2 * F, a->esig + o * F, a->eh + o * F, xe + o * D,
                    &w->experts[x], n, D, F);
    }
}

/* The sequence-wise balance term of a main MoE layer (header), into
 * a->bal_f and s->balance_sum. */
static int moe_balance(tr_step *s, tr_block_acts *a, ds_err *e) {
    int64_t E = s->m->cfg.n_routed_experts, K = s->m->cfg.num_experts_per_tok;
    double *P = ds_arena_array(s->a, (size_t)E, sizeof(double));  /* (E) mean share per sequence */
    if (!P) return ds_err_set(e, DS_ENOMEM, "out of memory in MoE");
    for (int64_t b = 0; b < a->B; b++) {
        float *f = a->bal_f + b * E;
        memset(f, 0, (size_t)E * sizeof(float));
        memset(P, 0, (size_t)E * sizeof(double));
        for (int64_t t = 0; t < a->T; t++) {
            int64_t n = b * a->T + t;
            for (int64_t k = 0; k < K; k++) f[a->idx[n * K + k]] += 1.0f;
            const float *sc = a->scores + n * E;
            double S = 0.0;
            for (int64_t i = 0; i < E; i++) S += sc[i];
            for (int64_t i = 0; i < E; i++) P[i] += sc[i] / S;
        }
        double bal = 0.0;
        for (int64_t i = 0; i < E; i++) {
            f[i] = (float)((double)E / (double)(K * a->T) * f[i]);
            bal += (double)f[i] * (P[i] / (double)a->T);
        }
        s->balance_sum += bal;
    }
    return DS_OK;
}

int tr_ffn_forward(tr_step *s, int64_t l, tr_block_acts *a, float *out, const int32_t *tok, ds_err *e) {
    ds_tmodel *m = s->m;
    const ds_config *c = &m->cfg;
    const ds_tlayer *w = &m->W.layers[l];
    int64_t N = a->N, D = c->hidden_size;
    (void)tok;  /* for hash-routed MoE */
    if (c->ffn_kind[l] != DS_FFN_MOE) {
        if (c->ffn_kind[l] != DS_FFN_DENSE)
            return ds_err_set(e, DS_EUNSUPPORTED, "layer %lld: FFN kind %d is not trained", (long long)l, c->ffn_kind[l]);
        mlp_forward(out, a->gu, a->sig, a->h, a->xn2, &w->mlp, N, D, c->intermediate_size);
        return DS_OK;
    }
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, F = c->moe_intermediate_size;
    int64_t FS = c->n_shared_experts * F;
    ds_arena_mark mk = ds_arena_get_mark(s->a);
    /* route */
    TR_FP32(tr_linear_forward(a->rlog, a->xn2, w->router, N, D, E));   /* bf16 mode: the router stays fp32 */
    route_ctx rt = { c, a, w->router_bias };
    ds_par_for(N, 16, route_worker, &rt);
    /* pack */
    float *xe = NULL;
    int rc = moe_pack(s, l, a, &xe, e);
    if (rc) return rc;
    /* the experts: all local, or on their owners (expert parallel) */
    if (m->ep) {
        if ((rc = ep_forward(s, l, a, xe, e))) return rc;
    } else {
        moe_local_experts(w, a, xe, 0, E, D, F);
    }
    /* combine: out = shared(x) + Σ_k w_k y_k, in slot order per token row */
    if (FS > 0) {
        mlp_forward(out, a->sgu, a->ssig, a->sh, a->xn2, &w->shared, N, D, FS);
    } else {
        memset(out, 0, (size_t)(N * D) * sizeof(float));
    }
    slot_ctx sl_c = { .a = a, .D = D, .K = K, .rows = out };
    ds_par_for(N, 64, combine_worker, &sl_c);
    if (a->bal_f && (rc = moe_balance(s, a, e))) return rc;
    ds_arena_release(s->a, mk);
    return DS_OK;
}

/* ---------------------------------------------------------------- backward */

void tr_ffn_backward(tr_step *s, int64_t l, tr_block_acts *a, const float *dout, float *dxn2, tr_grad_scratch *gs) {
    ds_tmodel *m = s->m;
    const ds_config *c = &m->cfg;
    const ds_tlayer *w = &m->W.layers[l];
    ds_tlayer *gw = &m->G.layers[l];
    int64_t N = a->N, D = c->hidden_size;
    if (c->ffn_kind[l] == DS_FFN_DENSE) {  /* tr_ffn_forward admitted dense and MoE only */
        int64_t I = c->intermediate_size;
        mlp_backward(dxn2, false, &gw->mlp, dout, a->xn2, a->gu, a->sig, a->h, &w->mlp, N, D, I, gs->dh, gs->dgu);
        return;
    }
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, F = c->moe_intermediate_size;
    int64_t FS = c->n_shared_experts * F;
    /* shared experts */
    if (FS > 0) {
        mlp_backward(dxn2, false, &gw->shared, dout, a->xn2, a->sgu, a->ssig, a->sh, &w->shared, N, D, FS, gs->dh, gs->dgu);
    }
    /* experts: gathered inputs again (cheap) and the slot gradients of the
     * combine (every (row, k) has one slot, so dwt is written in full), then
     * the MLP backward per expert */
    float *xe = tr_scratch(ds_thread_id(), 1, (size_t)(N * K * D));
    if (!xe) return;   /* out of memory: the step reports it */
    slot_ctx sc = { .a = a, .xe = xe, .dout = dout, .gs = gs, .D = D, .K = K };
    ds_par_for(N * K, 256, slot_grad_worker, &sc);
    if (m->ep) ep_backward(s, l, a, gs, xe);
    else for (int64_t x = 0; x < E; x++) {
        int64_t o = a->ex_off[x], n = a->ex_off[x + 1] - o;
        if (n == 0) continue;
        mlp_backward(gs->eslot_dx + o * D, true, &gw->experts[x], gs->eslot_dy + o * D, xe + o * D, a->egu + o * 2 * F,
                     a->esig + o * F, a->eh + o * F, &w->experts[x], n, D, F, gs->eslot_dh + o * F, gs->eslot_dgu + o * 2 * F);
    }
    /* scatter the expert input gradients back to token rows (slot order: deterministic) */
    sc.rows = dxn2;
    ds_par_for(N, 64, scatter_worker, &sc);
    /* router: d wt (+ balance) -> d logits -> router weight and input */
    memset(gs->dscores, 0, (size_t)(N * E) * sizeof(float));
    float *dlog = gs->dscores;  /* reuse: (N, E) router-logit gradients */
    router_ctx rc = { c, a, gs, s->balance_scale };
    ds_par_for(N, 64, router_grad_worker, &rc);
    TR_FP32(tr_linear_backward(dxn2, gw->router, dlog, a->xn2, w->router, N, D, E));
}
