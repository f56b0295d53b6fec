/*
 * regex.c - Oniguruma -> PCRE2 pattern translation and match iteration for
 * the pre-tokenizer (see regex.h). PCRE2 is compiled with UTF + UCP +
 * MATCH_INVALID_UTF (invalid bytes never match, and never crash) and JIT.
 *
 * Translation (where the two engines differ for tokenizer patterns):
 *   \p{X} \P{X} (general categories)  -> PCRE2's class widened with the code
 *                                        points of Oniguruma's newer Unicode
 *   \s \S        -> Oniguruma's White_Space set (PCRE2's \s differs: U+180E)
 *   \w \W \d \D  -> Oniguruma's sets (\w = Alphabetic, M, Nd, Pc, Join_C.)
 *   \h \H        -> hex digit (Oniguruma), not horizontal space (PCRE2)
 *   \v           -> U+000B only;  \uHHHH -> \x{HHHH}
 *   ^ $          -> line anchors (PCRE2_MULTILINE), as in Oniguruma
 * Negated sets inside a bracket class ([^\S] style), nested classes and &&
 * are rejected as unsupported rather than translated wrongly.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"
#include "../core/strbuf.h"
#include "unicode_tables.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tok_regex {
    pcre2_code *code;
    bool jit;
    char what[96];
};

/* ---------------------------------------------------------------- UTF-8 */

int utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len;
    uint32_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 1;
    if ((size_t)len > n) return 1;
    if (s[1] < lo || s[1] > hi) return 1;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 1;
    return len;
}

