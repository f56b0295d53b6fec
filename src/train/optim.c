/*
 * optim.c - AdamW, schedule, clipping, expert-bias update (see optim.h).
 * Flat loops over the arena, split across threads with ds_par_for.
 */
#include "optim.h"
#include "../core/thread.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int ds_adamw_init(ds_adamw *o, const ds_tmodel *m, float beta1, float beta2, float eps, float weight_decay, ds_err *e) {
    return ds_adamw_init_range(o, m, 0, m->n_floats, beta1, beta2, eps, weight_decay, e);
}

int ds_adamw_init_range(ds_adamw *o, const ds_tmodel *m, int64_t lo, int64_t hi, float beta1, float beta2, float eps,
                        float weight_decay, ds_err *e) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1; o->beta2 = beta2; o->eps = eps; o->weight_decay = weight_decay;
    if (lo < 0 || hi < lo || hi > m->n_floats)
        return ds_err_set(e, DS_EINVAL, "AdamW range [%lld, %lld) outside the %lld parameters", (long long)lo,
                          (long long)hi, (long long)m->n_floats);
    o->lo = lo;
    o->hi = hi;
    size_t n = (size_t)m->n_floats, ns = (size_t)DS_MAX(hi - lo, 1);
    o->m = ds_alloc_huge(ns * sizeof(float));
    o->v = ds_alloc_huge(ns * sizeof(float));
    o->kind = ds_alloc(n);
    if (!o->m || !o->v || !o->kind) { ds_adamw_free(o); return ds_err_set(e, DS_ENOMEM, "out of memory for AdamW state"); }
    o->seg = calloc((size_t)m->n_params + 1, sizeof *o->seg);
    if (!o->seg) { ds_adamw_free(o); return ds_err_set(e, DS_ENOMEM, "out of memory for AdamW state"); }
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        if (!p->trainable || p->off < 0) continue;   /* (off < 0: another rank's expert) */
        memset(o->kind + p->off, p->decay ? 2 : 1, (size_t)p->numel);
        /* arena order: merge with the previous segment when adjacent and alike */
        if (o->n_seg && o->seg[o->n_seg - 1].decay == p->decay &&
            o->seg[o->n_seg - 1].off + o->seg[o->n_seg - 1].n == p->off)
            o->seg[o->n_seg - 1].n = p->off + p->numel - o->seg[o->n_seg - 1].off;
        else
            o->seg[o->n_seg++] = (ds_adam_seg){ p->off, p->numel, p->decay };
    }
    return DS_OK;
}

void ds_adamw_free(ds_adamw *o) {
    ds_free(o->m); ds_free(o->v); ds_free(o->kind);
    free(o->seg);
    o->seg = NULL;
    o->n_seg = 0;
    o->m = o->v = NULL;
    o->kind = NULL;
}

typedef struct { ds_adamw *o; float *w; const float *g; float lr, bc1, bc2, gs; } adam_ctx;

