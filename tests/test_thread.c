/*
 * test_thread.c - core/thread.c's pool: every item run exactly once, static
 * slices on their fixed tid (per-thread partials stay deterministic), nested
 * passes serial on the caller's tid, thread counts that grow and shrink, two
 * callers on two threads at once, and many short passes in a row (the
 * generation counter: a worker that wakes late never runs a later pass's units);
 * ds_par_for_steal's shares: every item once, whatever mix of steal, static
 * and dynamic passes comes back to back, each thread's own items in order.
 */
#include "test.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "core/thread.h"

#define N_ITEMS 5000

typedef struct {
    int hits[N_ITEMS];
    int tid_of[N_ITEMS];
    int bad_tid;          /* fn's tid and ds_thread_id() disagreed */
    int nested_bad;       /* a nested pass left the caller's tid or ran outside [0, n) */
} cover_ctx;

static void cover_fn(void *v, int64_t a, int64_t b, int tid) {
    cover_ctx *c = v;
    if (ds_thread_id() != tid) __atomic_fetch_add(&c->bad_tid, 1, __ATOMIC_RELAXED);
    for (int64_t i = a; i < b; i++) {
        __atomic_fetch_add(&c->hits[i], 1, __ATOMIC_RELAXED);
        c->tid_of[i] = tid;
    }
}

static void inner_fn(void *v, int64_t a, int64_t b, int tid) {
    int *outer = v;
    if (a != 0 || b != 7 || tid != *outer || ds_thread_id() != tid) __atomic_fetch_add(outer + 1, 1, __ATOMIC_RELAXED);
}

static void nested_fn(void *v, int64_t a, int64_t b, int tid) {
    cover_ctx *c = v;
    int st[2] = { tid, 0 };
    ds_par_for(7, 1, inner_fn, st);   /* runs serially here, on this tid */
    ds_par_for_dynamic(7, 1, 1, inner_fn, st);
    ds_par_for_steal(7, 1, 2, inner_fn, st);
    if (st[1]) __atomic_fetch_add(&c->nested_bad, 1, __ATOMIC_RELAXED);
    cover_fn(v, a, b, tid);
}

static int check_cover(cover_ctx *c, int64_t n) {
    int bad = c->bad_tid + c->nested_bad;
    for (int64_t i = 0; i < N_ITEMS; i++) bad += c->hits[i] != (i < n);
    return bad;
}

TEST(thread_pool_static_slices_fixed_tids) {
    ds_par_env env = { 0 };
    ds_par_env *prev = ds_par_env_bind(&env);
    const int counts[] = { 2, 4, 3, 1, 6, 2 };   /* the pool grows, then serves smaller counts */
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        env.n_threads = counts[k];
        for (int rep = 0; rep < 50; rep++) {
            static cover_ctx c;
            memset(&c, 0, sizeof c);
            int64_t n = 1 + (rep * 997) % N_ITEMS;
            ds_par_for(n, 1, rep & 1 ? nested_fn : cover_fn, &c);
            CHECK_MSG(check_cover(&c, n) == 0, "par_for n=%lld threads=%d: items not covered once", (long long)n, counts[k]);
            /* item i belongs to slice t = the one with n*t/m <= i < n*(t+1)/m, and runs on tid t */
            int m = (int)(counts[k] < n ? counts[k] : n), wrong = 0;
            for (int64_t i = 0; i < n; i++) {
                int t = 0;
                while (n * (t + 1) / m <= i) t++;
                wrong += c.tid_of[i] != t;
            }
            CHECK_MSG(wrong == 0, "par_for n=%lld threads=%d: %d items on another tid than their slice's", (long long)n,
                      counts[k], wrong);
        }
    }
    ds_par_env_bind(prev);
    ds_par_env_release(&env);
}

TEST(thread_pool_dynamic_many_short_passes) {
    ds_par_env env = { 2, NULL, false, false };
    ds_par_env *prev = ds_par_env_bind(&env);
    int fails = 0;
    for (int rep = 0; rep < 3000; rep++) {   /* short passes back to back: late workers meet newer jobs */
        static cover_ctx c;
        memset(c.hits, 0, sizeof c.hits);
        c.bad_tid = c.nested_bad = 0;
        int64_t n = 2 + rep % 61, chunk = rep % 3;
        env.n_threads = 2 + rep % 3;
        ds_par_for_dynamic(n, 1, chunk, rep % 5 == 0 ? nested_fn : cover_fn, &c);
        fails += check_cover(&c, n) != 0;
        for (int64_t i = 0; i < n; i++) fails += c.tid_of[i] < 0 || c.tid_of[i] >= env.n_threads;
    }
    CHECK_MSG(fails == 0, "%d dynamic passes covered items other than once (or on a tid out of range)", fails);
    ds_par_env_bind(prev);
    ds_par_env_release(&env);
}

