/*
 * repack_ext_avx512.c - AVX-512 VNNI kernels for the x8 layouts (repack.h)
 * of the quant_ext.h types Q2_K, Q3_K, IQ2_XXS, IQ4_NL (compiled with
 * -mavx512{f,bw,vl,dq,vnni,bf16}; ops.c calls them only when core/cpu.h's
 * level is avx512vnni or above). Same contract as ds_gemm_x8_avx2:
 * out[t·8 + r] = row r of the group · act[t] for t < T; false for a type it
 * has no kernel for (the caller then uses the AVX2 kernel).
 *
 * Same layouts and the same integer sums as repack_avx2.c, with fewer
 * instructions (256-bit registers: lane r = row r, as there):
 *
 *   vpdpbusd   acc_i32 += Σ4 u8 weight · s8 activation  (replaces maddubs +
 *              i16 add + madd by ones)
 *   vpdpwssd   isum_i32 += lo16(p) · scale  (applies a sub-block scale to a
 *              sub-block's partial p, exact because |p| < 2^15 and the
 *              scale's high 16 bits are 0)
 *   IQ4_NL     levels + 128 as u8 (vpdpbusd wants one side unsigned), the
 *              128 · Σ activation removed per block (exact in fp32)
 *   IQ2_XXS    signs as a 32-bit mask from the sign table (scalar work)
 *              applied with one masked negate per token
 *
 * The integers are exactly those of the AVX2 kernels and the fp32 epilogue
 * is the same sequence of operations, so the results are bit-identical to
 * ds_gemm_x8_avx2 (tests/test_repack.c checks it). The 32 vector registers
 * of AVX-512 let one weight unpack serve up to 8 tokens (any T: tokens go in
 * runs of 8); each token's arithmetic is the same whatever T (batch
 * invariance).
 */
#include "repack.h"
#include "quant.h"
#include "quant_isa.h"
#include "iq_tables.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
#define XT DS_RP_EXT_T   /* tokens per weight unpack (8: the INST list below) */

extern int ds_rp_prefetch;   /* repack_avx2.c */
AI void prefetch_block(const uint8_t *g, size_t bytes) {
    for (size_t l = 0; l < bytes; l += 64) _mm_prefetch((const char *)(g + ds_rp_prefetch + l), _MM_HINT_T0);
}

AI __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
AI __m256 d8(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
/* 8 x u8 / s8 (rows 0..7) -> i32 lanes with the high 16 bits 0 (vpdpwssd multiplier) */
AI __m256i sc32_u8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
AI __m256i sc32_s8(const uint8_t *p) {
    return _mm256_and_si256(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)), _mm256_set1_epi32(0xFFFF));
}
/* two groups of 8 x i8 (a: rows of sub-block 2i, b: of 2i+1) -> i16 [a0, b0, a1, b1, ...] */
AI __m256i pair8_u8(const uint8_t *a, const uint8_t *b) {
    return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)a), _mm_loadl_epi64((const __m128i *)b)));
}
AI __m256i pair8_s8(const uint8_t *a, const uint8_t *b) {
    return _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)a), _mm_loadl_epi64((const __m128i *)b)));
}

/* ------------------------------------------------------------------ Q2_K */