int32_t utf8_decode(const unsigned char *s, size_t n, int *len) {
    int l = utf8_seq_len(s, n);
    *len = l;
    if (l == 1) return s[0] < 0x80 ? (int32_t)s[0] : -1;
    if (l == 2) return ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    if (l == 3) return ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    return ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

/* ------------------------------------------------------------ translator */

static void sb_ranges(ds_buf *b, const uni_range *r, int n) {
    char tmp[48];
    for (int i = 0; i < n; i++) {
        if (r[i].lo == r[i].hi) snprintf(tmp, sizeof tmp, "\\x{%X}", (unsigned)r[i].lo);
        else snprintf(tmp, sizeof tmp, "\\x{%X}-\\x{%X}", (unsigned)r[i].lo, (unsigned)r[i].hi);
        ds_buf_str(b, tmp);
    }
}

/* Writes the class body (no brackets) for Oniguruma's escape `c` (s, w, d, h)
 * or for \p{name}; returns false if unknown. */
static bool class_body(ds_buf *b, char c, const char *name) {
    int n;
    bool exact;
    const uni_range *r;
    switch (c) {
    case 's':
        r = uni_onig_extra("s", &n, &exact);
        sb_ranges(b, r, n);
        return true;
    case 'w':
        ds_buf_str(b, "\\p{L}\\p{M}\\p{Nd}\\p{Pc}");
        r = uni_onig_extra("w", &n, &exact);
        sb_ranges(b, r, n);
        return true;
    case 'd':
        ds_buf_str(b, "\\p{Nd}");
        r = uni_onig_extra("d", &n, &exact);
        sb_ranges(b, r, n);
        return true;
    case 'h':
        ds_buf_str(b, "0-9A-Fa-f");
        return true;
    case 'p':
        r = uni_onig_extra(name, &n, &exact);
        if (!r) return false;
        ds_buf_str(b, "\\p{");
        ds_buf_str(b, name);
        ds_buf_str(b, "}");
        sb_ranges(b, r, n);
        return true;
    }
    return false;
}

int regex_translate(const char *pat, size_t len, char **out, const char *what, ds_err *e) {
    ds_buf b = {0};
    bool in_class = false;
    size_t class_start = 0; /* index just after '[' or '[^' */
    *out = NULL;
    for (size_t i = 0; i < len;) {
        char c = pat[i];
        if (c == '\\') {
            if (i + 1 >= len) {
                free(b.p);
                return ds_err_set(e, DS_EFORMAT, "%s: regex ends with a lone backslash", what);
            }
            char d = pat[i + 1];
            char name[40] = {0};
            size_t adv = 2;
            bool neg = false, known = true;
            char kind = 0;
            if (d == 'p' || d == 'P') {
                neg = d == 'P';
                if (i + 2 < len && pat[i + 2] == '{') {
                    size_t j = i + 3;
                    if (j < len && pat[j] == '^') { neg = !neg; j++; }
                    size_t k = j;
                    while (k < len && pat[k] != '}' && k - j < sizeof name - 1) k++;
                    if (k >= len || pat[k] != '}') known = false;
                    else {
                        memcpy(name, pat + j, k - j);
                        adv = k + 1 - i;
                    }
                } else if (i + 2 < len) {
                    name[0] = pat[i + 2];
                    adv = 3;
                } else known = false;
                int n;
                bool exact;
                kind = 'p';
                if (known && !uni_onig_extra(name, &n, &exact)) known = false;
            } else if (strchr("sSwWdDhH", d)) {
                kind = (char)(d | 0x20);
                neg = d != kind;
            } else {
                known = false;
            }
            if (kind && known) {
                if (!in_class) {
                    ds_buf_str(&b, neg ? "[^" : "[");
                    class_body(&b, kind, name);
                    ds_buf_str(&b, "]");
                } else if (!neg) {
                    class_body(&b, kind, name);
                } else if (kind == 'p') {
                    int n;
                    bool exact;
                    uni_onig_extra(name, &n, &exact);
                    if (n > 0 || !exact) goto unsupported;
                    ds_buf_str(&b, "\\P{");
                    ds_buf_str(&b, name);
                    ds_buf_str(&b, "}");
                } else {
                    goto unsupported;
                }
                i += adv;
                continue;
            }
            if (kind == 'p') { /* script or other property: PCRE2 as is */
                ds_buf_put(&b, pat + i, adv);
                i += adv;
                continue;
            }
            if (d == 'v') { ds_buf_str(&b, "\\x{0B}"); i += 2; continue; }
            if (d == 'u' && i + 5 < len + 0 && i + 6 <= len) {
                bool hex = true;
                for (int k = 2; k < 6; k++)
                    if (!strchr("0123456789abcdefABCDEF", pat[i + k])) hex = false;
                if (hex) {
                    ds_buf_str(&b, "\\x{");
                    ds_buf_put(&b, pat + i + 2, 4);
                    ds_buf_str(&b, "}");
                    i += 6;
                    continue;
                }
            }
            /* any other escape means the same in both engines; copy it with
             * its (possibly multi-byte) character */
            int l = utf8_seq_len((const unsigned char *)pat + i + 1, len - i - 1);
            ds_buf_put(&b, pat + i, 1 + (size_t)l);
            i += 1 + (size_t)l;
            continue;
        }
        if (in_class) {
            if (c == ']' && i > class_start) { in_class = false; ds_buf_put(&b, "]", 1); i++; continue; }
            if (c == '[') {
                if (i + 1 < len && pat[i + 1] == ':') { /* POSIX bracket: copy through ":]" */
                    const char *end = NULL;
                    for (size_t k = i + 2; k + 1 < len; k++)
                        if (pat[k] == ':' && pat[k + 1] == ']') { end = pat + k + 2; break; }
                    if (!end) goto unsupported;
                    ds_buf_put(&b, pat + i, (size_t)(end - (pat + i)));
                    i = (size_t)(end - pat);
                    continue;
                }
                goto unsupported; /* nested class */
            }
            if (c == '&' && i + 1 < len && pat[i + 1] == '&') goto unsupported;
        } else if (c == '[') {
            in_class = true;
            ds_buf_put(&b, "[", 1);
            i++;
            if (i < len && pat[i] == '^') { ds_buf_put(&b, "^", 1); i++; }
            class_start = i; /* a ']' right here is a literal */
            continue;
        }
        int l = utf8_seq_len((const unsigned char *)pat + i, len - i);
        ds_buf_put(&b, pat + i, (size_t)l);
        i += (size_t)l;
    }
    if (b.oom) { free(b.p); return ds_err_set(e, DS_ENOMEM, "%s: out of memory translating regex", what); }
    if (!b.p) ds_buf_put(&b, "", 0);
    if (b.oom) { free(b.p); return ds_err_set(e, DS_ENOMEM, "%s: out of memory translating regex", what); }
    *out = b.p;
    return DS_OK;
unsupported:
    free(b.p);
    return ds_err_set(e, DS_EUNSUPPORTED,
                      "%s: regex uses a construct this tokenizer does not support "
                      "(negated set or nested class inside [...]): %.*s", what, (int)DS_MIN(len, 80), pat);
}

/* ------------------------------------------------------------- compile */

int regex_compile(tok_regex **out, const char *pattern, size_t len, bool literal,
                  const char *what, ds_err *e) {
    *out = NULL;
    tok_regex *re = calloc(1, sizeof *re);
    if (!re) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", what);
    snprintf(re->what, sizeof re->what, "%s", what);
    char *pcre_pat = NULL;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
    const char *src = pattern;
    size_t srclen = len;
    if (literal) { /* escape every ASCII punctuation byte (PCRE2_LITERAL excludes MATCH_INVALID_UTF) */
        ds_buf b = {0};
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)pattern[i];
            if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
                char esc[8];
                snprintf(esc, sizeof esc, "\\x{%X}", c);
                ds_buf_str(&b, esc);
            } else {
                ds_buf_put(&b, pattern + i, 1);
            }
        }
        if (!b.p) ds_buf_put(&b, "", 0);
        if (b.oom) { free(b.p); free(re); return ds_err_set(e, DS_ENOMEM, "%s: out of memory", what); }
        pcre_pat = b.p;
        src = pcre_pat;
        srclen = b.n;
    } else {
        int rc = regex_translate(pattern, len, &pcre_pat, what, e);
        if (rc) { free(re); return rc; }
        src = pcre_pat;
        srclen = strlen(pcre_pat);
        opts |= PCRE2_MULTILINE;
    }
    int err;
    PCRE2_SIZE eoff;
    re->code = pcre2_compile((PCRE2_SPTR)src, srclen, opts, &err, &eoff, NULL);
    free(pcre_pat);
    if (!re->code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        free(re);
        return ds_err_set(e, DS_EFORMAT, "%s: bad regex '%.*s': %s", what, (int)DS_MIN(len, 80), pattern,
                          (char *)msg);
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    *out = re;
    return DS_OK;
}

