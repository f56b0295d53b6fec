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
 *   IQ2_XXS    512-bit: the 8 rows' grid values expanded from 2-bit codes
 *              (vpermt2w) and their signs computed in registers, signed
 *              weights against activations + 128, the bias removed per
 *              block (gemm_iq2_xxs below)
 *
 * The integers are exactly those of the AVX2 kernels and the fp32 epilogue
 * is the same sequence of operations, so the results are bit-identical to
 * ds_gemm_x8_avx2 (tests/test_repack.c checks it). ops.c passes a whole
 * token tile (up to 64) per call: Q2_K/Q3_K split it into runs of 8 tokens
 * per weight unpack (weights in registers), IQ4_NL into runs of up to 16,
 * and IQ2_XXS above 8 tokens unpacks a chunk of blocks ONCE into a stack
 * buffer and runs every token of the tile over it (gemm_iq2_xxs_tile: its
 * unpack is ~2/3 of the 8-token kernel's time). Each token's arithmetic is
 * the same whatever T or its place in the tile (batch invariance).
 * Products take the activation bytes as vpdpbusd/vpdpwssd's embedded
 * {1to8} broadcast (dpbusd_b) where the layout allows it.
 */
#include "repack.h"
#include "quant.h"
#include "quant_isa.h"
#include "iq_tables.h"
#include "x8_simd.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

#define XT DS_RP_EXT_T   /* tokens per weight unpack (8: the INST list below) */

/* 8 x u8 / s8 (rows 0..7) -> i32 lanes with the high 16 bits 0 (vpdpwssd multiplier) */
AI __m256i sc32_u8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
AI __m256i sc32_s8(const uint8_t *p) {
    return _mm256_and_si256(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)), _mm256_set1_epi32(0xFFFF));
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
            for (int t = 0; t < T; t++) msum[t] = dpwssd_b(msum[t], mp, bs[t] + 16 * b + 2 * i);
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
                    __m256i p = dpbusd_b(_mm256_setzero_si256(), u[0], a);
                    p = dpbusd_b(p, u[1], a + 4);
                    p = dpbusd_b(p, u[2], a + 8);
                    p = dpbusd_b(p, u[3], a + 12);
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
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
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
        q3k_scale_table(g, scb);
        const uint8_t *hv = g + 112, *qs = g + 368;
        __m256i isum[XT];
        /* zero point: -4 Σ_s sc_rs · bsum16_s, sub-blocks in pairs */
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m256i sp = pair8_s8((const uint8_t *)scb + 16 * i, (const uint8_t *)scb + 16 * i + 8);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) isum[t] = dpwssd_b(isum[t], sp, bs[t] + 16 * b + 2 * i);
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
                    __m256i p = dpbusd_b(_mm256_setzero_si256(), u[0], a);
                    p = dpbusd_b(p, u[1], a + 4);
                    p = dpbusd_b(p, u[2], a + 8);
                    p = dpbusd_b(p, u[3], a + 12);
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

/* The IQ2_XXS grid as 2-bit codes: bits 2k..2k+1 of k_gcode[i] = 0, 1, 2
 * for byte k of ds_iq2xxs_grid[i] = 8, 25, 43 (its only values); 512 B,
 * looked up 32 at a time with vpermt2w from 8 registers' worth. */