AI void gemm_q2_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[XT];
    const int16_t *bs[XT];
    __m256 acc[XT];
    const __m256i m3 = _mm256_set1_epi8(3), m15 = _mm256_set1_epi16(15);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        bs[t] = (const int16_t *)(da[t] + nb);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 672) {
        prefetch_block(g, 672);
        const uint8_t *sc = g + 32, *qs = g + 160;
        /* mins: Σ_s m_rs · bsum16_s, sub-blocks in pairs (i16 [m_r,2i, m_r,2i+1]) */
        __m256i msum[XT], isum[XT];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) { msum[t] = _mm256_setzero_si256(); isum[t] = _mm256_setzero_si256(); }
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m256i mp = _mm256_and_si256(_mm256_srli_epi16(pair8_u8(sc + 16 * i, sc + 16 * i + 8), 4), m15);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) msum[t] = _mm256_dpwssd_epi32(msum[t], mp, bcast4((const int8_t *)(bs[t] + 16 * b + 2 * i)));
        }
        /* vectors 4jj..4jj+3, crumb plane f: chunks 4jj + 16f .. +3 = sub-block 4f + jj */
        for (int jj = 0; jj < 4; jj++) {
            __m256i w[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) w[i] = _mm256_loadu_si256((const __m256i *)(qs + 32 * (4 * jj + i)));
#pragma GCC unroll 4
            for (int f = 0; f < 4; f++) {
                const int s = 4 * f + jj;
                __m256i u[4];
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) u[i] = _mm256_and_si256(f ? _mm256_srli_epi16(w[i], 2 * f) : w[i], m3);
                __m256i sj = _mm256_and_si256(sc32_u8(sc + 8 * s), _mm256_set1_epi32(15));
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    const int8_t *a = q[t] + 256 * b + 16 * s;
                    /* |p| <= 16 · 3 · 127 < 2^15 */
                    __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u[0], bcast4(a));
                    p = _mm256_dpbusd_epi32(p, u[1], bcast4(a + 4));
                    p = _mm256_dpbusd_epi32(p, u[2], bcast4(a + 8));
                    p = _mm256_dpbusd_epi32(p, u[3], bcast4(a + 12));
                    isum[t] = _mm256_dpwssd_epi32(isum[t], p, sj);
                }
            }
        }
        __m256 dv = d8(g), dmv = d8(g + 16);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            __m256 db = _mm256_set1_ps(da[t][b]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, db), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t]), _mm256_mul_ps(dmv, db), acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* ------------------------------------------------------------------ Q3_K */

AI void gemm_q3_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[XT];
    const int16_t *bs[XT];
    __m256 acc[XT];
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4), m15 = _mm256_set1_epi8(15), k32 = _mm256_set1_epi8(32);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        bs[t] = (const int16_t *)(da[t] + nb);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 880) {
        prefetch_block(g, 880);
        /* signed scales [8 s + r] for s = 0..15 into a small stack table */
        int8_t scb[128] __attribute__((aligned(32)));
        {
            __m256i N0 = _mm256_loadu_si256((const __m256i *)(g + 16)), N1 = _mm256_loadu_si256((const __m256i *)(g + 48));
            __m256i H = _mm256_loadu_si256((const __m256i *)(g + 80));
            __m256i lo[4] = { _mm256_and_si256(N0, m15), _mm256_and_si256(N1, m15), _mm256_and_si256(_mm256_srli_epi16(N0, 4), m15),
                              _mm256_and_si256(_mm256_srli_epi16(N1, 4), m15) };
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                __m256i hi = _mm256_and_si256(k ? _mm256_srli_epi16(H, 2 * k) : H, m3);
                _mm256_store_si256((__m256i *)(scb + 32 * k), _mm256_sub_epi8(_mm256_or_si256(lo[k], _mm256_slli_epi16(hi, 4)), k32));
            }
        }
        const uint8_t *hv = g + 112, *qs = g + 368;
        __m256i isum[XT];
        /* zero point: -4 Σ_s sc_rs · bsum16_s, sub-blocks in pairs */
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m256i sp = pair8_s8((const uint8_t *)scb + 16 * i, (const uint8_t *)scb + 16 * i + 8);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) isum[t] = _mm256_dpwssd_epi32(isum[t], sp, bcast4((const int8_t *)(bs[t] + 16 * b + 2 * i)));
        }
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(isum[t], 2));
        /* crumb vectors 4jj..4jj+3, plane f: chunks c = 4jj + i + 16f = sub-block 4f + jj;
         * high bit of chunk c: bit c/8 of high-bit vector c%8 */
        for (int jj = 0; jj < 4; jj++) {
            __m256i w[4], h[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                w[i] = _mm256_loadu_si256((const __m256i *)(qs + 32 * (4 * jj + i)));
                h[i] = _mm256_loadu_si256((const __m256i *)(hv + 32 * (4 * (jj % 2) + i)));
            }
#pragma GCC unroll 4
            for (int f = 0; f < 4; f++) {
                const int s = 4 * f + jj, bi = jj / 2 + 2 * f;
                __m256i u[4];
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    __m256i hb = bi >= 2 ? _mm256_srli_epi16(h[i], bi - 2) : _mm256_slli_epi16(h[i], 2 - bi);
                    u[i] = _mm256_ternarylogic_epi32(_mm256_and_si256(f ? _mm256_srli_epi16(w[i], 2 * f) : w[i], m3), hb, m4, 0xF8);
                }
                __m256i sj = sc32_s8((const uint8_t *)scb + 8 * s);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    const int8_t *a = q[t] + 256 * b + 16 * s;
                    /* |p| <= 16 · 7 · 127 < 2^15 */
                    __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u[0], bcast4(a));
                    p = _mm256_dpbusd_epi32(p, u[1], bcast4(a + 4));
                    p = _mm256_dpbusd_epi32(p, u[2], bcast4(a + 8));
                    p = _mm256_dpbusd_epi32(p, u[3], bcast4(a + 12));
                    isum[t] = _mm256_dpwssd_epi32(isum[t], p, sj);
                }
            }
        }
        __m256 dv = d8(g);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* --------------------------------------------------------------- IQ2_XXS */

