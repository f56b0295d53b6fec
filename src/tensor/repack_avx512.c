/*
 * repack_avx512.c - AVX-512 VNNI kernels for the x8 layouts of repack.h
 * (compiled with -mavx512{f,bw,vl,dq,vnni,bf16}; ops.c calls them only when
 * core/cpu.h's level is avx512vnni or above) for Q8_0, Q4_0, Q5_0, Q4_K,
 * Q6_K. Same contract as repack_avx2.c: out[t·8 + r] = row r · act[t], a
 * token's result independent of the others, for any T: runs of 8 tokens
 * (DS_RP_CORE_T) share one weight unpack (the 8-token kernels, second
 * part), a run of 1-4 goes through the 4-token kernels (first part: the
 * decode path, unchanged), 5-8 through the 8-token ones (Q4_K: 2-8, see
 * k_q4k).
 *
 * Same data flow as the AVX2 kernels (weights as chunk vectors, lane r =
 * row r; the activation side a broadcast 4-byte load), but every product
 * is one vpdpbusd (u8 weights x s8 activations, 4 products summed straight
 * into the i32 lane of the row: no i16 intermediate, no saturation, and the
 * broadcast is the instruction's embedded {1to8} memory operand):
 *
 *   chunk c of a sub-block -> i32 lane r += Σ_i w[r][4c+i] · a[4c+i]
 *   sub-block sum (i32)    -> × its 6-/8-bit scale (vpmulld) into the block sum
 *   per block: fp32 lane r += (float)isum · d_r · d_act (the AVX2 epilogue)
 *
 * 256-bit registers (AVX512-VL): on Zen 4 a 512-bit op is two 256-bit
 * halves, and the x8 chunk vector is 32 bytes, so ymm keeps the layout's
 * one-load-per-chunk shape without cross-lane shuffles. The integer sums
 * are exact and equal to the AVX2 kernels' (whose i16 partial sums never
 * saturate for these types), and the fp32 epilogue is the same sequence,
 * so the results are bit-identical to repack_avx2.c (tests/test_repack.c
 * checks it), not only within the reference bound. Q8_0 weights are signed:
 * the kernel uses w + 128 (unsigned) and subtracts 128·Σa per block.
 *
 * Kernel time, ns per row of K = 2048 and token (tools/bench_x8_kernels.c,
 * thread CPU time, load ~10): Q4_K 16.3 -> 15.0 with 8 tokens per unpack
 * instead of 2 x 4, Q6_K 18.9 -> 15.5, Q8_0 16.0 -> 14.0, Q4_0 17.6 -> 16.4,
 * Q5_0 20.5 -> 17.6. Then (q4ktile, load ~7, T = 8 / 16 / 32 / 64 tokens per
 * call) Q4_K 14.6 / 14.6 / 14.5 / 14.5 -> 13.5 / 13.4 / 13.4 / 13.4: its block
 * sums kept in registers (KEEP) and its mins in 4 vpdpwssd per token and block
 * instead of 8. The bound of this core (Zen 4, measured: 2 per cycle of
 * vpdpbusd, vpmulld, vpdpwssd, vmulps and vfmadd together, ymm; zmm ones count
 * twice; 2 broadcast loads per cycle) for Q4_K, per block of 8 rows x 8 tokens:
 * 512 vpdpbusd + 64 vpmulld + 32 vpdpwssd + 32 fp32 mul/fma = 640 slots = 320
 * cycles, 11.8 ns per row and token at the measured 3.4 GHz: 13.4 is 88 % of
 * it, with ~600 loads a block near the load ports' bound too. Q8_0 / Q5_0:
 * 8 vpdpbusd + 3 multiplies per token and 32-block, 12.9 ns, measured 13.9 /
 * 14.2 (a variant without the scalar multiply, the zero point in integers,
 * measured the same: the broadcast loads bind as well). Relieving both binds
 * it: the zero points' products made 8 blocks at a time (one vmulps per token
 * instead of one vmulss per block) and 2 of the 8 tokens fed from registers
 * (vpshufd of a 16-byte broadcast, no load per product): Q8_0 13.9 -> 12.9,
 * Q5_0 14.2 -> 13.3 ns (T = 8 and 64, load ~2-4; either change alone: no
 * change; 3 register-fed tokens: Q5_0 13.9; the same for Q4_K's kernel,
 * 1 token: -1 % in the kernel bench, +0.4..1.2 % CPU per token end to end).
 *
 * Returns false for a type it has no kernel for (the caller then uses the
 * AVX2 kernel). ds_gemm_x8_avx512_ld is the same with token t's results at
 * out + t·ldo instead of out + 8t: ops.c passes a row of y, so the kernels
 * store into y themselves (the buffer and its copy cost ~4 % of a Q4_K_M
 * pp512: the copy's loads waited on the kernel's stores).
 */
