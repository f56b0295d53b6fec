/*
 * openai.c - request parsing/validation, prompt building and response JSON
 * for the OpenAI/DeepSeek-compatible endpoints (see openai.h). Owns the
 * field-by-field rules of the API; not HTTP (http.c) and not decoding
 * (sched.c).
 */
#include "openai.h"
#include "../core/strbuf.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* -------------------------------------------------------------- errors */

int oa_fail(oa_error *err, int status, const char *type, const char *param, const char *code, const char *fmt, ...) {
    if (err && err->status == 0) {
        err->status = status;
        err->type = type;
        snprintf(err->param, sizeof err->param, "%s", param ? param : "");
        snprintf(err->code, sizeof err->code, "%s", code ? code : "");
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return DS_EINVAL;
}

/* A JSON string from bytes that may not be valid UTF-8. */
static json_t *str_lossy(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *clean = NULL;
    size_t cl = 0;
    ds_err e = { 0 };
    if (tok_utf8_sanitize(s, n, &clean, &cl, &e)) return json_string("");
    j = json_stringn(clean, cl);
    free(clean);
    return j ? j : json_string("");
}

char *oa_error_json(const oa_error *err) {
    json_t *o = json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", str_lossy(err->message, strlen(err->message)),
                          "type", err->type ? err->type : "invalid_request_error", "param",
                          err->param[0] ? json_string(err->param) : json_null(), "code",
                          err->code[0] ? json_string(err->code) : json_null());
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

#define BAD(param, ...) oa_fail(err, 400, "invalid_request_error", param, "invalid_request_error", __VA_ARGS__)

void oa_limits_default(oa_limits *l) {
    memset(l, 0, sizeof *l);
    l->max_messages = 2048;
    l->max_n = 8;
    l->max_tokens = 1 << 20;
    l->max_stop = 16;
    l->max_stop_bytes = 512;
    l->max_tools = 128;
    l->max_logit_bias = 1024;
    l->vocab = 1 << 30;
}

/* ------------------------------------------------------- typed getters */

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE: case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

/* Field present and not null? */
static const json_t *field(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int get_num(const json_t *o, const char *key, double lo, double hi, float *out, oa_error *err) {
    const json_t *v = field(o, key);
    if (!v) return DS_OK;
    if (!json_is_number(v)) return BAD(key, "%s: expected a number, got %s", key, type_name(v));
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return BAD(key, "%s: %g is out of range [%g, %g]", key, x, lo, hi);
    *out = (float)x;
    return DS_OK;
}

static int get_int(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out, bool *given, oa_error *err) {
    const json_t *v = field(o, key);
    if (given) *given = v != NULL;
    if (!v) return DS_OK;
    int64_t x;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15)
        x = (int64_t)json_real_value(v);
    else return BAD(key, "%s: expected an integer, got %s", key, type_name(v));
    if (x < lo || x > hi) return BAD(key, "%s: %lld is out of range [%lld, %lld]", key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return DS_OK;
}

static int get_bool(const json_t *o, const char *key, bool *out, oa_error *err) {
    const json_t *v = field(o, key);
    if (!v) return DS_OK;
    if (!json_is_boolean(v)) return BAD(key, "%s: expected a boolean, got %s", key, type_name(v));
    *out = json_is_true(v);
    return DS_OK;
}

static int get_str(const json_t *o, const char *key, const char **out, oa_error *err) {
    const json_t *v = field(o, key);
    if (!v) return DS_OK;
    if (!json_is_string(v)) return BAD(key, "%s: expected a string, got %s", key, type_name(v));
    /* these strings are used up to their first NUL: refused rather than cut (message content takes them) */
    if (memchr(json_string_value(v), 0, json_string_length(v))) return BAD(key, "%s: contains a NUL character", key);
    *out = json_string_value(v);
    return DS_OK;
}

static char *own(oa_request *r, char *s) {
    if (!s) return NULL;
    char **no = realloc(r->owned, (size_t)(r->n_owned + 1) * sizeof *no);
    if (!no) { free(s); return NULL; }
    r->owned = no;
    r->owned[r->n_owned++] = s;
    return s;
}

/* ------------------------------------------------------- shared fields */

static int parse_body(const char *body, size_t len, json_t **root, oa_error *err) {
    json_error_t je;
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!*root)
        return oa_fail(err, 400, "invalid_request_error", NULL, "invalid_json",
                       "the request body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    if (!json_is_object(*root)) {
        const char *tn = type_name(*root);
        json_decref(*root);
        *root = NULL;
        return BAD(NULL, "the request body must be a JSON object, got %s", tn);
    }
    return DS_OK;
}

static int parse_stop(const json_t *root, const oa_limits *lim, oa_request *r, oa_error *err) {
    const json_t *v = field(root, "stop");
    if (!v) return DS_OK;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && !json_is_array(v)) return BAD("stop", "stop: expected a string or an array of strings, got %s", type_name(v));
    if ((int)n > lim->max_stop || n > 1024) return BAD("stop", "stop: %zu sequences; at most %d are allowed", n, lim->max_stop);
    r->stop = calloc(n ? n : 1, sizeof *r->stop);
    if (!r->stop) return oa_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(s)) return BAD("stop", "stop[%zu]: expected a string, got %s", i, type_name(s));
        size_t sl = json_string_length(s);
        if (sl == 0) continue; /* an empty stop string would match everywhere: ignore it */
        if ((int)sl > lim->max_stop_bytes) return BAD("stop", "stop[%zu]: %zu bytes; at most %d are allowed", i, sl, lim->max_stop_bytes);
        if (memchr(json_string_value(s), 0, sl)) return BAD("stop", "stop[%zu]: contains a NUL character", i);
        r->stop[r->n_stop++] = json_string_value(s);
    }
    return DS_OK;
}

static int parse_logit_bias(const json_t *root, const oa_limits *lim, oa_request *r, oa_error *err) {
    const json_t *v = field(root, "logit_bias");
    if (!v) return DS_OK;
    if (!json_is_object(v)) return BAD("logit_bias", "logit_bias: expected an object mapping token ids to numbers, got %s", type_name(v));
    size_t n = json_object_size(v);
    if ((int)n > lim->max_logit_bias) return BAD("logit_bias", "logit_bias: %zu entries; at most %d are allowed", n, lim->max_logit_bias);
    r->bias_ids = malloc((n ? n : 1) * sizeof *r->bias_ids);
    r->bias = malloc((n ? n : 1) * sizeof *r->bias);
    if (!r->bias_ids || !r->bias) return oa_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        char *end;
        long long id = strtoll(key, &end, 10);
        if (!*key || *end || id < 0 || id >= lim->vocab)
            return BAD("logit_bias", "logit_bias: key '%.40s' is not a token id in [0, %lld)", key, (long long)lim->vocab);
        if (!json_is_number(val)) return BAD("logit_bias", "logit_bias[%s]: expected a number, got %s", key, type_name(val));
        double b = json_number_value(val);
        if (!(b >= -100 && b <= 100)) return BAD("logit_bias", "logit_bias[%s]: %g is out of range [-100, 100]", key, b);
        r->bias_ids[r->n_bias] = (int32_t)id;
        r->bias[r->n_bias++] = (float)b;
    }
    return DS_OK;
}

