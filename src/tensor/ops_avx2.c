/*
 * ops_avx2.c - AVX2 + FMA + F16C kernels (compiled with those -m flags
 * only; called through ops.c when the CPU supports them).
 *
 * FP8 E4M3 -> fp32 trick: the byte's 7 magnitude bits placed at f16 bits
 * [13:7] form an f16 equal to fp8 · 2^-8 for normals and subnormals alike,
 * so F16C converts exactly and the 2^8 is folded into the block scale.
 */
#include "ops_isa.h"
#include "simd_exp.h"

#include <immintrin.h>
#include "simd_hsum.h"
#include <math.h>

float ds_dot_f32_avx2(const float *w, const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = ds_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

static inline __m256 load_bf16x8(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

float ds_dot_bf16_avx2(const uint16_t *w, const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(load_bf16x8(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load_bf16x8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(load_bf16x8(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(load_bf16x8(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_bf16x8(w + i), _mm256_loadu_ps(x + i), a0);
    float s = ds_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) {
        union { uint32_t u; float f; } c = { (uint32_t)w[i] << 16 };
        s += c.f * x[i];
    }
    return s;
}

/* The dot products of one weight row with m <= 4 token rows, each token's
 * result bit for bit what the one-token kernel above gives it (the same
 * four accumulators per token, the same order of additions, the same
 * tail): the row is loaded once for all m tokens. M is a compile-time
 * constant in each instantiation so the accumulators stay in registers. */
static inline __m256 load_f32x8(const float *p) { return _mm256_loadu_ps(p); }
static inline float scalar_f32(const float *w, int64_t i) { return w[i]; }
static inline float scalar_bf16(const uint16_t *w, int64_t i) {
    union { uint32_t u; float f; } c = { (uint32_t)w[i] << 16 };
    return c.f;
}

#define DOT_ROWS(NAME, WT, LOAD, SCALAR)                                                                        \
    static inline __attribute__((always_inline)) void NAME##_m(const WT *w, const float *const *x, int M,       \
                                                               int64_t n, float *out) {                         \
        __m256 acc[4][4];                                                                                       \
        _Pragma("GCC unroll 4") for (int t = 0; t < M; t++)                                                     \
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) acc[t][j] = _mm256_setzero_ps();                \
        int64_t i = 0;                                                                                          \
        for (; i + 32 <= n; i += 32)                                                                            \
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {                                               \
                __m256 wv = LOAD(w + i + 8 * j);                                                                \
                _Pragma("GCC unroll 4") for (int t = 0; t < M; t++)                                             \
                    acc[t][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[t] + i + 8 * j), acc[t][j]);              \
            }                                                                                                   \
        for (; i + 8 <= n; i += 8) {                                                                            \
            __m256 wv = LOAD(w + i);                                                                            \
            _Pragma("GCC unroll 4") for (int t = 0; t < M; t++)                                                 \
                acc[t][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[t] + i), acc[t][0]);                          \
        }                                                                                                       \
        /* ds_hsum256 of 4 tokens at once: hadd(hadd(l0, l1), hadd(l2, l3))                                     \
         * adds each token's four lanes as (l0 + l1) + (l2 + l3), its order */                                  \
        __m128 lo[4];                                                                                           \
        _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++) {                                                   \
            int u = t < M ? t : 0;                                                                              \
            __m256 v = _mm256_add_ps(_mm256_add_ps(acc[u][0], acc[u][1]), _mm256_add_ps(acc[u][2], acc[u][3])); \
            lo[t] = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));                         \
        }                                                                                                       \
        float r[4];                                                                                             \
        _mm_storeu_ps(r, _mm_hadd_ps(_mm_hadd_ps(lo[0], lo[1]), _mm_hadd_ps(lo[2], lo[3])));                    \
        _Pragma("GCC unroll 4") for (int t = 0; t < M; t++) {                                                   \
            float s = r[t];                                                                                     \
            for (int64_t k = i; k < n; k++) s += SCALAR(w, k) * x[t][k];                                        \
            out[t] = s;                                                                                         \
        }                                                                                                       \
    }                                                                                                           \
    void NAME(const WT *w, const float *const *x, int m, int64_t n, float *out) {                               \
        switch (m) {                                                                                            \
        case 4: NAME##_m(w, x, 4, n, out); break;                                                               \
        case 3: NAME##_m(w, x, 3, n, out); break;                                                               \
        case 2: NAME##_m(w, x, 2, n, out); break;                                                               \
        default: NAME##_m(w, x, 1, n, out); break;                                                              \
        }                                                                                                       \
    }

