/*
 * scratch.h - per-thread scratch buffers of one caller (ds_par_env,
 * thread.h): a pool of [thread][slot] buffers that grow on demand and are
 * kept for the next call, so a steady decode loop allocates nothing.
 *
 * The pool belongs to the env bound on the calling thread (a forward
 * context's, a training step's, or the thread's own default env), so two
 * callers on two threads never share a buffer. A failed allocation returns
 * NULL and marks the env (ds_scratch_failed); kernels skip their work and
 * the caller that owns the env returns DS_ENOMEM.
 *
 * Slots: 0 the kernels of tensor/ops.c, 1..3 their callers in model/,
 * 4..7 training scratch and 8 the training matmul profile (tops.h TR_SLOT0,
 * TR_SLOT_PROF), 9 quantized activation rows (ops.c), 10 ds_matmul_multi's
 * job tables, 11 the job lists of model/'s batch plan.
 * A buffer is valid until the next request
 * for the same thread and slot.
 */
#ifndef DS_SCRATCH_H
#define DS_SCRATCH_H

#include "base.h"
#include "thread.h"

#define DS_SCRATCH_SLOTS 12
#define DS_SCRATCH_THREADS 256
enum { DS_SLOT_ACT = 9, DS_SLOT_MULTI = 10, DS_SLOT_PLAN = 11 };

typedef struct ds_scratch_pool {
    void *buf[DS_SCRATCH_THREADS][DS_SCRATCH_SLOTS];
    size_t cap[DS_SCRATCH_THREADS][DS_SCRATCH_SLOTS];
} ds_scratch_pool;

/* At least `bytes` bytes (64-byte aligned) for thread tid, slot `slot`, from
 * the calling thread's env; NULL when out of memory. */
void *ds_scratch_bytes(int tid, int slot, size_t bytes);
/* The same, n floats. */
float *ds_scratch(int tid, int slot, size_t n);

/* Makes env's pool (before a parallel region uses it). false: out of memory. */
bool ds_scratch_pool_ensure(ds_par_env *env);
void ds_scratch_pool_free(ds_scratch_pool *p);
/* Slot `slot` of thread tid in env's pool as it is (NULL if never made). */
void *ds_scratch_peek(const ds_par_env *env, int tid, int slot);

/* Whether an allocation failed in the calling thread's env since the last
 * ds_scratch_clear_failed. */
bool ds_scratch_failed(void);
void ds_scratch_clear_failed(void);

#endif
