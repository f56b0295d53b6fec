/*
 * test_api.c - the public API (include/deepseek.h), linked against the
 * static libdeepseek.a: errors, model facts, tokenizer round trips and the
 * streaming detokenizer, chat templates, hand-written decode loops against
 * deepseek_generate, truncate, MTP logits, callback stop, context limits
 * and two sessions on two threads over one model.
 *
 *   test_api MODEL CHAT_MODEL OUT_DIR
 * writes OUT_DIR/greedy.txt and OUT_DIR/seeded.txt (generations of
 * "ROMEO:", 24 tokens: greedy; temperature 0.8, top-p 0.9, seed 7) for
 * run_lib_tests.sh to compare with `deepseek generate`.
 */
#include <deepseek.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)
#define OK(call) do { deepseek_error e_ = { 0 }; int rc_ = (call); (void)e_; if (rc_) { \
    fprintf(stderr, "FAIL %s:%d: %s -> %d\n", __FILE__, __LINE__, #call, rc_); fails++; } } while (0)

static deepseek_error err;

static int argmax(const float *x, int64_t n) {
    int b = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[b]) b = (int)i;
    return b;
}

static float maxdiff(const float *a, const float *b, int64_t n) {
    float d = 0;
    for (int64_t i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

typedef struct { int32_t toks[256]; int n; int stop_after; } collect;
static int on_tok(void *u, int32_t t, const char *text, size_t len) {
    collect *c = u;
    (void)text; (void)len;
    if (t >= 0 && c->n < 256) c->toks[c->n++] = t;
    return c->stop_after && c->n >= c->stop_after;
}

static char *gen_text(deepseek_model *m, const deepseek_sampler_params *sp, int64_t n) {
    deepseek_session_options so;
    deepseek_session_options_default(&so);
    so.sampling = *sp;
    deepseek_session *s = NULL;
    char *text = NULL;
    if (deepseek_session_new(&s, m, &so, &err)) return NULL;
    deepseek_generate_options go;
    deepseek_generate_options_default(&go);
    go.max_tokens = n;
    if (deepseek_generate_text(s, "ROMEO:", &go, NULL, NULL, &text, NULL, &err)) text = NULL;
    deepseek_session_free(s);
    return text;
}

typedef struct { deepseek_model *m; char *text; } thread_arg;
static void *thread_main(void *p) {
    thread_arg *a = p;
    deepseek_sampler_params sp;
    deepseek_sampler_params_default(&sp);
    a->text = gen_text(a->m, &sp, 24);
    return NULL;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) { fails++; return; }
    fprintf(f, "%s\n", text ? text : "(null)");
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: test_api MODEL CHAT_MODEL OUT_DIR\n"); return 2; }
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", DEEPSEEK_VERSION_MAJOR, DEEPSEEK_VERSION_MINOR, DEEPSEEK_VERSION_PATCH);
    CHECK(strcmp(deepseek_version(), want) == 0);

    /* errors: code and message, no model */
    deepseek_model *m = NULL;
    int rc = deepseek_model_load(&m, "/nonexistent/model", NULL, &err);
    CHECK(rc < 0 && m == NULL && err.code == rc && err.message[0]);

    OK(deepseek_model_load(&m, argv[1], NULL, &err));
    if (!m) { fprintf(stderr, "load: %s\n", err.message); return 1; }
    deepseek_model_info info;
    deepseek_model_get_info(m, &info);
    CHECK(strcmp(info.architecture, "deepseek_v3") == 0 && info.arch_version == 3);
    CHECK(info.vocab_size == 258 && info.n_layer == 4 && info.n_ctx_train == 256 && info.n_ctx == 256);
    CHECK(info.has_tokenizer && info.n_mtp == 1 && !info.has_chat_template);
    int64_t V = info.vocab_size;

    /* tokenizer: round trip, streaming == whole */
    const char *txt = "ROMEO: caf\xc3\xa9 \xe2\x82\xac!";
    int32_t *ids = NULL;
    int64_t n = 0;
    OK(deepseek_tokenize(m, txt, strlen(txt), 0, &ids, &n, &err));
    CHECK(n > 0);
    char *back = NULL;
    size_t bl = 0;
    OK(deepseek_detokenize(m, ids, n, 0, &back, &bl, &err));
    CHECK(back && bl == strlen(txt) && strcmp(back, txt) == 0);
    deepseek_detok *d = NULL;
    OK(deepseek_detok_new(&d, m, 1, &err));
    char acc[256] = "";
    for (int64_t i = 0; i < n; i++) {
        const char *t;
        size_t l;
        OK(deepseek_detok_push(d, ids[i], &t, &l, &err));
        strncat(acc, t, l);
    }
    const char *t;
    size_t l;
    OK(deepseek_detok_flush(d, &t, &l, &err));
    strncat(acc, t, l);
    CHECK(strcmp(acc, txt) == 0);
    int32_t bad = 100000;
    CHECK(deepseek_detok_push(d, bad, &t, &l, &err) == DEEPSEEK_ERANGE && err.message[0]);
    deepseek_detok_free(d);
    deepseek_free(back);
    deepseek_free(ids);

    /* greedy and seeded text (compared with the CLI by the script) */
    deepseek_sampler_params sp;
    deepseek_sampler_params_default(&sp);
    char *greedy = gen_text(m, &sp, 24);
    CHECK(greedy && *greedy);
    write_file(argv[3], "greedy.txt", greedy);
    deepseek_sampler_params seeded = sp;
    seeded.temperature = 0.8f;
    seeded.top_p = 0.9f;
    seeded.seed = 7;
    char *st = gen_text(m, &seeded, 24);
    write_file(argv[3], "seeded.txt", st);
    char *st2 = gen_text(m, &seeded, 24);
    CHECK(st && st2 && strcmp(st, st2) == 0);   /* same seed, same text */
    free(st2);
    free(st);

    /* a hand-written greedy loop (decode + logits + sampler) == deepseek_generate */
    OK(deepseek_tokenize(m, "ROMEO:", 6, DEEPSEEK_TOKENIZE_SPECIAL | DEEPSEEK_TOKENIZE_ADD_BOS, &ids, &n, &err));
    deepseek_session *s = NULL;
    OK(deepseek_session_new(&s, m, NULL, &err));
    collect c = { .n = 0 };
    deepseek_generate_options go;
    deepseek_generate_options_default(&go);
    go.max_tokens = 16;
    go.ignore_eos = 1;
    deepseek_generate_result res;
    OK(deepseek_generate(s, ids, n, &go, on_tok, &c, &res, &err));
    CHECK(c.n == 16 && res.n_gen == 16 && res.finish == DEEPSEEK_FINISH_LENGTH && res.last_token == c.toks[15]);
    CHECK(deepseek_session_n_past(s) == n + 15 && deepseek_session_logits(s, NULL) == NULL);
    int64_t nt = 0;
    const int32_t *cached = deepseek_session_tokens(s, &nt);
    CHECK(nt == n + 15 && cached[n] == c.toks[0] && cached[n + 14] == c.toks[14]);
    deepseek_session_free(s);

    /* pull-style generation: the same tokens, the same cache */
    OK(deepseek_session_new(&s, m, NULL, &err));
    OK(deepseek_generate_begin(s, ids, n, &go, &err));
    int32_t pt;
    const char *ptext;
    size_t plen;
    int fin = -1, np = 0, same_pull = 1;
    while (deepseek_generate_next(s, &pt, &ptext, &plen, &fin, &err) == 1) same_pull &= np < 16 && pt == c.toks[np++];
    CHECK(same_pull && np == 16 && fin == DEEPSEEK_FINISH_LENGTH && deepseek_session_n_past(s) == n + 15);
    CHECK(deepseek_generate_next(s, &pt, &ptext, &plen, &fin, &err) == 0 && pt == -1);
    deepseek_session_free(s);
    OK(deepseek_session_new(&s, m, NULL, &err));
    go.max_tokens = 24;
    go.ignore_eos = 0;
    OK(deepseek_generate_begin(s, ids, n, &go, &err));
    char pulled[1024] = "";
    for (;;) {
        int more = deepseek_generate_next(s, &pt, &ptext, &plen, &fin, &err);
        strncat(pulled, ptext, plen);
        if (more != 1) break;
    }
    CHECK(strcmp(pulled, greedy) == 0);
    deepseek_session_free(s);
    go.max_tokens = 16;
    go.ignore_eos = 1;

    deepseek_sampler *smp = NULL;
    OK(deepseek_sampler_new(&smp, &sp, V, &err));
    OK(deepseek_session_new(&s, m, NULL, &err));
    float *all = malloc((size_t)(n * V) * sizeof(float));
    OK(deepseek_session_decode(s, ids, n, all, &err));
    const float *lg = deepseek_session_logits(s, NULL);
    CHECK(lg && maxdiff(lg, all + (n - 1) * V, V) == 0);
    float *first = malloc((size_t)V * sizeof(float));
    memcpy(first, lg, (size_t)V * sizeof(float));
    int same = 1;
    for (int i = 0; i < 16; i++) {
        float *cp = malloc((size_t)V * sizeof(float));
        memcpy(cp, deepseek_session_logits(s, NULL), (size_t)V * sizeof(float));
        int32_t tk = deepseek_sampler_sample(smp, cp);
        CHECK(tk == argmax(deepseek_session_logits(s, NULL), V));
        deepseek_sampler_accept(smp, tk);
        free(cp);
        same &= tk == c.toks[i];
        OK(deepseek_session_decode(s, &tk, 1, NULL, &err));
    }
    CHECK(same);
    /* truncate back to the prompt: its logits again */
    OK(deepseek_session_truncate(s, n, &err));
    CHECK(deepseek_session_n_past(s) == n && maxdiff(deepseek_session_logits(s, NULL), first, V) < 1e-4f);
    deepseek_session_free(s);
    deepseek_sampler_free(smp);

    /* errors: bad id, context full (nothing appended) */
    deepseek_session_options so;
    deepseek_session_options_default(&so);
    so.n_ctx = 8;
    OK(deepseek_session_new(&s, m, &so, &err));
    int32_t badid = 9999;
    CHECK(deepseek_session_decode(s, &badid, 1, NULL, &err) == DEEPSEEK_ERANGE && strstr(err.message, "9999"));
    int32_t nine[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    CHECK(deepseek_session_decode(s, nine, 9, NULL, &err) == DEEPSEEK_ERANGE && deepseek_session_n_past(s) == 0);
    OK(deepseek_session_decode(s, nine, 8, NULL, &err));
    CHECK(deepseek_session_n_past(s) == 8);
    deepseek_session_free(s);
    so.n_ctx = 0;
    so.sampling.temperature = -1;
    CHECK(deepseek_session_new(&s, m, &so, &err) == DEEPSEEK_ERANGE && strstr(err.message, "temperature"));

    /* the callback stops the generation */
    OK(deepseek_session_new(&s, m, NULL, &err));
    collect c3 = { .stop_after = 3 };
    OK(deepseek_generate(s, ids, n, &go, on_tok, &c3, &res, &err));
    CHECK(c3.n == 3 && res.n_gen == 3 && res.finish == DEEPSEEK_FINISH_CALLBACK);
    deepseek_session_free(s);

    /* MTP logits: batch prefill == token by token, and after truncate */
    so.sampling.temperature = 0;
    so.mtp = 1;
    deepseek_session *a = NULL, *b = NULL;
    OK(deepseek_session_new(&a, m, &so, &err));
    OK(deepseek_session_new(&b, m, &so, &err));
    OK(deepseek_session_decode(a, ids, n, NULL, &err));
    for (int64_t i = 0; i < n; i++) OK(deepseek_session_decode(b, ids + i, 1, NULL, &err));
    const float *ma = NULL, *mb = NULL;
    int32_t next = c.toks[0];
    OK(deepseek_session_mtp_logits(a, next, &ma, &err));
    float *mcopy = malloc((size_t)V * sizeof(float));
    if (ma) memcpy(mcopy, ma, (size_t)V * sizeof(float));
    OK(deepseek_session_mtp_logits(b, next, &mb, &err));
    CHECK(ma && mb && maxdiff(mcopy, mb, V) < 1e-4f);
    OK(deepseek_session_decode(a, &next, 1, NULL, &err));
    OK(deepseek_session_truncate(a, n, &err));
    OK(deepseek_session_mtp_logits(a, next, &ma, &err));
    CHECK(ma && maxdiff(mcopy, ma, V) < 1e-4f);
    deepseek_session_free(a);
    deepseek_session_free(b);
    so.mtp = 0;
    free(mcopy);

    /* two sessions on two threads over one model: the same text as alone */
    pthread_t th[2];
    thread_arg ta[2] = { { m, NULL }, { m, NULL } };
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, thread_main, &ta[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) { CHECK(ta[i].text && strcmp(ta[i].text, greedy) == 0); free(ta[i].text); }
    free(greedy);
    free(all);
    free(first);
    deepseek_free(ids);
    deepseek_model_free(m);

    /* DeepSeek-V4 (tests/fixtures/tiny-v4, window 8): its cache keeps 64 spare ring rows, so a
     * truncation further back than that is refilled from the session's ids: the same logits */
    if (deepseek_model_load(&m, "tests/fixtures/tiny-v4", NULL, &err) == DEEPSEEK_OK) {
        int64_t Vv = 0, T = 120;
        OK(deepseek_session_new(&s, m, NULL, &err));
        int32_t toks[120];
        for (int i = 0; i < T; i++) toks[i] = 1 + (i * 37) % 500;
        float *a4 = malloc((size_t)(T * 576) * sizeof(float)), *at = malloc(576 * sizeof(float));
        OK(deepseek_session_decode(s, toks, T, a4, &err));
        deepseek_session_logits(s, &Vv);
        CHECK(Vv == 576);
        for (int64_t cut = 30; cut <= 100; cut += 70) {   /* inside the rings' reach, then beyond */
            if (cut == 100) OK(deepseek_session_decode(s, toks + T - 30, 30, NULL, &err));
            OK(deepseek_session_truncate(s, T - cut, &err));
            CHECK(deepseek_session_n_past(s) == T - cut);
            memcpy(at, deepseek_session_logits(s, NULL), 576 * sizeof(float));
            CHECK(maxdiff(at, a4 + (T - cut - 1) * 576, 576) < 1e-5f);
        }
        free(a4); free(at);
        deepseek_session_free(s);
        deepseek_model_free(m);
    }

    /* DeepSeek-V4's MTP block through a session: after 12 tokens (in one batch, or one at a
     * time), mtp_logits(token 12) is MTP row 11 of the fixture's reference (tools/gen_v4_mtp_fixtures.py) */
    if (deepseek_model_load(&m, "tests/fixtures/tiny-v4-mtp", NULL, &err) == DEEPSEEK_OK) {
        deepseek_model_get_info(m, &info);
        CHECK(info.n_mtp == 1);
        static const int32_t tk[13] = { 0, 273, 295, 435, 547, 22, 84, 474, 546, 145, 180, 500, 244 };   /* ref.json */
        float *ref = malloc(39 * 576 * sizeof(float));
        FILE *f = fopen("tests/fixtures/tiny-v4-mtp/ref_mtp_logits.f32", "rb");
        CHECK(f && fread(ref, sizeof(float), 39 * 576, f) == 39 * 576);
        if (f) fclose(f);
        deepseek_session_options mo;
        deepseek_session_options_default(&mo);
        mo.mtp = 1;
        deepseek_session *va = NULL, *vb = NULL;
        OK(deepseek_session_new(&va, m, &mo, &err));
        OK(deepseek_session_new(&vb, m, &mo, &err));
        OK(deepseek_session_decode(va, tk, 12, NULL, &err));
        for (int i = 0; i < 12; i++) OK(deepseek_session_decode(vb, tk + i, 1, NULL, &err));
        const float *la = NULL, *lb = NULL;
        OK(deepseek_session_mtp_logits(va, tk[12], &la, &err));
        CHECK(la && maxdiff(la, ref + 11 * 576, 576) < 1e-4f);
        OK(deepseek_session_mtp_logits(vb, tk[12], &lb, &err));
        CHECK(lb && maxdiff(lb, ref + 11 * 576, 576) < 1e-4f);
        free(ref);
        deepseek_session_free(va);
        deepseek_session_free(vb);
        deepseek_model_free(m);
    }

    /* chat templates (the tiny chat model has a V3 template) */
    OK(deepseek_model_load(&m, argv[2], NULL, &err));
    if (m) {
        deepseek_model_get_info(m, &info);
        CHECK(info.has_chat_template);
        deepseek_chat_message msgs[] = { { "system", "Be brief." }, { "user", "Hi" } };
        for (int f = DEEPSEEK_CHAT_V3; f <= DEEPSEEK_CHAT_V2; f++) {
            OK(deepseek_chat_apply(m, f, msgs, 2, 1, 1, &ids, &n, &err));
            char *r = NULL;
            OK(deepseek_detokenize(m, ids, n, 0, &r, NULL, &err));
            CHECK(r && strstr(r, "Hi") && strstr(r, "Be brief."));
            if (f == DEEPSEEK_CHAT_V2) CHECK(r && strstr(r, "User: Hi\n\nAssistant:"));
            else CHECK(r && strstr(r, "<\xef\xbd\x9c" "User\xef\xbd\x9c>Hi"));
            if (f == DEEPSEEK_CHAT_R1) CHECK(r && strstr(r, "<think>\n") && deepseek_chat_thinks(f, 0));
            deepseek_free(r);
            deepseek_free(ids);
        }
        deepseek_chat_message badm[] = { { "robot", "x" } };
        CHECK(deepseek_chat_apply(m, 0, badm, 1, 1, 0, &ids, &n, &err) == DEEPSEEK_EINVAL && strstr(err.message, "robot"));
        deepseek_model_free(m);
    }
    const char *reply = "plan</think>answer";
    deepseek_reply_split sp2;
    deepseek_chat_split_reasoning(reply, strlen(reply), 1, &sp2);
    CHECK(sp2.has_reasoning && sp2.reasoning_done && sp2.reasoning_len == 4 && strncmp(sp2.content, "answer", 6) == 0);
    CHECK(deepseek_chat_format_from_name("v3.1") == DEEPSEEK_CHAT_V31 && strcmp(deepseek_chat_format_name(DEEPSEEK_CHAT_R1), "r1") == 0);
    CHECK(deepseek_chat_format_from_name("v4") == DEEPSEEK_CHAT_V4 && strcmp(deepseek_chat_format_name(DEEPSEEK_CHAT_V32), "v3.2") == 0);

    /* V3.2 / V4: the options (tools, reasoning effort) and the prompt as text */
    OK(deepseek_model_load(&m, argv[2], NULL, &err));
    if (m) {
        deepseek_chat_message msgs[] = { { "system", "Be brief." }, { "user", "Hi" } };
        deepseek_chat_options o = { .add_generation_prompt = 1, .thinking = 1, .reasoning_effort = "max",
                                    .tools_json = "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]" };
        char *text = NULL;
        OK(deepseek_chat_apply_opts(m, DEEPSEEK_CHAT_V4, msgs, 2, &o, &ids, &n, &text, &err));
        CHECK(text && strncmp(text, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>Reasoning Effort: Absolute maximum", 44) == 0);
        CHECK(text && strstr(text, "Be brief.\n\n## Tools\n") && strstr(text, "{\"name\": \"f\"}") && n > 100);
        deepseek_free(text);
        deepseek_free(ids);
        o.reasoning_effort = "extreme";
        CHECK(deepseek_chat_apply_opts(m, DEEPSEEK_CHAT_V4, msgs, 2, &o, &ids, &n, NULL, &err) == DEEPSEEK_EINVAL &&
              strstr(err.message, "extreme"));
        deepseek_model_free(m);
    }

    if (fails) { fprintf(stderr, "test_api: %d failure(s)\n", fails); return 1; }
    printf("test_api: all checks passed\n");
    return 0;
}