static uint16_t k_gcode[256] __attribute__((aligned(64)));
static uint8_t k_gpat[4][64] __attribute__((aligned(64)));   /* j: code bytes of (row, j) -> weight bytes */
static uint8_t k_spat[4][64] __attribute__((aligned(64)));   /* j: sign byte j of a row -> its 8 bytes */
static uint8_t k_gms[4][64] __attribute__((aligned(64)));    /* j: vpmultishiftqb bit offsets of field k of code (r, j) */
static uint8_t k_sbit[4][64] __attribute__((aligned(64)));   /* j: vpshufbitqmb bit of weight 8j+k's sign */
static uint8_t k_lut64[64] __attribute__((aligned(64)));     /* x -> 8, 25, 43 for x & 3 = 0, 1, 2 */
static pthread_once_t k_iq2_once = PTHREAD_ONCE_INIT;
static void init_iq2(void) {
    for (int i = 0; i < 256; i++) {
        uint16_t c = 0;
        for (int k = 0; k < 8; k++) {
            unsigned v = (unsigned)(ds_iq2xxs_grid[i] >> (8 * k)) & 0xFF;
            c |= (uint16_t)((v == 8 ? 0u : v == 25 ? 1u : 2u) << (2 * k));
        }
        k_gcode[i] = c;
    }
    for (int j = 0; j < 4; j++)
        for (int b = 0; b < 64; b++) {
            int h = (b % 16) / 8, k = b % 8;
            k_gpat[j][b] = (uint8_t)(8 * h + 2 * j + k / 4);
            k_spat[j][b] = (uint8_t)(8 * h + j);
            k_gms[j][b] = (uint8_t)(16 * j + 2 * k);
            k_sbit[j][b] = (uint8_t)(k < 7 ? 32 + 7 * j + k : 7 * j);
        }
    for (int x = 0; x < 64; x++) k_lut64[x] = (uint8_t)((x & 3) == 0 ? 8 : (x & 3) == 1 ? 25 : 43);
}

#define IQ2_KC 8   /* blocks of 256 per chunk of biased activations (T x 2 KiB on the stack) */

/* Sub-block ib of the 8 rows in 512-bit registers, qword lane r = row r:
 * the ib record (64 B: row r's 4 grid indices + sign/scale word at 8r) is
 * one load, and with no gathers and no scalar work
 *   grid    the 32 indices as words, vpermt2w over k_gcode (4 x 64
 *           entries, picked by index bits 6 and 7) -> 32 codes; per j a
 *           byte shuffle puts code (r, j) under qword r, variable word
 *           shifts take field k into byte k, vpshufb maps 0/1/2 -> 8/25/43
 *   signs   the four 7-bit sign indices as bytes, the 8th (parity) bit
 *           added by xor folding; per j a byte broadcast and vptestmb give
 *           the 64-bit negate mask of w_j
 * so w_j = the signed int8 weights 8j..8j+7 of every row (dword lane 2r =
 * weights 8j..8j+3 of row r, 2r+1 = 8j+4..8j+7). The activations go in as
 * a + 128 (u8, vpdpbusd's unsigned side; a biased copy of IQ2_KC blocks per
 * token on the stack), one qword broadcast per j:
 *   p_t  = Σ_j vpdpbusd(a_t + 128, w_j)        |lane| <= 16 · 255 · 43
 *   isum_t += p_t · (2s+1)   (vpmulld: p_t does not fit vpdpwssd's 16 bits)
 *   corr   += Σ_j vpdpbusd(1, w_j) · (2s+1)    (weights only, once for all tokens)
 * and per block Σ_ib (2s+1) Σ g·sign·a = isum_t - 128·corr, the two dword
 * lanes of a row added: |isum| <= 8 · 31 · 175440 < 2^31, so every integer
 * is exact and equals the AVX2 kernel's per-row block sum, and the fp32
 * epilogue is the same (bit-identical results). One weight unpack serves up
 * to 8 tokens; a token's instructions do not depend on T (batch invariance). */
/* The pieces both IQ2_XXS kernels share (AVX-512 BW + VNNI only, so they
 * inline into the plain kernel and the VBMI/BITALG one alike): the biased
 * activation copy, a record's scale, the tokens' products with one unpacked
 * sub-block, and the block's fp32 epilogue. */
AI void iq2_stage(uint8_t (*ab)[IQ2_KC * DS_QK_K], const int8_t *const *q, int64_t b0, int64_t b1, const int T) {
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        for (int64_t i = 0; i < (b1 - b0) * DS_QK_K; i += 64)
            _mm512_store_si512((__m512i *)(ab[t] + i), _mm512_xor_si512(_mm512_loadu_si512(q[t] + DS_QK_K * b0 + i), k80));
}