/* w, m, v over [i0, i1) of one segment (decay fixed) */
static void adam_span(adam_ctx *c, int64_t i0, int64_t i1, bool decay) {
    ds_adamw *o = c->o;
    float b1 = o->beta1, b2 = o->beta2, dec = decay ? 1.0f - c->lr * o->weight_decay : 1.0f;
    float ib1 = 1.0f / c->bc1, ib2 = 1.0f / c->bc2;
    int64_t lo = o->lo;   /* moments are indexed from the range's start; i in [lo, hi) */
    for (int64_t i = i0; i < i1; i++) {
        float g = c->gs == 1.0f ? c->g[i] : c->g[i] * c->gs;
        float mi = o->m[i - lo] = b1 * o->m[i - lo] + (1.0f - b1) * g;
        float vi = o->v[i - lo] = b2 * o->v[i - lo] + (1.0f - b2) * g * g;
        c->w[i] = c->w[i] * dec - c->lr * (mi * ib1) / (sqrtf(vi * ib2) + o->eps);
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static void adam_span_avx2(adam_ctx *c, int64_t i0, int64_t i1, bool decay) {
    ds_adamw *o = c->o;
    int64_t i = i0;
    __m256 b1 = _mm256_set1_ps(o->beta1), b2 = _mm256_set1_ps(o->beta2);
    __m256 nb1 = _mm256_set1_ps(1.0f - o->beta1), nb2 = _mm256_set1_ps(1.0f - o->beta2);
    __m256 dec = _mm256_set1_ps(decay ? 1.0f - c->lr * o->weight_decay : 1.0f);
    __m256 ib1 = _mm256_set1_ps(1.0f / c->bc1), ib2 = _mm256_set1_ps(1.0f / c->bc2);
    __m256 lr = _mm256_set1_ps(c->lr), eps = _mm256_set1_ps(o->eps), gs = _mm256_set1_ps(c->gs);
    bool scaled = c->gs != 1.0f;
    for (; i + 8 <= i1; i += 8) {
        __m256 g = _mm256_loadu_ps(c->g + i);
        if (scaled) g = _mm256_mul_ps(g, gs);
        __m256 m = _mm256_fmadd_ps(b1, _mm256_loadu_ps(o->m + (i - o->lo)), _mm256_mul_ps(nb1, g));
        __m256 v = _mm256_fmadd_ps(b2, _mm256_loadu_ps(o->v + (i - o->lo)), _mm256_mul_ps(_mm256_mul_ps(nb2, g), g));
        _mm256_storeu_ps(o->m + (i - o->lo), m);
        _mm256_storeu_ps(o->v + (i - o->lo), v);
        __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(v, ib2)), eps);
        __m256 upd = _mm256_div_ps(_mm256_mul_ps(lr, _mm256_mul_ps(m, ib1)), den);
        _mm256_storeu_ps(c->w + i, _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(c->w + i), dec), upd));
    }
    adam_span(c, i, i1, decay);
}
#endif

static bool avx2(void) { return ds_cpu_avx2_fma(); }

/* Calls fn on the pieces of [i0, i1) covered by trainable segments. */
static void for_segments(const ds_adamw *o, int64_t i0, int64_t i1, void (*fn)(void *, int64_t, int64_t, bool), void *ctx) {
    for (int64_t s = 0; s < o->n_seg; s++) {
        int64_t a = DS_MAX(i0, o->seg[s].off), b = DS_MIN(i1, o->seg[s].off + o->seg[s].n);
        if (a < b) fn(ctx, a, b, o->seg[s].decay);
    }
}

static void adam_piece(void *vc, int64_t a, int64_t b, bool decay) {
#if defined(__x86_64__)
    if (avx2()) { adam_span_avx2(vc, a, b, decay); return; }
#endif
    adam_span(vc, a, b, decay);
}

/* Work is split in whole chunks of DS_ADAM_CHUNK floats from lo, so where a
 * vector loop starts (and the scalar tail ends) depends only on the chunk
 * and segment boundaries: the same bits for any thread count and for any
 * ZeRO-1 sharding whose shards start on a chunk boundary. */
static void adam_worker(void *vc, int64_t c0, int64_t c1, int tid) {
    (void)tid;
    adam_ctx *c = vc;
    int64_t lo = c->o->lo, hi = c->o->hi;
    for_segments(c->o, lo + c0 * DS_ADAM_CHUNK, DS_MIN(hi, lo + c1 * DS_ADAM_CHUNK), adam_piece, c);
}

void ds_adamw_step_scaled(ds_adamw *o, ds_tmodel *m, float lr, float gscale) {
    o->t++;
    adam_ctx c = { o, m->w, m->g, lr, 1.0f - powf(o->beta1, (float)o->t), 1.0f - powf(o->beta2, (float)o->t), gscale };
    ds_par_for((o->hi - o->lo + DS_ADAM_CHUNK - 1) / DS_ADAM_CHUNK, 1, adam_worker, &c);
}

