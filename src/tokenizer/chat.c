/*
 * chat.c - DeepSeek chat templates as C (see chat.h): V3 (original), R1,
 * V3.1 and V2, each a line-by-line transcription of the official Jinja
 * template (quirks included: V3's never-reset ns.is_first, R1's
 * split('</think>')[-1], V3.1's split('</think>', 1)[1], ...). Text runs
 * between markers are collected and tokenized literally (no added-token
 * matching) as one string, exactly as the rendered template text would be
 * tokenized between its markers; markers that are added tokens become their
 * ids, markers the tokenizer lacks are text (as in HF).
 * Also: template detection (V3.2 / V4 folders too), reasoning split,
 * tool-call parsing; the V3.2 / V4 formats themselves are chat_dsml.c's.
 */
#include "chat_internal.h"
#include "../core/mmap_file.h"
#include "../io/json.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define M_CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define M_CALLS_END "<｜tool▁calls▁end｜>"
#define M_CALL_BEGIN "<｜tool▁call▁begin｜>"
#define M_CALL_END "<｜tool▁call▁end｜>"
#define M_SEP "<｜tool▁sep｜>"
#define M_OUTPUTS_BEGIN "<｜tool▁outputs▁begin｜>"
#define M_OUTPUTS_END "<｜tool▁outputs▁end｜>"
#define M_OUTPUT_BEGIN "<｜tool▁output▁begin｜>"
#define M_OUTPUT_END "<｜tool▁output▁end｜>"

/* ------------------------------------------------------------- builder */

void rb_text_n(rb *b, const char *s, size_t n) {
    if (b->rc || !n) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->txt, cap);
        if (!p) { b->rc = ds_err_set(b->e, DS_ENOMEM, "chat: out of memory"); return; }
        b->txt = p;
        b->cap = cap;
    }
    memcpy(b->txt + b->n, s, n);
    b->n += n;
    if (b->all) ds_buf_put(b->all, s, n);
}
void rb_text(rb *b, const char *s) { if (s) rb_text_n(b, s, strlen(s)); }
#define text_n rb_text_n
#define text rb_text

void rb_flush(rb *b) {
    if (b->rc || !b->n) return;
    b->rc = tok_encode_append(b->t, b->txt, b->n, 0, b->ids, b->e); /* literal: no added tokens */
    b->n = 0;
}

static void push_id(rb *b, int32_t id) {
    rb_flush(b);
    if (!b->rc) b->rc = tok_ids_push(b->ids, id, b->e);
}

/* A template marker: its added-token id, or text if the tokenizer lacks it. */
void rb_mark(rb *b, const char *m) {
    int32_t id = tok_added_token_id(b->t, m, strlen(m));
    if (id >= 0) {
        push_id(b, id);
        if (b->all) ds_buf_str(b->all, m);
    } else {
        text(b, m);
    }
}
#define mark rb_mark

static void bos(rb *b) {
    if (tok_bos_id(b->t) < 0) return;
    push_id(b, tok_bos_id(b->t));
    if (b->all) ds_buf_str(b->all, M_BOS);
}
static void eos(rb *b) {
    if (tok_eos_id(b->t) < 0) return;
    push_id(b, tok_eos_id(b->t));
    if (b->all) ds_buf_str(b->all, M_EOS);
}

static const char *str_or_empty(const char *s) { return s ? s : ""; }
/* a message's content, NUL characters included */
static void content(rb *b, const ds_chat_msg *m) { if (m->content) text_n(b, m->content, chat_content_len(m)); }
static const char *call_type(const ds_tool_call *c) { return c->type ? c->type : "function"; }

/* All system messages, joined by "\n\n" (V3, R1, V3.1). */
static void system_prompt(rb *b, const ds_chat_msg *m, int n) {
    bool first = true;
    for (int i = 0; i < n; i++) {
        if (m[i].role != DS_ROLE_SYSTEM) continue;
        if (!first) text(b, "\n\n");
        content(b, &m[i]);
        first = false;
    }
}

