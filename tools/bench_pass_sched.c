/*
 * bench_pass_sched.c - how a pass's split over threads affects streaming:
 * the one-token Q4_K kernel (gemv_avx512.c) over a 256 MiB repacked weight
 * on huge pages, with 2 threads (or argv[1]) of ds_par_for's pool, in wall
 * time, against bench's read probe with the same threads, alternated 15
 * times (medians): one pass over the whole weight (a share each), 1408-row
 * matrices (a V2-Lite expert's gate / up) one pass each in a shuffled order
 * split by ds_par_for_steal (a contiguous share each; what decode's passes
 * use), and the same split into 16 dynamic chunks from one counter (the
 * scheduler before: each thread's stream jumps every chunk); and all the
 * shuffled matrices in one steal pass (matrix starts without a pass's
 * fork and join). The VM's
 * two-core bandwidth switches between ~36 and ~65 GB/s every few minutes:
 * run it several times and compare rows of the same probe rate. A manual
 * measurement, not a test. Needs avx512vnni.
 *
 * `bench_pass_sched 2 types`: instead, one pass over a 256 MiB weight of
 * each type decode reads most (Q4_K, Q6_K, Q8_0), each against the probe's
 * median and its best (bench's bound is the best of 10 runs), 11 rounds,
 * 4 times: what a decode pass reaches at best, with no pass start, serial
 * work or small matrix in the way.
 *
 *   make lib && cc -O2 -Isrc tools/bench_pass_sched.c build/libdeepseek.a -fopenmp -ljansson -lpcre2-8 \
 *      -lopenblas -lm -lpthread -lcurl -lmicrohttpd -ledit -L/usr/lib/x86_64-linux-gnu/openmpi/lib -lmpi \
 *      -o build/bench_pass_sched && build/bench_pass_sched 2
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include "core/cpu.h"
#include "core/thread.h"
#include "tensor/quant.h"
#include "tensor/quant_isa.h"
#include "tensor/repack.h"
#include "tensor/tensor.h"
#include "read_probe.h"
static double wall(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
typedef struct { const uint8_t *p; size_t n; uint64_t sink[64]; } pctx;
static void pw(void *v, int64_t a, int64_t b, int tid) { pctx *c = v; size_t h = c->n / 2; c->sink[tid] += probe(c->p + a * h, (b - a) * h); }
typedef struct { const uint8_t *w; size_t rb; const void *qa; float *out; } gctx;
static void gw(void *v, int64_t a, int64_t b, int tid) {
    (void)tid;
    gctx *c = v;
    ds_gemv_x8_avx512(DS_DTYPE_Q4_K, c->w + c->rb * 8 * a, b - a, c->qa, 2048, c->out + 8 * a);
}
/* the shuffled matrices in one pass: unit u is group u % CH of matrix ord[u / CH] */
typedef struct { const uint8_t *w; size_t rb; const void *qa; float *out; const size_t *ord; int64_t ch; } mctx;
static void mw(void *v, int64_t a, int64_t b, int tid) {
    (void)tid;
    mctx *c = v;
    for (int64_t u = a; u < b;) {
        int64_t m = u / c->ch, g0 = u % c->ch, g1 = m == (b - 1) / c->ch ? (b - 1) % c->ch + 1 : c->ch;
        ds_gemv_x8_avx512(DS_DTYPE_Q4_K, c->w + c->rb * 8 * (c->ch * (int64_t)c->ord[m] + g0), g1 - g0, c->qa, 2048, c->out);
        u += g1 - g0;
    }
}
/* `types`: one big pass per type against the probe's median and best */
typedef struct { ds_dtype t; const uint8_t *w; size_t rb; const void *qa; float *out; } tctx;
static void tw(void *v, int64_t a, int64_t b, int tid) {
    (void)tid;
    tctx *c = v;
    ds_gemv_x8_avx512(c->t, c->w + c->rb * 8 * a, b - a, c->qa, 2048, c->out + 8 * a);
}
static int types_mode(int nt) {
    const size_t S = (size_t)256 << 20;
    const ds_dtype ts[3] = { DS_DTYPE_Q4_K, DS_DTYPE_Q6_K, DS_DTYPE_Q8_0 };
    const char *nm[3] = { "Q4_K", "Q6_K", "Q8_0" };
    uint8_t *pb = huge_buf(S);
    tctx tc[3];
    int64_t ng[3];
    float x[2048];
    for (int j = 0; j < 2048; j++) x[j] = (float)rand() / RAND_MAX - 0.5f;
    for (int k = 0; k < 3; k++) {   /* random bytes repacked: any values stream alike */
        size_t rb = ds_dtype_row_bytes(ts[k], 2048), N = S / rb / 8 * 8;
        uint8_t *w = huge_buf(S), *tmp = malloc(rb * 8);
        for (size_t i = 0; i < rb * N; i++) w[i] = (uint8_t)rand();
        for (size_t n = 0; n < N; n += 8) { ds_repack_group(ts[k], w + rb * n, 2048, tmp); memcpy(w + rb * n, tmp, rb * 8); }
        void *qa = malloc(ds_act_row_bytes(ts[k], 2048));
        ds_quantize_act_ref(ts[k], x, qa, 2048);
        tc[k] = (tctx){ ts[k], w, rb, qa, malloc(N * sizeof(float)) };
        ng[k] = (int64_t)(N / 8);
        free(tmp);
    }
    enum { R = 11 };
    for (int rep = 0; rep < 4; rep++) {
        double tp[R], tk[3][R];
        pctx pc = { pb, S, { 0 } };
        for (int r = 0; r < R; r++) {
            double t0 = wall(); ds_par_for(2, 1, pw, &pc); tp[r] = wall() - t0;
            for (int k = 0; k < 3; k++) { t0 = wall(); ds_par_for(ng[k], 1, tw, &tc[k]); tk[k][r] = wall() - t0; }
        }
        qsort(tp, R, 8, cmpd);
        double med = S / tp[R / 2] / 1e9, best = S / tp[0] / 1e9;
        printf("threads %d probe median %.1f best %.1f |", nt, med, best);
        for (int k = 0; k < 3; k++) {
            qsort(tk[k], R, 8, cmpd);
            double g = (double)tc[k].rb * 8 * (double)ng[k] / tk[k][R / 2] / 1e9;
            printf(" %s %.1f (%.0f%% of median, %.0f%% of best) |", nm[k], g, 100 * g / med, 100 * g / best);
        }
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
int main(int argc, char **argv) {
    if (ds_isa_level() < DS_ISA_AVX512_VNNI) { fprintf(stderr, "needs avx512vnni (level %s)\n", ds_isa_name(ds_isa_level())); return 1; }
    int nt = argc > 1 ? atoi(argv[1]) : 2;
    ds_threads_set(nt);
    if (argc > 2 && !strcmp(argv[2], "types")) return types_mode(nt);
    const size_t S = (size_t)256 << 20;
    size_t rb = ds_dtype_row_bytes(DS_DTYPE_Q4_K, 2048), N = S / rb / 8 * 8, G = N / 8;
    uint8_t *pb = huge_buf(S), *w = huge_buf(S);
    for (size_t i = 0; i < rb * N; i++) w[i] = (uint8_t)rand();
    uint16_t h = ds_f32_to_f16(0.01f);
    for (size_t o = 0; o < rb * N; o += 144) { memcpy(w + o, &h, 2); memcpy(w + o + 2, &h, 2); }
    uint8_t *tmp = malloc(rb * 8);
    for (size_t n = 0; n < N; n += 8) { ds_repack_group(DS_DTYPE_Q4_K, w + rb * n, 2048, tmp); memcpy(w + rb * n, tmp, rb * 8); }
    float x[2048]; for (int j = 0; j < 2048; j++) x[j] = (float)rand() / RAND_MAX - 0.5f;
    void *qa = malloc(ds_act_row_bytes(DS_DTYPE_Q4_K, 2048)); ds_quantize_act_ref(DS_DTYPE_Q4_K, x, qa, 2048);
    float *out = malloc(N * sizeof(float));
    enum { CH = 176, R = 15 };
    size_t nch = G / CH, *ord = malloc(nch * sizeof(size_t));
    for (size_t i = 0; i < nch; i++) ord[i] = i;
    for (size_t i = nch - 1; i > 0; i--) { size_t j = rand() % (i + 1), t = ord[i]; ord[i] = ord[j]; ord[j] = t; }
    double tp[R], tb[R], ts[R], td[R], t1[R];
    pctx pc = { pb, S, { 0 } }; gctx gc = { w, rb, qa, out };
    for (int r = 0; r < R; r++) {
        double t0 = wall(); ds_par_for(2, 1, pw, &pc); tp[r] = wall() - t0;
        t0 = wall(); ds_par_for((int64_t)G, 1, gw, &gc); tb[r] = wall() - t0;
        t0 = wall();
        for (size_t c = 0; c < nch; c++) { gctx g2 = { w + rb * 8 * CH * ord[c], rb, qa, out }; ds_par_for_steal(CH, 1, 0, gw, &g2); }
        ts[r] = wall() - t0;
        t0 = wall();
        for (size_t c = 0; c < nch; c++) { gctx g2 = { w + rb * 8 * CH * ord[c], rb, qa, out }; ds_par_for_dynamic(CH, 1, 11, gw, &g2); }
        td[r] = wall() - t0;
        t0 = wall();
        mctx mc = { w, rb, qa, out, ord, CH };
        ds_par_for_steal((int64_t)(nch * CH), 1, 0, mw, &mc);
        t1[r] = wall() - t0;
    }
    qsort(tp, R, 8, cmpd); qsort(tb, R, 8, cmpd); qsort(ts, R, 8, cmpd); qsort(td, R, 8, cmpd); qsort(t1, R, 8, cmpd);
    double p = S / tp[R / 2] / 1e9, bb = (double)rb * N;
    printf("threads %d probe %.1f (best %.1f) | big pass %.1f (%.0f%%) | 1408-row passes, steal shares %.1f (%.0f%%) | dynamic 16 chunks %.1f (%.0f%%) | the matrices in one steal pass %.1f (%.0f%%)\n", nt,
           p, S / tp[0] / 1e9, bb / tb[R / 2] / 1e9, 100 * bb / tb[R / 2] / 1e9 / p, bb / ts[R / 2] / 1e9, 100 * bb / ts[R / 2] / 1e9 / p,
           bb / td[R / 2] / 1e9, 100 * bb / td[R / 2] / 1e9 / p, bb / t1[R / 2] / 1e9, 100 * bb / t1[R / 2] / 1e9 / p);
    return 0;
}
