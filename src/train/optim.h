/*
 * optim.h - AdamW over the flat parameter arena, the learning-rate
 * schedule, global-norm gradient clipping and the auxiliary-loss-free
 * expert-bias update.
 *
 * AdamW (PyTorch's torch.optim.AdamW, decoupled weight decay):
 *   w ← w·(1 − lr·wd)                 (matrices only; not norms, not biases)
 *   m ← β1·m + (1−β1)·g ;  v ← β2·v + (1−β2)·g²
 *   w ← w − lr · (m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + eps)
 * e_score_correction_bias is not touched: it moves by
 *   b_i ← b_i + γ·sign(mean_j load_j − load_i)    per MoE layer, after each step
 * (DeepSeek-V3 §2.1.2; "load" = tokens routed to expert i in that step).
 */
#ifndef DS_OPTIM_H
#define DS_OPTIM_H

#include "tmodel.h"

/* Updates are split over threads in chunks of this many floats (from lo):
 * a ZeRO-1 shard that starts on a multiple of it updates bit-identically
 * to the same floats of an unsharded run, whatever the thread count. */
#define DS_ADAM_CHUNK 16384

typedef struct ds_adam_seg { int64_t off, n; bool decay; } ds_adam_seg;

typedef struct ds_adamw {
    float beta1, beta2, eps, weight_decay;
    int64_t t;             /* updates done */
    int64_t lo, hi;        /* the arena range this optimizer updates: all of it, or a ZeRO-1 shard */
    float *m, *v;          /* (hi - lo) moments of arena floats [lo, hi): m[i - lo] */
    uint8_t *kind;         /* (n_floats) 0 frozen, 1 no decay, 2 decay */
    ds_adam_seg *seg;      /* trainable ranges of the arena, merged, ascending */
    int64_t n_seg;
} ds_adamw;

int ds_adamw_init(ds_adamw *o, const ds_tmodel *m, float beta1, float beta2, float eps, float weight_decay, ds_err *e);
/* The same for the arena floats [lo, hi) only (a ZeRO-1 shard: moments for
 * those, updates touch only those parameters). */
int ds_adamw_init_range(ds_adamw *o, const ds_tmodel *m, int64_t lo, int64_t hi, float beta1, float beta2, float eps,
                        float weight_decay, ds_err *e);
void ds_adamw_free(ds_adamw *o);
/* One update with learning rate lr (increments t). */
void ds_adamw_step(ds_adamw *o, ds_tmodel *m, float lr);
/* The same with every gradient multiplied by gscale first (clipping folded
 * into the update: the same bits as ds_grad_scale then ds_adamw_step, one
 * pass over the arena fewer; m->g is left unscaled). */
void ds_adamw_step_scaled(ds_adamw *o, ds_tmodel *m, float lr, float gscale);

/* Global L2 norm of the trainable gradients (double accumulation, thread
 * order fixed: deterministic). NaN/inf if any gradient is. */
double ds_grad_norm(const ds_tmodel *m, const ds_adamw *o);
/* Scales all gradients by s. */
void ds_grad_scale(ds_tmodel *m, float s);

/* true if every parameter is finite */
bool ds_params_finite(const ds_tmodel *m);

typedef enum { DS_SCHED_COSINE = 0, DS_SCHED_CONSTANT = 1 } ds_schedule;
/* Linear warmup from lr/warmup to lr over `warmup` steps, then cosine decay
 * to min_lr at `total` steps (or constant lr). step counts from 0. */
float ds_lr_at(int64_t step, int64_t warmup, int64_t total, float lr, float min_lr, ds_schedule s);

/* Aux-loss-free bias update from m->load; returns the mean over MoE layers
 * of max_i load_i / mean load − 1 (MaxVio) before the update. */
double ds_bias_update(ds_tmodel *m, float gamma);
/* MaxVio only. */
double ds_load_maxvio(const ds_tmodel *m);

#endif
