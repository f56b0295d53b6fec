/*
 * gemv_avx512.c - the one-token (decode) AVX-512 VNNI kernels over the x8
 * layouts of repack.h for the types decode spends its time in: Q4_K, Q6_K,
 * Q5_0 and Q8_0. ops.c calls them for T = 1 at core/cpu.h level avx512vnni
 * instead of repack_avx512.c's kernels (which keep the multi-token calls).
 *
 *   out[8·i + r] = row r of group i · act,   i < ng consecutive groups
 *
 * Why separate kernels for one token: decode reads every weight byte once
 * and is bound by memory, but on one Zen 4 core the x8 kernels of
 * repack_avx512.c run only 1.2x (Q6_K) to 1.4x (Q4_K) faster than the memory
 * even with the data in cache (their compute is 70-85 % of the memory's
 * time), and the part of that the memory stream does not hide is what kept
 * decode below the read bandwidth (streaming: 74-87 % of it). These compute
 * the same integers with fewer instructions per weight byte (no second pass
 * over the quants, fewer shifts and masks):
 *   - Q4_K: the high nibbles enter vpdpbusd as w & 0xF0 (16x the value: one
 *     mask, no shift); their scaled sum is divided by 16 once per block
 *     (exact: it is a multiple of 16). The mins' term pairs sub-blocks
 *     (Σ over 32 values per sub-block, computed once per call from the
 *     activation's 16-value sums), 4 vpdpwssd per block instead of 8.
 *   - Q6_K: each 32-byte low-bit vector and high-bit vector is loaded once
 *     for both halves of the block; the 6-bit values are assembled with one
 *     vpternlogd each (bit select) from pre-masked high bits.
 *   - Q5_0: the 5th bit is masked and shifted into place, then merged with
 *     the nibble by one vpternlogd.
 *   - Q4_K, Q5_0: sums in two vpdpbusd chains instead of one (its latency
 *     is 4 cycles; measured in cache by tools/bench_gemv_stream.c).
 *   - Q8_0: the x8 kernel's instructions, without its software prefetch.
 * All: many groups per call, so a thread's rows are one loop, not one call
 * per group of 8. And the prefetch: see prefetch_lines.
 * The integer block sums equal those of repack_avx512.c / repack_avx2.c (they
 * are exact) and the fp32 epilogue is the same instruction sequence, so every
 * output is bit-identical to the existing one-token kernels: decode and
 * batched tokens keep agreeing bit for bit (tests/test_repack.c checks it).
 *
 * Returns false for a type (or a K) it has no kernel for; the caller then
 * uses ds_gemm_x8_avx512 / ds_gemm_x8_avx2.
 */
#include "repack.h"
#include "quant.h"
#include "quant_isa.h"
#include "x8_simd.h"

#include <immintrin.h>
#include <string.h>

/* Blocks of 256 per row the Q4_K kernel takes (its per-call table of
 * activation sums lives on the stack): K <= 32768. */
#define GEMV_MAX_NB 128

/* Software prefetch (Q6_K only), DS_GEMV_PREFETCH bytes ahead of the block
 * being read, spread over the block's inner loop (4 lines per step).
 * Measured streaming a 256 MiB weight from memory on one Zen 4 core (huge
 * pages, as the repacked weights are): Q6_K without prefetch ran at a third
 * of the read bandwidth (its block reads two streams, low bits and high bits,
 * which the hardware prefetcher does not keep ahead of), and a burst of the
 * block's 27 lines at the block start was no better; spread out, 4096-16384
 * bytes ahead, it reaches the bandwidth. Q4_K and Q5_0 streamed fastest with
 * no software prefetch at all (the hardware prefetcher keeps up; each
 * prefetch costs a load slot). ds_gemv_prefetch: the distance, 0 = none
 * (benchmarks change it). */
#ifndef DS_GEMV_PREFETCH
#define DS_GEMV_PREFETCH 8192
#endif
int ds_gemv_prefetch = DS_GEMV_PREFETCH;
/* n lines from p + distance */
AI void prefetch_lines(const uint8_t *p, const int n) {
    const int d = ds_gemv_prefetch;
    if (!d) return;
    for (int l = 0; l < n; l++) _mm_prefetch((const char *)(p + d + 64 * l), _MM_HINT_T0);
}

/* Bit select, per bit: c ? a : b (vpternlogd truth table 0xE4). */
AI __m256i sel(__m256i a, __m256i b, __m256i c) { return _mm256_ternarylogic_epi32(a, b, c, 0xE4); }

/* ------------------------------------------------------------------ Q4_K */

