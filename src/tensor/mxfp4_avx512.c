/*
 * mxfp4_avx512.c - AVX-512 (F/BW/VL/DQ) twin of mxfp4_avx2.c's dot product
 * over ggml MXFP4 blocks read in place (mxfp4.h): two blocks per step, one
 * in each 256-bit half of a 512-bit accumulator. Each lane does what the
 * AVX2 kernel's lane does (the e2m1 value - here looked up in the whole
 * 16-entry signed table, the same bits as the AVX2 magnitude-and-sign - times
 * x, FMA'd over the block's 4 groups of 8 columns in column order), each half
 * is summed by ds_hsum256 and scaled, and the blocks are added to the total
 * one by one in column order: bit-identical to ds_mxfp4_dot_avx2 (and so to
 * the FP4 kernels on the repacked row). Used at core/cpu.h level avx512 and
 * above (ops.c); compared in tests/test_mxfp4.c.
 */
#include "mxfp4.h"
#include "fp4.h"

#include <immintrin.h>
#include "simd_hsum.h"

float ds_mxfp4_dot_avx512(const uint8_t *row, const float *x, int64_t K) {
    const __m512 tab = _mm512_loadu_ps(ds_fp4_e2m1_values);
    const __m512i m15 = _mm512_set1_epi32(15);
    const int64_t nb = K / DS_MXFP4_BLOCK;
    float total = 0.0f;
    for (int64_t b = 0; b < nb; b += 2) {
        /* blocks b and b+1 (the last one alone: b twice, its second half dropped) */
        int64_t b2 = b + 1 < nb ? b + 1 : b;
        const uint8_t *ba = row + b * DS_MXFP4_BLOCK_BYTES, *bb = row + b2 * DS_MXFP4_BLOCK_BYTES;
        __m128i qa = _mm_loadu_si128((const __m128i *)(ba + 1)), qb = _mm_loadu_si128((const __m128i *)(bb + 1));
        __m512i lo = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(qa, qb));   /* bytes 0..7 of a, of b */
        __m512i hi = _mm512_cvtepu8_epi32(_mm_unpackhi_epi64(qa, qb));   /* bytes 8..15 */
        __m512i codes[4] = { _mm512_and_si512(lo, m15), _mm512_and_si512(hi, m15), _mm512_srli_epi32(lo, 4),
                             _mm512_srli_epi32(hi, 4) };
        const float *xa = x + b * DS_MXFP4_BLOCK, *xb = x + b2 * DS_MXFP4_BLOCK;
        __m512 acc = _mm512_setzero_ps();
        for (int g = 0; g < 4; g++) {
            __m512 xv = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(xa + 8 * g)), _mm256_loadu_ps(xb + 8 * g), 1);
            acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(codes[g], tab), xv, acc);
        }
        total += ds_hsum256(_mm512_castps512_ps256(acc)) * ds_e8m0_to_f32(ba[0]);
        if (b2 != b) total += ds_hsum256(_mm512_extractf32x8_ps(acc, 1)) * ds_e8m0_to_f32(bb[0]);
    }
    return total;
}
