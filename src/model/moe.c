/*
 * moe.c - feed-forward blocks: dense SwiGLU and DeepSeekMoE (spec §5).
 *
 *   MLP(x)  = down( silu(gate(x)) ⊙ up(x) )
 *   MoE(x)  = Σ_k w_k · Expert_{idx_k}(x) + Shared(x)
 * Routing per token (ds_moe_route):
 *   s = softmax(logits) | sigmoid(logits)              gate scores
 *   choice = s (+ e_score_correction_bias for noaux_tc)  selection only
 *   greedy:               top-K of choice
 *   group_limited_greedy: group score = max of s in the group
 *   noaux_tc:             group score = sum of the group's top-2 choice
 *   keep topk_group groups, dropped groups -> -inf, then top-K
 *   w = s[idx] (/ Σ if norm_topk_prob) · routed_scaling_factor
 * DeepSeek-V4: s = sqrt(softplus(logits)); hash-routed layers take idx from
 * tid2eid[token]; swiglu_limit clamps gate (above) and up (both sides).
 * The MoE layer is a pipeline (moe_forward):
 *   route    router logits, ds_moe_route per token         idx, w (T, K)
 *            (tokens split across threads, each routed alone)
 *   pack     rows grouped by expert id, token order within    slot[R] + x (R, D), R = T·K
 *   exchange rows to the processes owning their experts, outputs back (moe_exchange.c)
 *   local    ds_moe_local_experts: the experts of [lo, hi) on the rows received
 *   combine  out[t] = Σ over packed rows (expert id ascending) of w·y, then + Shared(x)
 *            (token by token: each token's rows listed in packed order)
 * Routed outputs are accumulated in expert-id order, then the shared
 * experts are added (the order transformers uses), wherever they ran.
 */
#include "model_internal.h"
#include "../core/thread.h"
#include "../tensor/ops.h"

#include <math.h>
#include <string.h>

static void mlp_forward(float *out, const float *x, int64_t T, int64_t D, const ds_mlp_w *w, const ds_seg *segs,
                        int n_segs, ds_arena *a, int *oom) {
    int64_t F = ds_tensor_rows(&w->gate);
    ds_arena_mark mk = ds_arena_get_mark(a);
    /* every row is written by the gate / up jobs before it is read: no zero fill */
    float *g = ds_arena_array(a, (size_t)(T * F), sizeof(float));   /* (T, F) */
    float *u = ds_arena_array(a, (size_t)(T * F), sizeof(float));   /* (T, F) */
    ds_mm_job *jobs = ds_arena_calloc(a, (size_t)(2 * (n_segs + 1)), sizeof(ds_mm_job));
    if (!g || !u || !jobs) { *oom = 1; ds_arena_release(a, mk); return; }
    int nj = ds_plan_jobs(segs, n_segs, jobs, g, F, x, D, &w->gate, 0, F);
    nj += ds_plan_jobs(segs, n_segs, jobs + nj, u, F, x, D, &w->up, 0, F);
    ds_matmul_multi(jobs, nj);
    ds_silu_mul(g, g, u, T * F);
    ds_plan_matmul(segs, n_segs, out, D, g, F, &w->down, 0, D);
    ds_arena_release(a, mk);
}

/* top-k indices of v[n] by value, descending; ties go to the lower index. */
static void topk(const float *v, int64_t n, int64_t k, int32_t *idx) {
    for (int64_t j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++) {
            bool taken = false;
            for (int64_t q = 0; q < j; q++) if (idx[q] == i) { taken = true; break; }
            if (taken) continue;
            if (best < 0 || v[i] > v[best] || (isnan(v[best]) && !isnan(v[i]))) best = i;
        }
        idx[j] = (int32_t)best;
    }
}

/* How many of v[n] topk would pick before v[g]: the order is value
 * descending, NaN last, ties to the lower index. */
static int64_t rank_of(const float *v, int64_t n, int64_t g) {
    int64_t r = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i == g) continue;
        bool nan_i = isnan(v[i]), nan_g = isnan(v[g]);
        if (nan_i != nan_g) r += nan_g;
        else if (nan_i || v[i] == v[g]) r += i < g;
        else r += v[i] > v[g];
    }
    return r;
}