/* One group (1152 B per block): the integers of repack_avx512.c's gemm_q4_K
 * for T = 1 (isum = Σ_j a_j · sc_j over the 8 sub-blocks, msum = Σ_j m_j ·
 * Σ a over sub-block j), then its epilogue. bp[4b + p]: the activation's
 * i16 pair (Σ a over sub-block 2p, over 2p + 1) of block b. */
AI void q4k_group(const uint8_t *g, const int8_t *q, const float *da, const int32_t *bp, int64_t nb, float *out) {
    const __m256i m4 = _mm256_set1_epi8(15), mf0 = _mm256_set1_epi8((char)0xF0);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, g += 1152) {
        /* 6-bit scales and mins, byte 8j + r: sub-blocks 0..3 (lo) and 4..7 (hi) */
        __m256i sc_lo, sc_hi, mn_lo, mn_hi;
        q4k_scales(g, &sc_lo, &sc_hi);
        q4k_mins(g, &mn_lo, &mn_hi);
        /* mins: row r's i16 pairs (m_r,2p, m_r,2p+1) against the sums of sub-blocks 2p, 2p+1 */
        __m256i ulo = _mm256_unpacklo_epi8(mn_lo, _mm256_bsrli_epi128(mn_lo, 8));
        __m256i uhi = _mm256_unpacklo_epi8(mn_hi, _mm256_bsrli_epi128(mn_hi, 8));
        const int32_t *pb = bp + 4 * b;
        __m256i msum = dpwssd_b(_mm256_setzero_si256(), _mm256_cvtepu8_epi16(_mm256_castsi256_si128(ulo)), pb);
        msum = dpwssd_b(msum, _mm256_cvtepu8_epi16(_mm256_extracti128_si256(ulo, 1)), pb + 1);
        msum = dpwssd_b(msum, _mm256_cvtepu8_epi16(_mm256_castsi256_si128(uhi)), pb + 2);
        msum = dpwssd_b(msum, _mm256_cvtepu8_epi16(_mm256_extracti128_si256(uhi, 1)), pb + 3);
        /* sub-block j (chunks 8j..8j+7, low nibbles) and j + 4 (high nibbles, as 16x) */
        const uint8_t *qs = g + 128;
        const int8_t *qb = q + 256 * b;
        __m256i ilo = _mm256_setzero_si256(), ihi = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            /* even and odd chunks in separate chains (vpdpbusd's latency is 4 cycles) */
            __m256i al[2] = { _mm256_setzero_si256(), _mm256_setzero_si256() }, ah[2] = { _mm256_setzero_si256(), _mm256_setzero_si256() };
#pragma GCC unroll 8
            for (int v = 8 * j; v < 8 * j + 8; v++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
                al[v & 1] = dpbusd_b(al[v & 1], _mm256_and_si256(w, m4), qb + 4 * v);
                ah[v & 1] = dpbusd_b(ah[v & 1], _mm256_and_si256(w, mf0), qb + 128 + 4 * v);
            }
            const __m256i alo = _mm256_add_epi32(al[0], al[1]), ahi = _mm256_add_epi32(ah[0], ah[1]);
            ilo = _mm256_add_epi32(ilo, _mm256_mullo_epi32(alo, u8x8_reg(sc_lo, j)));
            ihi = _mm256_add_epi32(ihi, _mm256_mullo_epi32(ahi, u8x8_reg(sc_hi, j)));
        }
        __m256i isum = _mm256_add_epi32(ilo, _mm256_srai_epi32(ihi, 4));
        /* the epilogue of repack_avx2.c / repack_avx512.c, same order */
        __m256 dv = d8(g), dmv = d8(g + 16);
        __m256 db = _mm256_set1_ps(da[b]);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dv, db), acc);
        acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dmv, db), acc);
    }
    _mm256_storeu_ps(out, acc);
}

__attribute__((noinline)) static bool gemv_q4_K(const uint8_t *g, int64_t ng, const int8_t *q, int64_t K, float *out) {
    int64_t nb = K / DS_QK_K;
    if (nb > GEMV_MAX_NB) return false;
    const float *da = (const float *)(q + K);
    const int16_t *bs = (const int16_t *)(da + nb);
    /* Σ a over each sub-block of 32 (two 16-value sums; |Σ| <= 32·127 fits
     * i16), as i16 pairs of sub-blocks (2p, 2p + 1) */
    int32_t bp[4 * GEMV_MAX_NB];
    for (int64_t b = 0; b < nb; b++)
        for (int p = 0; p < 4; p++) {
            const int16_t *s = bs + 16 * b + 4 * p;
            uint16_t lo = (uint16_t)(int16_t)(s[0] + s[1]), hi = (uint16_t)(int16_t)(s[2] + s[3]);
            bp[4 * b + p] = (int32_t)((uint32_t)lo | (uint32_t)hi << 16);
        }
    size_t gb = (size_t)nb * 1152;
    for (int64_t i = 0; i < ng; i++) q4k_group(g + gb * (size_t)i, q, da, bp, nb, out + 8 * i);
    return true;
}

