/*
 * fuzz_request.c - libFuzzer target for the server's request handling
 * without HTTP: the body goes through oa_parse_chat and oa_parse_completion
 * (every field rule), accepted requests through prompt building with the
 * tiny-chat tokenizer (template, tools, prefix, FIM, forced tokens, the
 * parts of a constrained tool call), and
 * the same bytes through the JSON-mode validator (whatever prefix it
 * accepts must complete to a document it calls done). Invariants: a
 * rejected body has a 4xx status (never 5xx) and a message; nothing
 * crashes or leaks.
 * Seeds: tests/fuzz/corpus/fuzz_request. Run: tests/fuzz/run_fuzz.sh 60 fuzz_request
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonmode.h"
#include "server/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static ds_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    ds_err e = { 0 };
    if (tok_load(&g_tok, "tests/fixtures/tiny-chat", &e)) g_tok = NULL; /* run from the repository root */
    return 0;
}

/* A rejected request is the client's fault: 4xx, never 5xx (the README
 * promises no 5xx for any request; the only 500s left are out of memory,
 * which the fuzzer's allocation limit turns into a report of its own). */
static void check_rejected(const oa_error *err) {
    if (err->status < 400 || err->status >= 500 || err->message[0] == 0) abort();
    char *js = oa_error_json(err);
    if (!js) abort();
    free(js);
}

static void prompts(oa_request *r) {
    if (!g_tok) return;
    oa_error err = { 0 };
    tok_ids ids = { 0 }, forced = { 0 };
    bool reasoning;
    if (r->kind == OA_CHAT) {
        for (int f = DS_CHAT_V3; f <= DS_CHAT_V2; f++) {
            ids.n = 0;
            memset(&err, 0, sizeof err);
            if (oa_chat_prompt(g_tok, (ds_chat_format)f, r, f == DS_CHAT_V31, &ids, &reasoning, &err)) check_rejected(&err);
        }
    } else {
        if (oa_completion_prompt(g_tok, r, &ids, &err)) check_rejected(&err);
    }
    memset(&err, 0, sizeof err);
    if (oa_forced_tokens(g_tok, DS_CHAT_V3, r, &forced, &err)) check_rejected(&err);
    tok_ids mid = { 0 }, end = { 0 };
    memset(&err, 0, sizeof err);
    if (oa_tool_call_parts(g_tok, DS_CHAT_V3, r, &mid, &end, &err)) check_rejected(&err);
    tok_ids_free(&ids);
    tok_ids_free(&forced);
    tok_ids_free(&mid);
    tok_ids_free(&end);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    oa_limits lim;
    oa_limits_default(&lim);
    lim.vocab = 576;
    lim.max_tokens = 4096;
    lim.test_hooks = size > 0 && (data[0] & 1);
    oa_request r;
    oa_error err = { 0 };
    if (oa_parse_chat((const char *)data, size, &lim, &r, &err) == 0) {
        if (r.n_msgs < 1 || r.n < 1 || r.n > lim.max_n || r.max_tokens < 0 || r.max_tokens > lim.max_tokens) abort();
        prompts(&r);
        oa_request_free(&r);
    } else {
        check_rejected(&err);
    }
    memset(&err, 0, sizeof err);
    if (oa_parse_completion((const char *)data, size, &lim, &r, &err) == 0) {
        if (!r.prompt && r.n_prompt_ids < 1) abort();
        prompts(&r);
        oa_request_free(&r);
    } else {
        check_rejected(&err);
    }
    /* JSON mode: feed byte by byte, keep what is accepted, then close */
    jv_state s;
    jv_init(&s);
    for (size_t i = 0; i < size; i++) jv_feed(&s, (const char *)data + i, 1);
    char close[128];
    int k = jv_closing(&s, close, sizeof close);
    if (k != jv_need(&s) || !jv_feed(&s, close, (size_t)k) || !jv_done(&s)) abort();
    return 0;
}