/* 2s+1 in both dwords of qword r (row r's record R) */
AI __m512i iq2_scale(__m512i R) {
    __m512i sc = _mm512_add_epi64(_mm512_slli_epi64(_mm512_srli_epi64(R, 60), 1), _mm512_set1_epi64(1));
    return _mm512_or_si512(sc, _mm512_slli_epi64(sc, 32));
}

/* isum_t += (Σ_j vpdpbusd(a_t + 128, w_j)) · (2s+1); ap: token 0's 32 biased activations, token t's stride bytes on */
AI void iq2_tokens(__m512i *isum, const uint8_t *ap, size_t stride, const __m512i *w, __m512i sc, const int T) {
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        const uint8_t *a = ap + (size_t)t * stride;
        int64_t v[4];
        memcpy(v, a, 32);
        __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi64(v[0]), w[0]);
        p = _mm512_dpbusd_epi32(p, _mm512_set1_epi64(v[1]), w[1]);
        p = _mm512_dpbusd_epi32(p, _mm512_set1_epi64(v[2]), w[2]);
        p = _mm512_dpbusd_epi32(p, _mm512_set1_epi64(v[3]), w[3]);
        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
    }
}

/* acc_t += (isum_t - 128·corr, a row's two dword lanes added) · d · 0.125 · da_t[b] */
AI void iq2_finish(__m256 *acc, const __m512i *isum, __m512i corr, const uint8_t *g, const float *const *da, int64_t b,
                   const int T) {
    const __m512i c128 = _mm512_slli_epi32(corr, 7);
    __m256 dv = _mm256_mul_ps(d8(g), _mm256_set1_ps(0.125f));
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        __m512i s = _mm512_sub_epi32(isum[t], c128);
        s = _mm512_add_epi32(s, _mm512_srli_epi64(s, 32));     /* low dword of qword r: row r */
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm512_cvtepi64_epi32(s)), _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
    }
}

/* The 2-bit grid codes of a sub-block record R: word 4r + j =
 * k_gcode[index (r, j)] (vpermt2w over 4 x 64 entries picked by index bits
 * 6 and 7); shared by both unpacks (AVX-512BW only, so it inlines into the
 * VBMI one as well). */
AI __m512i iq2_codes(__m512i R) {
    const __m512i b6 = _mm512_set1_epi16(64), b7 = _mm512_set1_epi16(128);
    __m512i iw = _mm512_cvtepu8_epi16(_mm512_cvtepi64_epi32(R));
    __m512i c01 = _mm512_permutex2var_epi16(_mm512_load_si512(k_gcode), iw, _mm512_load_si512(k_gcode + 32));
    __m512i c23 = _mm512_permutex2var_epi16(_mm512_load_si512(k_gcode + 64), iw, _mm512_load_si512(k_gcode + 96));
    __m512i c45 = _mm512_permutex2var_epi16(_mm512_load_si512(k_gcode + 128), iw, _mm512_load_si512(k_gcode + 160));
    __m512i c67 = _mm512_permutex2var_epi16(_mm512_load_si512(k_gcode + 192), iw, _mm512_load_si512(k_gcode + 224));
    __mmask32 k6 = _mm512_test_epi16_mask(iw, b6), k7 = _mm512_test_epi16_mask(iw, b7);
    __m512i C = _mm512_mask_mov_epi16(_mm512_mask_mov_epi16(c01, k6, c23), k7, _mm512_mask_mov_epi16(c45, k6, c67));
    return C;
}

/* One sub-block record R (qword r: row r's 4 grid indices + sign/scale
 * word) -> w[0..3], the signed int8 weights (layout above); the plain
 * AVX-512 BW form (grid codes by byte shuffles and variable shifts, signs by
 * xor folding and a byte broadcast + vptestmb per j). */
