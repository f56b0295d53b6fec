/*
 * chat_dsml.c - the prompt formats DeepSeek-V3.2 and DeepSeek-V4 ship as
 * Python instead of Jinja (encoding/encoding_dsv32.py, encoding_dsv4.py:
 * encode_messages(messages, thinking_mode, reasoning_effort=None) with
 * drop_thinking and the default BOS), written from their behaviour: turns,
 * thinking / non-thinking openers, what happens to earlier reasoning, the
 * tools section of the system prompt, assistant tool calls in DSML
 * ("<｜DSML｜invoke name=...>"), tool results (V3.2: <function_results>
 * after the call; V4: <tool_result> blocks merged into a user turn and
 * ordered by call), V4's reasoning-effort preface; and the parser that
 * turns a reply's DSML block back into calls. JSON inside the prompt (tool
 * schemas, non-string arguments) is written the way Python's json.dumps
 * writes it (", " / ": " separators, UTF-8 kept, shortest float repr).
 * The reference test is tests/fixtures/chat_v32_v4 (tools/gen_chat_v32_v4_fixtures.py
 * runs the official encoders).
 */
#include "chat_internal.h"
#include "../io/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DSML "｜DSML｜"

/* V3.2's and V4's tool sections and V4's maximum-effort preface, as the
 * encoders format them (<think> / </think> inside are template markers). */
static const char V32_TOOLS_HEAD[] =
    "## Tools\n\nYou have access to a set of tools you can use to answer the user's question.\n"
    "You can invoke functions by writing a \"<" DSML "function_calls>\" block like the following as part of your reply to the user:\n"
    "<" DSML "function_calls>\n<" DSML "invoke name=\"$FUNCTION_NAME\">\n"
    "<" DSML "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" DSML "parameter>\n...\n"
    "</" DSML "invoke>\n<" DSML "invoke name=\"$FUNCTION_NAME2\">\n...\n</" DSML "invoke>\n</" DSML "function_calls>\n\n"
    "String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects "
    "should use JSON format. The \"string\" attribute should be set to \"true\" for string type parameters and \"false\" "
    "for other types (numbers, booleans, arrays, objects).\n\n"
    "If the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking "
    "block. Here is an example:\n\n<" DSML "function_calls>\n...\n</" DSML "function_calls>\n\n<function_results>\n...\n"
    "</function_results>\n\n<think>...thinking about results</think>\n\n"
    "Here are the functions available in JSONSchema format:\n<functions>\n";
static const char V32_TOOLS_TAIL[] = "\n</functions>\n";

static const char V4_TOOLS_HEAD[] =
    "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools by writing a "
    "\"<" DSML "tool_calls>\" block like the following:\n\n"
    "<" DSML "tool_calls>\n<" DSML "invoke name=\"$TOOL_NAME\">\n"
    "<" DSML "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" DSML "parameter>\n...\n"
    "</" DSML "invoke>\n<" DSML "invoke name=\"$TOOL_NAME2\">\n...\n</" DSML "invoke>\n</" DSML "tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, "
    "arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
    "<think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";
static const char V4_TOOLS_TAIL[] =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";

static const char V4_EFFORT_MAX[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, "
    "rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

/* ------------------------------------------------- json.dumps, Python's */

static void py_str(ds_buf *o, const char *s, size_t n) {
    ds_buf_put(o, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) { snprintf(u, sizeof u, "\\u%04x", c); esc = u; }
        }
        if (!esc) continue;
        ds_buf_put(o, s + run, i - run);
        ds_buf_str(o, esc);
        run = i + 1;
    }
    ds_buf_put(o, s + run, n - run);
    ds_buf_put(o, "\"", 1);
}

/* repr(float): the shortest digits that read back exactly; positional for
 * decimal exponents -4..15, else d.ddde+XX. */