#include "repack.h"
#include "quant.h"
#include "quant_isa.h"
#include "x8_simd.h"

#include <immintrin.h>
#include <string.h>

/* Keeps an accumulator in a register at this point (see repack_avx2.c). */
#define KEEP(x) __asm__("" : "+v"(x))

/* ------------------------------------------------------------------ Q4_K */

AI void gemm_q4_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int64_t ldo, const int T) {
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
        /* mins: Σ_j m_rj · (bsum16[2j] + bsum16[2j+1]) (i16 pairs, vpdpwssd) */
        __m256i msum[DS_RP_MAX_T], isum[DS_RP_MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) { msum[t] = _mm256_setzero_si256(); isum[t] = _mm256_setzero_si256(); }
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i mj = dup8_reg(mn_lo, j), mj4 = dup8_reg(mn_hi, j);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                msum[t] = _mm256_dpwssd_epi32(msum[t], mj, bcast4(bs[t] + 16 * b + 2 * j));
                msum[t] = _mm256_dpwssd_epi32(msum[t], mj4, bcast4(bs[t] + 16 * b + 2 * j + 8));
            }
        }
        /* sub-block j (chunks 8j..8j+7, low nibbles) and j+4 (high nibbles) in one
         * pass over the 8 vectors; i32 sums times the scales */
        const uint8_t *qs = g + 128;
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
                    a_lo[t] = dpbusd_b(a_lo[t], lo, q[t] + 256 * b + 4 * v);
                    a_hi[t] = dpbusd_b(a_hi[t], hi, q[t] + 256 * b + 128 + 4 * v);
                }
            }
            __m256i s_lo = u8x8_reg(sc_lo, j), s_hi = u8x8_reg(sc_hi, j);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(_mm256_mullo_epi32(a_lo[t], s_lo), _mm256_mullo_epi32(a_hi[t], s_hi)));
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
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + ldo * t, acc[t]);
}

/* ------------------------------------------------------------------ Q6_K */

AI void gemm_q6_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int64_t ldo, const int T) {
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
        /* zero point: -32 Σ_j sc_rj · bsum16_j, sub-blocks in pairs (i16 [sc_2i, sc_2i+1]) */
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m256i sp = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(sc + 16 * i)),
                                                                _mm_loadl_epi64((const __m128i *)(sc + 16 * i + 8))));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) isum[t] = _mm256_dpwssd_epi32(isum[t], sp, bcast4(bs[t] + 16 * b + 2 * i));
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(isum[t], 5));
        /* sub-block j (16 values = chunks 4j..4j+3) of the low half and j + 8 of the high half */
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) {
            for (int j = 0; j < 8; j++) {
                __m256i s = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(sc + 8 * (j + 8 * half))));
                __m256i p[DS_RP_MAX_T];
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) p[t] = _mm256_setzero_si256();
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
                        p[t] = dpbusd_b(p[t], u0, qa);
                        p[t] = dpbusd_b(p[t], u1, qa + 4);
                    }
                }
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(p[t], s));
                    KEEP(isum[t]);
                }
            }
        }
        __m256 dv = d8(g);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + ldo * t, acc[t]);
}

/* ------------------------------------------- Q8_0, Q4_0, Q5_0 (A8 acts) */

