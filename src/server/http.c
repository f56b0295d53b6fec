/*
 * http.c - the HTTP side of `deepseek serve` (see server.h), on
 * libmicrohttpd with one thread per connection: routing, API keys, CORS,
 * body limits, the endpoint handlers, SSE streaming with keep-alive
 * comments and client-disconnect detection, /metrics, static files, and
 * the background model loader.
 *
 * Owns no HTTP parsing (libmicrohttpd does it) and no model access: the
 * handlers tokenize and validate on the connection thread, hand a job to
 * the model worker (sched.c) and serialize its events (openai.c).
 */
#include "server.h"
#include "openai.h"
#include "sched.h"
#include "web.h"
#include "../core/thread.h"

#include <microhttpd.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { ST_LOADING, ST_READY, ST_FAILED };

enum {
    R_NONE, R_HEALTH, R_MODELS, R_MODEL, R_CHAT, R_COMPLETIONS, R_TOKENIZE, R_DETOKENIZE, R_METRICS, R_PROPS,
    R_WEB, R_VENDOR, R_COUNT
};
static const char *const k_route_names[R_COUNT] = { "none", "health", "models", "model", "chat", "completions",
                                                   "tokenize", "detokenize", "metrics", "props", "web", "vendor" };

struct srv_server {
    srv_opts o;
    char *alias, *host, *keys, *cors, *model_dir, *cache_dir, *js_dir;
    char **key_list;
    int n_keys;
    struct MHD_Daemon *d;
    int listen_fd, port;
    /* loading */
    pthread_t loader;
    bool loader_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;
    ds_err load_err;
    double t_start;
    /* set once state == ST_READY (read-only afterwards) */
    ds_model *m;
    ds_tokenizer *tok;
    srv_sched *sched;
    ds_chat_format fmt;
    bool reasoning_default;    /* replies start in <think> by default */
    int64_t ctx;
    oa_limits lim;
    /* metrics */
    atomic_llong req_total[R_COUNT];
    atomic_llong status_2xx, status_4xx, status_5xx, status_503;
    atomic_llong streams_active, conns_active;
};

void srv_opts_default(srv_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->n_slots = 4;
    o->batch_tokens = 512;
    o->max_queue = 64;
    o->max_connections = 256;
    o->max_body = 8u << 20;
    o->max_messages = 2048;
    o->max_n = 8;
    o->default_max_tokens = 4096;
    o->cache_ram_mb = 512;
    o->cache_min_tokens = 64;
    o->cache_disk_mb = 4096;
    o->sse_ping_s = 10;
    o->idle_timeout_s = 120;
    o->web_ui = true;
    o->js_dir = "/usr/share/javascript";
}

static void logf_(srv_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(srv_server *s, const char *fmt, ...) {
    if (!s->o.log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->o.log(s->o.log_ud, line);
}

/* --------------------------------------------------------- responses */

static enum MHD_Result send_buf(srv_server *s, struct MHD_Connection *c, int status, const char *ctype, const void *data,
                                size_t len, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, mode);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    if (s->cors) {
        const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
        if (!strcmp(s->cors, "*")) MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        else if (origin && !strcmp(origin, s->cors)) {
            MHD_add_response_header(r, "Access-Control-Allow-Origin", s->cors);
            MHD_add_response_header(r, "Vary", "Origin");
        }
    }
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 405) MHD_add_response_header(r, "Allow", "GET, POST, OPTIONS");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (status >= 200 && status < 300) atomic_fetch_add(&s->status_2xx, 1);
    else if (status >= 400 && status < 500) atomic_fetch_add(&s->status_4xx, 1);
    else if (status >= 500) atomic_fetch_add(&s->status_5xx, 1);
    if (status == 503) atomic_fetch_add(&s->status_503, 1);
    return ret;
}

