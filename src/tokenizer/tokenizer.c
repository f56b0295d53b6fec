/*
 * tokenizer.c - loading a Hugging Face tokenizer.json (+ tokenizer_config.json)
 * and the encode/decode entry points (API in tokenizer.h).
 *
 * Supported, bit-exact with HF tokenizers 0.23 (tested against it):
 *   model          BPE: vocab, merges as "a b" or ["a","b"], ignore_merges,
 *                  unk_token/fuse_unk, byte_fallback (no dropout, no
 *                  continuing_subword_prefix/end_of_word_suffix)
 *   normalizer     null or an empty Sequence (anything else: DS_EUNSUPPORTED)
 *   pre_tokenizer  Sequence of Split (Regex/String; any behaviour; invert)
 *                  ending in ByteLevel (add_prefix_space, use_regex)
 *   added_tokens   special or not, single_word, lstrip, rstrip, normalized;
 *                  ids assigned as HF does (model vocab id if the content is
 *                  in the vocab, else the next id after the model vocab)
 *   post_processor null, ByteLevel, TemplateProcessing (single), Roberta,
 *                  Bert, Sequence of these (used with TOK_ADD_SPECIAL only)
 *   decoder        ByteLevel, Sequence of ByteLevel, or null (ByteLevel used)
 * Ignored: truncation, padding (HF would apply them in encode).
 *
 * Known deviation: single_word uses Oniguruma's \w (Letter, Mark, Nd, Pc)
 * where HF uses Rust regex's \w (Alphabetic, ...): they differ only on
 * letter-numbers and a few symbols next to a single_word token.
 * Does not own: BPE (bpe.c), pre-tokenization (pretok.c), chat (chat.c).
 */
#include "tok_internal.h"
#include "../core/mmap_file.h"
#include "../io/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------- tok_ids */

