/*
 * test_server.c - the server's pieces without HTTP: the JSON-mode validator
 * (every prefix completes to valid JSON, the budget is honoured, random
 * byte streams never escape), request parsing and validation (field paths
 * in errors), prompt building, response JSON, the prefix cache (memory,
 * disk, corrupt files) and the model worker on the tiny-chat fixture
 * (tool calls, stop strings, JSON mode with random weights, n > 1,
 * cancellation, same seed -> same tokens alone or batched).
 */
#include "test.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "server/jsonmode.h"
#include "server/openai.h"
#include "server/prefix_cache.h"
#include "server/sched.h"

/* ------------------------------------------------------------ jsonmode */

static bool feed_str(jv_state *s, const char *t) { return jv_feed(s, t, strlen(t)); }

/* Feeding text byte by byte accepts it all; the closing string completes it to a JSON object. */
static bool completes_to_object(const char *text, size_t n) {
    jv_state s;
    jv_init(&s);
    if (!jv_feed(&s, text, n)) return false;
    char close[128];
    int k = jv_closing(&s, close, sizeof close);
    if (k != jv_need(&s)) return false;
    jv_state t = s;
    if (!jv_feed(&t, close, (size_t)k) || !jv_done(&t)) return false;
    char *full = malloc(n + (size_t)k + 1);
    memcpy(full, text, n);
    memcpy(full + n, close, (size_t)k);
    full[n + (size_t)k] = 0;
    json_error_t je;
    json_t *j = json_loadb(full, n + (size_t)k, JSON_ALLOW_NUL, &je);
    bool ok = j && json_is_object(j);
    if (!ok) fprintf(stderr, "    not JSON: [%s]: %s\n", full, je.text);
    json_decref(j);
    free(full);
    return ok;
}

TEST(jsonmode_accepts_valid_documents) {
    const char *docs[] = {
        "{}", " { } ", "{\"a\":1}", "{\"a\": [1, 2.5, -0, -0.5e+10, 1E3, true, false, null]}",
        "{\"s\": \"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD7FF \\uE000\"}",
        "{\"u\": \"h\xc3\xa9llo \xe4\xb8\xad \xf0\x9f\x98\x80\"}", "{\"o\": {\"p\": {\"q\": []}}, \"r\": [[], {}]}",
        "{\n  \"pretty\": [\n    1\n  ]\n}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        jv_state s;
        jv_init(&s);
        CHECK_MSG(feed_str(&s, docs[i]), "rejected: %s", docs[i]);
        CHECK_MSG(jv_done(&s), "not complete: %s", docs[i]);
        CHECK_EQ_INT(jv_need(&s), 0);
        /* every prefix is a valid prefix that completes */
        for (size_t k = 0; k <= strlen(docs[i]); k++)
            CHECK_MSG(completes_to_object(docs[i], k), "prefix %zu of %s", k, docs[i]);
    }
}

