/*
 * thread.c - ds_par_for on OpenMP, and the per-caller environment its
 * workers inherit (see thread.h). The only file with omp pragmas.
 */
#include "thread.h"
#include "base.h"
#include "scratch.h"

#include <omp.h>
#include <stdlib.h>

/* configuration, written by the CLI before any work starts */
static int g_default_threads = 0;

static _Thread_local ds_par_env *t_env;      /* bound by the caller, or inherited by a worker */
static _Thread_local ds_par_env *t_own;      /* this thread's default env */

void ds_threads_set(int n) {
    if (n <= 0) n = omp_get_num_procs();
    if (n < 1) n = 1;
    g_default_threads = n;
    omp_set_num_threads(n);
}

static int default_threads(void) {
    if (g_default_threads == 0) ds_threads_set(0);
    return g_default_threads;
}

ds_par_env *ds_par_env_bind(ds_par_env *env) {
    ds_par_env *prev = t_env;
    t_env = env;
    return prev;
}

ds_par_env *ds_par_env_cur(void) {
    if (t_env) return t_env;
    if (!t_own) t_own = calloc(1, sizeof *t_own);
    return t_own;
}

void ds_par_env_thread_free(void) {
    if (!t_own) return;
    if (t_env == t_own) t_env = NULL;
    ds_par_env_release(t_own);
    free(t_own);
    t_own = NULL;
}

void ds_par_env_release(ds_par_env *env) {
    if (!env) return;
    ds_scratch_pool_free(env->pool);
    env->pool = NULL;
}

int ds_threads_get(void) {
    ds_par_env *env = t_env;
    return env && env->n_threads > 0 ? env->n_threads : default_threads();
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
    ds_par_env *env = ds_par_env_cur();
    ds_scratch_pool_ensure(env);   /* made once here, not raced for by the workers */
#pragma omp parallel num_threads(nt)
    {
        ds_par_env *prev = ds_par_env_bind(env);
        int t = omp_get_thread_num();
        int m = omp_get_num_threads();
        int64_t i0 = n * t / m, i1 = n * (t + 1) / m;
        if (i1 > i0) fn(ctx, i0, i1, t);
        ds_par_env_bind(prev);
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
    ds_par_env *env = ds_par_env_cur();
    ds_scratch_pool_ensure(env);
    int64_t next = 0;
#pragma omp parallel num_threads(nt)
    {
        ds_par_env *prev = ds_par_env_bind(env);
        int t = omp_get_thread_num();
        for (;;) {
            int64_t i0 = __atomic_fetch_add(&next, chunk, __ATOMIC_RELAXED);
            if (i0 >= n) break;
            fn(ctx, i0, i0 + chunk < n ? i0 + chunk : n, t);
        }
        ds_par_env_bind(prev);
    }
}