DOT_ROWS(ds_dot_rows_f32_avx2, float, load_f32x8, scalar_f32)
DOT_ROWS(ds_dot_rows_bf16_avx2, uint16_t, load_bf16x8, scalar_bf16)

/* y[i] = fmaf(a, x[i], y[i]): one rounding per element, so the vector body
 * and the scalar tail give exactly what a scalar fmaf loop gives. */
void ds_axpy_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

float ds_dot_f16_avx2(const uint16_t *w, const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8))), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), a0);
    float s = ds_hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += _cvtsh_ss(w[i]) * x[i];
    return s;
}

static inline __m256 load_fp8x8_scaled_down(const uint8_t *p) {
    /* 8 bytes -> 8 x f16 bits ((b&0x80)<<8 | (b&0x7f)<<7) -> fp32 (= fp8 · 2^-8) */
    __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p));
    __m128i sign = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8);
    __m128i mag = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7f)), 7);
    return _mm256_cvtph_ps(_mm_or_si128(sign, mag));
}

static inline float fp8_scalar_scaled_down(uint8_t b) {
    uint16_t h = (uint16_t)(((b & 0x80) << 8) | ((b & 0x7f) << 7));
    return _cvtsh_ss(h);
}

void ds_kv_dequant_row_avx2(float *y, const uint8_t *row, int64_t W, int block, int fp8) {
    int64_t nb = (W + block - 1) / block;
    const uint8_t *q = row + 4 * nb;
    for (int64_t b = 0; b < nb; b++) {
        float d;
        __builtin_memcpy(&d, row + 4 * b, 4);
        int64_t i = b * block, i1 = i + block < W ? i + block : W;
        if (fp8) {
            /* (code · 2^-8) · (d · 2^8): the same real product as d · code, rounded once */
            __m256 vd = _mm256_set1_ps(d * 256.0f);
            for (; i + 8 <= i1; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(load_fp8x8_scaled_down(q + i), vd));
            for (; i < i1; i++) y[i] = fp8_scalar_scaled_down(q[i]) * (d * 256.0f);
        } else {
            __m256 vd = _mm256_set1_ps(d);
            for (; i + 8 <= i1; i += 8) {
                __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
                _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(v), vd));
            }
            for (; i < i1; i++) y[i] = d * (float)(int8_t)q[i];
        }
    }
}

float ds_dot_fp8_avx2(const uint8_t *w, const float *x, int64_t n, const float *scale, int block) {
    float total = 0.0f;
    for (int64_t b0 = 0; b0 < n; b0 += block) {
        int64_t b1 = b0 + block < n ? b0 + block : n;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int64_t i = b0;
        for (; i + 16 <= b1; i += 16) {
            a0 = _mm256_fmadd_ps(load_fp8x8_scaled_down(w + i), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(load_fp8x8_scaled_down(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        }
        for (; i + 8 <= b1; i += 8) a0 = _mm256_fmadd_ps(load_fp8x8_scaled_down(w + i), _mm256_loadu_ps(x + i), a0);
        float s = ds_hsum256(_mm256_add_ps(a0, a1));
        for (; i < b1; i++) s += fp8_scalar_scaled_down(w[i]) * x[i];
        total += s * (scale ? scale[b0 / block] : 1.0f) * 256.0f;
    }
    return total;
}

void ds_cvt_bf16_avx2(float *out, const uint16_t *w, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_bf16x8(w + i));
    for (; i < n; i++) {
        union { uint32_t u; float f; } c = { (uint32_t)w[i] << 16 };
        out[i] = c.f;
    }
}

void ds_cvt_f16_avx2(float *out, const uint16_t *w, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))));
    for (; i < n; i++) out[i] = _cvtsh_ss(w[i]);
}

