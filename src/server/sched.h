/*
 * sched.h - the model worker: one thread runs the (shared, read-only) model
 * with its own forward context, owns every KV cache and the prefix cache,
 * and runs continuous batching over N slots.
 *
 * Connection threads build a job (prompt ids + decoding options), submit it
 * and then only wait for its events; they never touch the model. Each
 * worker iteration runs ONE ds_model_forward over all active sequences: a
 * prefill chunk for each sequence still reading its prompt and one token
 * for each sequence that is decoding, each with its own cache; then it
 * runs the generation step of runtime/session.h (sample, detokenize, stop
 * strings) for every sequence whose row is ready, with that sequence's own
 * session state. ds_model_forward is batch-invariant (a sequence
 * computes exactly what it would alone) and prefill chunks end at multiples
 * of batch_tokens, so concurrency never changes a request's numbers; only a
 * prefix restored from the memory/disk store (computed in other chunks, or
 * token by token while decoding) can move logits in the last bits, which
 * `deterministic` rules out. A cancelled job (client gone) frees its slots
 * at the start of the next iteration.
 *
 * The worker turns tokens into text (UTF-8-safe streaming, <think>
 * reasoning split, stop strings held back until they cannot match,
 * DeepSeek tool-call blocks captured and parsed, response_format
 * json_object enforced by jsonmode.c) and posts events; serializing them
 * to JSON is the connection thread's job (openai.c).
 */
#ifndef DS_SCHED_H
#define DS_SCHED_H

#include "../model/model.h"
#include "../runtime/sampler.h"
#include "../runtime/session.h"
#include "../tokenizer/chat.h"
#include "../tokenizer/tokenizer.h"

#define SRV_MAX_TOP 20     /* top_logprobs limit */
#define SRV_MAX_N 16       /* choices per request, hard limit */

/* One generated token's log-probabilities (from the raw model logits). */
typedef struct srv_lp {
    int32_t id;
    float lp;
    int n_top;
    int32_t top_id[SRV_MAX_TOP];
    float top_lp[SRV_MAX_TOP];
} srv_lp;

enum { SRV_FINISH_STOP, SRV_FINISH_LENGTH, SRV_FINISH_TOOL_CALLS, SRV_FINISH_CANCELLED };

enum {
    SRV_EV_CONTENT,    /* text: answer text (may be empty when only lp is carried) */
    SRV_EV_REASONING,  /* text: reasoning (<think>) text */
    SRV_EV_TOOL_CALLS, /* calls: the parsed tool calls */
    SRV_EV_FINISH,     /* finish: SRV_FINISH_* for this choice */
    SRV_EV_ERROR,      /* text: message; the job is over */
};

typedef struct srv_event {
    int type;
    int choice;
    char *text;          /* malloc'ed, NUL-terminated (CONTENT, REASONING, ERROR) */
    size_t len;
    srv_lp *lp;          /* tokens behind this piece, when logprobs were asked for */
    int n_lp;
    ds_tool_parse calls; /* TOOL_CALLS */
    int finish;          /* FINISH */
} srv_event;
void srv_event_free(srv_event *ev);

enum { SRV_TOOLS_OFF, SRV_TOOLS_AUTO, SRV_TOOLS_REQUIRED };

/* What a connection thread asks for. Pointers are copied by srv_job_new. */
typedef struct srv_job_params {
    const int32_t *prompt;
    int64_t n_prompt;
    int n;                       /* choices; choice i samples with seed + i */
    ds_sampler_params sp;
    int64_t max_tokens;          /* per choice (already checked against the context) */
    const char *const *stop;     /* stop strings (content only) */
    int n_stop;
    bool logprobs;
    int top_logprobs;
    const int32_t *bias_ids;     /* logit_bias */
    const float *bias;
    int n_bias;
    bool json_mode;              /* response_format json_object */
    bool chat;                   /* chat: split reasoning, capture tool calls */
    bool starts_in_reasoning;    /* the prompt opened <think> */
    int tools;                   /* SRV_TOOLS_*: whether to capture tool calls */
    ds_chat_format fmt;          /* for tool-call parsing */
    const int32_t *forced;       /* tokens emitted first instead of sampled (tool_choice, tests) */
    int64_t n_forced;
    bool ignore_eos;
    bool mask_tool_calls;        /* tool_choice "none": never open a tool-call block */
    /* tool_choice "required" / named (byte-level tokenizers): after the forced opener the
     * call is constrained, so the reply is always one well-formed call: the function name
     * to one of tool_names (none: named, the name was forced), then tool_mid, then JSON
     * arguments (as with json_mode), then tool_end (closes the call and the block) */
    bool tool_constrain;
    const char *const *tool_names;
    int n_tool_names;
    const int32_t *tool_mid, *tool_end;
    int64_t n_tool_mid, n_tool_end;
    int token_delay_ms;          /* tests: wait this long before each token */
} srv_job_params;

