/*
 * tok_gguf.c - a tokenizer from GGUF metadata (llama.cpp's tokenizer.ggml.*
 * keys, as convert_hf_to_gguf.py and our convert write them), and the
 * model -> tokenizer precedence shared by the commands and the server.
 *
 * The metadata is turned into the tokenizer.json document it came from and
 * built by the same code (tok_build), so encoding is the HF one:
 *   tokens[i], token_type[i]   NORMAL/UNKNOWN/BYTE: model.vocab[tokens[i]] = i;
 *                              CONTROL: also an added token, special;
 *                              USER_DEFINED: also an added token, not special;
 *                              UNUSED (llama.cpp's [PADn] fillers): no token
 *   merges                     model.merges ("a b")
 *   pre                        the Split regexes of that tokenizer.json
 *                              (Isolated) + ByteLevel without prefix space
 *   bos/eos_token_id, add_bos_token, add_eos_token, tokenizer.chat_template
 * Lost in a GGUF: HF's special flag of added tokens that llama.cpp's
 * converter marks CONTROL because they look special (V3's <｜User｜> etc.):
 * decode with skip_special drops them where HF keeps them. Encoding is
 * unaffected (added tokens are matched whether special or not).
 */
#include "tok_internal.h"
#include "../io/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* The Split regexes of each tokenizer.ggml.pre we know (the pre_tokenizer
 * of the DeepSeek tokenizer.json files; llama.cpp's llama-vocab.cpp uses
 * the same expressions). */
static const char *const k_pre_v3[] = {
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    NULL,
};
/* Written with \u escapes: the class holds compatibility characters (U+2126
 * OHM SIGN, U+212A KELVIN SIGN) that an editor may silently normalize. */
static const char *const k_pre_llm[] = {
    "[\r\n]",
    "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373"
    "\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F"
    "\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77"
    "\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D"
    "\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4"
    "\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139"
    "\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D"
    "\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A"
    "\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2"
    "\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+",
    "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
    "\\s+$",
    "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
    "\\p{N}+",
    NULL,
};
static const char *const k_pre_coder[] = {
    "[\r\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}",
    NULL,
};

/* "joyai-llm": what llama.cpp's converter (2026 trees, run with
 * transformers 5) writes for the real DeepSeek-V3 tokenizer.json: it names
 * the pre-tokenizer by hashing the ids of a check text, and those ids now
 * match the JoyAI-LLM entry instead of the deepseek-v3 one (recorded with an
 * older transformers); llama.cpp runs both with the V3 regexes above. */
static const struct { const char *name; const char *const *re; } k_pres[] = {
    { "deepseek-v3", k_pre_v3 },
    { "joyai-llm", k_pre_v3 },
    { "deepseek-llm", k_pre_llm },
    { "deepseek-coder", k_pre_coder },
};

static json_t *pre_tokenizer_json(const char *const *re) {
    json_t *list = json_array();
    for (int i = 0; list && re[i]; i++)
        json_array_append_new(list, json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", re[i],
                                              "behavior", "Isolated", "invert", 0));
    if (list)
        json_array_append_new(list, json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                              "trim_offsets", 1, "use_regex", 0));
    json_t *pre = json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", list);
    return pre;
}

const char *tok_gguf_pre_name(const json_t *pre) {
    /* the Split regexes in order, then exactly one ByteLevel without prefix space or regex */
    const json_t *list = json_object_get(pre, "pretokenizers");
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type || strcmp(type, "Sequence") || !json_is_array(list) || json_array_size(list) < 2) return NULL;
    size_t n = json_array_size(list);
    const json_t *bl = json_array_get(list, n - 1);
    if (!json_is_string(json_object_get(bl, "type")) || strcmp(json_string_value(json_object_get(bl, "type")), "ByteLevel") ||
        json_is_true(json_object_get(bl, "add_prefix_space")) || json_is_true(json_object_get(bl, "use_regex")))
        return NULL;
    for (size_t k = 0; k < sizeof k_pres / sizeof k_pres[0]; k++) {
        const char *const *re = k_pres[k].re;
        size_t i = 0;
        for (; i + 1 < n && re[i]; i++) {
            const json_t *st = json_array_get(list, i);
            const char *t = json_string_value(json_object_get(st, "type"));
            const char *r = json_string_value(json_object_get(json_object_get(st, "pattern"), "Regex"));
            const char *b = json_string_value(json_object_get(st, "behavior"));
            if (!t || strcmp(t, "Split") || !r || strcmp(r, re[i]) || !b || strcmp(b, "Isolated") ||
                json_is_true(json_object_get(st, "invert")))
                break;
        }
        if (i + 1 == n && !re[i]) return k_pres[k].name;
    }
    return NULL;
}