int tok_ids_push(tok_ids *ids, int32_t id, ds_err *e) {
    if (ids->n == ids->cap) {
        int64_t cap = ids->cap ? 2 * ids->cap : 64;
        int32_t *v = realloc(ids->v, (size_t)cap * sizeof *v);
        if (!v) return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory for %lld ids", (long long)cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return DS_OK;
}

void tok_ids_free(tok_ids *ids) {
    if (!ids) return;
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

/* ------------------------------------------------------------- helpers */

static bool is_space_cp(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Start of the character that ends at s[n) (n > 0). */
static size_t prev_char(const char *s, size_t n) {
    size_t i = n - 1, lim = n >= 4 ? n - 4 : 0;
    while (i > lim && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    int l = utf8_seq_len((const unsigned char *)s + i, n - i);
    return (size_t)l == n - i ? i : n - 1; /* invalid: step back one byte */
}

static bool is_word_at(const ds_tokenizer *t, regex_scratch *rx, const char *s, size_t n) {
    if (!t->re_word || n == 0) return false;
    regex_iter it;
    regex_iter_init(&it, t->re_word, s, n);
    size_t a, b;
    ds_err tmp = {0};
    return regex_next(&it, rx, &a, &b, &tmp) == 1 && a == 0;
}

static int trie_add(tok_trie *tr, const char *s, size_t n, int32_t tok, ds_err *e) {
    int32_t *link = &tr->root[(unsigned char)s[0]];
    for (size_t i = 0;; i++) {
        int32_t node = *link;
        while (node >= 0 && tr->nodes[node].byte != (unsigned char)s[i]) node = tr->nodes[node].sibling;
        if (node < 0) {
            if (tr->n == tr->cap) {
                int32_t cap = tr->cap ? 2 * tr->cap : 256;
                trie_node *p = realloc(tr->nodes, (size_t)cap * sizeof *p);
                if (!p) return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory for added tokens");
                tr->nodes = p;
                tr->cap = cap;
                if (link != &tr->root[(unsigned char)s[0]]) { /* link pointed into the old array */
                    return trie_add(tr, s, n, tok, e);
                }
            }
            node = tr->n++;
            tr->nodes[node] = (trie_node){ -1, *link, -1, (uint8_t)s[i] };
            *link = node;
        }
        if (i + 1 == n) { tr->nodes[node].tok = tok; return DS_OK; }
        link = &tr->nodes[node].child;
    }
}

/* Longest added token starting at s[0..n): its index into t->added, or -1. */
static int32_t trie_longest(const tok_trie *tr, const char *s, size_t n, size_t *len) {
    int32_t node = tr->root[(unsigned char)s[0]], best = -1;
    for (size_t i = 0; node >= 0;) {
        while (node >= 0 && tr->nodes[node].byte != (unsigned char)s[i]) node = tr->nodes[node].sibling;
        if (node < 0) break;
        if (tr->nodes[node].tok >= 0) { best = tr->nodes[node].tok; *len = i + 1; }
        if (++i == n) break;
        node = tr->nodes[node].child;
    }
    return best;
}

/* ------------------------------------------------------------- loading */

static int load_added(ds_tokenizer *t, const json_t *list, ds_err *e) {
    const char *what = t->what;
    if (!list || json_is_null(list)) return DS_OK;
    if (!json_is_array(list)) return ds_err_set(e, DS_EFORMAT, "%s: added_tokens must be an array", what);
    size_t n = json_array_size(list);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", what);
    int64_t next_id = t->n_model; /* HF: model.get_vocab_size() = entries, not max id + 1 */
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(list, i);
        const json_t *c = json_object_get(a, "content");
        if (!json_is_object(a) || !json_is_string(c))
            return ds_err_set(e, DS_EFORMAT, "%s: added_tokens[%zu] needs a string 'content'", what, i);
        const char *s = json_string_value(c);
        size_t len = json_string_length(c);
        if (len == 0) continue; /* HF ignores empty added tokens */
        added_tok at = {0};
        at.special = json_is_true(json_object_get(a, "special"));
        at.single_word = json_is_true(json_object_get(a, "single_word"));
        at.lstrip = json_is_true(json_object_get(a, "lstrip"));
        at.rstrip = json_is_true(json_object_get(a, "rstrip"));
        const json_t *nz = json_object_get(a, "normalized");
        at.normalized = nz ? json_is_true(nz) : !at.special;
        int32_t id = -1;
        int32_t k;
        for (k = 0; k < t->n_added; k++) /* content already added? (few hundred: linear is fine) */
            if (t->added[k].len == len && !memcmp(t->strs.p + t->added[k].off, s, len)) break;
        if (k < t->n_added) id = t->added[k].id;
        else id = bpe_vocab_get(t, s, len);
        if (id < 0) {
            if (next_id >= (1 << 22)) return ds_err_set(e, DS_ERANGE, "%s: too many added tokens", what);
            id = (int32_t)next_id++;
        }
        if (k < t->n_added) {
            bool was_special = t->added[k].special;
            at.off = t->added[k].off;
            at.len = t->added[k].len;
            at.id = id;
            t->added[k] = at;
            t->added[k].special |= was_special; /* HF's special set only grows */
        } else {
            int64_t off = tok_pool_add(&t->strs, s, len);
            if (off < 0) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", what);
            at.off = (uint32_t)off;
            at.len = (uint32_t)len;
            at.id = id;
            t->added[t->n_added++] = at;
        }
    }
    return DS_OK;
}

/* Collects ids of `name` in a TemplateProcessing special_tokens map. */
static int tp_special_ids(ds_tokenizer *t, const json_t *specials, const char *name, tok_ids *out, ds_err *e) {
    const json_t *ent = json_object_get(specials, name);
    const json_t *ids = json_object_get(ent, "ids");
    if (!json_is_array(ids))
        return ds_err_set(e, DS_EFORMAT, "%s: post_processor: special token '%s' has no ids", t->what, name);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        const json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 22))
            return ds_err_set(e, DS_EFORMAT, "%s: post_processor: bad id for '%s'", t->what, name);
        int rc = tok_ids_push(out, (int32_t)json_integer_value(v), e);
        if (rc) return rc;
    }
    return DS_OK;
}