void ds_wsum_rows_avx2(float *u, const float *p, const float *kv, int64_t n, int64_t W, int64_t R) {
    /* 64 columns at a time in 8 accumulators, rows in order */
    for (int64_t c = 0; c < R; c += 64) {
        int64_t nc = R - c < 64 ? R - c : 64;
        __m256 a[8];
        for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
        if (nc == 64) {
            for (int64_t j = 0; j < n; j++) {
                __m256 pj = _mm256_set1_ps(p[j]);
                const float *r = kv + j * W + c;
                for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(r + 8 * k), a[k]);
            }
        } else {
            for (int64_t j = 0; j < n; j++) {
                __m256 pj = _mm256_set1_ps(p[j]);
                const float *r = kv + j * W + c;
                for (int k = 0; k < nc / 8; k++) a[k] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(r + 8 * k), a[k]);
            }
        }
        for (int k = 0; k < nc / 8; k++) _mm256_storeu_ps(u + c + 8 * k, a[k]);
    }
}

/* Flash-decode step (see ds_mla_attn_step). Scores: tiles of 4 heads x 3
 * cache rows (12 accumulators), each dot product in one accumulator in k
 * order, so a score's bits do not depend on the tile it fell in. Then per
 * head the block max, p = exp(s - m) (tail lanes zeroed) and the rescale;
 * the weighted sum runs 2 heads x 32 columns at a time over the rows. */
static inline float dot1_avx2(const float *a, const float *b, int64_t W) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = 0; k < W; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
    return ds_hsum256(acc);
}

void ds_mla_attn_step_avx2(float *u, float *m, float *l, const float *q, int64_t ldq, int64_t H, const float *kv,
                           int64_t W, int64_t n, int64_t R, float scale, float *sc) {
    int64_t ls = n + 8;   /* score row stride */
    int64_t h = 0;
    for (; h + 4 <= H; h += 4) {
        const float *q0 = q + h * ldq, *q1 = q0 + ldq, *q2 = q1 + ldq, *q3 = q2 + ldq;
        int64_t j = 0;
        for (; j + 3 <= n; j += 3) {
            const float *k0 = kv + j * W, *k1 = k0 + W, *k2 = k1 + W;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
            __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
            for (int64_t k = 0; k < W; k += 8) {
                __m256 x0 = _mm256_loadu_ps(k0 + k), x1 = _mm256_loadu_ps(k1 + k), x2 = _mm256_loadu_ps(k2 + k);
                __m256 y = _mm256_loadu_ps(q0 + k);
                a00 = _mm256_fmadd_ps(y, x0, a00); a01 = _mm256_fmadd_ps(y, x1, a01); a02 = _mm256_fmadd_ps(y, x2, a02);
                y = _mm256_loadu_ps(q1 + k);
                a10 = _mm256_fmadd_ps(y, x0, a10); a11 = _mm256_fmadd_ps(y, x1, a11); a12 = _mm256_fmadd_ps(y, x2, a12);
                y = _mm256_loadu_ps(q2 + k);
                a20 = _mm256_fmadd_ps(y, x0, a20); a21 = _mm256_fmadd_ps(y, x1, a21); a22 = _mm256_fmadd_ps(y, x2, a22);
                y = _mm256_loadu_ps(q3 + k);
                a30 = _mm256_fmadd_ps(y, x0, a30); a31 = _mm256_fmadd_ps(y, x1, a31); a32 = _mm256_fmadd_ps(y, x2, a32);
            }
            float *s0 = sc + h * ls + j;
            s0[0] = ds_hsum256(a00); s0[1] = ds_hsum256(a01); s0[2] = ds_hsum256(a02);
            s0 += ls; s0[0] = ds_hsum256(a10); s0[1] = ds_hsum256(a11); s0[2] = ds_hsum256(a12);
            s0 += ls; s0[0] = ds_hsum256(a20); s0[1] = ds_hsum256(a21); s0[2] = ds_hsum256(a22);
            s0 += ls; s0[0] = ds_hsum256(a30); s0[1] = ds_hsum256(a31); s0[2] = ds_hsum256(a32);
        }
        for (; j < n; j++)
            for (int64_t i = 0; i < 4; i++) sc[(h + i) * ls + j] = dot1_avx2(q + (h + i) * ldq, kv + j * W, W);
    }
    for (; h < H; h++)
        for (int64_t j = 0; j < n; j++) sc[h * ls + j] = dot1_avx2(q + h * ldq, kv + j * W, W);
    ds_mla_attn_update_avx2(u, m, l, H, kv, W, n, R, scale, sc);
}

