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
 * Routed outputs are accumulated in expert-id order, then the shared
 * experts are added (the order transformers uses).
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
    float *g = ds_arena_calloc(a, (size_t)(T * F), sizeof(float));   /* (T, F) */
    float *u = ds_arena_calloc(a, (size_t)(T * F), sizeof(float));   /* (T, F) */
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

void ds_moe_route(const ds_config *c, const float *logits, const float *bias, int32_t *idx, float *wt,
                  float *scores, float *tmp) {
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, G = c->n_group, per = E / G;
    if (c->scoring_func == DS_SCORE_SIGMOID) {
        for (int64_t i = 0; i < E; i++) scores[i] = 1.0f / (1.0f + expf(-logits[i]));
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
    double sum = 0;
    for (int64_t k = 0; k < K; k++) { wt[k] = scores[idx[k]]; sum += wt[k]; }
    for (int64_t k = 0; k < K; k++) {
        float v = wt[k];
        if (c->norm_topk_prob && K > 1) v = (float)(v / sum);
        wt[k] = v * (float)c->routed_scaling_factor;
    }
}

/* Jobs for expert x: its rows [r0, r1) (grouped by expert, in token
 * order) split like the batch plan. Rows of tokens in the per-token region
 * [0, S) form one per-token job; the rows of each long segment form a job
 * of their own, as they would if that sequence ran alone. */
static int expert_jobs(ds_mm_job *jobs, const int64_t *rows, int64_t r0, int64_t r1, const ds_seg *segs, int n_segs,
                       int64_t S, float *y, int64_t ldy, const float *x, int64_t ldx, const ds_tensor *w, int64_t N) {
    int nj = 0;
    int64_t r = r0;
    int64_t e = r;
    while (e < r1 && rows[e] < S) e++;
    if (e > r) jobs[nj++] = (ds_mm_job){ y + r * ldy, ldy, x + r * ldx, ldx, w, 0, N, e - r, true };
    r = e;
    for (int s = 0; s < n_segs && r < r1; s++) {
        if (segs[s].n < DS_TOKEN_BLOCK_MIN) continue;
        int64_t end = segs[s].t0 + segs[s].n;
        e = r;
        while (e < r1 && rows[e] < end) e++;
        if (e > r) jobs[nj++] = (ds_mm_job){ y + r * ldy, ldy, x + r * ldx, ldx, w, 0, N, e - r, false };
        r = e;
    }
    return nj;
}

/* The gather of routed rows and the combine, split across threads. */
typedef struct {
    float *out, *xe;
    const float *xn, *ye;
    const int64_t *rows;
    const float *rw;
    int64_t R, T, D;
    bool shared;
} moe_io;

/* xe[r] = xn[rows[r]] for r in [r0, r1) */
static void gather_worker(void *vctx, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    moe_io *c = vctx;
    for (int64_t r = r0; r < r1; r++) memcpy(c->xe + r * c->D, c->xn + c->rows[r] * c->D, (size_t)c->D * sizeof(float));
}

/* Columns [d0, d1) of out: the routed rows added in expert-id order (rows
 * are grouped by expert), then the shared experts; every element sees the
 * same sequence of operations whatever the split. */
static void combine_worker(void *vctx, int64_t d0, int64_t d1, int tid) {
    (void)tid;
    moe_io *c = vctx;
    int64_t D = c->D, n = d1 - d0;
    for (int64_t t = 0; t < c->T; t++) memset(c->out + t * D + d0, 0, (size_t)n * sizeof(float));
    for (int64_t r = 0; r < c->R; r++) {
        float *o = c->out + c->rows[r] * D + d0;
        const float *y = c->ye + r * D + d0;
        float w = c->rw[r];
        for (int64_t d = 0; d < n; d++) o[d] += w * y[d];
    }
    if (c->shared)
        for (int64_t t = 0; t < c->T; t++) {
            float *o = c->out + t * D + d0;
            const float *y = c->ye + (c->R + t) * D + d0;
            for (int64_t d = 0; d < n; d++) o[d] += y[d];
        }
}

int ds_ffn_forward(ds_model *m, int64_t l, float *out, const float *xn, int64_t T, const ds_seg *segs,
                   int n_segs, ds_arena *a, ds_err *e) {
    const ds_config *c = &m->cfg;
    const ds_layer_w *w = &m->layers[l];
    int64_t D = c->hidden_size;
    int oom = 0;
    if (!w->is_moe) {
        mlp_forward(out, xn, T, D, &w->mlp, segs, n_segs, a, &oom);
        return oom ? ds_err_set(e, DS_ENOMEM, "out of memory in MLP") : DS_OK;
    }
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, F = c->moe_intermediate_size;
    int64_t Fs = c->n_shared_experts * F, S = ds_plan_small_tokens(segs, n_segs);
    float *logits = ds_arena_calloc(a, (size_t)(T * E), sizeof(float));  /* (T, E) */
    int32_t *idx = ds_arena_calloc(a, (size_t)(T * K), sizeof(int32_t)); /* (T, K) */
    float *wt = ds_arena_calloc(a, (size_t)(T * K), sizeof(float));      /* (T, K) */
    float *scores = ds_arena_calloc(a, (size_t)E, sizeof(float));
    float *tmp = ds_arena_calloc(a, (size_t)(E + c->n_group), sizeof(float));
    int64_t *start = ds_arena_calloc(a, (size_t)E + 1, sizeof(int64_t));   /* (E+1) row offsets per expert */
    int64_t *fill = ds_arena_calloc(a, (size_t)E + 1, sizeof(int64_t));
    if (!logits || !idx || !wt || !scores || !tmp || !start || !fill) return ds_err_set(e, DS_ENOMEM, "out of memory in MoE");
    ds_plan_matmul(segs, n_segs, logits, E, xn, D, &w->router, 0, E);
    for (int64_t t = 0; t < T; t++) {
        ds_moe_route(c, logits + t * E, w->router_bias, idx + t * K, wt + t * K, scores, tmp);
        for (int64_t k = 0; k < K; k++) start[idx[t * K + k] + 1]++;
    }
    for (int64_t x = 0; x < E; x++) start[x + 1] += start[x];
    int64_t R = T * K;  /* routed rows, grouped by expert, each group in token order */
    /* every row of these is written before it is read: no zero fill */
    float *xe = ds_arena_array(a, (size_t)(R * D), sizeof(float));     /* (R, D) gathered inputs */
    float *g = ds_arena_array(a, (size_t)(R * F + T * Fs), sizeof(float));  /* (R, F) + shared (T, Fs) */
    float *u = ds_arena_array(a, (size_t)(R * F + T * Fs), sizeof(float));
    float *ye = ds_arena_array(a, (size_t)(R * D + T * D), sizeof(float));  /* (R, D) + shared (T, D) */
    int64_t *rows = ds_arena_calloc(a, (size_t)R, sizeof(int64_t));        /* token of each routed row */
    float *rw = ds_arena_calloc(a, (size_t)R, sizeof(float));               /* its combine weight */
    int max_jobs = (int)(2 * (E + 1) * (n_segs + 1));
    ds_mm_job *jobs = ds_arena_calloc(a, (size_t)max_jobs, sizeof(ds_mm_job));
    if (!xe || !g || !u || !ye || !rows || !rw || !jobs) return ds_err_set(e, DS_ENOMEM, "out of memory in MoE");
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0; k < K; k++) {
            int64_t x = idx[t * K + k], r = start[x] + fill[x]++;
            rows[r] = t;
            rw[r] = wt[t * K + k];
        }
    moe_io io = { out, xe, xn, ye, rows, rw, R, T, D, Fs > 0 };
    ds_par_for(R, 16, gather_worker, &io);
    /* gate and up projections of every used expert (and the shared ones) in one pass */
    int nj = 0;
    for (int64_t x = 0; x < E; x++) {
        if (start[x + 1] == start[x]) continue;
        const ds_mlp_w *ex = &w->experts[x];
        nj += expert_jobs(jobs + nj, rows, start[x], start[x + 1], segs, n_segs, S, g, F, xe, D, &ex->gate, F);
        nj += expert_jobs(jobs + nj, rows, start[x], start[x + 1], segs, n_segs, S, u, F, xe, D, &ex->up, F);
    }
    if (Fs > 0) {
        nj += ds_plan_jobs(segs, n_segs, jobs + nj, g + R * F, Fs, xn, D, &w->shared.gate, 0, Fs);
        nj += ds_plan_jobs(segs, n_segs, jobs + nj, u + R * F, Fs, xn, D, &w->shared.up, 0, Fs);
    }
    DS_ASSERT(nj <= max_jobs);
    ds_matmul_multi(jobs, nj);
    ds_silu_mul(g, g, u, R * F + T * Fs);
    /* down projections in one pass */
    nj = 0;
    for (int64_t x = 0; x < E; x++) {
        if (start[x + 1] == start[x]) continue;
        nj += expert_jobs(jobs + nj, rows, start[x], start[x + 1], segs, n_segs, S, ye, D, g, F, &w->experts[x].down, D);
    }
    if (Fs > 0) nj += ds_plan_jobs(segs, n_segs, jobs + nj, ye + R * D, D, g + R * F, Fs, &w->shared.down, 0, D);
    ds_matmul_multi(jobs, nj);
    ds_par_for(D, DS_MAX(8, 32768 / DS_MAX(R, 1)), combine_worker, &io);
    return DS_OK;
}