/* Decoding fields common to both endpoints. */
static int parse_common(const json_t *root, const oa_limits *lim, oa_request *r, oa_error *err) {
    ds_sampler_params_default(&r->sp);
    r->sp.temperature = 1.0f; /* the API's default */
    r->n = 1;
    int rc;
    const json_t *model = field(root, "model");
    if (model && !json_is_string(model)) return BAD("model", "model: expected a string, got %s", type_name(model));
    r->model = model ? json_string_value(model) : NULL;
    if ((rc = get_num(root, "temperature", 0, 2, &r->sp.temperature, err))) return rc;
    if ((rc = get_num(root, "top_p", 0, 1, &r->sp.top_p, err))) return rc;
    if (r->sp.top_p == 0.0f) { r->sp.top_p = 1.0f; r->sp.temperature = 0.0f; } /* top_p 0 keeps only the top token */
    if ((rc = get_num(root, "min_p", 0, 1, &r->sp.min_p, err))) return rc;
    if ((rc = get_num(root, "frequency_penalty", -2, 2, &r->sp.frequency_penalty, err))) return rc;
    if ((rc = get_num(root, "presence_penalty", -2, 2, &r->sp.presence_penalty, err))) return rc;
    if ((rc = get_num(root, "repetition_penalty", 0.01, 10, &r->sp.repetition_penalty, err))) return rc;
    int64_t x = 0;
    bool given;
    if ((rc = get_int(root, "top_k", 0, lim->vocab, &x, &given, err))) return rc;
    if (given) r->sp.top_k = (int32_t)x;
    if ((rc = get_int(root, "seed", INT64_MIN, INT64_MAX, &x, &r->seed_given, err))) return rc;
    if (r->seed_given) r->sp.seed = (uint64_t)x;
    bool mt_given = false;
    if ((rc = get_int(root, "max_tokens", 1, lim->max_tokens, &r->max_tokens, &mt_given, err))) return rc;
    if (!mt_given && (rc = get_int(root, "max_completion_tokens", 1, lim->max_tokens, &r->max_tokens, NULL, err))) return rc;
    x = 1;
    if ((rc = get_int(root, "n", 1, lim->max_n, &x, NULL, err))) return rc;
    r->n = (int)x;
    if ((rc = get_int(root, "best_of", 1, 1, &x, NULL, err))) return rc;
    if ((rc = get_bool(root, "stream", &r->stream, err))) return rc;
    const json_t *so = field(root, "stream_options");
    if (so) {
        if (!json_is_object(so)) return BAD("stream_options", "stream_options: expected an object, got %s", type_name(so));
        if ((rc = get_bool(so, "include_usage", &r->include_usage, err))) {
            snprintf(err->param, sizeof err->param, "stream_options.include_usage");
            return rc;
        }
    }
    if ((rc = parse_stop(root, lim, r, err))) return rc;
    if ((rc = parse_logit_bias(root, lim, r, err))) return rc;
    if ((rc = get_bool(root, "ignore_eos", &r->ignore_eos, err))) return rc;
    const json_t *rf = field(root, "response_format");
    if (rf) {
        const char *t = NULL;
        if (!json_is_object(rf)) return BAD("response_format", "response_format: expected an object, got %s", type_name(rf));
        const json_t *tv = field(rf, "type");
        if (!tv || !json_is_string(tv)) return BAD("response_format.type", "response_format.type: expected \"text\" or \"json_object\"");
        t = json_string_value(tv);
        if (!strcmp(t, "json_object")) r->json_mode = true;
        else if (strcmp(t, "text"))
            return BAD("response_format.type", "response_format.type: '%.40s' is not supported; use \"text\" or \"json_object\"", t);
    }
    if (lim->test_hooks) {
        if ((rc = get_str(root, "x_forced_output", &r->forced_output, err))) return rc;
        x = 0;
        if ((rc = get_int(root, "x_token_delay_ms", 0, 10000, &x, NULL, err))) return rc;
        r->token_delay_ms = (int)x;
    }
    if (!r->seed_given) { /* fresh randomness per request */
        static atomic_ullong ctr;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t z = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (atomic_fetch_add(&ctr, 1) * 0x9e3779b97f4a7c15ull);
        z ^= z >> 31;
        z *= 0xbf58476d1ce4e5b9ull;
        r->sp.seed = z ^ (z >> 29);
    }
    return DS_OK;
}

/* --------------------------------------------------------------- chat */

static bool valid_fn_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
    }
    return true;
}

/* A message's content: a string or an array of text parts (joined), into
 * msg->content / content_len. NUL characters ("\u0000") are text like any
 * other: a model can write the byte 0, and a client sends its answers back. */
static int message_content(oa_request *r, const json_t *m, int i, bool allow_null, ds_chat_msg *msg, oa_error *err) {
    const char **out = &msg->content;
    char path[64];
    snprintf(path, sizeof path, "messages[%d].content", i);
    const json_t *c = field(m, "content");
    *out = NULL;
    if (!c) {
        if (allow_null) return DS_OK;
        return BAD(path, "%s: required", path);
    }
    if (json_is_string(c)) {
        *out = json_string_value(c);
        msg->content_len = json_string_length(c);
        return DS_OK;
    }
    if (!json_is_array(c)) return BAD(path, "%s: expected a string or an array of content parts, got %s", path, type_name(c));
    size_t total = 0;
    for (size_t k = 0; k < json_array_size(c); k++) {
        const json_t *part = json_array_get(c, k);
        const char *ty = json_string_value(json_object_get(part, "type"));
        if (!json_is_object(part) || !ty)
            return BAD(path, "%s[%zu]: expected an object with a \"type\"", path, k);
        if (strcmp(ty, "text"))
            return BAD(path, "%s[%zu]: content type '%.40s' is not supported (text only)", path, k, ty);
        const json_t *tx = json_object_get(part, "text");
        if (!json_is_string(tx)) return BAD(path, "%s[%zu].text: expected a string", path, k);
        total += json_string_length(tx);
    }
    char *s = own(r, malloc(total + 1));
    if (!s) return oa_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    size_t o = 0;
    for (size_t k = 0; k < json_array_size(c); k++) {
        const json_t *tx = json_object_get(json_array_get(c, k), "text");
        memcpy(s + o, json_string_value(tx), json_string_length(tx));
        o += json_string_length(tx);
    }
    s[o] = 0;
    *out = s;
    msg->content_len = o;
    return DS_OK;
}