/* w_k = s[idx_k] (/ Σ if norm_topk_prob; V4 always, also for K = 1) · routed_scaling_factor */
static void route_weights(const ds_config *c, const float *scores, const int32_t *idx, float *wt) {
    int64_t K = c->num_experts_per_tok;
    double sum = 0;
    for (int64_t k = 0; k < K; k++) { wt[k] = scores[idx[k]]; sum += wt[k]; }
    for (int64_t k = 0; k < K; k++) {
        float v = wt[k];
        if (c->norm_topk_prob && (K > 1 || c->arch == DS_ARCH_V4)) v = (float)(v / sum);
        wt[k] = v * (float)c->routed_scaling_factor;
    }
}

void ds_moe_route(const ds_config *c, const float *logits, const float *bias, int32_t *idx, float *wt,
                  float *scores, float *tmp) {
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, G = c->n_group, per = E / G;
    if (c->scoring_func == DS_SCORE_SIGMOID) {
        for (int64_t i = 0; i < E; i++) scores[i] = 1.0f / (1.0f + expf(-logits[i]));
    } else if (c->scoring_func == DS_SCORE_SQRTSOFTPLUS) {   /* V4: sqrt(softplus), softplus(x) = x above 20 */
        for (int64_t i = 0; i < E; i++) scores[i] = sqrtf(logits[i] > 20.0f ? logits[i] : log1pf(expf(logits[i])));
    } else {
        memcpy(scores, logits, (size_t)E * sizeof(float));
        ds_softmax(scores, E);
    }
    float *choice = tmp, *gs = tmp + E;
    for (int64_t i = 0; i < E; i++)
        choice[i] = scores[i] + ((c->topk_method == DS_TOPK_NOAUX_TC && bias) ? bias[i] : 0.0f);
    if (c->topk_method != DS_TOPK_GREEDY && G > 1) {
        for (int64_t g = 0; g < G; g++) {
            const float *cg = choice + g * per;
            if (c->topk_method == DS_TOPK_NOAUX_TC) {
                int32_t two[2];
                topk(cg, per, 2, two);
                gs[g] = cg[two[0]] + cg[two[1]];
            } else {
                float mx = -INFINITY;
                for (int64_t i = 0; i < per; i++) mx = fmaxf(mx, scores[g * per + i]);
                gs[g] = mx;
            }
        }
        /* the topk_group best groups are kept: those ranked below topk_group
         * in topk's order (any topk_group <= n_group, no buffer to cap it) */
        for (int64_t g = 0; g < G; g++)
            if (rank_of(gs, G, g) >= c->topk_group)
                for (int64_t i = 0; i < per; i++) choice[g * per + i] = -INFINITY;
    }
    topk(choice, E, K, idx);
    route_weights(c, scores, idx, wt);
}

/* Hash-routed MoE (V4): the experts are the token's row of tid2eid, the
 * weights its gate scores there, as ds_moe_route's. */
static void route_hash(const ds_config *c, const float *logits, const int32_t *experts, int32_t *idx, float *wt,
                       float *scores, float *tmp) {
    (void)tmp;
    int64_t K = c->num_experts_per_tok;
    ds_config one = *c;
    one.topk_method = DS_TOPK_GREEDY;
    ds_moe_route(&one, logits, NULL, idx, wt, scores, tmp);   /* the scores (the selection is replaced) */
    memcpy(idx, experts, (size_t)K * sizeof *idx);
    route_weights(c, scores, idx, wt);
}

/* ---------------------------------------------------------------- local experts */

/* Jobs for one expert's rows [r0, r1) (token order): one job per run of
 * rows of the same matmul block, per-token for block 0, so the split is
 * that of the batch plan (ds_plan_jobs) whoever computes it. */
static int expert_jobs(ds_mm_job *jobs, const ds_moe_slot *slot, int64_t r0, int64_t r1, float *y, int64_t ldy,
                       const float *x, int64_t ldx, const ds_tensor *w, int64_t N) {
    int nj = 0;
    for (int64_t r = r0, e; r < r1; r = e) {
        for (e = r + 1; e < r1 && slot[e].block == slot[r].block;) e++;
        jobs[nj++] = (ds_mm_job){ y + r * ldy, ldy, x + r * ldx, ldx, w, 0, N, e - r, slot[r].block == 0 };
    }
    return nj;
}

