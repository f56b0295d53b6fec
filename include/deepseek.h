/*
 * deepseek.h - the public C API of libdeepseek (DeepSeek V2/V3/R1 inference
 * on the CPU). The one header a program needs; link with
 * `pkg-config --cflags --libs deepseek` (shared libdeepseek.so.MAJOR or
 * static libdeepseek.a).
 *
 * Objects (all opaque; create with *_new / *_load, release with *_free):
 *   deepseek_model    weights + tokenizer, read-only once loaded
 *   deepseek_session  one sequence: KV cache, forward scratch, sampler,
 *                     detokenizer and stop strings (llama.cpp's context)
 *   deepseek_sampler  a stand-alone sampler chain for hand-written loops
 *   deepseek_detok    a stand-alone streaming (UTF-8-safe) detokenizer
 *
 * Errors: functions that can fail return DEEPSEEK_OK (0) or a negative
 * DEEPSEEK_E* code and, when `err` is non-NULL, fill it with the code and a
 * message. The caller owns the deepseek_error; there is no global error
 * state, and no global state a caller must know about at all (threads are a
 * session option).
 *
 * Memory: strings and arrays the library allocates for the caller
 * (tokenize, detokenize, chat_apply, generate_text) are freed with
 * deepseek_free. Pointers documented as "borrowed" stay valid only as long
 * as stated.
 *
 * Thread safety: a loaded deepseek_model may be used by any number of
 * threads at once (every function taking a const deepseek_model * is
 * thread-safe), so several sessions on several threads can share one model,
 * which is what `deepseek serve` does. A session, sampler or detokenizer is
 * used by one thread at a time (different objects on different threads are
 * fine). deepseek_model_free must not race with any use of the model or of
 * its sessions.
 */
#ifndef DEEPSEEK_H
#define DEEPSEEK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DEEPSEEK_VERSION_MAJOR 0
#define DEEPSEEK_VERSION_MINOR 1
#define DEEPSEEK_VERSION_PATCH 0

/* ------------------------------------------------------------------ errors */

enum {
    DEEPSEEK_OK = 0,
    DEEPSEEK_EIO = -1,          /* open/read/write/mmap failed */
    DEEPSEEK_EFORMAT = -2,      /* malformed file or message */
    DEEPSEEK_ENOMEM = -3,       /* allocation failed */
    DEEPSEEK_EINVAL = -4,       /* bad argument */
    DEEPSEEK_ERANGE = -5,       /* out of range (token id, context full) */
    DEEPSEEK_ENOTFOUND = -6,    /* missing file, tensor, key or tokenizer */
    DEEPSEEK_EUNSUPPORTED = -7, /* valid but not supported */
    DEEPSEEK_EINTERRUPTED = -8  /* stopped by the caller */
};

/* Caller-owned error: code and a NUL-terminated message. Zero-initialize. */
typedef struct deepseek_error {
    int code;
    char message[512];
} deepseek_error;

/* Short name of a code ("ok", "I/O error", ...); static string. Thread-safe. */
const char *deepseek_status_string(int code);

/* "MAJOR.MINOR.PATCH" of the library actually linked; static. Thread-safe. */
const char *deepseek_version(void);

/* Frees memory the library returned (NULL ok). Thread-safe. */
void deepseek_free(void *p);

/* ------------------------------------------------------------------ model */

typedef struct deepseek_model deepseek_model;

/* KV cache storage. F32 is exact; Q8 (int8, scale per 32) and FP8 (e4m3,
 * scale per 64) are ~3.6x smaller; BF16 is 2x smaller (bf16 dot products
 * for decode attention); I8 (int8, one scale per row part) is ~3.8x smaller
 * and the fastest at long context (int8 dot products for decode attention). */
enum { DEEPSEEK_KV_F32 = 0, DEEPSEEK_KV_Q8 = 1, DEEPSEEK_KV_FP8 = 2, DEEPSEEK_KV_BF16 = 3, DEEPSEEK_KV_I8 = 4 };

typedef struct deepseek_model_options {
    int threads;      /* default threads of this model's sessions; 0: all cores */
    int kv_type;      /* default KV storage of its sessions (DEEPSEEK_KV_*) */
    int64_t n_ctx;    /* default context (positions) of its sessions; 0: the
                         model's max_position_embeddings */
} deepseek_model_options;

/* Fills o with the defaults (0 threads, F32, n_ctx 0). Thread-safe. */
void deepseek_model_options_default(deepseek_model_options *o);