static int parse_tool_calls(oa_request *r, const json_t *m, int i, ds_chat_msg *msg, oa_error *err) {
    const json_t *tc = field(m, "tool_calls");
    if (!tc) return DS_OK;
    char path[80];
    snprintf(path, sizeof path, "messages[%d].tool_calls", i);
    if (!json_is_array(tc)) return BAD(path, "%s: expected an array, got %s", path, type_name(tc));
    size_t n = json_array_size(tc);
    if (n == 0) return DS_OK;
    if (n > 1024) return BAD(path, "%s: too many tool calls", path);
    msg->tool_calls = r->calls + r->n_calls;
    for (size_t k = 0; k < n; k++) {
        const json_t *c = json_array_get(tc, k);
        const json_t *fn = json_object_get(c, "function");
        if (!json_is_object(c) || !json_is_object(fn))
            return BAD(path, "%s[%zu]: expected {\"type\":\"function\",\"function\":{\"name\",\"arguments\"}}", path, k);
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name) return BAD(path, "%s[%zu].function.name: expected a string", path, k);
        const json_t *args = json_object_get(fn, "arguments");
        const char *a = NULL;
        if (json_is_string(args)) a = json_string_value(args);
        else if (json_is_object(args)) a = own(r, json_dumps(args, JSON_COMPACT));
        else if (args && !json_is_null(args))
            return BAD(path, "%s[%zu].function.arguments: expected a JSON string, got %s", path, k, type_name(args));
        ds_tool_call *call = &r->calls[r->n_calls++];
        call->id = json_string_value(json_object_get(c, "id"));
        call->type = "function";
        call->name = name;
        call->arguments = a ? a : "{}";
    }
    msg->n_tool_calls = (int)n;
    return DS_OK;
}

int oa_parse_chat(const char *body, size_t len, const oa_limits *lim, oa_request *r, oa_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = OA_CHAT;
    r->thinking = -1;
    r->tool_choice = OA_TC_AUTO;
    int rc = parse_body(body, len, &r->root, err);
    if (rc) return rc;
    const json_t *root = r->root;
    const json_t *ms = json_object_get(root, "messages");
    if (!ms || json_is_null(ms)) { rc = BAD("messages", "messages: required"); goto fail; }
    if (!json_is_array(ms)) { rc = BAD("messages", "messages: expected an array, got %s", type_name(ms)); goto fail; }
    size_t nm = json_array_size(ms);
    if (nm == 0) { rc = BAD("messages", "messages: must contain at least one message"); goto fail; }
    if ((int64_t)nm > lim->max_messages) {
        rc = BAD("messages", "messages: %zu messages; at most %d are allowed", nm, lim->max_messages);
        goto fail;
    }
    size_t n_calls = 0;
    for (size_t i = 0; i < nm; i++) {
        const json_t *tc = json_object_get(json_array_get(ms, i), "tool_calls");
        if (json_is_array(tc)) n_calls += json_array_size(tc);
    }
    r->msgs = calloc(nm + 1, sizeof *r->msgs); /* +1: the tools system message */
    r->calls = calloc(n_calls + 1, sizeof *r->calls);
    if (!r->msgs || !r->calls) { rc = oa_fail(err, 500, "server_error", NULL, NULL, "out of memory"); goto fail; }
    bool after_calls = false;
    for (size_t i = 0; i < nm; i++) {
        const json_t *m = json_array_get(ms, i);
        char path[64];
        snprintf(path, sizeof path, "messages[%zu]", i);
        if (!json_is_object(m)) { rc = BAD(path, "%s: expected an object, got %s", path, type_name(m)); goto fail; }
        const json_t *rv = json_object_get(m, "role");
        snprintf(path, sizeof path, "messages[%zu].role", i);
        if (!rv || !json_is_string(rv)) {
            rc = BAD(path, "%s: expected one of \"system\", \"user\", \"assistant\", \"tool\"", path);
            goto fail;
        }
        const char *role = json_string_value(rv);
        int ro = !strcmp(role, "developer") ? DS_ROLE_SYSTEM : chat_role_from_name(role);
        if (ro < 0) {
            rc = BAD(path, "%s: unknown role '%.40s'; expected one of system, user, assistant, tool", path, role);
            goto fail;
        }
        ds_chat_msg *msg = &r->msgs[r->n_msgs];
        msg->role = (ds_chat_role)ro;
        if ((rc = parse_tool_calls(r, m, (int)i, msg, err))) goto fail;
        if (ro == DS_ROLE_ASSISTANT) {
            if ((rc = message_content(r, m, (int)i, true, msg, err))) goto fail;
            if (!msg->content && msg->n_tool_calls == 0) msg->content = "";
            const char *rs = NULL;
            if ((rc = get_str(m, "reasoning_content", &rs, err))) goto fail; /* V3.2 / V4 render it where their encoders do */
            msg->reasoning = rs;
            bool pre = false;
            if ((rc = get_bool(m, "prefix", &pre, err))) goto fail;
            if (pre && i + 1 != nm) {
                snprintf(path, sizeof path, "messages[%zu].prefix", i);
                rc = BAD(path, "%s: only the last message may be an assistant prefix", path);
                goto fail;
            }
            if (pre && msg->n_tool_calls > 0) {
                rc = BAD(path, "messages[%zu]: a prefix message cannot carry tool_calls", i);
                goto fail;
            }
            msg->prefix = pre;
            r->prefix = pre;
        } else {
            if (msg->n_tool_calls > 0) {
                snprintf(path, sizeof path, "messages[%zu].tool_calls", i);
                rc = BAD(path, "%s: only assistant messages carry tool_calls", path);
                goto fail;
            }
            if ((rc = message_content(r, m, (int)i, false, msg, err))) goto fail;
        }
        if (ro == DS_ROLE_TOOL && !after_calls) {
            snprintf(path, sizeof path, "messages[%zu]", i);
            rc = BAD(path, "%s: a message with role 'tool' must follow an assistant message with 'tool_calls'", path);
            goto fail;
        }
        if (ro == DS_ROLE_TOOL) {
            const json_t *id = field(m, "tool_call_id");
            if (id && !json_is_string(id)) {
                snprintf(path, sizeof path, "messages[%zu].tool_call_id", i);
                rc = BAD(path, "%s: expected a string, got %s", path, type_name(id));
                goto fail;
            }
            msg->tool_call_id = json_string_value(id);
        }
        after_calls = (ro == DS_ROLE_ASSISTANT && msg->n_tool_calls > 0) || (ro == DS_ROLE_TOOL && after_calls);
        r->n_msgs++;
    }
    /* tools */
    const json_t *tools = field(root, "tools");
    if (tools) {
        if (!json_is_array(tools)) { rc = BAD("tools", "tools: expected an array, got %s", type_name(tools)); goto fail; }
        if ((int)json_array_size(tools) > lim->max_tools) {
            rc = BAD("tools", "tools: %zu tools; at most %d are allowed", json_array_size(tools), lim->max_tools);
            goto fail;
        }
        for (size_t i = 0; i < json_array_size(tools); i++) {
            const json_t *t = json_array_get(tools, i);
            char path[64];
            snprintf(path, sizeof path, "tools[%zu]", i);
            const char *ty = json_string_value(json_object_get(t, "type"));
            const json_t *fn = json_object_get(t, "function");
            if (!json_is_object(t) || !ty || strcmp(ty, "function") || !json_is_object(fn)) {
                rc = BAD(path, "%s: expected {\"type\":\"function\",\"function\":{\"name\",...}}", path);
                goto fail;
            }
            const char *name = json_string_value(json_object_get(fn, "name"));
            if (!name || !valid_fn_name(name)) {
                rc = BAD(path, "%s.function.name: must be 1-64 characters of a-z, A-Z, 0-9, _ and -", path);
                goto fail;
            }
            const json_t *d = field(fn, "description"), *pa = field(fn, "parameters");
            if (d && !json_is_string(d)) { rc = BAD(path, "%s.function.description: expected a string", path); goto fail; }
            if (pa && !json_is_object(pa)) { rc = BAD(path, "%s.function.parameters: expected a JSON Schema object", path); goto fail; }
        }
        r->tools = tools;
        r->n_tools = (int)json_array_size(tools);
    }
    const json_t *tc = field(root, "tool_choice");
    if (tc) {
        if (json_is_string(tc)) {
            const char *s = json_string_value(tc);
            if (!strcmp(s, "none")) r->tool_choice = OA_TC_NONE;
            else if (!strcmp(s, "auto")) r->tool_choice = OA_TC_AUTO;
            else if (!strcmp(s, "required")) r->tool_choice = OA_TC_REQUIRED;
            else { rc = BAD("tool_choice", "tool_choice: '%.40s' is not one of none, auto, required", s); goto fail; }
        } else if (json_is_object(tc)) {
            const char *name = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
            if (!name) { rc = BAD("tool_choice", "tool_choice: expected {\"type\":\"function\",\"function\":{\"name\":...}}"); goto fail; }
            r->tool_choice = OA_TC_NAMED;
            r->tool_choice_name = name;
        } else {
            rc = BAD("tool_choice", "tool_choice: expected a string or an object, got %s", type_name(tc));
            goto fail;
        }
        if ((r->tool_choice == OA_TC_REQUIRED || r->tool_choice == OA_TC_NAMED) && r->n_tools == 0) {
            rc = BAD("tool_choice", "tool_choice: requires a non-empty 'tools'");
            goto fail;
        }
        if (r->tool_choice == OA_TC_NAMED) {
            bool found = false;
            for (int i = 0; i < r->n_tools && !found; i++) {
                const char *nm2 = json_string_value(json_object_get(json_object_get(json_array_get(tools, (size_t)i), "function"), "name"));
                found = nm2 && !strcmp(nm2, r->tool_choice_name);
            }
            if (!found) { rc = BAD("tool_choice", "tool_choice: no tool named '%.64s' in 'tools'", r->tool_choice_name); goto fail; }
        }
    }
    const json_t *th = field(root, "thinking");
    if (th) {
        const char *ty = json_is_object(th) ? json_string_value(json_object_get(th, "type")) : NULL;
        if (json_is_boolean(th)) r->thinking = json_is_true(th);
        else if (ty && !strcmp(ty, "enabled")) r->thinking = 1;
        else if (ty && !strcmp(ty, "disabled")) r->thinking = 0;
        else { rc = BAD("thinking", "thinking: expected {\"type\": \"enabled\"} or {\"type\": \"disabled\"}"); goto fail; }
    }
    const json_t *re = field(root, "reasoning_effort");
    if (re) {
        int eff = json_is_string(re) ? chat_effort_from_name(json_string_value(re)) : -1;
        if (eff < 0) { rc = BAD("reasoning_effort", "reasoning_effort: expected \"low\", \"medium\", \"high\" or \"max\""); goto fail; }
        r->reasoning_effort = eff;
    }
    if ((rc = parse_common(root, lim, r, err))) goto fail;
    const json_t *lpv = field(root, "logprobs");
    if (lpv && !json_is_boolean(lpv)) { rc = BAD("logprobs", "logprobs: expected a boolean, got %s", type_name(lpv)); goto fail; }
    r->logprobs = lpv && json_is_true(lpv);
    int64_t tl = 0;
    bool tl_given;
    if ((rc = get_int(root, "top_logprobs", 0, SRV_MAX_TOP, &tl, &tl_given, err))) goto fail;
    if (tl_given && !r->logprobs) { rc = BAD("top_logprobs", "top_logprobs: requires logprobs: true"); goto fail; }
    r->top_logprobs = (int)tl;
    return DS_OK;
fail:
    oa_request_free(r);
    return rc;
}