/* kind 0 = Q8_0 (272 B/block), 4 = Q4_0 (144), 5 = Q5_0 (176) */
AI void gemm_a8(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int64_t ldo, const int T, const int kind) {
    int64_t nb = K / DS_QK;
    const size_t bsz = kind == 0 ? 272 : kind == 4 ? 144 : 176;
    const float *da[DS_RP_MAX_T], *sa[DS_RP_MAX_T];
    __m256 acc[DS_RP_MAX_T];
    const __m256i m4 = _mm256_set1_epi8(15), m10 = _mm256_set1_epi8(0x10), m80 = _mm256_set1_epi8((char)0x80);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        sa[t] = da[t] + nb;
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += bsz) {
        prefetch_block(g, bsz);
        __m256i isum[DS_RP_MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
        if (kind == 0) {
            /* Σ (w + 128) · a: w ^ 0x80 is w + 128 as an unsigned byte */
            const uint8_t *qs = g + 16;
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)), m80);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) isum[t] = dpbusd_b(isum[t], w, q[t] + 32 * b + 4 * c);
            }
        } else {
            const uint8_t *qs = g + (kind == 4 ? 16 : 48);
            __m256i hb = kind == 5 ? _mm256_loadu_si256((const __m256i *)(g + 16)) : _mm256_setzero_si256();
            /* nibble vector v: low nibbles = chunk v, high = chunk v + 4 (5th bit of
             * chunk c: bit c of hb, moved to bit 4) */
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
                    isum[t] = dpbusd_b(isum[t], lo, q[t] + 32 * b + 4 * v);
                    isum[t] = dpbusd_b(isum[t], hi, q[t] + 32 * b + 16 + 4 * v);
                }
            }
        }
        __m256 dv = d8(g);
        /* zero points: 8 (Q4_0), 16 (Q5_0), and the +128 of Q8_0; exact (small integers in fp32) */
        float zk = kind == 0 ? 128.0f : kind == 4 ? 8.0f : 16.0f;
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 x = _mm256_sub_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(zk * sa[t][b]));
            acc[t] = _mm256_fmadd_ps(x, _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + ldo * t, acc[t]);
}

/* ------------------------------------------ 8 tokens per weight unpack */

/* The same integer sums and fp32 epilogue as the kernels above (so the same
 * bits), for up to DS_RP_CORE_T = 8 tokens per unpack. With twice the
 * tokens the per-token state no longer fits the 32 registers in the shape
 * above, so the work is reordered, never the arithmetic a token sees:
 *
 *   - a sub-block's partial sums go into one accumulator per token (8), one
 *     pass over the nibble vectors per half (low, then high nibbles: the
 *     vectors are loaded twice, the shift/mask done once each);
 *   - the zero-point / min terms are computed apart from the sub-block
 *     sums (integer sums: the order of the additions does not change them),
 *     so their broadcast vectors are not live during the products: Q6_K's
 *     after them, Q4_K's mins before them into a stack buffer the epilogue
 *     reads (their dependency chain then overlaps the products instead of
 *     ending the block: 15.2 -> 14.7 ns per row and token, K = 2048,
 *     tools/bench_x8_kernels.c, 3 runs each, load ~9), as 4 vpdpwssd of
 *     i16 pairs per token instead of 8 (the activation pairs prepared per
 *     16 blocks ahead: 13.5 -> 13.3; since q4kpp they are part of the K8
 *     activation row, quant.h's pair[], made once per token instead of
 *     once per weight group: that preparation was ~6 % of a Q4_K_M pp512);
 *   - the fp32 epilogue per token is the same sequence as above. */

#define CT DS_RP_CORE_T

/* Tokens t < SH_A8 of the Q8_0/Q4_0/Q5_0 8-token kernel take their activation
 * words from registers (a 16-byte broadcast load per 4 words, then vpshufd)
 * instead of vpdpbusd's embedded broadcast load. A block of 8 rows x 8 tokens
 * otherwise needs ~88 loads against this core's 2 vector loads per cycle and
 * ~88 multiplies against its 2 per cycle; vpshufd runs beside both (measured:
 * 16 vpdpbusd with embedded broadcasts + 1 load + 3 ALU ops 8.7 cycles, with
 * 4 of them fed by vpshufd 8.0). Same products, same integer sums. */
#ifndef SH_A8
#define SH_A8 2
#endif
/* bytes 0..15 of p in both 128-bit lanes */
AI __m256i bcast16(const void *p) { return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p)); }
/* word i (0..3) of each 128-bit lane of x in all its words (x from bcast16: word i of p) */
AI __m256i word_of(__m256i x, const int i) {
    switch (i) {
    case 0: return _mm256_shuffle_epi32(x, 0x00);
    case 1: return _mm256_shuffle_epi32(x, 0x55);
    case 2: return _mm256_shuffle_epi32(x, 0xaa);
    default: return _mm256_shuffle_epi32(x, 0xff);
    }
}

