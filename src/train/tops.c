/*
 * tops.c - training kernels (see tops.h) and the step allocator
 * (tinternal.h). Row loops run on both cores through ds_par_for;
 * reductions over rows (norm weight gradients, losses) use per-thread
 * partials combined in thread order, so results are bit-identical run to
 * run for a given thread count.
 */
#include "tops.h"
#include "tinternal.h"
#include "tgemm.h"
#include "../core/cpu.h"
#include "../core/thread.h"
#include "../tensor/ops.h"
#include "../tensor/simd_exp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define TR_MAX_THREADS 256

/* ---------------------------------------------------------------- scratch */

/* The training slots of the calling thread's env pool (core/scratch.h). */
float *tr_scratch(int tid, int slot, size_t n) {
    DS_ASSERT(slot >= 0 && slot < TR_SCRATCH_SLOTS);
    return ds_scratch(tid, TR_SLOT0 + slot, n);
}

/* ---------------------------------------------------------------- profile */

/* per thread, in slot TR_SLOT_PROF of the calling env's pool */
typedef struct { double flops, sec; } prof_rec;

void tr_prof_enable(bool on) {
    ds_par_env *env = ds_par_env_cur();
    if (env) env->profile = on;
}

static bool prof_on(void) {
    ds_par_env *env = ds_par_env_cur();
    return env && env->profile;
}

static void prof_add(double t0, double flops) {
    prof_rec *p = ds_scratch_bytes(ds_thread_id(), TR_SLOT_PROF, sizeof *p);
    if (!p) return;
    p->sec += ds_now() - t0;
    p->flops += flops;
}

void tr_prof_reset(void) {
    const ds_par_env *env = ds_par_env_cur();
    for (int t = 0; t < DS_SCRATCH_THREADS; t++) {
        prof_rec *p = ds_scratch_peek(env, t, TR_SLOT_PROF);
        if (p) *p = (prof_rec){ 0, 0 };
    }
}

void tr_prof_read(double *flops, double *rate, double *seconds) {
    const ds_par_env *env = ds_par_env_cur();
    double f = 0, r = 0, s = 0;
    int n = 0;
    for (int t = 0; t < DS_SCRATCH_THREADS; t++) {
        const prof_rec *p = ds_scratch_peek(env, t, TR_SLOT_PROF);
        if (!p || p->sec <= 0) continue;
        f += p->flops;
        r += p->flops / p->sec;
        s += p->sec;
        n++;
    }
    *flops = f;
    *rate = r;
    *seconds = n ? s / n : 0;
}

/* ---------------------------------------------------------------- linear */

/* DS_TRAIN_LINEAR=blas: linear layers on OpenBLAS (ds_sgemm) instead of
 * tgemm.c's packed kernels, for comparisons */
static bool linear_blas(void) {
    static int b = -1;
    if (b < 0) { const char *v = getenv("DS_TRAIN_LINEAR"); b = v && !strcmp(v, "blas"); }
    return b == 1;
}

void tr_linear_forward(float *y, const float *x, const float *W, int64_t N, int64_t I, int64_t O) {
    bool prof = prof_on();
    double t0 = prof ? ds_now() : 0;
    if (linear_blas()) ds_sgemm(false, true, N, O, I, 1.0f, x, I, W, I, 0.0f, y, O);
    else tr_gemm_nt(y, O, x, I, W, I, N, O, I, 1.0f, false);
    if (prof) prof_add(t0, 2.0 * (double)N * (double)I * (double)O);
}

static _Thread_local tr_dw_hook t_dw_hook;
static _Thread_local void *t_dw_ctx;
void tr_set_dw_hook(tr_dw_hook hook, void *ctx) { t_dw_hook = hook; t_dw_ctx = ctx; }

