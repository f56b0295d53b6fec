/*
 * stream.c - incremental detokenizer (tok_stream_*, see tokenizer.h): turns
 * ids into text one at a time, emitting only complete, valid UTF-8. Holds
 * back the bytes of a character split across tokens; replaces bytes that can
 * never become valid with U+FFFD at once (same maximal-subpart rule as
 * tok_utf8_sanitize, so streaming and one-shot decoding agree).
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

void tok_stream_init(tok_stream *s, const ds_tokenizer *t, bool skip_special) {
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->skip_special = skip_special;
}

void tok_stream_free(tok_stream *s) {
    if (!s) return;
    free(s->buf);
    memset(s, 0, sizeof *s);
}

static int reserve(tok_stream *s, size_t need, ds_err *e) {
    if (need <= s->cap) return DS_OK;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < need) cap *= 2;
    char *p = realloc(s->buf, cap);
    if (!p) return ds_err_set(e, DS_ENOMEM, "tokenizer stream: out of memory");
    s->buf = p;
    s->cap = cap;
    return DS_OK;
}

/* Expected length of a sequence starting with lead byte c, 0 if c cannot
 * start one; and the allowed range of the second byte. */
static int seq_need(unsigned c, unsigned *lo, unsigned *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0) *lo = 0xA0;
        if (c == 0xED) *hi = 0x9F;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0) *lo = 0x90;
        if (c == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

/* Consumes bytes p[0..n) (after the held-back ones) into s->buf at *m;
 * keeps an incomplete tail in s->pend unless `final`. */
static void feed(tok_stream *s, const unsigned char *p, size_t n, size_t *m, bool final) {
    unsigned char cur[4];
    int nc = s->n_pend;
    memcpy(cur, s->pend, (size_t)nc);
    s->n_pend = 0;
    size_t i = 0;
    for (;;) {
        /* fill cur with the next sequence's bytes, validating as we go */
        if (nc == 0) {
            if (i == n) break;
            cur[nc++] = p[i++];
        }
        unsigned lo, hi;
        int need = seq_need(cur[0], &lo, &hi);
        if (need == 1) { s->buf[(*m)++] = (char)cur[0]; nc = 0; continue; }
        bool bad = need == 0;
        while (!bad && nc < need) {
            if (i == n) break;
            unsigned b = p[i];
            unsigned l = nc == 1 ? lo : 0x80, h = nc == 1 ? hi : 0xBF;
            if (b < l || b > h) { bad = true; break; } /* b starts over, not consumed */
            cur[nc++] = (unsigned char)b;
            i++;
        }
        if (!bad && nc == need) {
            memcpy(s->buf + *m, cur, (size_t)nc);
            *m += (size_t)nc;
            nc = 0;
            continue;
        }
        if (!bad && !final) { /* incomplete at the end: hold back */
            memcpy(s->pend, cur, (size_t)nc);
            s->n_pend = nc;
            return;
        }
        memcpy(s->buf + *m, "\xEF\xBF\xBD", 3); /* maximal invalid subpart */
        *m += 3;
        nc = 0;
        if (bad || i == n) continue;
    }
}

int tok_stream_push(tok_stream *s, int32_t id, const char **text, size_t *len, ds_err *e) {
    *text = "";
    *len = 0;
    size_t n;
    const char *piece = tok_id_to_piece(s->tok, id, &n);
    if (!piece)
        return ds_err_set(e, DS_ERANGE, "tokenizer stream: token id %d is out of range or unused", id);
    if (s->skip_special && tok_is_special(s->tok, id)) return DS_OK;
    int rc = reserve(s, 3 * (n + 4) + 1, e);
    if (rc) return rc;
    size_t m = 0;
    feed(s, (const unsigned char *)piece, n, &m, false);
    s->buf[m] = 0;
    *text = s->buf;
    *len = m;
    return DS_OK;
}

int tok_stream_flush(tok_stream *s, const char **text, size_t *len, ds_err *e) {
    *text = "";
    *len = 0;
    int rc = reserve(s, 3 * 4 + 1, e);
    if (rc) return rc;
    size_t m = 0;
    feed(s, NULL, 0, &m, true);
    s->buf[m] = 0;
    *text = s->buf;
    *len = m;
    return DS_OK;
}