int ds_moe_local_experts(const ds_model *m, int64_t l, int64_t lo, int64_t hi, const ds_moe_slot *slot,
                         const float *x, int64_t n, float *y, const ds_moe_shared *sh, ds_arena *a, ds_err *e) {
    const ds_layer_w *w = &m->layers[l];
    int64_t D = m->cfg.hidden_size, F = m->cfg.moe_intermediate_size;
    int64_t Ts = sh ? sh->T : 0, Fs = sh ? ds_tensor_rows(&sh->w->gate) : 0;
    if (n <= 0 && !sh) return DS_OK;
    for (int64_t r = 0; r < n; r++)
        if (slot[r].expert < lo || slot[r].expert >= hi || slot[r].expert < m->expert_lo ||
            slot[r].expert >= m->expert_hi || (r > 0 && slot[r].expert < slot[r - 1].expert))
            return ds_err_set(e, DS_EINVAL, "layer %lld: routed row for expert %d outside the local experts "
                              "[%lld, %lld) (loaded: [%lld, %lld)) or out of order", (long long)l, slot[r].expert,
                              (long long)lo, (long long)hi, (long long)m->expert_lo, (long long)m->expert_hi);
    ds_arena_mark mk = ds_arena_get_mark(a);
    /* every row of these is written before it is read: no zero fill */
    float *g = ds_arena_array(a, (size_t)(n * F + Ts * Fs), sizeof(float));   /* (n, F) + shared (Ts, Fs) */
    float *u = ds_arena_array(a, (size_t)(n * F + Ts * Fs), sizeof(float));
    int max_jobs = (int)(2 * n + 2 * (sh ? sh->n_segs + 1 : 0));  /* a routed job has >= 1 row */
    ds_mm_job *jobs = ds_arena_calloc(a, (size_t)DS_MAX(max_jobs, 1), sizeof(ds_mm_job));
    if (!g || !u || !jobs) return ds_err_set(e, DS_ENOMEM, "out of memory in the experts of layer %lld", (long long)l);
    /* gate and up projections of every expert (and the shared ones) in one pass, then the down projections */
    int nj = 0;
    for (int64_t r0 = 0, r1; r0 < n; r0 = r1) {
        for (r1 = r0 + 1; r1 < n && slot[r1].expert == slot[r0].expert;) r1++;
        const ds_mlp_w *ex = &w->experts[slot[r0].expert];
        nj += expert_jobs(jobs + nj, slot, r0, r1, g, F, x, D, &ex->gate, F);
        nj += expert_jobs(jobs + nj, slot, r0, r1, u, F, x, D, &ex->up, F);
    }
    if (sh) {
        nj += ds_plan_jobs(sh->segs, sh->n_segs, jobs + nj, g + n * F, Fs, sh->x, D, &sh->w->gate, 0, Fs);
        nj += ds_plan_jobs(sh->segs, sh->n_segs, jobs + nj, u + n * F, Fs, sh->x, D, &sh->w->up, 0, Fs);
    }
    DS_ASSERT(nj <= max_jobs);
    ds_matmul_multi(jobs, nj);
    if (m->cfg.swiglu_limit > 0) {   /* V4: gate <= limit, |up| <= limit (routed and shared experts) */
        float lim = (float)m->cfg.swiglu_limit;
        for (int64_t i = 0; i < n * F + Ts * Fs; i++) {
            g[i] = fminf(g[i], lim);
            u[i] = fminf(fmaxf(u[i], -lim), lim);
        }
    }
    ds_silu_mul(g, g, u, n * F + Ts * Fs);
    nj = 0;
    for (int64_t r0 = 0, r1; r0 < n; r0 = r1) {
        for (r1 = r0 + 1; r1 < n && slot[r1].expert == slot[r0].expert;) r1++;
        nj += expert_jobs(jobs + nj, slot, r0, r1, y, D, g, F, &w->experts[slot[r0].expert].down, D);
    }
    if (sh) nj += ds_plan_jobs(sh->segs, sh->n_segs, jobs + nj, sh->y, D, g + n * F, Fs, &sh->w->down, 0, D);
    ds_matmul_multi(jobs, nj);
    ds_arena_release(a, mk);
    return DS_OK;
}

/* ---------------------------------------------------------------- pack and combine */

typedef struct {
    float *out, *xe;
    const float *xn, *ye, *ys;
    const ds_moe_slot *slot;
    const int64_t *trow;   /* [T·K]: token t's packed rows, ascending (= expert id ascending) */
    int64_t R, T, D, K;
} moe_io;

/* pack: xe[r] = xn[slot[r].token] for r in [r0, r1) */
static void gather_worker(void *vctx, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    moe_io *c = vctx;
    for (int64_t r = r0; r < r1; r++)
        memcpy(c->xe + r * c->D, c->xn + c->slot[r].token * c->D, (size_t)c->D * sizeof(float));
}

/* Tokens [t0, t1) of out: from 0, the token's routed rows added in packed
 * order (expert id ascending), then its shared experts' row; every element
 * sees that sequence of operations (w·y rounded, then the add) whatever the
 * split. One token at a time: its rows are read once and its output
 * written once (the column split before read and rewrote out once per
 * routed row). */
