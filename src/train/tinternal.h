/*
 * tinternal.h - private glue of src/train: saved activations and the
 * per-block forward/backward entry points shared by fwd_bwd.c (layer loop,
 * losses), mla_train.c (attention) and moe_train.c (feed-forward).
 */
#ifndef DS_TINTERNAL_H
#define DS_TINTERNAL_H

#include "tmodel.h"
#include "../core/arena.h"

/* What one decoder block saves in its forward pass (N = B·T rows). */
typedef struct tr_block_acts {
    int64_t B, T, N;
    float *x_in;          /* (N, D) block input (residual stream) */
    float *xn1, *rstd1;   /* (N, D), (N) attention RMSNorm */
    /* MLA */
    float *qa, *qa_rstd;  /* (N, Rq) q_a_proj output, (N) */
    float *qan;           /* (N, Rq) after q_a_layernorm */
    float *q;             /* (N, H·Dq) queries, q_pe roped */
    float *kva;           /* (N, Rkv+Dr) kv_a_proj output (pre-norm, pre-rope) */
    float *kv_rstd;       /* (N) */
    float *c;             /* (N, Rkv) normed latent */
    float *k;             /* (N, H·Dq) keys [k_nope | k_pe roped], expanded per head */
    float *kv;            /* (N, H·(Dn+Dv)) kv_b_proj(c): per head [k_nope | v] */
    float *att;           /* (B, H, T, T) attention probabilities */
    float *o;             /* (N, H·Dv) attention output per head */
    float *x_mid;         /* (N, D) after the attention residual */
    float *xn2, *rstd2;   /* (N, D), (N) FFN RMSNorm */
    /* dense FFN (gate and up weights are one (2I, D) matrix, see params.c) */
    float *gu;            /* (N, 2I) per row: gate | up pre-activations */
    float *sig, *h;       /* (N, I) sigmoid(g), silu(g)·u */
    /* MoE */
    float *rlog;          /* (N, E) router logits */
    float *scores;        /* (N, E) unbiased gate scores s */
    int32_t *idx;         /* (N, K) selected experts */
    float *wt;            /* (N, K) combine weights */
    int64_t *ex_off;      /* (E+1) slot offsets per expert */
    int32_t *slot_row;    /* (N·K) token row of each slot, grouped by expert, rows ascending */
    int32_t *slot_k;      /* (N·K) which of the token's K choices */
    int32_t *row_slots;   /* (N, K) the slots of each token row, ascending */
    float *egu;           /* (N·K, 2F) expert gate | up pre-activations per slot */
    float *esig, *eh;     /* (N·K, F) sigmoid(gate), silu(gate)·up per slot */
    float *ey;            /* (N·K, D) expert outputs per slot (before the combine weight) */
    float *sgu;           /* (N, 2·Es·F) shared experts */
    float *ssig, *sh;     /* (N, Es·F) */
    float *bal_f;         /* (B, E) f_i per sequence (balance loss), or NULL */
} tr_block_acts;

struct ds_tacts {
    ds_arena arena;       /* one step's buffers: reset at the start of every step (one block
                           * sized for the largest step, so steady-state steps do not call malloc) */
    tr_block_acts *blk;   /* [L + n_mtp] */
};

void ds_tacts_free(ds_tacts *a);

/* Gradient scratch shared by all blocks of one backward pass (max sizes). */
typedef struct tr_grad_scratch {
    float *dxn;           /* (N, D) */
    float *dq, *dk;       /* (N, H·Dq) */
    float *dkv;           /* (N, H·(Dn+Dv)) */
    float *dkva;          /* (N, Rkv+Dr) */
    float *dc;            /* (N, Rkv) */
    float *dqa, *dqan;    /* (N, Rq) */
    float *dout;          /* (N, H·Dv) attention output gradient */
    float *dgu;           /* (N, 2·max(I, Es·F)): d gate | d up */
    float *dh;            /* (N, max(I, Es·F)) */
    float *dwt;           /* (N, K) */
    float *dscores;       /* (N, E) */
    float *eslot_dy;      /* (N·K, D) */
    float *eslot_dgu;     /* (N·K, 2F) */
    float *eslot_dh;      /* (N·K, F) */
    float *eslot_dx;      /* (N·K, D) */
} tr_grad_scratch;

/* Context of one step: geometry, positions, loss weights. */
typedef struct tr_step {
    ds_tmodel *m;
    ds_arena *a;
    float balance_scale;  /* d loss / d balance_b (α·grad_scale / B), 0 = no balance gradient */
    bool want_balance;    /* compute the balance value in this block (main MoE layers) */
    double balance_sum;   /* Σ over sequences and layers of Σ_i f_i P_i */
    bool no_grad;
} tr_step;

/* Expert-parallel compute: each rank runs its own experts for every rank's
 * rows (src/train/ep.h) and keeps their gradients per source (dp.c sums them
 * in the fixed tree order). */
