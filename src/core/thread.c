/*
 * thread.c - ds_par_for on a pool of worker threads per calling thread
 * (spin briefly, then sleep on a futex; the caller waits only for units it
 * did not run itself), and the per-caller environment its workers inherit
 * (see thread.h). OpenMP is only asked for the core count and told the
 * thread count (omp_set_num_threads: libraries that use it).
 */
#include "thread.h"
#include "base.h"
#include "scratch.h"

#include <limits.h>
#include <linux/futex.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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


/* ------------------------------------------------------------ the pool
 *
 * Each calling thread has its own pool of workers (two callers on two
 * threads share nothing), started on first use and grown to the largest
 * thread count asked for. A pass posts a job: units (the static slices, or
 * the dynamic chunks) are claimed from one counter that also carries the
 * job's generation, so a worker that wakes late can never claim a unit of a
 * later job. The caller claims units too, and waits only for the units it
 * did not run itself: a worker the OS has not scheduled yet (a loaded
 * machine) holds nothing up, it finds the counter spent. Waits spin for a
 * short while (the serial steps between a decode's passes are tens of µs),
 * then sleep on a futex, so a waiting thread does not take the core from
 * the thread it waits for. (libgomp's barriers spin for milliseconds: with
 * one other busy process on a 2-core machine a 2-thread decode ran ~20x
 * slower than with 1 thread.) Which thread runs a unit never changes bits:
 * a static slice t always gets tid t. */

#define CLAIM_BITS 40
#define CLAIM_MASK ((UINT64_C(1) << CLAIM_BITS) - 1)
#define SPIN_NS 200000   /* a waiting thread spins this long, then sleeps */

typedef struct pool pool;
typedef struct { pool *p; int self; } worker_arg;

struct pool {
    int n_workers;              /* started (the caller is thread 0, not counted) */
    pthread_t *th;
    worker_arg *args;
    /* the job: written by the caller before gen is bumped, read-only after */
    ds_par_fn fn;
    void *ctx;
    ds_par_env *env;
    int64_t n;
    _Atomic int64_t chunk;      /* read by run_steal before its claim (then checked by it): atomic */
    _Atomic int64_t units;      /* read by a late worker before its claim fails: atomic */
    int nt;                     /* static: the slice count */
    _Atomic int n_part;         /* threads taking part (caller included); read as units */
    bool stat;                  /* units are the nt static slices */
    struct share { _Atomic uint64_t w; char pad[56]; } *share;   /* [n_workers + 1]: tag | front | back */
    _Atomic bool stop;          /* read by a worker that saw a gen bump, maybe late, while the pool is destroyed: atomic */
    _Atomic uint32_t gen;       /* futex word: bumped per job (and to stop) */
    _Atomic uint32_t sleepers;  /* workers in futex_wait on gen */
    _Atomic uint64_t claim;     /* gen (high bits) | next unit (low CLAIM_BITS) */
    _Atomic int64_t done;       /* units finished */
    _Atomic uint32_t cwait;     /* futex word: the caller sleeps until done == units */
};

static _Thread_local pool *t_pool;      /* the pool this thread calls into */
static _Thread_local int t_tid;         /* inside a unit: its tid */
static _Thread_local bool t_in_par;     /* inside a unit: nested passes run serially */
static pthread_key_t g_pool_key;
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;

static void futex_wait(_Atomic uint32_t *w, uint32_t v) { syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0); }
static void futex_wake(_Atomic uint32_t *w) { syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0); }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Items [i0, i1) of the current job as thread id `tid`, in the job's env. */
static void run_range(pool *p, int64_t i0, int64_t i1, int tid) {
    ds_par_env *prev = ds_par_env_bind(p->env);
    t_tid = tid, t_in_par = true;
    p->fn(p->ctx, i0, i1, tid);
    t_tid = 0, t_in_par = false;
    ds_par_env_bind(prev);
}

