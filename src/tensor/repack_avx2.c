/*
 * repack_avx2.c - AVX2 kernels for the x8 layouts of repack.h (compiled
 * with -mavx2 -mfma -mf16c; ops.c calls them only on AVX2+FMA CPUs).
 *
 * One call: 8 weight rows (one group) x T <= 4 activation rows. Every
 * product is _mm256_maddubs_epi16(unsigned weights, signed activations)
 * with the weights as chunk vectors (lane r = row r) and the activations
 * as a broadcast 4-byte load, so the sums land in row lanes directly:
 *
 *   i16 lanes 2r, 2r+1 = the two pair sums of row r for one chunk
 *   -> summed over the chunks of a sub-block while that cannot overflow
 *   -> _mm256_madd_epi16 with the sub-block scale (or 1) -> i32 lane r
 *   -> per block: fp32 lane r += (float)isum · d_r · d_act (one FMA)
 *
 * Zero points (Q4_0 8, Q5_0 16, Q6_K 32, Q4_K mins) are removed with the
 * activation block sums. The weight unpacking is shared by the T tokens;
 * each token's arithmetic is the same sequence of operations for any T
 * (batch invariance). Q8_0 weights are signed: |w| · sign(a, w).
 */
#include "repack.h"
#include "quant.h"
#include "quant_isa.h"
#include "iq_tables.h"
#include "x8_simd.h"
#include "../core/base.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

/* Keeps an accumulator in a register at this point: stops the compiler from
 * re-associating a chain of integer adds into a tree of spilled partials. */
#define KEEP(x) __asm__("" : "+x"(x))

/* 8 x u8 (rows 0..7) -> i16 [v0, v0, v1, v1, ..., v7, v7] */
AI __m256i dup8_u8(const uint8_t *p) {
    const __m128i ctl = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)p), ctl));
}
/* the same for int8 */
AI __m256i dup8_s8(const uint8_t *p) {
    const __m128i ctl = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)p), ctl));
}

#ifndef DS_RP_PREFETCH
#define DS_RP_PREFETCH 2048   /* bytes ahead of the block being read */
#endif
int ds_rp_prefetch = DS_RP_PREFETCH;   /* x8_simd.h's prefetch_block */

/* ------------------------------------------------------------------ Q4_K */

