/*
 * bench_gemv_stream.c - the one-token (decode) kernels streaming a weight
 * from memory, against the read probe of `deepseek bench`: per type (Q4_K,
 * Q6_K, Q5_0, Q8_0; K = 2048, Q5_0 1408 as V2-Lite's expert down) a 256 MiB repacked weight on huge pages (as
 * the model's repacked weights are), read once per pass by gemv_avx512.c's
 * kernel ("new") and by repack_avx512.c's x8 kernel with T = 1 ("old"),
 * and the AVX2 streaming read of bench's probe over another 256 MiB; and
 * the new kernel over the same weight cut into 1408-row matrices (a V2-Lite
 * expert's gate or up) called one by one in a shuffled order, as decode
 * reads its many small matrices (whether each matrix start, a new stream
 * for the hardware prefetcher, costs: measured not, within the noise); every
 * pass alternated with the others, medians of 9, thread CPU time (so a
 * loaded machine's scheduling does not count; its memory traffic does).
 * And the kernel with its weight in cache (the first 256 KiB run 256 times
 * per pass), in GB/s and in core cycles per weight byte: how far ahead of
 * the memory its compute runs (`bench_gemv_stream cache`: only this, on
 * 8 MiB weights, for iterating on a kernel). A manual measurement, not a test. Needs avx512vnni.
 *
 *   make lib && cc -O2 -Isrc tools/bench_gemv_stream.c build/libdeepseek.a -fopenmp -ljansson \
 *      -lpcre2-8 -lopenblas -lm -lpthread -lmpi -o build/bench_gemv_stream && build/bench_gemv_stream
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "core/cpu.h"
#include "tensor/quant.h"
#include "tensor/quant_isa.h"
#include "tensor/repack.h"
#include "tensor/tensor.h"
#include "read_probe.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}


/* the core's clock: a chain of dependent adds (1 per cycle) timed by CPU time */
static double clock_ghz(void) {
    const long n = 400000000;
    uint64_t x = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) __asm__ volatile("add $1, %0" : "+r"(x));
    return (double)n / (now() - t0) / 1e9;
}