typedef float moe_v4 __attribute__((vector_size(16)));

static void combine_worker(void *vctx, int64_t t0, int64_t t1, int tid) {
    (void)tid;
    moe_io *c = vctx;
    int64_t D = c->D, K = c->K;
    for (int64_t t = t0; t < t1; t++) {
        float *o = c->out + t * D;
        const int64_t *rows = c->trow + t * K;
        const float *ys = c->ys ? c->ys + t * D : NULL;
        int64_t d = 0;
        for (; d + 4 <= D; d += 4) {
            moe_v4 acc = { 0.0f, 0.0f, 0.0f, 0.0f };
            for (int64_t k = 0; k < K; k++) {
                moe_v4 y;
                memcpy(&y, c->ye + rows[k] * D + d, sizeof y);
                acc = acc + c->slot[rows[k]].weight * y;
            }
            if (ys) {
                moe_v4 y;
                memcpy(&y, ys + d, sizeof y);
                acc = acc + y;
            }
            memcpy(o + d, &acc, sizeof acc);
        }
        for (; d < D; d++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc = acc + c->slot[rows[k]].weight * c->ye[rows[k] * D + d];
            if (ys) acc = acc + ys[d];
            o[d] = acc;
        }
    }
}

/* route: chunks [c0, c1) of the tokens, each chunk with its own row of
 * the scores / tmp scratch (each token alone: any split, the same choice) */
typedef struct {
    const ds_config *c;
    const ds_layer_w *w;
    bool hash;              /* hash-routed layer (V4) */
    const float *logits;    /* (T, E) */
    const int32_t *tok;
    int32_t *idx;           /* (T, K) */
    float *wt;              /* (T, K) */
    float *scores, *tmp;    /* per chunk of tokens: E, E + n_group */
    int64_t E, K, T, nch;   /* chunk ch: tokens [ch·T/nch, (ch+1)·T/nch) */
} route_ctx;

#define ROUTE_CHUNKS 64

static void route_worker(void *vctx, int64_t c0, int64_t c1, int tid) {
    (void)tid;
    const route_ctx *r = vctx;
    const ds_config *c = r->c;
    int64_t E = r->E, K = r->K;
    for (int64_t ch = c0; ch < c1; ch++) {
        float *scores = r->scores + (size_t)ch * (size_t)E, *tmp = r->tmp + (size_t)ch * (size_t)(E + c->n_group);
        for (int64_t t = ch * r->T / r->nch; t < (ch + 1) * r->T / r->nch; t++) {
            if (r->hash)
                route_hash(c, r->logits + t * E, r->w->tid2eid + (int64_t)r->tok[t] * K, r->idx + t * K,
                           r->wt + t * K, scores, tmp);
            else
                ds_moe_route(c, r->logits + t * E, r->w->router_bias, r->idx + t * K, r->wt + t * K, scores, tmp);
        }
    }
}

/* out[T, D] = MoE(xn): route, pack, exchange (the local experts run
 * there), shared experts, combine. */
