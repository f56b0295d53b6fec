/*
 * mla_train.c - Multi-head Latent Attention for training: forward with
 * saved activations and backward. Training uses the decompressed ("naive")
 * form; it equals the absorbed inference form mathematically (spec §3.2-3.3).
 *
 *   q      = q_b(RMSNorm(q_a(x)))  or  q_proj(x)        (N, H, Dq) = [q_nope | q_pe]
 *   kv_a   = kv_a_proj(x)                                (N, Rkv + Dr)
 *   c      = RMSNorm(kv_a[:Rkv]),  k_pe = RoPE(kv_a[Rkv:])   (one rope key for all heads)
 *   kv     = kv_b(c)                                     (N, H, Dn + Dv) = [k_nope | v]
 *   k[h]   = [k_nope[h] | k_pe],  q_pe = RoPE(q_pe)
 *   o[h]   = softmax(scale · q[h] k[h]ᵀ + causal) v[h]   per sequence
 *   out    = o_proj(concat_h o)                          (N, D)
 * Backward runs the same steps in reverse; the shared rope key gathers the
 * gradient of every head.
 */
#include "tinternal.h"
#include "tops.h"
#include "../core/thread.h"
#include "../model/rope.h"

#include <math.h>
#include <string.h>

typedef struct {
    ds_tmodel *m;
    tr_block_acts *a;
    tr_grad_scratch *gs;
} mla_ctx;

/* cos/sin table for positions < T (grown on demand; angles exactly as
 * ds_rope_apply computes them, so results are bit-identical) */
int tr_rope_table(ds_tmodel *m, int64_t T) {
    if (m->rope_cap >= T) return DS_OK;
    int64_t half = m->cfg.qk_rope_head_dim / 2;
    float *t = ds_alloc((size_t)(T * half * 2) * sizeof(float));
    if (!t) return DS_ENOMEM;
    for (int64_t p = 0; p < T; p++)
        for (int64_t i = 0; i < half; i++) {
            float ang = (float)p * m->inv_freq[i];
            t[(p * half + i) * 2] = cosf(ang);
            t[(p * half + i) * 2 + 1] = sinf(ang);
        }
    ds_free(m->rope_cs);
    m->rope_cs = t;
    m->rope_cap = T;
    return DS_OK;
}

/* y = R(pos) x and its transpose, on interleaved pairs */
static inline void rope_rot(float *x, int64_t half, const float *cs) {
    for (int64_t i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1], a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = b * c + a * s;
    }
}

static inline void rope_unrot(float *x, int64_t half, const float *cs) {
    for (int64_t i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1], a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c + b * s;
        x[2 * i + 1] = b * c - a * s;
    }
}

/* rope q_pe of every head, rope k_pe, build expanded keys; rows [n0, n1) */
static void rope_keys_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    mla_ctx *c = vc;
    const ds_config *cfg = &c->m->cfg;
    tr_block_acts *a = c->a;
    int64_t H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim, Dq = Dn + Dr;
    int64_t Rkv = cfg->kv_lora_rank, W = Rkv + Dr, Dv = cfg->v_head_dim;
    float kpe[512];
    for (int64_t n = n0; n < n1; n++) {
        const float *cs = c->m->rope_cs + (n % a->T) * Dr;
        memcpy(kpe, a->kva + n * W + Rkv, (size_t)Dr * sizeof(float));
        rope_rot(kpe, Dr / 2, cs);
        for (int64_t h = 0; h < H; h++) {
            rope_rot(a->q + (n * H + h) * Dq + Dn, Dr / 2, cs);
            float *k = a->k + (n * H + h) * Dq;
            memcpy(k, a->kv + (n * H + h) * (Dn + Dv), (size_t)Dn * sizeof(float));
            memcpy(k + Dn, kpe, (size_t)Dr * sizeof(float));
        }
    }
}