static void linear_backward(float *dx, bool dx_acc, float *dW, const float *dy, const float *x, const float *W,
                            int64_t N, int64_t I, int64_t O) {
    bool prof = prof_on();
    double t0 = prof ? ds_now() : 0;
    bool dw_acc = !(dW && t_dw_hook && t_dw_hook(t_dw_ctx, dW, O * I));
    if (linear_blas()) {
        if (dx) ds_sgemm(false, false, N, I, O, 1.0f, dy, O, W, I, dx_acc ? 1.0f : 0.0f, dx, I);
        if (dW) ds_sgemm(true, false, O, I, N, 1.0f, dy, O, x, I, dw_acc ? 1.0f : 0.0f, dW, I);
    } else {
        if (dx) tr_gemm_nn(dx, I, dy, O, W, I, N, I, O, 1.0f, dx_acc);
        if (dW) tr_gemm_tn(dW, I, dy, O, x, I, O, I, N, 1.0f, dw_acc);
    }
    if (prof) prof_add(t0, 2.0 * (double)N * (double)I * (double)O * ((dx != NULL) + (dW != NULL)));
}

bool tr_linear_dw_once(int64_t n_max) { return !linear_blas() && tr_gemm_acc_once(n_max); }

void tr_linear_backward(float *dx, float *dW, const float *dy, const float *x, const float *W, int64_t N, int64_t I,
                        int64_t O) {
    linear_backward(dx, true, dW, dy, x, W, N, I, O);
}

void tr_linear_backward_set(float *dx, float *dW, const float *dy, const float *x, const float *W, int64_t N, int64_t I,
                            int64_t O) {
    linear_backward(dx, false, dW, dy, x, W, N, I, O);
}

/* ---------------------------------------------------------------- rmsnorm */

typedef struct {
    float *out; int64_t ldo; float *rstd; const float *x; int64_t ldx; const float *w; int64_t D; float eps;
} rms_fwd_ctx;

static bool has_avx2(void);
static void rms_fwd_rows_avx2(rms_fwd_ctx *c, int64_t n0, int64_t n1);

static void rms_fwd_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    rms_fwd_ctx *c = vc;
    if (has_avx2() && c->D % 8 == 0) { rms_fwd_rows_avx2(c, n0, n1); return; }
    for (int64_t n = n0; n < n1; n++) {
        const float *xr = c->x + n * c->ldx;
        float *o = c->out + n * c->ldo;
        double ss = 0.0;
        for (int64_t i = 0; i < c->D; i++) ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / (double)c->D + (double)c->eps));
        if (c->rstd) c->rstd[n] = r;
        for (int64_t i = 0; i < c->D; i++) o[i] = (xr[i] * r) * c->w[i];
    }
}

void tr_rmsnorm_forward(float *out, int64_t ldo, float *rstd, const float *x, int64_t ldx, const float *w, int64_t N,
                        int64_t D, float eps) {
    rms_fwd_ctx c = { out, ldo, rstd, x, ldx, w, D, eps };
    ds_par_for(N, DS_MAX(1, 4096 / DS_MAX(D, 1)), rms_fwd_worker, &c);
}

typedef struct {
    float *dx; int64_t lddx; const float *dout; int64_t lddo; const float *x; int64_t ldx;
    const float *w; const float *rstd; int64_t D; float *dw_part; /* [threads, D] */
} rms_bwd_ctx;

static void rms_bwd_rows_avx2(rms_bwd_ctx *c, int64_t n0, int64_t n1, float *dwp);

static void rms_bwd_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    rms_bwd_ctx *c = vc;
    float *dwp = c->dw_part ? c->dw_part + (int64_t)tid * c->D : NULL;
    if (has_avx2() && c->D % 8 == 0) { rms_bwd_rows_avx2(c, n0, n1, dwp); return; }
    for (int64_t n = n0; n < n1; n++) {
        const float *xr = c->x + n * c->ldx, *dy = c->dout + n * c->lddo;
        float *dx = c->dx + n * c->lddx;
        float r = c->rstd[n];
        double dot = 0.0;  /* Σ_j w_j dy_j x_j */
        for (int64_t i = 0; i < c->D; i++) dot += (double)c->w[i] * dy[i] * xr[i];
        float k = (float)(dot * (double)r * r * r / (double)c->D);
        for (int64_t i = 0; i < c->D; i++) dx[i] += r * c->w[i] * dy[i] - k * xr[i];
        if (dwp)
            for (int64_t i = 0; i < c->D; i++) dwp[i] += dy[i] * xr[i] * r;
    }
}