/* Adds one post-processor's prefix/suffix around the current ones. */
static int load_post(ds_tokenizer *t, const json_t *pp, tok_ids *pre, tok_ids *suf, int depth, ds_err *e) {
    if (!pp || json_is_null(pp)) return DS_OK;
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type) return ds_err_set(e, DS_EFORMAT, "%s: post_processor without a 'type'", t->what);
    int rc;
    if (!strcmp(type, "ByteLevel")) return DS_OK;
    if (!strcmp(type, "Sequence") && depth < 4) {
        const json_t *list = json_object_get(pp, "processors");
        for (size_t i = 0; i < json_array_size(list); i++)
            if ((rc = load_post(t, json_array_get(list, i), pre, suf, depth + 1, e))) return rc;
        return DS_OK;
    }
    tok_ids p = {0}, s = {0};
    rc = DS_OK;
    if (!strcmp(type, "TemplateProcessing")) {
        const json_t *single = json_object_get(pp, "single"), *specials = json_object_get(pp, "special_tokens");
        if (!json_is_array(single))
            return ds_err_set(e, DS_EFORMAT, "%s: TemplateProcessing needs a 'single' template", t->what);
        int seen_a = 0;
        for (size_t i = 0; i < json_array_size(single) && !rc; i++) {
            const json_t *it = json_array_get(single, i);
            const json_t *st = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
            if (st) rc = tp_special_ids(t, specials, json_string_value(json_object_get(st, "id")) ?
                                        json_string_value(json_object_get(st, "id")) : "", seen_a ? &s : &p, e);
            else if (sq && !seen_a) seen_a = 1;
            else rc = ds_err_set(e, DS_EFORMAT, "%s: TemplateProcessing 'single' item %zu is not understood",
                                 t->what, i);
        }
        if (!rc && !seen_a) rc = ds_err_set(e, DS_EFORMAT, "%s: TemplateProcessing 'single' has no $A", t->what);
    } else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const json_t *cls = json_object_get(pp, "cls"), *sep = json_object_get(pp, "sep");
        const json_t *ci = json_array_get(cls, 1), *si = json_array_get(sep, 1);
        if (!json_is_integer(ci) || !json_is_integer(si) || json_integer_value(ci) < 0 || json_integer_value(si) < 0)
            return ds_err_set(e, DS_EFORMAT, "%s: %s needs cls and sep as [token, id]", t->what, type);
        rc = tok_ids_push(&p, (int32_t)json_integer_value(ci), e);
        if (!rc) rc = tok_ids_push(&s, (int32_t)json_integer_value(si), e);
    } else {
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: post_processor type '%s' is not supported", t->what, type);
    }
    /* new prefix = p + old prefix; new suffix = old suffix + s */
    for (int64_t i = 0; i < pre->n && !rc; i++) rc = tok_ids_push(&p, pre->v[i], e);
    for (int64_t i = 0; i < s.n && !rc; i++) rc = tok_ids_push(suf, s.v[i], e);
    if (!rc) { tok_ids_free(pre); *pre = p; p = (tok_ids){0}; }
    tok_ids_free(&p);
    tok_ids_free(&s);
    return rc;
}

static int check_normalizer(ds_tokenizer *t, const json_t *nz, int depth, ds_err *e) {
    if (!nz || json_is_null(nz)) return DS_OK;
    const char *type = json_string_value(json_object_get(nz, "type"));
    if (type && !strcmp(type, "Sequence") && depth < 8) {
        const json_t *list = json_object_get(nz, "normalizers");
        for (size_t i = 0; i < json_array_size(list); i++) {
            int rc = check_normalizer(t, json_array_get(list, i), depth + 1, e);
            if (rc) return rc;
        }
        return DS_OK;
    }
    return ds_err_set(e, DS_EUNSUPPORTED, "%s: normalizer '%s' is not supported (only none or an empty "
                      "Sequence)", t->what, type ? type : "?");
}

static int check_decoder(ds_tokenizer *t, const json_t *d, int depth, ds_err *e) {
    if (!d || json_is_null(d)) return DS_OK;
    const char *type = json_string_value(json_object_get(d, "type"));
    if (type && !strcmp(type, "ByteLevel")) return DS_OK;
    if (type && !strcmp(type, "Sequence") && depth < 8) {
        const json_t *list = json_object_get(d, "decoders");
        for (size_t i = 0; i < json_array_size(list); i++) {
            int rc = check_decoder(t, json_array_get(list, i), depth + 1, e);
            if (rc) return rc;
        }
        return DS_OK;
    }
    return ds_err_set(e, DS_EUNSUPPORTED, "%s: decoder '%s' is not supported (only ByteLevel)", t->what,
                      type ? type : "?");
}

/* Decoded bytes of a token string: ByteLevel chars -> bytes if every char
 * is one, else the string's own UTF-8 (HF ByteLevel decoder). */