/* ---------------------------------------------------------- completion */

int oa_parse_completion(const char *body, size_t len, const oa_limits *lim, oa_request *r, oa_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = OA_COMPLETION;
    r->thinking = -1;
    r->tool_choice = OA_TC_NONE;
    int rc = parse_body(body, len, &r->root, err);
    if (rc) return rc;
    const json_t *root = r->root;
    const json_t *p = json_object_get(root, "prompt");
    if (!p || json_is_null(p)) { rc = BAD("prompt", "prompt: required"); goto fail; }
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0))) p = json_array_get(p, 0);
    if (json_is_string(p)) {
        r->prompt = json_string_value(p);
    } else if (json_is_array(p)) {
        size_t n = json_array_size(p);
        if (n == 0) { rc = BAD("prompt", "prompt: must not be empty"); goto fail; }
        if (n > (size_t)1 << 24) { rc = BAD("prompt", "prompt: too many tokens"); goto fail; }
        r->prompt_ids = malloc(n * sizeof *r->prompt_ids);
        if (!r->prompt_ids) { rc = oa_fail(err, 500, "server_error", NULL, NULL, "out of memory"); goto fail; }
        for (size_t i = 0; i < n; i++) {
            const json_t *v = json_array_get(p, i);
            if (!json_is_integer(v)) {
                rc = BAD("prompt", "prompt: expected a string, an array of token ids or an array with one string; "
                         "prompt[%zu] is %s", i, type_name(v));
                goto fail;
            }
            json_int_t id = json_integer_value(v);
            if (id < 0 || id >= lim->vocab) {
                rc = BAD("prompt", "prompt[%zu]: token id %lld is out of range [0, %lld)", i, (long long)id, (long long)lim->vocab);
                goto fail;
            }
            r->prompt_ids[r->n_prompt_ids++] = (int32_t)id;
        }
    } else {
        rc = BAD("prompt", "prompt: expected a string or an array of token ids, got %s", type_name(p));
        goto fail;
    }
    if ((rc = get_str(root, "suffix", &r->suffix, err))) goto fail;
    if (r->suffix && !r->prompt) { rc = BAD("suffix", "suffix: needs a text prompt"); goto fail; }
    if ((rc = get_bool(root, "echo", &r->echo, err))) goto fail;
    if ((rc = parse_common(root, lim, r, err))) goto fail;
    int64_t lp = 0;
    bool lp_given;
    if ((rc = get_int(root, "logprobs", 0, SRV_MAX_TOP, &lp, &lp_given, err))) goto fail;
    r->logprobs = lp_given;
    r->top_logprobs = (int)lp;
    return DS_OK;