typedef struct srv_job srv_job;

/* Per-job results, valid once srv_job_wait reported the end. */
typedef struct srv_job_usage {
    int64_t prompt_tokens, cached_tokens;
    int64_t completion_tokens, reasoning_tokens;
    double t_first_token;        /* seconds from submit to the first sampled token */
} srv_job_usage;

int srv_job_new(srv_job **out, const srv_job_params *p, ds_err *e);
/* Marks the job cancelled (the client went away); the worker frees its
 * slots at its next iteration. */
void srv_job_cancel(srv_job *j);
/* Drops the caller's reference (after cancel or the end). */
void srv_job_release(srv_job *j);
/* Waits up to timeout seconds for events; moves the pending ones to *evs
 * (malloc'ed array of *n events, caller frees each with srv_event_free and
 * the array with free). Returns true when the job is over and every event
 * has been delivered. */
bool srv_job_wait(srv_job *j, double timeout, srv_event **evs, int *n);
void srv_job_get_usage(srv_job *j, srv_job_usage *u);

/* ---------------------------------------------------------- scheduler */

typedef struct srv_sched_opts {
    int n_slots;                 /* parallel sequences */
    int64_t ctx;                 /* context per slot (positions) */
    int64_t batch_tokens;        /* tokens per forward at most (prefill chunking) */
    int max_queue;               /* jobs waiting for a slot before submit fails */
    int64_t cache_ram_bytes;     /* in-memory prefix cache budget (0 = slots only) */
    int64_t cache_min_tokens;    /* shortest prefix worth storing; disk block size (DeepSeek: 64) */
    const char *cache_dir;       /* on-disk prefix cache, or NULL */
    int64_t cache_disk_bytes;    /* disk budget (oldest files removed first) */
    bool deterministic;          /* reuse cached prefixes only in whole aligned prefill chunks (no prefix
                                    store): the numbers are then bit-identical to running alone, whatever
                                    ran before; concurrency alone never changes them */
    ds_kv_type kv_type;          /* the slots' cache storage; the prefix store (fp32 rows) is used with
                                    DS_KV_F32 only (other types reuse their slots' own prefixes) */
    bool no_prefill_store;       /* do not keep a long prompt's decompressed K/V across its chunks
                                    (ds_ctx_prefill_begin; same numbers either way, more work without) */
} srv_sched_opts;

typedef struct srv_stats {
    int n_slots, slots_busy, queued;
    int64_t jobs_total, jobs_cancelled, jobs_failed;
    int64_t prompt_tokens, cached_tokens, gen_tokens;
    int64_t forward_passes, forward_tokens, forward_seqs;
    double forward_seconds;
    int64_t cache_entries, cache_bytes, disk_entries, disk_bytes, disk_hits, disk_writes;
    int64_t prefill_stores;      /* prompts prefilled with their K/V kept across chunks */
} srv_stats;

typedef struct srv_sched srv_sched;

/* Starts the worker thread. m and tok must outlive the scheduler. */
int srv_sched_init(srv_sched **out, const ds_model *m, const ds_tokenizer *tok, const srv_sched_opts *o, ds_err *e);
/* Stops the worker: running and queued jobs end with an error event and
 * later submits fail. Safe to call twice. */
void srv_sched_stop(srv_sched *s);
/* Stops (if needed) and frees everything. */
void srv_sched_free(srv_sched *s);
/* Queues a job (the scheduler takes a reference). DS_ERANGE when the queue
 * is full (the server answers 503). */
int srv_sched_submit(srv_sched *s, srv_job *j, ds_err *e);
void srv_sched_stats(srv_sched *s, srv_stats *st);
/* response_format json_object needs a single-byte token for every byte. */
bool srv_sched_json_supported(const srv_sched *s);

#endif
