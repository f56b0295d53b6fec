/*
 * bench_v4kern.c - times tensor/v4kern.h's kernels, C twin against AVX2, at DeepSeek-V4-Flash's shapes: the heads (64 x 512 over
 * the window of 128 + top 512 entries) and the indexer (64 heads x 128 over
 * N entries). One thread, thread CPU time, the versions alternated, medians.
 *
 *   make lib && cc -O2 -Isrc tools/bench_v4kern.c build/libdeepseek.a -fopenmp -ljansson \
 *      -lpcre2-8 -lopenblas -lm -lpthread -L/usr/lib/x86_64-linux-gnu/openmpi/lib -lmpi \
 *      -o build/bench_v4kern && build/bench_v4kern [N_ENTRIES]
 */
#include "core/rng.h"
#include "tensor/v4kern.h"
#include "tensor/v4kern_isa.h"

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

int main(int argc, char **argv) {
    int64_t H = 64, Dh = 512, nk = 128 + 512, Hi = 64, Di = 128, nE = argc > 1 ? atoll(argv[1]) : 16384, ld = 640;
    enum { REPS = 7 };
    ds_rng r;
    ds_rng_seed(&r, 1);
    float *q = malloc((size_t)(H * Dh) * 4), *kv = malloc((size_t)(nk * Dh) * 4), *o = malloc((size_t)(H * Dh) * 4);
    float *lg = malloc((size_t)(H * nk) * 4), *sinks = malloc((size_t)H * 4), *iq = malloc((size_t)(Hi * Di) * 4);
    float *iw = malloc((size_t)Hi * 4), *ent = malloc((size_t)(nE * ld) * 4), *sc = malloc((size_t)nE * 4);
    const float **keys = malloc((size_t)nk * sizeof *keys);
    for (int64_t i = 0; i < H * Dh; i++) q[i] = 0.1f * ds_rng_normal(&r);
    for (int64_t i = 0; i < nk * Dh; i++) kv[i] = ds_rng_normal(&r);
    for (int64_t i = 0; i < nk; i++) keys[i] = kv + ((i * 37) % nk) * Dh;
    for (int64_t i = 0; i < H; i++) sinks[i] = ds_rng_normal(&r);
    for (int64_t i = 0; i < Hi * Di; i++) iq[i] = 0.1f * ds_rng_normal(&r);
    for (int64_t i = 0; i < Hi; i++) iw[i] = ds_rng_normal(&r);
    for (int64_t i = 0; i < nE * ld; i++) ent[i] = ds_rng_normal(&r);
    const char *names[2] = { "C twin", "avx2" };
    double th[2][REPS], ti[2][REPS];
    for (int rep = 0; rep < REPS; rep++)
        for (int v = 0; v < 2; v++) {
            double t = cpu_now();
            if (v == 0) ds_v4_attn_heads_ref(o, q, keys, nk, 0, H, Dh, 0.044f, sinks, lg);
            else ds_v4_attn_heads_avx2(o, q, keys, nk, 0, H, Dh, 0.044f, sinks, lg);
            th[v][rep] = cpu_now() - t;
            t = cpu_now();
            if (v == 0) ds_v4_index_scores_ref(sc, iq, iw, ent + 512, ld, 0, nE, Hi, Di, 0.088f);
            else ds_v4_index_scores_avx2(sc, iq, iw, ent + 512, ld, 0, nE, Hi, Di, 0.088f);
            ti[v][rep] = cpu_now() - t;
        }
    printf("heads: 64 x 512 over %lld keys; indexer: 64 x 128 over %lld entries (one thread, CPU ms, median of %d)\n",
           (long long)nk, (long long)nE, REPS);
    for (int v = 0; v < 2; v++) {
        qsort(th[v], REPS, sizeof(double), cmp);
        qsort(ti[v], REPS, sizeof(double), cmp);
        printf("  %-7s heads %8.2f ms (%.1fx)   indexer %8.2f ms (%.1fx)\n", names[v], 1e3 * th[v][REPS / 2],
               th[0][REPS / 2] / th[v][REPS / 2], 1e3 * ti[v][REPS / 2], ti[0][REPS / 2] / ti[v][REPS / 2]);
    }
    return 0;
}