AI void gemm8_q4_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int64_t ldo, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[CT];
    __m256 acc[CT];
    const __m256i m4 = _mm256_set1_epi8(15);
    const int32_t *pa[CT];   /* the K8 rows' pair[] (quant.h): [B_j, B_j+4] per block */
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        pa[t] = (const int32_t *)((const int16_t *)(da[t] + nb) + K / 16);
        acc[t] = _mm256_setzero_ps();
    }
    _Alignas(32) int32_t mbuf[CT][8];
    {
        for (int64_t b = 0; b < nb; b++, g += 1152) {
            prefetch_block(g, 1152);
            const uint8_t *qs = g + 128;
            {
                /* mins first: Σ_j m_rj · B_j per token as 4 vpdpwssd of the i16 pairs
                 * [m_rj, m_r,j+4] · [B_j, B_j+4] (8 with gemm_q4_K's [m_rj, m_rj] ·
                 * [bsum16[2j], bsum16[2j+1]]: the same exact integer), kept in mbuf
                 * until the epilogue (their latency overlaps the products instead of
                 * ending the block; the pair vectors are dead before the products) */
                __m256i mn_lo, mn_hi;
                q4k_mins(g, &mn_lo, &mn_hi);
                /* bytes 8j + r of mn_lo / mn_hi: the mins of sub-blocks j / j + 4 of row r */
                __m128i l0 = _mm256_castsi256_si128(mn_lo), l1 = _mm256_extracti128_si256(mn_lo, 1);
                __m128i h0 = _mm256_castsi256_si128(mn_hi), h1 = _mm256_extracti128_si256(mn_hi, 1);
                __m256i mp[4] = { _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(l0, h0)), _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(l0, h0)),
                                  _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(l1, h1)), _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(l1, h1)) };
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    __m256i msum = _mm256_setzero_si256();
#pragma GCC unroll 4
                    for (int j = 0; j < 4; j++) msum = dpwssd_b(msum, mp[j], pa[t] + 4 * b + j);
                    _mm256_store_si256((__m256i *)mbuf[t], msum);
                }
            }
            __m256i isum[CT];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
            /* sub-block j (low nibbles of vectors 8j..8j+7) and j + 4 (high nibbles) */
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
#pragma GCC unroll 2
                for (int half = 0; half < 2; half++) {
                    __m256i s = u8x8_reg(q4k_scale_half(g, half), j);
                    __m256i a[CT];
#pragma GCC unroll 8
                    for (int t = 0; t < T; t++) a[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
                    for (int v = 8 * j; v < 8 * j + 8; v++) {
                        __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
                        __m256i u = half ? _mm256_and_si256(_mm256_srli_epi16(w, 4), m4) : _mm256_and_si256(w, m4);
#pragma GCC unroll 8
                        for (int t = 0; t < T; t++) a[t] = dpbusd_b(a[t], u, q[t] + 256 * b + 128 * half + 4 * v);
                    }
#pragma GCC unroll 8
                    for (int t = 0; t < T; t++) {
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(a[t], s));
                        /* the 8 block sums stay in registers here: without this GCC 12
                         * hoists the next sub-block's products above these adds and
                         * spills isum and the product sums to the stack (~50 extra
                         * loads and stores a block; 14.5 -> 13.5 ns per row and token,
                         * T = 8..64, see the header) */
                        KEEP(isum[t]);
                    }
                }
            }
            /* the epilogue of gemm_q4_K */
            __m256 dv = d8(g), dmv = d8(g + 16);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                __m256i msum = _mm256_load_si256((const __m256i *)mbuf[t]);
                __m256 db = _mm256_set1_ps(da[t][b]);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dv, db), acc[t]);
                acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dmv, db), acc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + ldo * t, acc[t]);
}

AI void gemm8_q6_K(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int64_t ldo, const int T) {
    int64_t nb = K / DS_QK_K;
    const float *da[CT];
    const int16_t *bs[CT];
    __m256 acc[CT];
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        bs[t] = (const int16_t *)(da[t] + nb);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 1680) {
        prefetch_block(g, 1680);
        const uint8_t *sc = g + 16, *ql = g + 144, *qh = g + 1168;
        __m256i isum[CT];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
        /* sub-block j (16 values = chunks 4j..4j+3) of the low half and j + 8 of the high half */
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) {
            for (int j = 0; j < 8; j++) {
                __m256i s = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(sc + 8 * (j + 8 * half))));
                __m256i p[CT];
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) p[t] = _mm256_setzero_si256();
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
#pragma GCC unroll 8
                    for (int t = 0; t < T; t++) {
                        const int8_t *qa = q[t] + 256 * b + 128 * half + 4 * v;
                        p[t] = dpbusd_b(p[t], u0, qa);
                        p[t] = dpbusd_b(p[t], u1, qa + 4);
                    }
                }
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(p[t], s));
            }
        }
        /* zero point: -32 Σ_j sc_rj · bsum16_j, sub-blocks in pairs (i16 [sc_2i, sc_2i+1]) */
        __m256i sp[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            sp[i] = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(sc + 16 * i)),
                                                           _mm_loadl_epi64((const __m128i *)(sc + 16 * i + 8))));
        __m256 dv = d8(g);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            __m256i z = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) z = _mm256_dpwssd_epi32(z, sp[i], bcast4(bs[t] + 16 * b + 2 * i));
            __m256i is = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(z, 5));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + ldo * t, acc[t]);
}