/* Runs the unit u of the current job as thread `self` (dynamic chunks) */
static void run_unit(pool *p, int64_t u, int self) {
    int64_t i0, i1;
    int tid;
    if (p->stat) {
        i0 = p->n * u / p->nt, i1 = p->n * (u + 1) / p->nt;
        tid = (int)u;
    } else {
        i0 = u * p->chunk, i1 = DS_MIN(p->n, i0 + p->chunk);
        tid = self;
    }
    if (i1 > i0) run_range(p, i0, i1, tid);
}

/* ds_par_for_steal's share words: the job's tag (gen's low 16 bits), then
 * the share's front and back item (24 bits each); owner and thieves move
 * them with compare-exchanges, so a range is claimed once. A word of another
 * job's tag is empty (a late worker can never claim this job's items with
 * an older job's view, as with the claim word). */
#define SH_BITS 24
#define SH_MASK ((UINT64_C(1) << SH_BITS) - 1)
static inline uint64_t sh_word(uint32_t g, int64_t lo, int64_t hi) {
    return ((uint64_t)(g & 0xffff) << 48) | ((uint64_t)lo << SH_BITS) | (uint64_t)hi;
}
static inline int64_t sh_lo(uint64_t w) { return (int64_t)((w >> SH_BITS) & SH_MASK); }
static inline int64_t sh_hi(uint64_t w) { return (int64_t)(w & SH_MASK); }

/* Runs the chunks of its own share front to back, then takes chunks from
 * the back of the share with the most left until all are claimed; returns
 * the items it ran. */
static int64_t run_steal(pool *p, uint32_t g, int self) {
    const uint64_t tag = g & 0xffff;
    int np = atomic_load(&p->n_part);
    int64_t ran = 0;
    while (self < np) {
        uint64_t w = atomic_load_explicit(&p->share[self].w, memory_order_acquire);
        int64_t lo = sh_lo(w), hi = sh_hi(w);
        if ((w >> 48) != tag || lo >= hi) break;
        int64_t c = DS_MIN(atomic_load_explicit(&p->chunk, memory_order_relaxed), hi - lo);
        if (!atomic_compare_exchange_weak_explicit(&p->share[self].w, &w, sh_word(g, lo + c, hi), memory_order_acquire,
                                                   memory_order_relaxed))
            continue;
        run_range(p, lo, lo + c, self);
        ran += c;
    }
    for (;;) {
        int v = -1;
        int64_t most = 0;
        uint64_t vw = 0;
        for (int t = 0; t < np; t++) {
            uint64_t w = atomic_load_explicit(&p->share[t].w, memory_order_acquire);
            int64_t left = sh_hi(w) - sh_lo(w);
            if ((w >> 48) == tag && left > most) most = left, v = t, vw = w;
        }
        if (v < 0) return ran;
        int64_t lo = sh_lo(vw), hi = sh_hi(vw);
        int64_t c = DS_MIN(atomic_load_explicit(&p->chunk, memory_order_relaxed), hi - lo);
        if (!atomic_compare_exchange_strong_explicit(&p->share[v].w, &vw, sh_word(g, lo, hi - c), memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        run_range(p, hi - c, hi, self);
        ran += c;
    }
}

/* Claims and runs units of job g until none are left; returns how many it ran. */
static int64_t run_units(pool *p, uint32_t g, int self) {
    int64_t ran = 0;
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_relaxed);
    for (;;) {
        if ((uint32_t)(c >> CLAIM_BITS) != (g & 0xffffff) || (int64_t)(c & CLAIM_MASK) >= p->units) return ran;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acquire, memory_order_relaxed))
            continue;
        run_unit(p, (int64_t)(c & CLAIM_MASK), self);
        ran++;
        c = atomic_load_explicit(&p->claim, memory_order_relaxed);
    }
}