/* "<｜tool▁call▁begin｜>" type "<｜tool▁sep｜>" name "\n```json\n" args "\n```<｜tool▁call▁end｜>" */
static void v3_call(rb *b, const ds_tool_call *c) {
    mark(b, M_CALL_BEGIN);
    text(b, call_type(c));
    mark(b, M_SEP);
    text(b, c->name);
    text(b, "\n```json\n");
    text(b, str_or_empty(c->arguments));
    text(b, "\n```");
    mark(b, M_CALL_END);
}

/* ----------------------------------------------------------- templates */

static void render_v3(rb *b, const ds_chat_msg *msgs, int n, bool gen) {
    bool is_first = false, is_tool = false, is_output_first = true;
    bos(b);
    system_prompt(b, msgs, n);
    for (int i = 0; i < n; i++) {
        const ds_chat_msg *m = &msgs[i];
        if (m->role == DS_ROLE_USER) {
            is_tool = false;
            mark(b, M_USER);
            content(b, m);
        }
        if (m->role == DS_ROLE_ASSISTANT && !m->content) {
            is_tool = false;
            for (int k = 0; k < m->n_tool_calls; k++) {
                if (!is_first) {
                    mark(b, M_ASSISTANT);
                    mark(b, M_CALLS_BEGIN);
                    v3_call(b, &m->tool_calls[k]);
                    is_first = true; /* never reset: the template's quirk */
                } else {
                    text(b, "\n");
                    v3_call(b, &m->tool_calls[k]);
                    mark(b, M_CALLS_END);
                    mark(b, M_EOS);
                }
            }
        }
        if (m->role == DS_ROLE_ASSISTANT && m->content) {
            if (is_tool) {
                mark(b, M_OUTPUTS_END);
                content(b, m);
                mark(b, M_EOS);
                is_tool = false;
            } else {
                mark(b, M_ASSISTANT);
                content(b, m);
                mark(b, M_EOS);
            }
        }
        if (m->role == DS_ROLE_TOOL) {
            is_tool = true;
            if (is_output_first) {
                mark(b, M_OUTPUTS_BEGIN);
                is_output_first = false;
            } else {
                text(b, "\n");
            }
            mark(b, M_OUTPUT_BEGIN);
            content(b, m);
            mark(b, M_OUTPUT_END);
        }
    }
    if (is_tool) mark(b, M_OUTPUTS_END);
    if (gen && !is_tool) mark(b, M_ASSISTANT);
}

/* content.split('</think>')[-1] (R1) or content.split('</think>', 1)[1] (V3.1), as text */
static void after_think(rb *b, const ds_chat_msg *m, bool last) {
    const char *c = str_or_empty(m->content), *end = c + chat_content_len(m), *p = c;
    size_t k = strlen(M_THINK_END);
    for (const char *q; (q = memmem(p, (size_t)(end - p), M_THINK_END, k));) {
        p = q + k;
        if (!last) break;
    }
    text_n(b, p, (size_t)(end - p));
}

static void render_r1(rb *b, const ds_chat_msg *msgs, int n, bool gen) {
    bool is_first = false, is_tool = false, is_output_first = true;
    bos(b);
    system_prompt(b, msgs, n);
    for (int i = 0; i < n; i++) {
        const ds_chat_msg *m = &msgs[i];
        if (m->role == DS_ROLE_USER) {
            is_tool = false;
            mark(b, M_USER);
            content(b, m);
        }
        if (m->role == DS_ROLE_ASSISTANT && m->n_tool_calls > 0) {
            is_tool = false;
            for (int k = 0; k < m->n_tool_calls; k++) {
                if (!is_first) {
                    mark(b, M_ASSISTANT);
                    content(b, m);
                    mark(b, M_CALLS_BEGIN);
                    v3_call(b, &m->tool_calls[k]);
                    is_first = true;
                } else {
                    text(b, "\n");
                    v3_call(b, &m->tool_calls[k]);
                }
            }
            mark(b, M_CALLS_END);
            mark(b, M_EOS);
        }
        if (m->role == DS_ROLE_ASSISTANT && m->n_tool_calls == 0) {
            if (is_tool) {
                mark(b, M_OUTPUTS_END);
                content(b, m);
                mark(b, M_EOS);
                is_tool = false;
            } else {
                mark(b, M_ASSISTANT);
                after_think(b, m, true);
                mark(b, M_EOS);
            }
        }
        if (m->role == DS_ROLE_TOOL) {
            is_tool = true;
            if (is_output_first) {
                mark(b, M_OUTPUTS_BEGIN);
                is_output_first = false;
            }
            mark(b, M_OUTPUT_BEGIN);
            content(b, m);
            mark(b, M_OUTPUT_END);
        }
    }
    if (is_tool) mark(b, M_OUTPUTS_END);
    if (gen && !is_tool) {
        mark(b, M_ASSISTANT);
        mark(b, M_THINK);
        text(b, "\n");
    }
}

