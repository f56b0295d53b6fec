/*
 * simd_hsum.h - the horizontal sum of 8 floats with AVX2, shared by the
 * AVX2 kernel files (ops_avx2.c, quant_avx2.c, quant_ext_avx2.c). One
 * fixed order of additions, so every kernel that uses it rounds the same
 * way: (lo + hi) pairwise, then the two remaining pairs. Header-only so
 * each caller inlines it into its own AVX2 code.
 */
#ifndef DS_SIMD_HSUM_H
#define DS_SIMD_HSUM_H

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static inline float ds_hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}
#endif

#endif
