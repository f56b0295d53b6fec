/*
 * dsa.c - DeepSeek Sparse Attention's lightning indexer (V3.2): which
 * earlier positions each query of a DSA layer attends to. The attention over
 * them is MLA's (mla.c); this file owns the index keys and the selection.
 *
 *   index key   k_j = RoPE_half(LayerNorm(wk · xn_j))            (Di) -> cache row tail
 *   index query q_t = RoPE_half(wq_b · qr_t)                      (Hi, Di)
 *               qr_t = q_a_layernorm(q_a_proj(xn_t)), MLA's q LoRA latent
 *   weights     w_t = weights_proj · xn_t · Hi^-1/2               (Hi)
 *   score       I[t, j] = Σ_h w_t[h] · relu(Di^-1/2 · q_t[h] · k_j)      j <= pos(t)
 *   selection   the index_topk positions of largest I[t, ·]; a query that
 *               sees no more than index_topk positions attends to all of them
 *               (transformers takes topk(min(index_topk, T)) over the causal
 *               mask, so the same set). Ties go to the earlier position.
 * RoPE_half rotates the first Dr dims as two halves (x_i, x_{i+Dr/2}) with
 * MLA's frequencies (transformers' rotate_half; MLA itself is interleaved).
 * LayerNorm: eps 1e-6, weight and bias. transformers (and DeepSeek's
 * reference) compute the index scores after a Hadamard rotation and FP8
 * rounding in the official kernels; the rotation is orthogonal (same dot
 * products) and we keep fp32, as transformers does.
 *
 * A row's selection depends only on its own query and the cache, so batching
 * does not change it.
 */
#include "model_internal.h"
#include "../core/thread.h"
#include "../tensor/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IDX_BLOCK 64   /* cache rows scored per step */

/* rotate_half RoPE on x[0, Dr): pairs (x_i, x_{i + Dr/2}) */
static void rope_half(float *x, int64_t Dr, const float *inv_freq, int64_t pos) {
    int64_t half = Dr / 2;
    for (int64_t i = 0; i < half; i++) {
        float ang = (float)pos * inv_freq[i];
        float cs = cosf(ang), sn = sinf(ang);
        float a = x[i], b = x[i + half];
        x[i] = a * cs - b * sn;
        x[i + half] = b * cs + a * sn;
    }
}

void ds_dsa_keys(const ds_model *m, int64_t l, const float *xn, int64_t T, const ds_seg *segs, int n_segs,
                 float *rows, int64_t ldrow, int64_t off) {
    const ds_config *c = &m->cfg;
    const ds_layer_w *w = &m->layers[l];
    int64_t Di = c->index_head_dim, D = c->hidden_size;
    ds_plan_matmul(segs, n_segs, rows + off, ldrow, xn, D, &w->idx_k, 0, Di);
    for (int s = 0; s < n_segs; s++)
        for (int64_t i = 0; i < segs[s].n; i++) {
            float *k = rows + (segs[s].t0 + i) * ldrow + off;
            double mean = 0, var = 0;
            for (int64_t d = 0; d < Di; d++) mean += k[d];
            mean /= (double)Di;
            for (int64_t d = 0; d < Di; d++) var += ((double)k[d] - mean) * ((double)k[d] - mean);
            float mu = (float)mean, inv = (float)(1.0 / sqrt(var / (double)Di + 1e-6));
            for (int64_t d = 0; d < Di; d++) k[d] = (k[d] - mu) * inv * w->idx_k_norm[d] + w->idx_k_norm_b[d];
            rope_half(k, c->qk_rope_head_dim, m->inv_freq, segs[s].pos0 + i);
        }
}

typedef struct {
    const ds_model *m;
    int64_t l;
    const ds_seg *segs;
    const int *row_seg;     /* [T] segment of token t */
    const float *q;         /* (T, Hi, Di) roped */
    const float *wt;        /* (T, Hi) */
    ds_dsa_sel *out;
} sel_ctx;

typedef struct { float s; int32_t j; } scored;

/* the order of the selection: higher score first, then the earlier position */
static inline bool before(scored a, scored b) { return a.s > b.s || (a.s == b.s && a.j < b.j); }

static int by_pos(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Rearranges v so that v[0, k) are the k first in `before` order (any
 * order among them): quickselect, median-of-three pivots, O(n) on average. */
static void select_first(scored *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        scored a = v[lo], b = v[mid], c = v[hi], p;
        if (before(a, b)) p = before(b, c) ? b : (before(a, c) ? c : a);
        else p = before(a, c) ? a : (before(b, c) ? c : b);
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (before(v[i], p)) i++;
            while (before(p, v[j])) j--;
            if (i <= j) { scored t = v[i]; v[i] = v[j]; v[j] = t; i++; j--; }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else return;
    }
}