void tr_rmsnorm_backward(float *dx, int64_t lddx, float *dw, const float *dout, int64_t lddo, const float *x,
                         int64_t ldx, const float *w, const float *rstd, int64_t N, int64_t D) {
    int nt = ds_threads_get();   /* partials indexed by the worker's tid (nested: the caller's) */
    float *part = NULL;
    if (dw) {
        part = tr_scratch(ds_thread_id(), 3, (size_t)(nt * D));
        if (!part) return;   /* out of memory: the step reports it (ds_scratch_failed) */
        memset(part, 0, (size_t)(nt * D) * sizeof(float));
    }
    rms_bwd_ctx c = { dx, lddx, dout, lddo, x, ldx, w, rstd, D, part };
    ds_par_for(N, DS_MAX(1, 4096 / DS_MAX(D, 1)), rms_bwd_worker, &c);
    if (dw)
        for (int t = 0; t < nt; t++)
            for (int64_t i = 0; i < D; i++) dw[i] += part[(int64_t)t * D + i];
}

/* ---------------------------------------------------------------- swiglu */

typedef struct { float *h, *sig, *dg, *du; const float *g, *u, *dh, *csig; } swiglu_ctx;

void tr_swiglu_forward_ref(float *h, float *sig, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        sig[i] = s;
        h[i] = g[i] * s * u[i];
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void swiglu_fwd_avx2(float *h, float *sig, const float *g, const float *u,
                                                              int64_t i0, int64_t i1) {
    int64_t i = i0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= i1; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, ds_exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
        _mm256_storeu_ps(sig + i, s);
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_mul_ps(gv, s), _mm256_loadu_ps(u + i)));
    }
    if (i < i1) tr_swiglu_forward_ref(h + i, sig + i, g + i, u + i, i1 - i);
}
#endif

static bool g_scalar, g_avx2_only;
void tr_force_scalar(bool on) { g_scalar = on; }
void tr_force_avx2(bool on) { g_avx2_only = on; }

static bool has_avx2(void) { return ds_cpu_avx2_fma() && !g_scalar; }
/* the 16-lane twins below (the same operations per lane as the AVX2 code: the same bits) */
static bool has_avx512(void) { return has_avx2() && !g_avx2_only && ds_isa_level() >= DS_ISA_AVX512; }

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void swiglu_fwd_avx512(float *h, float *sig, const float *g, const float *u,
                                                              int64_t i0, int64_t i1) {
    int64_t i = i0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= i1; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i);
        __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, ds_exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv))));
        _mm512_storeu_ps(sig + i, s);
        _mm512_storeu_ps(h + i, _mm512_mul_ps(_mm512_mul_ps(gv, s), _mm512_loadu_ps(u + i)));
    }
    if (i < i1) swiglu_fwd_avx2(h, sig, g, u, i, i1);
}
#endif

/* ---------------------------------------------------------------- vector helpers */

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void vec_add_avx2(float *x, const float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) x[i] += y[i];
}

__attribute__((target("avx2,fma"))) static void vec_axpy_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(av, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) y[i] += a * x[i];
}

__attribute__((target("avx2,fma"))) static void vec_scale_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(av, _mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = a * x[i];
}

__attribute__((target("avx2,fma"))) static float vec_max_avx2(const float *x, int64_t n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    float t[8], r = -INFINITY;
    _mm256_storeu_ps(t, m);
    for (int k = 0; k < 8; k++) r = t[k] > r ? t[k] : r;
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}
#endif