/* Loads a model: a Hugging Face folder (config.json, *.safetensors,
 * tokenizer.json) or a .gguf file (llama.cpp's deepseek2 layout). Weights
 * are memory-mapped. A model without a usable tokenizer still loads (ids
 * only; the text functions then fail with DEEPSEEK_ENOTFOUND). o may be
 * NULL (defaults). Thread-safe (loads of different models may run at once). */
int deepseek_model_load(deepseek_model **out, const char *path, const deepseek_model_options *o,
                        deepseek_error *err);

/* Releases the model (NULL ok). Free its sessions, samplers and
 * detokenizers first. */
void deepseek_model_free(deepseek_model *m);

typedef struct deepseek_model_info {
    const char *architecture;   /* config's model_type, e.g. "deepseek_v3" (borrowed) */
    int arch_version;           /* 2 (V2 family) or 3 (V3/R1/V3.1 family) */
    int64_t vocab_size;         /* rows of the embedding / logits width */
    int64_t n_ctx_train;        /* max_position_embeddings */
    int64_t n_ctx;              /* the default context of new sessions */
    int64_t n_layer;            /* main-model layers */
    int64_t hidden_size;
    int64_t n_head;
    int64_t n_routed_experts;   /* 0 for a dense model */
    int64_t n_experts_per_tok;
    int64_t n_mtp;              /* MTP layers stored (0: no MTP logits) */
    int64_t n_params;           /* stored parameters */
    int has_tokenizer;          /* the text functions are available */
    int64_t tokenizer_vocab;    /* highest token id + 1 (0 without tokenizer) */
    int32_t bos_id, eos_id;     /* -1 when unknown */
    int add_bos;                /* the tokenizer asks for BOS before a prompt */
    int chat_format;            /* the detected DEEPSEEK_CHAT_* format (V3 when none) */
    int has_chat_template;      /* tokenizer_config.json has a chat_template */
} deepseek_model_info;

/* Facts about a model; strings borrowed until deepseek_model_free. Thread-safe. */
void deepseek_model_get_info(const deepseek_model *m, deepseek_model_info *info);

/* -------------------------------------------------------------- tokenizer */

enum {
    DEEPSEEK_TOKENIZE_SPECIAL = 1,  /* recognize special/added-token strings in the text */
    DEEPSEEK_TOKENIZE_ADD_BOS = 2   /* prepend BOS if the tokenizer config asks for it */
};

/* Text (len bytes; any bytes) -> token ids. flags: DEEPSEEK_TOKENIZE_*;
 * without DEEPSEEK_TOKENIZE_SPECIAL, "<｜end▁of▁sentence｜>" in the text is
 * plain text. *ids is allocated (free with deepseek_free, also when *n is
 * 0). Thread-safe. */
int deepseek_tokenize(const deepseek_model *m, const char *text, size_t len, unsigned flags, int32_t **ids,
                      int64_t *n, deepseek_error *err);

enum {
    DEEPSEEK_DETOK_SKIP_SPECIAL = 1, /* drop special tokens */
    DEEPSEEK_DETOK_RAW = 2           /* exact bytes (may be invalid UTF-8); else invalid
                                        sequences become U+FFFD */
};

/* Token ids -> text. *text is allocated and NUL-terminated (free with
 * deepseek_free); *len (may be NULL) its length. DEEPSEEK_ERANGE for an
 * unknown id. Thread-safe. */
int deepseek_detokenize(const deepseek_model *m, const int32_t *ids, int64_t n, unsigned flags, char **text,
                        size_t *len, deepseek_error *err);

/* Decoded bytes of one token (borrowed until deepseek_model_free; not
 * NUL-terminated), or NULL for an unknown id or without a tokenizer.
 * Thread-safe. */
const char *deepseek_token_piece(const deepseek_model *m, int32_t id, size_t *len);

/* Id of an added/special token by its exact text (e.g. "<｜end▁of▁sentence｜>"),
 * or -1. Thread-safe. */
int32_t deepseek_token_special_id(const deepseek_model *m, const char *text);

typedef struct deepseek_detok deepseek_detok;

/* Streaming detokenizer: push ids one at a time; each push yields text that
 * is complete, valid UTF-8 (bytes of a character split across tokens are
 * held back). flush returns what is held back. The concatenation equals
 * deepseek_detokenize(all ids) without DEEPSEEK_DETOK_RAW.
 * One thread at a time per detokenizer. */
