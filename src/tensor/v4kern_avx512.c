/*
 * v4kern_avx512.c - AVX-512 versions of v4kern.h's kernels: dot products in
 * 16 lanes (a masked load for the tail), four heads per pass over a key so
 * each key is loaded once per four heads; the softmax is the twin's
 * (ds_v4_softmax_row), the weighted sum one FMA per lane in key order.
 */
#include "v4kern.h"
#include "v4kern_isa.h"

#include <immintrin.h>
#include <string.h>

/* out[j] = q_j · k over n floats, j < 4 (q_j = q + j·ldq) */
static inline void dot4(const float *q, int64_t ldq, const float *k, int64_t n, float *out) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 kv = _mm512_loadu_ps(k + i);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), kv, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + ldq + i), kv, a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + 2 * ldq + i), kv, a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + 3 * ldq + i), kv, a3);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 kv = _mm512_maskz_loadu_ps(m, k + i);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), kv, a0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + ldq + i), kv, a1);
        a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 2 * ldq + i), kv, a2);
        a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 3 * ldq + i), kv, a3);
    }
    out[0] = _mm512_reduce_add_ps(a0);
    out[1] = _mm512_reduce_add_ps(a1);
    out[2] = _mm512_reduce_add_ps(a2);
    out[3] = _mm512_reduce_add_ps(a3);
}

static inline float dot1(const float *q, const float *k, int64_t n) {
    __m512 a = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i), a);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), _mm512_maskz_loadu_ps(m, k + i), a);
    }
    return _mm512_reduce_add_ps(a);
}

/* y += p · x over n floats */
static inline void axpy(float *y, float p, const float *x, int64_t n) {
    __m512 pv = _mm512_set1_ps(p);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(pv, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(pv, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

void ds_v4_attn_heads_avx512(float *o, const float *q, const float *const *keys, int64_t nk, int64_t h0, int64_t h1,
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

void ds_v4_index_scores_avx512(float *sc, const float *q, const float *iw, const float *kent, int64_t ld, int64_t w0,
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
