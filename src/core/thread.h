/*
 * thread.h - the one parallel primitive: ds_par_for, and the per-caller
 * environment its workers inherit.
 *
 * Kernels never contain OpenMP pragmas; they call ds_par_for with a
 * worker fn(ctx, i0, i1) over a contiguous slice [i0, i1). The range is
 * split statically into one slice per thread, so results are deterministic
 * for a given thread count. Nested calls run serially on the calling
 * thread and pass its id as `tid`, so per-thread scratch stays private.
 *
 * Environment: a caller (a forward context, a training step) binds a
 * ds_par_env to its thread for the duration of a call; the workers of its
 * ds_par_for see the same env. It carries the thread count and the scratch
 * buffers of that caller, so two callers on two threads share nothing.
 * Unbound threads get a lazily made env of their own (ds_par_env_cur). */
#ifndef DS_THREAD_H
#define DS_THREAD_H

#include <stdbool.h>
#include <stdint.h>

typedef void (*ds_par_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

typedef struct ds_par_env {
    int n_threads;                 /* 0: the process default (ds_threads_set) */
    struct ds_scratch_pool *pool;  /* per-thread scratch (core/scratch.h), NULL until first use */
    bool failed;                   /* a scratch allocation failed (ds_scratch_failed) */
    bool profile;                  /* the owner's kernels record timings (training matmuls) */
} ds_par_env;

/* Binds env to the calling thread; returns the previous binding (restore it
 * with another call). NULL unbinds. */
ds_par_env *ds_par_env_bind(ds_par_env *env);
/* The calling thread's env: the bound one, else the thread's own default
 * (made on first use, freed by ds_par_env_thread_free). NULL only when out
 * of memory. */
ds_par_env *ds_par_env_cur(void);
void ds_par_env_thread_free(void);
/* Frees env->pool (and keeps env usable). */
void ds_par_env_release(ds_par_env *env);

/* The process default thread count (configuration: set once at startup). */
void ds_threads_set(int n);  /* n <= 0: all available cores */
int ds_thread_id(void);      /* 0..threads-1 inside a ds_par_for worker, else 0 */
int ds_threads_get(void);    /* the bound env's count, else the process default */

/* Runs fn over [0, n) split into contiguous slices, one per thread.
 * With n < min_per_thread * 2 it runs serially on the caller. */
void ds_par_for(int64_t n, int64_t min_per_thread, ds_par_fn fn, void *ctx);

/* The same, but threads take chunks of `chunk` items from a shared counter
 * until none are left, so a thread the OS deschedules for a while does not
 * hold up the others (shared machines). chunk <= 0: about 8 chunks per
 * thread, at least min_per_thread items each. Only for workers whose result
 * does not depend on which thread runs which range (no per-thread partial sums). */
void ds_par_for_dynamic(int64_t n, int64_t min_per_thread, int64_t chunk, ds_par_fn fn, void *ctx);

/* Each thread owns a contiguous share of [0, n) (equal counts) and runs it
 * front to back in chunks of `chunk` items; a thread whose share is done
 * takes chunks from the back of the share with the most left. Streaming
 * passes (decode's matmuls) read one contiguous run of memory per thread —
 * dynamic chunks handed out alternately made each thread's stream jump every
 * chunk (measured: 2 threads on 1408-row Q4_K matrices at 66 % of the read
 * probe against 82 % for one share each) — and a thread the OS deschedules
 * still holds up no more than a chunk. chunk <= 0: 1/32 of a share. Only for
 * workers whose result does not depend on which thread runs which range;
 * n < 2^24 (larger n runs as ds_par_for_dynamic). */
void ds_par_for_steal(int64_t n, int64_t min_per_thread, int64_t chunk, ds_par_fn fn, void *ctx);

#endif