static void py_float(ds_buf *o, double v) {
    if (isnan(v)) { ds_buf_str(o, "NaN"); return; }
    if (isinf(v)) { ds_buf_str(o, v < 0 ? "-Infinity" : "Infinity"); return; }
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    char *ep = strchr(e, 'e');
    int x = atoi(ep + 1);
    *ep = 0;
    char dig[24];
    int nd = 0;
    bool neg = e[0] == '-';
    for (const char *q = e; *q; q++)
        if (*q >= '0' && *q <= '9') dig[nd++] = *q;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    if (neg) ds_buf_put(o, "-", 1);
    if (x >= -4 && x < 16) {
        if (x < 0) {
            ds_buf_str(o, "0.");
            for (int i = 0; i < -x - 1; i++) ds_buf_put(o, "0", 1);
            ds_buf_put(o, dig, (size_t)nd);
        } else {
            for (int i = 0; i <= x; i++) ds_buf_put(o, i < nd ? &dig[i] : "0", 1);
            ds_buf_put(o, ".", 1);
            if (nd > x + 1) ds_buf_put(o, dig + x + 1, (size_t)(nd - x - 1));
            else ds_buf_put(o, "0", 1);
        }
    } else {
        ds_buf_put(o, dig, 1);
        if (nd > 1) { ds_buf_put(o, ".", 1); ds_buf_put(o, dig + 1, (size_t)(nd - 1)); }
        ds_buf_printf(o, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
    }
}

static void py_dumps(ds_buf *o, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        ds_buf_put(o, "{", 1);
        bool first = true;
        const char *k;
        json_t *x;
        void *it = json_object_iter((json_t *)v);
        for (; it; it = json_object_iter_next((json_t *)v, it)) {
            k = json_object_iter_key(it);
            x = json_object_iter_value(it);
            if (!first) ds_buf_str(o, ", ");
            py_str(o, k, strlen(k));
            ds_buf_str(o, ": ");
            py_dumps(o, x);
            first = false;
        }
        ds_buf_put(o, "}", 1);
        break;
    }
    case JSON_ARRAY:
        ds_buf_put(o, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) ds_buf_str(o, ", ");
            py_dumps(o, json_array_get(v, i));
        }
        ds_buf_put(o, "]", 1);
        break;
    case JSON_STRING: py_str(o, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: ds_buf_printf(o, "%lld", (long long)json_integer_value(v)); break;
    case JSON_REAL: py_float(o, json_real_value(v)); break;
    case JSON_TRUE: ds_buf_str(o, "true"); break;
    case JSON_FALSE: ds_buf_str(o, "false"); break;
    default: ds_buf_str(o, "null"); break;
    }
}

/* ----------------------------------------------------------- rendering */

/* Template text: "<think>" / "</think>" in it are markers, the rest literal. */
static void tmpl(rb *b, const char *s) {
    while (*s) {
        const char *a = strstr(s, M_THINK), *z = strstr(s, M_THINK_END);
        const char *m = a && (!z || a < z) ? a : z;
        if (!m) { rb_text(b, s); return; }
        rb_text_n(b, s, (size_t)(m - s));
        rb_mark(b, m == a ? M_THINK : M_THINK_END);
        s = m + strlen(m == a ? M_THINK : M_THINK_END);
    }
}

/* The tools section: each tool's "function" object, json.dumps'ed, one a line. */
static void render_tools(rb *b, const json_t *tools, bool v4) {
    if (b->rc) return;
    ds_buf o = { 0 };
    for (size_t i = 0; i < json_array_size(tools); i++) {
        const json_t *fn = json_object_get(json_array_get(tools, i), "function");
        if (!json_is_object(fn)) {
            ds_buf_free(&o);
            b->rc = ds_err_set(b->e, DS_EINVAL, "chat: tools[%zu]: expected {\"type\": \"function\", \"function\": {...}}", i);
            return;
        }
        if (i) ds_buf_put(&o, "\n", 1);
        py_dumps(&o, fn);
    }
    char *s = ds_buf_take(&o);
    if (!s) { b->rc = ds_err_set(b->e, DS_ENOMEM, "chat: out of memory"); return; }
    tmpl(b, v4 ? V4_TOOLS_HEAD : V32_TOOLS_HEAD);
    rb_text(b, s);
    tmpl(b, v4 ? V4_TOOLS_TAIL : V32_TOOLS_TAIL);
    free(s);
}

/* "\n\n<｜DSML｜BLOCK>\n" invokes "\n</｜DSML｜BLOCK>"; an invoke is
 * '<｜DSML｜invoke name="N">\n' parameters (one a line) '\n</｜DSML｜invoke>'. */
