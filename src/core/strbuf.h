/*
 * strbuf.h - a growable byte string (always NUL-terminated). Allocation
 * failure is sticky: once `oom` is set, later appends do nothing, so a
 * builder can append freely and check once at the end.
 */
#ifndef DS_STRBUF_H
#define DS_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ds_buf {
    char *p;        /* owned; NULL until the first append */
    size_t n, cap;
    bool oom;
} ds_buf;

void ds_buf_put(ds_buf *b, const char *s, size_t n);
void ds_buf_str(ds_buf *b, const char *s);
void ds_buf_printf(ds_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the string to the caller (free() it); NULL after an allocation failure. */
char *ds_buf_take(ds_buf *b);
void ds_buf_free(ds_buf *b);

#endif