static void render_v31(rb *b, const ds_chat_msg *msgs, int n, bool gen, bool thinking) {
    bool is_first = false, is_tool = false, is_last_user = false;
    bos(b);
    system_prompt(b, msgs, n);
    for (int i = 0; i < n; i++) {
        const ds_chat_msg *m = &msgs[i];
        if (m->role == DS_ROLE_USER) {
            is_tool = false;
            is_first = false;
            is_last_user = true;
            mark(b, M_USER);
            content(b, m);
        }
        if (m->role == DS_ROLE_ASSISTANT && m->n_tool_calls > 0) {
            if (is_last_user) {
                mark(b, M_ASSISTANT);
                mark(b, M_THINK_END);
            }
            is_last_user = false;
            is_first = false;
            is_tool = false;
            for (int k = 0; k < m->n_tool_calls; k++) {
                const ds_tool_call *c = &m->tool_calls[k];
                if (!is_first) {
                    content(b, m);
                    mark(b, M_CALLS_BEGIN);
                    is_first = true;
                }
                mark(b, M_CALL_BEGIN);
                text(b, c->name);
                mark(b, M_SEP);
                text(b, str_or_empty(c->arguments));
                mark(b, M_CALL_END);
            }
            mark(b, M_CALLS_END);
            mark(b, M_EOS);
        }
        if (m->role == DS_ROLE_ASSISTANT && m->n_tool_calls == 0) {
            if (is_last_user) {
                mark(b, M_ASSISTANT);
                mark(b, m->prefix && thinking ? M_THINK : M_THINK_END);
            }
            is_last_user = false;
            if (is_tool) {
                content(b, m);
                mark(b, M_EOS);
                is_tool = false;
            } else {
                after_think(b, m, false);
                mark(b, M_EOS);
            }
        }
        if (m->role == DS_ROLE_TOOL) {
            is_last_user = false;
            is_tool = true;
            mark(b, M_OUTPUT_BEGIN);
            content(b, m);
            mark(b, M_OUTPUT_END);
        }
    }
    if (gen && is_last_user && !is_tool) {
        mark(b, M_ASSISTANT);
        mark(b, thinking ? M_THINK : M_THINK_END);
    }
}

/* V2 has no thinking mode of its own; with thinking the generation prompt
 * opens a reasoning block the R1 way ("Assistant: <think>\n"): the prompt
 * the reasoning commands (eval, grpo, train --sft) train and score our
 * byte-level reasoner with, so chat and serve can run it. */
static void render_v2(rb *b, const ds_chat_msg *msgs, int n, bool gen, bool thinking) {
    bos(b);
    for (int i = 0; i < n; i++) {
        const ds_chat_msg *m = &msgs[i];
        if (m->role == DS_ROLE_USER) {
            text(b, "User: ");
            content(b, m);
            text(b, "\n\n");
        } else if (m->role == DS_ROLE_ASSISTANT) {
            text(b, "Assistant: ");
            content(b, m);
            eos(b);
        } else if (m->role == DS_ROLE_SYSTEM) {
            content(b, m);
            text(b, "\n\n");
        }
    }
    if (gen) text(b, thinking ? "Assistant: <think>\n" : "Assistant:");
}