fail:
    oa_request_free(r);
    return rc;
}

void oa_request_free(oa_request *r) {
    if (!r) return;
    json_decref(r->root);
    free(r->msgs);
    free(r->calls);
    free(r->prompt_ids);
    free(r->stop);
    free(r->bias_ids);
    free(r->bias);
    for (int i = 0; i < r->n_owned; i++) free(r->owned[i]);
    free(r->owned);
    memset(r, 0, sizeof *r);
}

/* --------------------------------------------------------- prompts */


/* The tools section of the system prompt, in the layout the model emits. */
static char *tools_prompt(const oa_request *r, ds_chat_format fmt) {
    ds_buf b = { 0 };
    ds_buf_str(&b, "## Tools\nYou have access to the following tools:\n");
    for (int i = 0; i < r->n_tools; i++) {
        const json_t *fn = json_object_get(json_array_get(r->tools, (size_t)i), "function");
        ds_buf_str(&b, "\n### ");
        ds_buf_str(&b, json_string_value(json_object_get(fn, "name")));
        const char *d = json_string_value(json_object_get(fn, "description"));
        if (d) { ds_buf_str(&b, "\nDescription: "); ds_buf_str(&b, d); }
        const json_t *pa = json_object_get(fn, "parameters");
        char *ps = pa ? json_dumps(pa, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        ds_buf_str(&b, "\n\nParameters: ");
        ds_buf_str(&b, ps ? ps : "{}");
        ds_buf_str(&b, "\n");
        free(ps);
    }
    if (fmt == DS_CHAT_V31)
        ds_buf_str(&b, "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
                   "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>tool_call_arguments"
                   "<｜tool▁call▁end｜>{{additional_tool_calls}}<｜tool▁calls▁end｜>\n\n"
                   "Where tool_call_name is exactly one of the tools above and tool_call_arguments is valid JSON "
                   "matching its parameters.");
    else
        ds_buf_str(&b, "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
                   "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>tool_call_name\n```json\n"
                   "tool_call_arguments\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>\n\n"
                   "Where tool_call_name is exactly one of the tools above and tool_call_arguments is valid JSON "
                   "matching its parameters; further calls follow as \"\\n<｜tool▁call▁begin｜>...<｜tool▁call▁end｜>\" "
                   "before <｜tool▁calls▁end｜>.");
    return ds_buf_take(&b);
}

/* V3.2 / V4: the tools go to the encoder (its own tools section and DSML);
 * tool_choice "required" / named: the reply is started with the DSML opener
 * (oa_forced_tokens), which needs non-thinking mode. */
static int dsml_chat_prompt(const ds_tokenizer *t, ds_chat_format fmt, const oa_request *r, bool thinking, tok_ids *ids,
                            bool *reasoning, oa_error *err) {
    bool forced = !r->forced_output && (r->tool_choice == OA_TC_REQUIRED || r->tool_choice == OA_TC_NAMED);
    if (forced && thinking)
        return BAD("tool_choice", "tool_choice: \"required\" or a named function needs non-thinking mode with the %s format "
                   "(\"thinking\": {\"type\": \"disabled\"})", chat_format_name(fmt));
    char *tj = r->n_tools > 0 && r->tool_choice != OA_TC_NONE ? json_dumps(r->tools, 0) : NULL;
    if (r->n_tools > 0 && r->tool_choice != OA_TC_NONE && !tj) return oa_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    ds_chat_opts o = { .add_generation_prompt = !r->prefix, .thinking = thinking,
                       .effort = (ds_reasoning_effort)r->reasoning_effort, .tools_json = tj };
    ds_err e = { 0 };
    int rc = chat_render_opts(t, fmt, r->msgs, r->n_msgs, &o, ids, NULL, &e);
    free(tj);
    if (rc) return oa_fail(err, 400, "invalid_request_error", "messages", NULL, "messages: %s", e.msg);
    /* a prefix continues the assistant's text (after its reasoning, if any) */
    *reasoning = !r->prefix && chat_reply_starts_in_reasoning(fmt, thinking);
    return DS_OK;
}

int oa_chat_prompt(const ds_tokenizer *t, ds_chat_format fmt, const oa_request *r, bool thinking_default,
                   tok_ids *ids, bool *reasoning, oa_error *err) {
    if (fmt == DS_CHAT_AUTO) fmt = chat_format_from_template(tok_chat_template(t));
    bool thinking = r->thinking < 0 ? thinking_default : r->thinking == 1;
    if (fmt == DS_CHAT_V32 || fmt == DS_CHAT_V4) return dsml_chat_prompt(t, fmt, r, thinking, ids, reasoning, err);
    int n = r->n_msgs;
    char *tp = NULL;
    ds_chat_msg *ms = malloc((size_t)(n + 1) * sizeof *ms);
    if (!ms) return oa_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    memcpy(ms, r->msgs, (size_t)n * sizeof *ms);
    if (r->n_tools > 0 && r->tool_choice != OA_TC_NONE) {
        tp = tools_prompt(r, fmt);
        if (!tp) { free(ms); return oa_fail(err, 500, "server_error", NULL, NULL, "out of memory"); }
        /* the templates gather every system message first: the tools go after the user's system prompt */
        int last_sys = -1;
        for (int i = 0; i < n; i++) if (ms[i].role == DS_ROLE_SYSTEM) last_sys = i;
        memmove(&ms[last_sys + 2], &ms[last_sys + 1], (size_t)(n - last_sys - 1) * sizeof *ms);
        ms[last_sys + 1] = (ds_chat_msg){ .role = DS_ROLE_SYSTEM, .content = tp };
        n++;
    }
    ds_err e = { 0 };
    int64_t n0 = ids->n;
    int rc = chat_render(t, fmt, ms, n, !r->prefix, thinking, ids, &e);
    free(tp);
    free(ms);
    if (rc) return oa_fail(err, 400, "invalid_request_error", "messages", NULL, "messages: %s", e.msg);
    if (r->prefix) { /* continue the last assistant message: drop its closing end-of-sentence */
        int32_t eos = tok_eos_id(t);
        if (ids->n > n0 && ids->v[ids->n - 1] == eos) ids->n--;
        *reasoning = false;
        if (fmt == DS_CHAT_V31 && thinking) *reasoning = true;
    } else {
        *reasoning = chat_reply_starts_in_reasoning(fmt, thinking);
    }
    return DS_OK;
}

int oa_completion_prompt(const ds_tokenizer *t, const oa_request *r, tok_ids *ids, oa_error *err) {
    ds_err e = { 0 };
    if (r->prompt_ids) {
        for (int64_t i = 0; i < r->n_prompt_ids; i++)
            if (tok_ids_push(ids, r->prompt_ids[i], &e)) return oa_fail(err, 500, "server_error", NULL, NULL, "%s", e.msg);
        return DS_OK;
    }
    if (tok_add_bos(t) && tok_bos_id(t) >= 0 && tok_ids_push(ids, tok_bos_id(t), &e))
        return oa_fail(err, 500, "server_error", NULL, NULL, "%s", e.msg);
    if (r->suffix) {
        int32_t fb = tok_added_token_id(t, "<｜fim▁begin｜>", strlen("<｜fim▁begin｜>"));
        int32_t fh = tok_added_token_id(t, "<｜fim▁hole｜>", strlen("<｜fim▁hole｜>"));
        int32_t fe = tok_added_token_id(t, "<｜fim▁end｜>", strlen("<｜fim▁end｜>"));
        if (fb < 0 || fh < 0 || fe < 0)
            return BAD("suffix", "suffix: this model's tokenizer has no fill-in-the-middle tokens");
        if (tok_ids_push(ids, fb, &e) || tok_encode_append(t, r->prompt, strlen(r->prompt), 0, ids, &e) ||
            tok_ids_push(ids, fh, &e) || tok_encode_append(t, r->suffix, strlen(r->suffix), 0, ids, &e) ||
            tok_ids_push(ids, fe, &e))
            return oa_fail(err, 500, "server_error", NULL, NULL, "%s", e.msg);
        return DS_OK;
    }
    if (tok_encode_append(t, r->prompt, strlen(r->prompt), TOK_PARSE_SPECIAL, ids, &e))
        return oa_fail(err, 500, "server_error", NULL, NULL, "%s", e.msg);
    if (ids->n == 0) return BAD("prompt", "prompt: must not be empty");
    return DS_OK;
}

static int push_marker(const ds_tokenizer *t, const char *m, tok_ids *ids, ds_err *e) {
    int32_t id = tok_added_token_id(t, m, strlen(m));
    if (id >= 0) return tok_ids_push(ids, id, e);
    return tok_encode_append(t, m, strlen(m), 0, ids, e);
}

int oa_forced_tokens(const ds_tokenizer *t, ds_chat_format fmt, const oa_request *r, tok_ids *ids, oa_error *err) {
    ds_err e = { 0 };
    int rc = DS_OK;
    if (r->forced_output) {
        rc = tok_encode_append(t, r->forced_output, strlen(r->forced_output), TOK_PARSE_SPECIAL, ids, &e);
    } else if (r->kind == OA_CHAT && (r->tool_choice == OA_TC_REQUIRED || r->tool_choice == OA_TC_NAMED)) {
        if (fmt == DS_CHAT_AUTO) fmt = chat_format_from_template(tok_chat_template(t));
        if (fmt == DS_CHAT_V32 || fmt == DS_CHAT_V4) { /* the DSML block up to the function's name (or past it) */
            ds_buf b = { 0 };
            ds_buf_str(&b, chat_dsml_opener(fmt));
            ds_buf_str(&b, ">\n<｜DSML｜invoke name=\"");
            if (r->tool_choice == OA_TC_NAMED) { ds_buf_str(&b, r->tool_choice_name); ds_buf_str(&b, "\">\n"); }
            char *s = ds_buf_take(&b);
            rc = s ? tok_encode_append(t, s, strlen(s), 0, ids, &e) : ds_err_set(&e, DS_ENOMEM, "out of memory");
            free(s);
            if (rc) return oa_fail(err, 500, "server_error", NULL, NULL, "%s", e.msg);
            return DS_OK;
        }
        rc = push_marker(t, "<｜tool▁calls▁begin｜>", ids, &e);
        if (!rc && r->tool_choice == OA_TC_REQUIRED) { /* the opener up to the name, which the decoder constrains */
            rc = push_marker(t, "<｜tool▁call▁begin｜>", ids, &e);
            if (!rc && fmt != DS_CHAT_V31) rc = tok_encode_append(t, "function", 8, 0, ids, &e);
            if (!rc && fmt != DS_CHAT_V31) rc = push_marker(t, "<｜tool▁sep｜>", ids, &e);
        }
        if (!rc && r->tool_choice == OA_TC_NAMED) {
            rc = push_marker(t, "<｜tool▁call▁begin｜>", ids, &e);
            if (!rc && fmt != DS_CHAT_V31) rc = tok_encode_append(t, "function", 8, 0, ids, &e);
            if (!rc && fmt == DS_CHAT_V31) rc = tok_encode_append(t, r->tool_choice_name, strlen(r->tool_choice_name), 0, ids, &e);
            if (!rc) rc = push_marker(t, "<｜tool▁sep｜>", ids, &e);
            if (!rc && fmt != DS_CHAT_V31) {
                char buf[128];
                snprintf(buf, sizeof buf, "%s\n```json\n", r->tool_choice_name);
                rc = tok_encode_append(t, buf, strlen(buf), 0, ids, &e);
            }
        }
    }
    if (rc) return oa_fail(err, 500, "server_error", NULL, NULL, "%s", e.msg);
    return DS_OK;
}

int oa_tool_call_parts(const ds_tokenizer *t, ds_chat_format fmt, const oa_request *r, tok_ids *mid, tok_ids *end,
                       oa_error *err) {
    if (r->forced_output || r->kind != OA_CHAT || (r->tool_choice != OA_TC_REQUIRED && r->tool_choice != OA_TC_NAMED))
        return DS_OK;
    if (fmt == DS_CHAT_AUTO) fmt = chat_format_from_template(tok_chat_template(t));
    if (fmt == DS_CHAT_V32 || fmt == DS_CHAT_V4) return DS_OK; /* no constrained decoding of DSML (yet) */
    ds_err e = { 0 };
    int rc = DS_OK;
    if (r->tool_choice == OA_TC_REQUIRED)
        rc = fmt == DS_CHAT_V31 ? push_marker(t, "<｜tool▁sep｜>", mid, &e) : tok_encode_append(t, "\n```json\n", 9, 0, mid, &e);
    if (!rc && fmt != DS_CHAT_V31) rc = tok_encode_append(t, "\n```", 4, 0, end, &e);
    if (!rc) rc = push_marker(t, "<｜tool▁call▁end｜>", end, &e);
    if (!rc) rc = push_marker(t, "<｜tool▁calls▁end｜>", end, &e);
    if (rc) return oa_fail(err, 500, "server_error", NULL, NULL, "%s", e.msg);
    return DS_OK;
}

/* ----------------------------------------------------------- responses */

static uint64_t g_id_base;
static void id_base_init(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g_id_base = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 40);
}