AI void iq2_unpack(__m512i R, __m512i *w) {
    const __m512i m3 = _mm512_set1_epi8(3), bits = _mm512_set1_epi64((long long)0x8040201008040201ULL);
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(8, 25, 43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
    const __m512i cnt_e = _mm512_set1_epi32(4 << 16), cnt_o = _mm512_set1_epi32(2 | 6 << 16);
    const __m512i C = iq2_codes(R);
    /* sign bytes: byte j of qword r = ds_iq_ksigns[(a1 >> 7j) & 127] (7 bits + parity) */
    __m512i X = _mm512_srli_epi64(R, 32);
    __m512i Y = _mm512_and_si512(X, _mm512_set1_epi64(0x7F));
    Y = _mm512_ternarylogic_epi64(_mm512_slli_epi64(X, 1), _mm512_set1_epi64(0x7F00), Y, 0xEA);       /* (A & B) | C */
    Y = _mm512_ternarylogic_epi64(_mm512_slli_epi64(X, 2), _mm512_set1_epi64(0x7F0000), Y, 0xEA);
    Y = _mm512_ternarylogic_epi64(_mm512_slli_epi64(X, 3), _mm512_set1_epi64(0x7F000000), Y, 0xEA);
    __m512i P = _mm512_xor_si512(Y, _mm512_srli_epi64(Y, 4));   /* bit 0 of byte j: parity of byte j */
    P = _mm512_xor_si512(P, _mm512_srli_epi64(P, 2));
    P = _mm512_xor_si512(P, _mm512_srli_epi64(P, 1));
    Y = _mm512_ternarylogic_epi64(_mm512_slli_epi64(P, 7), _mm512_set1_epi64(0x80808080), Y, 0xEA);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512i E = _mm512_shuffle_epi8(C, _mm512_load_si512(k_gpat[j]));   /* byte k: code byte with field k */
        __m512i F = _mm512_mask_blend_epi8((__mmask64)0xAAAAAAAAAAAAAAAAULL, _mm512_srlv_epi16(E, cnt_e),
                                           _mm512_srlv_epi16(E, cnt_o));
        __m512i gv = _mm512_shuffle_epi8(lut, _mm512_and_si512(F, m3));          /* 8, 25, 43 */
        __mmask64 neg = _mm512_test_epi8_mask(_mm512_shuffle_epi8(Y, _mm512_load_si512(k_spat[j])), bits);
        w[j] = _mm512_mask_sub_epi8(gv, neg, _mm512_setzero_si512(), gv);          /* ±g */
    }
}

/* The same weights with AVX512-VBMI and BITALG (Ice Lake, Zen 4 and later;
 * checked at run time): the same integers (bit-identical kernels), with a
 * cheaper unpack per sub-block j:
 *   grid    vpmultishiftqb takes field k of code (r, j) into byte k of
 *           qword r (any bit offset), vpermb maps it to 8/25/43 (the
 *           neighbouring fields in bits 2..5 are ignored by the 64-entry
 *           table): 2 instructions instead of 6
 *   signs   Z = per row the sign word a1 (high dword) and the parities of
 *           its four 7-bit sign indices at bits 7j (low dword, by xor
 *           folding); vpshufbitqmb picks the 8 sign bits of w_j from Z
 *           straight into the negate mask */
#define VBT __attribute__((target("avx512vbmi,avx512bitalg")))
AI VBT void iq2_unpack_vb(__m512i R, __m512i *w) {
    const __m512i lut = _mm512_load_si512(k_lut64);
    const __m512i C = iq2_codes(R);
    /* bit 7j of P: parity of bits 7j..7j+6 of a1 (x_i ^ ... ^ x_i+7, then x_i+7 removed) */
    __m512i X = _mm512_srli_epi64(R, 32);
    __m512i P = _mm512_xor_si512(X, _mm512_srli_epi64(X, 1));
    P = _mm512_xor_si512(P, _mm512_srli_epi64(P, 2));
    P = _mm512_ternarylogic_epi64(P, _mm512_srli_epi64(P, 4), _mm512_srli_epi64(X, 7), 0x96);   /* A ^ B ^ C */
    const __m512i Z = _mm512_mask_blend_epi32((__mmask16)0xAAAA, P, R);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512i gv = _mm512_permutexvar_epi8(_mm512_multishift_epi64_epi8(_mm512_load_si512(k_gms[j]), C), lut);
        __mmask64 neg = _mm512_bitshuffle_epi64_mask(Z, _mm512_load_si512(k_sbit[j]));
        w[j] = _mm512_mask_sub_epi8(gv, neg, _mm512_setzero_si512(), gv);          /* ±g */
    }
}

