/*
 * stop.c - stop-string matching on streamed text (see stop.h).
 */
#include "stop.h"

#include <stdlib.h>
#include <string.h>

void ds_stop_init(ds_stop *s) { memset(s, 0, sizeof *s); }

int ds_stop_add(ds_stop *s, const char *str, ds_err *e) {
    if (!str || !*str) return DS_OK;
    if (s->n >= DS_MAX_STOPS) return ds_err_set(e, DS_ERANGE, "at most %d stop strings", DS_MAX_STOPS);
    s->stops[s->n] = strdup(str);
    if (!s->stops[s->n]) return ds_err_set(e, DS_ENOMEM, "out of memory");
    size_t l = strlen(str);
    if (l > s->max_len) s->max_len = l;
    s->n++;
    return DS_OK;
}

static bool grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    char *nb = realloc(*buf, nc);
    if (!nb) return false;
    *buf = nb;
    *cap = nc;
    return true;
}

bool ds_stop_feed(ds_stop *s, const char *text, size_t len, const char **emit, size_t *emit_len) {
    return ds_stop_feed_ex(s, text, len, false, emit, emit_len);
}

bool ds_stop_feed_ex(ds_stop *s, const char *text, size_t len, bool final, const char **emit, size_t *emit_len) {
    *emit = "";
    *emit_len = 0;
    if (s->matched) return true;
    if (s->n == 0) {           /* nothing to watch: pass through */
        *emit = text;
        *emit_len = len;
        return false;
    }
    if (!grow(&s->held, &s->cap, s->n_held + len + 1)) { *emit = text; *emit_len = len; return false; }
    memcpy(s->held + s->n_held, text, len);
    s->n_held += len;
    s->held[s->n_held] = 0;
    /* earliest complete match */
    size_t cut = (size_t)-1;
    for (int i = 0; i < s->n; i++) {
        const char *p = memmem(s->held, s->n_held, s->stops[i], strlen(s->stops[i]));
        if (p && (size_t)(p - s->held) < cut) cut = (size_t)(p - s->held);
    }
    size_t safe;
    if (cut != (size_t)-1) {
        s->matched = true;
        safe = cut;
    } else if (final) {
        safe = s->n_held;
    } else {
        /* hold back the longest tail that is a prefix of some stop string */
        size_t keep = 0;
        for (int i = 0; i < s->n; i++) {
            size_t sl = strlen(s->stops[i]);
            for (size_t k = DS_MIN(sl - 1, s->n_held); k > keep; k--)
                if (memcmp(s->held + s->n_held - k, s->stops[i], k) == 0) { keep = k; break; }
        }
        safe = s->n_held - keep;
    }
    if (!grow(&s->out, &s->out_cap, safe + 1)) safe = 0;
    memcpy(s->out, s->held, safe);
    s->out[safe] = 0;
    memmove(s->held, s->held + safe, s->n_held - safe);
    s->n_held -= safe;
    if (s->matched) s->n_held = 0;
    *emit = s->out;
    *emit_len = safe;
    return s->matched;
}

void ds_stop_flush(ds_stop *s, const char **emit, size_t *emit_len) {
    *emit = "";
    *emit_len = 0;
    if (s->matched || s->n_held == 0) return;
    ds_stop_feed_ex(s, "", 0, true, emit, emit_len);
}

void ds_stop_reset(ds_stop *s) {
    s->n_held = 0;
    s->matched = false;
}

void ds_stop_free(ds_stop *s) {
    for (int i = 0; i < s->n; i++) free(s->stops[i]);
    free(s->held);
    free(s->out);
    memset(s, 0, sizeof *s);
}