/* A string-array key, or an error naming it. */
static int str_array(const ds_gguf *g, const char *key, bool required, const ds_gguf_kv **out, ds_err *e) {
    const ds_gguf_kv *kv = ds_gguf_find_kv(g, key);
    *out = NULL;
    if (!kv) return required ? ds_err_set(e, DS_ENOTFOUND, "%s: metadata has no '%s'", g->what, key) : DS_OK;
    if (kv->type != DS_GGUF_ARRAY || kv->arr_type != DS_GGUF_STRING)
        return ds_err_set(e, DS_EFORMAT, "%s: metadata '%s' is not an array of strings", g->what, key);
    *out = kv;
    return DS_OK;
}

static int oom(const ds_gguf *g, ds_err *e) { return ds_err_set(e, DS_ENOMEM, "%s: out of memory for the tokenizer", g->what); }

/* The tokenizer.json document of the metadata; *root owned by the caller. */
static int build_json(const ds_gguf *g, const char *const *pre_re, json_t **root, ds_err *e) {
    const ds_gguf_kv *toks, *merges;
    int rc;
    if ((rc = str_array(g, "tokenizer.ggml.tokens", true, &toks, e))) return rc;
    if ((rc = str_array(g, "tokenizer.ggml.merges", true, &merges, e))) return rc;
    if (toks->n == 0 || toks->n > (1u << 22))
        return ds_err_set(e, DS_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries (1..%u allowed)", g->what,
                          (unsigned long long)toks->n, 1u << 22);
    const ds_gguf_kv *types = ds_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (types) {
        bool int_arr = types->type == DS_GGUF_ARRAY && types->arr_type != DS_GGUF_STRING &&
                       types->arr_type != DS_GGUF_FLOAT32 && types->arr_type != DS_GGUF_FLOAT64 &&
                       types->arr_type != DS_GGUF_BOOL;
        if (!int_arr) return ds_err_set(e, DS_EFORMAT, "%s: tokenizer.ggml.token_type is not an integer array", g->what);
        if (types->n != toks->n)
            return ds_err_set(e, DS_EFORMAT, "%s: tokenizer.ggml.token_type has %llu entries, tokenizer.ggml.tokens %llu",
                              g->what, (unsigned long long)types->n, (unsigned long long)toks->n);
    }
    json_t *vocab = json_object(), *mlist = json_array(), *added = json_array();
    *root = json_pack("{s:o, s:o, s:n, s:{s:s}, s:n}", "model",
                      json_pack("{s:s, s:o, s:o}", "type", "BPE", "vocab", vocab, "merges", mlist), "added_tokens", added,
                      "normalizer", "decoder", "type", "ByteLevel", "post_processor");
    json_t *pre = pre_tokenizer_json(pre_re);
    if (!*root || !pre) { json_decref(pre); return oom(g, e); }
    json_object_set_new(*root, "pre_tokenizer", pre);
    for (uint64_t i = 0; i < toks->n; i++) {
        const char *s;
        uint64_t len;
        ds_gguf_arr_str(g, toks, i, &s, &len);
        int64_t ty = types ? (int64_t)ds_gguf_arr_num(types, i) : TT_NORMAL;
        if (ty == TT_UNUSED) continue;
        if (ty < TT_NORMAL || ty > TT_BYTE)
            return ds_err_set(e, DS_EFORMAT, "%s: tokenizer.ggml.token_type[%llu] = %lld is not a token type (1..6)",
                              g->what, (unsigned long long)i, (long long)ty);
        if (len == 0 || memchr(s, 0, (size_t)len))
            return ds_err_set(e, DS_EFORMAT, "%s: tokenizer.ggml.tokens[%llu] is empty or contains a NUL byte", g->what,
                              (unsigned long long)i);
        /* the first id of a repeated string keeps it, as a dict built in id order would not:
         * a repeated string is malformed for a byte-level BPE vocab, so say so */
        if (json_object_getn(vocab, s, (size_t)len))
            return ds_err_set(e, DS_EFORMAT, "%s: tokenizer.ggml.tokens[%llu] = '%.*s' appears twice", g->what,
                              (unsigned long long)i, (int)DS_MIN(len, 60), s);
        if (json_object_setn_new_nocheck(vocab, s, (size_t)len, json_integer((json_int_t)i))) return oom(g, e);
        if (ty == TT_CONTROL || ty == TT_USER_DEFINED) {
            json_t *a = json_pack("{s:I, s:s%, s:b, s:b}", "id", (json_int_t)i, "content", s, (size_t)len, "special",
                                  ty == TT_CONTROL, "normalized", ty != TT_CONTROL);
            if (!a) /* content not valid UTF-8: jansson refuses it; keep the bytes */
                a = json_pack("{s:I, s:o, s:b, s:b}", "id", (json_int_t)i, "content",
                              json_stringn_nocheck(s, (size_t)len), "special", ty == TT_CONTROL, "normalized",
                              ty != TT_CONTROL);
            if (!a || json_array_append_new(added, a)) return oom(g, e);
        }
    }
    for (uint64_t i = 0; i < merges->n; i++) {
        const char *s;
        uint64_t len;
        ds_gguf_arr_str(g, merges, i, &s, &len);
        if (json_array_append_new(mlist, json_stringn_nocheck(s, (size_t)len))) return oom(g, e);
    }
    return DS_OK;
}