/* kind 0 = Q8_0, 4 = Q4_0, 5 = Q5_0 as gemm_a8 */
AI void gemm8_a8(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int64_t ldo, const int T, const int kind) {
    int64_t nb = K / DS_QK;
    const size_t bsz = kind == 0 ? 272 : kind == 4 ? 144 : 176;
    const float *da[CT], *sa[CT];
    __m256 acc[CT];
    const __m256i m4 = _mm256_set1_epi8(15), m10 = _mm256_set1_epi8(0x10), m80 = _mm256_set1_epi8((char)0x80);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        sa[t] = da[t] + nb;
        acc[t] = _mm256_setzero_ps();
    }
    const float zk = kind == 0 ? 128.0f : kind == 4 ? 8.0f : 16.0f;
    _Alignas(32) float zbuf[CT][8];   /* zk · sa[t][b] of blocks b0..b0+7 */
    for (int64_t b = 0; b < nb; b++, g += bsz) {
        prefetch_block(g, bsz);
        if ((b & 7) == 0) {
            /* the zero points' products for 8 blocks in one vmulps per token (the
             * same fp32 products as one vmulss per block, off the multiply ports'
             * per-block budget) */
            __mmask8 mk = nb - b >= 8 ? 0xff : (__mmask8)((1u << (nb - b)) - 1);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++)
                _mm256_store_ps(zbuf[t], _mm256_mul_ps(_mm256_set1_ps(zk), _mm256_maskz_loadu_ps(mk, sa[t] + b)));
        }
        __m256i isum[CT];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
        __m256i x[SH_A8][2];   /* tokens t < SH_A8: the block's 32 activation bytes, 16 per vector */
#pragma GCC unroll 2
        for (int t = 0; t < SH_A8 && t < T; t++) {
            x[t][0] = bcast16(q[t] + 32 * b);
            x[t][1] = bcast16(q[t] + 32 * b + 16);
        }
        if (kind == 0) {
            const uint8_t *qs = g + 16;
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)), m80);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++)
                    isum[t] = t < SH_A8 ? _mm256_dpbusd_epi32(isum[t], w, word_of(x[t][c >> 2], c & 3))
                                        : dpbusd_b(isum[t], w, q[t] + 32 * b + 4 * c);
            }
        } else {
            const uint8_t *qs = g + (kind == 4 ? 16 : 48);
            __m256i hb = kind == 5 ? _mm256_loadu_si256((const __m256i *)(g + 16)) : _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
                __m256i lo = _mm256_and_si256(w, m4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                if (kind == 5) {
                    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hb, 4 - v), m10));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(v ? _mm256_srli_epi16(hb, v) : hb, m10));
                }
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    if (t < SH_A8) {
                        isum[t] = _mm256_dpbusd_epi32(isum[t], lo, word_of(x[t][0], v));
                        isum[t] = _mm256_dpbusd_epi32(isum[t], hi, word_of(x[t][1], v));
                    } else {
                        isum[t] = dpbusd_b(isum[t], lo, q[t] + 32 * b + 4 * v);
                        isum[t] = dpbusd_b(isum[t], hi, q[t] + 32 * b + 16 + 4 * v);
                    }
                }
            }
        }
        __m256 dv = d8(g);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            __m256 xs = _mm256_sub_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(zbuf[t][b & 7]));
            acc[t] = _mm256_fmadd_ps(xs, _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + ldo * t, acc[t]);
}

/* ---------------------------------------------------------------- dispatch */

#define INST(name, call)                                                                          \
    static void name##_1(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { call(1); } \
    static void name##_2(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { call(2); } \
    static void name##_3(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { call(3); } \
    static void name##_4(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { call(4); }