static int add_decoded(ds_tokenizer *t, int32_t id, const char *s, size_t n, ds_err *e) {
    char small[256];
    char *buf = n <= sizeof small ? small : malloc(n);
    if (!buf) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", t->what);
    size_t m = 0;
    bool all = true;
    for (size_t i = 0; i < n && all;) {
        int l;
        int32_t cp = utf8_decode((const unsigned char *)s + i, n - i, &l);
        int b = cp < 0 ? -1 : bytelevel_byte((uint32_t)cp);
        if (b < 0) all = false;
        else buf[m++] = (char)b;
        i += (size_t)l;
    }
    if (!all) memcpy(buf, s, n); /* s points into t->strs, which tok_pool_add may move */
    int64_t off = tok_pool_add(&t->strs, buf, all ? m : n);
    if (buf != small) free(buf);
    if (off < 0) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", t->what);
    t->dec_off[id] = (uint32_t)off;
    t->dec_len[id] = (uint32_t)(all ? m : n);
    return DS_OK;
}

static int build_id_tables(ds_tokenizer *t, ds_err *e) {
    int64_t n_ids = t->n_ids;
    for (int32_t k = 0; k < t->n_added; k++)
        if (t->added[k].id >= n_ids) n_ids = (int64_t)t->added[k].id + 1;
    if (n_ids > t->n_ids) {
        uint32_t *mo = realloc(t->model_off, (size_t)n_ids * 4), *ml = mo ? realloc(t->model_len, (size_t)n_ids * 4) : NULL;
        if (mo) t->model_off = mo;
        if (ml) t->model_len = ml;
        uint8_t *f = realloc(t->flags, (size_t)n_ids);
        if (f) t->flags = f;
        if (!mo || !ml || !f) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", t->what);
        memset(t->model_off + t->n_ids, 0, (size_t)(n_ids - t->n_ids) * 4);
        memset(t->model_len + t->n_ids, 0, (size_t)(n_ids - t->n_ids) * 4);
        memset(t->flags + t->n_ids, 0, (size_t)(n_ids - t->n_ids));
        t->n_ids = n_ids;
    }
    t->tok_off = malloc((size_t)n_ids * 4);
    t->tok_len = malloc((size_t)n_ids * 4);
    t->dec_off = calloc((size_t)n_ids, 4);
    t->dec_len = calloc((size_t)n_ids, 4);
    if (!t->tok_off || !t->tok_len || !t->dec_off || !t->dec_len)
        return ds_err_set(e, DS_ENOMEM, "%s: out of memory", t->what);
    memcpy(t->tok_off, t->model_off, (size_t)n_ids * 4);
    memcpy(t->tok_len, t->model_len, (size_t)n_ids * 4);
    for (int32_t k = 0; k < t->n_added; k++) {
        const added_tok *a = &t->added[k];
        t->tok_off[a->id] = a->off;
        t->tok_len[a->id] = a->len;
        t->flags[a->id] |= TOK_ID_USED | TOK_ID_ADDED | (a->special ? TOK_ID_SPECIAL : 0);
    }
    for (int64_t id = 0; id < n_ids; id++) {
        if (!(t->flags[id] & TOK_ID_USED)) continue;
        int rc = add_decoded(t, (int32_t)id, t->strs.p + t->tok_off[id], t->tok_len[id], e);
        if (rc) return rc;
    }
    /* tries: every id's current added token, normalized or not */
    memset(t->trie_raw.root, 0xff, sizeof t->trie_raw.root);
    memset(t->trie_norm.root, 0xff, sizeof t->trie_norm.root);
    for (int32_t k = 0; k < t->n_added; k++) {
        const added_tok *a = &t->added[k];
        int rc = trie_add(a->normalized ? &t->trie_norm : &t->trie_raw, t->strs.p + a->off, a->len, k, e);
        if (rc) return rc;
        t->any_single_word |= a->single_word;
    }
    if (t->any_single_word) {
        char label[300];
        snprintf(label, sizeof label, "%s: single_word check", t->what);
        int rc = regex_compile(&t->re_word, "\\w", 2, false, label, e);
        if (rc) return rc;
    }
    return DS_OK;
}

