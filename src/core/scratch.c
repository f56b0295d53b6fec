/*
 * scratch.c - the per-thread scratch pool of a ds_par_env (see scratch.h).
 */
#include "scratch.h"

#include <stdint.h>
#include <stdlib.h>

bool ds_scratch_pool_ensure(ds_par_env *env) {
    if (!env) return false;
    if (!env->pool) env->pool = calloc(1, sizeof *env->pool);
    if (!env->pool) __atomic_store_n(&env->failed, true, __ATOMIC_RELAXED);
    return env->pool != NULL;
}

void ds_scratch_pool_free(ds_scratch_pool *p) {
    if (!p) return;
    for (int i = 0; i < DS_SCRATCH_THREADS; i++)
        for (int j = 0; j < DS_SCRATCH_SLOTS; j++) ds_free(p->buf[i][j]);
    free(p);
}

void *ds_scratch_bytes(int tid, int slot, size_t bytes) {
    DS_ASSERT(tid >= 0 && tid < DS_SCRATCH_THREADS && slot >= 0 && slot < DS_SCRATCH_SLOTS);
    ds_par_env *env = ds_par_env_cur();
    if (!ds_scratch_pool_ensure(env)) return NULL;
    ds_scratch_pool *p = env->pool;
    if (p->cap[tid][slot] < bytes) {
        /* a power of two (at least 16 KiB): requests that grow a little per
         * call (attention scores over a growing context) reallocate rarely */
        size_t cap = (size_t)16 << 10;
        while (cap < bytes && cap <= SIZE_MAX / 2) cap *= 2;
        if (cap < bytes) cap = bytes;
        ds_free(p->buf[tid][slot]);
        p->buf[tid][slot] = ds_alloc(cap);
        p->cap[tid][slot] = p->buf[tid][slot] ? cap : 0;
        if (!p->buf[tid][slot]) __atomic_store_n(&env->failed, true, __ATOMIC_RELAXED);
    }
    return p->buf[tid][slot];
}

void *ds_scratch_peek(const ds_par_env *env, int tid, int slot) {
    return env && env->pool ? env->pool->buf[tid][slot] : NULL;
}

float *ds_scratch(int tid, int slot, size_t n) { return ds_scratch_bytes(tid, slot, n * sizeof(float)); }

bool ds_scratch_failed(void) {
    ds_par_env *env = ds_par_env_cur();
    return !env || __atomic_load_n(&env->failed, __ATOMIC_RELAXED);
}

void ds_scratch_clear_failed(void) {
    ds_par_env *env = ds_par_env_cur();
    if (env) env->failed = false;
}