static void render_calls(rb *b, int msg, const ds_tool_call *c, int n, bool v4) {
    if (n <= 0 || b->rc) return;
    const char *blk = v4 ? "tool_calls" : "function_calls";
    ds_buf o = { 0 };
    ds_buf_printf(&o, "\n\n<" DSML "%s>\n", blk);
    for (int k = 0; k < n && !b->rc; k++) {
        if (k) ds_buf_put(&o, "\n", 1);
        ds_buf_printf(&o, "<" DSML "invoke name=\"%s\">\n", c[k].name);
        const char *a = c[k].arguments ? c[k].arguments : "";
        json_error_t je;
        json_t *args = json_loads(a, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!args && v4) { /* V4: arguments that are not JSON become one string parameter */
            args = json_object();
            json_object_set_new(args, "arguments", json_string(a));
        }
        if (!json_is_object(args)) {
            b->rc = ds_err_set(b->e, DS_EINVAL, "chat: message %d: tool call %d (%s): arguments must be a JSON object", msg, k,
                               c[k].name);
            json_decref(args);
            break;
        }
        bool first = true;
        for (void *it = json_object_iter(args); it; it = json_object_iter_next(args, it)) {
            const json_t *v = json_object_iter_value(it);
            if (!first) ds_buf_put(&o, "\n", 1);
            ds_buf_printf(&o, "<" DSML "parameter name=\"%s\" string=\"%s\">", json_object_iter_key(it),
                          json_is_string(v) ? "true" : "false");
            if (json_is_string(v)) ds_buf_put(&o, json_string_value(v), json_string_length(v));
            else py_dumps(&o, v);
            ds_buf_str(&o, "</" DSML "parameter>");
            first = false;
        }
        json_decref(args);
        ds_buf_str(&o, "\n</" DSML "invoke>");
    }
    ds_buf_printf(&o, "\n</" DSML "%s>", blk);
    char *s = ds_buf_take(&o);
    if (!b->rc && !s) b->rc = ds_err_set(b->e, DS_ENOMEM, "chat: out of memory");
    rb_text(b, s);
    free(s);
}

/* The request's tools (a non-empty array) or NULL; sets b->rc on bad JSON. */
static json_t *load_tools(rb *b, const char *tools_json) {
    if (!tools_json || b->rc) return NULL;
    json_error_t je;
    json_t *t = json_loads(tools_json, 0, &je);
    if (!json_is_array(t)) {
        b->rc = ds_err_set(b->e, DS_EINVAL, "chat: tools: expected a JSON array (%s)", t ? "not an array" : je.text);
        json_decref(t);
        return NULL;
    }
    if (json_array_size(t) == 0) { json_decref(t); return NULL; }
    return t;
}

/* The conversation as the encoders see it: the tools on the first message
 * (a system message put first when there is none), and for V4 tool results
 * merged into user turns. */
typedef struct blk { bool tool; const char *text, *id; size_t len; } blk;
typedef struct dmsg {
    ds_chat_role role;
    const char *content, *reasoning, *tool_call_id;
    size_t content_len;   /* content's bytes (NUL characters included) */
    const ds_tool_call *calls;
    int n_calls, src;   /* src: index in the caller's messages (-1: added) */
    bool tools, open;   /* open: the last assistant message of a prefix completion (no EOS) */
    int b0, nb;         /* V4 user turns: blocks [b0, b0 + nb) */
} dmsg;

static dmsg *prepare(rb *b, const ds_chat_msg *msgs, int n, const ds_chat_opts *o, bool with_tools, int *n_out) {
    dmsg *d = calloc((size_t)n + 1, sizeof *d);
    if (!d) { b->rc = ds_err_set(b->e, DS_ENOMEM, "chat: out of memory"); return NULL; }
    int k = 0;
    if (with_tools && (n == 0 || msgs[0].role != DS_ROLE_SYSTEM)) d[k++] = (dmsg){ .role = DS_ROLE_SYSTEM, .content = "", .src = -1 };
    for (int i = 0; i < n; i++)
        d[k++] = (dmsg){ .role = msgs[i].role, .content = msgs[i].content, .content_len = chat_content_len(&msgs[i]),
                         .reasoning = msgs[i].reasoning,
                         .tool_call_id = msgs[i].tool_call_id, .calls = msgs[i].tool_calls,
                         .n_calls = msgs[i].n_tool_calls, .src = i };
    if (with_tools) d[0].tools = true;
    if (!o->add_generation_prompt && k > 0 && d[k - 1].role == DS_ROLE_ASSISTANT) d[k - 1].open = true;
    *n_out = k;
    return d;
}

static int last_user(const dmsg *d, int n) {
    for (int i = n - 1; i >= 0; i--)
        if (d[i].role == DS_ROLE_USER) return i;
    return -1;
}

static const char *s0(const char *s) { return s ? s : ""; }

