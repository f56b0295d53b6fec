/*
 * thread.c - ds_par_for on OpenMP. The only file with omp pragmas.
 */
#include "thread.h"
#include "base.h"

#include <omp.h>

static int g_threads = 0;

void ds_threads_set(int n) {
    if (n <= 0) n = omp_get_num_procs();
    if (n < 1) n = 1;
    g_threads = n;
    omp_set_num_threads(n);
}

int ds_threads_get(void) {
    if (g_threads == 0) ds_threads_set(0);
    return g_threads;
}

int ds_thread_id(void) { return omp_in_parallel() ? omp_get_thread_num() : 0; }

void ds_par_for(int64_t n, int64_t min_per_thread, ds_par_fn fn, void *ctx) {
    if (n <= 0) return;
    int nt = ds_threads_get();
    if (min_per_thread < 1) min_per_thread = 1;
    if (nt > 1 && n / min_per_thread < nt) nt = (int)(n / min_per_thread);
    if (nt <= 1 || omp_in_parallel()) {
        fn(ctx, 0, n, ds_thread_id());
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        int m = omp_get_num_threads();
        int64_t i0 = n * t / m, i1 = n * (t + 1) / m;
        if (i1 > i0) fn(ctx, i0, i1, t);
    }
}

void ds_par_for_dynamic(int64_t n, int64_t min_per_thread, int64_t chunk, ds_par_fn fn, void *ctx) {
    if (n <= 0) return;
    int nt = ds_threads_get();
    if (min_per_thread < 1) min_per_thread = 1;
    if (chunk < 1) chunk = DS_MAX(min_per_thread, n / (8 * (int64_t)nt));   /* ~8 chunks per thread */
    if (nt > 1 && n / min_per_thread < nt) nt = (int)(n / min_per_thread);
    if (nt <= 1 || omp_in_parallel()) {
        fn(ctx, 0, n, ds_thread_id());
        return;
    }
    int64_t next = 0;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        for (;;) {
            int64_t i0 = __atomic_fetch_add(&next, chunk, __ATOMIC_RELAXED);
            if (i0 >= n) break;
            fn(ctx, i0, i0 + chunk < n ? i0 + chunk : n, t);
        }
    }
}
