/*
 * grpo.h - GRPO's clipped policy-gradient objective with the k3 KL term on
 * the trainable model (DeepSeekMath §4.1, DeepSeek-R1 §2.2.1), and the batch
 * file `deepseek grad --grpo` reads.
 *
 * For S samples s (prompt p_s, completion o_s of |o_s| tokens, advantage A_s,
 * the sampling policy's log-probabilities old_{s,t} and the reference model's
 * ref_{s,t}), with lp_{s,t} = log πθ(o_{s,t} | p_s, o_{s,<t}) from the model:
 *   ρ = exp(lp − old),  r = ref − lp
 *   term_{s,t} = min(ρ·A_s, clip(ρ, 1−ε, 1+ε)·A_s) − β·(e^r − r − 1)
 *   L  = −Σ_s c_s Σ_t term_{s,t}
 *   kl = (1/S) Σ_s (1/|o_s|) Σ_t (e^r − r − 1)
 * with the per-sample normalisation c_s chosen by `norm`:
 *   DS_GRPO_NORM_SEQ    c_s = 1/(S·|o_s|)       GRPO (the default)
 *   DS_GRPO_NORM_TOKEN  c_s = 1/Σ_s' |o_s'|     DAPO's token-level mean
 *   DS_GRPO_NORM_CONST  c_s = 1/(S·norm_len)    Dr. GRPO's constant
 *
 * Gradient (what the ds_token_loss hook of tmodel.h accumulates): lp enters
 * only through ρ and r, so ∂L/∂θ = Σ_{s,t} w_{s,t}·∂(−lp_{s,t})/∂θ with
 *   w_{s,t} = c_s·(g_{s,t} + β·(e^r − 1)),
 *   g = ρ·A where the min takes the unclipped branch, 0 where it takes the
 *   clipped constant (A > 0 and ρ > 1+ε, or A < 0 and ρ < 1−ε: "clipped").
 * (Inside [1−ε, 1+ε] both branches are equal and both have slope ρ·A.)
 */
#ifndef DS_GRPO_H
#define DS_GRPO_H

#include "tmodel.h"

typedef struct ds_grpo_sample {
    int32_t *prompt;       /* [n_prompt] >= 1 token */
    int64_t n_prompt;
    int32_t *completion;   /* [n_completion] >= 1 token */
    int64_t n_completion;
    double advantage;      /* A_s */
    float *old_lp, *ref_lp;   /* [n_completion] each */
} ds_grpo_sample;

typedef enum { DS_GRPO_NORM_SEQ = 0, DS_GRPO_NORM_TOKEN, DS_GRPO_NORM_CONST } ds_grpo_norm;

typedef struct ds_grpo_opts {
    double epsilon;        /* ε (clip range), > 0 */
    double beta;           /* β (KL weight), >= 0 */
    ds_grpo_norm norm;
    int64_t norm_len;      /* DS_GRPO_NORM_CONST's constant (e.g. the max completion length) */
    int64_t micro_batch;   /* samples per forward/backward (0 = all at once) */
} ds_grpo_opts;

typedef struct ds_grpo_stats {
    double loss, kl;       /* L, kl as above */
    double clip_frac;      /* clipped tokens / all completion tokens */
    double ratio_mean;     /* mean ρ over tokens */
    int64_t tokens;        /* Σ |o_s| */
} ds_grpo_stats;

/* Checks the samples against the model (ids in range, non-empty prompt and
 * completion, finite advantages and log-probabilities); the message names
 * samples[i] and the field. */
int ds_grpo_check(const ds_tmodel *m, const ds_grpo_sample *s, int64_t S, ds_err *e);

/* Forward + backward of L over the samples: the gradient is accumulated into
 * m->g (+=, call ds_tmodel_zero_grad first). With no_grad only the forward
 * runs (stats still filled). lp_out (optional, Σ|o_s| floats, samples in
 * order): the policy's log-probabilities of the completion tokens — the way
 * GRPO gets π_old and π_ref from the training forward. old_lp / ref_lp may
 * be NULL when only lp_out is wanted (then ρ = 1, r = 0). */
int ds_grpo_step(ds_tmodel *m, const ds_grpo_sample *s, int64_t S, const ds_grpo_opts *o, bool no_grad,
                 ds_grpo_stats *st, float *lp_out, ds_err *e);

/* A batch file: {"epsilon": ε, "beta": β, "samples": [{"prompt": [ids],
 * "completion": [ids], "advantage": A, "old_logprobs": [...],
 * "ref_logprobs": [...]}, ...]}. vocab bounds the ids. Errors name the file
 * and the field (samples[i].old_logprobs: 5 values for 6 completion tokens). */
typedef struct ds_grpo_batch {
    double epsilon, beta;
    ds_grpo_sample *samples;
    int64_t n;
} ds_grpo_batch;

int ds_grpo_batch_load(ds_grpo_batch *b, const char *path, int64_t vocab, ds_err *e);
void ds_grpo_batch_free(ds_grpo_batch *b);

#endif
