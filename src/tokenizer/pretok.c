/*
 * pretok.c - the pre-tokenizer of a tokenizer.json: Sequence / Split (regex
 * or literal, all five delimiter behaviours, invert) / ByteLevel (optional
 * prefix space, optional GPT-2 regex), run depth-first over a text span so
 * that only one piece per level is in flight, each final piece handed to the
 * BPE model. Mirrors HF tokenizers' pre_tokenizers/{split,byte_level}.rs and
 * NormalizedString::split. ByteLevel must come last (its byte->char mapping
 * is done by bpe.c on the fly).
 * Does not own: regex translation (regex.c), BPE (bpe.c).
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

static const char k_gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ------------------------------------------------------------------ load */

static int add_step(ds_tokenizer *t, const json_t *pt, int depth, ds_err *e) {
    const char *what = t->what;
    if (!json_is_object(pt)) return ds_err_set(e, DS_EFORMAT, "%s: pre_tokenizer entries must be objects", what);
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return ds_err_set(e, DS_EFORMAT, "%s: pre_tokenizer without a 'type'", what);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list))
            return ds_err_set(e, DS_EFORMAT, "%s: pre_tokenizer Sequence needs a 'pretokenizers' array", what);
        if (depth > 8) return ds_err_set(e, DS_EUNSUPPORTED, "%s: pre_tokenizer nested too deeply", what);
        for (size_t i = 0; i < json_array_size(list); i++) {
            int rc = add_step(t, json_array_get(list, i), depth + 1, e);
            if (rc) return rc;
        }
        return DS_OK;
    }
    if (t->n_steps >= PT_MAX_STEPS)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: more than %d pre-tokenizer steps", what, PT_MAX_STEPS);
    pretok_step *st = &t->steps[t->n_steps];
    memset(st, 0, sizeof *st);
    if (!strcmp(type, "Split")) {
        const json_t *pat = json_object_get(pt, "pattern");
        const json_t *rx = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
        if (!json_is_string(rx) && !json_is_string(str))
            return ds_err_set(e, DS_EFORMAT, "%s: Split pre_tokenizer needs pattern {\"Regex\": ...} or {\"String\": ...}",
                              what);
        const char *beh = json_string_value(json_object_get(pt, "behavior"));
        static const char *names[] = { "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous" };
        st->behavior = -1;
        for (int i = 0; i < 5; i++)
            if (beh && !strcmp(beh, names[i])) st->behavior = i;
        if (st->behavior < 0)
            return ds_err_set(e, DS_EFORMAT, "%s: Split behavior '%s' is not one of Removed, Isolated, "
                              "MergedWithPrevious, MergedWithNext, Contiguous", what, beh ? beh : "(missing)");
        st->invert = json_is_true(json_object_get(pt, "invert"));
        st->kind = PT_SPLIT;
        char label[300];
        snprintf(label, sizeof label, "%s: Split pre_tokenizer %d", what, t->n_steps);
        const json_t *p = rx ? rx : str;
        int rc = regex_compile(&st->re, json_string_value(p), json_string_length(p), !rx, label, e);
        if (rc) return rc;
        t->n_steps++;
        return DS_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        const json_t *aps = json_object_get(pt, "add_prefix_space"), *ur = json_object_get(pt, "use_regex");
        st->kind = PT_BYTELEVEL;
        st->add_prefix_space = aps ? json_is_true(aps) : true; /* HF defaults */
        bool use_regex = ur ? json_is_true(ur) : true;
        if (use_regex) {
            char label[300];
            snprintf(label, sizeof label, "%s: ByteLevel regex", what);
            int rc = regex_compile(&st->re, k_gpt2_regex, strlen(k_gpt2_regex), false, label, e);
            if (rc) return rc;
        }
        t->n_steps++;
        return DS_OK;
    }
    return ds_err_set(e, DS_EUNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported "
                      "(supported: Sequence, Split, ByteLevel)", what, type);
}

int pretok_load(ds_tokenizer *t, const json_t *pre, ds_err *e) {
    if (!pre || json_is_null(pre))
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: no pre_tokenizer; only byte-level BPE (ByteLevel "
                          "pre-tokenizer) is supported", t->what);
    int rc = add_step(t, pre, 0, e);
    if (rc) return rc;
    int n_bl = 0;
    for (int i = 0; i < t->n_steps; i++) n_bl += t->steps[i].kind == PT_BYTELEVEL;
    if (n_bl != 1 || t->steps[t->n_steps - 1].kind != PT_BYTELEVEL)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: the pre_tokenizer must end with exactly one ByteLevel "
                          "(only byte-level BPE is supported)", t->what);
    return DS_OK;
}

void pretok_free(ds_tokenizer *t) {
    for (int i = 0; i < t->n_steps; i++) regex_free(t->steps[i].re);
    t->n_steps = 0;
}

/* ------------------------------------------------------------------- run */

static int push2(tok_ctx *cx, int lvl, size_t a, size_t b) {
    tok_span_vec *L = &cx->lvl[lvl];
    if (L->n + 2 > L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 256;
        size_t *v = realloc(L->v, cap * sizeof *v);
        if (!v) return ds_err_set(cx->e, DS_ENOMEM, "tokenizer: out of memory splitting text");
        L->v = v;
        L->cap = cap;
    }
    L->v[L->n++] = a;
    L->v[L->n++] = b;
    return DS_OK;
}