void tr_vec_add(float *x, const float *y, int64_t n) {
#if defined(__x86_64__)
    if (has_avx2()) { vec_add_avx2(x, y, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void tr_vec_axpy(float *y, float a, const float *x, int64_t n) {
#if defined(__x86_64__)
    if (has_avx2()) { vec_axpy_avx2(y, a, x, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

void tr_vec_scale(float *y, float a, const float *x, int64_t n) {
#if defined(__x86_64__)
    if (has_avx2()) { vec_scale_avx2(y, a, x, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = a * x[i];
}

/* max of x[0..n) (n >= 1); the same value on both paths */
static float vec_max(const float *x, int64_t n) {
#if defined(__x86_64__)
    if (has_avx2()) return vec_max_avx2(x, n);
#endif
    float r = -INFINITY;
    for (int64_t i = 0; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static inline double hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m256d d = _mm256_add_pd(_mm256_cvtps_pd(lo), _mm256_cvtps_pd(hi));
    double t[4];
    _mm256_storeu_pd(t, d);
    return (t[0] + t[1]) + (t[2] + t[3]);
}

/* rows of D (a multiple of 8): float lanes, the 8 lane sums combined in double */
__attribute__((target("avx2,fma"))) static void rms_fwd_rows_avx2(rms_fwd_ctx *c, int64_t n0, int64_t n1) {
    int64_t D = c->D;
    for (int64_t n = n0; n < n1; n++) {
        const float *x = c->x + n * c->ldx;
        float *o = c->out + n * c->ldo;
        __m256 s0 = _mm256_setzero_ps();
        for (int64_t i = 0; i < D; i += 8) { __m256 v = _mm256_loadu_ps(x + i); s0 = _mm256_fmadd_ps(v, v, s0); }
        float r = (float)(1.0 / sqrt(hsum256(s0) / (double)D + (double)c->eps));
        if (c->rstd) c->rstd[n] = r;
        __m256 rv = _mm256_set1_ps(r);
        for (int64_t i = 0; i < D; i += 8)
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), rv), _mm256_loadu_ps(c->w + i)));
    }
}

__attribute__((target("avx2,fma"))) static void rms_bwd_rows_avx2(rms_bwd_ctx *c, int64_t n0, int64_t n1, float *dwp) {
    int64_t D = c->D;
    for (int64_t n = n0; n < n1; n++) {
        const float *x = c->x + n * c->ldx, *dy = c->dout + n * c->lddo;
        float *dx = c->dx + n * c->lddx;
        __m256 s = _mm256_setzero_ps();
        for (int64_t i = 0; i < D; i += 8)
            s = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(c->w + i), _mm256_loadu_ps(dy + i)), _mm256_loadu_ps(x + i), s);
        float r = c->rstd[n];
        __m256 rv = _mm256_set1_ps(r), kv = _mm256_set1_ps((float)(hsum256(s) * (double)r * r * r / (double)D));
        for (int64_t i = 0; i < D; i += 8) {
            __m256 xv = _mm256_loadu_ps(x + i), dyv = _mm256_loadu_ps(dy + i);
            __m256 g = _mm256_mul_ps(_mm256_mul_ps(rv, _mm256_loadu_ps(c->w + i)), dyv);
            _mm256_storeu_ps(dx + i, _mm256_add_ps(_mm256_loadu_ps(dx + i), _mm256_fnmadd_ps(kv, xv, g)));
            if (dwp) _mm256_storeu_ps(dwp + i, _mm256_fmadd_ps(_mm256_mul_ps(dyv, xv), rv, _mm256_loadu_ps(dwp + i)));
        }
    }
}
#else
static void rms_fwd_rows_avx2(rms_fwd_ctx *c, int64_t n0, int64_t n1) { (void)c; (void)n0; (void)n1; }
static void rms_bwd_rows_avx2(rms_bwd_ctx *c, int64_t n0, int64_t n1, float *dwp) { (void)c; (void)n0; (void)n1; (void)dwp; }
#endif

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static double exp_shift_sum_avx2(float *x, int64_t n, float mx) {
    __m256 m = _mm256_set1_ps(mx);
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = ds_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, v);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(a0, a1));
    double s = t[0] + t[1] + t[2] + t[3];
    for (; i < n; i++) { x[i] = expf(x[i] - mx); s += x[i]; }
    return s;
}

/* exp_shift_sum_avx2 16 lanes at a time: ds_exp512 gives ds_exp256's bits,
 * and acc's 8 double lanes are the AVX2 code's a0 | a1, fed the same floats
 * in the same order (the low 8, then the high 8) */
__attribute__((target("avx512f,avx2,fma"))) static double exp_shift_sum_avx512(float *x, int64_t n, float mx) {
    __m512 m = _mm512_set1_ps(mx);
    __m512d acc = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = ds_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
        _mm512_storeu_ps(x + i, v);
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    }
    if (i + 8 <= n) {
        __m256 v = ds_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(mx)));
        _mm256_storeu_ps(x + i, v);
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(v));
        i += 8;
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(_mm512_castpd512_pd256(acc), _mm512_extractf64x4_pd(acc, 1)));
    double s = t[0] + t[1] + t[2] + t[3];
    for (; i < n; i++) { x[i] = expf(x[i] - mx); s += x[i]; }
    return s;
}
#endif

