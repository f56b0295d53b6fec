/*
 * mxfp4_avx2.c - AVX2 + FMA kernels over ggml MXFP4 blocks read in place
 * (mxfp4.h). A block's 16 code bytes give columns 0..7 / 8..15 (low
 * nibbles of bytes 0..7 / 8..15) and 16..23 / 24..31 (their high nibbles);
 * each group of 8 is looked up as fp4_avx2.c does (magnitude by lane
 * permute, sign bit xor'ed in) and the four groups are FMA'd in column
 * order into one accumulator, summed and scaled once per block: the
 * operations, in the same order, of ds_fp4_dot_avx2 with block 32.
 */
#include "mxfp4.h"
#include "fp4.h"

#include <immintrin.h>
#include "simd_hsum.h"

/* the e2m1 values of 8 codes (one per 32-bit lane, 0..15) */
static inline __m256 lookup8(__m256i v, __m256 mag) {
    __m256 m = _mm256_permutevar8x32_ps(mag, v);
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(8)), 28);
    return _mm256_xor_ps(m, _mm256_castsi256_ps(sign));
}

/* the 32 values of block blk as 4 vectors of 8, columns 0..7, .., 24..31 */
static inline void load32(const uint8_t *blk, __m256 mag, __m256 v[4]) {
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + 1));
    __m256i lo = _mm256_cvtepu8_epi32(q), hi = _mm256_cvtepu8_epi32(_mm_srli_si128(q, 8));
    const __m256i m15 = _mm256_set1_epi32(15);
    v[0] = lookup8(_mm256_and_si256(lo, m15), mag);
    v[1] = lookup8(_mm256_and_si256(hi, m15), mag);
    v[2] = lookup8(_mm256_srli_epi32(lo, 4), mag);
    v[3] = lookup8(_mm256_srli_epi32(hi, 4), mag);
}

float ds_mxfp4_dot_avx2(const uint8_t *row, const float *x, int64_t K) {
    const __m256 mag = _mm256_loadu_ps(ds_fp4_e2m1_values);
    float total = 0.0f;
    for (int64_t b0 = 0; b0 < K; b0 += DS_MXFP4_BLOCK) {
        const uint8_t *blk = row + (b0 / DS_MXFP4_BLOCK) * DS_MXFP4_BLOCK_BYTES;
        __m256 v[4];
        load32(blk, mag, v);
        __m256 a = _mm256_setzero_ps();
        for (int g = 0; g < 4; g++) a = _mm256_fmadd_ps(v[g], _mm256_loadu_ps(x + b0 + 8 * g), a);
        total += ds_hsum256(a) * ds_e8m0_to_f32(blk[0]);
    }
    return total;
}

void ds_mxfp4_row_avx2(const uint8_t *row, int64_t K, float *out) {
    const __m256 mag = _mm256_loadu_ps(ds_fp4_e2m1_values);
    for (int64_t b0 = 0; b0 < K; b0 += DS_MXFP4_BLOCK) {
        const uint8_t *blk = row + (b0 / DS_MXFP4_BLOCK) * DS_MXFP4_BLOCK_BYTES;
        __m256 v[4], d = _mm256_set1_ps(ds_e8m0_to_f32(blk[0]));
        load32(blk, mag, v);
        for (int g = 0; g < 4; g++) _mm256_storeu_ps(out + b0 + 8 * g, _mm256_mul_ps(v[g], d));
    }
}
