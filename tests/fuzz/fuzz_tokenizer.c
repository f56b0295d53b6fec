/*
 * fuzz_tokenizer.c - libFuzzer target for src/tokenizer. The first input
 * byte picks what the rest is:
 *   0  a tokenizer.json (tok_load_buf); if it loads, encode/decode/stream text
 *   1  text, encoded by the DeepSeek-V3 tokenizer (../shared, if present) and
 *      the small Llama-3-style fixture: decode(encode(x)) must equal x, and
 *      streaming decode must agree with one-shot decode
 *   2  "PATTERN\0TEXT": Oniguruma regex translation + match iteration
 *   3  generated text for chat_split_reasoning / chat_parse_tool_calls
 *   4  ids (pairs of bytes) for decode + streaming decode
 * Seeds: tests/fuzz/corpus/fuzz_tokenizer. Run: tests/fuzz/run_fuzz.sh 60 fuzz_tokenizer
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mmap_file.h"
#include "tokenizer/chat.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static ds_tokenizer *g_tok[2];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    ds_err e = {0};
    const char *shared = getenv("DS_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizers/deepseek-v3", shared ? shared : "../shared");
    if (tok_load(&g_tok[0], path, &e)) fprintf(stderr, "fuzz_tokenizer: no V3 tokenizer (%s)\n", e.msg);
    ds_err e2 = {0};
    if (tok_load(&g_tok[1], "tests/fixtures/tokenizer/llama3", &e2)) {
        fprintf(stderr, "fuzz_tokenizer: %s (run from the repository root)\n", e2.msg);
        abort();
    }
    return 0;
}

static void check_stream(const ds_tokenizer *t, const int32_t *ids, int64_t n) {
    ds_err e = {0};
    char *raw, *want;
    size_t rlen, wlen;
    if (tok_decode(t, ids, n, false, &raw, &rlen, &e)) abort();
    if (tok_utf8_sanitize(raw, rlen, &want, &wlen, &e)) abort();
    tok_stream st;
    tok_stream_init(&st, t, false);
    size_t off = 0;
    for (int64_t i = 0; i <= n; i++) {
        const char *s;
        size_t l;
        if ((i < n ? tok_stream_push(&st, ids[i], &s, &l, &e) : tok_stream_flush(&st, &s, &l, &e))) abort();
        if (off + l > wlen || memcmp(want + off, s, l)) abort();
        off += l;
    }
    if (off != wlen) abort();
    tok_stream_free(&st);
    free(raw);
    free(want);
}

static void encode_check(const ds_tokenizer *t, const char *s, size_t n, unsigned flags, bool roundtrip) {
    tok_ids ids = {0};
    ds_err e = {0};
    if (tok_encode_append(t, s, n, flags, &ids, &e)) {
        if (e.code >= 0 || !e.msg[0]) abort();
        return;
    }
    char *out;
    size_t len;
    if (tok_decode(t, ids.v, ids.n, false, &out, &len, &e)) abort();
    if (roundtrip && (len != n || memcmp(out, s, n))) abort();
    free(out);
    check_stream(t, ids.v, ids.n);
    tok_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] % 5;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    ds_err e = {0};
    if (mode == 0) {
        ds_tokenizer *t = NULL;
        int rc = tok_load_buf(&t, "fuzz/tokenizer.json", s, n, NULL, 0, &e);
        if (rc) {
            if (rc > 0 || !e.msg[0] || t) abort();
            return 0;
        }
        encode_check(t, "Hello  world 12345 中文 <s> 😀\n\n\xff", 30, TOK_PARSE_SPECIAL | TOK_ADD_SPECIAL, false);
        encode_check(t, s, n, TOK_PARSE_SPECIAL, false);
        tok_free(t);
    } else if (mode == 1) {
        for (int k = 0; k < 2; k++)
            if (g_tok[k]) {
                encode_check(g_tok[k], s, n, TOK_PARSE_SPECIAL, true);
                encode_check(g_tok[k], s, n, 0, true);
            }
    } else if (mode == 2) {
        const char *nul = memchr(s, 0, n);
        size_t plen = nul ? (size_t)(nul - s) : n;
        const char *txt = nul ? nul + 1 : "";
        size_t tlen = nul ? n - plen - 1 : 0;
        tok_regex *re;
        if (regex_compile(&re, s, plen, data[0] & 8, "fuzz", &e)) {
            if (!e.msg[0]) abort();
            return 0;
        }
        regex_scratch sc = {0};
        regex_iter it;
        regex_iter_init(&it, re, txt, tlen);
        size_t a, b, prev = 0;
        int rc;
        while ((rc = regex_next(&it, &sc, &a, &b, &e)) == 1) {
            if (a > b || b > tlen || a < prev) abort();
            prev = b;
        }
        if (rc < 0 && !e.msg[0]) abort();
        regex_scratch_free(&sc);
        regex_free(re);
    } else if (mode == 3) {
        ds_reply_split r;
        chat_split_reasoning(s, n, data[0] & 8, &r);
        if (r.reasoning_len > n || r.content_len > n) abort();
        ds_tool_parse p;
        static const ds_chat_format pf[4] = { DS_CHAT_V3, DS_CHAT_V31, DS_CHAT_V32, DS_CHAT_V4 };
        int prc = chat_parse_tool_calls(pf[(data[0] >> 4) & 3], s, n, &p, &e);
        if (prc == 0 && p.n_calls > 0 && !p.calls[0].arguments) abort();
        chat_tool_parse_free(&p);
        if (g_tok[0]) { /* render the text as every role of every format */
            ds_tool_call call = { NULL, "f", "{}", NULL };
            char *z = malloc(n + 1);
            memcpy(z, s, n);
            z[n] = 0;
            /* the whole text as content, NUL characters included (content_len) */
            ds_chat_msg m[] = { { DS_ROLE_SYSTEM, z, NULL, NULL, 0, false, NULL, n }, { DS_ROLE_USER, z, NULL, NULL, 0, false, NULL, n },
                                { DS_ROLE_ASSISTANT, NULL, NULL, &call, 1, false, NULL, 0 }, { DS_ROLE_TOOL, z, NULL, NULL, 0, false, NULL, n },
                                { DS_ROLE_ASSISTANT, z, "r", NULL, 0, true, NULL, n } };
            tok_ids ids = {0};
            if (chat_render(g_tok[0], (ds_chat_format)(1 + data[0] % 6), m, 5, true, data[0] & 32, &ids, &e)) abort();
            tok_ids_free(&ids);
            /* V3.2 / V4: the text as the request's tools JSON (errors allowed, never a crash) */
            ds_chat_opts o = { .add_generation_prompt = true, .thinking = data[0] & 32, .effort = DS_EFFORT_MAX, .tools_json = z };
            char *txt = NULL;
            if (chat_render_opts(g_tok[0], data[0] & 64 ? DS_CHAT_V4 : DS_CHAT_V32, m, 5, &o, &ids, &txt, &e) == 0 && !txt) abort();
            free(txt);
            tok_ids_free(&ids);
            free(z);
        }
    } else {
        const ds_tokenizer *t = g_tok[0] ? g_tok[0] : g_tok[1];
        int64_t m = (int64_t)(n / 2);
        int32_t *ids = malloc((size_t)(m + 1) * sizeof *ids);
        for (int64_t i = 0; i < m; i++)
            ids[i] = (int32_t)(((uint32_t)(uint8_t)s[2 * i] << 8 | (uint8_t)s[2 * i + 1]) * 2 % (uint32_t)tok_vocab_size(t));
        char *out;
        size_t len;
        if (tok_decode(t, ids, m, data[0] & 8, &out, &len, &e) == 0) {
            free(out);
            check_stream(t, ids, m);
        }
        free(ids);
    }
    return 0;
}