static const char *cfg_token(const json_t *cfg, const char *key) {
    const json_t *v = json_object_get(cfg, key);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int load_config(ds_tokenizer *t, const char *buf, size_t len, ds_err *e) {
    t->bos_id = t->eos_id = -1;
    json_t *cfg = NULL;
    if (buf) {
        char what[300];
        snprintf(what, sizeof what, "%s (tokenizer_config.json)", t->what);
        int rc = ds_json_load_buf(what, buf, len, &cfg, e);
        if (rc) return rc;
        if (!json_is_object(cfg)) {
            json_decref(cfg);
            return ds_err_set(e, DS_EFORMAT, "%s: not a JSON object", what);
        }
        const char *bos = cfg_token(cfg, "bos_token"), *eos = cfg_token(cfg, "eos_token");
        if (bos) t->bos_id = tok_token_to_id(t, bos, strlen(bos));
        if (eos) t->eos_id = tok_token_to_id(t, eos, strlen(eos));
        t->add_bos = json_is_true(json_object_get(cfg, "add_bos_token"));
        t->add_eos = json_is_true(json_object_get(cfg, "add_eos_token"));
        const json_t *ct = json_object_get(cfg, "chat_template");
        const char *tmpl = json_string_value(ct);
        if (json_is_array(ct)) { /* [{name, template}, ...]: "default" or the first */
            for (size_t i = 0; i < json_array_size(ct); i++) {
                const json_t *it = json_array_get(ct, i);
                const char *name = json_string_value(json_object_get(it, "name"));
                if (!tmpl || (name && !strcmp(name, "default")))
                    tmpl = json_string_value(json_object_get(it, "template"));
            }
        }
        if (tmpl && !(t->chat_template = strdup(tmpl))) {
            json_decref(cfg);
            return ds_err_set(e, DS_ENOMEM, "%s: out of memory", t->what);
        }
        json_decref(cfg);
    }
    tok_default_bos_eos(t);
    return DS_OK;
}

int tok_build(ds_tokenizer *t, const json_t *root, ds_err *e) {
    const char *what = t->what;
    if (!json_is_object(root)) return ds_err_set(e, DS_EFORMAT, "%s: not a JSON object", what);
    int rc = check_normalizer(t, json_object_get(root, "normalizer"), 0, e);
    if (!rc) rc = bpe_load(t, json_object_get(root, "model"), e);
    if (!rc) rc = load_added(t, json_object_get(root, "added_tokens"), e);
    if (!rc) rc = pretok_load(t, json_object_get(root, "pre_tokenizer"), e);
    if (!rc) rc = check_decoder(t, json_object_get(root, "decoder"), 0, e);
    if (!rc) rc = build_id_tables(t, e);
    if (!rc) {
        tok_ids pre = {0}, suf = {0};
        rc = load_post(t, json_object_get(root, "post_processor"), &pre, &suf, 0, e);
        if (!rc && pre.n + suf.n > 0) {
            t->pp_ids = malloc((size_t)(pre.n + suf.n) * sizeof *t->pp_ids);
            if (!t->pp_ids) rc = ds_err_set(e, DS_ENOMEM, "%s: out of memory", what);
            else {
                if (pre.n) memcpy(t->pp_ids, pre.v, (size_t)pre.n * 4);
                if (suf.n) memcpy(t->pp_ids + pre.n, suf.v, (size_t)suf.n * 4);
                t->n_pp_prefix = (int)pre.n;
                t->n_pp_suffix = (int)suf.n;
            }
        }
        tok_ids_free(&pre);
        tok_ids_free(&suf);
    }
    return rc;
}

ds_tokenizer *tok_alloc(const char *what) {
    ds_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    snprintf(t->what, sizeof t->what, "%s", what);
    tok_cache_init(&t->cache);
    t->unk_id = -1;
    t->bos_id = t->eos_id = -1;
    return t;
}

void tok_default_bos_eos(ds_tokenizer *t) {
    static const char *bos_names[] = { "<｜begin▁of▁sentence｜>", "<|begin_of_text|>", "<s>", "<|startoftext|>" };
    static const char *eos_names[] = { "<｜end▁of▁sentence｜>", "<|end_of_text|>", "</s>", "<|endoftext|>" };
    for (size_t i = 0; i < 4 && t->bos_id < 0; i++) t->bos_id = tok_added_token_id(t, bos_names[i], strlen(bos_names[i]));
    for (size_t i = 0; i < 4 && t->eos_id < 0; i++) t->eos_id = tok_added_token_id(t, eos_names[i], strlen(eos_names[i]));
}

int tok_load_buf(ds_tokenizer **out, const char *what, const char *json, size_t len, const char *config_json,
                 size_t config_len, ds_err *e) {
    *out = NULL;
    ds_tokenizer *t = tok_alloc(what);
    if (!t) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", what);
    json_t *root = NULL;
    int rc = ds_json_load_buf(what, json, len, &root, e);
    if (!rc) rc = tok_build(t, root, e);
    if (!rc) rc = load_config(t, config_json, config_len, e);
    json_decref(root);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return DS_OK;
}

int tok_load(ds_tokenizer **out, const char *path, ds_err *e) {
    *out = NULL;
    if (!path || !*path) return ds_err_set(e, DS_EINVAL, "tokenizer: no path given");
    struct stat sb;
    if (stat(path, &sb) != 0) return ds_err_set(e, DS_ENOTFOUND, "tokenizer: '%s' does not exist", path);
    size_t plen = strlen(path);
    char *json_path = malloc(plen + 32), *cfg_path = malloc(plen + 32);
    if (!json_path || !cfg_path) {
        free(json_path);
        free(cfg_path);
        return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory");
    }
    if (S_ISDIR(sb.st_mode)) {
        snprintf(json_path, plen + 32, "%s/tokenizer.json", path);
        snprintf(cfg_path, plen + 32, "%s/tokenizer_config.json", path);
    } else {
        snprintf(json_path, plen + 32, "%s", path);
        const char *slash = strrchr(path, '/');
        if (slash) snprintf(cfg_path, plen + 32, "%.*s/tokenizer_config.json", (int)(slash - path), path);
        else snprintf(cfg_path, plen + 32, "tokenizer_config.json");
    }
    char *buf = NULL, *cbuf = NULL;
    size_t len = 0, clen = 0;
    int rc;
    if (stat(json_path, &sb) != 0) rc = ds_err_set(e, DS_ENOTFOUND, "tokenizer: '%s' not found", json_path);
    else rc = ds_read_file(json_path, DS_JSON_MAX_BYTES, &buf, &len, e);
    if (!rc && stat(cfg_path, &sb) == 0 && S_ISREG(sb.st_mode))
        rc = ds_read_file(cfg_path, DS_JSON_MAX_BYTES, &cbuf, &clen, e);
    if (!rc) rc = tok_load_buf(out, json_path, buf, len, cbuf, clen, e);
    free(buf);
    free(cbuf);
    free(json_path);
    free(cfg_path);
    return rc;
}

void tok_free(ds_tokenizer *t) {
    if (!t) return;
    pretok_free(t);
    regex_free(t->re_word);
    free(t->strs.p);
    free(t->tok_off);
    free(t->tok_len);
    free(t->model_off);
    free(t->model_len);
    free(t->dec_off);
    free(t->dec_len);
    free(t->flags);
    free(t->vhash);
    free(t->mhash);
    free(t->added);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    free(t->pp_ids);
    free(t->chat_template);
    tok_cache_free(&t->cache);
    free(t);
}

/* ------------------------------------------------------------- encoding */

typedef struct seg { int32_t id; size_t a, b; } seg; /* id -1: text */
typedef struct seg_vec { seg *v; size_t n, cap; } seg_vec;

static int seg_push(seg_vec *sv, int32_t id, size_t a, size_t b, ds_err *e) {
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? 2 * sv->cap : 16;
        seg *p = realloc(sv->v, cap * sizeof *p);
        if (!p) return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory");
        sv->v = p;
        sv->cap = cap;
    }
    sv->v[sv->n++] = (seg){ id, a, b };
    return DS_OK;
}