#include "ep.h"
typedef struct tr_ep_layer {
    ds_ep_plan plan;
    int64_t cap;                         /* rows allocated */
    float *xr, *gu, *sig, *h, *y, *dx, *dh, *dgu;
} tr_ep_layer;
typedef struct tr_ep {
    int n, rank;
    bool idle;                           /* this rank runs a throw-away unit: sends no rows */
    int rc;                              /* a failure inside the backward */
    ds_err err;
    tr_ep_layer *lay;                    /* [L + n_mtp] */
    float **gsrc;                        /* [n] each source's unit's gradient of the own experts
                                          * (n_floats - n_rep: the expert region of the arena) */
} tr_ep;
int tr_ep_init(ds_tmodel *m, ds_err *e);
void tr_ep_free(tr_ep *ep, int64_t nl);

/* Allocates a block's saved activations for (B, T) in the step arena. */
int tr_block_alloc(tr_step *s, int64_t l, tr_block_acts *a, int64_t B, int64_t T, ds_err *e);

/* x (N, n_streams = 1, D) in place: x += MLA(norm(x)); x += FFN(norm(x), tok),
 * the FFN by the layer's kind; saving acts. tok[N]: the rows' token ids. */
int tr_block_forward(tr_step *s, int64_t l, tr_block_acts *a, float *x, const int32_t *tok, ds_err *e);
/* dx (N, D) in place: gradient w.r.t. the block output -> w.r.t. its input.
 * Parameter gradients accumulate into m->G. */
void tr_block_backward(tr_step *s, int64_t l, tr_block_acts *a, float *dx, tr_grad_scratch *gs);

/* Makes m->rope_cs cover positions < T. DS_ENOMEM on failure. */
int tr_rope_table(ds_tmodel *m, int64_t T);

/* One forward + backward of B sequences on model m (fwd_bwd.c): kernels
 * parallel inside, or serial when called from a ds_par_for worker. Tokens
 * are not range-checked here. */
int tr_step_one(ds_tmodel *m, const int32_t *tokens, int64_t B, int64_t T, const ds_loss_opts *o, ds_losses *out,
                ds_err *e);
/* A worker model sharing master's parameters, with its own gradients,
 * activations and loads (params.c). */
int tr_worker_clone(const ds_tmodel *master, ds_tmodel **out, ds_err *e);
/* m->workers grown to at least n clones (params.c); existing ones kept. */
int tr_workers_reserve(ds_tmodel *m, int64_t n, ds_err *e);
/* Rebinds m->g and every gradient pointer to the arena g (params.c). */
void tr_bind_grad(ds_tmodel *m, float *g);
/* tr_bind_grad(m, g), then the tensors i with to_g2[i] point into the arena
 * g2 instead (at the same offsets); m->g stays g (params.c). */
void tr_bind_grad_split(ds_tmodel *m, float *g, float *g2, const bool *to_g2);
/* Whether parameter i is a linear weight whose gradient a step_one writes
 * with one tr_linear_backward* (dW += dyᵀ·x, at most once: an expert
 * without rows gets none): the projections of attention, the dense, shared
 * and routed experts' gate, up (the gate's GEMM) and down, the router and
 * eh_proj. Not the embeddings and heads (the MTP module may share them),
 * norms or biases (params.c). */
bool tr_param_one_product(const ds_tmodel *m, int64_t i);

/* The attention half: out[N, D] = MLA(xn1) (mla_train.c). */
void tr_mla_forward(tr_step *s, int64_t l, tr_block_acts *a, float *out);
/* dxn1 += ∂/∂xn1 given dout[N, D]. */
void tr_mla_backward(tr_step *s, int64_t l, tr_block_acts *a, const float *dout, float *dxn1, tr_grad_scratch *gs);

/* The FFN half: out[N, D] = FFN(xn2) by ffn_kind[l] (moe_train.c; tok[N] for
 * hash routing). Routing counts go to
 * m->load; for main MoE layers with s->want_balance the balance term too. */
int tr_ffn_forward(tr_step *s, int64_t l, tr_block_acts *a, float *out, const int32_t *tok, ds_err *e);
void tr_ffn_backward(tr_step *s, int64_t l, tr_block_acts *a, const float *dout, float *dxn2, tr_grad_scratch *gs);

/* Router backward helper, exposed for the finite-difference test:
 * from d loss / d wt (K) and d loss / d scores (E, e.g. the balance term),
 * accumulates d loss / d router logits (E) for one token. */
void tr_route_backward(const ds_config *c, float *dlogits, const float *dwt, const float *dscores_extra,
                       const float *scores, const int32_t *idx);
/* Balance gradient for one token: dscores[j] += scale/T·(f_j/S − Σ_i f_i s_i/S²). */
void tr_balance_backward(float *dscores, const float *scores, const float *f, int64_t E, int64_t T, float scale);

#endif