int deepseek_detok_new(deepseek_detok **out, const deepseek_model *m, int skip_special, deepseek_error *err);
/* *text is borrowed until the next call on d; *len its length (possibly 0). */
int deepseek_detok_push(deepseek_detok *d, int32_t id, const char **text, size_t *len, deepseek_error *err);
int deepseek_detok_flush(deepseek_detok *d, const char **text, size_t *len, deepseek_error *err);
void deepseek_detok_free(deepseek_detok *d);

/* ------------------------------------------------------------ chat format */

enum {
    DEEPSEEK_CHAT_AUTO = 0, /* the model's own (detected from its chat template) */
    DEEPSEEK_CHAT_V3 = 1,   /* DeepSeek-V3 */
    DEEPSEEK_CHAT_R1 = 2,   /* DeepSeek-R1: the reply starts inside <think> */
    DEEPSEEK_CHAT_V31 = 3,  /* DeepSeek-V3.1: thinking on or off */
    DEEPSEEK_CHAT_V2 = 4,   /* DeepSeek-V2 / V2-Lite: "User: ...\n\nAssistant:" */
    DEEPSEEK_CHAT_V32 = 5,  /* DeepSeek-V3.2 (its encoding_dsv32.py): DSML tool calls */
    DEEPSEEK_CHAT_V4 = 6    /* DeepSeek-V4 (its encoding_dsv4.py): DSML tool calls, reasoning effort */
};

typedef struct deepseek_chat_message {
    const char *role;       /* "system", "user", "assistant" or "tool" */
    const char *content;    /* UTF-8, NUL-terminated; NULL = "" */
} deepseek_chat_message;

/* Renders a conversation with the official template of `format`, token for
 * token as transformers' apply_chat_template (message text is tokenized
 * with special-token recognition off). add_generation_prompt: end with the
 * assistant's turn opener; thinking: V3.1 thinking mode (R1 always thinks,
 * V3/V2 never). *ids allocated (deepseek_free). Thread-safe. */
int deepseek_chat_apply(const deepseek_model *m, int format, const deepseek_chat_message *msgs, int n_msgs,
                        int add_generation_prompt, int thinking, int32_t **ids, int64_t *n, deepseek_error *err);

/* deepseek_chat_apply with the V3.2 / V4 options. reasoning_effort: V4 in
 * thinking mode, "max" adds the format's maximum-effort preface ("high",
 * "low", NULL: nothing). tools_json: the OpenAI "tools" array as JSON text
 * (V3.2 / V4 render it as their encoders do), or NULL. text (optional): the
 * prompt as a string (deepseek_free). Thread-safe. */
typedef struct deepseek_chat_options {
    int add_generation_prompt, thinking;
    const char *reasoning_effort;
    const char *tools_json;
} deepseek_chat_options;
int deepseek_chat_apply_opts(const deepseek_model *m, int format, const deepseek_chat_message *msgs, int n_msgs,
                             const deepseek_chat_options *opts, int32_t **ids, int64_t *n, char **text,
                             deepseek_error *err);

/* "v3", "r1", "v3.1", "v2", "v3.2", "v4", "auto" -> DEEPSEEK_CHAT_*, or -1. Thread-safe. */
int deepseek_chat_format_from_name(const char *name);
/* The name of a format ("v3", ...); static. Thread-safe. */
const char *deepseek_chat_format_name(int format);

/* Splits a reply into reasoning and content (pointers into text).
 * starts_in_reasoning: the prompt opened <think> (deepseek_chat_thinks).
 * reasoning_done is 0 when reasoning was open and never closed. Thread-safe. */
typedef struct deepseek_reply_split {
    const char *reasoning;
    size_t reasoning_len;
    const char *content;
    size_t content_len;
    int has_reasoning, reasoning_done;
} deepseek_reply_split;
void deepseek_chat_split_reasoning(const char *text, size_t len, int starts_in_reasoning, deepseek_reply_split *out);
/* Whether the generation prompt of format/thinking opens a reasoning block
 * (R1 always, V3.1 with thinking). format AUTO is not resolved here: pass
 * the model's (deepseek_model_info.chat_format). Thread-safe. */
int deepseek_chat_thinks(int format, int thinking);

/* ---------------------------------------------------------------- sampler */

/* The sampling settings, applied in this order: repetition penalty,
 * frequency/presence penalties, temperature (0: greedy, ties to the lowest
 * id), top-k, top-p, min-p, then a draw from the sampler's own RNG (same
 * seed, same tokens). */