void oa_new_id(char *out, size_t cap, const char *prefix) {
    static atomic_ullong ctr;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, id_base_init);
    uint64_t z = g_id_base + atomic_fetch_add(&ctr, 1) * 0x9e3779b97f4a7c15ull, w[2];
    for (int i = 0; i < 2; i++) {
        z += 0x9e3779b97f4a7c15ull;
        uint64_t x = z;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        w[i] = x ^ (x >> 31);
    }
    snprintf(out, cap, "%s%016llx%08llx", prefix, (unsigned long long)w[0], (unsigned long long)(w[1] & 0xffffffffull));
}

void oa_resp_init(oa_resp *rs, int kind, const char *model, bool reasoning) {
    memset(rs, 0, sizeof *rs);
    rs->kind = kind;
    oa_new_id(rs->id, sizeof rs->id, kind == OA_CHAT ? "chatcmpl-" : "cmpl-");
    rs->created = (int64_t)time(NULL);
    rs->model = model;
    rs->reasoning = reasoning;
}

#define FINGERPRINT "fp_deepseek_c"

static const char *finish_name(int f) {
    switch (f) {
    case SRV_FINISH_LENGTH: return "length";
    case SRV_FINISH_TOOL_CALLS: return "tool_calls";
    default: return "stop";
    }
}