int main(int argc, char **argv) {
    /* `cache`: only the in-cache rates (8 MiB weights; quick, for iterating on a kernel) */
    const int cache_only = argc > 1 && !strcmp(argv[1], "cache");
    if (ds_isa_level() < DS_ISA_AVX512_VNNI) { fprintf(stderr, "needs avx512vnni (level %s)\n", ds_isa_name(ds_isa_level())); return 1; }
    enum { NT = 4, R = 9 };
    static const ds_dtype ts[NT] = { DS_DTYPE_Q4_K, DS_DTYPE_Q6_K, DS_DTYPE_Q5_0, DS_DTYPE_Q8_0 };
    const size_t S = (size_t)(cache_only ? 8 : 256) << 20;
    /* the model's widths: Q5_0 is V2-Lite's expert down (K = 1408) */
    static const int64_t Ks[NT] = { 2048, 2048, 1408, 2048 };
    float x[2048];
    for (int j = 0; j < 2048; j++) x[j] = (float)rand() / (float)RAND_MAX - 0.5f;
    float *out = malloc(S / 64 * sizeof(float));
    uint8_t *pb = huge_buf(S), *w[NT];
    void *qa[NT];
    size_t N[NT], rb[NT];
    for (int ti = 0; ti < NT; ti++) {
        ds_dtype t = ts[ti];
        const int64_t K = Ks[ti];
        size_t bb = ds_dtype_block_bytes(t);
        rb[ti] = ds_dtype_row_bytes(t, K);
        N[ti] = S / rb[ti] / 8 * 8;
        w[ti] = huge_buf(S);
        /* random blocks, every fp16 d / dmin 0.01 (finite) */
        for (size_t i = 0; i < rb[ti] * N[ti]; i++) w[ti][i] = (uint8_t)rand();
        uint16_t h = ds_f32_to_f16(0.01f);
        for (size_t o = 0; o < rb[ti] * N[ti]; o += bb) {
            memcpy(w[ti] + o + (t == DS_DTYPE_Q6_K ? 208 : 0), &h, 2);
            if (t == DS_DTYPE_Q4_K) memcpy(w[ti] + o + 2, &h, 2);
        }
        uint8_t *tmp = malloc(rb[ti] * 8);
        for (size_t n = 0; n < N[ti]; n += 8) {
            ds_repack_group(t, w[ti] + rb[ti] * n, K, tmp);
            memcpy(w[ti] + rb[ti] * n, tmp, rb[ti] * 8);
        }
        free(tmp);
        qa[ti] = malloc(ds_act_row_bytes(t, K));
        ds_quantize_act_ref(t, x, qa[ti], K);
    }
    /* the same weight as matrices of CH groups (1408 rows: a V2-Lite expert's
     * gate / up), one call each, in a shuffled order (decode's matrices sit
     * apart in memory) */
    enum { CH = 176 };
    size_t nch[NT], *ord[NT];
    for (int ti = 0; ti < NT; ti++) {
        nch[ti] = N[ti] / 8 / CH;
        ord[ti] = malloc(nch[ti] * sizeof(size_t));
        for (size_t i = 0; i < nch[ti]; i++) ord[ti][i] = i;
        for (size_t i = nch[ti] - 1; i > 0; i--) {
            size_t j = (size_t)rand() % (i + 1), x = ord[ti][i];
            ord[ti][i] = ord[ti][j];
            ord[ti][j] = x;
        }
    }
    /* in cache: the first IC bytes (whole groups) of each weight, read
     * ICR times per pass (L2 is 1 MiB per Zen 4 core) */
    const size_t IC = (size_t)256 << 10;
    enum { ICR = 256 };
    size_t icg[NT];
    for (int ti = 0; ti < NT; ti++) icg[ti] = IC / (rb[ti] * 8);
    double tc[NT][R], ti_[NT][R];
    double tp[R], tn[NT][R], to[NT][R];
    volatile uint64_t sink = 0;
    for (int r = 0; r < R; r++) {
        double t0 = now();
        sink += probe(pb, S);
        tp[r] = now() - t0;
        for (int ti = 0; ti < NT; ti++) {
            if (cache_only) goto in_cache;
            t0 = now();
            ds_gemv_x8_avx512(ts[ti], w[ti], (int64_t)N[ti] / 8, qa[ti], Ks[ti], out);
            tn[ti][r] = now() - t0;
            t0 = now();
            for (size_t n = 0; n < N[ti]; n += 8)
                ds_gemm_x8_avx512(ts[ti], w[ti] + rb[ti] * n, (const void *const *)&qa[ti], 1, Ks[ti], out + n);
            to[ti][r] = now() - t0;
            t0 = now();
            for (size_t c = 0; c < nch[ti]; c++)
                ds_gemv_x8_avx512(ts[ti], w[ti] + rb[ti] * 8 * CH * ord[ti][c], CH, qa[ti], Ks[ti], out);
            tc[ti][r] = now() - t0;
        in_cache:
            ds_gemv_x8_avx512(ts[ti], w[ti], (int64_t)icg[ti], qa[ti], Ks[ti], out);
            t0 = now();
            for (int k = 0; k < ICR; k++) ds_gemv_x8_avx512(ts[ti], w[ti], (int64_t)icg[ti], qa[ti], Ks[ti], out);
            ti_[ti][r] = now() - t0;
        }
    }
    qsort(tp, R, sizeof(double), cmpd);
    double pr = (double)S / tp[R / 2] / 1e9, ghz = clock_ghz();
    printf("read probe (AVX2 streaming loads): %.1f GB/s\n", pr);
    printf("| type | K | gemv_avx512.c GB/s | of probe | x8 kernel T=1 GB/s | of probe | gemv, %d-row matrices shuffled | of probe "
           "| gemv in cache (%zu KiB) GB/s | of probe | cycles/weight byte in cache ¹ |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
           8 * CH, IC >> 10);
    for (int ti = 0; ti < NT; ti++) {
        qsort(tn[ti], R, sizeof(double), cmpd);
        qsort(to[ti], R, sizeof(double), cmpd);
        qsort(tc[ti], R, sizeof(double), cmpd);
        double b = (double)(rb[ti] * N[ti]), gn = b / tn[ti][R / 2] / 1e9, go = b / to[ti][R / 2] / 1e9;
        double gc = (double)(rb[ti] * 8 * CH * nch[ti]) / tc[ti][R / 2] / 1e9;
        qsort(ti_[ti], R, sizeof(double), cmpd);
        double gi = (double)(rb[ti] * 8 * icg[ti]) * ICR / ti_[ti][R / 2] / 1e9;
        printf("| %s | %lld | %.1f | %.0f%% | %.1f | %.0f%% | %.1f | %.0f%% | %.1f | %.0f%% | %.3f |\n", ds_dtype_name(ts[ti]),
               (long long)Ks[ti], gn, 100 * gn / pr, go, 100 * go / pr, gc, 100 * gc / pr, gi, 100 * gi / pr, ghz / gi);
    }
    printf("¹ at the %.2f GHz this thread measured (a dependent add chain)\n", ghz);
    return (int)(sink & 1);
}