int tok_load_gguf(ds_tokenizer **out, const ds_gguf *g, ds_err *e) {
    *out = NULL;
    char model[64] = "", pre[64] = "";
    int rc = ds_gguf_get_str(g, "tokenizer.ggml.model", false, model, sizeof model, e);
    if (rc) return rc;
    if (!model[0])
        return ds_err_set(e, DS_ENOTFOUND, "%s: the GGUF metadata has no tokenizer (no tokenizer.ggml.model)", g->what);
    if (!strcmp(model, "none"))
        return ds_err_set(e, DS_ENOTFOUND, "%s: the GGUF metadata has no tokenizer (tokenizer.ggml.model = none)", g->what);
    if (strcmp(model, "gpt2"))
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: tokenizer.ggml.model '%s' is not supported (only gpt2: byte-level BPE)",
                          g->what, model);
    if ((rc = ds_gguf_get_str(g, "tokenizer.ggml.pre", true, pre, sizeof pre, e))) return rc;
    const char *const *re = NULL;
    for (size_t i = 0; i < sizeof k_pres / sizeof k_pres[0]; i++)
        if (!strcmp(pre, k_pres[i].name)) re = k_pres[i].re;
    if (!re)
        return ds_err_set(e, DS_EUNSUPPORTED,
                          "%s: tokenizer.ggml.pre '%s' is not supported (deepseek-v3, joyai-llm, deepseek-llm, deepseek-coder)", g->what,
                          pre);
    char what[300];
    snprintf(what, sizeof what, "%s (GGUF tokenizer metadata)", g->what);
    ds_tokenizer *t = tok_alloc(what);
    if (!t) return oom(g, e);
    json_t *root = NULL;
    rc = build_json(g, re, &root, e);
    if (!rc) rc = tok_build(t, root, e);
    json_decref(root);
    int64_t bos = -1, eos = -1;
    if (!rc) rc = ds_gguf_get_int(g, "tokenizer.ggml.bos_token_id", false, INT64_MIN, INT64_MAX, &bos, e);
    if (!rc) rc = ds_gguf_get_int(g, "tokenizer.ggml.eos_token_id", false, INT64_MIN, INT64_MAX, &eos, e);
    if (!rc) rc = ds_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", false, &t->add_bos, e);
    if (!rc) rc = ds_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", false, &t->add_eos, e);
    const ds_gguf_kv *ct = ds_gguf_find_kv(g, "tokenizer.chat_template");
    if (!rc && ct) {
        if (ct->type != DS_GGUF_STRING) rc = ds_err_set(e, DS_EFORMAT, "%s: tokenizer.chat_template is not a string", g->what);
        else if (!(t->chat_template = malloc((size_t)ct->str_len + 1))) rc = oom(g, e);
        else {
            memcpy(t->chat_template, ct->str, (size_t)ct->str_len);
            t->chat_template[ct->str_len] = 0;
        }
    }
    if (rc) {
        tok_free(t);
        return rc;
    }
    /* an id that is no token (an unused [PADn], out of range) is unknown: the well-known names decide */
    t->bos_id = bos >= 0 && bos < t->n_ids && (t->flags[bos] & TOK_ID_USED) ? (int32_t)bos : -1;
    t->eos_id = eos >= 0 && eos < t->n_ids && (t->flags[eos] & TOK_ID_USED) ? (int32_t)eos : -1;
    tok_default_bos_eos(t);
    *out = t;
    return DS_OK;
}

