/*
 * generate.h - the decoding loop of one session: prefill a prompt through
 * its cache, then run the generation step (session.h) one token at a time
 * until a stop condition.
 */
#ifndef DS_GENERATE_H
#define DS_GENERATE_H

#include "../model/model.h"
#include "session.h"

typedef struct ds_gen_opts {
    int64_t max_tokens;        /* new tokens at most */
    const int32_t *stop_ids;   /* generation ends after emitting one of these */
    int n_stop_ids;
    int64_t prefill_chunk;     /* tokens per prefill forward (0 = 512) */
    bool mtp;                  /* speculative decoding with the MTP module as drafter */
    /* Sliding context: when the cache holds `window` positions and another
     * token must go in, the oldest half (after the first token, usually BOS)
     * is dropped and the rest recomputed. 0 = stop with an error instead.
     * Plain decoding only. */
    int64_t window;
    /* tests only: replaces the MTP draft for the token at position pos */
    int32_t (*draft_override)(void *ud, int64_t pos, int32_t mtp_draft);
    void *draft_ud;
} ds_gen_opts;

typedef struct ds_gen_stats {
    int64_t n_prompt, n_gen;
    double t_prefill, t_decode;   /* seconds */
    int finish;                   /* 0 length, 1 stop token, 2 stopped by callback, 3 stop string */
    int64_t n_draft, n_accepted;  /* MTP speculative decoding */
    int64_t n_main_forwards;      /* main-model decode passes */
    int64_t n_shifts;             /* context-window slides */
} ds_gen_stats;

/* Called for each generated token with the text it lets through the stop
 * strings (borrowed; "" without a tokenizer and for stop tokens); return
 * non-zero to stop. */
typedef int (*ds_token_cb)(void *ud, int32_t tok, const char *text, size_t len);

/* Appends prompt[0..n) to the session's cache (which may already hold a
 * prefix), then generates with the session's sampler, detokenizer and stop
 * strings (call ds_session_begin first; ds_session_finish after, for the
 * text held back at the end). With o->mtp (model must have an MTP layer,
 * cache must start empty) the MTP module drafts one token after each
 * sampled token and the main model verifies draft and continuation in one
 * pass: the emitted tokens are exactly the ones plain decoding would sample
 * (each emitted token is drawn from the main model's distribution in order;
 * a draft is kept only if it equals that draw). Decode buffers are made
 * once per session (ds_session_reserve): a decode step allocates nothing.
 * Returns DS_OK or an error (e.g. context full). */
int ds_generate(ds_session *s, const int32_t *prompt, int64_t n, const ds_gen_opts *o, ds_token_cb cb, void *ud,
                ds_gen_stats *st, ds_err *e);

/* Prefill only: appends tokens; writes the last position's logits (V). */
int ds_prefill(const ds_model *m, ds_ctx *x, ds_kvcache *cache, const int32_t *tok, int64_t n, int64_t chunk,
               float *logits, ds_err *e);

#endif