void regex_free(tok_regex *re) {
    if (!re) return;
    pcre2_code_free(re->code);
    free(re);
}

void regex_scratch_free(regex_scratch *s) {
    if (!s) return;
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jstack);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------- matching */

void regex_iter_init(regex_iter *it, const tok_regex *re, const char *s, size_t n) {
    it->re = re;
    it->s = s;
    it->n = n;
    it->last_end = 0;
    it->last_match_end = -1;
}

#define JIT_STACK_MAX (256u << 20)

/* One search from `start`: 1 match, 0 none, <0 error. */
static int search(const tok_regex *re, regex_scratch *sc, const char *s, size_t n, size_t start,
                  size_t *ms, size_t *me, ds_err *e) {
    if (!sc->md) {
        sc->md = pcre2_match_data_create(1, NULL);
        if (!sc->md) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", re->what);
    }
    for (;;) {
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, start, 0, sc->md, sc->mctx);
        if (rc >= 0) { /* 0: ovector too small for the groups, but matched */
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
            *ms = ov[0];
            *me = ov[1];
            if (*me < *ms) *me = *ms; /* \K tricks; never go backwards */
            return 1;
        }
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && sc->jstack_size < JIT_STACK_MAX) {
            size_t sz = sc->jstack_size ? sc->jstack_size * 4 : (1u << 20);
            pcre2_jit_stack_free(sc->jstack);
            sc->jstack = pcre2_jit_stack_create(32 * 1024, sz, NULL);
            if (!sc->mctx) sc->mctx = pcre2_match_context_create(NULL);
            if (!sc->jstack || !sc->mctx) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", re->what);
            pcre2_jit_stack_assign(sc->mctx, NULL, sc->jstack);
            sc->jstack_size = sz;
            continue;
        }
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return ds_err_set(e, DS_ERANGE, "%s: regex match failed on a %zu-byte piece: %s", re->what, n,
                          (char *)msg);
    }
}

int regex_next(regex_iter *it, regex_scratch *sc, size_t *ms, size_t *me, ds_err *e) {
    for (;;) {
        if (it->last_end > it->n) return 0;
        size_t s = 0, t = 0;
        int rc = search(it->re, sc, it->s, it->n, it->last_end, &s, &t, e);
        if (rc <= 0) return rc;
        if (s == t && it->last_match_end == (int64_t)t) {
            it->last_end += it->last_end < it->n
                ? (size_t)utf8_seq_len((const unsigned char *)it->s + it->last_end, it->n - it->last_end)
                : 1;
            continue;
        }
        it->last_end = t;
        it->last_match_end = (int64_t)t;
        *ms = s;
        *me = t;
        return 1;
    }
}