void ds_adamw_step(ds_adamw *o, ds_tmodel *m, float lr) { ds_adamw_step_scaled(o, m, lr, 1.0f); }

typedef struct { const float *g; const ds_adamw *o; double part[256]; } norm_ctx;
typedef struct { const float *g; double s; } norm_acc;

static void norm_piece(void *vc, int64_t a, int64_t b, bool decay) {
    (void)decay;
    norm_acc *c = vc;
    float f[8] = { 0 };   /* 8 float lanes (vectorizable), folded into double per piece */
    int64_t i = a;
    for (; i + 8 <= b; i += 8)
        for (int k = 0; k < 8; k++) f[k] += c->g[i + k] * c->g[i + k];
    double s = 0;
    for (int k = 0; k < 8; k++) s += f[k];
    for (; i < b; i++) s += (double)c->g[i] * c->g[i];
    c->s += s;
}

static void norm_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    norm_ctx *c = vc;
    norm_acc acc = { c->g, 0.0 };
    for_segments(c->o, i0, i1, norm_piece, &acc);
    c->part[tid] = acc.s;
}

double ds_grad_norm(const ds_tmodel *m, const ds_adamw *o) {
    norm_ctx c;
    memset(&c, 0, sizeof c);
    c.g = m->g;
    c.o = o;
    ds_par_for(m->n_floats, 1 << 14, norm_worker, &c);
    double s = 0;
    for (int t = 0; t < 256; t++) s += c.part[t];
    return sqrt(s);
}

typedef struct { float *g; float s; } scale_ctx;

static void scale_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    scale_ctx *c = vc;
    for (int64_t i = i0; i < i1; i++) c->g[i] *= c->s;
}

void ds_grad_scale(ds_tmodel *m, float s) {
    scale_ctx c = { m->g, s };
    ds_par_for(m->n_floats, 1 << 14, scale_worker, &c);
}

bool ds_params_finite(const ds_tmodel *m) {
    for (int64_t i = 0; i < m->n_floats; i++)
        if (!isfinite(m->w[i])) return false;
    return true;
}

float ds_lr_at(int64_t step, int64_t warmup, int64_t total, float lr, float min_lr, ds_schedule s) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (s == DS_SCHED_CONSTANT || total <= warmup) return lr;
    double p = (double)(step - warmup) / (double)(total - warmup);
    if (p > 1) p = 1;
    return min_lr + (float)(0.5 * (1.0 + cos(M_PI * p))) * (lr - min_lr);
}

static double layer_maxvio(const int64_t *load, int64_t E) {
    int64_t sum = 0, mx = 0;
    for (int64_t i = 0; i < E; i++) { sum += load[i]; mx = DS_MAX(mx, load[i]); }
    return sum ? (double)mx * (double)E / (double)sum - 1.0 : 0.0;
}

double ds_load_maxvio(const ds_tmodel *m) {
    int64_t E = m->cfg.n_routed_experts, n = 0;
    double s = 0;
    for (int64_t l = 0; l < m->cfg.n_layer; l++)
        if (m->W.layers[l].is_moe) { s += layer_maxvio(m->load + l * E, E); n++; }
    return n ? s / (double)n : 0.0;
}

double ds_bias_update(ds_tmodel *m, float gamma) {
    double mv = ds_load_maxvio(m);
    int64_t E = m->cfg.n_routed_experts;
    if (gamma == 0.0f) return mv;
    for (int64_t l = 0; l < m->cfg.n_layer + m->n_mtp; l++) {
        float *b = m->W.layers[l].router_bias;
        if (!b) continue;
        const int64_t *load = m->load + l * E;
        int64_t sum = 0;
        for (int64_t i = 0; i < E; i++) sum += load[i];
        /* sign(mean − load_i), compared exactly in integers: E·load_i vs Σ load */
        for (int64_t i = 0; i < E; i++) {
            int64_t d = sum - E * load[i];
            b[i] += d > 0 ? gamma : d < 0 ? -gamma : 0.0f;
        }
    }
    return mv;
}
