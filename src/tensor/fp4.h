/*
 * fp4.h - FP4 e2m1 weights (DeepSeek-V4's routed experts, the OCP MXFP4
 * element type): two values per byte, column 2j in the low nibble of byte j
 * and column 2j+1 in the high nibble; a nibble is s.ee.m with values
 *   0, 0.5, 1, 1.5, 2, 3, 4, 6 (and the same negated, bit 3 the sign).
 * Each row carries one scale per `block` (32) consecutive columns, a power of
 * two stored as one float8_e8m0fnu byte b = 127 + log2(scale), kept as
 * stored (the tensor's scale_e8m0 view; the kernels expand it per block):
 *   W[i][j] = e2m1(nibble(i, j)) · 2^(b[i][j / block] - 127)
 * Products with a power of two are exact in fp32, so dequantizing is exact;
 * the kernels differ from the reference only in summation order.
 *
 * Fast kernels (fp4_avx2.c) have plain twins here, compared in
 * tests/test_fp4.c.
 */
#ifndef DS_FP4_H
#define DS_FP4_H

#include <math.h>
#include <stdint.h>

/* the 16 e2m1 values by nibble */
extern const float ds_fp4_e2m1_values[16];

/* out[i] = W[c0 + i] for i < n, of one packed row q with its scales srow. */
void ds_fp4_row_ref(const uint8_t *q, const uint8_t *srow, int block, int64_t c0, int64_t n, float *out);
/* Σ_j W[j]·x[j] over one row of K values (K even), in column order. */
float ds_fp4_dot_ref(const uint8_t *q, const uint8_t *srow, int block, const float *x, int64_t K);

/* float8_e8m0fnu -> fp32: 2^(e - 127); 0xff (NaN) gives NaN. */
static inline float ds_e8m0_to_f32(uint8_t e) {
    union { uint32_t u; float f; } c = { (uint32_t)e << 23 };
    return e == 0xff ? NAN : e ? c.f : 0x1p-127f;   /* e = 0: 2^-127, subnormal in fp32 */
}

/* AVX2 twins (fp4_avx2.c; only when the CPU has AVX2 + FMA). block must be
 * a multiple of 8 for the vector loop; any K even works. */
float ds_fp4_dot_avx2(const uint8_t *q, const uint8_t *srow, int block, const float *x, int64_t K);
void ds_fp4_row_avx2(const uint8_t *q, const uint8_t *srow, int block, int64_t K, float *out);

#endif
