/*
 * bench_x8_kernels.c - times the x8 kernels (tensor/repack.h) against the
 * generic one-row kernel of the same type (quant_ext_avx2.c / quant_avx2.c):
 * ns per weight row of K = 2048 and per token, 1, 4, 8, 16, 32 and 64 tokens
 * (the AVX2 kernels take 4 per call, the VNNI ones of repack_avx512.c and
 * repack_ext_avx512.c a whole token tile of up to 64, as ops.c calls them;
 * for repack_avx512.c's types the 8 tokens also as two 4-token calls, the
 * kernels it had before its 8-token ones), best of 20 passes over 1024 rows
 * (random blocks; 1 thread; thread CPU time, so other load on the machine
 * matters less). A manual measurement, not a test. Needs an AVX2
 * CPU; the VNNI column needs avx512vnni (core/cpu.h level, DS_ISA lowers it).
 *
 *   make lib && cc -O2 -Isrc tools/bench_x8_kernels.c build/libdeepseek.a -fopenmp -ljansson \
 *      -lpcre2-8 -lopenblas -lm -lpthread -lmpi -o build/bench_x8_kernels && build/bench_x8_kernels
 *
 * llama.cpp's one-row kernels for comparison: tools/bench_ggml_vec_dot.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cpu.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/quant_isa.h"
#include "tensor/repack.h"
#include "tensor/tensor.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(void) {
    if (!ds_ops_simd()) { fprintf(stderr, "needs AVX2\n"); return 1; }
    static const ds_dtype ts[] = { DS_DTYPE_Q4_K, DS_DTYPE_Q6_K, DS_DTYPE_Q8_0, DS_DTYPE_Q4_0, DS_DTYPE_Q5_0,
                                   DS_DTYPE_Q2_K, DS_DTYPE_Q3_K, DS_DTYPE_IQ2_XXS, DS_DTYPE_IQ4_NL };
    enum { K = 2048, N = 1024 };
    const bool vnni = ds_isa_level() >= DS_ISA_AVX512_VNNI;
    static float x[64][K];
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < K; j++) x[i][j] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
        ds_dtype t = ts[ti];
        size_t rb = ds_dtype_row_bytes(t, K), bb = ds_dtype_block_bytes(t);
        uint8_t *w = malloc(rb * N), *g = malloc(rb * N);
        for (size_t i = 0; i < rb * N; i++) w[i] = (uint8_t)rand();
        /* finite scales: every fp16 d / dmin of the block set to 0.01 */
        uint16_t h = ds_f32_to_f16(0.01f);
        size_t doff[2] = { 0, 2 };
        int nd = t == DS_DTYPE_Q4_K ? 2 : 1;
        if (t == DS_DTYPE_Q2_K) { doff[0] = 80; doff[1] = 82; nd = 2; }
        if (t == DS_DTYPE_Q3_K) doff[0] = 108;
        if (t == DS_DTYPE_Q6_K) doff[0] = 208;
        for (size_t o = 0; o < rb * N; o += bb)
            for (int k = 0; k < nd; k++) memcpy(w + o + doff[k], &h, 2);
        for (int64_t n = 0; n < N; n += 8) ds_repack_group(t, w + rb * (size_t)n, K, g + rb * (size_t)n);
        void *qa[64];
        for (int i = 0; i < 64; i++) {
            qa[i] = malloc(ds_act_row_bytes(t, K));
            ds_quantize_act_ref(t, x[i], qa[i], K);
        }
        for (int T = 1; T <= 64; T = T == 1 ? 4 : T == 4 ? 8 : 2 * T) {
            float out[8 * 64];
            double b8 = 1e9, b1 = 1e9, bv = 1e9, bv4 = 1e9;
            bool ext_v = vnni && ds_gemm_x8_ext_avx512_has(t);
            bool core_v = vnni && !ext_v && ds_gemm_x8_avx512(t, g, (const void *const *)qa, 1, K, out);
            bool has_v = ext_v || core_v;
            for (int rep = 0; rep < 20; rep++) {
                double t0 = now();
                for (int64_t n = 0; n < N; n += 8)
                    for (int k = 0; k < T; k += 4)
                        ds_gemm_x8_avx2(t, g + rb * (size_t)n, (const void *const *)qa + k, T < 4 ? T : 4, K, out + 8 * k);
                double dt = now() - t0;
                if (dt < b8) b8 = dt;
                if (has_v) {
                    t0 = now();
                    for (int64_t n = 0; n < N; n += 8) {
                        const void *gp = g + rb * (size_t)n;
                        if (ext_v) ds_gemm_x8_ext_avx512(t, gp, (const void *const *)qa, T, K, out);
                        else ds_gemm_x8_avx512(t, gp, (const void *const *)qa, T, K, out);
                    }
                    dt = now() - t0;
                    if (dt < bv) bv = dt;
                }
                if (core_v && T == 8) {
                    t0 = now();
                    for (int64_t n = 0; n < N; n += 8)
                        for (int k = 0; k < T; k += 4)
                            ds_gemm_x8_avx512(t, g + rb * (size_t)n, (const void *const *)qa + k, 4, K, out + 8 * k);
                    dt = now() - t0;
                    if (dt < bv4) bv4 = dt;
                }
                t0 = now();
                for (int64_t n = 0; n < N; n++)
                    for (int k = 0; k < T; k++) out[k] = ds_vec_dot_avx2(t, w + rb * (size_t)n, qa[k], K);
                dt = now() - t0;
                if (dt < b1) b1 = dt;
            }
            char v[32] = "   -", v4[48] = "";
            if (has_v) snprintf(v, sizeof v, "%5.1f", bv / N / T * 1e9);
            if (bv4 < 1e9) snprintf(v4, sizeof v4, " (as 4+4: %5.1f)", bv4 / N / T * 1e9);
            printf("%-8s %2d token%s: x8 avx2 %5.1f, x8 vnni %s%s, one-row kernel %5.1f ns/row/token\n", ds_dtype_name(t), T,
                   T > 1 ? "s" : " ", b8 / N / T * 1e9, v, v4, b1 / N / T * 1e9);
        }
        for (int i = 0; i < 64; i++) free(qa[i]);
        free(w);
        free(g);
    }
    return 0;
}
