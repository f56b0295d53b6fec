/*
 * test_matmul_t_quant.c - ds_matmul_t (y = x · W, ops.c) on a block-quantized
 * W equals, bit for bit, ds_matmul_t on the F32 tensor holding W's reference
 * dequantization (ds_dequant_row_ref): the sgemm form dequantizes W's rows
 * into a panel first, with the AVX2 dequantization for Q8_0/Q4_0/Q5_0 (a
 * prefill's c · W_UKᵀ), and that panel must hold the reference's values.
 */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "tensor/ops.h"
#include "tensor/quant.h"

TEST(matmul_t_quant_panel_bits) {
    static const ds_dtype dts[] = { DS_DTYPE_Q8_0, DS_DTYPE_Q4_0, DS_DTYPE_Q5_0 };
    /* W (N, K), rows [R0, R0 + NR) used; K in blocks of 32: the column chunks
     * of 1 and 2 threads whole blocks (128, 192: the fast dequantization) or
     * not (160 at 2 threads: the reference one) */
    static const int64_t Ks[] = { 128, 192, 160 };
    enum { N = 72, KMAX = 192, T = 40, R0 = 5, NR = 61 };
    ds_rng r;
    ds_rng_seed(&r, 77);
    float *wf = malloc(sizeof(float) * N * KMAX), *x = malloc(sizeof(float) * T * NR);
    float *yq = malloc(sizeof(float) * T * KMAX), *yf = malloc(sizeof(float) * T * KMAX);
    for (int64_t i = 0; i < T * NR; i++) x[i] = ds_rng_normal(&r);
    for (size_t c = 0; c < 3 * sizeof dts / sizeof dts[0]; c++) {
        ds_dtype dt = dts[c / 3];
        int64_t K = Ks[c % 3];
        size_t rb = ds_dtype_row_bytes(dt, K);
        uint8_t *wq = malloc(rb * N);
        float row[KMAX];
        for (int64_t n = 0; n < N; n++) {
            for (int64_t k = 0; k < K; k++) row[k] = ds_rng_normal(&r) * (1.0f + (float)(n % 3));
            ds_quantize_row_ref(dt, row, wq + rb * (size_t)n, K);
            ds_dequant_row_ref(dt, wq + rb * (size_t)n, wf + n * K, K);
        }
        ds_tensor tq, tf;
        memset(&tq, 0, sizeof tq);
        tq.name = "wq";
        tq.dtype = dt;
        tq.ndim = 2;
        tq.shape[0] = N;
        tq.shape[1] = K;
        tq.data = wq;
        tf = tq;
        tf.name = "wf";
        tf.dtype = DS_DTYPE_F32;
        tf.data = wf;
        memset(yq, 0xff, sizeof(float) * T * K);
        memset(yf, 0, sizeof(float) * T * K);
        ds_matmul_t(yq, K, x, NR, &tq, R0, NR, T);
        ds_matmul_t(yf, K, x, NR, &tf, R0, NR, T);
        int bad = 0;
        for (int64_t i = 0; i < T * K; i++) bad += memcmp(&yq[i], &yf[i], sizeof(float)) != 0;
        CHECK_MSG(bad == 0, "%s K=%lld: %d of %lld outputs differ from the F32 matmul_t of the reference dequantization",
                  ds_dtype_name(dt), (long long)K, bad, (long long)(T * K));
        free(wq);
    }
    free(wf); free(x); free(yq); free(yf);
}
