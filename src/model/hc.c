/*
 * hc.c - DeepSeek-V4's manifold-constrained hyper-connections: the residual
 * is hc residual streams per token, (T, hc, D), collapsed into one block
 * input and expanded back around every attention and FFN block, and
 * collapsed once more before the final norm (transformers'
 * DeepseekV4HyperConnection / DeepseekV4HyperHead).
 *
 * Per token, from its streams x (hc, D):
 *   f = RMSNorm(flatten(x)) (hc·D, unweighted);  m = fn · f   ((2+hc)·hc)
 *   pre[s]  = sigmoid(m[s]·scale0 + base[s]) + eps
 *   post[s] = 2·sigmoid(m[hc+s]·scale1 + base[hc+s])
 *   comb    = softmax_rows(m[2hc:]·scale2 + base[2hc:]) + eps    (hc, hc)
 *             then Sinkhorn: columns / (col sum + eps), then (iters-1) x
 *             (rows / (row sum + eps), columns / (col sum + eps))
 *   block input  u = Σ_s pre[s]·x[s]                               (D)
 *   after the block y = Block(norm(u)):  x'[k] = post[k]·y + Σ_j comb[j,k]·x[j]
 * Head: pre = sigmoid((hc_fn · f)·hc_scale + hc_base) + eps; h = Σ_s pre[s]·x[s]
 * (the main model's hc_head, or an MTP block's own hc_head_fn / base / scale).
 */
#include "model_internal.h"
#include "../tensor/ops.h"

#include <math.h>
#include <string.h>

static float sigm(float v) { return 1.0f / (1.0f + expf(-v)); }

/* mix (T, M) = fn · RMSNorm(x) per token; x (T, hc·D) */
static int mix_rows(const ds_model *m, const ds_tensor *fn, int64_t M, const float *x, int64_t T, const ds_seg *segs,
                    int n_segs, float *mix, ds_arena *a) {
    int64_t N = m->cfg.n_streams * m->cfg.hidden_size;
    float *f = ds_arena_array(a, (size_t)(T * N), sizeof(float));   /* (T, hc·D) */
    if (!f) return DS_ENOMEM;
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * N;
        double ss = 0;
        for (int64_t i = 0; i < N; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / (double)N + m->cfg.rms_norm_eps));
        for (int64_t i = 0; i < N; i++) f[t * N + i] = xr[i] * inv;
    }
    ds_plan_matmul(segs, n_segs, mix, M, f, N, fn, 0, M);
    return DS_OK;
}

int ds_hc_pre(const ds_model *m, const ds_tensor *fn, const float *base, const float *scale, const float *x, int64_t T,
              const ds_seg *segs, int n_segs, float *u, float *post, float *comb, ds_arena *a) {
    const ds_config *c = &m->cfg;
    int64_t hc = c->n_streams, D = c->hidden_size, M = (2 + hc) * hc;
    float eps = (float)c->hc_eps;
    ds_arena_mark mk = ds_arena_get_mark(a);
    float *mix = ds_arena_array(a, (size_t)(T * M), sizeof(float));   /* (T, M) */
    if (!mix || mix_rows(m, fn, M, x, T, segs, n_segs, mix, a)) return DS_ENOMEM;
    for (int64_t t = 0; t < T; t++) {
        const float *mx = mix + t * M, *xr = x + t * hc * D;
        float pre[64], *po = post + t * hc, *cb = comb + t * hc * hc;
        for (int64_t s = 0; s < hc; s++) {
            pre[s] = sigm(mx[s] * scale[0] + base[s]) + eps;
            po[s] = 2.0f * sigm(mx[hc + s] * scale[1] + base[hc + s]);
        }
        for (int64_t i = 0; i < hc; i++) {
            float *rw = cb + i * hc;
            for (int64_t j = 0; j < hc; j++) rw[j] = mx[2 * hc + i * hc + j] * scale[2] + base[2 * hc + i * hc + j];
            ds_softmax_ref(rw, hc);
            for (int64_t j = 0; j < hc; j++) rw[j] += eps;
        }
        for (int64_t it = 0; it < c->hc_sinkhorn_iters; it++) {
            if (it > 0)
                for (int64_t i = 0; i < hc; i++) {
                    float sum = 0;
                    for (int64_t j = 0; j < hc; j++) sum += cb[i * hc + j];
                    for (int64_t j = 0; j < hc; j++) cb[i * hc + j] /= sum + eps;
                }
            for (int64_t j = 0; j < hc; j++) {
                float sum = 0;
                for (int64_t i = 0; i < hc; i++) sum += cb[i * hc + j];
                for (int64_t i = 0; i < hc; i++) cb[i * hc + j] /= sum + eps;
            }
        }
        float *ur = u + t * D;
        for (int64_t d = 0; d < D; d++) {
            float v = 0;
            for (int64_t s = 0; s < hc; s++) v += pre[s] * xr[s * D + d];
            ur[d] = v;
        }
    }
    ds_arena_release(a, mk);
    return DS_OK;
}

void ds_hc_post(const ds_config *c, float *x, const float *y, const float *post, const float *comb, int64_t T) {
    int64_t hc = c->n_streams, D = c->hidden_size;
    float nx[64];
    for (int64_t t = 0; t < T; t++) {
        float *xr = x + t * hc * D;
        const float *po = post + t * hc, *cb = comb + t * hc * hc, *yr = y + t * D;
        for (int64_t d = 0; d < D; d++) {
            for (int64_t k = 0; k < hc; k++) {
                float v = 0;
                for (int64_t j = 0; j < hc; j++) v += cb[j * hc + k] * xr[j * D + d];
                nx[k] = po[k] * yr[d] + v;
            }
            for (int64_t k = 0; k < hc; k++) xr[k * D + d] = nx[k];
        }
    }
}

int ds_hc_head(const ds_model *m, const float *x, int64_t T, const ds_seg *segs, int n_segs, float *h, ds_arena *a) {
    return ds_hc_head_w(m, &m->hc_head_fn, m->hc_head_base, m->hc_head_scale, x, T, segs, n_segs, h, a);
}

int ds_hc_head_w(const ds_model *m, const ds_tensor *fn, const float *base, const float *scale, const float *x,
                 int64_t T, const ds_seg *segs, int n_segs, float *h, ds_arena *a) {
    const ds_config *c = &m->cfg;
    int64_t hc = c->n_streams, D = c->hidden_size;
    float eps = (float)c->hc_eps;
    ds_arena_mark mk = ds_arena_get_mark(a);
    float *mix = ds_arena_array(a, (size_t)(T * hc), sizeof(float));   /* (T, hc) */
    if (!mix || mix_rows(m, fn, hc, x, T, segs, n_segs, mix, a)) return DS_ENOMEM;
    for (int64_t t = 0; t < T; t++) {
        float pre[64];
        for (int64_t s = 0; s < hc; s++) pre[s] = sigm(mix[t * hc + s] * scale[0] + base[s]) + eps;
        for (int64_t d = 0; d < D; d++) {
            float v = 0;
            for (int64_t s = 0; s < hc; s++) v += pre[s] * x[t * hc * D + s * D + d];
            h[t * D + d] = v;
        }
    }
    ds_arena_release(a, mk);
    return DS_OK;
}
