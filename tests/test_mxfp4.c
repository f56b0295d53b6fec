/*
 * test_mxfp4.c - MXFP4 blocks read in place (tensor/mxfp4.h): the row and
 * dot kernels (reference and AVX2) against the FP4 path on the repacked
 * copy, bit for bit, on random blocks with every code and every scale byte
 * 0..254 (0xff: NaN in both paths), the AVX-512 dot against the AVX2 one,
 * and ds_matmul on a DS_DTYPE_MXFP4 tensor (decode per token, prefill by
 * panels; at the detected level, avx2 and generic) against the
 * same matmul on the repacked F4_E2M1 tensor: the same bits, so a GGUF's
 * MXFP4 experts and the folder's FP4 ones give the same logits
 * (test_gguf_v4.c checks that end to end).
 */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "tensor/fp4.h"
#include "tensor/mxfp4.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

/* equal bits, or both NaN */
static bool same(float a, float b) { return memcmp(&a, &b, 4) == 0 || (isnan(a) && isnan(b)); }

static int64_t first_diff(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!same(a[i], b[i])) return i;
    return -1;
}

/* N rows of K values: random code bytes; row i's block b has scale byte
 * (i + b) % 255, so N = 255 rows cover every finite scale byte */
static uint8_t *random_blocks(ds_rng *r, int64_t N, int64_t K) {
    int64_t nb = K / DS_MXFP4_BLOCK;
    uint8_t *w = malloc((size_t)(N * nb * DS_MXFP4_BLOCK_BYTES));
    for (int64_t i = 0; i < N; i++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *blk = w + (i * nb + b) * DS_MXFP4_BLOCK_BYTES;
            blk[0] = (uint8_t)((i + b) % 255);
            for (int j = 1; j < DS_MXFP4_BLOCK_BYTES; j++) blk[j] = (uint8_t)ds_rng_u64(r);
        }
    return w;
}

TEST(mxfp4_kernels_vs_fp4_path) {
    ds_rng r;
    ds_rng_seed(&r, 19);
    const int64_t N = 255, K = 96, nb = K / DS_MXFP4_BLOCK, rb = nb * DS_MXFP4_BLOCK_BYTES;
    uint8_t *w = random_blocks(&r, N, K);
    /* every code in every nibble position (low/high) appears */
    int seen[2][16] = { { 0 } };
    for (int64_t i = 0; i < N * nb; i++)
        for (int j = 1; j < DS_MXFP4_BLOCK_BYTES; j++)
            seen[0][w[i * DS_MXFP4_BLOCK_BYTES + j] & 15] = seen[1][w[i * DS_MXFP4_BLOCK_BYTES + j] >> 4] = 1;
    for (int c = 0; c < 16; c++) CHECK_MSG(seen[0][c] && seen[1][c], "code %d not covered", c);
    uint8_t *q = malloc((size_t)(N * K / 2)), *s = malloc((size_t)(N * nb));
    ds_mxfp4_to_e2m1(w, N * nb, q, s);
    float *x = malloc(sizeof(float) * (size_t)K), *a = malloc(sizeof(float) * (size_t)K), *b = malloc(sizeof(float) * (size_t)K);
    for (int64_t i = 0; i < K; i++) x[i] = ds_rng_normal(&r);
    for (int64_t i = 0; i < N; i++) {
        const uint8_t *row = w + i * rb, *qr = q + i * (K / 2), *sr = s + i * nb;
        /* dequantized: the reference dequantizer, the FP4 row, the AVX2 twin */
        ds_mxfp4_row_ref(row, 0, K, a);
        ds_mxfp4_dequant_ref(row, nb, b);
        CHECK_MSG(first_diff(a, b, K) < 0, "row %lld: row_ref vs dequant_ref", (long long)i);
        ds_fp4_row_ref(qr, sr, 32, 0, K, b);
        CHECK_MSG(first_diff(a, b, K) < 0, "row %lld: vs the FP4 row of the repacked copy", (long long)i);
        ds_mxfp4_row_ref(row, 37, 40, b);   /* a column range across blocks */
        CHECK_MSG(first_diff(a + 37, b, 40) < 0, "row %lld: columns 37..76", (long long)i);
        float d0 = ds_mxfp4_dot_ref(row, x, K), f0 = ds_fp4_dot_ref(qr, sr, 32, x, K);
        CHECK_MSG(same(d0, f0), "row %lld: dot_ref %a vs the FP4 dot_ref %a", (long long)i, d0, f0);
        if (ds_ops_simd()) {
            ds_mxfp4_row_avx2(row, K, b);
            CHECK_MSG(first_diff(a, b, K) < 0, "row %lld: row_avx2 vs row_ref", (long long)i);
            float d1 = ds_mxfp4_dot_avx2(row, x, K), f1 = ds_fp4_dot_avx2(qr, sr, 32, x, K);
            CHECK_MSG(same(d1, f1), "row %lld: dot_avx2 %a vs the FP4 dot_avx2 %a", (long long)i, d1, f1);
            if (ds_ops_has_avx512()) {   /* two blocks per step; K = 96 ends on a lone block */
                float d2 = ds_mxfp4_dot_avx512(row, x, K), d3 = ds_mxfp4_dot_avx512(row, x, 64);
                CHECK_MSG(same(d2, d1), "row %lld: dot_avx512 %a vs dot_avx2 %a", (long long)i, d2, d1);
                CHECK_MSG(same(d3, ds_mxfp4_dot_avx2(row, x, 64)), "row %lld: dot_avx512 K=64", (long long)i);
            }
            /* and the value itself, where finite: within fp32 rounding of the exact sum */
            double ex = 0, mag = 0;
            for (int64_t j = 0; j < K; j++) ex += (double)a[j] * x[j], mag += fabs((double)a[j] * x[j]);
            if (isfinite(mag) && mag < 1e37)
                CHECK_MSG(fabs(d1 - ex) <= 1e-6 * mag + 1e-40 && fabs(d0 - ex) <= 1e-6 * mag + 1e-40,
                          "row %lld: avx2 %g ref %g exact %g", (long long)i, d1, d0, ex);
        }
    }
    /* scale byte 0xff: NaN (OCP MX, fp4.h), in every path */
    uint8_t blk[DS_MXFP4_BLOCK_BYTES] = { 0xff, 0x21 };
    float v[32], ones[32];
    for (int j = 0; j < 32; j++) ones[j] = 1.0f;
    ds_mxfp4_row_ref(blk, 0, 32, v);
    CHECK(isnan(v[0]) && isnan(v[16]));
    CHECK(isnan(ds_mxfp4_dot_ref(blk, ones, 32)));
    if (ds_ops_simd()) CHECK(isnan(ds_mxfp4_dot_avx2(blk, ones, 32)));
    /* one known block: qs[0] = 0x21 -> column 0 = code 1 (0.5), column 16 = code 2 (1.0); scale 2^2 */
    uint8_t k1[DS_MXFP4_BLOCK_BYTES] = { 129, 0x21, 0x9f };
    ds_mxfp4_row_ref(k1, 0, 32, v);
    CHECK(v[0] == 2.0f && v[16] == 4.0f && v[1] == -24.0f && v[17] == -2.0f && v[2] == 0.0f);
    free(w), free(q), free(s), free(x), free(a), free(b);
}