/* Up to 8 tokens per unpack (decode, short tails: T <= XT), the weights in
 * registers; one body for both unpack forms. */
#define IQ2_KERNEL(name, ATTR, UNPACK)                                                                                   \
    AI ATTR void name(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {                  \
        int64_t nb = K / DS_QK_K;                                                                                      \
        const float *da[XT];                                                                                           \
        __m256 acc[XT];                                                                                                \
        uint8_t ab[XT][IQ2_KC * DS_QK_K] __attribute__((aligned(64)));   /* (T, IQ2_KC·256) activations + 128 */    \
        const __m512i ones = _mm512_set1_epi8(1);                                                                      \
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {                                                          \
            da[t] = (const float *)(q[t] + K);                                                                         \
            acc[t] = _mm256_setzero_ps();                                                                              \
        }                                                                                                              \
        for (int64_t b0 = 0; b0 < nb; b0 += IQ2_KC) {                                                                  \
            const int64_t b1 = nb - b0 < IQ2_KC ? nb : b0 + IQ2_KC;                                                    \
            iq2_stage(ab, q, b0, b1, T);                                                                               \
            for (int64_t b = b0; b < b1; b++, g += 528) {                                                              \
                prefetch_block(g, 528);                                                                                \
                __m512i isum[XT], corr = _mm512_setzero_si512();                                                       \
                _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) isum[t] = _mm512_setzero_si512();                 \
                for (int ib = 0; ib < 8; ib++) {                                                                       \
                    const __m512i R = _mm512_loadu_si512(g + 16 + 64 * ib);   /* qword r: row r's record */          \
                    const __m512i sc = iq2_scale(R);   /* 2s+1 in both dwords of row r */                             \
                    __m512i w[4], sw = _mm512_setzero_si512();                                                         \
                    UNPACK(R, w);                                                                                      \
                    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) sw = _mm512_dpbusd_epi32(sw, ones, w[j]);     \
                    corr = _mm512_add_epi32(corr, _mm512_mullo_epi32(sw, sc));                                         \
                    iq2_tokens(isum, &ab[0][0] + DS_QK_K * (b - b0) + 32 * ib, IQ2_KC * DS_QK_K, w, sc, T);          \
                }                                                                                                      \
                iq2_finish(acc, isum, corr, g, da, b, T);                                                              \
            }                                                                                                          \
        }                                                                                                              \
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) _mm256_storeu_ps(out + 8 * t, acc[t]);                    \
    }
IQ2_KERNEL(gemm_iq2_xxs, , iq2_unpack)
IQ2_KERNEL(gemm_iq2_xxs_vb, VBT, iq2_unpack_vb)

/* More than 8 tokens (prefill: ops.c passes a tile of up to 64): the
 * unpack (~2/3 of the 8-token kernel's time) is done ONCE per chunk of
 * IQ2_TB blocks into a stack buffer (the signed weights, the scales, the
 * weight-only correction 128·corr and d/8: everything that does not depend
 * on the token), then the tokens go over it in runs of up to IQ2_RT, each
 * run the 8-token kernel's per-token work (biased activations staged per
 * block, 4 vpdpbusd + vpmulld per sub-block and token, the same epilogue)
 * with the weights loaded from L1 instead of recomputed. The integers are
 * exact and the fp32 sequence per token is the 8-token kernel's (acc kept
 * in out between chunks: a float store and reload change nothing), so a
 * token's bits do not depend on T, its run or its place (batch invariance)
 * and equal the AVX2 kernel's. */
