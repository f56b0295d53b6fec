/*
 * server.h - `deepseek serve`: an OpenAI/DeepSeek-compatible HTTP API and a
 * built-in web chat over one model.
 *
 * srv_start binds the socket and starts answering at once (/health says
 * 503 "Loading model" until the model is ready); the model, tokenizer and
 * the model worker (sched.h) are set up on a background thread.
 * Connection threads (libmicrohttpd, one per connection) only parse,
 * validate, tokenize and serialize; one worker thread owns the model.
 */
#ifndef DS_SERVER_H
#define DS_SERVER_H

#include "../core/base.h"

struct ds_model;

typedef struct srv_opts {
    const char *model_dir;
    const char *alias;          /* model id in responses (default: the folder's name) */
    const char *host;           /* default 127.0.0.1 */
    int port;                   /* default 8080; 0 = any free port */
    const char *api_keys;       /* comma-separated; NULL = no auth */
    const char *cors_origin;    /* NULL = no CORS headers; "*" = any origin */
    int n_slots;                /* --parallel */
    int64_t ctx;                /* per slot; 0 = min(model's max, 8192) */
    int64_t batch_tokens;       /* tokens per forward pass */
    int max_queue;              /* requests waiting for a slot before 503 */
    int max_connections;
    size_t max_body;            /* request body bytes */
    int max_messages, max_n;
    int64_t max_tokens;         /* cap for max_tokens (0 = the context) */
    int64_t default_max_tokens; /* when a request gives none (capped by the context) */
    int64_t cache_ram_mb, cache_min_tokens, cache_disk_mb;
    const char *cache_dir;
    const char *chat_format;    /* NULL/"auto", or "v3", "r1", "v3.1", "v2" */
    const char *tokenizer;      /* --tokenizer PATH, or NULL (tok_load_for_model's precedence) */
    bool thinking;              /* V3.1 default mode when a request does not say */
    bool deterministic;         /* bit-identical results whatever ran before (prefix store off) */
    bool no_prefill_store;      /* srv_sched_opts.no_prefill_store */
    int kv_type;                /* ds_kv_type of the slots' caches (--kv-type; default DS_KV_F32) */
    double sse_ping_s;          /* keep-alive comment interval on a silent stream */
    int idle_timeout_s;         /* idle keep-alive connections are closed after this */
    bool web_ui;
    const char *js_dir;         /* browser libraries (Debian libjs-*): /usr/share/javascript */
    bool test_hooks;            /* tests only: x_forced_output, x_token_delay_ms */
    double test_load_delay_s;   /* tests only: wait before loading the model */
    void (*log)(void *ud, const char *line); /* access/event log, or NULL */
    void *log_ud;
    /* Opens the model on the loader thread instead of ds_model_open (NULL:
     * ds_model_open): `serve` on several MPI ranks opens rank 0's share. */
    int (*open_model)(struct ds_model **out, const char *path, void *ud, ds_err *e);
    void *open_ud;
} srv_opts;

void srv_opts_default(srv_opts *o);

typedef struct srv_server srv_server;

/* Binds and starts serving; loading continues in the background. */
int srv_start(srv_server **out, const srv_opts *o, ds_err *e);
int srv_port(const srv_server *s);
/* Waits until the model is loaded (DS_OK) or failed to load (the error). */
int srv_wait_loaded(srv_server *s, ds_err *e);
/* Stops accepting, ends running requests and frees everything. */
void srv_stop(srv_server *s);

#endif