static void attn_fwd_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    mla_ctx *c = vc;
    const ds_config *cfg = &c->m->cfg;
    tr_block_acts *a = c->a;
    int64_t H = cfg->n_head, Dq = cfg->qk_nope_head_dim + cfg->qk_rope_head_dim, Dn = cfg->qk_nope_head_dim;
    int64_t Dv = cfg->v_head_dim, T = a->T, KVW = H * (Dn + Dv);
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / H, h = i % H, r0 = b * T;
        tr_attention_forward(a->o + r0 * H * Dv + h * Dv, H * Dv, a->att + i * T * T,
                             a->q + r0 * H * Dq + h * Dq, H * Dq, a->k + r0 * H * Dq + h * Dq, H * Dq,
                             a->kv + r0 * KVW + h * (Dn + Dv) + Dn, KVW, T, Dq, Dv, c->m->attn_scale);
    }
}

void tr_mla_forward(tr_step *s, int64_t l, tr_block_acts *a, float *out) {
    ds_tmodel *m = s->m;
    const ds_config *cfg = &m->cfg;
    const ds_tlayer *w = &m->W.layers[l];
    int64_t N = a->N, D = cfg->hidden_size, H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim;
    int64_t Dq = Dn + Dr, Rq = cfg->q_lora_rank, Rkv = cfg->kv_lora_rank, W = Rkv + Dr, Dv = cfg->v_head_dim;
    float eps = (float)cfg->rms_norm_eps;
    /* queries */
    if (Rq > 0) {
        tr_linear_forward(a->qa, a->xn1, w->q_a, N, D, Rq);
        tr_rmsnorm_forward(a->qan, Rq, a->qa_rstd, a->qa, Rq, w->q_a_norm, N, Rq, eps);
        tr_linear_forward(a->q, a->qan, w->q_b, N, Rq, H * Dq);
    } else {
        tr_linear_forward(a->q, a->xn1, w->q_proj, N, D, H * Dq);
    }
    /* latent, its up-projection, rope key */
    tr_linear_forward(a->kva, a->xn1, w->kv_a, N, D, W);
    tr_rmsnorm_forward(a->c, Rkv, a->kv_rstd, a->kva, W, w->kv_a_norm, N, Rkv, eps);
    tr_linear_forward(a->kv, a->c, w->kv_b, N, Rkv, H * (Dn + Dv));
    mla_ctx c = { m, a, NULL };
    DS_ASSERT(Dr <= 512);
    DS_ASSERT(m->rope_cap >= a->T);   /* tr_rope_table, called by the step */
    ds_par_for(N, 64, rope_keys_worker, &c);
    /* attention per (sequence, head) */
    ds_par_for(a->B * H, 1, attn_fwd_worker, &c);
    tr_linear_forward(out, a->o, w->o_proj, N, H * Dv, D);
}

static void attn_bwd_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    mla_ctx *c = vc;
    const ds_config *cfg = &c->m->cfg;
    tr_block_acts *a = c->a;
    tr_grad_scratch *gs = c->gs;
    int64_t H = cfg->n_head, Dq = cfg->qk_nope_head_dim + cfg->qk_rope_head_dim, Dn = cfg->qk_nope_head_dim;
    int64_t Dv = cfg->v_head_dim, T = a->T, KVW = H * (Dn + Dv);
    float *scr = tr_scratch(tid, 0, (size_t)(T * T));
    if (!scr) return;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / H, h = i % H, r0 = b * T;
        int64_t qo = r0 * H * Dq + h * Dq, vo = r0 * KVW + h * (Dn + Dv) + Dn;
        tr_attention_backward(gs->dq + qo, H * Dq, gs->dk + qo, H * Dq, gs->dkv + vo, KVW,
                              gs->dout + r0 * H * Dv + h * Dv, H * Dv, a->att + i * T * T,
                              a->q + qo, H * Dq, a->k + qo, H * Dq, a->kv + vo, KVW, T, Dq, Dv, c->m->attn_scale, scr);
    }
}