#define IQ2_TB 8    /* blocks per unpacked chunk: 8 · 2.6 KiB of stack */
#define IQ2_RT 8   /* tokens per run over a chunk (16 accumulators + 5 weight registers) */
typedef struct {
    __m512i w[8][4];   /* sub-block ib: the signed weights w_j (layout above) */
    __m512i sc[8];     /* sub-block ib: 2s+1 in both dwords of row r */
    __m512i c128;      /* 128 · Σ_ib (2s+1) Σ w (the activation bias to remove) */
    __m256 dv;         /* d · 0.125 per row */
} iq2_blk;

#define IQ2_UNPACK_CHUNK(name, ATTR, UNPACK)                                                                   \
    static ATTR void name(const uint8_t *g, int64_t n, iq2_blk *bk) {                                           \
        const __m512i ones = _mm512_set1_epi8(1);                                                              \
        for (int64_t b = 0; b < n; b++, g += 528) {                                                            \
            prefetch_block(g, 528);                                                                            \
            __m512i corr = _mm512_setzero_si512();                                                             \
            for (int ib = 0; ib < 8; ib++) {                                                                   \
                const __m512i R = _mm512_loadu_si512(g + 16 + 64 * ib);                                        \
                const __m512i sc = iq2_scale(R);                                                               \
                __m512i w[4], sw = _mm512_setzero_si512();                                                     \
                UNPACK(R, w);                                                                                  \
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {                                          \
                    sw = _mm512_dpbusd_epi32(sw, ones, w[j]);                                                  \
                    _mm512_store_si512(&bk[b].w[ib][j], w[j]);                                                 \
                }                                                                                              \
                _mm512_store_si512(&bk[b].sc[ib], sc);                                                         \
                corr = _mm512_add_epi32(corr, _mm512_mullo_epi32(sw, sc));                                     \
            }                                                                                                  \
            bk[b].c128 = _mm512_slli_epi32(corr, 7);                                                           \
            bk[b].dv = _mm256_mul_ps(d8(g), _mm256_set1_ps(0.125f));                                           \
        }                                                                                                      \
    }
IQ2_UNPACK_CHUNK(iq2_unpack_chunk, , iq2_unpack)
IQ2_UNPACK_CHUNK(iq2_unpack_chunk_vb, VBT, iq2_unpack_vb)

/* Blocks b0 .. b0+n-1 (unpacked in bk) for T <= IQ2_RT tokens: out[8t..] +=
 * their contribution (first: out starts at 0). */
AI void iq2_run(const iq2_blk *bk, int64_t n, int64_t b0, const int8_t *const *q, int64_t K, float *out, bool first,
                const int T) {
    const float *da[IQ2_RT];
    uint8_t ab[IQ2_RT][DS_QK_K] __attribute__((aligned(64)));   /* (T, 256) activations + 128 of one block */
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        if (first) _mm256_storeu_ps(out + 8 * t, _mm256_setzero_ps());
    }
    for (int64_t b = 0; b < n; b++) {
#pragma GCC unroll 16
        for (int t = 0; t < T; t++)
#pragma GCC unroll 4
            for (int i = 0; i < DS_QK_K; i += 64)
                _mm512_store_si512((__m512i *)(ab[t] + i),
                                   _mm512_xor_si512(_mm512_loadu_si512(q[t] + DS_QK_K * (b0 + b) + i), k80));
        __m512i isum[IQ2_RT];
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) isum[t] = _mm512_setzero_si512();
        const iq2_blk *k = bk + b;
        for (int ib = 0; ib < 8; ib++) {
            __m512i w[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) w[j] = _mm512_load_si512(&k->w[ib][j]);
            iq2_tokens(isum, &ab[0][0] + 32 * ib, DS_QK_K, w, _mm512_load_si512(&k->sc[ib]), T);
        }
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            __m512i s = _mm512_sub_epi32(isum[t], k->c128);
            s = _mm512_add_epi32(s, _mm512_srli_epi64(s, 32));     /* low dword of qword r: row r */
            _mm256_storeu_ps(out + 8 * t, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm512_cvtepi64_epi32(s)),
                                                          _mm256_mul_ps(k->dv, _mm256_set1_ps(da[t][b0 + b])),
                                                          _mm256_loadu_ps(out + 8 * t)));
        }
    }
}