void chat_render_v32(rb *b, const ds_chat_msg *msgs, int n, const ds_chat_opts *o, const char *tools_json) {
    json_t *tools = load_tools(b, tools_json);
    if (b->rc) return;
    int nd = 0;
    dmsg *d = prepare(b, msgs, n, o, tools != NULL, &nd);
    if (!d) { json_decref(tools); return; }
    bool th = o->thinking;
    int lu = last_user(d, nd);
    rb_mark(b, M_BOS);
    for (int i = 0; i < nd && !b->rc; i++) {
        const dmsg *m = &d[i];
        switch (m->role) {
        case DS_ROLE_SYSTEM:
            rb_text_n(b, s0(m->content), m->content_len);
            if (m->tools) { rb_text(b, "\n\n"); render_tools(b, tools, false); }
            break;
        case DS_ROLE_USER:
            rb_mark(b, M_USER);
            rb_text_n(b, s0(m->content), m->content_len);
            rb_mark(b, M_ASSISTANT);
            rb_mark(b, i == lu && th ? M_THINK : M_THINK_END);
            break;
        case DS_ROLE_TOOL: {
            int p = i - 1;
            while (p >= 0 && d[p].role == DS_ROLE_TOOL) p--;
            if (p < 0 || d[p].role != DS_ROLE_ASSISTANT || d[p].n_calls < i - p) {
                b->rc = ds_err_set(b->e, DS_EINVAL, "chat: message %d: a tool result with no tool call to answer", m->src);
                break;
            }
            if (i - p == 1) rb_text(b, "\n\n<function_results>");
            rb_text(b, "\n<result>");
            rb_text_n(b, s0(m->content), m->content_len);
            rb_text(b, "</result>");
            if (i - p == d[p].n_calls) {
                rb_text(b, "\n</function_results>\n\n");
                rb_mark(b, i >= lu && th ? M_THINK : M_THINK_END);
            }
            break;
        }
        case DS_ROLE_ASSISTANT:
            if (th && i > lu) {
                if (!(m->reasoning && *m->reasoning) && m->n_calls == 0) {
                    b->rc = ds_err_set(b->e, DS_EINVAL,
                                       "chat: message %d: in thinking mode an assistant message after the last user "
                                       "message needs reasoning_content or tool_calls (V3.2)", m->src);
                    break;
                }
                rb_text(b, s0(m->reasoning));
                rb_mark(b, M_THINK_END);
            }
            rb_text_n(b, s0(m->content), m->content_len);
            render_calls(b, m->src, m->calls, m->n_calls, false);
            if (!m->open) rb_mark(b, M_EOS);
            break;
        }
    }
    free(d);
    json_decref(tools);
}

static int call_order(const dmsg *a, const char *id) {
    for (int k = 0; a && id && k < a->n_calls; k++)
        if (a->calls[k].id && !strcmp(a->calls[k].id, id)) return k;
    return 0;
}

