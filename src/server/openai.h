/*
 * openai.h - the OpenAI / DeepSeek API mapping: request bodies -> checked
 * requests, requests -> prompt token ids (chat template, tools, FIM), and
 * scheduler events -> response JSON (chat.completion, text_completion,
 * their stream chunks, usage, logprobs, errors).
 *
 * Every client mistake becomes an oa_error with an HTTP status (400 for
 * bad JSON, wrong types, bad values, too-long prompts) and a message that
 * names the field by its JSON path ("messages[2].role"). Unknown fields
 * are ignored, as the official API does. Runs on connection threads; the
 * tokenizer is read-only and thread-safe.
 */
#ifndef DS_OPENAI_H
#define DS_OPENAI_H

#include "sched.h"

#include <jansson.h>

typedef struct oa_error {
    int status;              /* HTTP status */
    const char *type;        /* "invalid_request_error", "authentication_error", ... */
    char param[96];          /* the field, "" = null */
    char code[64];           /* "" = null */
    char message[768];
} oa_error;

/* Fills err (first error wins) and returns DS_EINVAL. */
int oa_fail(oa_error *err, int status, const char *type, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* {"error":{"message","type","param","code"}} as a malloc'ed string. */
char *oa_error_json(const oa_error *err);

typedef struct oa_limits {
    int max_messages;        /* messages per request */
    int max_n;               /* choices per request (<= SRV_MAX_N) */
    int64_t max_tokens;      /* upper bound for max_tokens */
    int max_stop;            /* stop strings */
    int max_stop_bytes;      /* bytes per stop string */
    int max_tools;
    int max_logit_bias;
    int64_t vocab;           /* token ids must be below this */
    bool test_hooks;         /* accept x_forced_output / x_token_delay_ms */
} oa_limits;
void oa_limits_default(oa_limits *l);

enum { OA_CHAT, OA_COMPLETION };
enum { OA_TC_NONE, OA_TC_AUTO, OA_TC_REQUIRED, OA_TC_NAMED };

typedef struct oa_request {
    int kind;
    json_t *root;            /* owns the strings below */
    const char *model;       /* NULL if absent */
    /* chat */
    ds_chat_msg *msgs;
    int n_msgs;
    ds_tool_call *calls;     /* storage for the messages' tool calls */
    int n_calls;
    bool prefix;             /* the last message is an assistant prefix ("prefix": true) */
    const json_t *tools;     /* array or NULL */
    int n_tools;
    int tool_choice;         /* OA_TC_* */
    const char *tool_choice_name;
    int thinking;            /* -1 unset, 0 disabled, 1 enabled */
    int reasoning_effort;    /* ds_reasoning_effort ("reasoning_effort": low/medium/high/max; V4 uses max) */
    /* completion */
    const char *prompt;      /* text prompt, or NULL when prompt_ids are given */
    int32_t *prompt_ids;
    int64_t n_prompt_ids;
    const char *suffix;      /* fill-in-the-middle */
    bool echo;
    /* decoding */
    ds_sampler_params sp;
    bool seed_given;
    int64_t max_tokens;      /* 0 = not given */
    int n;
    bool stream, include_usage;
    const char **stop;
    int n_stop;
    bool logprobs;
    int top_logprobs;
    bool json_mode;
    int32_t *bias_ids;
    float *bias;
    int n_bias;
    bool ignore_eos;
    const char *forced_output; /* test hook */
    int token_delay_ms;        /* test hook */
    char **owned;            /* strings built while parsing */
    int n_owned;
} oa_request;

/* Parse and check a body. On error, err is filled and r holds nothing. */
int oa_parse_chat(const char *body, size_t len, const oa_limits *lim, oa_request *r, oa_error *err);
int oa_parse_completion(const char *body, size_t len, const oa_limits *lim, oa_request *r, oa_error *err);
void oa_request_free(oa_request *r);

/* Prompt ids of a chat request: the template of fmt with a generation
 * prompt (or an assistant prefix), tools described in the system prompt.
 * thinking_default applies when the request does not say. *reasoning:
 * the reply starts inside <think>. */
int oa_chat_prompt(const ds_tokenizer *t, ds_chat_format fmt, const oa_request *r, bool thinking_default,
                   tok_ids *ids, bool *reasoning, oa_error *err);
/* Prompt ids of a completion request (BOS as the tokenizer config says;
 * with a suffix, the FIM layout <｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>). */
int oa_completion_prompt(const ds_tokenizer *t, const oa_request *r, tok_ids *ids, oa_error *err);
/* Tokens the reply must start with: a tool-call opener for tool_choice
 * "required" or a named function, or the test hook's forced output. */
int oa_forced_tokens(const ds_tokenizer *t, ds_chat_format fmt, const oa_request *r, tok_ids *ids, oa_error *err);
/* tool_choice "required" / named: the tokens the decoder forces after the
 * function name (MID; "required" only, a named call's opener holds them) and
 * after the JSON arguments (END: closes the call and the block). Nothing for
 * other requests. */
int oa_tool_call_parts(const ds_tokenizer *t, ds_chat_format fmt, const oa_request *r, tok_ids *mid, tok_ids *end,
                       oa_error *err);

/* ------------------------------------------------------------ responses */

typedef struct oa_resp {
    int kind;
    char id[48];
    int64_t created;
    const char *model;
    bool reasoning;          /* a reasoning reply: always carry reasoning_content */
} oa_resp;
void oa_resp_init(oa_resp *rs, int kind, const char *model, bool reasoning);
/* "chatcmpl-…"/"cmpl-…"/"call_…" ids: 24 random hex digits. */
void oa_new_id(char *out, size_t cap, const char *prefix);

/* Non-streaming: collects events per choice. */
typedef struct oa_choice_acc {
    char *content, *reasoning;
    size_t n_content, cap_content, n_reasoning, cap_reasoning;
    bool has_reasoning;
    ds_parsed_call *calls;
    int n_calls;
    srv_lp *lp;
    int n_lp, cap_lp;
    int finish;
} oa_choice_acc;
typedef struct oa_acc {
    int n;
    oa_choice_acc *c;
    char *error;             /* first error message, or NULL */
} oa_acc;
int oa_acc_init(oa_acc *a, int n);
/* Takes what it needs from ev (ev is still freed by the caller). */
void oa_acc_add(oa_acc *a, srv_event *ev);
void oa_acc_free(oa_acc *a);
/* The complete chat.completion or text_completion object. echo: the
 * prompt text to prepend (completions). */
json_t *oa_response_json(const oa_resp *rs, const ds_tokenizer *t, const oa_request *r, const oa_acc *a,
                         const srv_job_usage *u, const char *echo);

/* Streaming: the chunk for one event (NULL when the event carries nothing
 * to send). The first chunk of each choice carries the role (chat). */
json_t *oa_stream_event_json(const oa_resp *rs, const ds_tokenizer *t, const oa_request *r, const srv_event *ev,
                             bool first_of_choice);
/* A chunk with only the role (chat), sent first ("usage": null when the
 * client asked for a usage chunk). */
json_t *oa_stream_role_json(const oa_resp *rs, int choice, bool usage_null);
/* The usage chunk (choices: []) for stream_options.include_usage. */
json_t *oa_stream_usage_json(const oa_resp *rs, const srv_job_usage *u);
json_t *oa_usage_json(const srv_job_usage *u);

#endif