typedef void (*iq2_run_fn)(const iq2_blk *, int64_t, int64_t, const int8_t *const *, int64_t, float *, bool);
#define IQ2_RUN(n) \
    static void iq2_run_##n(const iq2_blk *bk, int64_t m, int64_t b0, const int8_t *const *q, int64_t K, float *o, bool f) { \
        iq2_run(bk, m, b0, q, K, o, f, n);                                                                                  \
    }
IQ2_RUN(1) IQ2_RUN(2) IQ2_RUN(3) IQ2_RUN(4) IQ2_RUN(5) IQ2_RUN(6) IQ2_RUN(7) IQ2_RUN(8)
#if IQ2_RT > 8
IQ2_RUN(9) IQ2_RUN(10) IQ2_RUN(11) IQ2_RUN(12)
#endif
static const iq2_run_fn k_iq2_run[IQ2_RT] = { iq2_run_1, iq2_run_2, iq2_run_3, iq2_run_4, iq2_run_5, iq2_run_6, iq2_run_7, iq2_run_8,
#if IQ2_RT > 8
                                              iq2_run_9, iq2_run_10, iq2_run_11, iq2_run_12
#endif
};

/* T > XT tokens: per chunk one unpack, then runs of near-equal size (<= IQ2_RT) */
static void gemm_iq2_xxs_tile(const uint8_t *g, const int8_t *const *q, int T, int64_t K, float *out, bool vb) {
    iq2_blk bk[IQ2_TB];
    int64_t nb = K / DS_QK_K;
    int nr = (T + IQ2_RT - 1) / IQ2_RT;
    for (int64_t b0 = 0; b0 < nb; b0 += IQ2_TB) {
        int64_t n = nb - b0 < IQ2_TB ? nb - b0 : IQ2_TB;
        if (vb) iq2_unpack_chunk_vb(g + 528 * b0, n, bk);
        else iq2_unpack_chunk(g + 528 * b0, n, bk);
        for (int r = 0, t0 = 0; r < nr; r++) {
            int m = (T - t0) / (nr - r);   /* the rest split evenly: sizes differ by at most 1 */
            k_iq2_run[m - 1](bk, n, b0, q + t0, K, out + 8 * t0, b0 == 0);
            t0 += m;
        }
    }
}

/* ---------------------------------------------------------------- IQ4_NL */

/* 144-byte blocks of 32: d[8] | 4 nibble vectors (low = chunk v, high = chunk
 * v + 4) indexing the 16 levels; the levels go in as level + 128 (u8), so
 * Σ level · a = Σ (level + 128) · a - 128 Σ a, Σ a from the A8 block sums
 * (|Σ| <= 32 · 241 · 127 < 2^24: both terms and the difference exact in fp32,
 * the same float as the AVX2 kernel's converted integer). */
#define NLT 16   /* IQ4_NL: tokens per weight unpack (T > 8: runs of 9..16) */
AI void gemm_iq4_nl(const uint8_t *g, const int8_t *const *q, int64_t K, float *out, const int T) {
    int64_t nb = K / DS_QK;
    const float *da[NLT], *sa[NLT];
    __m256 acc[NLT];
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i tab = _mm256_xor_si256(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values)),
                                         _mm256_set1_epi8((char)0x80));
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        da[t] = (const float *)(q[t] + K);
        sa[t] = da[t] + nb;
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, g += 144) {
        prefetch_block(g, 144);
        const uint8_t *qs = g + 16;
        __m256i isum[NLT];
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) isum[t] = _mm256_setzero_si256();
        /* nibble vector v: low nibbles = chunk v, high = chunk v + 4; a vector's
         * products for all tokens before the next vector (few live registers) */
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
            __m256i lo = _mm256_shuffle_epi8(tab, _mm256_and_si256(w, m4));
            __m256i hi = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(w, 4), m4));
#pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                isum[t] = dpbusd_b(isum[t], lo, q[t] + 32 * b + 4 * v);
                isum[t] = dpbusd_b(isum[t], hi, q[t] + 32 * b + 16 + 4 * v);
            }
        }
        __m256 dv = d8(g);
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            __m256i s = isum[t];
            __m256 x = _mm256_sub_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(128.0f * sa[t][b]));
            acc[t] = _mm256_fmadd_ps(x, _mm256_mul_ps(dv, _mm256_set1_ps(da[t][b])), acc[t]);
        }
    }
#pragma GCC unroll 16
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
#define INSTV(name, fn)                                                                                           \
    static VBT void name##_1(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 1); } \
    static VBT void name##_2(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 2); } \
    static VBT void name##_3(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 3); } \
    static VBT void name##_4(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 4); } \
    static VBT void name##_5(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 5); } \
    static VBT void name##_6(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 6); } \
    static VBT void name##_7(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 7); } \
    static VBT void name##_8(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { fn(g, q, K, o, 8); } \
    static const gemm_fn k_##name[XT] = { name##_1, name##_2, name##_3, name##_4, name##_5, name##_6, name##_7, name##_8 };
INSTV(iq2xxs_vb, gemm_iq2_xxs_vb)

int ds_iq2xxs_vbmi = -1;   /* quant_isa.h */
bool ds_iq2xxs_vbmi_available(void) {
    return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bitalg");
}
static bool iq2_vbmi(void) { return ds_iq2xxs_vbmi != 0 && ds_iq2xxs_vbmi_available(); }
INST(iq4nl, gemm_iq4_nl)
#define NL16(n) static void iq4nl_##n(const uint8_t *g, const int8_t *const *q, int64_t K, float *o) { gemm_iq4_nl(g, q, K, o, n); }
NL16(9) NL16(10) NL16(11) NL16(12) NL16(13) NL16(14) NL16(15) NL16(16)
static const gemm_fn k_iq4nl16[NLT] = { iq4nl_1, iq4nl_2, iq4nl_3, iq4nl_4, iq4nl_5, iq4nl_6, iq4nl_7, iq4nl_8,
                                        iq4nl_9, iq4nl_10, iq4nl_11, iq4nl_12, iq4nl_13, iq4nl_14, iq4nl_15, iq4nl_16 };

bool ds_gemm_x8_ext_avx512_has(ds_dtype t) {
    return t == DS_DTYPE_Q2_K || t == DS_DTYPE_Q3_K || t == DS_DTYPE_IQ2_XXS || t == DS_DTYPE_IQ4_NL;
}

bool ds_gemm_x8_ext_avx512(ds_dtype t, const void *grp, const void *const *act, int T, int64_t K, float *out) {
    const gemm_fn *f;
    switch (t) {
    case DS_DTYPE_Q2_K: f = k_q2k; break;
    case DS_DTYPE_Q3_K: f = k_q3k; break;
    case DS_DTYPE_IQ2_XXS:
        pthread_once(&k_iq2_once, init_iq2);
        if (T > XT) {   /* one unpack for the whole tile */
            gemm_iq2_xxs_tile((const uint8_t *)grp, (const int8_t *const *)act, T, K, out, iq2_vbmi());
            return true;
        }
        f = iq2_vbmi() ? k_iq2xxs_vb : k_iq2xxs;
        break;
    case DS_DTYPE_IQ4_NL:
        if (T > XT) {   /* runs of near-equal size, up to NLT tokens per unpack */
            const int8_t *const *qq = (const int8_t *const *)act;
            int nr = (T + NLT - 1) / NLT;
            for (int r = 0, t0 = 0; r < nr; r++) {
                int m = (T - t0) / (nr - r);
                k_iq4nl16[m - 1]((const uint8_t *)grp, qq + t0, K, out + 8 * t0);
                t0 += m;
            }
            return true;
        }
        f = k_iq4nl;
        break;
    default: return false;
    }
    const int8_t *const *q = (const int8_t *const *)act;
    for (int t0 = 0; t0 < T; t0 += XT) {
        int n = T - t0 < XT ? T - t0 : XT;
        f[n - 1](grp, q + t0, K, out + 8 * t0);
    }
    return true;
}