/* lane r = the sum of the 8 lanes of v[r] (exact: integers) */
AI __m256i hsum8_rows(const __m256i *v) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20), _mm256_permute2x128_si256(a, c, 0x31));
}

/* ±1 per byte for the 7-bit sign indices (ds_iq_ksigns: 8 sign bits, even parity) */
static uint64_t k_sign8[128];
static pthread_once_t k_sign8_once = PTHREAD_ONCE_INIT;
static void init_sign8(void) {
    for (int i = 0; i < 128; i++) {
        uint64_t v = 0;
        for (int j = 0; j < 8; j++) v |= (uint64_t)((ds_iq_ksigns[i] >> j) & 1 ? 0xFF : 0x01) << (8 * j);
        k_sign8[i] = v;
    }
}

/* Row by row as the AVX2 kernel: sub-block ib of row r = 4 grid rows of 8
 * magnitudes, the activations negated where the sign bits say (one masked
 * subtract), vpdpbusd (|lane| <= 4 · 43 · 127 < 2^15), vpdpwssd with the odd
 * scale 2s+1; the block's i32 sums reduced to row lanes once per block. */
AI void gemm_iq2_xxs(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[XT];
    __m256 acc[XT];
    __m256i rs[XT][8];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 528) {
        prefetch_block(g, 528);
        for (int r = 0; r < 8; r++) {
            __m256i isum[XT];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int ib = 0; ib < 8; ib++) {
                const uint8_t *p = g + 16 + 64 * ib + 8 * r;
                uint32_t a1;
                memcpy(&a1, p + 4, 4);
                __m256i gv = _mm256_set_epi64x((long long)ds_iq2xxs_grid[p[3]], (long long)ds_iq2xxs_grid[p[2]],
                                               (long long)ds_iq2xxs_grid[p[1]], (long long)ds_iq2xxs_grid[p[0]]);
                __m256i sg = _mm256_set_epi64x((long long)k_sign8[(a1 >> 21) & 127], (long long)k_sign8[(a1 >> 14) & 127],
                                               (long long)k_sign8[(a1 >> 7) & 127], (long long)k_sign8[a1 & 127]);
                __m256i sc = _mm256_set1_epi32((int)(2 * (a1 >> 28) + 1));
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    __m256i av = _mm256_loadu_si256((const __m256i *)(q[t] + 256 * b + 32 * ib));
                    av = _mm256_sign_epi8(av, sg);
                    isum[t] = _mm256_dpwssd_epi32(isum[t], _mm256_dpbusd_epi32(_mm256_setzero_si256(), gv, av), sc);
                }
            }
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) rs[t][r] = isum[t];
        }
        __m256 dv = _mm256_mul_ps(d8(g), _mm256_set1_ps(0.125f));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsum8_rows(rs[t])), _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* ---------------------------------------------------------------- IQ4_NL */