AI void gemm_q4_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[DS_RP_MAX_T];
    const int16_t *bs[DS_RP_MAX_T];
    __m256 acc[DS_RP_MAX_T];
    const __m256i m4 = _mm256_set1_epi8(15);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        bs[t] = (const int16_t *)(da[t] + nb);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 1152) {
        prefetch_block(g, 1152);
        /* 6-bit scales and mins, byte 8j + r: sub-blocks 0..3 (lo) and 4..7 (hi) */
        __m256i sc_lo, sc_hi, mn_lo, mn_hi;
        q4k_scales(g, &sc_lo, &sc_hi);
        q4k_mins(g, &mn_lo, &mn_hi);
        /* mins: Σ_j m_rj · (bsum16[2j] + bsum16[2j+1]) */
        __m256i msum[DS_RP_MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) msum[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i mj = dup8_reg(mn_lo, j), mj4 = dup8_reg(mn_hi, j);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                msum[t] = _mm256_add_epi32(msum[t], _mm256_add_epi32(_mm256_madd_epi16(mj, bcast4((const int8_t *)(bs[t] + 16 * b + 2 * j))),
                                                                     _mm256_madd_epi16(mj4, bcast4((const int8_t *)(bs[t] + 16 * b + 2 * j + 8)))));
        }
        __m256i isum[DS_RP_MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
        const uint8_t *qs = g + 128;
        if (T <= 2) {
            /* sub-block j (chunks 8j..8j+7, low nibbles) and j+4 (high nibbles) in one
             * pass over the 8 vectors; everything unrolled, scales from registers */
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m256i a_lo[DS_RP_MAX_T], a_hi[DS_RP_MAX_T];
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) { a_lo[t] = _mm256_setzero_si256(); a_hi[t] = _mm256_setzero_si256(); }
#pragma GCC unroll 8
                for (int v = 8 * j; v < 8 * j + 8; v++) {
                    __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
                    __m256i lo = _mm256_and_si256(w, m4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) {
                        a_lo[t] = _mm256_add_epi16(a_lo[t], _mm256_maddubs_epi16(lo, bcast4(q[t] + 256 * b + 4 * v)));
                        a_hi[t] = _mm256_add_epi16(a_hi[t], _mm256_maddubs_epi16(hi, bcast4(q[t] + 256 * b + 128 + 4 * v)));
                        KEEP(a_lo[t]);
                        KEEP(a_hi[t]);
                    }
                }
                __m256i s_lo = dup8_reg(sc_lo, j), s_hi = dup8_reg(sc_hi, j);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++)
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(_mm256_madd_epi16(a_lo[t], s_lo), _mm256_madd_epi16(a_hi[t], s_hi)));
            }
        } else {
            /* one nibble half at a time, sub-block by sub-block (fewer live
             * registers); the scales go through a small stack table */
            uint8_t scb[64] __attribute__((aligned(32)));
            _mm256_store_si256((__m256i *)scb, sc_lo);
            _mm256_store_si256((__m256i *)(scb + 32), sc_hi);
#pragma GCC unroll 2
            for (int half = 0; half < 2; half++) {
                for (int j = 0; j < 4; j++) {
                    __m256i a16[DS_RP_MAX_T];
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) a16[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
                    for (int k = 0; k < 8; k++) {
                        int v = 8 * j + k;
                        __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
                        w = half ? _mm256_and_si256(_mm256_srli_epi16(w, 4), m4) : _mm256_and_si256(w, m4);
#pragma GCC unroll 4
                        for (int t = 0; t < T; t++) {
                            a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(w, bcast4(q[t] + 256 * b + 128 * half + 4 * v)));
                            KEEP(a16[t]);
                        }
                    }
                    __m256i sj = dup8_u8(scb + 32 * half + 8 * j);
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(a16[t], sj));
                }
            }
        }
        __m256 dv = d8(g), dmv = d8(g + 16);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 db = _mm256_set1_ps(da[t][b]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, db), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t]), _mm256_mul_ps(dmv, db), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* ------------------------------------------------------------------ Q6_K */

AI void gemm_q6_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[DS_RP_MAX_T];
    const int16_t *bs[DS_RP_MAX_T];
    __m256 acc[DS_RP_MAX_T];
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        bs[t] = (const int16_t *)(da[t] + nb);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 1680) {
        prefetch_block(g, 1680);
        const uint8_t *sc = g + 16, *ql = g + 144, *qh = g + 1168;
        __m256i isum[DS_RP_MAX_T];
        /* zero point: -32 Σ_j sc_rj · bsum16_j, sub-blocks in pairs */
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m256i sp = pair8_s8(sc + 16 * i, sc + 16 * i + 8);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(sp, bcast4((const int8_t *)(bs[t] + 16 * b + 2 * i))));
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(isum[t], 5));
        /* sub-block j (16 values = chunks 4j..4j+3) of the low half and j + 8 of the high half */
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) {
            for (int j = 0; j < 8; j++) {
                __m256i s = dup8_s8(sc + 8 * (j + 8 * half));
#pragma GCC unroll 2
                for (int pv = 0; pv < 2; pv++) {
                    int v = 4 * j + 2 * pv;  /* chunks v, v+1 (+32 in the high half) share one high-bit vector */
                    __m256i h = _mm256_loadu_si256((const __m256i *)(qh + 16 * v));
                    __m256i w0 = _mm256_loadu_si256((const __m256i *)(ql + 32 * v));
                    __m256i w1 = _mm256_loadu_si256((const __m256i *)(ql + 32 * v + 32));
                    __m256i u0, u1;
                    if (!half) {
                        u0 = _mm256_or_si256(_mm256_and_si256(w0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
                        u1 = _mm256_or_si256(_mm256_and_si256(w1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
                    } else {
                        u0 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(w0, 4), m4), _mm256_and_si256(h, m30));
                        u1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(w1, 4), m4),
                                             _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
                    }
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) {
                        const int8_t *qa = q[t] + 256 * b + 128 * half + 4 * v;
                        /* two chunks of 6-bit values fit in i16 */
                        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(u0, bcast4(qa)), _mm256_maddubs_epi16(u1, bcast4(qa + 4)));
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, s));
                        KEEP(isum[t]);
                    }
                }
            }
        }
        __m256 dv = d8(g);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* ------------------------------------------- Q8_0, Q4_0, Q5_0 (A8 acts) */