/* HF AddedVocabulary::find_matches over s[off..off+n), appending to out with
 * offsets relative to the whole text. */
static int find_added(tok_ctx *cx, const tok_trie *tr, const char *text, size_t off, size_t n, seg_vec *out) {
    const ds_tokenizer *t = cx->t;
    const char *s = text + off;
    size_t start_offset = 0;
    int rc;
    for (size_t i = 0; i < n;) {
        size_t mlen = 0;
        int32_t k = tr->root[(unsigned char)s[i]] >= 0 ? trie_longest(tr, s + i, n - i, &mlen) : -1;
        if (k < 0) { i++; continue; }
        size_t start = i, stop = i + mlen;
        i = stop; /* the search resumes after this match even if it is discarded */
        const added_tok *a = &t->added[k];
        if (a->single_word) {
            bool start_space = start == 0 || !is_word_at(t, &cx->rx, s + prev_char(s, start), start - prev_char(s, start));
            bool stop_space = stop == n ||
                !is_word_at(t, &cx->rx, s + stop, (size_t)utf8_seq_len((const unsigned char *)s + stop, n - stop));
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t p = prev_char(s, ns);
                int l;
                int32_t cp = utf8_decode((const unsigned char *)s + p, n - p, &l);
                if ((size_t)l != ns - p || !is_space_cp(cp)) break;
                ns = p;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                int l;
                int32_t cp = utf8_decode((const unsigned char *)s + stop, n - stop, &l);
                if (!is_space_cp(cp)) break;
                stop += (size_t)l;
            }
        }
        if (start_offset < start && (rc = seg_push(out, -1, off + start_offset, off + start, cx->e))) return rc;
        if ((rc = seg_push(out, a->id, off + start, off + stop, cx->e))) return rc;
        start_offset = stop;
    }
    if (start_offset != n) return seg_push(out, -1, off + start_offset, off + n, cx->e);
    return DS_OK;
}

