/*
 * v4kern_avx2.c - AVX2 + FMA versions of v4kern.h's kernels: dot products
 * in 8 lanes (the tail in plain C), four heads per pass over a key so each
 * key is loaded once per four heads; the softmax is the twin's
 * (ds_v4_softmax_row), the weighted sum one FMA per lane in key order.
 */
#include "v4kern.h"
#include "v4kern_isa.h"
#include "simd_hsum.h"

#include <immintrin.h>
#include <string.h>

/* out[j] = q_j · k over n floats, j < 4 (q_j = q + j·ldq) */
static inline void dot4(const float *q, int64_t ldq, const float *k, int64_t n, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 kv = _mm256_loadu_ps(k + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), kv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + ldq + i), kv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 2 * ldq + i), kv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 3 * ldq + i), kv, a3);
    }
    out[0] = ds_hsum256(a0), out[1] = ds_hsum256(a1), out[2] = ds_hsum256(a2), out[3] = ds_hsum256(a3);
    for (; i < n; i++)
        for (int j = 0; j < 4; j++) out[j] += q[j * ldq + i] * k[i];
}

static inline float dot1(const float *q, const float *k, int64_t n) {
    __m256 a = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a);
    float s = ds_hsum256(a);
    for (; i < n; i++) s += q[i] * k[i];
    return s;
}

/* y += p · x over n floats */
static inline void axpy(float *y, float p, const float *x, int64_t n) {
    __m256 pv = _mm256_set1_ps(p);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += p * x[i];
}

void ds_v4_attn_heads_avx2(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
                           int64_t Dh, float scale, const float *sinks, float *lg) {
    int64_t nh = h1 - h0;
    float d[4];
    for (int64_t i = 0; i < nk; i++) {   /* logits (nh, nk): each key loaded once per four heads */
        const float *k = keys[i];
        int64_t h = 0;
        for (; h + 4 <= nh; h += 4) {
            dot4(q + (h0 + h) * Dh, Dh, k, Dh, d);
            for (int j = 0; j < 4; j++) lg[(h + j) * nk + i] = d[j] * scale;
        }
        for (; h < nh; h++) lg[h * nk + i] = dot1(q + (h0 + h) * Dh, k, Dh) * scale;
    }
    for (int64_t h = 0; h < nh; h++) {
        float *l = lg + h * nk, inv = ds_v4_softmax_row(l, nk, sinks[h0 + h]);
        for (int64_t i = 0; i < nk; i++) l[i] *= inv;
        memset(o + (h0 + h) * Dh, 0, (size_t)Dh * sizeof(float));
    }
    for (int64_t i = 0; i < nk; i++)   /* o_h += p_hi k_i, key by key */
        for (int64_t h = 0; h < nh; h++) axpy(o + (h0 + h) * Dh, lg[h * nk + i], keys[i], Dh);
}

void ds_v4_index_scores_avx2(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
                             int64_t w1, int64_t Hi, int64_t Di, float iscale) {
    float d[4];
    for (int64_t w = w0; w < w1; w++) {
        const float *k = kent + w * ld;
        float s = 0;
        int64_t h = 0;
        for (; h + 4 <= Hi; h += 4) {
            dot4(q + h * Di, Di, k, Di, d);
            for (int j = 0; j < 4; j++) s += (d[j] > 0 ? d[j] : 0) * iscale * iw[h + j];
        }
        for (; h < Hi; h++) {
            float x = dot1(q + h * Di, k, Di);
            s += (x > 0 ? x : 0) * iscale * iw[h];
        }
        sc[w] = s;
    }
}
