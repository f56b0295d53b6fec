/*
 * fp4_avx2.c - AVX2 + FMA kernels for FP4 e2m1 rows (fp4.h): 8 values at a
 * time, the magnitude looked up with a lane permute from the 8-entry table
 * and the sign bit xor'ed in; the scale (a power of two) is applied once per
 * block to the block's partial sum, which is exact.
 */
#include "fp4.h"

#include <immintrin.h>
#include "simd_hsum.h"

/* the 8 values of bytes q[0..3]: columns 2j (low nibble) and 2j+1 (high) */
static inline __m256 load8(const uint8_t *q, __m256 mag) {
    int32_t w;
    __builtin_memcpy(&w, q, 4);
    __m128i b = _mm_shuffle_epi8(_mm_cvtsi32_si128(w), _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, -1, -1, -1, -1, -1, -1, -1, -1));
    __m256i v = _mm256_cvtepu8_epi32(b);
    v = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4)), _mm256_set1_epi32(15));
    __m256 m = _mm256_permutevar8x32_ps(mag, v);
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(8)), 28);
    return _mm256_xor_ps(m, _mm256_castsi256_ps(sign));
}

static inline float scalar_at(const uint8_t *q, int64_t j) {
    uint8_t b = q[j >> 1];
    return ds_fp4_e2m1_values[(j & 1) ? b >> 4 : b & 15];
}

float ds_fp4_dot_avx2(const uint8_t *q, const uint8_t *srow, int block, const float *x, int64_t K) {
    const __m256 mag = _mm256_loadu_ps(ds_fp4_e2m1_values);
    float total = 0.0f;
    for (int64_t b0 = 0; b0 < K; b0 += block) {
        int64_t b1 = b0 + block < K ? b0 + block : K, i = b0;
        __m256 a = _mm256_setzero_ps();
        if (b0 % 8 == 0)
            for (; i + 8 <= b1; i += 8) a = _mm256_fmadd_ps(load8(q + i / 2, mag), _mm256_loadu_ps(x + i), a);
        float s = ds_hsum256(a);
        for (; i < b1; i++) s += scalar_at(q, i) * x[i];
        total += s * ds_e8m0_to_f32(srow[b0 / block]);
    }
    return total;
}

void ds_fp4_row_avx2(const uint8_t *q, const uint8_t *srow, int block, int64_t K, float *out) {
    const __m256 mag = _mm256_loadu_ps(ds_fp4_e2m1_values);
    int64_t i = 0;
    if (block % 8 == 0)
        for (; i + 8 <= K; i += 8)
            _mm256_storeu_ps(out + i, _mm256_mul_ps(load8(q + i / 2, mag), _mm256_set1_ps(ds_e8m0_to_f32(srow[i / block]))));
    for (; i < K; i++) out[i] = scalar_at(q, i) * ds_e8m0_to_f32(srow[i / block]);
}