/* x[i] = exp(x[i] - mx) in place; returns Σ (double accumulation) */
static double exp_shift_sum(float *x, int64_t n, float mx) {
#if defined(__x86_64__)
    if (has_avx512()) return exp_shift_sum_avx512(x, n, mx);
    if (has_avx2()) return exp_shift_sum_avx2(x, n, mx);
#endif
    double s = 0;
    for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - mx); s += x[i]; }
    return s;
}

static void swiglu_fwd_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    swiglu_ctx *c = vc;
#if defined(__x86_64__)
    if (has_avx512()) { swiglu_fwd_avx512(c->h, c->sig, c->g, c->u, i0, i1); return; }
    if (has_avx2()) { swiglu_fwd_avx2(c->h, c->sig, c->g, c->u, i0, i1); return; }
#endif
    tr_swiglu_forward_ref(c->h + i0, c->sig + i0, c->g + i0, c->u + i0, i1 - i0);
}

void tr_swiglu_forward(float *h, float *sig, const float *g, const float *u, int64_t n) {
    swiglu_ctx c = { h, sig, NULL, NULL, g, u, NULL, NULL };
    ds_par_for(n, 16384, swiglu_fwd_worker, &c);
}

void tr_swiglu_backward_ref(float *dg, float *du, const float *dh, const float *g, const float *u, const float *sig,
                            int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i], s = sig[i], d = dh[i];
        dg[i] = d * u[i] * s * (1.0f + gi * (1.0f - s));
        du[i] = d * gi * s;
    }
}

#if defined(__x86_64__)
/* the same expressions in the same order as the _ref twin, 8 lanes at a time (no FMA contraction) */
__attribute__((target("avx2,fma"))) static void swiglu_bwd_avx2(float *dg, float *du, const float *dh, const float *g,
                                                              const float *u, const float *sig, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i), s = _mm256_loadu_ps(sig + i), d = _mm256_loadu_ps(dh + i);
        __m256 t = _mm256_add_ps(one, _mm256_mul_ps(gv, _mm256_sub_ps(one, s)));
        _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(u + i)), s), t));
        _mm256_storeu_ps(du + i, _mm256_mul_ps(_mm256_mul_ps(d, gv), s));
    }
    if (i < n) tr_swiglu_backward_ref(dg + i, du + i, dh + i, g + i, u + i, sig + i, n - i);
}

__attribute__((target("avx512f"))) static void swiglu_bwd_avx512(float *dg, float *du, const float *dh, const float *g,
                                                              const float *u, const float *sig, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i), s = _mm512_loadu_ps(sig + i), d = _mm512_loadu_ps(dh + i);
        __m512 t = _mm512_add_ps(one, _mm512_mul_ps(gv, _mm512_sub_ps(one, s)));
        _mm512_storeu_ps(dg + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, _mm512_loadu_ps(u + i)), s), t));
        _mm512_storeu_ps(du + i, _mm512_mul_ps(_mm512_mul_ps(d, gv), s));
    }
    if (i < n) swiglu_bwd_avx2(dg + i, du + i, dh + i, g + i, u + i, sig + i, n - i);
}
#endif

