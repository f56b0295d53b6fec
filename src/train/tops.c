/*
 * tops.c - training kernels (see tops.h). Row loops run on both cores
 * through ds_par_for; reductions over rows (norm weight gradients, losses)
 * use per-thread partials combined in thread order, so results are
 * bit-identical run to run for a given thread count.
 */
#include "tops.h"
#include "../core/thread.h"
#include "../tensor/ops.h"

#include <math.h>
#include <string.h>

#define TR_MAX_THREADS 256

/* ---------------------------------------------------------------- scratch */

static float *g_scr[TR_MAX_THREADS][TR_SCRATCH_SLOTS];
static size_t g_cap[TR_MAX_THREADS][TR_SCRATCH_SLOTS];

float *tr_scratch(int tid, int slot, size_t n) {
    DS_ASSERT(tid >= 0 && tid < TR_MAX_THREADS && slot >= 0 && slot < TR_SCRATCH_SLOTS);
    if (g_cap[tid][slot] < n) {
        ds_free(g_scr[tid][slot]);
        g_scr[tid][slot] = ds_alloc(n * sizeof(float));
        DS_ASSERT(g_scr[tid][slot] != NULL);
        g_cap[tid][slot] = n;
    }
    return g_scr[tid][slot];
}

void tr_scratch_free(void) {
    for (int i = 0; i < TR_MAX_THREADS; i++)
        for (int j = 0; j < TR_SCRATCH_SLOTS; j++) {
            ds_free(g_scr[i][j]);
            g_scr[i][j] = NULL;
            g_cap[i][j] = 0;
        }
}

/* ---------------------------------------------------------------- linear */

void tr_linear_forward(float *y, const float *x, const float *W, int64_t N, int64_t I, int64_t O) {
    ds_sgemm(false, true, N, O, I, 1.0f, x, I, W, I, 0.0f, y, O);
}

void tr_linear_backward(float *dx, float *dW, const float *dy, const float *x, const float *W, int64_t N, int64_t I,
                        int64_t O) {
    if (dx) ds_sgemm(false, false, N, I, O, 1.0f, dy, O, W, I, 1.0f, dx, I);
    if (dW) ds_sgemm(true, false, O, I, N, 1.0f, dy, O, x, I, 1.0f, dW, I);
}

/* ---------------------------------------------------------------- rmsnorm */

typedef struct {
    float *out; int64_t ldo; float *rstd; const float *x; int64_t ldx; const float *w; int64_t D; float eps;
} rms_fwd_ctx;

static void rms_fwd_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    rms_fwd_ctx *c = vc;
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

static void rms_bwd_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    rms_bwd_ctx *c = vc;
    float *dwp = c->dw_part ? c->dw_part + (int64_t)tid * c->D : NULL;
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
    int nt = ds_threads_get();
    float *part = NULL;
    if (dw) {
        part = tr_scratch(0, 3, (size_t)(nt * D));
        memset(part, 0, (size_t)(nt * D) * sizeof(float));
    }
    rms_bwd_ctx c = { dx, lddx, dout, lddo, x, ldx, w, rstd, D, part };
    ds_par_for(N, DS_MAX(1, 4096 / DS_MAX(D, 1)), rms_bwd_worker, &c);
    if (dw)
        for (int t = 0; t < nt; t++)
            for (int64_t i = 0; i < D; i++) dw[i] += part[(int64_t)t * D + i];
}

/* ---------------------------------------------------------------- swiglu */

typedef struct { float *h, *dg, *du; const float *g, *u, *dh; } swiglu_ctx;

static void swiglu_fwd_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    swiglu_ctx *c = vc;
    for (int64_t i = i0; i < i1; i++) c->h[i] = c->g[i] / (1.0f + expf(-c->g[i])) * c->u[i];
}

void tr_swiglu_forward(float *h, const float *g, const float *u, int64_t n) {
    swiglu_ctx c = { h, NULL, NULL, g, u, NULL };
    ds_par_for(n, 16384, swiglu_fwd_worker, &c);
}

static void swiglu_bwd_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    swiglu_ctx *c = vc;
    for (int64_t i = i0; i < i1; i++) {
        float g = c->g[i], s = 1.0f / (1.0f + expf(-g)), silu = g * s;
        c->dg[i] += c->dh[i] * c->u[i] * s * (1.0f + g * (1.0f - s));
        c->du[i] += c->dh[i] * silu;
    }
}

void tr_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    swiglu_ctx c = { NULL, dg, du, g, u, dh };
    ds_par_for(n, 16384, swiglu_bwd_worker, &c);
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
        float mx = -INFINITY;
        for (int64_t v = 0; v < c->V; v++) mx = row[v] > mx ? row[v] : mx;
        double s = 0.0;
        for (int64_t v = 0; v < c->V; v++) s += exp((double)(row[v] - mx));
        double lse = (double)mx + log(s);
        sum += lse - (double)row[tgt];
        for (int64_t v = 0; v < c->V; v++) row[v] = (float)exp((double)row[v] - lse) * c->dscale;
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

/* ---------------------------------------------------------------- attention */

void tr_attention_forward(float *O, int64_t ldo, float *att, const float *Q, int64_t ldq, const float *K, int64_t ldk,
                          const float *V, int64_t ldv, int64_t T, int64_t Dk, int64_t Dv, float scale) {
    ds_sgemm(false, true, T, T, Dk, scale, Q, ldq, K, ldk, 0.0f, att, T);
    for (int64_t i = 0; i < T; i++) {
        float *row = att + i * T;
        for (int64_t j = i + 1; j < T; j++) row[j] = -INFINITY;
        ds_softmax(row, i + 1);
        for (int64_t j = i + 1; j < T; j++) row[j] = 0.0f;
    }
    ds_sgemm(false, false, T, Dv, T, 1.0f, att, T, V, ldv, 0.0f, O, ldo);
}

void tr_attention_backward(float *dQ, int64_t lddq, float *dK, int64_t lddk, float *dV, int64_t lddv, const float *dO,
                           int64_t lddo, const float *att, const float *Q, int64_t ldq, const float *K, int64_t ldk,
                           const float *V, int64_t ldv, int64_t T, int64_t Dk, int64_t Dv, float scale, float *scratch) {
    /* dV += attᵀ dO */
    ds_sgemm(true, false, T, Dv, T, 1.0f, att, T, dO, lddo, 1.0f, dV, lddv);
    /* dA = dO Vᵀ, then dS = att ⊙ (dA - rowsum(dA ⊙ att)) · scale */
    float *dS = scratch;
    ds_sgemm(false, true, T, T, Dv, 1.0f, dO, lddo, V, ldv, 0.0f, dS, T);
    for (int64_t i = 0; i < T; i++) {
        const float *a = att + i * T;
        float *d = dS + i * T;
        double dot = 0.0;
        for (int64_t j = 0; j <= i; j++) dot += (double)a[j] * d[j];
        float fd = (float)dot;
        for (int64_t j = 0; j <= i; j++) d[j] = a[j] * (d[j] - fd) * scale;
        for (int64_t j = i + 1; j < T; j++) d[j] = 0.0f;
    }
    /* dQ += dS K ;  dK += dSᵀ Q */
    ds_sgemm(false, false, T, Dk, T, 1.0f, dS, T, K, ldk, 1.0f, dQ, lddq);
    ds_sgemm(true, false, T, Dk, T, 1.0f, dS, T, Q, ldq, 1.0f, dK, lddk);
}