static void *worker_main(void *varg) {
    const worker_arg *a = varg;
    pool *p = a->p;
    int self = a->self;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = atomic_load(&p->gen);
        if (g == seen) {
            int64_t t0 = now_ns();
            for (int k = 0; (g = atomic_load(&p->gen)) == seen; k++) {
                cpu_relax();
                if ((k & 63) == 63 && now_ns() - t0 > SPIN_NS) {
                    atomic_fetch_add(&p->sleepers, 1);
                    futex_wait(&p->gen, seen);
                    atomic_fetch_sub(&p->sleepers, 1);
                    t0 = now_ns();
                }
            }
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        if (self >= p->n_part) continue;   /* not part of this job */
        /* either finds nothing at once in a job of the other kind (not
         * p->steal: a late worker must not read the next job's fields) */
        int64_t ran = run_steal(p, g, self) + run_units(p, g, self);
        if (ran && atomic_fetch_add(&p->done, ran) + ran == p->units && atomic_load(&p->cwait)) {
            atomic_store(&p->cwait, 0);
            futex_wake(&p->cwait);
        }
    }
}

static void pool_destroy(void *arg) {
    pool *p = arg;
    if (!p) return;
    atomic_store(&p->stop, true);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->th[i], NULL);
    free(p->th);
    free(p->args);
    free(p->share);
    free(p);
}

static void pool_key_make(void) { pthread_key_create(&g_pool_key, pool_destroy); }

/* The calling thread's pool with at least nt - 1 workers; NULL if none can be made. */
static pool *pool_get(int nt) {
    pool *p = t_pool;
    if (p && p->n_workers >= nt - 1) return p;
    pthread_once(&g_pool_once, pool_key_make);
    if (p) {   /* grow: stop the old one, start a bigger one */
        pthread_setspecific(g_pool_key, NULL);
        pool_destroy(p);
        t_pool = NULL;
    }
    p = calloc(1, sizeof *p);
    pthread_t *th = p ? calloc((size_t)(nt - 1), sizeof *th) : NULL;
    worker_arg *args = th ? calloc((size_t)(nt - 1), sizeof *args) : NULL;
    struct share *sh = args ? aligned_alloc(64, (size_t)nt * sizeof *sh) : NULL;
    if (!sh) { free(args); free(th); free(p); return NULL; }
    for (int i = 0; i < nt; i++) atomic_init(&sh[i].w, 0);
    p->th = th, p->args = args, p->share = sh;
    p->nt = 1;
    p->n_part = 1;
    int made = 0;
    for (int i = 0; i < nt - 1; i++) {
        args[i] = (worker_arg){ p, i + 1 };
        if (pthread_create(&th[i], NULL, worker_main, &args[i])) break;
        made++;
    }
    p->n_workers = made;   /* read only by this thread */
    t_pool = p;
    pthread_setspecific(g_pool_key, p);
    return p;
}

/* Runs a job on the calling thread's pool: units [0, units), nt static
 * slices (stat) or chunks of `chunk` items. */