#define C_Q4K(T) gemm_q4_K(g, q, K, o, ldo, T)
#define C_Q6K(T) gemm_q6_K(g, q, K, o, ldo, T)
#define C_Q80(T) gemm_a8(g, q, K, o, ldo, T, 0)
#define C_Q40(T) gemm_a8(g, q, K, o, ldo, T, 4)
#define C_Q50(T) gemm_a8(g, q, K, o, ldo, T, 5)
static void q4k_1(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { C_Q4K(1); }   /* 2-4: below */
INST(q6k, C_Q6K)
INST(q80, C_Q80)
INST(q40, C_Q40)
INST(q50, C_Q50)

typedef void (*gemm_fn)(const uint8_t *, const int8_t *const *, int64_t, float *, int64_t);
#define INST8(name, call)                                                                          \
    static void name##_5(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { call(5); } \
    static void name##_6(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { call(6); } \
    static void name##_7(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { call(7); } \
    static void name##_8(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { call(8); }
#define C8_Q4K(T) gemm8_q4_K(g, q, K, o, ldo, T)
#define C8_Q6K(T) gemm8_q6_K(g, q, K, o, ldo, T)
#define C8_Q80(T) gemm8_a8(g, q, K, o, ldo, T, 0)
#define C8_Q40(T) gemm8_a8(g, q, K, o, ldo, T, 4)
#define C8_Q50(T) gemm8_a8(g, q, K, o, ldo, T, 5)
INST8(q4k, C8_Q4K)
INST8(q6k, C8_Q6K)
INST8(q80, C8_Q80)
INST8(q40, C8_Q40)
INST8(q50, C8_Q50)

/* 1..4 tokens: the kernels of the first part (decode and short tails);
 * 5..8: the 8-token ones */
#define FNS(name) { name##_1, name##_2, name##_3, name##_4, name##_5, name##_6, name##_7, name##_8 }
/* Q4_K's 2..4-token runs (a prefill's short tails, e.g. an expert's last
 * tokens) go through its 8-token kernel too: 19.3 / 16.0 / 14.8 ns per row
 * and token instead of 20.5 / 17.9 / 16.5 for T = 2 / 3 / 4 (K = 2048,
 * tools/bench_x8_kernels.c's setup, load ~2-4); the other types' 8-token
 * kernels measured the same or slower at T = 4 (Q5_0 17.0 vs 16.0, Q6_K
 * 20.1 vs 19.0, Q8_0 15.3 vs 15.9 but 21.5 vs 20.0 at T = 2). 1 token stays
 * on the 4-token kernel. */
static void q4k_8t2(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { C8_Q4K(2); }
static void q4k_8t3(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { C8_Q4K(3); }
static void q4k_8t4(const uint8_t *g, const int8_t *const *q, int64_t K, float *o, int64_t ldo) { C8_Q4K(4); }
static const gemm_fn k_q4k[CT] = { q4k_1, q4k_8t2, q4k_8t3, q4k_8t4, q4k_5, q4k_6, q4k_7, q4k_8 },
                     k_q6k[CT] = FNS(q6k), k_q80[CT] = FNS(q80), k_q40[CT] = FNS(q40), k_q50[CT] = FNS(q50);

bool ds_gemm_x8_avx512_has(ds_dtype t) {
    return t == DS_DTYPE_Q4_K || t == DS_DTYPE_Q6_K || t == DS_DTYPE_Q8_0 || t == DS_DTYPE_Q4_0 || t == DS_DTYPE_Q5_0;
}

bool ds_gemm_x8_avx512_ld(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out,
                          int64_t ldo) {
    const gemm_fn *f;
    switch (t) {
    case DS_DTYPE_Q4_K: f = k_q4k; break;
    case DS_DTYPE_Q6_K: f = k_q6k; break;
    case DS_DTYPE_Q8_0: f = k_q80; break;
    case DS_DTYPE_Q4_0: f = k_q40; break;
    case DS_DTYPE_Q5_0: f = k_q50; break;
    default: return false;
    }
    const int8_t *const *q = (const int8_t *const *)act;
    for (int t0 = 0; t0 < T; t0 += CT) {
        int n = T - t0 < CT ? T - t0 : CT;
        f[n - 1](grp, q + t0, K, out + ldo * t0, ldo);
    }
    return true;
}

bool ds_gemm_x8_avx512(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out) {
    return ds_gemm_x8_avx512_ld(t, grp, act, T, K, out, DS_RP_ROWS);
}
