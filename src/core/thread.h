/*
 * thread.h - the one parallel primitive: ds_par_for.
 *
 * Kernels never contain OpenMP pragmas; they call ds_par_for with a
 * worker fn(ctx, i0, i1) over a contiguous slice [i0, i1). The range is
 * split statically into one slice per thread, so results are deterministic
 * for a given thread count. Nested calls run serially on the calling
 * thread and pass its id as `tid`, so per-thread scratch stays private.
 */
#ifndef DS_THREAD_H
#define DS_THREAD_H

#include <stdint.h>

typedef void (*ds_par_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

void ds_threads_set(int n);
int ds_thread_id(void);      /* 0..threads-1 inside a ds_par_for worker, else 0 */  /* n <= 0: all available cores */
int ds_threads_get(void);

/* Runs fn over [0, n) split into contiguous slices, one per thread.
 * With n < min_per_thread * 2 it runs serially on the caller. */
void ds_par_for(int64_t n, int64_t min_per_thread, ds_par_fn fn, void *ctx);

/* The same, but threads take chunks of `chunk` items from a shared counter
 * until none are left, so a thread the OS deschedules for a while does not
 * hold up the others (shared machines). chunk <= 0: about 8 chunks per
 * thread, at least min_per_thread items each. Only for workers whose result
 * does not depend on which thread runs which range (no per-thread partial sums). */
void ds_par_for_dynamic(int64_t n, int64_t min_per_thread, int64_t chunk, ds_par_fn fn, void *ctx);

#endif