void chat_render_v4(rb *b, const ds_chat_msg *msgs, int n, const ds_chat_opts *o, const char *tools_json) {
    json_t *tools = load_tools(b, tools_json);
    if (b->rc) return;
    int nd = 0;
    dmsg *d = prepare(b, msgs, n, o, tools != NULL, &nd);
    blk *bl = d ? calloc((size_t)nd + 1, sizeof *bl) : NULL;
    if (!d || !bl) {
        if (!b->rc) b->rc = ds_err_set(b->e, DS_ENOMEM, "chat: out of memory");
        free(d);
        json_decref(tools);
        return;
    }
    /* merge_tool_messages: a run of user / tool messages is one user turn of
     * blocks (text, or a <tool_result>), joined by a blank line */
    int nm = 0, nbl = 0;
    for (int i = 0; i < nd; i++) {
        if (d[i].role == DS_ROLE_TOOL || d[i].role == DS_ROLE_USER) {
            bool tool = d[i].role == DS_ROLE_TOOL;
            bl[nbl] = (blk){ .tool = tool, .text = s0(d[i].content), .id = d[i].tool_call_id, .len = d[i].content_len };
            if (nm > 0 && d[nm - 1].role == DS_ROLE_USER) {
                d[nm - 1].nb++;
            } else {
                d[nm] = d[i];
                d[nm].role = DS_ROLE_USER;
                d[nm].b0 = nbl;
                d[nm].nb = 1;
                nm++;
            }
            nbl++;
        } else {
            d[nm++] = d[i];
        }
    }
    /* sort_tool_results_by_call_order: the results of a turn in the order of
     * the calls of the last assistant message with calls (stable; unknown ids first) */
    const dmsg *caller = NULL;
    for (int i = 0; i < nm; i++) {
        if (d[i].role == DS_ROLE_ASSISTANT && d[i].n_calls > 0) {
            caller = &d[i];
            bool any = false;
            for (int k = 0; k < d[i].n_calls; k++) any |= d[i].calls[k].id && *d[i].calls[k].id;
            if (!any) caller = NULL;
        }
        if (d[i].role != DS_ROLE_USER || !caller) continue;
        blk *x = bl + d[i].b0;
        int nt = 0;
        for (int k = 0; k < d[i].nb; k++) nt += x[k].tool;
        if (nt < 2) continue;
        for (int k = 1; k < d[i].nb; k++) { /* insertion sort over the tool blocks only */
            if (!x[k].tool) continue;
            blk v = x[k];
            int key = call_order(caller, v.id), j = k - 1, hole = k;
            while (j >= 0) {
                if (!x[j].tool) { j--; continue; }
                if (call_order(caller, x[j].id) <= key) break;
                x[hole] = x[j];
                hole = j;
                j--;
            }
            x[hole] = v;
        }
    }
    bool th = o->thinking, drop = tools == NULL; /* with tools, earlier reasoning is kept */
    int lu = last_user(d, nm);
    rb_mark(b, M_BOS);
    for (int i = 0; i < nm && !b->rc; i++) {
        const dmsg *m = &d[i];
        if (i == 0 && th && o->effort == DS_EFFORT_MAX) rb_text(b, V4_EFFORT_MAX);
        switch (m->role) {
        case DS_ROLE_SYSTEM:
            rb_text_n(b, s0(m->content), m->content_len);
            if (m->tools) { rb_text(b, "\n\n"); render_tools(b, tools, true); }
            break;
        case DS_ROLE_USER:
            rb_mark(b, M_USER);
            for (int k = 0; k < m->nb; k++) {
                const blk *x = &bl[m->b0 + k];
                if (k) rb_text(b, "\n\n");
                if (x->tool) rb_text(b, "<tool_result>");
                rb_text_n(b, x->text, x->len);
                if (x->tool) rb_text(b, "</tool_result>");
            }
            break;
        case DS_ROLE_ASSISTANT:
            if (th && (!drop || i > lu)) {
                rb_text(b, s0(m->reasoning));
                rb_mark(b, M_THINK_END);
            }
            rb_text_n(b, s0(m->content), m->content_len);
            render_calls(b, m->src, m->calls, m->n_calls, true);
            if (!m->open) rb_mark(b, M_EOS);
            break;
        default: break;
        }
        if (i + 1 < nm && d[i + 1].role != DS_ROLE_ASSISTANT) continue;
        if (m->role == DS_ROLE_USER) {
            rb_mark(b, M_ASSISTANT);
            rb_mark(b, th && (!drop || i >= lu) ? M_THINK : M_THINK_END);
        }
    }
    free(bl);
    free(d);
    json_decref(tools);
}

const char *chat_dsml_opener(ds_chat_format fmt) {
    if (fmt == DS_CHAT_V32) return "\n\n<" DSML "function_calls";
    if (fmt == DS_CHAT_V4) return "\n\n<" DSML "tool_calls";
    return NULL;
}

/* -------------------------------------------------------------- parsing */

static const char *findn(const char *s, const char *end, const char *needle) {
    size_t m = strlen(needle);
    for (const char *p = s; p + m <= end; p++)
        if (*p == needle[0] && !memcmp(p, needle, m)) return p;
    return NULL;
}

/* _read_until_stop: the text up to the first of the stops (which = its index, -1 none). */
static const char *until(const char **pp, const char *end, const char *const *stops, int ns, size_t *len, int *which) {
    const char *best = NULL, *p = *pp;
    *which = -1;
    for (int i = 0; i < ns; i++) {
        const char *q = findn(p, end, stops[i]);
        if (q && (!best || q < best)) { best = q; *which = i; }
    }
    *len = (size_t)((best ? best : end) - p);
    *pp = best ? best + strlen(stops[*which]) : end;
    return p;
}

static bool is_lit(const char *s, size_t n, const char *lit) { return n == strlen(lit) && !memcmp(s, lit, n); }