static enum MHD_Result send_json(srv_server *s, struct MHD_Connection *c, int status, json_t *o) {
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!txt) return send_buf(s, c, 500, "application/json", "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}", 85, MHD_RESPMEM_PERSISTENT);
    return send_buf(s, c, status, "application/json", txt, strlen(txt), MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result send_error(srv_server *s, struct MHD_Connection *c, const oa_error *err) {
    char *txt = oa_error_json(err);
    if (!txt) return MHD_NO;
    return send_buf(s, c, err->status ? err->status : 500, "application/json", txt, strlen(txt), MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result fail(srv_server *s, struct MHD_Connection *c, int status, const char *type, const char *code,
                            const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result fail(srv_server *s, struct MHD_Connection *c, int status, const char *type, const char *code,
                            const char *fmt, ...) {
    oa_error err = { 0 };
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    oa_fail(&err, status, type, NULL, code, "%s", msg);
    return send_error(s, c, &err);
}

/* ------------------------------------------------------------ routing */

/* Collapses repeated slashes and drops a trailing one (except "/"). */
static void normalize_path(const char *url, char *out, size_t cap) {
    size_t n = 0;
    for (const char *p = url; *p && n + 1 < cap; p++) {
        if (*p == '?' || *p == '#') break;
        if (*p == '/' && n > 0 && out[n - 1] == '/') continue;
        out[n++] = *p;
    }
    if (n > 1 && out[n - 1] == '/') n--;
    if (n == 0) out[n++] = '/';
    out[n] = 0;
}

static int route_of(const char *p, bool *is_post) {
    static const struct { const char *path; int r; bool post; } k[] = {
        { "/health", R_HEALTH, false }, { "/v1/health", R_HEALTH, false },
        { "/v1/models", R_MODELS, false }, { "/models", R_MODELS, false },
        { "/v1/chat/completions", R_CHAT, true }, { "/chat/completions", R_CHAT, true },
        { "/beta/chat/completions", R_CHAT, true },
        { "/v1/completions", R_COMPLETIONS, true }, { "/completions", R_COMPLETIONS, true },
        { "/beta/completions", R_COMPLETIONS, true },
        { "/tokenize", R_TOKENIZE, true }, { "/v1/tokenize", R_TOKENIZE, true },
        { "/detokenize", R_DETOKENIZE, true }, { "/v1/detokenize", R_DETOKENIZE, true },
        { "/metrics", R_METRICS, false }, { "/props", R_PROPS, false },
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(p, k[i].path)) { *is_post = k[i].post; return k[i].r; }
    if (!strncmp(p, "/v1/models/", 11) || !strncmp(p, "/models/", 8)) { *is_post = false; return R_MODEL; }
    if (!strncmp(p, "/vendor/", 8)) { *is_post = false; return R_VENDOR; }
    if (srv_web_find(p)) { *is_post = false; return R_WEB; }
    return R_NONE;
}

/* Public: health, the web page and its libraries; everything else needs a key. */
static bool is_public(int route) { return route == R_HEALTH || route == R_WEB || route == R_VENDOR; }

static bool key_eq(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++) d |= (unsigned char)(a[i % (la ? la : 1)] ^ b[i]);
    return d == 0 && la > 0;
}

static bool authorized(srv_server *s, struct MHD_Connection *c) {
    if (s->n_keys == 0) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *key = NULL;
    if (h && !strncasecmp(h, "Bearer ", 7)) {
        key = h + 7;
        while (*key == ' ') key++;
    }
    if (!key) key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Api-Key");
    if (!key) return false;
    bool ok = false;
    for (int i = 0; i < s->n_keys; i++) ok |= key_eq(key, s->key_list[i]);
    return ok;
}

/* The peer closed its side (disconnect), checked without blocking. */
static bool peer_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* ------------------------------------------------------------ per request */

typedef struct conn_state {
    int route;
    bool post;
    char *body;
    size_t n, cap;
    bool too_big;
    char path[512];
} conn_state;

/* ---------------------------------------------------------- simple GETs */

static enum MHD_Result h_health(srv_server *s, struct MHD_Connection *c) {
    pthread_mutex_lock(&s->mu);
    int st = s->state;
    char msg[600];
    snprintf(msg, sizeof msg, "%s", s->load_err.msg);
    pthread_mutex_unlock(&s->mu);
    if (st == ST_READY) return send_json(s, c, 200, json_pack("{s:s}", "status", "ok"));
    if (st == ST_LOADING) return fail(s, c, 503, "unavailable_error", "model_loading", "Loading model");
    return fail(s, c, 503, "unavailable_error", "model_load_failed", "the model failed to load: %s", msg);
}

static json_t *model_obj(srv_server *s) {
    return json_pack("{s:s,s:s,s:I,s:s,s:{s:I,s:I,s:s,s:b,s:I}}", "id", s->alias, "object", "model", "created",
                     (json_int_t)s->t_start, "owned_by", "deepseek.c", "meta", "n_ctx", (json_int_t)s->ctx, "n_vocab",
                     (json_int_t)(s->m ? s->m->cfg.vocab_size : 0), "chat_format", chat_format_name(s->fmt), "reasoning",
                     s->reasoning_default, "n_params", (json_int_t)(s->m ? s->m->n_params : 0));
}

static enum MHD_Result h_models(srv_server *s, struct MHD_Connection *c, const char *path) {
    if (!strncmp(path, "/v1/models/", 11) || !strncmp(path, "/models/", 8)) {
        const char *id = path + (path[1] == 'v' ? 11 : 8);
        if (strcmp(id, s->alias))
            return fail(s, c, 404, "invalid_request_error", "model_not_found", "The model '%.200s' does not exist", id);
        return send_json(s, c, 200, model_obj(s));
    }
    return send_json(s, c, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", model_obj(s)));
}

static enum MHD_Result h_props(srv_server *s, struct MHD_Connection *c) {
    return send_json(s, c, 200,
                     json_pack("{s:s,s:I,s:i,s:s,s:b,s:b,s:I,s:I,s:b}", "model", s->alias, "n_ctx", (json_int_t)s->ctx,
                               "total_slots", s->o.n_slots, "chat_format", chat_format_name(s->fmt), "reasoning",
                               s->reasoning_default, "json_mode", srv_sched_json_supported(s->sched), "default_max_tokens",
                               (json_int_t)s->o.default_max_tokens, "max_tokens", (json_int_t)s->lim.max_tokens,
                               "deterministic", s->o.deterministic));
}

static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static enum MHD_Result h_metrics(srv_server *s, struct MHD_Connection *c) {
    srv_stats st;
    memset(&st, 0, sizeof st);
    pthread_mutex_lock(&s->mu);
    int state = s->state;
    srv_sched *sched = s->sched;
    pthread_mutex_unlock(&s->mu);
    if (sched) srv_sched_stats(sched, &st);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return fail(s, c, 500, "server_error", NULL, "out of memory");
#define G(name, help, type, val) fprintf(f, "# HELP deepseek_" name " " help "\n# TYPE deepseek_" name " " type "\ndeepseek_" name " %lld\n", (long long)(val))
    G("model_loaded", "1 once the model is ready", "gauge", state == ST_READY);
    G("slots_total", "parallel sequence slots", "gauge", s->o.n_slots);
    G("slots_busy", "slots running a sequence", "gauge", st.slots_busy);
    G("requests_queued", "sequences waiting for a slot", "gauge", st.queued);
    G("streams_active", "open streaming responses", "gauge", atomic_load(&s->streams_active));
    G("connections_active", "requests being handled", "gauge", atomic_load(&s->conns_active));
    G("jobs_total", "generation requests accepted", "counter", st.jobs_total);
    G("jobs_cancelled_total", "generation requests cancelled (client gone)", "counter", st.jobs_cancelled);
    G("jobs_failed_total", "generation requests ended by an error", "counter", st.jobs_failed);
    G("prompt_tokens_total", "prompt tokens of admitted requests", "counter", st.prompt_tokens);
    G("prompt_tokens_cache_total", "prompt tokens reused from the prefix cache", "counter", st.cached_tokens);
    G("tokens_predicted_total", "generated tokens", "counter", st.gen_tokens);
    G("forward_passes_total", "batched forward passes", "counter", st.forward_passes);
    G("forward_tokens_total", "tokens run through the model", "counter", st.forward_tokens);
    G("forward_sequences_total", "sequence chunks in forward passes (sum of batch sizes)", "counter", st.forward_seqs);
    G("prefill_stores_total", "long prompts whose decompressed K/V stayed across their prefill chunks", "counter",
      st.prefill_stores);
    fprintf(f, "# HELP deepseek_forward_seconds_total time in forward passes\n# TYPE deepseek_forward_seconds_total counter\n"
               "deepseek_forward_seconds_total %.6f\n", st.forward_seconds);
    G("prefix_cache_entries", "stored prefixes (memory and disk)", "gauge", st.cache_entries);
    G("prefix_cache_bytes", "memory held by stored prefixes", "gauge", st.cache_bytes);
    G("prefix_cache_disk_entries", "stored prefixes on disk", "gauge", st.disk_entries);
    G("prefix_cache_disk_bytes", "disk used by stored prefixes", "gauge", st.disk_bytes);
    G("prefix_cache_disk_hits_total", "prefixes read back from disk", "counter", st.disk_hits);
    G("prefix_cache_disk_writes_total", "prefixes written to disk", "counter", st.disk_writes);
    fprintf(f, "# HELP deepseek_prompt_cache_hit_ratio cached / total prompt tokens\n# TYPE deepseek_prompt_cache_hit_ratio gauge\n"
               "deepseek_prompt_cache_hit_ratio %.6f\n", st.prompt_tokens ? (double)st.cached_tokens / (double)st.prompt_tokens : 0.0);
    fprintf(f, "# HELP deepseek_http_requests_total HTTP requests by route\n# TYPE deepseek_http_requests_total counter\n");
    for (int r = 1; r < R_COUNT; r++)
        fprintf(f, "deepseek_http_requests_total{route=\"%s\"} %lld\n", k_route_names[r], (long long)atomic_load(&s->req_total[r]));
    fprintf(f, "# HELP deepseek_http_responses_total HTTP responses by status class\n# TYPE deepseek_http_responses_total counter\n");
    fprintf(f, "deepseek_http_responses_total{class=\"2xx\"} %lld\n", (long long)atomic_load(&s->status_2xx));
    fprintf(f, "deepseek_http_responses_total{class=\"4xx\"} %lld\n", (long long)atomic_load(&s->status_4xx));
    fprintf(f, "deepseek_http_responses_total{class=\"5xx\"} %lld\n", (long long)atomic_load(&s->status_5xx));
    G("http_overloaded_total", "requests refused with 503", "counter", atomic_load(&s->status_503));
    G("process_resident_memory_bytes", "resident set size", "gauge", rss_bytes());
#undef G
    fclose(f);
    return send_buf(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result h_vendor(srv_server *s, struct MHD_Connection *c, const char *path) {
    char fp[1024];
    const char *ct = NULL;
    if (!srv_web_vendor_path(s->js_dir, path, fp, sizeof fp, &ct))
        return fail(s, c, 404, "invalid_request_error", "not_found", "not found: %.200s", path);
    int fd = open(fp, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0) close(fd);
        return fail(s, c, 404, "invalid_request_error", "not_found", "not found: %.200s", path);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    if (!r) { close(fd); return MHD_NO; }
    MHD_add_response_header(r, "Content-Type", ct);
    MHD_add_response_header(r, "Cache-Control", "public, max-age=86400");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&s->status_2xx, 1);
    return ret;
}

/* ---------------------------------------------------------- tokenize */

static enum MHD_Result h_tokenize(srv_server *s, struct MHD_Connection *c, const conn_state *cs) {
    oa_error err = { 0 };
    json_error_t je;
    json_t *root = json_loadb(cs->body ? cs->body : "", cs->n, JSON_ALLOW_NUL, &je);   /* "\u0000" is text (the strings are used with their lengths) */
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return fail(s, c, 400, "invalid_request_error", "invalid_json", "the request body must be a JSON object%s%s",
                    root ? "" : ": ", root ? "" : je.text);
    }
    tok_ids ids = { 0 };
    ds_err e = { 0 };
    json_t *content = json_object_get(root, "content");
    if (!content) content = json_object_get(root, "prompt");
    if (json_object_get(root, "messages")) {
        oa_request r;
        if (oa_parse_chat(cs->body, cs->n, &s->lim, &r, &err)) { json_decref(root); return send_error(s, c, &err); }
        bool reasoning;
        int rc = oa_chat_prompt(s->tok, s->fmt, &r, s->o.thinking, &ids, &reasoning, &err);
        oa_request_free(&r);
        if (rc) { json_decref(root); tok_ids_free(&ids); return send_error(s, c, &err); }
    } else {
        if (!json_is_string(content)) {
            json_decref(root);
            return fail(s, c, 400, "invalid_request_error", "invalid_request_error",
                        "content: expected a string (or give \"messages\" to apply the chat template)");
        }
        const json_t *as = json_object_get(root, "add_special"), *ps = json_object_get(root, "parse_special");
        if ((as && !json_is_boolean(as)) || (ps && !json_is_boolean(ps))) {
            json_decref(root);
            return fail(s, c, 400, "invalid_request_error", "invalid_request_error", "add_special / parse_special: expected booleans");
        }
        bool add = as && json_is_true(as), parse = !ps || json_is_true(ps);
        if (add && tok_bos_id(s->tok) >= 0) tok_ids_push(&ids, tok_bos_id(s->tok), &e);
        if (tok_encode_append(s->tok, json_string_value(content), json_string_length(content),
                              parse ? TOK_PARSE_SPECIAL : 0, &ids, &e)) {
            json_decref(root);
            tok_ids_free(&ids);
            return fail(s, c, 400, "invalid_request_error", "invalid_request_error", "content: %s", e.msg);
        }
    }
    const json_t *wp = json_object_get(root, "with_pieces");
    bool pieces = wp && json_is_true(wp);
    json_t *arr = json_array();
    for (int64_t i = 0; i < ids.n; i++) {
        if (!pieces) { json_array_append_new(arr, json_integer(ids.v[i])); continue; }
        size_t pl = 0;
        const char *p = tok_id_to_piece(s->tok, ids.v[i], &pl);
        char *clean = NULL;
        size_t cl = 0;
        json_t *ps = (p && tok_utf8_sanitize(p, pl, &clean, &cl, &e) == 0) ? json_stringn(clean, cl) : json_string("");
        free(clean);
        json_array_append_new(arr, json_pack("{s:i,s:o}", "id", ids.v[i], "piece", ps ? ps : json_string("")));
    }
    tok_ids_free(&ids);
    json_decref(root);
    return send_json(s, c, 200, json_pack("{s:o}", "tokens", arr));
}

static enum MHD_Result h_detokenize(srv_server *s, struct MHD_Connection *c, const conn_state *cs) {
    json_error_t je;
    json_t *root = json_loadb(cs->body ? cs->body : "", cs->n, 0, &je);
    json_t *toks = root ? json_object_get(root, "tokens") : NULL;
    if (!root || !json_is_object(root) || !json_is_array(toks)) {
        json_decref(root);
        return fail(s, c, 400, "invalid_request_error", "invalid_request_error", "tokens: expected an array of token ids");
    }
    size_t n = json_array_size(toks);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) { json_decref(root); return fail(s, c, 500, "server_error", NULL, "out of memory"); }
    int64_t tv = tok_vocab_size(s->tok);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(toks, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= tv ||
            !tok_id_to_piece(s->tok, (int32_t)json_integer_value(v), &(size_t){ 0 })) {
            free(ids);
            json_decref(root);
            return fail(s, c, 400, "invalid_request_error", "invalid_request_error",
                        "tokens[%zu]: not a token id of this tokenizer (0..%lld)", i, (long long)tv - 1);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    json_decref(root);
    char *txt = NULL, *clean = NULL;
    size_t tl = 0, cl = 0;
    ds_err e = { 0 };
    int rc = tok_decode(s->tok, ids, (int64_t)n, false, &txt, &tl, &e);
    free(ids);
    if (rc == 0) rc = tok_utf8_sanitize(txt, tl, &clean, &cl, &e);
    free(txt);
    if (rc) { free(clean); return fail(s, c, 400, "invalid_request_error", "invalid_request_error", "tokens: %s", e.msg); }
    json_t *o = json_pack("{s:o}", "content", json_stringn(clean, cl));
    free(clean);
    return send_json(s, c, 200, o);
}

/* ------------------------------------------------------- generation */

typedef struct gen {
    srv_server *s;
    oa_request r;
    oa_resp rs;
    srv_job *job;
    int fd;
    bool over, done_sent;
    bool *role_sent;
    char *echo;            /* completions with echo: the prompt text */
    char *out;             /* pending SSE bytes */
    size_t n_out, cap_out, off_out;
    double last_send;
    bool counted;
} gen;

static void gen_free(gen *g) {
    if (!g) return;
    if (g->job) {
        if (!g->over) srv_job_cancel(g->job);
        srv_job_release(g->job);
    }
    oa_request_free(&g->r);
    free(g->role_sent);
    free(g->echo);
    free(g->out);
    if (g->counted) atomic_fetch_sub(&g->s->streams_active, 1);
    free(g);
}

static void out_add(gen *g, const char *s, size_t n) {
    if (g->n_out + n > g->cap_out) {
        size_t cap = g->cap_out ? g->cap_out : 4096;
        while (cap < g->n_out + n) cap *= 2;
        char *p = realloc(g->out, cap);
        if (!p) return;
        g->out = p;
        g->cap_out = cap;
    }
    memcpy(g->out + g->n_out, s, n);
    g->n_out += n;
}

static void out_event(gen *g, json_t *o) {
    if (!o) return;
    char *txt = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!txt) return;
    out_add(g, "data: ", 6);
    out_add(g, txt, strlen(txt));
    out_add(g, "\n\n", 2);
    free(txt);
}

/* Turns scheduler events into SSE events. */
static void stream_events(gen *g, srv_event *evs, int n) {
    for (int i = 0; i < n; i++) {
        srv_event *ev = &evs[i];
        if (ev->type == SRV_EV_ERROR) {
            oa_error err = { 0 };
            oa_fail(&err, 500, "server_error", NULL, NULL, "%s", ev->text ? ev->text : "error");
            char *txt = oa_error_json(&err);
            if (txt) { out_add(g, "data: ", 6); out_add(g, txt, strlen(txt)); out_add(g, "\n\n", 2); free(txt); }
            continue;
        }
        out_event(g, oa_stream_event_json(&g->rs, g->s->tok, &g->r, ev, false));
    }
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    gen *g = cls;
    srv_server *s = g->s;
    while (g->off_out == g->n_out) {
        g->n_out = g->off_out = 0;
        if (g->done_sent) return MHD_CONTENT_READER_END_OF_STREAM;
        srv_event *evs;
        int n;
        bool over = srv_job_wait(g->job, 0.05, &evs, &n);
        stream_events(g, evs, n);
        for (int i = 0; i < n; i++) srv_event_free(&evs[i]);
        free(evs);
        if (over) {
            g->over = true;
            if (g->r.include_usage) {
                srv_job_usage u;
                srv_job_get_usage(g->job, &u);
                out_event(g, oa_stream_usage_json(&g->rs, &u));
            }
            out_add(g, "data: [DONE]\n\n", 14);
            g->done_sent = true;
        }
        if (g->n_out > 0) break;
        if (peer_gone(g->fd)) {
            srv_job_cancel(g->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (s->o.sse_ping_s > 0 && ds_now() - g->last_send >= s->o.sse_ping_s) {
            out_add(g, ": keep-alive\n\n", 14);
            break;
        }
    }
    size_t k = g->n_out - g->off_out;
    if (k > max) k = max;
    memcpy(buf, g->out + g->off_out, k);
    g->off_out += k;
    g->last_send = ds_now();
    return (ssize_t)k;
}

static void stream_free(void *cls) { gen_free(cls); }

static enum MHD_Result run_job(srv_server *s, struct MHD_Connection *c, gen *g, const srv_job_params *jp) {
    ds_err e = { 0 };
    oa_error err = { 0 };
    if (srv_job_new(&g->job, jp, &e)) {
        gen_free(g);
        return fail(s, c, 500, "server_error", NULL, "%s", e.msg);
    }
    int rc = srv_sched_submit(s->sched, g->job, &e);
    if (rc) {
        gen_free(g);
        if (rc == DS_ERANGE) return fail(s, c, 503, "server_overloaded", "server_overloaded", "%s; retry shortly", e.msg);
        return fail(s, c, 503, "unavailable_error", NULL, "%s", e.msg);
    }
    g->fd = conn_fd(c);
    if (g->r.stream) {
        g->last_send = ds_now();
        if (g->r.kind == OA_CHAT)
            for (int i = 0; i < g->r.n; i++) out_event(g, oa_stream_role_json(&g->rs, i, g->r.include_usage));
        if (g->r.kind == OA_COMPLETION && g->r.echo && g->r.prompt) /* echo: the prompt comes first */
            for (int i = 0; i < g->r.n; i++) {
                srv_event ev = { .type = SRV_EV_CONTENT, .choice = i, .text = (char *)g->r.prompt, .len = strlen(g->r.prompt) };
                out_event(g, oa_stream_event_json(&g->rs, s->tok, &g->r, &ev, true));
            }
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, g, stream_free);
        if (!resp) { gen_free(g); return MHD_NO; }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        if (s->cors) {
            const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
            if (!strcmp(s->cors, "*")) MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
            else if (origin && !strcmp(origin, s->cors)) MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cors);
        }
        atomic_fetch_add(&s->streams_active, 1);
        g->counted = true;
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        atomic_fetch_add(&s->status_2xx, 1);
        return ret;
    }
    /* non-streaming: wait here (this is the connection's own thread) */
    oa_acc acc;
    if (oa_acc_init(&acc, g->r.n)) { gen_free(g); return fail(s, c, 500, "server_error", NULL, "out of memory"); }
    for (;;) {
        srv_event *evs;
        int n;
        bool over = srv_job_wait(g->job, 0.05, &evs, &n);
        for (int i = 0; i < n; i++) {
            oa_acc_add(&acc, &evs[i]);
            srv_event_free(&evs[i]);
        }
        free(evs);
        if (over) { g->over = true; break; }
        if (n == 0 && peer_gone(g->fd)) { /* nobody to answer: free the slot now */
            srv_job_cancel(g->job);
            oa_acc_free(&acc);
            gen_free(g);
            return MHD_NO;
        }
    }
    enum MHD_Result ret;
    if (acc.error) {
        oa_fail(&err, 500, "server_error", NULL, NULL, "%s", acc.error);
        ret = send_error(s, c, &err);
    } else {
        srv_job_usage u;
        srv_job_get_usage(g->job, &u);
        ret = send_json(s, c, 200, oa_response_json(&g->rs, s->tok, &g->r, &acc, &u, g->echo));
    }
    oa_acc_free(&acc);
    gen_free(g);
    return ret;
}

static enum MHD_Result too_long(srv_server *s, struct MHD_Connection *c, int64_t n_prompt, const char *what) {
    oa_error err = { 0 };
    oa_fail(&err, 400, "invalid_request_error", what, "context_length_exceeded",
            "This model's maximum context length is %lld tokens. However, your %s resulted in %lld tokens "
            "(at least one token must be left for the completion).",
            (long long)s->ctx, what, (long long)n_prompt);
    return send_error(s, c, &err);
}

static enum MHD_Result h_generate(srv_server *s, struct MHD_Connection *c, const conn_state *cs, bool chat) {
    oa_error err = { 0 };
    gen *g = calloc(1, sizeof *g);
    if (!g) return fail(s, c, 500, "server_error", NULL, "out of memory");
    g->s = s;
    g->fd = -1;
    int rc = chat ? oa_parse_chat(cs->body ? cs->body : "", cs->n, &s->lim, &g->r, &err)
                  : oa_parse_completion(cs->body ? cs->body : "", cs->n, &s->lim, &g->r, &err);
    if (rc) { free(g); return send_error(s, c, &err); }
    oa_request *r = &g->r;
    tok_ids prompt = { 0 }, forced = { 0 }, tool_mid = { 0 }, tool_end = { 0 };
    const char *tool_names[64];
    int n_tool_names = 0;
    bool reasoning = false;
    rc = chat ? oa_chat_prompt(s->tok, s->fmt, r, s->o.thinking, &prompt, &reasoning, &err)
              : oa_completion_prompt(s->tok, r, &prompt, &err);
    if (!rc) rc = oa_forced_tokens(s->tok, s->fmt, r, &forced, &err);
    if (!rc) rc = oa_tool_call_parts(s->tok, s->fmt, r, &tool_mid, &tool_end, &err);
    enum MHD_Result ret;
    if (rc) { ret = send_error(s, c, &err); goto out; }
    for (int64_t i = 0; i < prompt.n; i++)
        if (prompt.v[i] >= s->m->cfg.vocab_size) {
            oa_fail(&err, 400, "invalid_request_error", "prompt", NULL, "token id %d is outside the model's vocabulary (%lld)",
                    prompt.v[i], (long long)s->m->cfg.vocab_size);
            ret = send_error(s, c, &err);
            goto out;
        }
    for (int64_t i = 0; i < forced.n; i++)
        if (forced.v[i] >= s->m->cfg.vocab_size) forced.n = i;
    const char *what = chat ? "messages" : "prompt";
    if (prompt.n + 1 > s->ctx) { ret = too_long(s, c, prompt.n, what); goto out; }
    int64_t room = s->ctx - prompt.n;
    int64_t max_tokens = r->max_tokens;
    if (max_tokens > 0 && max_tokens > room) {
        oa_fail(&err, 400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                "This model's maximum context length is %lld tokens. However, you requested %lld tokens "
                "(%lld in the %s, %lld in the completion). Please reduce the length of the %s or max_tokens.",
                (long long)s->ctx, (long long)(prompt.n + max_tokens), (long long)prompt.n, what, (long long)max_tokens, what);
        ret = send_error(s, c, &err);
        goto out;
    }
    if (max_tokens == 0) max_tokens = DS_MIN(s->o.default_max_tokens, room);
    if (r->json_mode) {
        if (!srv_sched_json_supported(s->sched)) {
            oa_fail(&err, 400, "invalid_request_error", "response_format", NULL,
                    "response_format json_object needs a byte-level tokenizer (a token for every byte); this one has none");
            ret = send_error(s, c, &err);
            goto out;
        }
        if (max_tokens < 2) {
            oa_fail(&err, 400, "invalid_request_error", "max_tokens", NULL,
                    "max_tokens: a JSON object needs at least 2 tokens with response_format json_object");
            ret = send_error(s, c, &err);
            goto out;
        }
    }
    /* tool_choice required / named: constrained to one well-formed call (byte-level tokenizers) */
    int32_t calls_end = tok_added_token_id(s->tok, "<｜tool▁calls▁end｜>", strlen("<｜tool▁calls▁end｜>"));
    bool tool_constrain = tool_end.n > 0 && calls_end >= 0 && tool_end.v[tool_end.n - 1] == calls_end &&
                          srv_sched_json_supported(s->sched);
    if (tool_constrain && r->tool_choice == OA_TC_REQUIRED) {
        size_t longest = 0;
        for (size_t i = 0; i < json_array_size(r->tools) && n_tool_names < 64; i++) {
            const char *nm = json_string_value(json_object_get(json_object_get(json_array_get(r->tools, i), "function"), "name"));
            if (nm) { tool_names[n_tool_names++] = nm; longest = DS_MAX(longest, strlen(nm)); }
        }
        tool_constrain = n_tool_names > 0 && longest <= 64;
        if (tool_constrain && max_tokens < forced.n + (int64_t)longest + tool_mid.n + 2 + tool_end.n) {
            oa_fail(&err, 400, "invalid_request_error", "max_tokens", NULL,
                    "max_tokens: a tool call with tool_choice \"required\" needs at least %lld tokens here",
                    (long long)(forced.n + (int64_t)longest + tool_mid.n + 2 + tool_end.n));
            ret = send_error(s, c, &err);
            goto out;
        }
    } else if (tool_constrain && max_tokens < forced.n + 2 + tool_end.n) {
        oa_fail(&err, 400, "invalid_request_error", "max_tokens", NULL,
                "max_tokens: a call of the function tool_choice names needs at least %lld tokens here",
                (long long)(forced.n + 2 + tool_end.n));
        ret = send_error(s, c, &err);
        goto out;
    }
    if (!tool_constrain) n_tool_names = 0;
    if (r->echo && !r->stream && r->prompt) g->echo = strdup(r->prompt);
    oa_resp_init(&g->rs, r->kind, s->alias, chat && reasoning);
    g->role_sent = calloc((size_t)r->n, sizeof *g->role_sent);
    srv_job_params jp = {
        .prompt = prompt.v, .n_prompt = prompt.n, .n = r->n, .sp = r->sp, .max_tokens = max_tokens,
        .stop = r->stop, .n_stop = r->n_stop, .logprobs = r->logprobs, .top_logprobs = r->top_logprobs,
        .bias_ids = r->bias_ids, .bias = r->bias, .n_bias = r->n_bias, .json_mode = r->json_mode, .chat = chat,
        .starts_in_reasoning = reasoning,
        .tools = (chat && r->n_tools > 0 && r->tool_choice != OA_TC_NONE) ? SRV_TOOLS_AUTO
                 : (chat && r->forced_output) ? SRV_TOOLS_AUTO : SRV_TOOLS_OFF,
        .fmt = s->fmt, .forced = forced.v, .n_forced = forced.n, .ignore_eos = r->ignore_eos,
        .mask_tool_calls = chat && (r->n_tools == 0 || r->tool_choice == OA_TC_NONE) && !r->forced_output,
        .token_delay_ms = r->token_delay_ms,
        .tool_constrain = tool_constrain, .tool_names = tool_names, .n_tool_names = n_tool_names,
        .tool_mid = tool_mid.v, .n_tool_mid = tool_mid.n, .tool_end = tool_end.v, .n_tool_end = tool_end.n,
    };
    for (int i = 0; i < jp.n_bias; i++)
        if (jp.bias_ids[i] >= s->m->cfg.vocab_size) {
            oa_fail(&err, 400, "invalid_request_error", "logit_bias", NULL, "logit_bias: token id %d is outside the vocabulary",
                    jp.bias_ids[i]);
            ret = send_error(s, c, &err);
            goto out;
        }
    logf_(s, "%s: %lld prompt tokens, max_tokens %lld, n %d%s", chat ? "chat" : "completion", (long long)prompt.n,
          (long long)max_tokens, r->n, r->stream ? ", stream" : "");
    ret = run_job(s, c, g, &jp); /* frees g */
    g = NULL;
out:
    tok_ids_free(&prompt);
    tok_ids_free(&forced);
    tok_ids_free(&tool_mid);
    tok_ids_free(&tool_end);
    if (g) {
        oa_request_free(&g->r);
        free(g->role_sent);
        free(g->echo);
        free(g);
    }
    return ret;
}

/* ------------------------------------------------------------ dispatch */

static bool content_type_ok(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct) return true;
    while (*ct == ' ') ct++;
    return !strncasecmp(ct, "application/json", 16) && (ct[16] == 0 || ct[16] == ';' || ct[16] == ' ');
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    srv_server *s = cls;
    conn_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        *con_cls = cs;
        atomic_fetch_add(&s->conns_active, 1);
        normalize_path(url, cs->path, sizeof cs->path);
        bool is_post = false;
        cs->route = route_of(cs->path, &is_post);
        cs->post = is_post;
        if (!strcmp(method, "OPTIONS")) {
            if (!s->cors) return fail(s, c, 405, "invalid_request_error", "method_not_allowed", "OPTIONS: CORS is not enabled on this server");
            struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
            MHD_add_response_header(r, "Access-Control-Allow-Origin", !strcmp(s->cors, "*") ? "*" : s->cors);
            MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Api-Key");
            MHD_add_response_header(r, "Access-Control-Max-Age", "600");
            enum MHD_Result ret = MHD_queue_response(c, 204, r);
            MHD_destroy_response(r);
            return ret;
        }
        if (!is_public(cs->route) && !authorized(s, c))
            return fail(s, c, 401, "authentication_error", "invalid_api_key",
                        "Authentication Fails: no API key or a wrong one (send \"Authorization: Bearer KEY\")");
        if (cs->route == R_NONE)
            return fail(s, c, 404, "invalid_request_error", "not_found", "unknown route %.200s %.200s", method, cs->path);
        atomic_fetch_add(&s->req_total[cs->route], 1);
        bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        if ((cs->post && strcmp(method, "POST")) || (!cs->post && !get))
            return fail(s, c, 405, "invalid_request_error", "method_not_allowed", "%.200s: method %.20s not allowed (use %s)",
                        cs->path, method, cs->post ? "POST" : "GET");
        if (cs->post) {
            if (!content_type_ok(c))
                return fail(s, c, 415, "invalid_request_error", "unsupported_media_type",
                            "Content-Type must be application/json");
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            if (cl && strtoull(cl, NULL, 10) > s->o.max_body)
                return fail(s, c, 413, "invalid_request_error", "request_too_large",
                            "the request body is %s bytes; the limit is %zu", cl, s->o.max_body);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cs->too_big) {
            if (cs->n + *upload_size > s->o.max_body) {
                cs->too_big = true;
            } else {
                if (cs->n + *upload_size + 1 > cs->cap) {
                    size_t cap = cs->cap ? cs->cap : 4096;
                    while (cap < cs->n + *upload_size + 1) cap *= 2;
                    char *p = realloc(cs->body, cap);
                    if (!p) return MHD_NO;
                    cs->body = p;
                    cs->cap = cap;
                }
                memcpy(cs->body + cs->n, upload, *upload_size);
                cs->n += *upload_size;
                cs->body[cs->n] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (cs->too_big)
        return fail(s, c, 413, "invalid_request_error", "request_too_large", "the request body exceeds %zu bytes", s->o.max_body);
    /* the whole request is here */
    switch (cs->route) {
    case R_HEALTH: return h_health(s, c);
    case R_WEB: {
        if (!s->o.web_ui) return fail(s, c, 404, "invalid_request_error", "not_found", "the web UI is disabled");
        const srv_asset *a = srv_web_find(cs->path);
        return send_buf(s, c, 200, a->content_type, a->data, a->len, MHD_RESPMEM_PERSISTENT);
    }
    case R_VENDOR: return h_vendor(s, c, cs->path);
    case R_METRICS: return h_metrics(s, c);
    default: break;
    }
    pthread_mutex_lock(&s->mu);
    int st = s->state;
    pthread_mutex_unlock(&s->mu);
    if (st != ST_READY)
        return fail(s, c, 503, "unavailable_error", st == ST_LOADING ? "model_loading" : "model_load_failed",
                    st == ST_LOADING ? "Loading model" : "the model failed to load");
    switch (cs->route) {
    case R_MODELS: case R_MODEL: return h_models(s, c, cs->path);
    case R_PROPS: return h_props(s, c);
    case R_TOKENIZE: return h_tokenize(s, c, cs);
    case R_DETOKENIZE: return h_detokenize(s, c, cs);
    case R_CHAT: return h_generate(s, c, cs, true);
    case R_COMPLETIONS: return h_generate(s, c, cs, false);
    default: return fail(s, c, 404, "invalid_request_error", "not_found", "not found");
    }
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)c;
    (void)toe;
    srv_server *s = cls;
    conn_state *cs = *con_cls;
    if (!cs) return;
    free(cs->body);
    free(cs);
    *con_cls = NULL;
    atomic_fetch_sub(&s->conns_active, 1);
}

/* ------------------------------------------------------------ loading */

static void *loader_main(void *arg) {
    srv_server *s = arg;
    ds_err e = { 0 };
    if (s->o.test_load_delay_s > 0) usleep((useconds_t)(s->o.test_load_delay_s * 1e6)); /* tests: observe the 503 */
    ds_model *m = NULL;
    ds_tokenizer *tok = NULL;
    srv_sched *sched = NULL;
    int rc = s->o.open_model ? s->o.open_model(&m, s->model_dir, s->o.open_ud, &e) : ds_model_open(&m, s->model_dir, &e);
    if (!rc && (rc = tok_load_for_model(&tok, s->model_dir, s->o.tokenizer, &e))) {
        ds_err in = e;
        ds_err_clear(&e);
        ds_err_set(&e, in.code, "%.470s (serving needs the model's tokenizer)", in.msg);
    }
    ds_chat_format fmt = DS_CHAT_AUTO;
    if (!rc) {
        if (s->o.chat_format && strcmp(s->o.chat_format, "auto")) fmt = (ds_chat_format)chat_format_from_name(s->o.chat_format);
        else {
            fmt = chat_format_resolve(s->model_dir, tok_chat_template(tok));
            if (fmt != DS_CHAT_V32 && fmt != DS_CHAT_V4 && tok_chat_template(tok) && !chat_template_known(tok_chat_template(tok)))
                fprintf(stderr, "deepseek serve: the model's chat template is not a DeepSeek V3, R1, V3.1 or V2 template "
                        "deepseek.c knows; using the V3 format (--chat-format picks one)\n");
        }
        if (tok_eos_id(tok) < 0 && m->cfg.eos_token_id < 0)
            rc = ds_err_set(&e, DS_EINVAL, "%s: no end-of-sequence token known (tokenizer_config.json / config.json)", s->model_dir);
    }
    int64_t ctx = 0;
    if (!rc) {
        ctx = s->o.ctx > 0 ? s->o.ctx : DS_MIN(m->cfg.max_position_embeddings, 8192);
        srv_sched_opts so = { s->o.n_slots, ctx, s->o.batch_tokens, s->o.max_queue, s->o.cache_ram_mb << 20,
                              s->o.cache_min_tokens, s->cache_dir, s->o.cache_disk_mb << 20, s->o.deterministic,
                              s->o.kv_type, s->o.no_prefill_store };
        rc = srv_sched_init(&sched, m, tok, &so, &e);
    }
    pthread_mutex_lock(&s->mu);
    if (rc) {
        s->state = ST_FAILED;
        s->load_err = e;
        srv_sched_free(sched);
        tok_free(tok);
        ds_model_close(m);
    } else {
        s->m = m;
        s->tok = tok;
        s->sched = sched;
        s->fmt = fmt;
        s->ctx = ctx;
        s->reasoning_default = chat_reply_starts_in_reasoning(fmt, s->o.thinking);
        oa_limits_default(&s->lim);
        s->lim.max_messages = s->o.max_messages;
        s->lim.max_n = DS_MIN(s->o.max_n, SRV_MAX_N);
        s->lim.max_tokens = s->o.max_tokens > 0 ? DS_MIN(s->o.max_tokens, ctx) : ctx;
        s->lim.vocab = DS_MIN(m->cfg.vocab_size, tok_vocab_size(tok));
        s->lim.test_hooks = s->o.test_hooks;
        s->state = ST_READY;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* --------------------------------------------------------------- start */

static char *dup_or_null(const char *x) { return x ? strdup(x) : NULL; }

static int listen_on(srv_server *s, ds_err *e) {
    char port[16];
    snprintf(port, sizeof port, "%d", s->o.port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res = NULL;
    int gr = getaddrinfo(s->host, port, &hints, &res);
    if (gr) return ds_err_set(e, DS_EINVAL, "--host %s: %s", s->host, gai_strerror(gr));
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) { err = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return ds_err_set(e, DS_EIO, "cannot listen on %s:%d: %s", s->host, s->o.port, strerror(err));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    s->listen_fd = fd;
    return ss.ss_family == AF_INET6 ? 6 : 4;
}

int srv_start(srv_server **out, const srv_opts *o, ds_err *e) {
    *out = NULL;
    if (!o->model_dir) return ds_err_set(e, DS_EINVAL, "no model folder");
    if (o->n_slots < 1 || o->n_slots > 256) return ds_err_set(e, DS_EINVAL, "--parallel must be in [1, 256]");
    if (o->chat_format && strcmp(o->chat_format, "auto") && chat_format_from_name(o->chat_format) < 0)
        return ds_err_set(e, DS_EINVAL, "--chat-format '%s': expected auto, v3, r1, v3.1, v2, v3.2 or v4", o->chat_format);
    srv_server *s = calloc(1, sizeof *s);
    if (!s) return ds_err_set(e, DS_ENOMEM, "out of memory");
    s->o = *o;
    s->listen_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->t_start = (double)time(NULL);
    s->model_dir = strdup(o->model_dir);
    s->host = strdup(o->host ? o->host : "127.0.0.1");
    s->cors = dup_or_null(o->cors_origin);
    s->cache_dir = dup_or_null(o->cache_dir);
    s->js_dir = dup_or_null(o->js_dir);
    if (o->alias) s->alias = strdup(o->alias);
    else {
        size_t n = strlen(o->model_dir);
        while (n > 1 && o->model_dir[n - 1] == '/') n--;
        const char *b = o->model_dir + n;
        while (b > o->model_dir && b[-1] != '/') b--;
        s->alias = strndup(b, (size_t)(o->model_dir + n - b));
    }
    if (o->api_keys) {
        s->keys = strdup(o->api_keys);
        for (char *tokp, *k = strtok_r(s->keys, ",", &tokp); k; k = strtok_r(NULL, ",", &tokp)) {
            while (*k == ' ') k++;
            if (!*k) continue;
            char **kl = realloc(s->key_list, (size_t)(s->n_keys + 1) * sizeof *kl);
            if (!kl) break;
            s->key_list = kl;
            s->key_list[s->n_keys++] = k;
        }
        if (s->n_keys == 0) { srv_stop(s); return ds_err_set(e, DS_EINVAL, "--api-key: empty key"); }
    }
    int fam = listen_on(s, e);
    if (fam < 0) { srv_stop(s); return fam; }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | (fam == 6 ? MHD_USE_IPv6 : 0);
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, s, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)o->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                            MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_END);
    if (!s->d) { srv_stop(s); return ds_err_set(e, DS_EIO, "libmicrohttpd could not start on port %d", o->port); }
    s->state = ST_LOADING;
    if (pthread_create(&s->loader, NULL, loader_main, s) != 0) {
        srv_stop(s);
        return ds_err_set(e, DS_ENOMEM, "cannot start the loader thread");
    }
    s->loader_started = true;
    *out = s;
    return DS_OK;
}

int srv_port(const srv_server *s) { return s->port; }

int srv_wait_loaded(srv_server *s, ds_err *e) {
    pthread_mutex_lock(&s->mu);
    while (s->state == ST_LOADING) pthread_cond_wait(&s->cv, &s->mu);
    int rc = DS_OK;
    if (s->state == ST_FAILED) {
        rc = s->load_err.code ? s->load_err.code : DS_EIO;
        if (e) *e = s->load_err;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void srv_stop(srv_server *s) {
    if (!s) return;
    if (s->loader_started) pthread_join(s->loader, NULL);
    if (s->d) MHD_quiesce_daemon(s->d); /* no new connections; the listening socket is ours again */
    srv_sched_stop(s->sched);           /* running jobs end with an error; submits fail from now on */
    /* let the handlers deliver those last events (a stream ends with an error and [DONE]) */
    for (int i = 0; i < 100 && atomic_load(&s->conns_active) > 0; i++) usleep(20000);
    if (s->d) MHD_stop_daemon(s->d);    /* joins the connection threads */
    if (s->listen_fd >= 0) close(s->listen_fd);
    srv_sched_free(s->sched);
    tok_free(s->tok);
    ds_model_close(s->m);
    free(s->alias);
    free(s->host);
    free(s->keys);
    free(s->key_list);
    free(s->cors);
    free(s->model_dir);
    free(s->cache_dir);
    free(s->js_dir);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