/* ------------------------------------------------------------------ Q6_K */

/* One group (1680 B per block): the integers of gemm_q6_K for T = 1
 * (isum = Σ_j sc_j · Σ q·a over sub-block j of 16, minus 32 Σ_j sc_j ·
 * bsum_j), then its epilogue. */
AI void q6k_group(const uint8_t *g, const int8_t *q, const float *da, const int16_t *bs, int64_t nb, float *out) {
    const __m256i m4 = _mm256_set1_epi8(15), m33 = _mm256_set1_epi8(0x33), mcc = _mm256_set1_epi8((char)0xCC);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, g += 1680) {
        const uint8_t *sc = g + 16, *ql = g + 144, *qh = g + 1168;
        const int8_t *qb = q + 256 * b;
        /* zero point: Σ_j sc_rj · bsum16_j, sub-blocks in pairs (i16 [sc_2i, sc_2i+1]) */
        __m256i zp = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int i = 0; i < 8; i += 2) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(sc + 16 * i));
            __m256i u = _mm256_unpacklo_epi8(x, _mm256_bsrli_epi128(x, 8));
            zp = dpwssd_b(zp, _mm256_cvtepi8_epi16(_mm256_castsi256_si128(u)), bs + 16 * b + 2 * i);
            zp = dpwssd_b(zp, _mm256_cvtepi8_epi16(_mm256_extracti128_si256(u, 1)), bs + 16 * b + 2 * i + 2);
        }
        __m256i isum = _mm256_setzero_si256();
        /* sub-block j of the low half (chunks 4j..4j+3) and j + 8 of the high half (4j+32..):
         * vector pair (v, v+1) holds chunks v, v+1 (low nibbles) and v+32, v+33 (high
         * nibbles); their high bits are bits 0-1, 2-3, 4-5, 6-7 of high-bit vector v/2 */
#pragma GCC unroll 2
        for (int j = 0; j < 8; j++) {
            prefetch_lines(g + 210 * j, 4);   /* 1680 B in 8 steps */
            __m256i plo = _mm256_setzero_si256(), phi = _mm256_setzero_si256();
#pragma GCC unroll 2
            for (int pv = 0; pv < 2; pv++) {
                const int v = 4 * j + 2 * pv;
                __m256i h = _mm256_loadu_si256((const __m256i *)(qh + 16 * v));
                __m256i w0 = _mm256_loadu_si256((const __m256i *)(ql + 32 * v));
                __m256i w1 = _mm256_loadu_si256((const __m256i *)(ql + 32 * v + 32));
                __m256i h1 = _mm256_and_si256(h, m33), h2 = _mm256_and_si256(h, mcc);
                /* bits 0-3: the nibble; bits 4-5: the 2 high bits; 6-7 zero (the masked h) */
                __m256i u0 = sel(w0, _mm256_slli_epi16(h1, 4), m4);
                __m256i u1 = sel(w1, _mm256_slli_epi16(h2, 2), m4);
                __m256i u2 = sel(_mm256_srli_epi16(w0, 4), h1, m4);
                __m256i u3 = sel(_mm256_srli_epi16(w1, 4), _mm256_srli_epi16(h2, 2), m4);
                plo = dpbusd_b(plo, u0, qb + 4 * v);
                plo = dpbusd_b(plo, u1, qb + 4 * v + 4);
                phi = dpbusd_b(phi, u2, qb + 128 + 4 * v);
                phi = dpbusd_b(phi, u3, qb + 128 + 4 * v + 4);
            }
            __m256i slo = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(sc + 8 * j)));
            __m256i shi = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(sc + 8 * (j + 8))));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(_mm256_mullo_epi32(plo, slo), _mm256_mullo_epi32(phi, shi)));
        }
        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(zp, 5));
        __m256 dv = d8(g);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dv, _mm256_set1_ps(da[b])), acc);
    }
    _mm256_storeu_ps(out, acc);
}

__attribute__((noinline)) static bool gemv_q6_K(const uint8_t *g, int64_t ng, const int8_t *q, int64_t K, float *out) {
    int64_t nb = K / DS_QK_K;
    const float *da = (const float *)(q + K);
    const int16_t *bs = (const int16_t *)(da + nb);
    size_t gb = (size_t)nb * 1680;
    for (int64_t i = 0; i < ng; i++) q6k_group(g + gb * (size_t)i, q, da, bs, nb, out + 8 * i);
    return true;
}

/* ------------------------------------------------------------------ Q5_0 */

/* One group (176 B per block of 32): the integer sum of gemm_a8 (kind 5)
 * for T = 1 and its epilogue. */