/* kind 0 = Q8_0 (272 B/block), 4 = Q4_0 (144), 5 = Q5_0 (176), 6 = IQ4_NL (144: levels by pshufb,
 * signed x signed like Q8_0; a pair sum of two levels x activations fills i16, so every
 * chunk is widened to i32 on its own) */
AI void gemm_a8(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T, const int kind) {
    int64_t nb = K / DS_QK;
    const size_t bsz = kind == 0 ? 272 : kind == 4 || kind == 6 ? 144 : 176;
    const float *da[DS_RP_MAX_T], *sa[DS_RP_MAX_T];
    __m256 acc[DS_RP_MAX_T];
    const __m256i m4 = _mm256_set1_epi8(15), m10 = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        sa[t] = da[t] + nb;
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += bsz) {
        prefetch_block(g, bsz);
        __m256i isum[DS_RP_MAX_T];
        if (kind == 6) {
            const uint8_t *qs = g + 16;
            const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
                __m256i lo = _mm256_shuffle_epi8(tab, _mm256_and_si256(w, m4));
                __m256i hi = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(w, 4), m4));
                __m256i alo = _mm256_sign_epi8(lo, lo), ahi = _mm256_sign_epi8(hi, hi);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    __m256i pl = _mm256_maddubs_epi16(alo, _mm256_sign_epi8(bcast4(q[t] + 32 * b + 4 * v), lo));
                    __m256i ph = _mm256_maddubs_epi16(ahi, _mm256_sign_epi8(bcast4(q[t] + 32 * b + 16 + 4 * v), hi));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones)));
                    KEEP(isum[t]);
                }
            }
        } else if (kind == 0) {
            const uint8_t *qs = g + 16;
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i aw = _mm256_sign_epi8(w, w);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(bcast4(q[t] + 32 * b + 4 * c), w));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, ones));
                    KEEP(isum[t]);
                }
            }
        } else {
            const uint8_t *qs = g + (kind == 4 ? 16 : 48);
            __m256i hb = kind == 5 ? _mm256_loadu_si256((const __m256i *)(g + 16)) : _mm256_setzero_si256();
            /* nibble vector v: low nibbles = chunk v, high = chunk v + 4 (5th bit of
             * chunk c: bit c of hb, moved to bit 4). 4-bit values: all 8 chunks sum in
             * i16; 5-bit values: 4 at most, so vectors 0-1 and 2-3 separately. */
            __m256i a16[DS_RP_MAX_T];
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) { a16[t] = _mm256_setzero_si256(); isum[t] = _mm256_setzero_si256(); }
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
                __m256i lo = _mm256_and_si256(w, m4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                if (kind == 5) {
                    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hb, 4 - v), m10));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(v ? _mm256_srli_epi16(hb, v) : hb, m10));
                }
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, bcast4(q[t] + 32 * b + 4 * v)),
                                                 _mm256_maddubs_epi16(hi, bcast4(q[t] + 32 * b + 16 + 4 * v)));
                    a16[t] = _mm256_add_epi16(a16[t], p);
                    KEEP(a16[t]);
                    if (kind == 5 && (v & 1)) {
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(a16[t], ones));
                        a16[t] = _mm256_setzero_si256();
                    }
                }
            }
            if (kind == 4)
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) isum[t] = _mm256_madd_epi16(a16[t], ones);
        }
        __m256 dv = d8(g);
        float zk = kind == 4 ? 8.0f : 16.0f;
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 x = _mm256_cvtepi32_ps(isum[t]);
            if (kind == 4 || kind == 5) x = _mm256_sub_ps(x, _mm256_set1_ps(zk * sa[t][b]));   /* exact: small integers */
            acc[t] = _mm256_fmadd_ps(x, _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* ------------------------------------------------------------------ Q2_K */

AI void gemm_q2_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[DS_RP_MAX_T];
    const int16_t *bs[DS_RP_MAX_T];
    __m256 acc[DS_RP_MAX_T];
    const __m256i m3 = _mm256_set1_epi8(3), m15w = _mm256_set1_epi16(15);
    const __m128i m15 = _mm_set1_epi8(15);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        bs[t] = (const int16_t *)(da[t] + nb);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 672) {
        prefetch_block(g, 672);
        const uint8_t *sc = g + 32, *qs = g + 160;
        /* mins: Σ_s m_rs · bsum16_s, sub-blocks in pairs (i16 [m_r,2i, m_r,2i+1]) */
        __m256i msum[DS_RP_MAX_T], isum[DS_RP_MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) { msum[t] = _mm256_setzero_si256(); isum[t] = _mm256_setzero_si256(); }
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m128i p = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(sc + 16 * i)), _mm_loadl_epi64((const __m128i *)(sc + 16 * i + 8)));
            __m256i mp = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(p, 4), m15));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mp, bcast4((const int8_t *)(bs[t] + 16 * b + 2 * i))));
        }
        /* vectors 4jj..4jj+3, crumb plane f: chunks 4jj + 16f .. +3 = sub-block 4f + jj */
        for (int jj = 0; jj < 4; jj++) {
            __m256i w[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) w[i] = _mm256_loadu_si256((const __m256i *)(qs + 32 * (4 * jj + i)));
#pragma GCC unroll 4
            for (int f = 0; f < 4; f++) {
                const int s = 4 * f + jj;
                __m256i a16[DS_RP_MAX_T];
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) a16[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    __m256i u = _mm256_and_si256(f ? _mm256_srli_epi16(w[i], 2 * f) : w[i], m3);
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) {
                        a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(u, bcast4(q[t] + 256 * b + 16 * s + 4 * i)));
                        KEEP(a16[t]);
                    }
                }
                __m256i sj = _mm256_and_si256(dup8_u8(sc + 8 * s), m15w);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(a16[t], sj));
            }
        }
        __m256 dv = d8(g), dmv = d8(g + 16);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 db = _mm256_set1_ps(da[t][b]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, db), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t]), _mm256_mul_ps(dmv, db), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* ------------------------------------------------------------------ Q3_K */