int chat_render_opts(const ds_tokenizer *t, ds_chat_format fmt, const ds_chat_msg *msgs, int n,
                     const ds_chat_opts *o, tok_ids *ids, char **text_out, ds_err *e) {
    if (text_out) *text_out = NULL;
    if (!t || !ids || !o || (n > 0 && !msgs) || n < 0) return ds_err_set(e, DS_EINVAL, "chat_render: bad arguments");
    if (fmt == DS_CHAT_AUTO) fmt = chat_format_from_template(tok_chat_template(t));
    for (int i = 0; i < n; i++) {
        if ((unsigned)msgs[i].role > DS_ROLE_TOOL)
            return ds_err_set(e, DS_EINVAL, "chat: message %d has an unknown role (%d)", i, (int)msgs[i].role);
        if (msgs[i].n_tool_calls < 0 || (msgs[i].n_tool_calls > 0 && !msgs[i].tool_calls))
            return ds_err_set(e, DS_EINVAL, "chat: message %d: bad tool_calls", i);
        for (int k = 0; k < msgs[i].n_tool_calls; k++)
            if (!msgs[i].tool_calls[k].name)
                return ds_err_set(e, DS_EINVAL, "chat: message %d: tool call %d has no function name", i, k);
    }
    if ((unsigned)o->effort > DS_EFFORT_MAX) return ds_err_set(e, DS_EINVAL, "chat: unknown reasoning effort %d", (int)o->effort);
    int64_t n0 = ids->n;
    ds_buf all = { 0 };
    rb b = { .t = t, .ids = ids, .e = e, .all = text_out ? &all : NULL };
    bool gen = o->add_generation_prompt, thinking = o->thinking;
    switch (fmt) {
    case DS_CHAT_V3: render_v3(&b, msgs, n, gen); break;
    case DS_CHAT_R1: render_r1(&b, msgs, n, gen); break;
    case DS_CHAT_V31: render_v31(&b, msgs, n, gen, thinking); break;
    case DS_CHAT_V2: render_v2(&b, msgs, n, gen, thinking); break;
    case DS_CHAT_V32: chat_render_v32(&b, msgs, n, o, o->tools_json); break;
    case DS_CHAT_V4: chat_render_v4(&b, msgs, n, o, o->tools_json); break;
    default: b.rc = ds_err_set(e, DS_EINVAL, "chat: unknown format %d", (int)fmt);
    }
    rb_flush(&b);
    free(b.txt);
    if (!b.rc && text_out) {
        *text_out = ds_buf_take(&all);
        if (!*text_out) b.rc = ds_err_set(e, DS_ENOMEM, "chat: out of memory");
    }
    ds_buf_free(&all);
    if (b.rc) ids->n = n0;
    return b.rc;
}

int chat_render(const ds_tokenizer *t, ds_chat_format fmt, const ds_chat_msg *msgs, int n,
                bool add_generation_prompt, bool thinking, tok_ids *ids, ds_err *e) {
    ds_chat_opts o = { .add_generation_prompt = add_generation_prompt, .thinking = thinking };
    return chat_render_opts(t, fmt, msgs, n, &o, ids, NULL, e);
}

int chat_effort_from_name(const char *s) {
    if (!s || !*s || !strcmp(s, "low") || !strcmp(s, "medium")) return DS_EFFORT_DEFAULT;
    if (!strcmp(s, "high")) return DS_EFFORT_HIGH;
    if (!strcmp(s, "max")) return DS_EFFORT_MAX;
    return -1;
}

/* ----------------------------------------------------------- detection */

ds_chat_format chat_format_from_template(const char *tmpl) {
    if (!tmpl) return DS_CHAT_V3;
    if (strstr(tmpl, "is_last_user") || (strstr(tmpl, "thinking") && strstr(tmpl, M_THINK_END)))
        return DS_CHAT_V31;
    if (strstr(tmpl, M_THINK) || strstr(tmpl, M_THINK_END)) return DS_CHAT_R1;
    if (strstr(tmpl, M_USER) || strstr(tmpl, M_ASSISTANT)) return DS_CHAT_V3;
    if (strstr(tmpl, "User: ") && strstr(tmpl, "Assistant:")) return DS_CHAT_V2;
    return DS_CHAT_V3;
}