TEST(jsonmode_rejects_invalid_bytes) {
    static const struct { const char *ok, *bad; } cases[] = {
        { "", "[" }, { "", "1" }, { "", "\"a\"" }, { "{\"a\":0", "1" }, { "{", "a" }, { "{\"a\":1", "}}" },
        { "{\"a\":1", ",}" }, { "{\"a\"", " 1" }, { "{\"a\":tru", "x" }, { "{\"a\":-", "}" }, { "{\"a\":1.", "}" },
        { "{\"a\":1e", "}" }, { "{\"a\":\"", "\x01" }, { "{\"a\":\"", "\xc0\x80" }, { "{\"a\":\"", "\xed\xa0\x80" },
        { "{\"a\":\"", "\xf5" }, { "{\"a\":\"\\", "x" }, { "{\"a\":\"\\u", "g" }, { "{\"a\":\"\\uD", "8" },
        { "{}", "x" }, { "{}", "{" }, { "{\"a\":[1", "}" }, { "{\"a\":\"\xe2\x82", "a" },
        { "{\"a\":123456789012345", "6" }, { "{\"a\":1e99", "9" }, { "{\"a\":-1.5E-12", "3" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jv_state s;
        jv_init(&s);
        CHECK_MSG(feed_str(&s, cases[i].ok), "case %zu: prefix rejected", i);
        jv_state before = s;
        CHECK_MSG(!feed_str(&s, cases[i].bad), "case %zu: accepted '%s' after '%s'", i, cases[i].bad, cases[i].ok);
        CHECK_MSG(!memcmp(&before, &s, sizeof s), "case %zu: state changed on rejection", i);
    }
}

TEST(jsonmode_limits_depth_and_whitespace) {
    jv_state s;
    jv_init(&s);
    CHECK(feed_str(&s, "{\"a\":"));
    for (int d = 1; d < JV_MAX_DEPTH; d++) CHECK(feed_str(&s, "["));
    CHECK(!feed_str(&s, "["));
    CHECK(completes_to_object("{\"a\":[[[[", 9));
    jv_init(&s);
    for (int i = 0; i < JV_MAX_WS; i++) CHECK(feed_str(&s, " "));
    CHECK(!feed_str(&s, " "));
    CHECK(feed_str(&s, "{"));
    CHECK(feed_str(&s, " "));
}

/* Random byte streams: keep the accepted ones; every accepted prefix completes. */
TEST(jsonmode_random_streams_stay_valid) {
    ds_rng r;
    ds_rng_seed(&r, 42);
    const char alphabet[] = "{}[]\":,0123456789.-+eEtrufalsn \n\\u/bAF\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80";
    for (int doc = 0; doc < 300; doc++) {
        jv_state s;
        jv_init(&s);
        char text[400];
        size_t n = 0;
        for (int step = 0; step < 2000 && n < sizeof text - 1; step++) {
            char c = alphabet[ds_rng_u64(&r) % (sizeof alphabet - 1)];
            if (jv_feed(&s, &c, 1)) text[n++] = c;
        }
        CHECK_MSG(completes_to_object(text, n), "doc %d", doc);
    }
}

/* The decoder's rule: a byte is allowed only if jv_need stays within the
 * tokens left; the output is then complete JSON when the budget ends. */
TEST(jsonmode_budget_forces_closing) {
    ds_rng r;
    ds_rng_seed(&r, 7);
    const char alphabet[] = "{}[]\":,0123456789.-etrufalsn abc\\";
    for (int budget = 2; budget < 60; budget++) {
        for (int rep = 0; rep < 20; rep++) {
            jv_state s;
            jv_init(&s);
            char text[64];
            int n = 0;
            for (int left = budget; left > 0; left--) {
                char cand[sizeof alphabet];
                int nc = 0;
                for (size_t i = 0; i < sizeof alphabet - 1; i++) {
                    jv_state t = s;
                    if (jv_feed(&t, &alphabet[i], 1) && jv_need(&t) <= left - 1) cand[nc++] = alphabet[i];
                }
                if (jv_done(&s)) break;
                if (nc == 0) { /* a closing byte must always fit */
                    char cl[64];
                    jv_closing(&s, cl, sizeof cl);
                    CHECK_MSG(false, "budget %d: no byte fits (need %d, left %d, closing '%s')", budget, jv_need(&s), left, cl);
                    break;
                }
                char c = cand[ds_rng_u64(&r) % (uint64_t)nc];
                jv_feed(&s, &c, 1);
                text[n++] = c;
            }
            CHECK_MSG(jv_done(&s), "budget %d: not complete: %.*s", budget, n, text);
            json_t *j = json_loadb(text, (size_t)n, 0, NULL);
            CHECK_MSG(j && json_is_object(j), "budget %d: not JSON: %.*s", budget, n, text);
            json_decref(j);
        }
    }
}

/* ------------------------------------------------------- request parsing */

static oa_limits lims(void) {
    oa_limits l;
    oa_limits_default(&l);
    l.vocab = 576;
    l.max_tokens = 4096;
    return l;
}

static int parse_chat(const char *body, oa_request *r, oa_error *err) {
    oa_limits l = lims();
    memset(err, 0, sizeof *err);
    return oa_parse_chat(body, strlen(body), &l, r, err);
}

/* The body is rejected with status and param, and the message mentions `needle`. */
static void expect_chat_error(const char *body, int status, const char *param, const char *needle) {
    oa_request r;
    oa_error err;
    int rc = parse_chat(body, &r, &err);
    CHECK_MSG(rc != 0, "accepted: %s", body);
    if (rc == 0) { oa_request_free(&r); return; }
    CHECK_MSG(err.status == status, "%s: status %d, expected %d", body, err.status, status);
    CHECK_MSG(!strcmp(err.param, param ? param : ""), "%s: param '%s', expected '%s'", body, err.param, param ? param : "");
    CHECK_MSG(strstr(err.message, needle) != NULL, "%s: message '%s' lacks '%s'", body, err.message, needle);
}

/* A NUL character in a message's content is text like any other (a model
 * can write the byte 0 and a client sends its answers back): the request is
 * accepted with the content's length, a string or joined parts. */
TEST(request_chat_content_with_nul) {
    oa_request r;
    oa_error err;
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"},"
                       "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"x\\u0000\"},{\"type\":\"text\",\"text\":\"y\"}]},"
                       "{\"role\":\"user\",\"content\":\"plain\"}]}";
    int rc = parse_chat(body, &r, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc) return;
    CHECK_EQ_INT(r.n_msgs, 3);
    CHECK(r.msgs[0].content_len == 3 && !memcmp(r.msgs[0].content, "a\0b", 3));
    CHECK(r.msgs[1].content_len == 3 && !memcmp(r.msgs[1].content, "x\0y", 3));
    CHECK(!strcmp(r.msgs[2].content, "plain") && (r.msgs[2].content_len == 5 || r.msgs[2].content_len == 0));
    oa_request_free(&r);
}

TEST(request_chat_valid_fields) {
    oa_request r;
    oa_error err;
    const char *body =
        "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hel\"},{\"type\":\"text\",\"text\":\"lo\"}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"},{\"role\":\"developer\",\"content\":\"d\"}],"
        "\"temperature\":0.7,\"top_p\":0.9,\"max_tokens\":100,\"stop\":[\"a\",\"b\"],\"n\":2,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"seed\":-5,\"logprobs\":true,\"top_logprobs\":3,"
        "\"response_format\":{\"type\":\"json_object\"},\"frequency_penalty\":0.5,\"presence_penalty\":-0.5,"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},\"logit_bias\":{\"5\":-100},"
        "\"some_unknown_field\":{\"is\":\"fine\"}}";
    int rc = parse_chat(body, &r, &err);
    CHECK_MSG(rc == 0, "%s", err.message);
    if (rc) return;
    CHECK_EQ_INT(r.n_msgs, 5);
    CHECK(!strcmp(r.msgs[1].content, "hello"));
    CHECK_EQ_INT(r.msgs[2].n_tool_calls, 1);
    CHECK(r.msgs[2].content == NULL);
    CHECK(!strcmp(r.msgs[2].tool_calls[0].arguments, "{\"x\":1}"));
    CHECK_EQ_INT(r.msgs[4].role, DS_ROLE_SYSTEM);
    CHECK_NEAR(r.sp.temperature, 0.7, 1e-6);
    CHECK_NEAR(r.sp.top_p, 0.9, 1e-6);
    CHECK_EQ_INT(r.max_tokens, 100);
    CHECK_EQ_INT(r.n_stop, 2);
    CHECK_EQ_INT(r.n, 2);
    CHECK(r.stream && r.include_usage && r.logprobs && r.json_mode && r.seed_given);
    CHECK_EQ_INT(r.top_logprobs, 3);
    CHECK(r.sp.seed == (uint64_t)(int64_t)-5);
    CHECK_EQ_INT(r.tool_choice, OA_TC_NAMED);
    CHECK_EQ_INT(r.n_bias, 1);
    CHECK_EQ_INT(r.bias_ids[0], 5);
    oa_request_free(&r);
    /* defaults */
    rc = parse_chat("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r, &err);
    CHECK(rc == 0);
    CHECK_NEAR(r.sp.temperature, 1.0, 0);
    CHECK_EQ_INT(r.n, 1);
    CHECK_EQ_INT(r.max_tokens, 0);
    CHECK(!r.stream && !r.json_mode && !r.seed_given);
    oa_request_free(&r);
}

TEST(request_chat_errors_name_the_field) {
    expect_chat_error("{bad json", 400, NULL, "not valid JSON");
    expect_chat_error("[1,2]", 400, NULL, "must be a JSON object");
    expect_chat_error("{}", 400, "messages", "required");
    expect_chat_error("{\"messages\":{}}", 400, "messages", "expected an array");
    expect_chat_error("{\"messages\":[]}", 400, "messages", "at least one");
    expect_chat_error("{\"messages\":[1]}", 400, "messages[0]", "expected an object");
    expect_chat_error("{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "messages[0].role", "unknown role 'robot'");
    expect_chat_error("{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role", "expected one of");
    expect_chat_error("{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content", "required");
    expect_chat_error("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content", "got integer");
    expect_chat_error("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
                      "messages[0].content", "not supported");
    expect_chat_error("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages[0]", "must follow");
    expect_chat_error("{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"prefix\":true},{\"role\":\"user\",\"content\":\"y\"}]}",
                      400, "messages[0].prefix", "only the last");
#define U "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
    expect_chat_error("{" U ",\"temperature\":3}", 400, "temperature", "out of range");
    expect_chat_error("{" U ",\"temperature\":\"hot\"}", 400, "temperature", "expected a number, got string");
    expect_chat_error("{" U ",\"max_tokens\":-1}", 400, "max_tokens", "out of range");
    expect_chat_error("{" U ",\"max_tokens\":0}", 400, "max_tokens", "out of range");
    expect_chat_error("{" U ",\"max_tokens\":1.5}", 400, "max_tokens", "expected an integer");
    expect_chat_error("{" U ",\"max_tokens\":99999999}", 400, "max_tokens", "out of range");
    expect_chat_error("{" U ",\"n\":100}", 400, "n", "out of range");
    expect_chat_error("{" U ",\"top_p\":1.5}", 400, "top_p", "out of range");
    expect_chat_error("{" U ",\"presence_penalty\":-3}", 400, "presence_penalty", "out of range");
    expect_chat_error("{" U ",\"stream\":\"yes\"}", 400, "stream", "expected a boolean");
    expect_chat_error("{" U ",\"top_logprobs\":3}", 400, "top_logprobs", "requires logprobs");
    expect_chat_error("{" U ",\"logprobs\":true,\"top_logprobs\":21}", 400, "top_logprobs", "out of range");
    expect_chat_error("{" U ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}",
                      400, "stop", "at most 16");
    expect_chat_error("{" U ",\"stop\":[1]}", 400, "stop", "expected a string");
    expect_chat_error("{" U ",\"response_format\":{\"type\":\"json_schema\"}}", 400, "response_format.type", "not supported");
    expect_chat_error("{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"bad name!\"}}]}", 400, "tools[0]",
                      "function.name");
    expect_chat_error("{" U ",\"tool_choice\":\"required\"}", 400, "tool_choice", "requires a non-empty 'tools'");
    expect_chat_error("{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                      "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", 400, "tool_choice", "no tool named 'g'");
    expect_chat_error("{" U ",\"logit_bias\":{\"abc\":1}}", 400, "logit_bias", "not a token id");
    expect_chat_error("{" U ",\"logit_bias\":{\"999999\":1}}", 400, "logit_bias", "not a token id");
    expect_chat_error("{" U ",\"logit_bias\":{\"3\":101}}", 400, "logit_bias", "out of range");
    expect_chat_error("{" U ",\"model\":5}", 400, "model", "expected a string");
    expect_chat_error("{" U ",\"best_of\":3}", 400, "best_of", "out of range");
    expect_chat_error("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\","
                      "\"reasoning_content\":\"r\\u0000s\"}]}", 400, "reasoning_content", "NUL");
#undef U
    /* the error body has the four standard fields */
    oa_error err = { 0 };
    oa_fail(&err, 400, "invalid_request_error", "temperature", NULL, "bad \"value\" \xff");
    char *js = oa_error_json(&err);
    json_t *j = json_loads(js, 0, NULL);
    json_t *eo = json_object_get(j, "error");
    CHECK(json_is_object(eo) && json_is_string(json_object_get(eo, "message")) &&
          !strcmp(json_string_value(json_object_get(eo, "type")), "invalid_request_error") &&
          !strcmp(json_string_value(json_object_get(eo, "param")), "temperature") && json_is_null(json_object_get(eo, "code")));
    json_decref(j);
    free(js);
}

TEST(request_completion_fields) {
    oa_limits l = lims();
    oa_request r;
    oa_error err = { 0 };
    const char *b1 = "{\"prompt\":\"def f(\",\"suffix\":\"return 1\",\"max_tokens\":8,\"logprobs\":2,\"echo\":true}";
    CHECK(oa_parse_completion(b1, strlen(b1), &l, &r, &err) == 0);
    CHECK(!strcmp(r.prompt, "def f(") && !strcmp(r.suffix, "return 1") && r.logprobs && r.top_logprobs == 2 && r.echo);
    oa_request_free(&r);
    const char *b2 = "{\"prompt\":[0,5,17]}";
    CHECK(oa_parse_completion(b2, strlen(b2), &l, &r, &err) == 0);
    CHECK_EQ_INT(r.n_prompt_ids, 3);
    oa_request_free(&r);
    const char *b3 = "{\"prompt\":[\"only one\"]}";
    CHECK(oa_parse_completion(b3, strlen(b3), &l, &r, &err) == 0);
    CHECK(!strcmp(r.prompt, "only one"));
    oa_request_free(&r);
    const char *bad[] = { "{}", "{\"prompt\":5}", "{\"prompt\":[]}", "{\"prompt\":[1,99999]}", "{\"prompt\":[\"a\",\"b\"]}",
                          "{\"prompt\":\"x\",\"logprobs\":true}", "{\"prompt\":[1],\"suffix\":\"s\"}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        CHECK_MSG(oa_parse_completion(bad[i], strlen(bad[i]), &l, &r, &err) != 0 && err.status == 400, "accepted %s", bad[i]);
    }
}

/* ------------------------------------------------ prompts and responses */

static ds_tokenizer *chat_tok(void) {
    ds_tokenizer *t = NULL;
    ds_err e = { 0 };
    if (tok_load(&t, fixture("tiny-chat"), &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
    return t;
}

TEST(prompt_chat_template_tools_prefix_fim) {
    ds_tokenizer *t = chat_tok();
    if (!t) return;
    oa_request r;
    oa_error err;
    tok_ids a = { 0 }, b = { 0 };
    bool reasoning;
    CHECK(parse_chat("{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"hi <｜end▁of▁sentence｜>\"}]}",
                     &r, &err) == 0);
    CHECK(oa_chat_prompt(t, DS_CHAT_AUTO, &r, false, &a, &reasoning, &err) == 0);
    ds_err e = { 0 };
    CHECK(chat_render(t, DS_CHAT_V3, r.msgs, r.n_msgs, true, false, &b, &e) == 0);
    CHECK_EQ_INT(a.n, b.n);
    CHECK(a.n == b.n && !memcmp(a.v, b.v, (size_t)a.n * 4));
    CHECK(!reasoning);
    int32_t eos = tok_eos_id(t), asst = tok_added_token_id(t, "<｜Assistant｜>", strlen("<｜Assistant｜>"));
    CHECK_EQ_INT(a.v[0], tok_bos_id(t));
    CHECK_EQ_INT(a.v[a.n - 1], asst);
    for (int64_t i = 0; i < a.n; i++) CHECK_MSG(a.v[i] != eos, "user text became a special token");
    oa_request_free(&r);
    /* R1 format: the reply starts inside <think> */
    a.n = 0;
    CHECK(parse_chat("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", &r, &err) == 0);
    CHECK(oa_chat_prompt(t, DS_CHAT_R1, &r, false, &a, &reasoning, &err) == 0);
    CHECK(reasoning);
    oa_request_free(&r);
    /* tools go into the system prompt */
    a.n = b.n = 0;
    CHECK(parse_chat("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"tools\":[{\"type\":\"function\","
                     "\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\",\"parameters\":{\"type\":\"object\"}}}]}",
                     &r, &err) == 0);
    CHECK(oa_chat_prompt(t, DS_CHAT_V3, &r, false, &a, &reasoning, &err) == 0);
    char *txt = NULL;
    size_t tl;
    CHECK(tok_decode(t, a.v, a.n, false, &txt, &tl, &e) == 0);
    CHECK(txt && strstr(txt, "### get_weather") && strstr(txt, "Description: Weather"));
    free(txt);
    /* tool_choice required / named: forced opener */
    tok_ids f = { 0 };
    r.tool_choice = OA_TC_NAMED;
    r.tool_choice_name = "get_weather";
    CHECK(oa_forced_tokens(t, DS_CHAT_V3, &r, &f, &err) == 0);
    CHECK(f.n > 3 && f.v[0] == tok_added_token_id(t, "<｜tool▁calls▁begin｜>", strlen("<｜tool▁calls▁begin｜>")));
    tok_ids_free(&f);
    oa_request_free(&r);
    /* assistant prefix: no closing EOS, no new generation prompt */
    a.n = 0;
    CHECK(parse_chat("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"```python\\n\",\"prefix\":true}]}",
                     &r, &err) == 0);
    CHECK(oa_chat_prompt(t, DS_CHAT_V3, &r, false, &a, &reasoning, &err) == 0);
    CHECK(a.v[a.n - 1] != eos && a.v[a.n - 1] != asst);
    oa_request_free(&r);
    /* FIM */
    oa_limits l = lims();
    const char *body = "{\"prompt\":\"def f(\",\"suffix\":\"    return x\"}";
    memset(&err, 0, sizeof err);
    CHECK(oa_parse_completion(body, strlen(body), &l, &r, &err) == 0);
    a.n = 0;
    CHECK(oa_completion_prompt(t, &r, &a, &err) == 0);
    int32_t fb = tok_added_token_id(t, "<｜fim▁begin｜>", strlen("<｜fim▁begin｜>"));
    int32_t fe = tok_added_token_id(t, "<｜fim▁end｜>", strlen("<｜fim▁end｜>"));
    CHECK(a.n > 3 && a.v[1] == fb && a.v[a.n - 1] == fe);
    oa_request_free(&r);
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_free(t);
}

TEST(response_json_shapes) {
    ds_tokenizer *t = chat_tok();
    if (!t) return;
    oa_request r;
    oa_error err;
    CHECK(parse_chat("{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"n\":2}", &r, &err) == 0);
    oa_resp rs;
    oa_resp_init(&rs, OA_CHAT, "m", true);
    CHECK(!strncmp(rs.id, "chatcmpl-", 9));
    oa_acc acc;
    CHECK(oa_acc_init(&acc, 2) == 0);
    srv_event ev = { .type = SRV_EV_CONTENT, .choice = 0, .text = strdup("Hello"), .len = 5 };
    oa_acc_add(&acc, &ev);
    srv_event_free(&ev);
    ev = (srv_event){ .type = SRV_EV_REASONING, .choice = 0, .text = strdup("hmm"), .len = 3 };
    oa_acc_add(&acc, &ev);
    srv_event_free(&ev);
    ev = (srv_event){ .type = SRV_EV_TOOL_CALLS, .choice = 1 };
    ev.calls.calls = calloc(1, sizeof *ev.calls.calls);
    ev.calls.calls[0] = (ds_parsed_call){ strdup("function"), strdup("f"), strdup("{\"a\":1}") };
    ev.calls.n_calls = 1;
    oa_acc_add(&acc, &ev);
    srv_event_free(&ev);
    ev = (srv_event){ .type = SRV_EV_FINISH, .choice = 1, .finish = SRV_FINISH_TOOL_CALLS };
    oa_acc_add(&acc, &ev);
    srv_job_usage u = { .prompt_tokens = 10, .cached_tokens = 4, .completion_tokens = 7, .reasoning_tokens = 2 };
    json_t *o = oa_response_json(&rs, t, &r, &acc, &u, NULL);
    CHECK(o != NULL);
    json_t *ch = json_object_get(o, "choices");
    CHECK(!strcmp(json_string_value(json_object_get(o, "object")), "chat.completion"));
    CHECK_EQ_INT(json_array_size(ch), 2);
    json_t *m0 = json_object_get(json_array_get(ch, 0), "message");
    CHECK(!strcmp(json_string_value(json_object_get(m0, "content")), "Hello"));
    CHECK(!strcmp(json_string_value(json_object_get(m0, "reasoning_content")), "hmm"));
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(ch, 0), "finish_reason")), "stop"));
    json_t *c1 = json_array_get(ch, 1), *m1 = json_object_get(c1, "message");
    CHECK(json_is_null(json_object_get(m1, "content")));
    CHECK(!strcmp(json_string_value(json_object_get(c1, "finish_reason")), "tool_calls"));
    json_t *tc = json_array_get(json_object_get(m1, "tool_calls"), 0);
    CHECK(!strncmp(json_string_value(json_object_get(tc, "id")), "call_", 5));
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")), "{\"a\":1}"));
    json_t *us = json_object_get(o, "usage");
    CHECK_EQ_INT(json_integer_value(json_object_get(us, "prompt_cache_hit_tokens")), 4);
    CHECK_EQ_INT(json_integer_value(json_object_get(us, "prompt_cache_miss_tokens")), 6);
    CHECK_EQ_INT(json_integer_value(json_object_get(us, "total_tokens")), 17);
    json_decref(o);
    oa_acc_free(&acc);
    oa_request_free(&r);
    tok_free(t);
}

/* -------------------------------------------------------- prefix cache */

static ds_model *chat_model(void) {
    ds_model *m = NULL;
    ds_err e = { 0 };
    if (ds_model_open(&m, fixture("tiny-chat"), &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
    return m;
}

static void fill(ds_model *m, ds_kvcache *c, const int32_t *ids, int64_t n) {
    ds_err e = { 0 };
    float *lg = malloc((size_t)m->cfg.vocab_size * sizeof *lg);
    ds_seq_chunk ch = { c, ids, n, false };
    if (ds_model_forward(m, NULL, &ch, 1, lg, NULL, &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
    free(lg);
}

static bool same_rows(const ds_kvcache *a, const ds_kvcache *b, int64_t n) {
    for (int64_t l = 0; l < a->n_layer; l++)
        if (memcmp(a->kv[l], b->kv[l], (size_t)(n * a->width[l]) * sizeof(float))) return false;
    return true;
}

/* The path of the disk block with index k (read from the headers), or "". */
static void block_file(const char *dir, uint64_t k, char *out, size_t cap) {
    char cmd[512];
    out[0] = 0;
    snprintf(cmd, sizeof cmd, "ls %s/*.kvb 2>/dev/null", dir);
    FILE *ls = popen(cmd, "r");
    char line[512];
    while (ls && fgets(line, sizeof line, ls)) {
        line[strcspn(line, "\n")] = 0;
        FILE *f = fopen(line, "rb");
        unsigned char h[32];
        uint64_t kk;
        if (f && fread(h, 1, 32, f) == 32) {
            memcpy(&kk, h + 24, 8);
            if (kk == k) snprintf(out, cap, "%s", line);
        }
        if (f) fclose(f);
    }
    if (ls) pclose(ls);
}

TEST(prefix_cache_memory_and_disk_blocks) {
    ds_model *m = chat_model();
    if (!m) return;
    ds_err e = { 0 };
    int32_t ids[140];
    for (int i = 0; i < 140; i++) ids[i] = (i * 13 + 7) % 500;
    ds_kvcache src, src2, dst;
    ds_kvcache_init(&src, m, 256, &e);
    ds_kvcache_init(&src2, m, 256, &e);
    ds_kvcache_init(&dst, m, 256, &e);
    fill(m, &src, ids, 100);
    fill(m, &src2, ids, 140);
    char dir[] = "/tmp/ds_pc_testXXXXXX", cmd[1200], path[512];
    CHECK(mkdtemp(dir) != NULL);
    pc_opts o = { 1 << 20, 16, dir, 1 << 20 }; /* 16-token blocks */
    pc_store *p;
    CHECK(pc_open(&p, m, &o, &e) == 0);
    CHECK(pc_save(p, &src, ids, 8, &e) == 0); /* below min_tokens: not stored */
    pc_stats st;
    pc_get_stats(p, &st);
    CHECK_EQ_INT(st.entries, 0);
    CHECK(pc_save(p, &src, ids, 100, &e) == 0);
    CHECK(pc_save_disk(p, &src, ids, 100, &e) == 0);
    pc_get_stats(p, &st);
    CHECK_EQ_INT(st.disk_writes, 6); /* full blocks only: 96 tokens */
    CHECK_EQ_INT(st.disk_entries, 6);
    int32_t q[120];
    memcpy(q, ids, 100 * 4);
    for (int i = 100; i < 120; i++) q[i] = 3;
    q[60] = 499; /* diverges at 60: memory has 60, disk 48 */
    pc_entry *hit;
    CHECK_EQ_INT(pc_lookup(p, q, 120, &hit), 60);
    CHECK(pc_restore(p, hit, q, &dst, 60, &e) == 0);
    CHECK_EQ_INT(dst.n_past, 60);
    CHECK(same_rows(&src, &dst, 60));
    /* a longer conversation writes only its new blocks */
    CHECK(pc_save_disk(p, &src, ids, 100, &e) == 0);
    CHECK(pc_save_disk(p, &src2, ids, 140, &e) == 0);
    pc_get_stats(p, &st);
    CHECK_EQ_INT(st.disk_writes, 8);
    pc_close(p);
    /* a fresh store (empty memory) finds the blocks; the latents round-trip */
    CHECK(pc_open(&p, m, &o, &e) == 0);
    pc_get_stats(p, &st);
    CHECK_EQ_INT(st.disk_entries, 8);
    ds_kvcache_clear(&dst);
    CHECK_EQ_INT(pc_lookup(p, ids, 100, &hit), 96);
    CHECK(pc_restore(p, hit, ids, &dst, 95, &e) == 0);
    CHECK_EQ_INT(dst.n_past, 95);
    CHECK(same_rows(&src, &dst, 95));
    pc_get_stats(p, &st);
    CHECK_EQ_INT(st.disk_hits, 6);
    CHECK_EQ_INT(pc_lookup(p, ids, 140, &hit), 128); /* all 8 blocks */
    pc_close(p);
    /* corrupt block 2's latents: the restore stops before it and the file goes */
    block_file(dir, 2, path, sizeof path);
    CHECK(path[0] != 0);
    snprintf(cmd, sizeof cmd, "printf 'X' | dd of=%s bs=1 seek=3000 conv=notrunc 2>/dev/null", path);
    CHECK(system(cmd) == 0);
    CHECK(pc_open(&p, m, &o, &e) == 0);
    CHECK_EQ_INT(pc_lookup(p, ids, 140, &hit), 128);
    ds_kvcache_clear(&dst);
    ds_err le = { 0 };
    CHECK(pc_restore(p, hit, ids, &dst, 128, &le) == 0);
    CHECK_EQ_INT(dst.n_past, 32);
    CHECK(same_rows(&src, &dst, 32));
    pc_get_stats(p, &st);
    CHECK_EQ_INT(st.disk_rejected, 1);
    CHECK_EQ_INT(st.disk_entries, 7);
    CHECK(access(path, F_OK) != 0);
    pc_close(p);
    /* a truncated block is dropped at scan time; a file of another model is left alone */
    block_file(dir, 0, path, sizeof path);
    snprintf(cmd, sizeof cmd, "truncate -s 100 %s", path);
    CHECK(system(cmd) == 0);
    char foreign[600];
    snprintf(foreign, sizeof foreign, "%s/0123456789abcdef.kvb", dir);
    unsigned char hd[80] = { 'D', 'S', 'K', 'V', 'B', 0, 0, 1, 1, 0, 0, 0, 80, 0, 0, 0, 0x34, 0x12 };
    FILE *ff = fopen(foreign, "wb");
    CHECK(ff && fwrite(hd, 1, sizeof hd, ff) == sizeof hd);
    if (ff) fclose(ff);
    CHECK(pc_open(&p, m, &o, &e) == 0);
    pc_get_stats(p, &st);
    CHECK_EQ_INT(st.disk_rejected, 1);
    CHECK_EQ_INT(st.disk_entries, 6);
    CHECK_EQ_INT(pc_lookup(p, ids, 140, &hit), 0);
    pc_close(p);
    CHECK(access(foreign, F_OK) == 0);
    /* the disk budget evicts the least recently used blocks */
    pc_opts small = { 0, 16, dir, 3 * (80 + 4 * 16 + 4 * 2 * 16 * 40) };
    CHECK(pc_open(&p, m, &small, &e) == 0);
    pc_get_stats(p, &st);
    CHECK(st.disk_entries <= 3);
    pc_close(p);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    ds_kvcache_free(&src);
    ds_kvcache_free(&src2);
    ds_kvcache_free(&dst);
    ds_model_close(m);
}

/* ------------------------------------------------------------ scheduler */

typedef struct run_out {
    char content[4096], reasoning[1024];
    int finish;
    int n_calls;
    char call_name[64], call_args[256];
    char error[256];
    int64_t n_tokens;
    int32_t ids[512];
    float lps[512];
} run_out;

static srv_job_params base_params(const int32_t *prompt, int64_t n, int64_t max_tokens, uint64_t seed) {
    srv_job_params p;
    memset(&p, 0, sizeof p);
    p.prompt = prompt;
    p.n_prompt = n;
    p.n = 1;
    ds_sampler_params_default(&p.sp);
    p.sp.temperature = 1.0f;
    p.sp.seed = seed;
    p.max_tokens = max_tokens;
    p.logprobs = true;
    p.fmt = DS_CHAT_V3;
    return p;
}

/* Collects a job's events until it ends: out[c] for choice c < nc. */
static void collect_n(srv_job *j, run_out *out, int nc) {
    for (;;) {
        srv_event *evs;
        int n;
        bool over = srv_job_wait(j, 5.0, &evs, &n);
        for (int i = 0; i < n; i++) {
            srv_event *ev = &evs[i];
            if (ev->choice >= 0 && ev->choice < nc) {
                run_out *o = &out[ev->choice];
                if (ev->type == SRV_EV_CONTENT) strncat(o->content, ev->text, sizeof o->content - strlen(o->content) - 1);
                if (ev->type == SRV_EV_REASONING) strncat(o->reasoning, ev->text, sizeof o->reasoning - strlen(o->reasoning) - 1);
                if (ev->type == SRV_EV_FINISH) o->finish = ev->finish;
                if (ev->type == SRV_EV_ERROR) snprintf(o->error, sizeof o->error, "%s", ev->text);
                if (ev->type == SRV_EV_TOOL_CALLS && ev->calls.n_calls > 0) {
                    o->n_calls = ev->calls.n_calls;
                    snprintf(o->call_name, sizeof o->call_name, "%s", ev->calls.calls[0].name);
                    snprintf(o->call_args, sizeof o->call_args, "%s", ev->calls.calls[0].arguments);
                }
                for (int k = 0; k < ev->n_lp && o->n_tokens < 512; k++) {
                    o->lps[o->n_tokens] = ev->lp[k].lp;
                    o->ids[o->n_tokens++] = ev->lp[k].id;
                }
            }
            srv_event_free(ev);
        }
        free(evs);
        if (over) break;
    }
}
static void collect(srv_job *j, run_out *o, int c) { (void)c; collect_n(j, o, 1); }

static srv_sched *start_sched_opts(ds_model *m, ds_tokenizer *t, int slots, int64_t batch, bool det) {
    srv_sched *s = NULL;
    ds_err e = { 0 };
    srv_sched_opts o = { slots, 1024, batch, 64, 16 << 20, 8, NULL, 0, det, DS_KV_F32, false };
    if (srv_sched_init(&s, m, t, &o, &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
    return s;
}
static srv_sched *start_sched(ds_model *m, ds_tokenizer *t, int slots) { return start_sched_opts(m, t, slots, 64, false); }

static srv_job *submit(srv_sched *s, const srv_job_params *p) {
    srv_job *j = NULL;
    ds_err e = { 0 };
    if (srv_job_new(&j, p, &e) || srv_sched_submit(s, j, &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
    return j;
}

static int64_t encode(ds_tokenizer *t, const char *text, int32_t *out, int64_t cap) {
    tok_ids v = { 0 };
    ds_err e = { 0 };
    tok_encode_append(t, text, strlen(text), TOK_PARSE_SPECIAL, &v, &e);
    int64_t n = v.n < cap ? v.n : cap;
    memcpy(out, v.v, (size_t)n * 4);
    tok_ids_free(&v);
    return n;
}

TEST(sched_forced_tool_call_reasoning_and_stop) {
    ds_model *m = chat_model();
    ds_tokenizer *t = chat_tok();
    if (!m || !t) return;
    srv_sched *s = start_sched(m, t, 2);
    int32_t prompt[64], forced[256];
    int64_t np = encode(t, "<｜begin▁of▁sentence｜><｜User｜>weather?<｜Assistant｜>", prompt, 64);
    /* a DeepSeek-V3 tool call, forced token by token: parsed into tool_calls */
    int64_t nf = encode(t, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                           "{\"location\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", forced, 256);
    srv_job_params p = base_params(prompt, np, 200, 1);
    p.chat = true;
    p.tools = SRV_TOOLS_AUTO;
    p.forced = forced;
    p.n_forced = nf;
    srv_job *j = submit(s, &p);
    run_out o;
    memset(&o, 0, sizeof o);
    collect(j, &o, 0);
    CHECK_EQ_INT(o.finish, SRV_FINISH_TOOL_CALLS);
    CHECK_EQ_INT(o.n_calls, 1);
    CHECK(!strcmp(o.call_name, "get_weather"));
    CHECK(!strcmp(o.call_args, "{\"location\": \"Paris\"}"));
    srv_job_release(j);
    /* reasoning split: <think>...</think> then content; the stop string cuts the content */
    nf = encode(t, "<think>let me think</think>The answer is 42. STOP here", forced, 256);
    p = base_params(prompt, np, 200, 1);
    p.chat = true;
    p.forced = forced;
    p.n_forced = nf;
    const char *stop[] = { "STOP" };
    p.stop = stop;
    p.n_stop = 1;
    j = submit(s, &p);
    memset(&o, 0, sizeof o);
    collect(j, &o, 0);
    CHECK_MSG(!strcmp(o.reasoning, "let me think"), "reasoning '%s'", o.reasoning);
    CHECK_MSG(!strcmp(o.content, "The answer is 42. "), "content '%s'", o.content);
    CHECK_EQ_INT(o.finish, SRV_FINISH_STOP);
    srv_job_usage u;
    srv_job_get_usage(j, &u);
    CHECK_EQ_INT(u.prompt_tokens, np);
    CHECK(u.reasoning_tokens > 0);
    srv_job_release(j);
    srv_sched_free(s);
    tok_free(t);
    ds_model_close(m);
}

TEST(sched_json_mode_random_weights) {
    ds_model *m = chat_model();
    ds_tokenizer *t = chat_tok();
    if (!m || !t) return;
    srv_sched *s = start_sched(m, t, 4);
    CHECK(srv_sched_json_supported(s));
    int32_t prompt[64];
    int64_t np = encode(t, "<｜begin▁of▁sentence｜><｜User｜>Give me JSON<｜Assistant｜>", prompt, 64);
    int budgets[] = { 2, 3, 5, 8, 13, 40, 120 };
    for (size_t b = 0; b < sizeof budgets / sizeof budgets[0]; b++) {
        for (int seed = 0; seed < 4; seed++) {
            srv_job_params p = base_params(prompt, np, budgets[b], (uint64_t)seed);
            p.chat = true;
            p.json_mode = true;
            p.sp.temperature = seed == 0 ? 0.0f : 1.5f;
            srv_job *j = submit(s, &p);
            run_out o;
            memset(&o, 0, sizeof o);
            collect(j, &o, 0);
            json_error_t je;
            json_t *js = json_loads(o.content, 0, &je);
            CHECK_MSG(js && json_is_object(js), "budget %d seed %d: not a JSON object: [%s] %s", budgets[b], seed, o.content, je.text);
            CHECK_MSG(o.n_tokens <= budgets[b], "budget %d: %lld tokens", budgets[b], (long long)o.n_tokens);
            json_decref(js);
            srv_job_release(j);
        }
    }
    srv_sched_free(s);
    tok_free(t);
    ds_model_close(m);
}

/* Same seed, same prompt: the same tokens alone, batched with others, with n = 2, or reusing a cached prefix. */
TEST(sched_same_seed_same_tokens_under_load) {
    ds_model *m = chat_model();
    ds_tokenizer *t = chat_tok();
    if (!m || !t) return;
    srv_sched *s = start_sched(m, t, 4);
    int32_t prompt[64], other[64];
    int64_t np = encode(t, "<｜begin▁of▁sentence｜>You are kind.<｜User｜>Tell me a story<｜Assistant｜>", prompt, 64);
    int64_t no = encode(t, "<｜begin▁of▁sentence｜><｜User｜>Something else entirely, please<｜Assistant｜>", other, 64);
    srv_job_params p = base_params(prompt, np, 40, 123);
    srv_job *j = submit(s, &p);
    run_out alone;
    memset(&alone, 0, sizeof alone);
    collect(j, &alone, 0);
    srv_job_release(j);
    CHECK(alone.n_tokens > 0);
    /* now together with three other requests, and again as choice 0 of n = 2 */
    srv_job_params po = base_params(other, no, 40, 5);
    srv_job *js[3];
    for (int i = 0; i < 3; i++) { po.sp.seed = (uint64_t)i; js[i] = submit(s, &po); }
    srv_job_params p2 = p;
    p2.n = 2;
    srv_job *jb = submit(s, &p2);
    run_out c0, c1;
    memset(&c0, 0, sizeof c0);
    memset(&c1, 0, sizeof c1);
    for (int i = 0; i < 3; i++) {
        run_out x;
        memset(&x, 0, sizeof x);
        collect(js[i], &x, 0);
        srv_job_release(js[i]);
    }
    collect(jb, &c0, 0);
    srv_job_usage u;
    srv_job_get_usage(jb, &u);
    CHECK_MSG(u.cached_tokens == np - 1, "second run reused %lld of %lld prompt tokens", (long long)u.cached_tokens, (long long)np);
    srv_job_release(jb);
    CHECK_EQ_INT(c0.n_tokens, alone.n_tokens);
    CHECK(!memcmp(c0.ids, alone.ids, (size_t)alone.n_tokens * 4));
    CHECK(!strcmp(c0.content, alone.content));
    srv_sched_free(s);
    tok_free(t);
    ds_model_close(m);
}

TEST(sched_cancel_frees_slot_and_n_choices) {
    ds_model *m = chat_model();
    ds_tokenizer *t = chat_tok();
    if (!m || !t) return;
    srv_sched *s = start_sched(m, t, 2);
    int32_t prompt[64];
    int64_t np = encode(t, "<｜begin▁of▁sentence｜><｜User｜>go on forever<｜Assistant｜>", prompt, 64);
    srv_job_params p = base_params(prompt, np, 900, 9);
    p.ignore_eos = true;
    p.token_delay_ms = 20;
    srv_job *j = submit(s, &p);
    srv_stats st;
    for (int i = 0; i < 100; i++) {
        srv_sched_stats(s, &st);
        if (st.slots_busy == 1) break;
        usleep(10000);
    }
    CHECK_EQ_INT(st.slots_busy, 1);
    srv_job_cancel(j);
    for (int i = 0; i < 100; i++) {
        srv_sched_stats(s, &st);
        if (st.slots_busy == 0) break;
        usleep(10000);
    }
    CHECK_EQ_INT(st.slots_busy, 0);
    CHECK_EQ_INT(st.jobs_cancelled, 1);
    srv_job_release(j);
    /* n = 3 with 2 slots: all three choices finish, with different seeds */
    p = base_params(prompt, np, 12, 4);
    p.n = 3;
    p.ignore_eos = true;
    j = submit(s, &p);
    run_out o[3];
    memset(o, 0, sizeof o);
    collect_n(j, o, 3);
    for (int c = 0; c < 3; c++) CHECK_MSG(o[c].n_tokens == 12 && o[c].finish == SRV_FINISH_LENGTH, "choice %d", c);
    CHECK(memcmp(o[0].ids, o[1].ids, 12 * 4) || memcmp(o[1].ids, o[2].ids, 12 * 4));
    srv_job_usage u;
    srv_job_get_usage(j, &u);
    CHECK_EQ_INT(u.completion_tokens, 36);
    srv_job_release(j);
    srv_sched_free(s);
    tok_free(t);
    ds_model_close(m);
}

/* Deterministic mode: the log-probabilities themselves (not only the
 * sampled tokens) are bit-identical alone, batched with other prefills and
 * decodes, as choice 0 of n = 2, and after reusing a cached prefix. */
TEST(sched_deterministic_bitwise) {
    ds_model *m = chat_model();
    ds_tokenizer *t = chat_tok();
    if (!m || !t) return;
    int32_t prompt[128], other[128];
    int64_t np = encode(t, "<｜begin▁of▁sentence｜>You are a kind and patient assistant who answers briefly."
                           "<｜User｜>Tell me a story about a fox and a dog<｜Assistant｜>", prompt, 128);
    int64_t no = encode(t, "<｜begin▁of▁sentence｜><｜User｜>Something else entirely, and rather longer than that, please<｜Assistant｜>",
                        other, 128);
    CHECK(np > 20 && no > 16);
    run_out alone, c0, tmp;
    for (int det = 1; det >= 0; det--) {
        srv_sched *s = start_sched_opts(m, t, 4, 8, det); /* 8-token prefill chunks */
        srv_job_params p = base_params(prompt, np, 30, 77);
        srv_job *j = submit(s, &p);
        memset(&alone, 0, sizeof alone);
        collect(j, &alone, 0);
        srv_job_release(j);
        /* the same request next to three others (different prompts, prefill mixed with decode), and as n = 2 */
        srv_job_params po = base_params(other, no, 30, 5);
        srv_job *js[3];
        for (int i = 0; i < 3; i++) { po.sp.seed = (uint64_t)i; js[i] = submit(s, &po); }
        srv_job_params p2 = p;
        p2.n = 2;
        srv_job *jb = submit(s, &p2);
        for (int i = 0; i < 3; i++) {
            memset(&tmp, 0, sizeof tmp);
            collect(js[i], &tmp, 0);
            srv_job_release(js[i]);
        }
        run_out two[2];
        memset(two, 0, sizeof two);
        collect_n(jb, two, 2);
        srv_job_usage u;
        srv_job_get_usage(jb, &u);
        srv_job_release(jb);
        c0 = two[0];
        bool same = c0.n_tokens == alone.n_tokens && !memcmp(c0.ids, alone.ids, (size_t)alone.n_tokens * 4) &&
                    !memcmp(c0.lps, alone.lps, (size_t)alone.n_tokens * sizeof(float));
        if (det) {
            CHECK_MSG(same, "deterministic: batched log-probabilities differ from alone");
            CHECK_MSG(u.cached_tokens > 0 && u.cached_tokens % 8 == 0, "deterministic reuse is whole chunks: %lld",
                      (long long)u.cached_tokens);
        } else {
            /* default mode: same tokens (almost surely), log-probabilities equal to ~1e-5 */
            CHECK(c0.n_tokens == alone.n_tokens && !memcmp(c0.ids, alone.ids, (size_t)alone.n_tokens * 4));
            float md = 0;
            for (int64_t k = 0; k < alone.n_tokens; k++) md = (float)ds_max_err(md, fabsf(c0.lps[k] - alone.lps[k]));
            CHECK_MSG(md < 1e-3f, "batched log-probabilities differ by %g", md);
        }
        srv_sched_free(s);
    }
    tok_free(t);
    ds_model_close(m);
}

/* Long prompts (more than one --batch chunk of >= 192 tokens: the expanded
 * attention form) keep their decompressed K/V across their chunks, one
 * prompt at a time: the same log-probabilities bit for bit as without the
 * store — alone, next to a short prefill, and two long prompts at once (one
 * holds the store, the other runs plain chunks) — and the store is given
 * back when a prefill ends (else no later prompt could have it). */
TEST(sched_prefill_store_same_bits) {
    ds_model *m = chat_model();
    ds_tokenizer *t = chat_tok();
    if (!m || !t) return;
    enum { NP = 520 };
    static int32_t pr[4][NP];
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < NP; i++) pr[k][i] = (int32_t)(3 + (i * (37 + 16 * k) + 11 * k) % 500);
    static run_out ref[5], got[5];
    for (int use = 0; use < 2; use++) {
        srv_sched *s = NULL;
        ds_err e = { 0 };
        srv_sched_opts o = { 2, 1024, 200, 64, 0, 8, NULL, 0, true, DS_KV_F32, !use }; /* deterministic */
        if (srv_sched_init(&s, m, t, &o, &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
        run_out *r = use ? got : ref;
        memset(r, 0, 5 * sizeof *r);
        srv_job_params p[4];
        for (int k = 0; k < 4; k++) {
            p[k] = base_params(pr[k], NP, 6, (uint64_t)(3 + k));
            p[k].ignore_eos = true;
        }
        /* 0 alone; 0 again (its first two chunks reused: one chunk left, no store) with 1; then 2 and 3 at once */
        srv_job *j = submit(s, &p[0]);
        collect(j, &r[0], 0);
        srv_job_release(j);
        for (int pair = 0; pair < 2; pair++) {
            srv_job *ja = submit(s, &p[pair ? 2 : 0]), *jb = submit(s, &p[pair ? 3 : 1]);
            collect(ja, &r[pair ? 2 : 4], 0);
            collect(jb, &r[pair ? 3 : 1], 0);
            srv_job_release(ja);
            srv_job_release(jb);
        }
        for (int k = 0; k < 5; k++) CHECK_MSG(r[k].n_tokens == 6, "use %d, run %d: %lld tokens", use, k, (long long)r[k].n_tokens);
        CHECK_MSG(!memcmp(r[4].lps, r[0].lps, sizeof r[0].lps), "use %d: batched log-probabilities differ from alone", use);
        srv_stats st;
        srv_sched_stats(s, &st);
        /* 0 alone: one store; 0 again: none; 1: one; 2 and 3 at once: one */
        CHECK_MSG(st.prefill_stores == (use ? 3 : 0), "use %d: %lld prefill stores", use, (long long)st.prefill_stores);
        srv_sched_free(s);
    }
    for (int k = 0; k < 5; k++)
        CHECK_MSG(!memcmp(ref[k].ids, got[k].ids, sizeof ref[k].ids) && !memcmp(ref[k].lps, got[k].lps, sizeof ref[k].lps),
                  "run %d: the prefill store changed the log-probabilities", k);
    tok_free(t);
    ds_model_close(m);
}