#define RAW PT_MAX_STEPS /* cx->lvl[RAW]: (start, end | match bit) of one split */
#define MATCH_BIT ((size_t)1 << (sizeof(size_t) * 8 - 1))

/* HF Pattern::find_matches (+ Invert): alternating gaps and matches. */
static int find_matches(tok_ctx *cx, const tok_regex *re, bool invert, const char *s, size_t n) {
    cx->lvl[RAW].n = 0;
    regex_iter it;
    regex_iter_init(&it, re, s, n);
    size_t prev = 0, ms, me;
    int rc;
    size_t mflag = invert ? 0 : MATCH_BIT, gflag = invert ? MATCH_BIT : 0;
    while ((rc = regex_next(&it, &cx->rx, &ms, &me, cx->e)) == 1) {
        if (prev != ms && (rc = push2(cx, RAW, prev, ms | gflag))) return rc;
        if ((rc = push2(cx, RAW, ms, me | mflag))) return rc;
        prev = me;
    }
    if (rc < 0) return rc;
    if (prev != n) return push2(cx, RAW, prev, n | gflag);
    return DS_OK;
}

/* Applies the delimiter behaviour to cx->lvl[RAW], writing pieces to lvl. */
static int apply_behavior(tok_ctx *cx, int lvl, int behavior) {
    tok_span_vec *R = &cx->lvl[RAW], *L = &cx->lvl[lvl];
    L->n = 0;
    size_t m = R->n / 2;
    int rc;
    if (behavior == SPLIT_MERGED_NEXT) { /* fold from the right, then reverse */
        bool prev_match = false;
        for (size_t k = m; k-- > 0;) {
            size_t a = R->v[2 * k], b = R->v[2 * k + 1] & ~MATCH_BIT;
            bool is_match = R->v[2 * k + 1] & MATCH_BIT;
            if (is_match && !prev_match && L->n) L->v[L->n - 2] = a;
            else if ((rc = push2(cx, lvl, a, b))) return rc;
            prev_match = is_match;
        }
        for (size_t i = 0, j = L->n / 2; i < j / 2; i++) { /* reverse pairs */
            size_t x0 = L->v[2 * i], x1 = L->v[2 * i + 1];
            L->v[2 * i] = L->v[2 * (j - 1 - i)];
            L->v[2 * i + 1] = L->v[2 * (j - 1 - i) + 1];
            L->v[2 * (j - 1 - i)] = x0;
            L->v[2 * (j - 1 - i) + 1] = x1;
        }
        return DS_OK;
    }
    bool prev_match = false;
    for (size_t k = 0; k < m; k++) {
        size_t a = R->v[2 * k], b = R->v[2 * k + 1] & ~MATCH_BIT;
        bool is_match = R->v[2 * k + 1] & MATCH_BIT;
        switch (behavior) {
        case SPLIT_REMOVED:
            if (!is_match && (rc = push2(cx, lvl, a, b))) return rc;
            break;
        case SPLIT_ISOLATED:
            if ((rc = push2(cx, lvl, a, b))) return rc;
            break;
        case SPLIT_CONTIGUOUS:
            if (is_match == prev_match && L->n) L->v[L->n - 1] = b;
            else if ((rc = push2(cx, lvl, a, b))) return rc;
            break;
        case SPLIT_MERGED_PREV:
            if (is_match && !prev_match && L->n) L->v[L->n - 1] = b;
            else if ((rc = push2(cx, lvl, a, b))) return rc;
            break;
        }
        prev_match = is_match;
    }
    return DS_OK;
}

static int run(tok_ctx *cx, int depth, const char *s, size_t n) {
    const ds_tokenizer *t = cx->t;
    if (n == 0) return DS_OK; /* HF drops empty splits */
    if (depth == t->n_steps) return cx->on_piece ? cx->on_piece(cx->piece_ud, s, n) : bpe_encode_piece(cx, s, n);
    const pretok_step *st = &t->steps[depth];
    int rc;
    if (st->kind == PT_BYTELEVEL) {
        if (st->add_prefix_space && s[0] != ' ') {
            if (n + 1 > cx->tmp_cap) { /* ByteLevel is last: one buffer is enough */
                size_t cap = 2 * (n + 1);
                char *p = realloc(cx->tmp, cap);
                if (!p) return ds_err_set(cx->e, DS_ENOMEM, "tokenizer: out of memory");
                cx->tmp = p;
                cx->tmp_cap = cap;
            }
            cx->tmp[0] = ' ';
            memmove(cx->tmp + 1, s, n);
            s = cx->tmp;
            n++;
        }
        if (!st->re) return run(cx, depth + 1, s, n);
        if ((rc = find_matches(cx, st->re, false, s, n))) return rc;
        if ((rc = apply_behavior(cx, depth, SPLIT_ISOLATED))) return rc;
    } else {
        if ((rc = find_matches(cx, st->re, st->invert, s, n))) return rc;
        if ((rc = apply_behavior(cx, depth, st->behavior))) return rc;
    }
    /* cx->lvl[depth] is ours until we return; deeper levels use their own */
    for (size_t k = 0; k < cx->lvl[depth].n; k += 2) {
        size_t a = cx->lvl[depth].v[k], b = cx->lvl[depth].v[k + 1];
        if ((rc = run(cx, depth + 1, s + a, b - a))) return rc;
    }
    return DS_OK;
}

int pretok_encode(tok_ctx *cx, const char *s, size_t n) { return run(cx, 0, s, n); }
