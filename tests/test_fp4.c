/*
 * test_fp4.c - FP4 e2m1 rows (tensor/fp4.h, DeepSeek-V4's routed experts):
 * the value table against the e2m1 formula, e8m0 scales, the nibble order,
 * the AVX2 kernels against their reference twins, and ds_matmul on an
 * F4_E2M1 tensor (decode and prefill paths) against the reference matmul.
 * The model-level check against transformers is tiny-v4-fp8 (test_model.c).
 */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "tensor/fp4.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

/* e2m1 by its definition: sign, 2 exponent bits (bias 1), 1 mantissa bit;
 * exponent 0 is subnormal (0 or 0.5) */
static float e2m1_formula(int nib) {
    int s = nib >> 3, e = (nib >> 1) & 3, m = nib & 1;
    float v = e == 0 ? 0.5f * (float)m : ldexpf(1.0f + 0.5f * (float)m, e - 1);
    return s ? -v : v;
}

TEST(fp4_table_and_scales) {
    for (int n = 0; n < 16; n++) {
        CHECK_MSG(ds_fp4_e2m1_values[n] == e2m1_formula(n), "nibble %d: %g vs %g", n, ds_fp4_e2m1_values[n],
                  e2m1_formula(n));
        CHECK_MSG((signbit(ds_fp4_e2m1_values[n]) != 0) == (n >= 8), "nibble %d sign", n);
    }
    CHECK(ds_e8m0_to_f32(127) == 1.0f);
    CHECK(ds_e8m0_to_f32(128) == 2.0f);
    CHECK(ds_e8m0_to_f32(120) == 0x1p-7f);
    CHECK(ds_e8m0_to_f32(254) == 0x1p127f);
    CHECK(ds_e8m0_to_f32(1) == 0x1p-126f);
    CHECK(ds_e8m0_to_f32(0) == 0x1p-127f);
    CHECK(isnan(ds_e8m0_to_f32(255)));
    /* column 2j is the low nibble of byte j: 0x21 = [1 -> 0.5, 2 -> 1.0], 0x9f = [-6, -0.5] */
    uint8_t q[2] = { 0x21, 0x9f }, s[1] = { 129 };   /* scale 2^2 */
    float out[4];
    ds_fp4_row_ref(q, s, 32, 0, 4, out);
    CHECK(out[0] == 2.0f && out[1] == 4.0f && out[2] == -24.0f && out[3] == -2.0f);
    ds_fp4_row_ref(q, s, 32, 1, 2, out);   /* from an odd column */
    CHECK(out[0] == 4.0f && out[1] == -24.0f);
}

static void fill(ds_rng *r, uint8_t *q, uint8_t *s, int64_t N, int64_t K, int block) {
    for (int64_t i = 0; i < N * K / 2; i++) q[i] = (uint8_t)ds_rng_u64(r);
    int64_t sc = (K + block - 1) / block;
    for (int64_t i = 0; i < N * sc; i++) s[i] = (uint8_t)(119 + ds_rng_u64(r) % 13);   /* 2^-8 .. 2^4 */
}

TEST(fp4_avx2_vs_ref) {
    if (!ds_ops_simd()) return;
    ds_rng r;
    ds_rng_seed(&r, 7);
    static const int64_t Ks[] = { 2, 30, 32, 64, 96, 100, 2048 };
    for (size_t k = 0; k < sizeof Ks / sizeof *Ks; k++) {
        int64_t K = Ks[k];
        uint8_t *q = malloc((size_t)K / 2), *s = malloc((size_t)(K / 32 + 1));
        float *x = malloc(sizeof(float) * (size_t)K);
        float *a = malloc(sizeof(float) * (size_t)K), *b = malloc(sizeof(float) * (size_t)K);
        fill(&r, q, s, 1, K, 32);
        for (int64_t i = 0; i < K; i++) x[i] = ds_rng_normal(&r);
        /* dequantized rows: exact, so bit-identical */
        ds_fp4_row_ref(q, s, 32, 0, K, a);
        ds_fp4_row_avx2(q, s, 32, K, b);
        CHECK_MSG(memcmp(a, b, sizeof(float) * (size_t)K) == 0, "K=%lld: dequantized rows differ", (long long)K);
        /* dots: the same products, another summation order */
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < K; i++) ref += (double)a[i] * x[i], mag += fabs((double)a[i] * x[i]);
        float d0 = ds_fp4_dot_ref(q, s, 32, x, K), d1 = ds_fp4_dot_avx2(q, s, 32, x, K);
        CHECK_MSG(fabs(d0 - ref) <= 1e-6 * mag + 1e-30 && fabs(d1 - ref) <= 1e-6 * mag + 1e-30,
                  "K=%lld: ref %g avx2 %g exact %g", (long long)K, d0, d1, ref);
        free(q), free(s), free(x), free(a), free(b);
    }
}

/* ds_matmul on an F4_E2M1 tensor (the decode path per token, the prefill
 * path by dequantized panels) against ds_matmul_ref on the same view */
TEST(fp4_matmul_dispatch) {
    ds_rng r;
    ds_rng_seed(&r, 11);
    const int64_t N = 40, K = 96, Ts[] = { 1, 3, 40 };
    uint8_t *q = malloc((size_t)(N * K / 2)), *s = malloc((size_t)(N * K / 32));
    fill(&r, q, s, N, K, 32);
    ds_tensor w = { .name = "fp4", .dtype = DS_DTYPE_F4_E2M1, .ndim = 2, .shape = { N, K }, .data = q,
                    .nbytes = (size_t)(N * K / 2), .scale_e8m0 = s, .scale_rows = N, .scale_cols = K / 32, .block_r = 1,
                    .block_c = 32 };
    for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++) {
        int64_t T = Ts[t];
        float *x = malloc(sizeof(float) * (size_t)(T * K)), *y = malloc(sizeof(float) * (size_t)(T * N));
        float *yr = malloc(sizeof(float) * (size_t)(T * N));
        for (int64_t i = 0; i < T * K; i++) x[i] = ds_rng_normal(&r);
        ds_matmul(y, N, x, K, &w, 0, N, T);
        CHECK(ds_matmul_ref(yr, N, x, K, &w, 0, N, T) == DS_OK);
        double worst = 0;
        for (int64_t i = 0; i < T * N; i++) worst = fmax(worst, fabs((double)y[i] - yr[i]) / (1.0 + fabs(yr[i])));
        CHECK_MSG(worst < 1e-4, "T=%lld: matmul vs reference %g", (long long)T, worst);
        free(x), free(y), free(yr);
    }
    free(q), free(s);
}