bool chat_template_known(const char *tmpl) {
    return tmpl && (strstr(tmpl, "is_last_user") || strstr(tmpl, M_THINK) || strstr(tmpl, M_THINK_END) ||
                    strstr(tmpl, M_USER) || strstr(tmpl, M_ASSISTANT) ||
                    (strstr(tmpl, "User: ") && strstr(tmpl, "Assistant:")));
}

/* The encoder a V3.2 / V4 folder ships (encoding/encoding_dsv*.py), else AUTO. */
static ds_chat_format encoder_format(char *dir, size_t dl) {
    struct stat sb;
    strcpy(dir + dl, "/encoding/encoding_dsv4.py");
    if (stat(dir, &sb) == 0) return DS_CHAT_V4;
    strcpy(dir + dl, "/encoding/encoding_dsv32.py");
    if (stat(dir, &sb) == 0) return DS_CHAT_V32;
    return DS_CHAT_AUTO;
}

/* config.json's model_type deepseek_v32 / deepseek_v4, else AUTO. */
static ds_chat_format model_type_format(char *dir, size_t dl) {
    struct stat sb;
    ds_err e = {0};
    json_t *cfg = NULL;
    ds_chat_format fmt = DS_CHAT_AUTO;
    strcpy(dir + dl, "/config.json");
    if (stat(dir, &sb) == 0 && ds_json_load_file(dir, DS_JSON_MAX_BYTES, &cfg, &e) == DS_OK) {
        const char *mt = json_string_value(json_object_get(cfg, "model_type"));
        if (mt && !strcmp(mt, "deepseek_v32")) fmt = DS_CHAT_V32;
        if (mt && !strcmp(mt, "deepseek_v4")) fmt = DS_CHAT_V4;
        json_decref(cfg);
    }
    return fmt;
}

/* The folder of path (itself if a directory), with room for a file name. */
static char *folder_of(const char *path, size_t *dl) {
    struct stat sb;
    size_t n = strlen(path);
    char *dir = malloc(n + 48);
    if (!dir) return NULL;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) memcpy(dir, path, n + 1);
    else {
        const char *slash = strrchr(path, '/');
        if (slash) { memcpy(dir, path, (size_t)(slash - path)); dir[slash - path] = 0; }
        else strcpy(dir, ".");
    }
    *dl = strlen(dir);
    return dir;
}

ds_chat_format chat_format_detect(const char *path) {
    if (!path) return DS_CHAT_V3;
    struct stat sb;
    size_t dl;
    char *dir = folder_of(path, &dl);
    if (!dir) return DS_CHAT_V3;
    /* DeepSeek-V3.2 and V4 ship their prompt format as Python: the encoder
     * a folder carries wins; a template next (V3.2-Exp ships V3.1's) */
    ds_chat_format fmt = encoder_format(dir, dl);
    if (fmt != DS_CHAT_AUTO) { free(dir); return fmt; }
    char *buf = NULL;
    size_t len;
    ds_err e = {0};
    strcpy(dir + dl, "/tokenizer_config.json");
    json_t *cfg = NULL;
    if (stat(dir, &sb) == 0 && ds_json_load_file(dir, DS_JSON_MAX_BYTES, &cfg, &e) == DS_OK) {
        const json_t *ct = json_object_get(cfg, "chat_template");
        const char *tmpl = json_string_value(ct);
        for (size_t i = 0; json_is_array(ct) && i < json_array_size(ct); i++) {
            const json_t *it = json_array_get(ct, i);
            const char *name = json_string_value(json_object_get(it, "name"));
            if (!tmpl || (name && !strcmp(name, "default"))) tmpl = json_string_value(json_object_get(it, "template"));
        }
        if (tmpl) {
            fmt = chat_format_from_template(tmpl);
            json_decref(cfg);
            free(dir);
            return fmt;
        }
        json_decref(cfg);
    }
    strcpy(dir + dl, "/chat_template.jinja");
    if (stat(dir, &sb) == 0 && ds_read_file(dir, DS_JSON_MAX_BYTES, &buf, &len, &e) == DS_OK) {
        fmt = chat_format_from_template(buf);
        free(buf);
        free(dir);
        return fmt;
    }
    /* no template: a V3.2 / V4 model_type means its Python-defined format */
    fmt = model_type_format(dir, dl);
    free(dir);
    return fmt != DS_CHAT_AUTO ? fmt : DS_CHAT_V3;
}

