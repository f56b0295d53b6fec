/*
 * bench_mxfp4.c - times the MXFP4 kernels reading ggml blocks in place
 * (tensor/mxfp4.h) against the FP4 kernels on the repacked copy
 * (tensor/fp4.h, the path before) at DeepSeek-V4-Flash's expert shape
 * (rows of K = 4096, the gate/up projections): a gemv (one dot per row, the
 * decode path) and row dequantization (the prefill panels), over 2048 rows
 * (one expert, ~4.3 MB, cache-resident) and 32768 rows (16 experts, ~70 MB,
 * from memory). One thread, thread CPU time, the two versions alternated,
 * median of 9. A manual measurement, not a test; needs AVX2 + FMA.
 *
 *   make lib && cc -O2 -Isrc tools/bench_mxfp4.c build/libdeepseek.a -fopenmp -ljansson \
 *      -lpcre2-8 -lopenblas -lm -lpthread -lmpi -o build/bench_mxfp4 && build/bench_mxfp4
 */
#include "core/rng.h"
#include "tensor/fp4.h"
#include "tensor/mxfp4.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum { REPS = 9 };

int main(void) {
    const int64_t K = 4096, nb = K / DS_MXFP4_BLOCK, Ns[] = { 2048, 32768 };
    ds_rng r;
    ds_rng_seed(&r, 1);
    float *x = malloc(sizeof(float) * (size_t)K), *row = malloc(sizeof(float) * (size_t)K);
    for (int64_t i = 0; i < K; i++) x[i] = ds_rng_normal(&r);
    printf("rows x K=%lld, 1 thread, thread CPU ms (median of %d)   MXFP4 in place | FP4 repacked\n", (long long)K, REPS);
    for (int n = 0; n < 2; n++) {
        int64_t N = Ns[n];
        uint8_t *w = malloc((size_t)(N * nb * DS_MXFP4_BLOCK_BYTES));
        for (int64_t i = 0; i < N * nb; i++) {
            uint8_t *blk = w + i * DS_MXFP4_BLOCK_BYTES;
            blk[0] = (uint8_t)(119 + ds_rng_u64(&r) % 13);
            for (int j = 1; j < DS_MXFP4_BLOCK_BYTES; j++) blk[j] = (uint8_t)ds_rng_u64(&r);
        }
        uint8_t *q = malloc((size_t)(N * K / 2)), *s = malloc((size_t)(N * nb));
        ds_mxfp4_to_e2m1(w, N * nb, q, s);
        double t[5][REPS], sink = 0;
        for (int rep = 0; rep < REPS; rep++) {
            double t0 = cpu_now();
            for (int64_t i = 0; i < N; i++) sink += ds_mxfp4_dot_avx2(w + i * nb * DS_MXFP4_BLOCK_BYTES, x, K);
            double t1 = cpu_now();
            for (int64_t i = 0; i < N; i++) sink += ds_fp4_dot_avx2(q + i * (K / 2), s + i * nb, 32, x, K);
            double t2 = cpu_now();
            for (int64_t i = 0; i < N; i++) ds_mxfp4_row_avx2(w + i * nb * DS_MXFP4_BLOCK_BYTES, K, row), sink += row[i % K];
            double t3 = cpu_now();
            for (int64_t i = 0; i < N; i++) ds_fp4_row_avx2(q + i * (K / 2), s + i * nb, 32, K, row), sink += row[i % K];
            double t4 = cpu_now();
            for (int64_t i = 0; i < N; i++) sink += ds_mxfp4_dot_avx512(w + i * nb * DS_MXFP4_BLOCK_BYTES, x, K);
            double t5 = cpu_now();
            t[0][rep] = t1 - t0, t[1][rep] = t2 - t1, t[2][rep] = t3 - t2, t[3][rep] = t4 - t3, t[4][rep] = t5 - t4;
        }
        for (int k = 0; k < 5; k++) qsort(t[k], REPS, sizeof(double), cmp);
        printf("%6lld rows  gemv %7.3f | %7.3f ms (AVX-512 in place %7.3f)   dequant rows %7.3f | %7.3f ms   (sink %g)\n",
               (long long)N, 1e3 * t[0][REPS / 2], 1e3 * t[1][REPS / 2], 1e3 * t[4][REPS / 2], 1e3 * t[2][REPS / 2],
               1e3 * t[3][REPS / 2], sink);
        free(w), free(q), free(s);
    }
    free(x), free(row);
    return 0;
}