json_t *oa_usage_json(const srv_job_usage *u) {
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:{s:I},s:{s:I}}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                     "completion_tokens", (json_int_t)u->completion_tokens, "total_tokens",
                     (json_int_t)(u->prompt_tokens + u->completion_tokens), "prompt_cache_hit_tokens",
                     (json_int_t)u->cached_tokens, "prompt_cache_miss_tokens",
                     (json_int_t)(u->prompt_tokens - u->cached_tokens), "prompt_tokens_details", "cached_tokens",
                     (json_int_t)u->cached_tokens, "completion_tokens_details", "reasoning_tokens",
                     (json_int_t)u->reasoning_tokens);
}

static json_t *token_str(const ds_tokenizer *t, int32_t id) {
    size_t n = 0;
    const char *p = tok_id_to_piece(t, id, &n);
    if (!p) return json_string("");
    return str_lossy(p, n);
}

static json_t *token_bytes(const ds_tokenizer *t, int32_t id) {
    size_t n = 0;
    const char *p = tok_id_to_piece(t, id, &n);
    json_t *a = json_array();
    for (size_t i = 0; p && i < n; i++) json_array_append_new(a, json_integer((unsigned char)p[i]));
    return a;
}

/* chat: {"content":[{token, logprob, bytes, top_logprobs:[...]}]} */
static json_t *chat_logprobs(const ds_tokenizer *t, const srv_lp *lp, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        json_t *top = json_array();
        for (int k = 0; k < lp[i].n_top; k++)
            json_array_append_new(top, json_pack("{s:o,s:f,s:o}", "token", token_str(t, lp[i].top_id[k]), "logprob",
                                                 (double)lp[i].top_lp[k], "bytes", token_bytes(t, lp[i].top_id[k])));
        json_array_append_new(arr, json_pack("{s:o,s:f,s:o,s:o}", "token", token_str(t, lp[i].id), "logprob",
                                             (double)lp[i].lp, "bytes", token_bytes(t, lp[i].id), "top_logprobs", top));
    }
    return json_pack("{s:o}", "content", arr);
}

/* completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"} */
static json_t *completion_logprobs(const ds_tokenizer *t, const srv_lp *lp, int n, size_t offset0) {
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = offset0;
    for (int i = 0; i < n; i++) {
        json_array_append_new(toks, token_str(t, lp[i].id));
        json_array_append_new(lps, json_real(lp[i].lp));
        json_t *top = json_object();
        for (int k = 0; k < lp[i].n_top; k++) {
            size_t pn = 0;
            const char *p = tok_id_to_piece(t, lp[i].top_id[k], &pn);
            json_t *ks = p ? str_lossy(p, pn) : json_string("");
            json_object_set_new(top, json_string_value(ks), json_real(lp[i].top_lp[k]));
            json_decref(ks);
        }
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer((json_int_t)off));
        size_t pn = 0;
        tok_id_to_piece(t, lp[i].id, &pn);
        off += pn;
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops, "text_offset", offs);
}

static json_t *tool_calls_json(const ds_parsed_call *calls, int n, bool with_index) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        char id[48];
        oa_new_id(id, sizeof id, "call_");
        json_t *c = json_pack("{s:s,s:s,s:{s:o,s:o}}", "id", id, "type", "function", "function", "name",
                              str_lossy(calls[i].name, strlen(calls[i].name)), "arguments",
                              str_lossy(calls[i].arguments, strlen(calls[i].arguments)));
        if (with_index) json_object_set_new(c, "index", json_integer(i));
        json_array_append_new(arr, c);
    }
    return arr;
}

static void grow_append(char **buf, size_t *n, size_t *cap, const char *s, size_t len) {
    if (*n + len + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *n + len + 1) c *= 2;
        char *p = realloc(*buf, c);
        if (!p) return;
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *n, s, len);
    *n += len;
    (*buf)[*n] = 0;
}

int oa_acc_init(oa_acc *a, int n) {
    memset(a, 0, sizeof *a);
    a->c = calloc((size_t)n, sizeof *a->c);
    if (!a->c) return DS_ENOMEM;
    a->n = n;
    return DS_OK;
}

void oa_acc_add(oa_acc *a, srv_event *ev) {
    if (ev->type == SRV_EV_ERROR) {
        if (!a->error) a->error = strdup(ev->text ? ev->text : "error");
        return;
    }
    if (ev->choice < 0 || ev->choice >= a->n) return;
    oa_choice_acc *c = &a->c[ev->choice];
    if (ev->type == SRV_EV_CONTENT || ev->type == SRV_EV_REASONING) {
        if (ev->type == SRV_EV_CONTENT) grow_append(&c->content, &c->n_content, &c->cap_content, ev->text, ev->len);
        else {
            grow_append(&c->reasoning, &c->n_reasoning, &c->cap_reasoning, ev->text, ev->len);
            c->has_reasoning = true;
        }
        if (ev->n_lp > 0 && ev->type == SRV_EV_CONTENT) {
            if (c->n_lp + ev->n_lp > c->cap_lp) {
                int cap = c->cap_lp ? c->cap_lp * 2 : 64;
                while (cap < c->n_lp + ev->n_lp) cap *= 2;
                srv_lp *p = realloc(c->lp, (size_t)cap * sizeof *p);
                if (!p) return;
                c->lp = p;
                c->cap_lp = cap;
            }
            memcpy(c->lp + c->n_lp, ev->lp, (size_t)ev->n_lp * sizeof *ev->lp);
            c->n_lp += ev->n_lp;
        }
    } else if (ev->type == SRV_EV_TOOL_CALLS) {
        c->calls = ev->calls.calls;
        c->n_calls = ev->calls.n_calls;
        ev->calls.calls = NULL;
        ev->calls.n_calls = 0;
    } else if (ev->type == SRV_EV_FINISH) {
        c->finish = ev->finish;
    }
}