static char *dupn(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

static int push_call(ds_tool_parse *out, const char *name, size_t nl, char *args) {
    ds_parsed_call *c = realloc(out->calls, (size_t)(out->n_calls + 1) * sizeof *c);
    if (!c) { free(args); return DS_ENOMEM; }
    out->calls = c;
    ds_parsed_call pc = { .type = dupn("function", 8), .name = dupn(name, nl), .arguments = args };
    if (!pc.type || !pc.name) { free(pc.type); free(pc.name); free(args); return DS_ENOMEM; }
    out->calls[out->n_calls++] = pc;
    return DS_OK;
}

int chat_parse_dsml(ds_chat_format fmt, const char *text, size_t len, ds_tool_parse *out, ds_err *e) {
    memset(out, 0, sizeof *out);
    const char *end = text + len, *op = chat_dsml_opener(fmt);
    const char *start = op ? findn(text, end, op) : NULL;
    out->content = dupn(text, start ? (size_t)(start - text) : len);
    if (!out->content) return ds_err_set(e, DS_ENOMEM, "chat: out of memory");
    if (!start) return DS_OK;
    char close[48];
    snprintf(close, sizeof close, "</" DSML "%s>", fmt == DS_CHAT_V4 ? "tool_calls" : "function_calls");
    const char *s_inv[2] = { "<" DSML "invoke", close };
    const char *s_par[2] = { "<" DSML "parameter", "</" DSML "invoke" };
    const char *s_pend[1] = { "/" DSML "parameter" };
    const char *p = start + strlen(op);
    const char *why = NULL;
    size_t n;
    int w;
    ds_buf args = { 0 };
    for (;;) {
        const char *t = until(&p, end, s_inv, 2, &n, &w);
        if (!is_lit(t, n, ">\n")) { why = "expected \">\\n\" before an invoke"; break; }
        if (w == 1) break;
        if (w < 0) { why = "the block is not closed"; break; }
        t = until(&p, end, s_par, 2, &n, &w);
        /* ^\s*name="(.*?)">\n$ */
        while (n > 0 && (*t == ' ' || *t == '\n' || *t == '\t' || *t == '\r')) t++, n--;
        if (w < 0 || n < 9 || memcmp(t, "name=\"", 6) || !is_lit(t + n - 3, 3, "\">\n")) { why = "bad invoke name"; break; }
        const char *name = t + 6;
        size_t nl = n - 9;
        ds_buf_put(&args, "{", 1);
        int np = 0;
        const char *keys[64];
        size_t klen[64];
        while (w == 0) {
            t = until(&p, end, s_pend, 1, &n, &w);
            /* ^ name="(.*?)" string="(true|false)">(.*?)<$ */
            if (w < 0 || n < 8 || memcmp(t, " name=\"", 7) || t[n - 1] != '<') { why = "bad parameter"; break; }
            const char *k = t + 7, *v = NULL, *tend = t + n - 1;
            bool str = false;
            for (const char *q = k; q < tend && !v; q++) {
                if (*q != '"') continue;
                if ((size_t)(tend - q) >= 16 && !memcmp(q, "\" string=\"true\">", 16)) { v = q + 16; str = true; }
                else if ((size_t)(tend - q) >= 17 && !memcmp(q, "\" string=\"false\">", 17)) v = q + 17;
                if (v) {
                    size_t kl = (size_t)(q - k);
                    for (int i = 0; i < np; i++)
                        if (klen[i] == kl && !memcmp(keys[i], k, kl)) { why = "duplicate parameter name"; break; }
                    if (np >= 64) why = "too many parameters";
                    if (why) break;
                    keys[np] = k;
                    klen[np] = kl;
                    if (np++) ds_buf_str(&args, ", ");
                    py_str(&args, k, kl);
                    ds_buf_str(&args, ": ");
                    if (str) py_str(&args, v, (size_t)(tend - v));
                    else ds_buf_put(&args, v, (size_t)(tend - v));
                }
            }
            if (why) break;
            if (!v) { why = "bad parameter"; break; }
            t = until(&p, end, s_par, 2, &n, &w);
            if (w < 0 || !is_lit(t, n, ">\n")) { why = "expected \">\\n\" after a parameter"; break; }
        }
        if (why) break;
        ds_buf_put(&args, "}", 1);
        char *a = ds_buf_take(&args);
        if (!a || push_call(out, name, nl, a)) { why = "out of memory"; break; }
    }
    ds_buf_free(&args);
    if (!why && p != end) why = "text after the tool calls";
    if (!why && out->n_calls == 0) why = "no tool call in the block";
    if (why) {
        char *all = dupn(text, len);
        chat_tool_parse_free(out);
        out->content = all;
        if (!all) return ds_err_set(e, DS_ENOMEM, "chat: out of memory");
        return ds_err_set(e, DS_EFORMAT, "chat: malformed DSML tool calls (%s)", why);
    }
    return DS_OK;
}