/* dk -> dkv (k_nope part) and dkva (rope key, summed over heads); dq_pe un-roped */
static void unrope_worker(void *vc, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    mla_ctx *c = vc;
    const ds_config *cfg = &c->m->cfg;
    tr_block_acts *a = c->a;
    tr_grad_scratch *gs = c->gs;
    int64_t H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim, Dq = Dn + Dr;
    int64_t Rkv = cfg->kv_lora_rank, W = Rkv + Dr, Dv = cfg->v_head_dim;
    float dkpe[512];
    for (int64_t n = n0; n < n1; n++) {
        const float *cs = c->m->rope_cs + (n % a->T) * Dr;
        memset(dkpe, 0, (size_t)Dr * sizeof(float));
        for (int64_t h = 0; h < H; h++) {
            const float *dk = gs->dk + (n * H + h) * Dq;
            float *dkv = gs->dkv + (n * H + h) * (Dn + Dv);
            memcpy(dkv, dk, (size_t)Dn * sizeof(float));
            for (int64_t i = 0; i < Dr; i++) dkpe[i] += dk[Dn + i];
            rope_unrot(gs->dq + (n * H + h) * Dq + Dn, Dr / 2, cs);
        }
        rope_unrot(dkpe, Dr / 2, cs);
        memcpy(gs->dkva + n * W + Rkv, dkpe, (size_t)Dr * sizeof(float));
    }
}

void tr_mla_backward(tr_step *s, int64_t l, tr_block_acts *a, const float *dout, float *dxn1, tr_grad_scratch *gs) {
    ds_tmodel *m = s->m;
    const ds_config *cfg = &m->cfg;
    const ds_tlayer *w = &m->W.layers[l];
    ds_tlayer *g = &m->G.layers[l];
    int64_t N = a->N, D = cfg->hidden_size, H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim;
    int64_t Dq = Dn + Dr, Rq = cfg->q_lora_rank, Rkv = cfg->kv_lora_rank, W = Rkv + Dr, Dv = cfg->v_head_dim;
    /* output projection (dout, dq, dk, dkv, dc, dqan: first writes overwrite) */
    tr_linear_backward_set(gs->dout, g->o_proj, dout, a->o, w->o_proj, N, H * Dv, D);
    /* attention: writes dq, dk and the v part of dkv, one (sequence, head) slice each */
    mla_ctx c = { m, a, gs };
    ds_par_for(a->B * H, 1, attn_bwd_worker, &c);
    ds_par_for(N, 64, unrope_worker, &c);   /* writes the k_nope part of dkv and the rope part of dkva */
    for (int64_t n = 0; n < N; n++) memset(gs->dkva + n * W, 0, (size_t)Rkv * sizeof(float));
    /* latent path */
    tr_linear_backward_set(gs->dc, g->kv_b, gs->dkv, a->c, w->kv_b, N, Rkv, H * (Dn + Dv));
    tr_rmsnorm_backward(gs->dkva, W, g->kv_a_norm, gs->dc, Rkv, a->kva, W, w->kv_a_norm, a->kv_rstd, N, Rkv);
    tr_linear_backward(dxn1, g->kv_a, gs->dkva, a->xn1, w->kv_a, N, D, W);
    /* query path */
    if (Rq > 0) {
        memset(gs->dqa, 0, (size_t)(N * Rq) * sizeof(float));
        tr_linear_backward_set(gs->dqan, g->q_b, gs->dq, a->qan, w->q_b, N, Rq, H * Dq);
        tr_rmsnorm_backward(gs->dqa, Rq, g->q_a_norm, gs->dqan, Rq, a->qa, Rq, w->q_a_norm, a->qa_rstd, N, Rq);
        tr_linear_backward(dxn1, g->q_a, gs->dqa, a->xn1, w->q_a, N, D, Rq);
    } else {
        tr_linear_backward(dxn1, g->q_proj, gs->dq, a->xn1, w->q_proj, N, D, H * Dq);
    }
}