static void swiglu_bwd_span(float *dg, float *du, const float *dh, const float *g, const float *u, const float *sig,
                            int64_t n) {
#if defined(__x86_64__)
    if (has_avx512()) { swiglu_bwd_avx512(dg, du, dh, g, u, sig, n); return; }
    if (has_avx2()) { swiglu_bwd_avx2(dg, du, dh, g, u, sig, n); return; }
#endif
    tr_swiglu_backward_ref(dg, du, dh, g, u, sig, n);
}

static void swiglu_fwd_span(float *h, float *sig, const float *g, const float *u, int64_t n) {
#if defined(__x86_64__)
    if (has_avx512()) { swiglu_fwd_avx512(h, sig, g, u, 0, n); return; }
    if (has_avx2()) { swiglu_fwd_avx2(h, sig, g, u, 0, n); return; }
#endif
    tr_swiglu_forward_ref(h, sig, g, u, n);
}

static void swiglu_bwd_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    swiglu_ctx *c = vc;
    swiglu_bwd_span(c->dg + i0, c->du + i0, c->dh + i0, c->g + i0, c->u + i0, c->csig + i0, i1 - i0);
}

void tr_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, const float *sig,
                        int64_t n) {
    swiglu_ctx c = { NULL, NULL, dg, du, g, u, dh, sig };
    ds_par_for(n, 16384, swiglu_bwd_worker, &c);
}

typedef struct { float *h, *sig, *dgu; const float *gu, *dh, *csig; int64_t F; } swiglu_gu_ctx;

static void swiglu_gu_fwd_worker(void *vc, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    swiglu_gu_ctx *c = vc;
    int64_t F = c->F;
    for (int64_t r = r0; r < r1; r++)
        swiglu_fwd_span(c->h + r * F, c->sig + r * F, c->gu + r * 2 * F, c->gu + r * 2 * F + F, F);
}

static void swiglu_gu_bwd_worker(void *vc, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    swiglu_gu_ctx *c = vc;
    int64_t F = c->F;
    for (int64_t r = r0; r < r1; r++)
        swiglu_bwd_span(c->dgu + r * 2 * F, c->dgu + r * 2 * F + F, c->dh + r * F, c->gu + r * 2 * F, c->gu + r * 2 * F + F,
                        c->csig + r * F, F);
}

void tr_swiglu_forward_gu(float *h, float *sig, const float *gu, int64_t rows, int64_t F) {
    swiglu_gu_ctx c = { h, sig, NULL, gu, NULL, NULL, F };
    ds_par_for(rows, DS_MAX(1, 16384 / DS_MAX(F, 1)), swiglu_gu_fwd_worker, &c);
}

void tr_swiglu_backward_gu(float *dgu, const float *dh, const float *gu, const float *sig, int64_t rows, int64_t F) {
    swiglu_gu_ctx c = { NULL, NULL, dgu, gu, dh, sig, F };
    ds_par_for(rows, DS_MAX(1, 16384 / DS_MAX(F, 1)), swiglu_gu_bwd_worker, &c);
}

/* ---------------------------------------------------------------- rope */

void tr_rope_backward(float *dx, int64_t Dr, const float *inv_freq, int64_t pos) {
    for (int64_t i = 0; i < Dr / 2; i++) {
        float ang = (float)pos * inv_freq[i];   /* the same fp32 angle as ds_rope_apply */
        float cs = cosf(ang), sn = sinf(ang);
        float a = dx[2 * i], b = dx[2 * i + 1];
        dx[2 * i] = a * cs + b * sn;
        dx[2 * i + 1] = b * cs - a * sn;
    }
}

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
    float *logits; const int32_t *targets; int64_t V; float dscale; double *part;
} ce_ctx;