void tok_ctx_free(tok_ctx *cx) {
    regex_scratch_free(&cx->rx);
    for (int i = 0; i <= PT_MAX_STEPS; i++) free(cx->lvl[i].v);
    free(cx->tmp);
    free(cx->syms);
    free(cx->heap);
    free(cx->cbuf);
}

int tok_encode_append(const ds_tokenizer *t, const char *text, size_t len, unsigned flags, tok_ids *ids,
                      ds_err *e) {
    if (!t || !ids || (!text && len)) return ds_err_set(e, DS_EINVAL, "tok_encode: NULL argument");
    int64_t n0 = ids->n;
    tok_ctx cx = { .t = t, .out = ids, .e = e };
    seg_vec s1 = {0}, s2 = {0};
    int rc = DS_OK;
    if (flags & TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_pp_prefix && !rc; i++) rc = tok_ids_push(ids, t->pp_ids[i], e);
    if (!rc && (flags & TOK_PARSE_SPECIAL) && t->n_added > 0) {
        /* 1. non-normalized added tokens in the raw text; 2. normalized ones in what is left */
        rc = find_added(&cx, &t->trie_raw, text, 0, len, &s1);
        for (size_t i = 0; i < s1.n && !rc; i++) {
            if (s1.v[i].id >= 0) rc = seg_push(&s2, s1.v[i].id, s1.v[i].a, s1.v[i].b, e);
            else if (s1.v[i].b > s1.v[i].a) rc = find_added(&cx, &t->trie_norm, text, s1.v[i].a, s1.v[i].b - s1.v[i].a, &s2);
        }
        for (size_t i = 0; i < s2.n && !rc; i++) {
            if (s2.v[i].id >= 0) rc = tok_ids_push(ids, s2.v[i].id, e);
            else rc = pretok_encode(&cx, text + s2.v[i].a, s2.v[i].b - s2.v[i].a);
        }
    } else if (!rc) {
        rc = pretok_encode(&cx, text, len);
    }
    if (flags & TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_pp_suffix && !rc; i++)
            rc = tok_ids_push(ids, t->pp_ids[t->n_pp_prefix + i], e);
    free(s1.v);
    free(s2.v);
    tok_ctx_free(&cx);
    if (rc) ids->n = n0;
    return rc;
}

int tok_encode(const ds_tokenizer *t, const char *text, size_t len, bool parse_special, int32_t **ids, int64_t *n,
               ds_err *e) {
    tok_ids v = {0};
    *ids = NULL;
    *n = 0;
    int rc = tok_encode_append(t, text, len, parse_special ? TOK_PARSE_SPECIAL : 0, &v, e);
    if (rc) {
        tok_ids_free(&v);
        return rc;
    }
    if (!v.v) { /* empty result: still hand back a freeable pointer */
        v.v = malloc(sizeof *v.v);
        if (!v.v) return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory");
    }
    *ids = v.v;
    *n = v.n;
    return DS_OK;
}

/* ------------------------------------------------------------- decoding */

static bool id_ok(const ds_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & TOK_ID_USED);
}