/* online softmax (ops_isa.h): p = exp(scale·s − m_new), the rescale factors */
void ds_mla_attn_softmax_avx2(float *m, float *l, int64_t H, int64_t n, float scale, float *sc) {
    int64_t ls = n + 8, h;
    float *alpha = sc + H * ls;   /* H rescale factors after the scores */
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (h = 0; h < H; h++) {
        float *sh = sc + h * ls;
        float bm = -INFINITY;
        for (int64_t j = 0; j < n; j++) { sh[j] *= scale; bm = sh[j] > bm ? sh[j] : bm; }
        float mn = m[h] > bm ? m[h] : bm;
        alpha[h] = m[h] == -INFINITY ? 0.0f : expf(m[h] - mn);
        __m256 vm = _mm256_set1_ps(mn), acc = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j += 8) {
            __m256 mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j)), lane));
            __m256 p = _mm256_and_ps(ds_exp256(_mm256_sub_ps(_mm256_loadu_ps(sh + j), vm)), mask);
            _mm256_storeu_ps(sh + j, p);
            acc = _mm256_add_ps(acc, p);
        }
        m[h] = mn;
        l[h] = l[h] * alpha[h] + ds_hsum256(acc);
    }
}

/* the step after the scores (ops_isa.h): online softmax, rescale, weighted sum */
void ds_mla_attn_update_avx2(float *u, float *m, float *l, int64_t H, const float *kv, int64_t W, int64_t n,
                             int64_t R, float scale, float *sc) {
    int64_t ls = n + 8, h;
    float *alpha = sc + H * ls;
    ds_mla_attn_softmax_avx2(m, l, H, n, scale, sc);
    /* u[h] = alpha[h]·u[h] + Σ_j p[h][j]·kv_j[0 : R) */
    h = 0;
    for (; h + 2 <= H; h += 2) {
        const float *p0 = sc + h * ls, *p1 = p0 + ls;
        float *u0 = u + h * R, *u1 = u0 + R;
        __m256 al0 = _mm256_set1_ps(alpha[h]), al1 = _mm256_set1_ps(alpha[h + 1]);
        int64_t c = 0;
        for (; c + 32 <= R; c += 32) {
            __m256 b00 = _mm256_mul_ps(al0, _mm256_loadu_ps(u0 + c)), b01 = _mm256_mul_ps(al0, _mm256_loadu_ps(u0 + c + 8));
            __m256 b02 = _mm256_mul_ps(al0, _mm256_loadu_ps(u0 + c + 16)), b03 = _mm256_mul_ps(al0, _mm256_loadu_ps(u0 + c + 24));
            __m256 b10 = _mm256_mul_ps(al1, _mm256_loadu_ps(u1 + c)), b11 = _mm256_mul_ps(al1, _mm256_loadu_ps(u1 + c + 8));
            __m256 b12 = _mm256_mul_ps(al1, _mm256_loadu_ps(u1 + c + 16)), b13 = _mm256_mul_ps(al1, _mm256_loadu_ps(u1 + c + 24));
            for (int64_t j = 0; j < n; j++) {
                const float *r = kv + j * W + c;
                __m256 x0 = _mm256_loadu_ps(r), x1 = _mm256_loadu_ps(r + 8), x2 = _mm256_loadu_ps(r + 16), x3 = _mm256_loadu_ps(r + 24);
                __m256 w0 = _mm256_broadcast_ss(p0 + j), w1 = _mm256_broadcast_ss(p1 + j);
                b00 = _mm256_fmadd_ps(w0, x0, b00); b01 = _mm256_fmadd_ps(w0, x1, b01);
                b02 = _mm256_fmadd_ps(w0, x2, b02); b03 = _mm256_fmadd_ps(w0, x3, b03);
                b10 = _mm256_fmadd_ps(w1, x0, b10); b11 = _mm256_fmadd_ps(w1, x1, b11);
                b12 = _mm256_fmadd_ps(w1, x2, b12); b13 = _mm256_fmadd_ps(w1, x3, b13);
            }
            _mm256_storeu_ps(u0 + c, b00); _mm256_storeu_ps(u0 + c + 8, b01);
            _mm256_storeu_ps(u0 + c + 16, b02); _mm256_storeu_ps(u0 + c + 24, b03);
            _mm256_storeu_ps(u1 + c, b10); _mm256_storeu_ps(u1 + c + 8, b11);
            _mm256_storeu_ps(u1 + c + 16, b12); _mm256_storeu_ps(u1 + c + 24, b13);
        }
        for (; c < R; c += 8) {
            __m256 b0 = _mm256_mul_ps(al0, _mm256_loadu_ps(u0 + c)), b1 = _mm256_mul_ps(al1, _mm256_loadu_ps(u1 + c));
            for (int64_t j = 0; j < n; j++) {
                __m256 x = _mm256_loadu_ps(kv + j * W + c);
                b0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + j), x, b0);
                b1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p1 + j), x, b1);
            }
            _mm256_storeu_ps(u0 + c, b0);
            _mm256_storeu_ps(u1 + c, b1);
        }
    }
    for (; h < H; h++) {
        const float *p0 = sc + h * ls;
        float *u0 = u + h * R;
        __m256 al0 = _mm256_set1_ps(alpha[h]);
        for (int64_t c = 0; c < R; c += 8) {
            __m256 b0 = _mm256_mul_ps(al0, _mm256_loadu_ps(u0 + c));
            for (int64_t j = 0; j < n; j++)
                b0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + j), _mm256_loadu_ps(kv + j * W + c), b0);
            _mm256_storeu_ps(u0 + c, b0);
        }
    }
}