static void ce_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    ce_ctx *c = vc;
    double sum = 0.0;
    for (int64_t n = n0; n < n1; n++) {
        float *row = c->logits + n * c->V;
        int32_t tgt = c->targets[n];
        if (tgt < 0) { memset(row, 0, (size_t)c->V * sizeof(float)); continue; }
        float mx = vec_max(row, c->V);
        float xt = row[tgt];
        double s = exp_shift_sum(row, c->V, mx);   /* row = exp(logit - max) */
        sum += (double)mx + log(s) - (double)xt;
        tr_vec_scale(row, (float)((double)c->dscale / s), row, c->V);
        row[tgt] -= c->dscale;
    }
    c->part[tid] += sum;
}

double tr_crossentropy_forward_backward(float *logits, const int32_t *targets, int64_t N, int64_t V, float dscale) {
    double part[TR_MAX_THREADS] = { 0 };
    ce_ctx c = { logits, targets, V, dscale, part };
    ds_par_for(N, DS_MAX(1, 8192 / DS_MAX(V, 1)), ce_worker, &c);
    double s = 0.0;
    for (int t = 0; t < ds_threads_get() && t < TR_MAX_THREADS; t++) s += part[t];
    return s;
}

/* Weighted cross-entropy (the policy-gradient hook): pass 1 turns each row
 * into its softmax and reports log p(target); pass 2, given one weight per
 * row, writes the row's gradient w·(softmax − onehot). */
typedef struct {
    float *logits; const int32_t *targets; int64_t V; float *logp; const float *w;
} tce_ctx;

static void tce_softmax_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    tce_ctx *c = vc;
    for (int64_t n = n0; n < n1; n++) {
        float *row = c->logits + n * c->V;
        int32_t tgt = c->targets[n];
        float mx = vec_max(row, c->V);
        float xt = tgt >= 0 ? row[tgt] : 0.0f;
        double s = exp_shift_sum(row, c->V, mx);   /* row = exp(logit - max) */
        c->logp[n] = tgt >= 0 ? (float)((double)xt - (double)mx - log(s)) : 0.0f;
        tr_vec_scale(row, (float)(1.0 / s), row, c->V);
    }
}

static void tce_backward_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    tce_ctx *c = vc;
    for (int64_t n = n0; n < n1; n++) {
        float *row = c->logits + n * c->V;
        int32_t tgt = c->targets[n];
        float w = tgt >= 0 ? c->w[n] : 0.0f;
        if (w == 0.0f) { memset(row, 0, (size_t)c->V * sizeof(float)); continue; }
        tr_vec_scale(row, w, row, c->V);
        row[tgt] -= w;
    }
}

void tr_token_logprobs(float *logits, const int32_t *targets, int64_t N, int64_t V, float *logp) {
    tce_ctx c = { logits, targets, V, logp, NULL };
    ds_par_for(N, DS_MAX(1, 8192 / DS_MAX(V, 1)), tce_softmax_worker, &c);
}

void tr_token_weighted_backward(float *probs, const int32_t *targets, int64_t N, int64_t V, const float *w) {
    tce_ctx c = { probs, targets, V, NULL, w };
    ds_par_for(N, DS_MAX(1, 8192 / DS_MAX(V, 1)), tce_backward_worker, &c);
}

/* ---------------------------------------------------------------- attention */

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static double dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s);
    double r = hsum256(s);
    for (; i < n; i++) r += (double)a[i] * b[i];
    return r;
}
#endif

/* Σ a·b, float lanes folded in double */
double tr_vec_dot(const float *a, const float *b, int64_t n) {
#if defined(__x86_64__)
    if (has_avx2()) return dot_avx2(a, b, n);
#endif
    double r = 0.0;
    for (int64_t i = 0; i < n; i++) r += (double)a[i] * b[i];
    return r;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void att_ds_row_avx2(float *d, const float *a, float fd, float scale, int64_t n) {
    __m256 f = _mm256_set1_ps(fd), sc = _mm256_set1_ps(scale);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(d + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(a + j), _mm256_sub_ps(_mm256_loadu_ps(d + j), f)), sc));
    for (; j < n; j++) d[j] = a[j] * (d[j] - fd) * scale;
}
#endif