static void pool_run(int nt, bool stat, bool steal, int64_t n, int64_t chunk, ds_par_fn fn, void *ctx) {
    ds_par_env *env = ds_par_env_cur();
    ds_scratch_pool_ensure(env);   /* made once here, not raced for by the workers */
    pool *p = pool_get(nt);
    if (!p) {   /* no threads: the same units, in order, on the caller */
        if (steal) stat = false;   /* chunks in order: the same ranges a lone owner takes */
        pool one = { .fn = fn, .ctx = ctx, .env = env, .n = n, .chunk = chunk, .nt = nt, .stat = stat };
        int64_t units = stat ? nt : (n + chunk - 1) / chunk;
        for (int64_t u = 0; u < units; u++) run_unit(&one, u, 0);
        return;
    }
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;   /* only this thread writes gen */
    /* first the claim word to the new generation, spent: a worker still in
     * run_units for the last job (it loaded the old word, then may read this
     * job's units) can no longer win its compare-exchange, so it never runs
     * a unit of a half-written job */
    atomic_store(&p->claim, ((uint64_t)(g & 0xffffff) << CLAIM_BITS) | CLAIM_MASK);
    p->fn = fn, p->ctx = ctx, p->env = env, p->n = n, p->nt = nt, p->stat = stat;
    atomic_store_explicit(&p->chunk, chunk, memory_order_relaxed);
    p->units = steal ? n : stat ? nt : (n + chunk - 1) / chunk;
    p->n_part = DS_MIN(nt, p->n_workers + 1);
    if (steal)   /* equal shares, tagged with this job (a late worker finds other tags empty) */
        for (int t = 0, np = p->n_part; t < np; t++)
            atomic_store(&p->share[t].w, sh_word(g, n * t / np, n * (t + 1) / np));
    atomic_store(&p->done, 0);
    if (!steal) atomic_store(&p->claim, (uint64_t)(g & 0xffffff) << CLAIM_BITS);   /* a steal job's stays spent */
    atomic_store(&p->gen, g);
    if (atomic_load(&p->sleepers)) futex_wake(&p->gen);
    int64_t ran = steal ? run_steal(p, g, 0) : run_units(p, g, 0);
    if (atomic_fetch_add(&p->done, ran) + ran < p->units) {
        /* units still running on workers: spin, then sleep until the last one ends */
        int64_t t0 = now_ns();
        for (int k = 0; atomic_load(&p->done) < p->units; k++) {
            cpu_relax();
            if ((k & 63) == 63 && now_ns() - t0 > SPIN_NS) {
                atomic_store(&p->cwait, 1);
                if (atomic_load(&p->done) < p->units) futex_wait(&p->cwait, 1);
            }
        }
        atomic_store(&p->cwait, 0);
    }
}

int ds_thread_id(void) { return t_in_par ? t_tid : 0; }

/* The threads a pass of n items runs on (at least min_per_thread items
 * each); 1: serially on the caller, as inside a unit (nested passes). */
static int pass_threads(int64_t n, int64_t min_per_thread) {
    int nt = ds_threads_get();
    if (min_per_thread < 1) min_per_thread = 1;
    if (nt > 1 && n / min_per_thread < nt) nt = (int)(n / min_per_thread);
    return t_in_par ? 1 : nt;
}

void ds_par_for(int64_t n, int64_t min_per_thread, ds_par_fn fn, void *ctx) {
    if (n <= 0) return;
    int nt = pass_threads(n, min_per_thread);
    if (nt <= 1) { fn(ctx, 0, n, ds_thread_id()); return; }
    pool_run(nt, true, false, n, 0, fn, ctx);
}

void ds_par_for_dynamic(int64_t n, int64_t min_per_thread, int64_t chunk, ds_par_fn fn, void *ctx) {
    if (n <= 0) return;
    if (chunk < 1)   /* ~8 chunks per thread of the env's count */
        chunk = DS_MAX(DS_MAX(min_per_thread, 1), n / (8 * (int64_t)ds_threads_get()));
    int nt = pass_threads(n, min_per_thread);
    if (nt <= 1) { fn(ctx, 0, n, ds_thread_id()); return; }
    pool_run(nt, false, false, n, chunk, fn, ctx);
}

void ds_par_for_steal(int64_t n, int64_t min_per_thread, int64_t chunk, ds_par_fn fn, void *ctx) {
    if (n <= 0) return;
    if (n > (int64_t)SH_MASK) { ds_par_for_dynamic(n, min_per_thread, chunk, fn, ctx); return; }
    int nt = pass_threads(n, min_per_thread);
    if (nt <= 1) { fn(ctx, 0, n, ds_thread_id()); return; }
    if (chunk < 1) chunk = DS_MAX(1, n / (32 * (int64_t)nt));   /* ~32 chunks per share */
    pool_run(nt, false, true, n, chunk, fn, ctx);
}