void oa_acc_free(oa_acc *a) {
    for (int i = 0; i < a->n; i++) {
        oa_choice_acc *c = &a->c[i];
        free(c->content);
        free(c->reasoning);
        ds_tool_parse tp = { NULL, c->calls, c->n_calls };
        chat_tool_parse_free(&tp);
        free(c->lp);
    }
    free(a->c);
    free(a->error);
    memset(a, 0, sizeof *a);
}

json_t *oa_response_json(const oa_resp *rs, const ds_tokenizer *t, const oa_request *r, const oa_acc *a,
                         const srv_job_usage *u, const char *echo) {
    json_t *choices = json_array();
    for (int i = 0; i < a->n; i++) {
        const oa_choice_acc *c = &a->c[i];
        json_t *lp = json_null();
        if (r->logprobs) {
            json_decref(lp);
            lp = rs->kind == OA_CHAT ? chat_logprobs(t, c->lp, c->n_lp)
                                     : completion_logprobs(t, c->lp, c->n_lp, echo ? strlen(echo) : 0);
        }
        json_t *ch;
        if (rs->kind == OA_CHAT) {
            json_t *msg = json_pack("{s:s}", "role", "assistant");
            if (c->n_calls > 0 && c->n_content == 0) json_object_set_new(msg, "content", json_null());
            else json_object_set_new(msg, "content", str_lossy(c->content ? c->content : "", c->n_content));
            if (rs->reasoning || c->has_reasoning)
                json_object_set_new(msg, "reasoning_content", str_lossy(c->reasoning ? c->reasoning : "", c->n_reasoning));
            if (c->n_calls > 0) json_object_set_new(msg, "tool_calls", tool_calls_json(c->calls, c->n_calls, false));
            ch = json_pack("{s:i,s:o,s:o,s:s}", "index", i, "message", msg, "logprobs", lp, "finish_reason",
                           finish_name(c->finish));
        } else {
            json_t *text;
            if (echo) {
                size_t el = strlen(echo);
                char *full = malloc(el + c->n_content + 1);
                if (full) {
                    memcpy(full, echo, el);
                    if (c->n_content) memcpy(full + el, c->content, c->n_content);
                    text = str_lossy(full, el + c->n_content);
                    free(full);
                } else text = json_string("");
            } else {
                text = str_lossy(c->content ? c->content : "", c->n_content);
            }
            ch = json_pack("{s:o,s:i,s:o,s:s}", "text", text, "index", i, "logprobs", lp, "finish_reason",
                           finish_name(c->finish));
        }
        json_array_append_new(choices, ch);
    }
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o}", "id", rs->id, "object",
                     rs->kind == OA_CHAT ? "chat.completion" : "text_completion", "created", (json_int_t)rs->created,
                     "model", rs->model, "system_fingerprint", FINGERPRINT, "choices", choices, "usage", oa_usage_json(u));
}

static json_t *chunk(const oa_resp *rs, json_t *choice, bool usage_null) {
    json_t *arr = json_array();
    if (choice) json_array_append_new(arr, choice);
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:o}", "id", rs->id, "object",
                          rs->kind == OA_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)rs->created, "model", rs->model, "system_fingerprint", FINGERPRINT, "choices", arr);
    if (usage_null) json_object_set_new(o, "usage", json_null());
    return o;
}

json_t *oa_stream_role_json(const oa_resp *rs, int choice, bool usage_null) {
    json_t *delta = json_pack("{s:s}", "role", "assistant");
    if (rs->reasoning) {
        json_object_set_new(delta, "content", json_null());
        json_object_set_new(delta, "reasoning_content", json_string(""));
    } else {
        json_object_set_new(delta, "content", json_string(""));
    }
    return chunk(rs, json_pack("{s:i,s:o,s:n,s:n}", "index", choice, "delta", delta, "logprobs", "finish_reason"), usage_null);
}

json_t *oa_stream_event_json(const oa_resp *rs, const ds_tokenizer *t, const oa_request *r, const srv_event *ev,
                             bool first_of_choice) {
    (void)first_of_choice;
    json_t *lp = json_null();
    if (r->logprobs && ev->n_lp > 0 && ev->type == SRV_EV_CONTENT) {
        json_decref(lp);
        lp = rs->kind == OA_CHAT ? chat_logprobs(t, ev->lp, ev->n_lp) : completion_logprobs(t, ev->lp, ev->n_lp, 0);
    }
    json_t *choice = NULL;
    if (rs->kind == OA_COMPLETION) {
        if (ev->type == SRV_EV_CONTENT) {
            if (ev->len == 0 && json_is_null(lp)) { json_decref(lp); return NULL; }
            choice = json_pack("{s:o,s:i,s:o,s:n}", "text", str_lossy(ev->text, ev->len), "index", ev->choice, "logprobs",
                               lp, "finish_reason");
        } else if (ev->type == SRV_EV_FINISH) {
            choice = json_pack("{s:s,s:i,s:o,s:s}", "text", "", "index", ev->choice, "logprobs", lp, "finish_reason",
                               finish_name(ev->finish));
        } else {
            json_decref(lp);
            return NULL;
        }
        return chunk(rs, choice, r->include_usage);
    }
    json_t *delta;
    const char *finish = NULL;
    switch (ev->type) {
    case SRV_EV_CONTENT:
        if (ev->len == 0 && json_is_null(lp)) { json_decref(lp); return NULL; }
        delta = json_pack("{s:o}", "content", str_lossy(ev->text, ev->len));
        if (rs->reasoning) json_object_set_new(delta, "reasoning_content", json_null());
        break;
    case SRV_EV_REASONING:
        if (ev->len == 0) { json_decref(lp); return NULL; }
        delta = json_pack("{s:n,s:o}", "content", "reasoning_content", str_lossy(ev->text, ev->len));
        break;
    case SRV_EV_TOOL_CALLS:
        delta = json_pack("{s:o}", "tool_calls", tool_calls_json(ev->calls.calls, ev->calls.n_calls, true));
        break;
    case SRV_EV_FINISH:
        delta = json_object();
        finish = finish_name(ev->finish);
        break;
    default:
        json_decref(lp);
        return NULL;
    }
    choice = json_pack("{s:i,s:o,s:o,s:o}", "index", ev->choice, "delta", delta, "logprobs", lp, "finish_reason",
                       finish ? json_string(finish) : json_null());
    return chunk(rs, choice, r->include_usage);
}

json_t *oa_stream_usage_json(const oa_resp *rs, const srv_job_usage *u) {
    json_t *o = chunk(rs, NULL, false);
    json_object_set_new(o, "usage", oa_usage_json(u));
    return o;
}