int tok_decode(const ds_tokenizer *t, const int32_t *ids, int64_t n, bool skip_special, char **out, size_t *len,
               ds_err *e) {
    *out = NULL;
    *len = 0;
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!id_ok(t, ids[i]))
            return ds_err_set(e, DS_ERANGE, "tokenizer: token id %d (position %lld) is out of range [0, %lld) or "
                              "unused", ids[i], (long long)i, (long long)t->n_ids);
        if (!(skip_special && (t->flags[ids[i]] & TOK_ID_SPECIAL))) total += t->dec_len[ids[i]];
    }
    char *buf = malloc(total + 1);
    if (!buf) return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory decoding %lld ids", (long long)n);
    size_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (skip_special && (t->flags[ids[i]] & TOK_ID_SPECIAL)) continue;
        memcpy(buf + m, t->strs.p + t->dec_off[ids[i]], t->dec_len[ids[i]]);
        m += t->dec_len[ids[i]];
    }
    buf[m] = 0;
    *out = buf;
    *len = m;
    return DS_OK;
}

const char *tok_id_to_piece(const ds_tokenizer *t, int32_t id, size_t *len) {
    if (!id_ok(t, id)) { *len = 0; return NULL; }
    *len = t->dec_len[id];
    return t->strs.p + t->dec_off[id];
}

const char *tok_id_to_token(const ds_tokenizer *t, int32_t id, size_t *len) {
    if (!id_ok(t, id)) { *len = 0; return NULL; }
    *len = t->tok_len[id];
    return t->strs.p + t->tok_off[id];
}

int32_t tok_added_token_id(const ds_tokenizer *t, const char *s, size_t len) {
    for (int32_t k = 0; k < t->n_added; k++)
        if (t->added[k].len == len && !memcmp(t->strs.p + t->added[k].off, s, len)) return t->added[k].id;
    return -1;
}

int32_t tok_token_to_id(const ds_tokenizer *t, const char *s, size_t len) {
    int32_t id = tok_added_token_id(t, s, len);
    return id >= 0 ? id : bpe_vocab_get(t, s, len);
}

int tok_utf8_sanitize(const char *s, size_t n, char **out, size_t *out_len, ds_err *e) {
    size_t bad = 0;
    for (size_t i = 0; i < n;) {
        int l = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (l == 1 && (unsigned char)s[i] >= 0x80) bad++;
        i += (size_t)l;
    }
    char *buf = malloc(n + 2 * bad + 1);
    if (!buf) return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        const unsigned char *p = (const unsigned char *)s + i;
        int l = utf8_seq_len(p, n - i);
        if (l > 1 || p[0] < 0x80) {
            memcpy(buf + m, p, (size_t)l);
            m += (size_t)l;
            i += (size_t)l;
            continue;
        }
        /* maximal subpart: a lead byte followed by the valid continuations it allows */
        size_t sub = 1;
        unsigned c = p[0];
        int need = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
        for (int k = 1; k <= need && i + (size_t)k < n; k++) {
            unsigned lo = 0x80, hi = 0xBF;
            if (k == 1) {
                if (c == 0xE0) lo = 0xA0;
                if (c == 0xED) hi = 0x9F;
                if (c == 0xF0) lo = 0x90;
                if (c == 0xF4) hi = 0x8F;
            }
            if (p[k] < lo || p[k] > hi) break;
            sub++;
        }
        memcpy(buf + m, "\xEF\xBF\xBD", 3);
        m += 3;
        i += sub;
    }
    buf[m] = 0;
    *out = buf;
    *out_len = m;
    return DS_OK;
}

/* ------------------------------------------------------------- metadata */

int64_t tok_vocab_size(const ds_tokenizer *t) { return t->n_ids; }
bool tok_is_special(const ds_tokenizer *t, int32_t id) { return id_ok(t, id) && (t->flags[id] & TOK_ID_SPECIAL); }
bool tok_is_added(const ds_tokenizer *t, int32_t id) { return id_ok(t, id) && (t->flags[id] & TOK_ID_ADDED); }
int32_t tok_bos_id(const ds_tokenizer *t) { return t->bos_id; }
int32_t tok_eos_id(const ds_tokenizer *t) { return t->eos_id; }
bool tok_add_bos(const ds_tokenizer *t) { return t->add_bos; }
bool tok_add_eos(const ds_tokenizer *t) { return t->add_eos; }
const char *tok_chat_template(const ds_tokenizer *t) { return t->chat_template; }