/* ------------------------------------------------------------ precedence */

static bool is_gguf_name(const char *p) {
    size_t n = strlen(p);
    return n > 5 && !strcmp(p + n - 5, ".gguf");
}

static int load_any(ds_tokenizer **out, const char *path, ds_err *e) {
    struct stat sb;
    if (is_gguf_name(path) && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        ds_gguf g;
        char first[4096];
        /* any part of a split file: the metadata is in the first */
        int rc = ds_gguf_split_first(path, first, sizeof first, e);
        if (!rc) rc = ds_gguf_open(&g, first, e);
        if (rc) return rc;
        rc = tok_load_gguf(out, &g, e);
        ds_gguf_close(&g);
        return rc;
    }
    return tok_load(out, path, e);
}

int tok_load_for_model(ds_tokenizer **out, const char *model, const char *explicit_path, ds_err *e) {
    *out = NULL;
    if (explicit_path) {
        int rc = load_any(out, explicit_path, e);
        if (rc) {
            ds_err in = *e;
            ds_err_clear(e);
            return ds_err_set(e, in.code, "--tokenizer %s: %s", explicit_path, in.msg);
        }
        return DS_OK;
    }
    if (!model || !*model) return ds_err_set(e, DS_EINVAL, "tokenizer: no model given");
    struct stat sb;
    if (!is_gguf_name(model) || (stat(model, &sb) == 0 && S_ISDIR(sb.st_mode))) return tok_load(out, model, e);
    /* a .gguf: tokenizer.json beside it, then its metadata */
    size_t n = strlen(model);
    char *beside = malloc(n + 32);
    if (!beside) return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory");
    const char *slash = strrchr(model, '/');
    if (slash) snprintf(beside, n + 32, "%.*s/tokenizer.json", (int)(slash - model), model);
    else snprintf(beside, n + 32, "tokenizer.json");
    ds_err e1 = { 0 }, e2 = { 0 };
    int rc;
    if (stat(beside, &sb) == 0) {
        rc = tok_load(out, beside, &e1);
        if (!rc) { free(beside); return DS_OK; }
        /* a broken tokenizer.json is an error, not a reason to fall back silently */
        rc = ds_err_set(e, e1.code, "%s (the tokenizer.json beside %s; --tokenizer PATH picks another)", e1.msg, model);
        free(beside);
        return rc;
    }
    rc = load_any(out, model, &e2);
    if (!rc) { free(beside); return DS_OK; }
    rc = ds_err_set(e, e2.code,
                    "no tokenizer for %s: tried --tokenizer (not given), %s (not found), the GGUF metadata (%s); "
                    "give --tokenizer PATH (a tokenizer.json or its folder)", model, beside, e2.msg);
    free(beside);
    return rc;
}