/* 144-byte blocks of 32: d[8] | 4 nibble vectors (low = chunk v, high = chunk
 * v + 4) indexing the 16 levels; the levels go in as level + 128 (u8), so
 * Σ level · a = Σ (level + 128) · a - 128 Σ a, Σ a from the A8 block sums
 * (|Σ| <= 32 · 241 · 127 < 2^24: both terms and the difference exact in fp32,
 * the same float as the AVX2 kernel's converted integer). */
AI void gemm_iq4_nl(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK;
    const float *da[XT], *sa[XT];
    __m256 acc[XT];
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i tab = _mm256_xor_si256(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values)),
                                         _mm256_set1_epi8((char)0x80));
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        sa[t] = da[t] + nb;
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 144) {
        prefetch_block(g, 144);
        const uint8_t *qs = g + 16;
        __m256i lo[4], hi[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
            lo[v] = _mm256_shuffle_epi8(tab, _mm256_and_si256(w, m4));
            hi[v] = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(w, 4), m4));
        }
        __m256 dv = d8(g);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int8_t *a = q[t] + 32 * b;
            __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo[0], bcast4(a));
            s = _mm256_dpbusd_epi32(s, hi[0], bcast4(a + 16));
#pragma GCC unroll 3
            for (int v = 1; v < 4; v++) {
                s = _mm256_dpbusd_epi32(s, lo[v], bcast4(a + 4 * v));
                s = _mm256_dpbusd_epi32(s, hi[v], bcast4(a + 16 + 4 * v));
            }
            __m256 x = _mm256_sub_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(128.0f * sa[t][b]));
            acc[t] = _mm256_fmadd_ps(x, _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* ---------------------------------------------------------------- dispatch */

typedef void (*gemm_fn)(const uint8_t *, const int8_t *const *, int64_t, float *);
#define INST(name, fn)                                                                                  \
    static void name##_1(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 1); } \
    static void name##_2(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 2); } \
    static void name##_3(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 3); } \
    static void name##_4(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 4); } \
    static void name##_5(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 5); } \
    static void name##_6(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 6); } \
    static void name##_7(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 7); } \
    static void name##_8(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 8); } \
    static const gemm_fn k_##name[XT] = { name##_1, name##_2, name##_3, name##_4, name##_5, name##_6, name##_7, name##_8 };
INST(q2k, gemm_q2_K)
INST(q3k, gemm_q3_K)
INST(iq2xxs, gemm_iq2_xxs)
INST(iq4nl, gemm_iq4_nl)

bool ds_gemm_x8_ext_avx512_has(ds_dtype t) {
    return t == DS_DTYPE_Q2_K || t == DS_DTYPE_Q3_K || t == DS_DTYPE_IQ2_XXS || t == DS_DTYPE_IQ4_NL;
}

bool ds_gemm_x8_ext_avx512(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out) {
    const gemm_fn *f;
    switch (t) {
    case DS_DTYPE_Q2_K: f = k_q2k; break;
    case DS_DTYPE_Q3_K: f = k_q3k; break;
    case DS_DTYPE_IQ2_XXS: pthread_once(&k_sign8_once, init_sign8); f = k_iq2xxs; break;
    case DS_DTYPE_IQ4_NL: f = k_iq4nl; break;
    default: return false;
    }
    const int8_t *const *q = (const int8_t *const *)act;
    for (int t0 = 0; t0 < T; t0 += XT) {
        int n = T - t0 < XT ? T - t0 : XT;
        f[n - 1](grp, q + t0, K, out + 8 * t0);
    }
    return true;
}