ds_chat_format chat_format_resolve(const char *path, const char *tmpl) {
    if (!path) return tmpl ? chat_format_from_template(tmpl) : DS_CHAT_V3;
    size_t dl;
    char *dir = folder_of(path, &dl);
    ds_chat_format f = dir ? encoder_format(dir, dl) : DS_CHAT_AUTO;
    free(dir);
    if (f != DS_CHAT_AUTO) return f;
    return tmpl ? chat_format_from_template(tmpl) : chat_format_detect(path);
}

int chat_format_from_name(const char *s) {
    static const struct { const char *name; int fmt; } k[] = {
        { "auto", DS_CHAT_AUTO }, { "v3", DS_CHAT_V3 }, { "deepseek-v3", DS_CHAT_V3 }, { "r1", DS_CHAT_R1 },
        { "deepseek-r1", DS_CHAT_R1 }, { "v3.1", DS_CHAT_V31 }, { "v31", DS_CHAT_V31 },
        { "deepseek-v3.1", DS_CHAT_V31 }, { "v2", DS_CHAT_V2 }, { "deepseek-v2", DS_CHAT_V2 },
        { "v3.2", DS_CHAT_V32 }, { "v32", DS_CHAT_V32 }, { "deepseek-v3.2", DS_CHAT_V32 },
        { "v4", DS_CHAT_V4 }, { "deepseek-v4", DS_CHAT_V4 },
    };
    for (size_t i = 0; s && i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(s, k[i].name)) return k[i].fmt;
    return -1;
}

const char *chat_format_name(ds_chat_format fmt) {
    switch (fmt) {
    case DS_CHAT_AUTO: return "auto";
    case DS_CHAT_V3: return "v3";
    case DS_CHAT_R1: return "r1";
    case DS_CHAT_V31: return "v3.1";
    case DS_CHAT_V2: return "v2";
    case DS_CHAT_V32: return "v3.2";
    case DS_CHAT_V4: return "v4";
    }
    return "?";
}

int chat_role_from_name(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "system")) return DS_ROLE_SYSTEM;
    if (!strcmp(s, "user")) return DS_ROLE_USER;
    if (!strcmp(s, "assistant")) return DS_ROLE_ASSISTANT;
    if (!strcmp(s, "tool")) return DS_ROLE_TOOL;
    return -1;
}

bool chat_reply_starts_in_reasoning(ds_chat_format fmt, bool thinking) {
    return fmt == DS_CHAT_R1 ||
           ((fmt == DS_CHAT_V31 || fmt == DS_CHAT_V2 || fmt == DS_CHAT_V32 || fmt == DS_CHAT_V4) && thinking);
}

/* ------------------------------------------------------------- replies */

static const char *find(const char *s, size_t n, const char *needle) {
    size_t m = strlen(needle);
    if (m > n) return NULL;
    for (size_t i = 0; i + m <= n; i++)
        if (s[i] == needle[0] && !memcmp(s + i, needle, m)) return s + i;
    return NULL;
}