AI void gemm_q3_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[DS_RP_MAX_T];
    const int16_t *bs[DS_RP_MAX_T];
    __m256 acc[DS_RP_MAX_T];
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        bs[t] = (const int16_t *)(da[t] + nb);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 880) {
        prefetch_block(g, 880);
        /* signed scales [8 s + r] for s = 0..15 into a small stack table */
        int8_t scb[128] __attribute__((aligned(32)));
        q3k_scale_table(g, scb);
        const uint8_t *hv = g + 112, *qs = g + 368;
        __m256i isum[DS_RP_MAX_T];
        /* zero point: -4 Σ_s sc_rs · bsum16_s, sub-blocks in pairs */
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m256i sp = pair8_s8((const uint8_t *)scb + 16 * i, (const uint8_t *)scb + 16 * i + 8);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(sp, bcast4((const int8_t *)(bs[t] + 16 * b + 2 * i))));
        }
#pragma GCC unroll 4
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
                __m256i a16[DS_RP_MAX_T];
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) a16[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    __m256i hb = bi >= 2 ? _mm256_srli_epi16(h[i], bi - 2) : _mm256_slli_epi16(h[i], 2 - bi);
                    __m256i u = _mm256_or_si256(_mm256_and_si256(f ? _mm256_srli_epi16(w[i], 2 * f) : w[i], m3), _mm256_and_si256(hb, m4));
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) {
                        a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(u, bcast4(q[t] + 256 * b + 16 * s + 4 * i)));
                        KEEP(a16[t]);
                    }
                }
                __m256i sj = dup8_s8((const uint8_t *)scb + 8 * s);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(a16[t], sj));
            }
        }
        __m256 dv = d8(g);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* --------------------------------------------------------------- IQ2_XXS */

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