static inline __m256 silu_mul8(__m256 g, __m256 u) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 e = ds_exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u);
}

void ds_silu_mul_avx2(float *h, const float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(h + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), lane);
        __m256 r = silu_mul8(_mm256_maskload_ps(g + i, mask), _mm256_maskload_ps(u + i, mask));
        _mm256_maskstore_ps(h + i, mask, r);
    }
}

void ds_softmax_avx2(float *x, int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    int64_t i = 0;
    __m256 mv = ninf;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), lane);
    if (i < n) mv = _mm256_max_ps(mv, _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, tail), _mm256_castsi256_ps(tail)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float m = _mm_cvtss_f32(m4);
    if (m == -__builtin_inff()) {   /* everything masked: zeros */
        for (int64_t j = 0; j < n; j++) x[j] = 0.0f;
        return;
    }
    const __m256 mb = _mm256_set1_ps(m), lo = _mm256_set1_ps(-87.0f);
    __m256 sv = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), mb);
        __m256 e = _mm256_and_ps(ds_exp256(d), _mm256_cmp_ps(d, lo, _CMP_GE_OQ));
        _mm256_storeu_ps(x + i, e);
        sv = _mm256_add_ps(sv, e);
    }
    if (i < n) {
        __m256 d = _mm256_sub_ps(_mm256_maskload_ps(x + i, tail), mb);
        __m256 e = _mm256_and_ps(ds_exp256(d), _mm256_and_ps(_mm256_cmp_ps(d, lo, _CMP_GE_OQ), _mm256_castsi256_ps(tail)));
        _mm256_maskstore_ps(x + i, tail, e);
        sv = _mm256_add_ps(sv, e);
    }
    float sl[8];
    _mm256_storeu_ps(sl, sv);
    double s = 0.0;
    for (int k = 0; k < 8; k++) s += sl[k];
    const __m256 inv = _mm256_set1_ps((float)(1.0 / s));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    if (i < n) _mm256_maskstore_ps(x + i, tail, _mm256_mul_ps(_mm256_maskload_ps(x + i, tail), inv));
}
