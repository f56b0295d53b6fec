/*
 * strbuf.c - growable byte strings (see strbuf.h).
 */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ds_buf_put(ds_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void ds_buf_str(ds_buf *b, const char *s) { ds_buf_put(b, s, strlen(s)); }

void ds_buf_printf(ds_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = true; return; }
    if ((size_t)n < sizeof tmp) { ds_buf_put(b, tmp, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->oom = true; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    ds_buf_put(b, big, (size_t)n);
    free(big);
}

char *ds_buf_take(ds_buf *b) {
    char *p = b->oom ? NULL : b->p;
    if (b->oom) free(b->p);
    if (!p && !b->oom) p = calloc(1, 1);
    b->p = NULL;
    b->n = b->cap = 0;
    b->oom = false;
    return p;
}

void ds_buf_free(ds_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    b->oom = false;
}