typedef struct deepseek_sampler_params {
    float temperature;          /* 0 = greedy */
    int32_t top_k;              /* 0 = off */
    float top_p;                /* 1 = off */
    float min_p;                /* 0 = off */
    float repetition_penalty;   /* 1 = off */
    float frequency_penalty;    /* 0 = off */
    float presence_penalty;     /* 0 = off */
    uint64_t seed;
} deepseek_sampler_params;

/* The defaults `deepseek generate` uses (greedy). Thread-safe. */
void deepseek_sampler_params_default(deepseek_sampler_params *p);

typedef struct deepseek_sampler deepseek_sampler;

/* A sampler for vocabularies of n_vocab logits (deepseek_model_info.vocab_size).
 * A setting out of range is DEEPSEEK_ERANGE with a message naming it.
 * One thread at a time per sampler. */
int deepseek_sampler_new(deepseek_sampler **out, const deepseek_sampler_params *p, int64_t n_vocab,
                         deepseek_error *err);
void deepseek_sampler_free(deepseek_sampler *s);
/* Records prompt tokens (for the repetition penalty). */
void deepseek_sampler_add_prompt(deepseek_sampler *s, const int32_t *ids, int64_t n);
/* Picks the next token from logits[n_vocab]; modifies logits in place
 * (penalties, temperature). Does not record the token: call accept. */
int32_t deepseek_sampler_sample(deepseek_sampler *s, float *logits);
/* Records a token as generated (penalties). */
void deepseek_sampler_accept(deepseek_sampler *s, int32_t id);
/* Forgets the history; reseed: also restart the RNG from the seed. */
void deepseek_sampler_reset(deepseek_sampler *s, int reseed);

/* ---------------------------------------------------------------- session */

typedef struct deepseek_session deepseek_session;

typedef struct deepseek_session_options {
    int64_t n_ctx;        /* positions; 0: the model's default (deepseek_model_options.n_ctx) */
    int kv_type;          /* -1: the model's default; else DEEPSEEK_KV_* */
    int threads;          /* threads of this session's forward passes; 0: the model's default */
    int mtp;              /* keep the MTP module's cache so deepseek_session_mtp_logits
                             works (the model must store MTP layers); deepseek_generate
                             does not keep it, so the next decode after it recomputes
                             the whole sequence once */
    deepseek_sampler_params sampling;  /* the session's sampler (deepseek_generate) */
} deepseek_session_options;

/* Defaults: n_ctx 0, kv_type -1, threads 0, mtp 0, greedy sampling. Thread-safe. */
void deepseek_session_options_default(deepseek_session_options *o);

/* A new, empty sequence over m (o NULL: defaults). Any number of sessions
 * may share one model, on any threads. One thread at a time per session. */
int deepseek_session_new(deepseek_session **out, const deepseek_model *m, const deepseek_session_options *o,
                         deepseek_error *err);
void deepseek_session_free(deepseek_session *s);

/* Positions in the KV cache / the context size. */
int64_t deepseek_session_n_past(const deepseek_session *s);
int64_t deepseek_session_n_ctx(const deepseek_session *s);
/* The tokens in the cache, in order (borrowed until the next call that
 * changes the session); *n = deepseek_session_n_past. */
const int32_t *deepseek_session_tokens(const deepseek_session *s, int64_t *n);

/* Appends ids[0..n) to the sequence in one batch (prefill, or a decode step
 * for n = 1) and computes the logits of the last one. If all_logits is
 * non-NULL it receives every position's logits (n x vocab_size floats).
 * DEEPSEEK_ERANGE when the context would overflow (nothing appended) or for
 * an id outside the vocabulary. */
int deepseek_session_decode(deepseek_session *s, const int32_t *ids, int64_t n, float *all_logits,
                            deepseek_error *err);

/* The logits (vocab_size floats) predicting the token after the last one
 * in the cache; borrowed until the next call on s. NULL when the session is
 * empty or after deepseek_generate (which leaves its last token out of the
 * cache: decode it to continue). *n_vocab may be NULL. */
const float *deepseek_session_logits(const deepseek_session *s, int64_t *n_vocab);

/* MTP (multi-token prediction) logits: given the token that follows the
 * last cached one (usually the one just sampled from deepseek_session_logits),
 * the MTP module's logits for the token after it (vocab_size floats,
 * borrowed until the next call on s). Needs the session option mtp and a
 * non-empty cache. */