typedef struct { int fails; int threads; } caller_arg;

static void *caller_main(void *v) {
    caller_arg *ca = v;
    ds_par_env env = { ca->threads, NULL, false, false };
    ds_par_env *prev = ds_par_env_bind(&env);
    cover_ctx *c = malloc(sizeof *c);
    for (int rep = 0; c && rep < 500; rep++) {
        memset(c, 0, sizeof *c);
        int64_t n = 1 + (rep * 131) % N_ITEMS;
        if (rep % 3 == 1) ds_par_for(n, 1, cover_fn, c);
        else if (rep % 3 == 2) ds_par_for_steal(n, 1, 0, cover_fn, c);
        else ds_par_for_dynamic(n, 1, 0, cover_fn, c);
        ca->fails += check_cover(c, n) != 0;
    }
    free(c);
    ds_par_env_bind(prev);
    ds_par_env_release(&env);
    return NULL;
}

TEST(thread_pool_two_callers_at_once) {
    /* each calling thread has its own workers: the passes of two callers never mix */
    pthread_t th[2];
    caller_arg ca[2] = { { 0, 2 }, { 0, 3 } };
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, caller_main, &ca[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);   /* the callers' pools end with them */
    CHECK_EQ_INT(ca[0].fails, 0);
    CHECK_EQ_INT(ca[1].fails, 0);
}

/* ds_par_for_steal: short passes of all three kinds back to back (a late
 * worker of a steal pass meets a static or dynamic one and the reverse),
 * chunks of 1..5 items and the default, 2..4 threads: every item once, tids
 * in range; and a long pass at 2 threads where a thread's own share runs
 * front to back (a stolen range comes from a share's back). */
typedef struct { int order_bad; int64_t last[8]; int64_t n; } order_ctx;

static void order_fn(void *v, int64_t a, int64_t b, int tid) {
    order_ctx *o = v;
    int64_t share0 = o->n / 2;   /* tid 0 owns [0, n/2), tid 1 [n/2, n) at 2 threads */
    bool own = tid == 0 ? b <= share0 : a >= share0;
    if (own) {   /* its own share: ranges follow each other */
        if (a < o->last[tid]) __atomic_fetch_add(&o->order_bad, 1, __ATOMIC_RELAXED);
        o->last[tid] = b;
    }
}

TEST(thread_pool_steal_shares) {
    ds_par_env env = { 2, NULL, false, false };
    ds_par_env *prev = ds_par_env_bind(&env);
    int fails = 0;
    for (int rep = 0; rep < 3000; rep++) {
        static cover_ctx c;
        memset(c.hits, 0, sizeof c.hits);
        c.bad_tid = c.nested_bad = 0;
        int64_t n = 2 + (rep * 37) % 400, chunk = rep % 6;   /* n >= 2: nested_fn runs inside a pass */
        env.n_threads = 2 + rep % 3;
        if (rep % 4 == 1) ds_par_for(n, 1, cover_fn, &c);
        else if (rep % 4 == 2) ds_par_for_dynamic(n, 1, chunk, cover_fn, &c);
        else ds_par_for_steal(n, 1, chunk, rep % 7 == 0 ? nested_fn : cover_fn, &c);
        fails += check_cover(&c, n) != 0;
        for (int64_t i = 0; i < n; i++) fails += c.tid_of[i] < 0 || c.tid_of[i] >= env.n_threads;
    }
    CHECK_MSG(fails == 0, "%d passes (steal mixed with static and dynamic) covered items other than once", fails);
    env.n_threads = 2;
    order_ctx o = { 0, { 0 }, 100000 };
    o.last[1] = o.n / 2;
    ds_par_for_steal(o.n, 1, 100, order_fn, &o);
    CHECK_MSG(o.order_bad == 0, "steal: %d own-share ranges out of order", o.order_bad);
    ds_par_env_bind(prev);
    ds_par_env_release(&env);
}
