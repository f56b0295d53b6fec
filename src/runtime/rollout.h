/*
 * rollout.h - many completions of a few prompts at once, the sampling half
 * of GRPO and `eval --samples`: each prompt is prefilled once, its cache
 * copied to its G completions (ds_kvcache_copy_prefix), and every live
 * completion advances by one token per batched forward (one chunk per
 * sequence, as the server's scheduler does), each with its own sampler.
 * With several threads the live completions are split into one contiguous
 * group per thread, each forwarded on its own single-threaded context (one
 * synchronization per token step; small models are overhead-bound).
 *
 * Completion s = p·G + g (prompt p, sample g) samples with the seed
 * seed + s, so with the engine's batch invariance its tokens do not depend
 * on what else is in the batch: the sequential mode (one completion at a
 * time, prompt prefilled for each; the speed baseline) gives the same tokens.
 */
#ifndef DS_ROLLOUT_H
#define DS_ROLLOUT_H

#include "../model/model.h"
#include "sampler.h"

typedef struct ds_rollout_opts {
    int64_t max_new;           /* tokens per completion at most (the stop token included) */
    ds_sampler_params sp;      /* temperature (0 = greedy), top_p, ...; seed: see above */
    int32_t stop_id;           /* ends a completion (kept as its last token); -1 none */
    bool sequential;           /* one completion at a time (the baseline) */
} ds_rollout_opts;

typedef struct ds_rollout {
    int64_t n;                 /* P·G completions */
    int64_t max_new;
    int32_t *tok;              /* (n, max_new) */
    int64_t *len;              /* (n) tokens generated */
    bool *stopped;             /* (n) ended with stop_id */
    int64_t n_tokens;          /* Σ len */
    double t_prefill, t_decode;   /* seconds */
} ds_rollout;

/* prompts[p] (plen[p] tokens, >= 1), P prompts, G completions each. */
int ds_rollout_run(const ds_model *m, ds_ctx *x, const int32_t *const *prompts, const int64_t *plen, int64_t P, int64_t G,
                   const ds_rollout_opts *o, ds_rollout *out, ds_err *e);
void ds_rollout_free(ds_rollout *r);

#endif
