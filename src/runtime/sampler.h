/*
 * sampler.h - next-token selection from logits.
 *
 * Order of operations (the usual one, as in HF and llama.cpp):
 *   1. repetition penalty over every token seen (prompt + output; HF/CTRL:
 *      logit > 0 ? logit / p : logit * p)
 *   2. frequency / presence penalties over the tokens generated so far
 *      (OpenAI: logit -= count·frequency + (count > 0)·presence)
 *   3. temperature == 0 -> argmax (ties: lowest id)
 *   4. logits / temperature, top-k, softmax, top-p (nucleus), min-p
 *   5. draw with the sampler's own RNG (same seed -> same tokens)
 *
 * Cost (sampler.c): time linear in the vocabulary with a small constant and
 * no sort of it. Penalties touch only the tokens seen; temperature alone is
 * two vector passes (max, exp with block sums) and a draw that walks the
 * block sums, then one block; top-k keeps a k-entry heap in one pass and
 * sorts those k; top-p / min-p gather the ids whose probability is above a
 * threshold that holds enough mass (one vector pass when the distribution
 * is peaked), bin them by logit, sort only the bin where top-p cuts, and
 * draw among the kept ones in id order (no list of them is made). Same distribution as the sorting twin (sampler_ref.c);
 * with top-k the same tokens.
 */
#ifndef DS_SAMPLER_H
#define DS_SAMPLER_H

#include "../core/base.h"
#include "../core/rng.h"

typedef struct ds_sampler_params {
    float temperature;          /* 0 = greedy */
    int32_t top_k;              /* 0 = off */
    float top_p;                /* 1 = off */
    float min_p;                /* 0 = off */
    float repetition_penalty;   /* 1 = off */
    float frequency_penalty;    /* 0 = off */
    float presence_penalty;     /* 0 = off */
    uint64_t seed;
} ds_sampler_params;

void ds_sampler_params_default(ds_sampler_params *p);
/* Checks ranges; names the bad field. */
int ds_sampler_params_check(const ds_sampler_params *p, ds_err *e);

typedef struct ds_sampler {
    ds_sampler_params p;
    int64_t vocab;
    ds_rng rng;
    int32_t *seen;      /* (V) occurrences in prompt + output */
    int32_t *out_count; /* (V) occurrences in output */
    int32_t *hist;      /* (V) the distinct ids with seen > 0, in first-seen order */
    int64_t n_hist;
    int32_t *order;     /* (V) scratch: candidate ids */
    float *probs;       /* (V) scratch */
    uint64_t *keys;     /* (2V) scratch: candidate sort keys */
    int32_t *bin;       /* (V) scratch: the ids of top-p's boundary bin */
    uint16_t *binid;    /* (V) scratch: each candidate's bin */
    struct nucleus *nu; /* scratch: what top-p / min-p keep (sampler.c) */
    double *bsum;       /* (V / DS_VBLOCK + 1) scratch: block sums of probs */
} ds_sampler;

int ds_sampler_init(ds_sampler *s, const ds_sampler_params *p, int64_t vocab, ds_err *e);
void ds_sampler_free(ds_sampler *s);
/* Forget history (keeps the RNG state unless reseed). */
void ds_sampler_reset(ds_sampler *s, bool reseed);
/* Records prompt tokens (repetition penalty only). */
void ds_sampler_add_prompt(ds_sampler *s, const int32_t *ids, int64_t n);
/* Records a generated token. */
void ds_sampler_accept(ds_sampler *s, int32_t id);
/* Picks the next token; modifies logits in place (penalties, temperature). */
int32_t ds_sampler_sample(ds_sampler *s, float *logits);
/* The tokens ds_sampler_sample can draw from these logits (those with a
 * probability above 0 after the settings), in no stated order, into ids
 * (V entries); returns how many. Modifies logits as ds_sampler_sample does
 * and draws nothing. For tests. */
int64_t ds_sampler_kept(ds_sampler *s, float *logits, int32_t *ids);

/* The plain twin (sampler_ref.c): the same steps over the whole vocabulary
 * with a full sort. _candidates_ref writes the tokens that can be drawn in
 * draw order and their probabilities (not renormalized after top-p/min-p;
 * ids, probs: V entries) and returns how many; _sample_ref draws one as
 * ds_sampler_sample does (identical tokens on the top-k path). Both modify
 * logits; neither records the token. */
int64_t ds_sampler_candidates_ref(ds_sampler *s, float *logits, int32_t *ids, float *probs);
int32_t ds_sampler_sample_ref(ds_sampler *s, float *logits);

/* log-softmax of logits[V] into out[V] (for logprobs). */
void ds_log_softmax(float *out, const float *logits, int64_t V);

#endif