void ds_dsa_topk(const float *score, int64_t n, int64_t k, int32_t *sel, void *scratch) {
    scored *v = scratch;
    for (int64_t j = 0; j < n; j++) v[j] = (scored){ isnan(score[j]) ? -INFINITY : score[j], (int32_t)j };
    if (k > n) k = n;
    select_first(v, n, k);
    for (int64_t i = 0; i < k; i++) sel[i] = v[i].j;
    qsort(sel, (size_t)k, sizeof *sel, by_pos);
}

static void sel_worker(void *vctx, int64_t t0, int64_t t1, int tid) {
    sel_ctx *c = vctx;
    const ds_config *cfg = &c->m->cfg;
    int64_t Hi = cfg->index_n_heads, Di = cfg->index_head_dim, K = cfg->index_topk;
    int64_t off = cfg->kv_lora_rank + cfg->qk_rope_head_dim, ld = ds_config_kv_width(cfg, c->l);
    float scale = (float)(1.0 / sqrt((double)Di));
    for (int64_t t = t0; t < t1; t++) {
        const ds_seg *sg = &c->segs[c->row_seg[t]];
        int64_t vis = sg->pos0 + (t - sg->t0) + 1;
        if (vis <= K) { c->out->n[t] = 0; continue; }
        float *sc = ds_scratch(tid, 1, (size_t)vis);                     /* [vis] index scores */
        float *deq = ds_scratch(tid, 2, (size_t)(IDX_BLOCK * ld));
        float *qk = ds_scratch(tid, 3, (size_t)(Hi * IDX_BLOCK));        /* (Hi, block) */
        void *tmp = ds_scratch_bytes(tid, 4, (size_t)vis * sizeof(scored));
        if (!sc || !deq || !qk || !tmp) return;   /* out of memory: the context reports it */
        const float *q = c->q + t * Hi * Di, *wt = c->wt + t * Hi;
        /* blocks at fixed positions (multiples of IDX_BLOCK): a score's bits depend on its row only */
        for (int64_t j0 = 0; j0 < vis; j0 += IDX_BLOCK) {
            int64_t nb = DS_MIN(IDX_BLOCK, vis - j0);
            const float *rows = ds_kvcache_rows_f32_at(sg->cache, c->l, j0, nb, deq);
            ds_sgemm(false, true, Hi, nb, Di, scale, q, Di, rows + off, ld, 0.0f, qk, nb);
            for (int64_t jj = 0; jj < nb; jj++) {
                float s = 0;
                for (int64_t h = 0; h < Hi; h++) {
                    float d = qk[h * nb + jj];
                    s += wt[h] * (d > 0 ? d : 0.0f);
                }
                sc[j0 + jj] = s;
            }
        }
        ds_dsa_topk(sc, vis, K, c->out->idx + t * K, tmp);
        c->out->n[t] = K;
    }
}

int ds_dsa_select(const ds_model *m, int64_t l, const float *xn, const float *qr, int64_t T, const ds_seg *segs,
                  int n_segs, ds_arena *a, ds_dsa_sel *out, ds_err *e) {
    const ds_config *c = &m->cfg;
    const ds_layer_w *w = &m->layers[l];
    int64_t Hi = c->index_n_heads, Di = c->index_head_dim, D = c->hidden_size, Rq = c->q_lora_rank;
    float *q = ds_arena_calloc(a, (size_t)(T * Hi * Di), sizeof(float));   /* (T, Hi, Di) */
    float *wt = ds_arena_calloc(a, (size_t)(T * Hi), sizeof(float));       /* (T, Hi) */
    int *row_seg = ds_arena_calloc(a, (size_t)T, sizeof(int));              /* [T] */
    out->idx = ds_arena_calloc(a, (size_t)(T * c->index_topk), sizeof(int32_t));  /* (T, Ktop) */
    out->n = ds_arena_calloc(a, (size_t)T, sizeof(int64_t));                /* [T] */
    if (!q || !wt || !row_seg || !out->idx || !out->n)
        return ds_err_set(e, DS_ENOMEM, "out of memory in the sparse-attention indexer of layer %lld", (long long)l);
    ds_plan_matmul(segs, n_segs, q, Hi * Di, qr, Rq, &w->idx_q_b, 0, Hi * Di);
    ds_plan_matmul(segs, n_segs, wt, Hi, xn, D, &w->idx_w, 0, Hi);
    float ws = (float)(1.0 / sqrt((double)Hi));
    for (int64_t i = 0; i < T * Hi; i++) wt[i] *= ws;
    for (int s = 0; s < n_segs; s++)
        for (int64_t i = 0; i < segs[s].n; i++) {
            int64_t t = segs[s].t0 + i;
            row_seg[t] = s;
            for (int64_t h = 0; h < Hi; h++) rope_half(q + (t * Hi + h) * Di, c->qk_rope_head_dim, m->inv_freq, segs[s].pos0 + i);
        }
    sel_ctx sc = { m, l, segs, row_seg, q, wt, out };
    ds_par_for_dynamic(T, 1, 1, sel_worker, &sc);
    return DS_OK;
}
