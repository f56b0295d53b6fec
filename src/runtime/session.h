/*
 * session.h - one conversation's mutable state over a shared, read-only
 * model (llama.cpp's context): forward context (scratch), KV cache,
 * sampler, detokenizer stream and stop-string matcher, plus the one
 * generation step every front end uses.
 *
 * Ownership: a session owns all of the above, except that the server's
 * scheduler lends its sequences a KV cache (a slot's, kept for prefix
 * reuse) and runs one forward context for the whole batch; such sessions
 * are made with ds_session_init_step and have ctx == NULL, cache == NULL
 * until a slot is assigned.
 *
 * The generation step, after a forward gave this session's logits row L:
 *   tok = ds_session_sample(s, L)          sampler (penalties, temperature, ...)
 *   ds_session_accept(s, tok)              the sampler's history, n_gen
 *   ds_session_text(s, tok, &t, &n)        detokenized text (complete UTF-8)
 *   ds_session_show(s, t, n, final, ...)   what the stop strings let through
 * ds_generate (generate, chat) runs it per token; the server's scheduler
 * runs one batched forward and then the same step per sequence.
 */
#ifndef DS_SESSION_H
#define DS_SESSION_H

#include "../model/model.h"
#include "../tokenizer/tokenizer.h"
#include "sampler.h"
#include "stop.h"

typedef struct ds_session {
    const ds_model *m;          /* borrowed, read-only; shared with other sessions */
    ds_ctx *ctx;                /* forward scratch (owned), or NULL (the scheduler's) */
    ds_kvcache *cache;          /* &own_cache, or lent by the scheduler */
    ds_kvcache own_cache;
    ds_sampler smp;
    tok_stream ts;              /* detokenizer; only with a tokenizer */
    bool has_text;
    ds_stop stop;               /* stop strings over the text */
    int64_t n_gen;              /* tokens accepted since ds_session_begin */
    /* decode buffers, made once (no allocation per token) */
    float *logits;              /* (2, V) */
    float *mtp_logits;          /* (V) */
    float *hid;                 /* (max(prefill_chunk, 2), ds_model_hidden_width) the MTP input rows */
    int64_t hid_rows;
    float *h_last;              /* (ds_model_hidden_width) */
    int32_t *hist;              /* (window) tokens in the cache, for a sliding window */
    int64_t hist_cap;
} ds_session;

/* A full session: own forward context and a KV cache of max_ctx positions.
 * tok may be NULL (ids only: no text, no stop strings). */
int ds_session_init(ds_session *s, const ds_model *m, const ds_tokenizer *tok, int64_t max_ctx,
                    const ds_sampler_params *sp, ds_err *e);
/* The step state only (sampler, detokenizer, stop strings): no context, no
 * cache; the caller lends them (the server's scheduler). */
int ds_session_init_step(ds_session *s, const ds_model *m, const ds_tokenizer *tok, const ds_sampler_params *sp,
                         ds_err *e);
void ds_session_free(ds_session *s);

/* Adds a stop string (ds_stop_add). */
int ds_session_add_stop(ds_session *s, const char *str, ds_err *e);
/* Starts a reply: the sampler gets params sp (NULL: keep) and the prompt
 * (repetition penalty), the detokenizer and stop matcher start over, n_gen = 0.
 * The cache is left as it is (a caller may keep a prefix). */
int ds_session_begin(ds_session *s, const ds_sampler_params *sp, const int32_t *prompt, int64_t n, ds_err *e);

/* The step (see the top of this file). */
int32_t ds_session_sample(ds_session *s, float *logits);
void ds_session_accept(ds_session *s, int32_t tok);
/* Text of tok ("" for special tokens, a bad id, or without a tokenizer). */
void ds_session_text(ds_session *s, int32_t tok, const char **text, size_t *len);
/* Feeds text to the stop matcher; *emit (borrowed until the next call) is
 * what may be shown. final: nothing follows, release what is held back.
 * Returns true once a stop string matched. */
bool ds_session_show(ds_session *s, const char *text, size_t len, bool final, const char **emit, size_t *emit_len);
/* End of a reply: the detokenizer's held bytes through the stop matcher,
 * and whatever the matcher held back. */
void ds_session_finish(ds_session *s, const char **emit, size_t *emit_len);

/* Decode buffers for generation (logits, hidden states); made once. */
int ds_session_reserve(ds_session *s, int64_t prefill_chunk, int64_t window, ds_err *e);

#endif