/* d[j] = a[j]·(d[j] − fd)·scale (the same bits on both paths) */
static void att_ds_row(float *d, const float *a, float fd, float scale, int64_t n) {
#if defined(__x86_64__)
    if (has_avx2()) { att_ds_row_avx2(d, a, fd, scale, n); return; }
#endif
    for (int64_t j = 0; j < n; j++) d[j] = a[j] * (d[j] - fd) * scale;
}

/* Row i of a causal T x T matrix: zeroes what the causal GEMMs may read
 * above the diagonal, the rest of i's band-row tile (band = tr_gemm_causal_band();
 * 0: the whole row, for the OpenBLAS path that reads everything). */
static void zero_above_diagonal(float *row, int64_t i, int64_t T, int64_t band) {
    int64_t z = band ? DS_MIN(T, band * (i / band + 1)) : T;
    if (z > i + 1) memset(row + i + 1, 0, (size_t)(z - i - 1) * sizeof(float));
}

void tr_attention_forward(float *O, int64_t ldo, float *att, const float *Q, int64_t ldq, const float *K, int64_t ldk,
                          const float *V, int64_t ldv, int64_t T, int64_t Dk, int64_t Dv, float scale) {
    tr_gemm_keep_fp32(true);   /* bf16 mode: the attention core stays fp32 (tgemm.h) */
    tr_gemm_nt_causal(att, T, Q, ldq, K, ldk, T, Dk, scale);
    /* above the diagonal only the band the causal GEMMs read is zeroed (the
     * rest of att is never read: half of att's memory writes saved) */
    int64_t band = tr_gemm_causal_band();
    for (int64_t i = 0; i < T; i++) {   /* causal softmax of row i over keys 0..i */
        float *row = att + i * T;
        float mx = vec_max(row, i + 1);
        tr_vec_scale(row, (float)(1.0 / exp_shift_sum(row, i + 1, mx)), row, i + 1);
        zero_above_diagonal(row, i, T, band);
    }
    tr_gemm_nn_causal(O, ldo, att, T, V, ldv, T, Dv, 1.0f, false);
    tr_gemm_keep_fp32(false);
}

void tr_attention_backward(float *dQ, int64_t lddq, float *dK, int64_t lddk, float *dV, int64_t lddv, const float *dO,
                           int64_t lddo, const float *att, const float *Q, int64_t ldq, const float *K, int64_t ldk,
                           const float *V, int64_t ldv, int64_t T, int64_t Dk, int64_t Dv, float scale, float *scratch) {
    tr_gemm_keep_fp32(true);   /* bf16 mode: the attention core stays fp32 (tgemm.h) */
    /* dV = attᵀ dO */
    tr_gemm_tn_causal(dV, lddv, att, T, dO, lddo, T, Dv, 1.0f, false);
    /* dA = dO Vᵀ (lower triangle), then dS = att ⊙ (dA - rowsum(dA ⊙ att)) · scale */
    float *dS = scratch;
    int64_t band = tr_gemm_causal_band();
    tr_gemm_nt_causal(dS, T, dO, lddo, V, ldv, T, Dv, 1.0f);
    for (int64_t i = 0; i < T; i++) {
        const float *a = att + i * T;
        float *d = dS + i * T;
        float fd = (float)tr_vec_dot(a, d, i + 1);
        att_ds_row(d, a, fd, scale, i + 1);
        zero_above_diagonal(d, i, T, band);
    }
    /* dQ = dS K ;  dK = dSᵀ Q   (dS is lower-triangular) */
    tr_gemm_nn_causal(dQ, lddq, dS, T, K, ldk, T, Dk, 1.0f, false);
    tr_gemm_tn_causal(dK, lddk, dS, T, Q, ldq, T, Dk, 1.0f, false);
    tr_gemm_keep_fp32(false);
}

