/*
 * ops_ref.c - plain scalar twins of the fast kernels, used by tests.
 * Slow on purpose: no threads, no ISA code, double accumulation.
 */
#include "ops.h"

#include <math.h>
#include <stdlib.h>

int ds_matmul_ref(float *y, int64_t ldy, const float *x, int64_t ldx,
                  const ds_tensor *w, int64_t r0, int64_t N, int64_t T) {
    int64_t K = ds_tensor_cols(w);
    float *row = malloc((size_t)K * sizeof(float));
    if (!row) return DS_ENOMEM;
    for (int64_t n = 0; n < N; n++) {
        ds_tensor_row_f32(w, r0 + n, 0, K, row);
        for (int64_t t = 0; t < T; t++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) s += (double)row[k] * x[t * ldx + k];
            y[t * ldy + n] = (float)s;
        }
    }
    free(row);
    return DS_OK;
}

int ds_matmul_t_ref(float *y, int64_t ldy, const float *x, int64_t ldx,
                    const ds_tensor *w, int64_t r0, int64_t N, int64_t T) {
    int64_t K = ds_tensor_cols(w);
    double *acc = calloc((size_t)K, sizeof(double));
    float *row = malloc((size_t)K * sizeof(float));
    if (!acc || !row) { free(acc); free(row); return DS_ENOMEM; }
    for (int64_t t = 0; t < T; t++) {
        for (int64_t k = 0; k < K; k++) acc[k] = 0.0;
        for (int64_t n = 0; n < N; n++) {
            ds_tensor_row_f32(w, r0 + n, 0, K, row);
            for (int64_t k = 0; k < K; k++) acc[k] += (double)x[t * ldx + n] * row[k];
        }
        for (int64_t k = 0; k < K; k++) y[t * ldy + k] = (float)acc[k];
    }
    free(acc);
    free(row);
    return DS_OK;
}

void ds_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                  float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) {
                float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                s += (double)a * b;
            }
            float prev = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
            C[i * ldc + j] = alpha * (float)s + prev;
        }
}

int ds_attn_rows_ref(float *u, int64_t ldu, const float *q, int64_t ldq, int64_t nq, const float *kv, int64_t W,
                     int64_t R, int64_t vis0, float scale) {
    double *p = malloc((size_t)(vis0 + nq) * sizeof(double));
    if (!p) return DS_ENOMEM;
    for (int64_t i = 0; i < nq; i++) {
        int64_t vis = vis0 + i + 1;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < vis; j++) {
            double d = 0.0;
            for (int64_t k = 0; k < W; k++) d += (double)q[i * ldq + k] * kv[j * W + k];
            p[j] = scale * d;
            if (p[j] > mx) mx = p[j];
        }
        for (int64_t j = 0; j < vis; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
        for (int64_t k = 0; k < R; k++) {
            double s = 0.0;
            for (int64_t j = 0; j < vis; j++) s += p[j] / sum * kv[j * W + k];
            u[i * ldu + k] = (float)s;
        }
    }
    free(p);
    return DS_OK;
}

int ds_mla_attn_ref(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H, const float *kv, int64_t W,
                    int64_t S, int64_t R, float scale) {
    for (int64_t h = 0; h < H; h++) {
        int rc = ds_attn_rows_ref(out + h * ldo, ldo, q + h * ldq, ldq, 1, kv, W, R, S - 1, scale);
        if (rc) return rc;
    }
    return DS_OK;
}

void ds_rmsnorm_ref(float *out, const float *x, const float *w, int64_t T, int64_t D, float eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * D;
        float *o = out + t * D;
        double ss = 0.0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
        for (int64_t i = 0; i < D; i++) o[i] = (xr[i] * inv) * w[i];
    }
}
