/*
 * chat_internal.h - what chat.c (the Jinja formats, detection) and
 * chat_dsml.c (the V3.2 / V4 Python-defined formats, DSML) share: the prompt
 * builder that collects literal text runs between template markers and
 * turns markers into their added-token ids, optionally keeping the whole
 * rendered string too.
 */
#ifndef DS_CHAT_INTERNAL_H
#define DS_CHAT_INTERNAL_H

#include "chat.h"
#include "../core/strbuf.h"

#include <string.h>

#define M_BOS "<｜begin▁of▁sentence｜>"
#define M_USER "<｜User｜>"
#define M_ASSISTANT "<｜Assistant｜>"
#define M_EOS "<｜end▁of▁sentence｜>"
#define M_THINK "<think>"
#define M_THINK_END "</think>"

typedef struct rb {
    const ds_tokenizer *t;
    tok_ids *ids;
    char *txt;        /* the pending literal run */
    size_t n, cap;
    ds_buf *all;      /* optional: the whole prompt as text, markers included */
    int rc;
    ds_err *e;
} rb;

void rb_text_n(rb *b, const char *s, size_t n); /* literal text (no added-token matching) */
void rb_text(rb *b, const char *s);             /* NULL: nothing */
void rb_mark(rb *b, const char *m);             /* a marker: its added-token id, or text if none */
void rb_flush(rb *b);                           /* tokenizes the pending run */

/* a message's content bytes (content_len, or up to its NUL) */
static inline size_t chat_content_len(const ds_chat_msg *m) {
    return !m->content ? 0 : m->content_len ? m->content_len : strlen(m->content);
}

/* chat_dsml.c */
void chat_render_v32(rb *b, const ds_chat_msg *msgs, int n, const ds_chat_opts *o, const char *tools_json);
void chat_render_v4(rb *b, const ds_chat_msg *msgs, int n, const ds_chat_opts *o, const char *tools_json);
int chat_parse_dsml(ds_chat_format fmt, const char *text, size_t len, ds_tool_parse *out, ds_err *e);

#endif