int deepseek_session_mtp_logits(deepseek_session *s, int32_t next_token, const float **logits,
                                deepseek_error *err);

/* Keeps the first n positions (n <= n_past) and recomputes the logits of
 * position n-1 so deepseek_session_logits is valid again (n = 0: empty). */
int deepseek_session_truncate(deepseek_session *s, int64_t n, deepseek_error *err);

/* Replaces the session's sampling settings (the sampler restarts from the seed). */
int deepseek_session_set_sampling(deepseek_session *s, const deepseek_sampler_params *p, deepseek_error *err);

/* Adds a stop string for deepseek_generate*: generation ends before it and
 * the text is cut there (at most 16). */
int deepseek_session_add_stop(deepseek_session *s, const char *stop, deepseek_error *err);

/* --------------------------------------------------------------- generate */

/* Called per generated token with the text it releases (borrowed, complete
 * UTF-8; "" for special tokens and while a possible stop string or a split
 * character is held back). Return non-zero to stop generating. Once more
 * at the end with token -1 if text was held back (the return value is then
 * ignored). */
typedef int (*deepseek_token_callback)(void *user, int32_t token, const char *text, size_t len);

enum {
    DEEPSEEK_FINISH_LENGTH = 0,    /* max_tokens reached */
    DEEPSEEK_FINISH_EOS = 1,       /* end-of-sequence token */
    DEEPSEEK_FINISH_CALLBACK = 2,  /* the callback returned non-zero */
    DEEPSEEK_FINISH_STOP = 3       /* a stop string */
};

typedef struct deepseek_generate_options {
    int64_t max_tokens;   /* new tokens at most (0: prefill only, then deepseek_session_logits
                             is valid); fewer if the context fills up (DEEPSEEK_FINISH_LENGTH) */
    int ignore_eos;       /* do not stop at the end-of-sequence token */
    int mtp;              /* speculative decoding with the MTP module as drafter (same
                             tokens as without; the session must start empty) */
} deepseek_generate_options;

/* Defaults: max_tokens 32, ignore_eos 0, mtp 0. Thread-safe. */
void deepseek_generate_options_default(deepseek_generate_options *o);

typedef struct deepseek_generate_result {
    int64_t n_prompt, n_gen;
    int finish;                /* DEEPSEEK_FINISH_* */
    int32_t last_token;        /* the last generated token (not in the cache), or -1 */
    double t_prefill, t_decode; /* seconds */
} deepseek_generate_result;

/* Appends prompt[0..n) to the sequence (which may hold a prefix) and
 * generates with the session's sampler and stop strings, calling cb (may
 * be NULL) per token. The end-of-sequence token is the model config's
 * (else the tokenizer's). With the same prompt, settings and seed the
 * tokens equal `deepseek generate`'s. r may be NULL. */
int deepseek_generate(deepseek_session *s, const int32_t *prompt, int64_t n, const deepseek_generate_options *o,
                      deepseek_token_callback cb, void *user, deepseek_generate_result *r, deepseek_error *err);

/* The same from text: tokenizes prompt as `deepseek generate --prompt` does
 * (BOS if the tokenizer asks, special tokens recognized) and, if text is
 * non-NULL, returns the whole reply (allocated, NUL-terminated;
 * deepseek_free). */
int deepseek_generate_text(deepseek_session *s, const char *prompt, const deepseek_generate_options *o,
                           deepseek_token_callback cb, void *user, char **text, deepseek_generate_result *r,
                           deepseek_error *err);

/* Pull-style generation (for bindings and event loops): the same tokens as
 * deepseek_generate without a callback (no mtp). begin appends the prompt
 * (prefill) and starts a reply; each next call produces one token:
 * returns 1 with *token and *text (borrowed until the next call on s; the
 * text it releases, possibly ""), or 0 once generation has ended, with
 * *token = -1, *text the text held back until then and *finish
 * (DEEPSEEK_FINISH_*; finish may be NULL). Stopping early is allowed: just
 * stop calling next (the cache then holds the prompt and the tokens before
 * the last one). Negative on error (the generation is over). */
int deepseek_generate_begin(deepseek_session *s, const int32_t *prompt, int64_t n, const deepseek_generate_options *o,
                            deepseek_error *err);
int deepseek_generate_next(deepseek_session *s, int32_t *token, const char **text, size_t *len, int *finish,
                           deepseek_error *err);

#ifdef __cplusplus
}
#endif

#endif /* DEEPSEEK_H */
