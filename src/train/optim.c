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
    memset(o, 0, sizeof *o);
    o->beta1 = beta1; o->beta2 = beta2; o->eps = eps; o->weight_decay = weight_decay;
    size_t n = (size_t)m->n_floats;
    o->m = ds_alloc(n * sizeof(float));
    o->v = ds_alloc(n * sizeof(float));
    o->kind = ds_alloc(n);
    if (!o->m || !o->v || !o->kind) { ds_adamw_free(o); return ds_err_set(e, DS_ENOMEM, "out of memory for AdamW state"); }
    for (int64_t i = 0; i < m->n_params; i++) {
        const ds_tparam *p = &m->params[i];
        if (p->trainable) memset(o->kind + p->off, p->decay ? 2 : 1, (size_t)p->numel);
    }
    return DS_OK;
}

void ds_adamw_free(ds_adamw *o) {
    ds_free(o->m); ds_free(o->v); ds_free(o->kind);
    o->m = o->v = NULL;
    o->kind = NULL;
}

typedef struct { ds_adamw *o; float *w; const float *g; float lr, bc1, bc2; } adam_ctx;

static void adam_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    adam_ctx *c = vc;
    ds_adamw *o = c->o;
    float b1 = o->beta1, b2 = o->beta2, decay = 1.0f - c->lr * o->weight_decay;
    for (int64_t i = i0; i < i1; i++) {
        uint8_t k = o->kind[i];
        if (!k) continue;
        float g = c->g[i];
        float mi = o->m[i] = b1 * o->m[i] + (1.0f - b1) * g;
        float vi = o->v[i] = b2 * o->v[i] + (1.0f - b2) * g * g;
        float w = c->w[i];
        if (k == 2) w *= decay;
        c->w[i] = w - c->lr * (mi / c->bc1) / (sqrtf(vi / c->bc2) + o->eps);
    }
}

void ds_adamw_step(ds_adamw *o, ds_tmodel *m, float lr) {
    o->t++;
    adam_ctx c = { o, m->w, m->g, lr, 1.0f - powf(o->beta1, (float)o->t), 1.0f - powf(o->beta2, (float)o->t) };
    ds_par_for(m->n_floats, 1 << 14, adam_worker, &c);
}

typedef struct { const float *g; const uint8_t *kind; double part[256]; } norm_ctx;

static void norm_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    norm_ctx *c = vc;
    double s = 0;
    for (int64_t i = i0; i < i1; i++)
        if (c->kind[i]) s += (double)c->g[i] * c->g[i];
    c->part[tid] = s;
}

double ds_grad_norm(const ds_tmodel *m, const ds_adamw *o) {
    norm_ctx c;
    memset(&c, 0, sizeof c);
    c.g = m->g;
    c.kind = o->kind;
    ds_par_for(m->n_floats, 1 << 14, norm_worker, &c);
    double s = 0;
    for (int t = 0; t < 256; t++) s += c.part[t];
    return sqrt(s);
}

void ds_grad_scale(ds_tmodel *m, float s) {
    for (int64_t i = 0; i < m->n_floats; i++) m->g[i] *= s;
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