/* lane r = the sum of the 8 lanes of v[r] (exact: integers) */
AI __m256i hsum8_rows(const __m256i *v) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20), _mm256_permute2x128_si256(a, c, 0x31));
}

/* Row by row: sub-block ib of row r = 4 grid rows of 8 magnitudes (8, 25, 43)
 * gathered with one set, the activations signed by the ±1 table (exact:
 * |a| <= 127), maddubs, then madd with the odd scale 2s+1 (x = d (2s+1)/8 · g);
 * the i32 sums of a block are reduced to row lanes once per block. */
AI void gemm_iq2_xxs(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[DS_RP_MAX_T];
    __m256 acc[DS_RP_MAX_T];
    __m256i rs[DS_RP_MAX_T][8];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 528) {
        prefetch_block(g, 528);
        for (int r = 0; r < 8; r++) {
            __m256i isum[DS_RP_MAX_T];
#pragma GCC unroll 4
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
                __m256i sc = _mm256_set1_epi16((short)(2 * (a1 >> 28) + 1));
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    __m256i av = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(q[t] + 256 * b + 32 * ib)), sg);
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(gv, av), sc));
                    KEEP(isum[t]);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) rs[t][r] = isum[t];
        }
        __m256 dv = _mm256_mul_ps(d8(g), _mm256_set1_ps(0.125f));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsum8_rows(rs[t])), _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

/* ---------------------------------------------------------------- dispatch */

#define INST(name, call)                                                                          \
    static void name##_1(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { call(1); } \
    static void name##_2(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { call(2); } \
    static void name##_3(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { call(3); } \
    static void name##_4(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { call(4); }
#define C_Q4K(T) gemm_q4_K(g, q, K, o, T)
#define C_Q6K(T) gemm_q6_K(g, q, K, o, T)
#define C_Q80(T) gemm_a8(g, q, K, o, T, 0)
#define C_Q40(T) gemm_a8(g, q, K, o, T, 4)
#define C_Q50(T) gemm_a8(g, q, K, o, T, 5)
#define C_Q2K(T) gemm_q2_K(g, q, K, o, T)
#define C_IQ4NL(T) gemm_a8(g, q, K, o, T, 6)
#define C_Q3K(T) gemm_q3_K(g, q, K, o, T)
#define C_IQ2XXS(T) gemm_iq2_xxs(g, q, K, o, T)
INST(q4k, C_Q4K)
INST(q6k, C_Q6K)
INST(q80, C_Q80)
INST(q40, C_Q40)
INST(q50, C_Q50)
INST(q2k, C_Q2K)
INST(iq4nl, C_IQ4NL)
INST(q3k, C_Q3K)
INST(iq2xxs, C_IQ2XXS)

typedef void (*gemm_fn)(const uint8_t *, const int8_t *const *, int64_t, float *);
#define FNS(name) { name##_1, name##_2, name##_3, name##_4 }
static const gemm_fn k_q4k[4] = FNS(q4k), k_q6k[4] = FNS(q6k), k_q80[4] = FNS(q80), k_q40[4] = FNS(q40),
                     k_q50[4] = FNS(q50), k_q2k[4] = FNS(q2k), k_iq4nl[4] = FNS(iq4nl), k_q3k[4] = FNS(q3k), k_iq2xxs[4] = FNS(iq2xxs);

void ds_gemm_x8_avx2(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out) {
    const gemm_fn *f;
    switch (t) {
    case DS_DTYPE_Q4_K: f = k_q4k; break;
    case DS_DTYPE_Q6_K: f = k_q6k; break;
    case DS_DTYPE_Q8_0: f = k_q80; break;
    case DS_DTYPE_Q4_0: f = k_q40; break;
    case DS_DTYPE_Q5_0: f = k_q50; break;
    case DS_DTYPE_Q2_K: f = k_q2k; break;
    case DS_DTYPE_IQ4_NL: f = k_iq4nl; break;
    case DS_DTYPE_Q3_K: f = k_q3k; break;
    case DS_DTYPE_IQ2_XXS: pthread_once(&k_sign8_once, init_sign8); f = k_iq2xxs; break;
    default: return;
    }
    f[T - 1](grp, (const int8_t *const *)act, K, out);
}
