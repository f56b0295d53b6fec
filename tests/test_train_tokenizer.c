/*
 * test_train_tokenizer.c - BPE tokenizer training (src/tokenizer/bpe_train.h):
 * the committed fixture (tests/fixtures/train_tokenizer, made by
 * tools/gen_train_tokenizer_fixtures.py) is re-trained byte for byte, its
 * merges equal HF BpeTrainer's and our encoder gives HF's ids with it;
 * vocab size, special-token ids and flags, round trips (also of invalid
 * UTF-8), determinism, chunked pre-tokenization = unchunked, per-line mode,
 * min_frequency, bad input. Reads ../shared/data/tinyshakespeare.txt.
 */
#include "test.h"

#include "core/mmap_file.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define EXTRA "<|extra|>"

static char *read_all(const char *path, size_t *len) {
    ds_err e = {0};
    char *buf = NULL;
    if (ds_read_file(path, (size_t)1 << 28, &buf, len, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return NULL;
    }
    return buf;
}

static char *shakespeare(size_t *len) { return read_all(shared_path("data/tinyshakespeare.txt"), len); }

/* Options as the CLI builds them: DeepSeek's markers (+ extra), BOS/EOS, template. */
typedef struct topts {
    bpe_train_opts o;
    bpe_special sp[32];
} topts;

static void cli_opts(topts *t, int64_t vocab, const char *extra) {
    memset(t, 0, sizeof *t);
    int n;
    const bpe_special *def = bpe_default_specials(&n);
    for (int i = 0; i < n; i++) t->sp[i] = def[i];
    if (extra) t->sp[n++] = (bpe_special){ extra, true, false };
    t->o.vocab_size = vocab;
    t->o.pretok = BPE_PRETOK_DEEPSEEK_V3;
    t->o.specials = t->sp;
    t->o.n_specials = n;
    t->o.bos_token = def[0].content;
    t->o.eos_token = def[1].content;
    t->o.add_bos = true;
    t->o.chat_template = true;
}

typedef struct doc { const char *s; size_t n; } doc;

/* Trains on docs; returns tokenizer.json (and config if cfg) or NULL. */
static char *train(const bpe_train_opts *o, const doc *docs, int n_docs, size_t *len, char **cfg, size_t *cfg_len,
                   bpe_train_stats *st) {
    bpe_trainer *tr;
    ds_err e = {0};
    char *json = NULL;
    if (bpe_trainer_new(&tr, o, &e)) { CHECK_MSG(0, "new: %s", e.msg); return NULL; }
    for (int i = 0; i < n_docs; i++)
        if (bpe_trainer_feed(tr, docs[i].s, docs[i].n, &e)) { CHECK_MSG(0, "feed: %s", e.msg); goto out; }
    if (bpe_trainer_train(tr, &e)) { CHECK_MSG(0, "train: %s", e.msg); goto out; }
    if (bpe_trainer_tokenizer_json(tr, &json, len, &e)) { CHECK_MSG(0, "json: %s", e.msg); goto out; }
    if (cfg && bpe_trainer_config_json(tr, cfg, cfg_len, &e)) { CHECK_MSG(0, "config: %s", e.msg); free(json); json = NULL; }
    if (st) bpe_trainer_stats(tr, st);
out:
    bpe_trainer_free(tr);
    return json;
}

static ds_tokenizer *load(const char *json, size_t len, const char *cfg, size_t cfg_len) {
    ds_tokenizer *t = NULL;
    ds_err e = {0};
    if (tok_load_buf(&t, "trained", json, len, cfg, cfg_len, &e)) CHECK_MSG(0, "load: %s", e.msg);
    return t;
}

/* encode (parse_special) then decode gives the bytes back */
static void check_roundtrip(const ds_tokenizer *t, const char *s, size_t n, bool parse_special, int64_t *n_ids) {
    int32_t *ids;
    int64_t k;
    char *back;
    size_t blen;
    ds_err e = {0};
    if (tok_encode(t, s, n, parse_special, &ids, &k, &e)) { CHECK_MSG(0, "encode: %s", e.msg); return; }
    if (tok_decode(t, ids, k, false, &back, &blen, &e)) { CHECK_MSG(0, "decode: %s", e.msg); free(ids); return; }
    CHECK_MSG(blen == n && !memcmp(back, s, n), "round trip differs (%zu bytes in, %zu out)", n, blen);
    if (n_ids) *n_ids = k;
    free(ids);
    free(back);
}

/* ------------------------------------------------------------- fixture */

TEST(train_tok_fixture_matches_hf) {
    size_t ls, lm, lj, lc;
    char *sh = shakespeare(&ls), *mixed = read_all(fixture("train_tokenizer/mixed.txt"), &lm);
    char *want_json = read_all(fixture("train_tokenizer/tok/tokenizer.json"), &lj);
    char *want_cfg = read_all(fixture("train_tokenizer/tok/tokenizer_config.json"), &lc);
    if (!sh || !mixed || !want_json || !want_cfg) goto out;
    topts t;
    cli_opts(&t, 2048, EXTRA); /* as tools/gen_train_tokenizer_fixtures.py runs the CLI */
    doc docs[2] = { { sh, ls }, { mixed, lm } };
    size_t len, cfg_len;
    char *cfg = NULL;
    double t0 = ds_now();
    char *json = train(&t.o, docs, 2, &len, &cfg, &cfg_len, NULL);
    fprintf(stderr, "    vocab 2048 on %zu bytes: %.2f s\n", ls + lm, ds_now() - t0);
    if (!json) goto out;
    CHECK_MSG(len == lj && !memcmp(json, want_json, lj), "tokenizer.json differs from the committed fixture");
    CHECK_MSG(cfg_len == lc && !memcmp(cfg, want_cfg, lc), "tokenizer_config.json differs from the committed fixture");

    /* model.vocab and model.merges = HF BpeTrainer's */
    json_error_t je;
    json_t *ours = json_loadb(json, len, 0, &je), *hf = json_load_file(fixture("train_tokenizer/hf_model.json"), 0, &je);
    CHECK(ours && hf);
    if (ours && hf) {
        json_t *model = json_object_get(ours, "model");
        CHECK_MSG(json_equal(json_object_get(model, "vocab"), json_object_get(hf, "vocab")), "vocab differs from HF's trainer");
        CHECK_MSG(json_equal(json_object_get(model, "merges"), json_object_get(hf, "merges")), "merges differ from HF's trainer");
    }
    json_decref(ours);
    json_decref(hf);

    /* our encoder with this file = HF's ids */
    ds_tokenizer *tok = load(json, len, cfg, cfg_len);
    json_t *cases = json_load_file(fixture("train_tokenizer/cases.json"), 0, &je);
    CHECK_MSG(cases, "cases.json: %s", je.text);
    size_t n_cases = json_array_size(json_object_get(cases, "cases")), bad = 0, n_ids = 0;
    CHECK(n_cases > 50);
    for (size_t i = 0; tok && i < n_cases; i++) {
        const json_t *c = json_array_get(json_object_get(cases, "cases"), i);
        const json_t *text = json_object_get(c, "text"), *ids = json_object_get(c, "ids");
        tok_ids got = {0};
        ds_err e = {0};
        if (tok_encode_append(tok, json_string_value(text), json_string_length(text), TOK_PARSE_SPECIAL | TOK_ADD_SPECIAL,
                              &got, &e)) {
            CHECK_MSG(0, "case %zu: %s", i, e.msg);
            continue;
        }
        bool same = (size_t)got.n == json_array_size(ids);
        for (size_t k = 0; same && k < json_array_size(ids); k++)
            same = got.v[k] == json_integer_value(json_array_get(ids, k));
        if (!same && bad++ < 3) CHECK_MSG(0, "case %zu: our ids differ from HF's (%lld vs %zu ids)", i, (long long)got.n,
                                          json_array_size(ids));
        n_ids += (size_t)got.n;
        check_roundtrip(tok, json_string_value(text), json_string_length(text), true, NULL);
        tok_ids_free(&got);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(n_ids > 10000);
    json_decref(cases);
    tok_free(tok);
    free(json);
    free(cfg);
out:
    free(sh);
    free(mixed);
    free(want_json);
    free(want_cfg);
}

/* ---------------------------------------------------- size, ids, flags */

TEST(train_tok_vocab_specials_roundtrip) {
    size_t ls;
    char *sh = shakespeare(&ls);
    if (!sh) return;
    topts t;
    cli_opts(&t, 4096, EXTRA);
    doc d = { sh, ls };
    size_t len, cfg_len;
    char *cfg = NULL;
    bpe_train_stats st;
    double t0 = ds_now();
    char *json = train(&t.o, &d, 1, &len, &cfg, &cfg_len, &st);
    fprintf(stderr, "    vocab 4096 on tinyshakespeare (%zu bytes): %.2f s (pre-tokenize %.2f s, merges %.2f s)\n", ls,
            ds_now() - t0, st.count_seconds, st.merge_seconds);
    if (!json) { free(sh); return; }
    CHECK_EQ_INT(st.vocab_size, 4096);
    CHECK_EQ_INT(st.bytes, ls);
    CHECK_EQ_INT(st.merges, 4096 - 256 - t.o.n_specials);
    ds_tokenizer *tok = load(json, len, cfg, cfg_len);
    if (tok) {
        CHECK_EQ_INT(tok_vocab_size(tok), 4096);
        for (int i = 0; i < t.o.n_specials; i++) {
            const char *s = t.sp[i].content;
            CHECK_EQ_INT(tok_added_token_id(tok, s, strlen(s)), i);
            CHECK_EQ_INT(tok_token_to_id(tok, s, strlen(s)), i);
            CHECK(tok_is_added(tok, i));
            CHECK_EQ_INT(tok_is_special(tok, i), t.sp[i].special);
        }
        CHECK(tok_is_special(tok, 0) && tok_is_special(tok, 1) && !tok_is_special(tok, 2));
        CHECK_EQ_INT(tok_bos_id(tok), 0);
        CHECK_EQ_INT(tok_eos_id(tok), 1);
        CHECK(tok_add_bos(tok));
        CHECK(tok_chat_template(tok) && !strcmp(tok_chat_template(tok), bpe_v3_chat_template()));
        CHECK(!tok_is_added(tok, t.o.n_specials)); /* then the byte tokens */
        /* the 256 byte tokens: every single byte is one token */
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            int32_t *ids;
            int64_t k;
            ds_err e = {0};
            CHECK(!tok_encode(tok, &c, 1, false, &ids, &k, &e) && k == 1 && ids[0] >= t.o.n_specials &&
                  ids[0] < t.o.n_specials + 256);
            free(ids);
        }
        /* round trips: the corpus, invalid UTF-8, specials parsed */
        int64_t n_ids = 0;
        check_roundtrip(tok, sh, ls, false, &n_ids);
        CHECK_MSG((double)ls / (double)n_ids > 3.3, "compression %.3f bytes/token", (double)ls / (double)n_ids);
        static const char junk[] = "\xff\xfe caf\xc3 \xe4\xb8 \xed\xa0\x80 \xf0\x9f\x98\x80 ok\x80\n\x00z";
        check_roundtrip(tok, junk, sizeof junk - 1, true, NULL);
        static const char chat[] = "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>x</think>ok<｜end▁of▁sentence｜>";
        int32_t *ids;
        int64_t k;
        ds_err e = {0};
        CHECK(!tok_encode(tok, chat, strlen(chat), true, &ids, &k, &e));
        CHECK(k >= 7 && ids[0] == 0 && ids[1] == 2 && ids[k - 1] == 1);
        free(ids);
        check_roundtrip(tok, chat, strlen(chat), true, NULL);
    }
    tok_free(tok);

    /* what we write matches DeepSeek-V3's own files */
    json_error_t je;
    json_t *ours = json_loadb(json, len, 0, &je), *v3 = json_load_file(shared_path("tokenizers/deepseek-v3/tokenizer.json"), 0, &je);
    json_t *v3c = json_load_file(shared_path("tokenizers/deepseek-v3/tokenizer_config.json"), 0, &je);
    CHECK(ours && v3 && v3c);
    if (ours && v3 && v3c) {
        CHECK(json_equal(json_object_get(ours, "pre_tokenizer"), json_object_get(v3, "pre_tokenizer")));
        CHECK(json_equal(json_object_get(ours, "normalizer"), json_object_get(v3, "normalizer")));
        CHECK(json_equal(json_object_get(ours, "decoder"), json_object_get(v3, "decoder")));
        CHECK(!strcmp(json_string_value(json_object_get(v3c, "chat_template")), bpe_v3_chat_template()));
        /* the DeepSeek markers carry DeepSeek's flags */
        const json_t *ours_added = json_object_get(ours, "added_tokens"), *v3_added = json_object_get(v3, "added_tokens");
        int matched = 0;
        for (size_t i = 0; i < json_array_size(ours_added); i++) {
            const json_t *a = json_array_get(ours_added, i);
            for (size_t j = 0; j < json_array_size(v3_added); j++) {
                const json_t *b = json_array_get(v3_added, j);
                if (!json_equal(json_object_get(a, "content"), json_object_get(b, "content"))) continue;
                matched++;
                CHECK(json_equal(json_object_get(a, "special"), json_object_get(b, "special")));
                CHECK(json_equal(json_object_get(a, "normalized"), json_object_get(b, "normalized")));
            }
        }
        CHECK_EQ_INT(matched, 13); /* all but <think>, </think> (R1's, not in V3's file) */
    }
    json_decref(ours);
    json_decref(v3);
    json_decref(v3c);
    free(json);
    free(cfg);
    free(sh);
}

/* Loading trained files of many sizes: the decoded strings of added tokens
 * are copied within the tokenizer's string pool while it grows (a
 * use-after-free in tokenizer.c's add_decoded that ASan found here). */
TEST(train_tok_load_many_sizes) {
    size_t ls;
    char *sh = shakespeare(&ls);
    if (!sh) return;
    doc d = { sh, DS_MIN(ls, (size_t)200000) };
    for (int64_t v = 300; v <= 1300; v += 100) {
        topts t;
        cli_opts(&t, v, NULL);
        size_t len, cfg_len;
        char *cfg = NULL;
        char *json = train(&t.o, &d, 1, &len, &cfg, &cfg_len, NULL);
        ds_tokenizer *tok = json ? load(json, len, cfg, cfg_len) : NULL;
        if (tok) {
            CHECK_EQ_INT(tok_vocab_size(tok), v);
            size_t n;
            const char *piece = tok_id_to_piece(tok, 2, &n);
            CHECK(piece && n == strlen("<｜User｜>") && !memcmp(piece, "<｜User｜>", n));
        }
        tok_free(tok);
        free(json);
        free(cfg);
    }
    free(sh);
}

/* ------------------------------------------------- determinism, modes */

TEST(train_tok_deterministic_and_chunking_exact) {
    size_t ls, lm;
    char *sh = shakespeare(&ls), *mixed = read_all(fixture("train_tokenizer/mixed.txt"), &lm);
    if (!sh || !mixed) { free(sh); free(mixed); return; }
    /* one 1.35 MB document: Shakespeare, the mixed text (CRLF lines, many scripts), Shakespeare again */
    size_t tail = 200000, n = ls + lm + tail;
    char *big = malloc(n);
    memcpy(big, sh, ls);
    memcpy(big + ls, mixed, lm);
    memcpy(big + ls + lm, sh, tail);
    doc d = { big, n };
    for (int kind = 0; kind < 2; kind++) {
        const char *name = kind ? "gpt2" : "deepseek-v3";
        topts t;
        cli_opts(&t, 1500, NULL);
        t.o.pretok = kind ? BPE_PRETOK_GPT2 : BPE_PRETOK_DEEPSEEK_V3;
        size_t l1, l2;
        t.o.chunk_bytes = SIZE_MAX; /* never cut */
        char *whole = train(&t.o, &d, 1, &l1, NULL, NULL, NULL);
        t.o.chunk_bytes = 10000; /* ~130 cuts, counted on all threads */
        char *cut = train(&t.o, &d, 1, &l2, NULL, NULL, NULL);
        CHECK(whole && cut);
        if (whole && cut) CHECK_MSG(l1 == l2 && !memcmp(whole, cut, l1), "%s: 10000-byte chunks change the result", name);
        if (!kind) { /* default 1 MiB chunks (one cut here), twice: same bytes */
            size_t l3, l4;
            t.o.chunk_bytes = 0;
            char *a = train(&t.o, &d, 1, &l3, NULL, NULL, NULL), *b = train(&t.o, &d, 1, &l4, NULL, NULL, NULL);
            CHECK(whole && a && b && l3 == l1 && l4 == l1 && !memcmp(a, whole, l1) && !memcmp(b, whole, l1));
            free(a);
            free(b);
        }
        free(whole);
        free(cut);
    }
    free(big);
    free(sh);
    free(mixed);
}

static bool has_token(const ds_tokenizer *t, const char *s) { return tok_token_to_id(t, s, strlen(s)) >= 0; }

TEST(train_tok_per_line_and_tiny_mixed) {
    /* per-line pre-tokenization never sees "\n\n" in one piece; whole documents do */
    char text[4096];
    size_t n = 0;
    for (int i = 0; i < 60; i++) n += (size_t)snprintf(text + n, sizeof text - n, "line %d.\n\n", i);
    doc d = { text, n };
    bpe_train_opts o = { .vocab_size = 400, .pretok = BPE_PRETOK_DEEPSEEK_V3 };
    size_t l1, l2;
    char *whole = train(&o, &d, 1, &l1, NULL, NULL, NULL);
    o.per_line = true;
    char *lines = train(&o, &d, 1, &l2, NULL, NULL, NULL);
    ds_tokenizer *tw = whole ? load(whole, l1, NULL, 0) : NULL, *tl = lines ? load(lines, l2, NULL, 0) : NULL;
    if (tw && tl) {
        CHECK(has_token(tw, ".ĊĊ"));   /* ".\n\n" */
        CHECK(!has_token(tl, ".ĊĊ"));
        CHECK(has_token(tl, ".Ċ"));
        CHECK_EQ_INT(tok_bos_id(tw), -1); /* no specials asked for */
        check_roundtrip(tl, text, n, true, NULL);
    }
    tok_free(tw);
    tok_free(tl);
    free(whole);
    free(lines);

    /* a tiny mixed-language string: runs out of pairs before the asked size */
    static const char tiny[] = "Hello, world! Привет, мир! 你好，世界！こんにちは世界。안녕하세요 세계! مرحبا بالعالم "
                               "1234567 3.14 😀👍🏽 Hello again, world.\r\n\tTabs and  spaces.";
    doc td = { tiny, sizeof tiny - 1 };
    bpe_train_opts ot = { .vocab_size = 5000, .pretok = BPE_PRETOK_DEEPSEEK_V3 };
    bpe_train_stats st;
    size_t lt;
    char *js = train(&ot, &td, 1, &lt, NULL, NULL, &st);
    CHECK(js && st.vocab_size > 256 && st.vocab_size < 5000);
    ds_tokenizer *tt = js ? load(js, lt, NULL, 0) : NULL;
    if (tt) {
        CHECK_EQ_INT(tok_vocab_size(tt), st.vocab_size);
        int64_t k = 0;
        check_roundtrip(tt, tiny, sizeof tiny - 1, true, &k);
        CHECK_MSG(k < (int64_t)(sizeof tiny - 1) / 2, "%lld tokens for %zu bytes", (long long)k, sizeof tiny - 1);
        static const char other[] = "Unseen: Ελληνικά, עברית, ไทย, 🚀, \xff\x01 bytes";
        check_roundtrip(tt, other, sizeof other - 1, true, NULL);
    }
    tok_free(tt);
    free(js);

    /* min_frequency above every count: no merges, still a working byte-level tokenizer */
    ot.min_frequency = 1000;
    js = train(&ot, &td, 1, &lt, NULL, NULL, &st);
    CHECK(js && st.merges == 0 && st.vocab_size == 256);
    tt = js ? load(js, lt, NULL, 0) : NULL;
    if (tt) {
        int64_t k = 0;
        check_roundtrip(tt, tiny, sizeof tiny - 1, true, &k);
        CHECK_EQ_INT(k, sizeof tiny - 1);
    }
    tok_free(tt);
    free(js);

    /* GPT-2 pre-tokenizer, a special token that equals a byte token's string ("a": reused, as HF) */
    bpe_special sp[3] = { { "<s>", true, false }, { "a", true, false }, { "<s>", true, false } };
    bpe_train_opts og = { .vocab_size = 300, .pretok = BPE_PRETOK_GPT2, .specials = sp, .n_specials = 3 };
    js = train(&og, &td, 1, &lt, NULL, NULL, &st);
    CHECK(js && st.vocab_size == 300);
    tt = js ? load(js, lt, NULL, 0) : NULL;
    if (tt) {
        CHECK_EQ_INT(tok_added_token_id(tt, "<s>", 3), 0);
        CHECK_EQ_INT(tok_added_token_id(tt, "a", 1), 1);
        check_roundtrip(tt, tiny, sizeof tiny - 1, true, NULL);
    }
    tok_free(tt);
    free(js);
}

/* ------------------------------------------------------------ bad input */

static int stop_now(void *ud, const bpe_train_progress *p) {
    (void)p;
    return ++*(int *)ud >= 1;
}

TEST(train_tok_bad_input) {
    ds_err e = {0};
    bpe_trainer *tr = NULL;
    topts t;
    cli_opts(&t, 270, NULL); /* 15 specials + 256 bytes = 271 */
    CHECK_EQ_INT(bpe_trainer_new(&tr, &t.o, &e), DS_EINVAL);
    CHECK_MSG(strstr(e.msg, "at least 271"), "%s", e.msg);
    CHECK(!tr);

    bpe_special bad[1] = { { "", true, false } };
    bpe_train_opts o = { .vocab_size = 1000, .specials = bad, .n_specials = 1 };
    ds_err_clear(&e);
    CHECK_EQ_INT(bpe_trainer_new(&tr, &o, &e), DS_EINVAL);
    CHECK(strstr(e.msg, "empty"));
    bad[0].content = "\xff<bad>";
    ds_err_clear(&e);
    CHECK_EQ_INT(bpe_trainer_new(&tr, &o, &e), DS_EINVAL);
    CHECK(strstr(e.msg, "UTF-8"));
    o.n_specials = 0;
    o.pretok = (bpe_pretok)7;
    ds_err_clear(&e);
    CHECK_EQ_INT(bpe_trainer_new(&tr, &o, &e), DS_EINVAL);
    o.pretok = BPE_PRETOK_DEEPSEEK_V3;
    o.vocab_size = (1 << 22) + 1;
    ds_err_clear(&e);
    CHECK_EQ_INT(bpe_trainer_new(&tr, &o, &e), DS_EINVAL);

    /* empty corpus; use before/after training */
    o.vocab_size = 1000;
    ds_err_clear(&e);
    CHECK_EQ_INT(bpe_trainer_new(&tr, &o, &e), DS_OK);
    char *json;
    size_t len;
    CHECK_EQ_INT(bpe_trainer_feed(tr, "", 0, &e), DS_OK);
    CHECK_EQ_INT(bpe_trainer_tokenizer_json(tr, &json, &len, &e), DS_EINVAL);
    ds_err_clear(&e);
    CHECK_EQ_INT(bpe_trainer_train(tr, &e), DS_EINVAL);
    CHECK_MSG(strstr(e.msg, "empty corpus"), "%s", e.msg);
    CHECK_EQ_INT(bpe_trainer_feed(tr, "abc abc", 7, &e), DS_OK);
    ds_err_clear(&e);
    CHECK_EQ_INT(bpe_trainer_train(tr, &e), DS_OK);
    CHECK_EQ_INT(bpe_trainer_feed(tr, "more", 4, &e), DS_EINVAL);
    CHECK_EQ_INT(bpe_trainer_train(tr, &e), DS_EINVAL);
    bpe_trainer_free(tr);

    /* the progress callback stops training */
    int calls = 0;
    o.progress = stop_now;
    o.progress_ud = &calls;
    o.progress_interval = 1e-9;
    ds_err_clear(&e);
    CHECK_EQ_INT(bpe_trainer_new(&tr, &o, &e), DS_OK);
    static char text[200000];
    for (size_t i = 0; i < sizeof text; i++) text[i] = "abc def\n"[i % 8];
    int rc = bpe_trainer_feed(tr, text, sizeof text, &e);
    CHECK_EQ_INT(rc, DS_EINTERRUPTED);
    CHECK_EQ_INT(bpe_trainer_train(tr, &e), DS_EINTERRUPTED);
    bpe_trainer_free(tr);
    bpe_trainer_free(NULL);
}