AI void q50_group(const uint8_t *g, const int8_t *q, const float *da, const float *sa, int64_t nb, float *out) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, g += 176) {
        const uint8_t *qs = g + 48;
        const int8_t *qb = q + 32 * b;
        const __m256i hb = _mm256_loadu_si256((const __m256i *)(g + 16));
        /* two chains, low and high nibbles (vpdpbusd's latency is 4 cycles: one chain
         * of 8 ran 1.12x slower in cache) */
        __m256i ilo = _mm256_setzero_si256(), ihi = _mm256_setzero_si256();
        /* nibble vector v: low nibbles = chunk v, high = chunk v + 4; the 5th bit of
         * chunk c is bit c of hb: masked alone, shifted to bit 4, merged by bit select */
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
            __m256i blo = _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8((char)(1 << v))), 4 - v);
            __m256i bhi = _mm256_and_si256(hb, _mm256_set1_epi8((char)(0x10 << v)));
            if (v) bhi = _mm256_srli_epi16(bhi, v);
            ilo = dpbusd_b(ilo, sel(w, blo, m4), qb + 4 * v);
            ihi = dpbusd_b(ihi, sel(_mm256_srli_epi16(w, 4), bhi, m4), qb + 16 + 4 * v);
        }
        __m256i isum = _mm256_add_epi32(ilo, ihi);   /* exact: the same i32 sum */
        __m256 dv = d8(g);
        __m256 x = _mm256_sub_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(16.0f * sa[b]));
        acc = _mm256_fmadd_ps(x, _mm256_mul_ps(dv, _mm256_set1_ps(da[b])), acc);
    }
    _mm256_storeu_ps(out, acc);
}

__attribute__((noinline)) static bool gemv_q5_0(const uint8_t *g, int64_t ng, const int8_t *q, int64_t K, float *out) {
    int64_t nb = K / DS_QK;
    const float *da = (const float *)(q + K), *sa = da + nb;
    size_t gb = (size_t)nb * 176;
    for (int64_t i = 0; i < ng; i++) q50_group(g + gb * (size_t)i, q, da, sa, nb, out + 8 * i);
    return true;
}

/* ------------------------------------------------------------------ Q8_0 */

/* One group (272 B per block of 32): gemm_a8 (kind 0) for T = 1 without its
 * software prefetch (streamed faster without, like Q4_K): Σ (w + 128) · a,
 * then the -128 Σ a zero point in the epilogue. */
AI void q80_group(const uint8_t *g, const int8_t *q, const float *da, const float *sa, int64_t nb, float *out) {
    const __m256i m80 = _mm256_set1_epi8((char)0x80);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, g += 272) {
        const uint8_t *qs = g + 16;
        const int8_t *qb = q + 32 * b;
        __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++)
            isum = dpbusd_b(isum, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)), m80), qb + 4 * c);
        __m256 dv = d8(g);
        __m256 x = _mm256_sub_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(128.0f * sa[b]));
        acc = _mm256_fmadd_ps(x, _mm256_mul_ps(dv, _mm256_set1_ps(da[b])), acc);
    }
    _mm256_storeu_ps(out, acc);
}

__attribute__((noinline)) static bool gemv_q8_0(const uint8_t *g, int64_t ng, const int8_t *q, int64_t K, float *out) {
    int64_t nb = K / DS_QK;
    const float *da = (const float *)(q + K), *sa = da + nb;
    size_t gb = (size_t)nb * 272;
    for (int64_t i = 0; i < ng; i++) q80_group(g + gb * (size_t)i, q, da, sa, nb, out + 8 * i);
    return true;
}

/* ---------------------------------------------------------------- dispatch */

/* (the per-type loops above are noinline: each type is its own symbol in a
 * profile, which is how README's decode breakdown splits the time) */

bool ds_gemv_x8_avx512_has(ds_dtype t, int64_t K) {
    return t == DS_DTYPE_Q6_K || t == DS_DTYPE_Q5_0 || t == DS_DTYPE_Q8_0 || (t == DS_DTYPE_Q4_K && K / DS_QK_K <= GEMV_MAX_NB);
}

bool ds_gemv_x8_avx512(ds_dtype t, const void *grp, int64_t ng, const void *act, int64_t K, float *out) {
    const uint8_t *g = grp;
    const int8_t *q = act;
    switch (t) {
    case DS_DTYPE_Q4_K: return gemv_q4_K(g, ng, q, K, out);
    case DS_DTYPE_Q6_K: return gemv_q6_K(g, ng, q, K, out);
    case DS_DTYPE_Q5_0: return gemv_q5_0(g, ng, q, K, out);
    case DS_DTYPE_Q8_0: return gemv_q8_0(g, ng, q, K, out);
    default: return false;
    }
}