void chat_split_reasoning(const char *text, size_t len, bool in_reasoning, ds_reply_split *out) {
    memset(out, 0, sizeof *out);
    const char *p = text;
    size_t n = len;
    size_t tl = strlen(M_THINK);
    if (n >= tl && !memcmp(p, M_THINK, tl)) {
        in_reasoning = true;
        p += tl;
        n -= tl;
    }
    if (!in_reasoning) {
        out->content = p;
        out->content_len = n;
        return;
    }
    out->has_reasoning = true;
    const char *end = find(p, n, M_THINK_END);
    out->reasoning = p;
    if (!end) {
        out->reasoning_len = n;
        out->content = p + n;
        return;
    }
    out->reasoning_len = (size_t)(end - p);
    out->reasoning_done = true;
    out->content = end + strlen(M_THINK_END);
    out->content_len = n - (size_t)(out->content - p);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

void chat_tool_parse_free(ds_tool_parse *p) {
    if (!p) return;
    for (int i = 0; i < p->n_calls; i++) {
        free(p->calls[i].type);
        free(p->calls[i].name);
        free(p->calls[i].arguments);
    }
    free(p->calls);
    free(p->content);
    memset(p, 0, sizeof *p);
}

int chat_parse_tool_calls(ds_chat_format fmt, const char *text, size_t len, ds_tool_parse *out, ds_err *e) {
    if (fmt == DS_CHAT_V32 || fmt == DS_CHAT_V4) return chat_parse_dsml(fmt, text, len, out, e);
    /* the V3 and V3.1 layouts are recognized whatever the (Jinja) format */
    memset(out, 0, sizeof *out);
    const char *end = text + len;
    const char *begin = find(text, len, M_CALLS_BEGIN);
    const char *first = find(text, len, M_CALL_BEGIN);
    if (!begin || (first && first < begin)) begin = first;
    out->content = dup_n(text, begin ? (size_t)(begin - text) : len);
    if (!out->content) return ds_err_set(e, DS_ENOMEM, "chat: out of memory");
    if (!begin) return DS_OK;
    const char *p = begin;
    for (;;) {
        const char *cb = find(p, (size_t)(end - p), M_CALL_BEGIN);
        if (!cb) break;
        const char *after = cb + strlen(M_CALL_BEGIN);
        const char *sep = find(after, (size_t)(end - after), M_SEP);
        const char *ce = sep ? find(sep, (size_t)(end - sep), M_CALL_END) : NULL;
        if (!sep || !ce)
            return ds_err_set(e, DS_EFORMAT, "chat: tool call %d is incomplete (no %s)", out->n_calls,
                              sep ? "<｜tool▁call▁end｜>" : "<｜tool▁sep｜>");
        const char *body = sep + strlen(M_SEP);
        size_t blen = (size_t)(ce - body);
        const char *fence = find(body, blen, "\n```");
        ds_parsed_call c = {0};
        if (fence) { /* V3/R1: TYPE <sep> NAME \n ```json \n ARGS \n ``` */
            const char *nl = memchr(body, '\n', blen);
            const char *a = nl + 1, *aend = ce;
            if ((size_t)(aend - a) >= 8 && !memcmp(a, "```json\n", 8)) a += 8;
            else if ((size_t)(aend - a) >= 4 && !memcmp(a, "```\n", 4)) a += 4;
            if (aend - a >= 4 && !memcmp(aend - 4, "\n```", 4)) aend -= 4;
            if (aend < a) aend = a;
            c.type = dup_n(after, (size_t)(sep - after));
            c.name = dup_n(body, (size_t)(nl - body));
            c.arguments = dup_n(a, (size_t)(aend - a));
        } else { /* V3.1: NAME <sep> ARGS */
            c.type = dup_n("function", 8);
            c.name = dup_n(after, (size_t)(sep - after));
            c.arguments = dup_n(body, blen);
        }
        ds_parsed_call *calls = realloc(out->calls, (size_t)(out->n_calls + 1) * sizeof *calls);
        if (!c.type || !c.name || !c.arguments || !calls) {
            free(c.type);
            free(c.name);
            free(c.arguments);
            if (calls) out->calls = calls;
            return ds_err_set(e, DS_ENOMEM, "chat: out of memory");
        }
        out->calls = calls;
        out->calls[out->n_calls++] = c;
        p = ce + strlen(M_CALL_END);
    }
    if (out->n_calls == 0) return ds_err_set(e, DS_EFORMAT, "chat: tool calls begin but contain no call");
    return DS_OK;
}
