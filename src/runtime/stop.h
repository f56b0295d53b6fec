/*
 * stop.h - stop strings over a streamed reply. Text is fed as it is
 * decoded; the matcher returns what is safe to show now, holding back any
 * tail that could still turn into a stop string, and reports a match (the
 * stop string itself and anything after it are never emitted).
 */
#ifndef DS_STOP_H
#define DS_STOP_H

#include "../core/base.h"

#define DS_MAX_STOPS 16

typedef struct ds_stop {
    char *stops[DS_MAX_STOPS];  /* owned copies */
    int n;
    size_t max_len;
    char *held;                 /* text held back (a possible stop-string prefix) */
    size_t n_held, cap;
    char *out;                  /* output of the last call */
    size_t out_cap;
    bool matched;
} ds_stop;

void ds_stop_init(ds_stop *s);
/* Adds a stop string (empty strings are ignored); DS_ERANGE past DS_MAX_STOPS. */
int ds_stop_add(ds_stop *s, const char *str, ds_err *e);
/* Feeds text; *emit (borrowed until the next call) gets what may be shown.
 * Returns true once a stop string has matched (later feeds emit nothing). */
bool ds_stop_feed(ds_stop *s, const char *text, size_t len, const char **emit, size_t *emit_len);
/* The same; final: no text follows, so nothing is held back (what does not
 * match is emitted in this one call). */
bool ds_stop_feed_ex(ds_stop *s, const char *text, size_t len, bool final, const char **emit, size_t *emit_len);
/* End of generation: releases what was held back. */
void ds_stop_flush(ds_stop *s, const char **emit, size_t *emit_len);
void ds_stop_reset(ds_stop *s);   /* keeps the stop strings */
void ds_stop_free(ds_stop *s);

#endif