static int moe_forward(const ds_model *m, int64_t l, float *out, const float *xn, const int32_t *tok, int64_t T,
                       const ds_seg *segs, int n_segs, ds_arena *a, ds_err *e) {
    const ds_config *c = &m->cfg;
    const ds_layer_w *w = &m->layers[l];
    int64_t D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok;
    int64_t Fs = c->n_shared_experts * c->moe_intermediate_size;
    /* route */
    float *logits = ds_arena_calloc(a, (size_t)(T * E), sizeof(float));  /* (T, E) */
    int32_t *idx = ds_arena_calloc(a, (size_t)(T * K), sizeof(int32_t)); /* (T, K) */
    float *wt = ds_arena_calloc(a, (size_t)(T * K), sizeof(float));      /* (T, K) */
    int64_t nch = DS_MAX(1, DS_MIN(T, ROUTE_CHUNKS));
    float *scores = ds_arena_calloc(a, (size_t)(E * nch), sizeof(float));                /* (nch, E) */
    float *tmp = ds_arena_calloc(a, (size_t)((E + c->n_group) * nch), sizeof(float));    /* (nch, E + n_group) */
    int64_t *start = ds_arena_calloc(a, (size_t)E + 1, sizeof(int64_t));   /* (E+1) packed row offsets per expert */
    int64_t *fill = ds_arena_calloc(a, (size_t)E + 1, sizeof(int64_t));
    int32_t *block = ds_arena_calloc(a, (size_t)DS_MAX(T, 1), sizeof(int32_t));  /* (T) matmul block of each token */
    if (!logits || !idx || !wt || !scores || !tmp || !start || !fill || !block)
        return ds_err_set(e, DS_ENOMEM, "out of memory in MoE");
    if (c->ffn_kind[l] == DS_FFN_HASH_MOE && !w->tid2eid)
        return ds_err_set(e, DS_EUNSUPPORTED, "layer %lld: hash-routed MoE without a tid2eid table (only DeepSeek-V4 "
                          "checkpoints have one)", (long long)l);
    ds_plan_matmul(segs, n_segs, logits, E, xn, D, &w->router, 0, E);
    route_ctx rc0 = { c, w, c->ffn_kind[l] == DS_FFN_HASH_MOE, logits, tok, idx, wt, scores, tmp, E, K, T, nch };
    ds_par_for(nch, DS_MAX(1, nch * 32 / DS_MAX(T, 1)), route_worker, &rc0);   /* >= 32 tokens a thread */
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0; k < K; k++) start[idx[t * K + k] + 1]++;
    for (int64_t x = 0; x < E; x++) start[x + 1] += start[x];
    for (int s = 0; s < n_segs; s++)
        if (segs[s].n >= DS_TOKEN_BLOCK_MIN)
            for (int64_t t = segs[s].t0; t < segs[s].t0 + segs[s].n; t++) block[t] = s + 1;
    /* pack: rows grouped by expert, each group in token order */
    int64_t R = T * K;
    ds_moe_slot *slot = ds_arena_array(a, (size_t)R, sizeof(ds_moe_slot));
    float *xe = ds_arena_array(a, (size_t)(R * D), sizeof(float));  /* (R, D) packed inputs */
    float *ye = ds_arena_array(a, (size_t)(R * D), sizeof(float));  /* (R, D) expert outputs */
    float *ys = Fs > 0 ? ds_arena_array(a, (size_t)(T * D), sizeof(float)) : NULL;  /* (T, D) shared */
    if (!slot || !xe || !ye || (Fs > 0 && !ys)) return ds_err_set(e, DS_ENOMEM, "out of memory in MoE");
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0; k < K; k++) {
            int64_t x = idx[t * K + k], r = start[x] + fill[x]++;
            slot[r] = (ds_moe_slot){ t, (int32_t)x, (int32_t)k, wt[t * K + k], block[t] };
        }
    /* each token's packed rows in ascending order (the combine's order) */
    int64_t *trow = ds_arena_array(a, (size_t)R, sizeof(int64_t));   /* (T, K) */
    int64_t *tcnt = ds_arena_calloc(a, (size_t)DS_MAX(T, 1), sizeof(int64_t));
    if (!trow || !tcnt) return ds_err_set(e, DS_ENOMEM, "out of memory in MoE");
    for (int64_t r = 0; r < R; r++) {
        int64_t t = slot[r].token;
        trow[t * K + tcnt[t]++] = r;
    }
    moe_io io = { out, xe, xn, ye, ys, slot, trow, R, T, D, K };
    ds_par_for(R, 16, gather_worker, &io);
    /* exchange: the owners of the experts compute them; this process's
     * shared experts run alongside its own */
    ds_moe_shared sh = { &w->shared, xn, ys, T, segs, n_segs };
    int rc = ds_moe_exchange(m, l, slot, xe, R, ye, Fs > 0 ? &sh : NULL, a, e);
    if (rc) return rc;
    ds_par_for(T, DS_MAX(1, 32768 / DS_MAX(K * D, 1)), combine_worker, &io);
    return DS_OK;
}

int ds_ffn_forward(const ds_model *m, int64_t l, float *out, const float *xn, const int32_t *tok, int64_t T,
                   const ds_seg *segs, int n_segs, ds_arena *a, ds_err *e) {
    int oom = 0;
    switch (m->cfg.ffn_kind[l]) {
    case DS_FFN_DENSE:
        mlp_forward(out, xn, T, m->cfg.hidden_size, &m->layers[l].mlp, segs, n_segs, a, &oom);
        return oom ? ds_err_set(e, DS_ENOMEM, "out of memory in MLP") : DS_OK;
    case DS_FFN_MOE:
    case DS_FFN_HASH_MOE: return moe_forward(m, l, out, xn, tok, T, segs, n_segs, a, e);
    default:
        return ds_err_set(e, DS_EUNSUPPORTED, "layer %lld: FFN kind %d (hash-routed MoE) is not implemented",
                          (long long)l, m->cfg.ffn_kind[l]);
    }
}