/* ds_matmul / ds_matmul_ref on an MXFP4 tensor against the repacked F4_E2M1
 * tensor: decode (per token), a few tokens, prefill (dequantized panels),
 * at the detected level, avx2 and generic: the same bits */
TEST(mxfp4_matmul_dispatch) {
    ds_rng r;
    ds_rng_seed(&r, 23);
    const int64_t N = 72, K = 128, nb = K / DS_MXFP4_BLOCK, Ts[] = { 1, 3, 40 };
    uint8_t *w = random_blocks(&r, N, K);
    for (int64_t i = 0; i < N * nb; i++) w[i * DS_MXFP4_BLOCK_BYTES] = (uint8_t)(119 + ds_rng_u64(&r) % 13);
    uint8_t *q = malloc((size_t)(N * K / 2)), *s = malloc((size_t)(N * nb));
    ds_mxfp4_to_e2m1(w, N * nb, q, s);
    ds_tensor mx = { .name = "mxfp4", .dtype = DS_DTYPE_MXFP4, .ndim = 2, .shape = { N, K }, .data = w,
                     .nbytes = (size_t)(N * nb * DS_MXFP4_BLOCK_BYTES) };
    ds_tensor f4 = { .name = "fp4", .dtype = DS_DTYPE_F4_E2M1, .ndim = 2, .shape = { N, K }, .data = q,
                     .nbytes = (size_t)(N * K / 2), .scale_e8m0 = s, .scale_rows = N, .scale_cols = nb, .block_r = 1,
                     .block_c = 32 };
    for (int lv = 0; lv < 3; lv++) {   /* detected level, avx2, generic */
        ds_ops_force_avx2(lv == 1);
        ds_ops_force_generic(lv == 2);
        const char *lname = lv == 2 ? "generic" : ds_ops_isa();
        for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++) {
            int64_t T = Ts[t];
            float *x = malloc(sizeof(float) * (size_t)(T * K)), *y = malloc(sizeof(float) * (size_t)(T * N));
            float *yf = malloc(sizeof(float) * (size_t)(T * N));
            for (int64_t i = 0; i < T * K; i++) x[i] = ds_rng_normal(&r);
            ds_matmul(y, N, x, K, &mx, 0, N, T);
            ds_matmul(yf, N, x, K, &f4, 0, N, T);
            CHECK_MSG(first_diff(y, yf, T * N) < 0, "%s T=%lld: MXFP4 vs FP4 matmul differ at %lld",
                      lname, (long long)T, (long long)first_diff(y, yf, T * N));
            ds_matmul(y, N, x, K, &mx, 8, 24, T);   /* a row range */
            ds_matmul(yf, N, x, K, &f4, 8, 24, T);
            for (int64_t i = 0; i < T; i++)
                CHECK_MSG(first_diff(y + i * N, yf + i * N, 24) < 0, "T=%lld token %lld: rows 8..31", (long long)T,
                          (long long)i);
            CHECK(ds_matmul_ref(y, N, x, K, &mx, 0, N, T) == DS_OK);
            CHECK(ds_matmul_ref(yf, N, x, K, &f4, 0, N, T) == DS_OK);
            CHECK_MSG(first_diff(y, yf, T * N) < 0, "T=%lld: reference matmuls differ", (long long)T);
            free(x), free(y), free(yf);
        }
    }
    ds_ops_force_generic(false);
    ds_ops_force_avx2(false);
    free(w), free(q), free(s);
}
