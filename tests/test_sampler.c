/*
 * test_sampler.c - sampling: greedy, seeds, top-k/top-p/min-p truncation,
 * penalties, and that draws follow the softmax distribution.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/sampler.h"

static ds_sampler make(ds_sampler_params p, int64_t V) {
    ds_sampler s;
    ds_err e = { 0 };
    if (ds_sampler_init(&s, &p, V, &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
    return s;
}

TEST(sampler_greedy_and_ties) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    ds_sampler s = make(p, 5);
    float l[5] = { 1, 3, 3, -1, 2 };
    CHECK_EQ_INT(ds_sampler_sample(&s, l), 1);   /* lowest id wins a tie */
    ds_sampler_free(&s);
}

TEST(sampler_seed_reproducible_and_distinct) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.temperature = 1.0f;
    int64_t V = 50;
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        p.seed = run == 2 ? 99 : 7;
        ds_sampler s = make(p, V);
        for (int i = 0; i < 64; i++) {
            float l[50];
            for (int v = 0; v < V; v++) l[v] = (float)((v * 37) % 11) * 0.3f;
            int32_t t = ds_sampler_sample(&s, l);
            (run == 0 ? a : run == 1 ? b : c)[i] = t;
        }
        ds_sampler_free(&s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
}

TEST(sampler_follows_softmax) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.temperature = 2.0f;
    p.seed = 1;
    ds_sampler s = make(p, 4);
    float base[4] = { 0.0f, 1.0f, 2.0f, -1.0f };
    int counts[4] = { 0 };
    int N = 40000;
    for (int i = 0; i < N; i++) {
        float l[4];
        memcpy(l, base, sizeof l);
        counts[ds_sampler_sample(&s, l)]++;
    }
    double z = 0, q[4];
    for (int v = 0; v < 4; v++) z += exp(base[v] / 2.0);
    double chi2 = 0;
    for (int v = 0; v < 4; v++) {
        q[v] = exp(base[v] / 2.0) / z;
        double ex = q[v] * N;
        chi2 += (counts[v] - ex) * (counts[v] - ex) / ex;
    }
    CHECK_MSG(chi2 < 16.3, "chi2 = %g (3 dof, p = 0.001)", chi2);   /* would fail for T=1 or no temperature */
    ds_sampler_free(&s);
}

TEST(sampler_truncation) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.temperature = 1.0f;
    float base[6] = { 5, 4.9f, 1, 0, -1, -2 };
    /* top-k 2: only ids 0, 1 */
    p.top_k = 2;
    ds_sampler s = make(p, 6);
    for (int i = 0; i < 500; i++) {
        float l[6];
        memcpy(l, base, sizeof l);
        int32_t t = ds_sampler_sample(&s, l);
        CHECK(t == 0 || t == 1);
    }
    ds_sampler_free(&s);
    /* top-p tiny: always the argmax */
    p.top_k = 0;
    p.top_p = 0.01f;
    s = make(p, 6);
    for (int i = 0; i < 200; i++) {
        float l[6];
        memcpy(l, base, sizeof l);
        CHECK_EQ_INT(ds_sampler_sample(&s, l), 0);
    }
    ds_sampler_free(&s);
    /* min-p 0.5: ids whose prob >= half the top: 0 and 1 only */
    p.top_p = 1.0f;
    p.min_p = 0.5f;
    s = make(p, 6);
    int seen1 = 0;
    for (int i = 0; i < 500; i++) {
        float l[6];
        memcpy(l, base, sizeof l);
        int32_t t = ds_sampler_sample(&s, l);
        CHECK(t == 0 || t == 1);
        seen1 |= t == 1;
    }
    CHECK(seen1);
    ds_sampler_free(&s);
}

TEST(sampler_penalties) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    p.frequency_penalty = 1.0f;
    ds_sampler s = make(p, 3);
    float l[3] = { 2.0f, 1.5f, 0.0f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l), 0);
    ds_sampler_accept(&s, 0);
    float l2[3] = { 2.0f, 1.5f, 0.0f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l2), 1);   /* 2 - 1 < 1.5 */
    CHECK_NEAR(l2[0], 1.0, 1e-6);
    ds_sampler_free(&s);
    /* repetition penalty applies to prompt tokens too: positive logits divided */
    ds_sampler_params_default(&p);
    p.repetition_penalty = 2.0f;
    s = make(p, 3);
    int32_t prompt[1] = { 0 };
    ds_sampler_add_prompt(&s, prompt, 1);
    float l3[3] = { 2.0f, 1.5f, -1.0f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l3), 1);
    CHECK_NEAR(l3[0], 1.0, 1e-6);
    ds_sampler_free(&s);
    /* presence penalty: flat once */
    ds_sampler_params_default(&p);
    p.presence_penalty = 0.4f;
    s = make(p, 2);
    ds_sampler_accept(&s, 0);
    ds_sampler_accept(&s, 0);
    float l4[2] = { 1.0f, 0.7f };
    CHECK_EQ_INT(ds_sampler_sample(&s, l4), 1);
    CHECK_NEAR(l4[0], 0.6, 1e-6);
    ds_sampler_free(&s);
}

TEST(sampler_rejects_bad_params) {
    ds_sampler_params p;
    ds_sampler_params_default(&p);
    ds_err e = { 0 };
    p.top_p = 0.0f;
    CHECK(ds_sampler_params_check(&p, &e) == DS_ERANGE && strstr(e.msg, "top_p"));
    ds_sampler_params_default(&p);
    p.temperature = -1;
    ds_err_clear(&e);
    CHECK(ds_sampler_params_check(&p, &e) == DS_ERANGE && strstr(e.msg, "temperature"));
}

#include "runtime/stop.h"

static void feed_all(ds_stop *s, const char **chunks, int n, char *out, bool *matched) {
    out[0] = 0;
    *matched = false;
    for (int i = 0; i < n; i++) {
        const char *em;
        size_t el;
        if (ds_stop_feed(s, chunks[i], strlen(chunks[i]), &em, &el)) *matched = true;
        strncat(out, em, el);
    }
    if (!*matched) {
        const char *em;
        size_t el;
        ds_stop_flush(s, &em, &el);
        strncat(out, em, el);
    }
}

TEST(stop_strings_across_chunks) {
    ds_stop s;
    ds_stop_init(&s);
    ds_err e = { 0 };
    CHECK(ds_stop_add(&s, "END", &e) == 0);
    CHECK(ds_stop_add(&s, "\n\n", &e) == 0);
    char out[256];
    bool m;
    const char *a[] = { "hello E", "N", "D world" };         /* split across three chunks */
    feed_all(&s, a, 3, out, &m);
    CHECK(m && strcmp(out, "hello ") == 0);
    ds_stop_reset(&s);
    const char *b[] = { "an E", "Nd is not", " a stop\n", "x" }; /* partial prefix released */
    feed_all(&s, b, 4, out, &m);
    CHECK(!m && strcmp(out, "an ENd is not a stop\nx") == 0);
    ds_stop_reset(&s);
    const char *c[] = { "line\n", "\nmore" };
    feed_all(&s, c, 2, out, &m);
    CHECK(m && strcmp(out, "line") == 0);
    ds_stop_free(&s);
}
