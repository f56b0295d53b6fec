/*
 * x8_simd.h - private: the pieces every SIMD kernel over repack.h's x8
 * groups uses the same way (repack_avx2.c, repack_avx512.c,
 * repack_ext_avx512.c, gemv_avx512.c): reading a group's fp16 scales and its
 * packed Q4_K / Q3_K sub-block scales, moving bytes of 8 rows into lanes,
 * broadcasting activation words, prefetching blocks ahead.
 *
 * Each including file compiles these with its own ISA flags (static, always
 * inlined: no call, no symbol); everything here needs AVX2 only, except the
 * VNNI forms at the end, defined when the file is built for AVX512-VNNI.
 * Row r of a group's 8 rows sits at byte/lane r of each 8-wide field.
 */
#ifndef DS_X8_SIMD_H
#define DS_X8_SIMD_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* the group's 8 fp16 values at p (one per row) as fp32 */
AI __m256 d8(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* The 4 bytes at p in every i32 lane */
AI __m256i bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Software prefetch of the block `ds_rp_prefetch` bytes ahead (defined in
 * repack_avx2.c; benchmarks change it), every line of its `bytes` */
extern int ds_rp_prefetch;
AI void prefetch_block(const uint8_t *g, size_t bytes) {
    for (size_t l = 0; l < bytes; l += 64) _mm_prefetch((const char *)(g + ds_rp_prefetch + l), _MM_HINT_T0);
}

/* bytes 8j..8j+7 of x (rows 0..7 of one sub-block) as i16 pairs [v0, v0, ...,
 * v7, v7] (unsigned bytes; from registers: a store and a narrower reload would
 * miss store forwarding) */
AI __m256i dup8_reg(__m256i x, const int j) {
    const __m256i ctl = _mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1,
                                         4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1);
    __m128i h = j < 2 ? _mm256_castsi256_si128(x) : _mm256_extracti128_si256(x, 1);
    if (j & 1) h = _mm_unpackhi_epi64(h, h);
    return _mm256_shuffle_epi8(_mm256_broadcastq_epi64(h), ctl);
}
/* bytes 8j..8j+7 of x as unsigned i32 lanes */
AI __m256i u8x8_reg(__m256i x, const int j) {
    __m128i h = j < 2 ? _mm256_castsi256_si128(x) : _mm256_extracti128_si256(x, 1);
    if (j & 1) h = _mm_unpackhi_epi64(h, h);
    return _mm256_cvtepu8_epi32(h);
}

/* two fields of 8 bytes (a: rows of sub-block 2i, b: of 2i + 1) -> i16
 * [a0, b0, a1, b1, ...], unsigned / signed */
AI __m256i pair8_u8(const uint8_t *a, const uint8_t *b) {
    return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)a), _mm_loadl_epi64((const __m128i *)b)));
}
AI __m256i pair8_s8(const uint8_t *a, const uint8_t *b) {
    return _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)a), _mm_loadl_epi64((const __m128i *)b)));
}

/* A Q4_K group block's 6-bit scales of sub-blocks 0..3 (half 0) or 4..7
 * (half 1), byte 8j + r = sub-block j (+ 4) of row r, from its bytes 32..127 */
AI __m256i q4k_scale_half(const uint8_t *g, const int half) {
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    const __m256i A = _mm256_loadu_si256((const __m256i *)(g + 32)), C = _mm256_loadu_si256((const __m256i *)(g + 96));
    return half ? _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(A, 4), m4),
                                  _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(C, 2), m3), 4))
                : _mm256_or_si256(_mm256_and_si256(A, m4), _mm256_slli_epi16(_mm256_and_si256(C, m3), 4));
}
AI void q4k_scales(const uint8_t *g, __m256i *lo, __m256i *hi) {
    *lo = q4k_scale_half(g, 0);
    *hi = q4k_scale_half(g, 1);
}
/* ... and its 6-bit mins, laid out the same way */
AI void q4k_mins(const uint8_t *g, __m256i *lo, __m256i *hi) {
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
    const __m256i B = _mm256_loadu_si256((const __m256i *)(g + 64)), C = _mm256_loadu_si256((const __m256i *)(g + 96));
    *lo = _mm256_or_si256(_mm256_and_si256(B, m4), _mm256_and_si256(C, m30));
    *hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(B, 4), m4), _mm256_and_si256(_mm256_srli_epi16(C, 2), m30));
}

/* A Q3_K group block's signed 6-bit scales, scb[8s + r] = scale of sub-block
 * s (0..15) of row r, from its bytes 16..111 */
AI void q3k_scale_table(const uint8_t *g, int8_t scb[128]) {
    const __m256i m3 = _mm256_set1_epi8(3), m15 = _mm256_set1_epi8(15), k32 = _mm256_set1_epi8(32);
    __m256i N0 = _mm256_loadu_si256((const __m256i *)(g + 16)), N1 = _mm256_loadu_si256((const __m256i *)(g + 48));
    __m256i H = _mm256_loadu_si256((const __m256i *)(g + 80));
    __m256i lo[4] = { _mm256_and_si256(N0, m15), _mm256_and_si256(N1, m15), _mm256_and_si256(_mm256_srli_epi16(N0, 4), m15),
                      _mm256_and_si256(_mm256_srli_epi16(N1, 4), m15) };
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        __m256i hi = _mm256_and_si256(k ? _mm256_srli_epi16(H, 2 * k) : H, m3);
        _mm256_storeu_si256((__m256i *)(scb + 32 * k), _mm256_sub_epi8(_mm256_or_si256(lo[k], _mm256_slli_epi16(hi, 4)), k32));
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
/* acc + Σ_i w[4l+i] · a[i] per i32 lane l, the 4 activation bytes at p
 * broadcast by vpdpbusd itself ({1to8} memory operand: GCC does not fold a
 * broadcast load into it, and a separate vpbroadcastd costs an issue slot per
 * product: IQ4_NL 19.2 -> 14.5 ns per row and token at 8 tokens, K = 2048) */
AI __m256i dpbusd_b(__m256i acc, __m256i w, const void *p) {
    __asm__("vpdpbusd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}
/* acc + Σ_i w16[2l+i] · a16[i] per i32 lane l, the i16 pair at p broadcast the same way */
AI __m256i dpwssd_b(__m256i acc, __m256i w, const void *p) {
    __asm__("vpdpwssd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}
#endif

#endif
