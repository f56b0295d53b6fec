/*
 * regex.h - the tokenizer's one wrapper over PCRE2. Compiles the Oniguruma
 * patterns found in tokenizer.json (HF tokenizers runs them with Oniguruma)
 * into equivalent PCRE2 patterns and iterates matches with Oniguruma's
 * find_iter rules (empty matches, offsets). Knows nothing about tokens.
 */
#ifndef DS_TOK_REGEX_H
#define DS_TOK_REGEX_H

#include "../core/base.h"

typedef struct tok_regex tok_regex;

/* Per-thread matching state (PCRE2 match data and a JIT stack grown on
 * demand). Zero-initialize, use with any number of regexes, then
 * regex_scratch_free. */
typedef struct regex_scratch {
    void *md;     /* pcre2_match_data * */
    void *mctx;   /* pcre2_match_context * */
    void *jstack; /* pcre2_jit_stack * */
    size_t jstack_size;
} regex_scratch;
void regex_scratch_free(regex_scratch *s);

/* Compiles `pattern` (len bytes). literal: match the bytes as they are (HF
 * Split {"String": ...}); otherwise an Oniguruma regex, translated. `what`
 * names the pattern in error messages. Free with regex_free (NULL ok). */
int regex_compile(tok_regex **out, const char *pattern, size_t len, bool literal,
                  const char *what, ds_err *e);
void regex_free(tok_regex *re);

/* Translation only (exposed for tests): writes the PCRE2 pattern for an
 * Oniguruma pattern into a malloc'ed NUL-terminated string. */
int regex_translate(const char *pattern, size_t len, char **out, const char *what, ds_err *e);

/* Iterates the matches of re in s[0..n) like Rust onig's find_iter: each
 * search starts where the last match ended; an empty match right at the end
 * of the previous match is skipped by advancing one character. */
typedef struct regex_iter {
    const tok_regex *re;
    const char *s;
    size_t n;
    size_t last_end;
    int64_t last_match_end; /* -1: none yet */
} regex_iter;
void regex_iter_init(regex_iter *it, const tok_regex *re, const char *s, size_t n);
/* 1 and [*ms, *me) on a match, 0 when done, negative DS_E* on failure. */
int regex_next(regex_iter *it, regex_scratch *sc, size_t *ms, size_t *me, ds_err *e);

/* Length of the UTF-8 sequence at s[0..n) if valid, else 1 (n > 0). */
int utf8_seq_len(const unsigned char *s, size_t n);
/* Decodes the valid sequence at s (as measured by utf8_seq_len); returns the
 * code point, or -1 for an invalid byte. */
int32_t utf8_decode(const unsigned char *s, size_t n, int *len);

#endif
