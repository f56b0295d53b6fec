/*
 * test_rollout.c - the batched rollout engine (src/runtime/rollout.c):
 * completions that share their prompt's prefilled cache and advance in one
 * batched forward give exactly the tokens of one-at-a-time generation with
 * the same seeds (the engine's batch invariance), greedy completions of one
 * prompt are identical, sampled ones differ, and the stop token ends a
 * completion (kept as its last token).
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "runtime/rollout.h"

static void run(const ds_model *m, ds_rollout_opts *o, bool seq, ds_rollout *r) {
    static const int32_t p0[] = { 0, 5, 17, 33, 2 }, p1[] = { 0, 9, 11 };
    const int32_t *pr[2] = { p0, p1 };
    int64_t pl[2] = { 5, 3 };
    ds_err e = { 0 };
    o->sequential = seq;
    CHECK(ds_rollout_run(m, NULL, pr, pl, 2, 3, o, r, &e) == 0);
}

TEST(rollout_batched_equals_sequential) {
    ds_model *m;
    ds_err e = { 0 };
    if (ds_model_open(&m, fixture("tiny-v3"), &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    ds_rollout_opts o;
    memset(&o, 0, sizeof o);
    o.max_new = 12;
    o.stop_id = -1;
    ds_sampler_params_default(&o.sp);
    o.sp.temperature = 1.0f;
    o.sp.seed = 42;
    ds_rollout a, b;
    run(m, &o, false, &a);
    run(m, &o, true, &b);
    CHECK_EQ_INT(a.n, 6);
    CHECK_EQ_INT(a.n_tokens, 6 * 12);
    CHECK(a.n == b.n && !memcmp(a.len, b.len, (size_t)a.n * sizeof *a.len));
    CHECK(!memcmp(a.tok, b.tok, (size_t)(a.n * a.max_new) * sizeof *a.tok));
    /* sampled completions of one prompt differ (seed + s) */
    CHECK(memcmp(a.tok, a.tok + a.max_new, 12 * sizeof *a.tok) != 0);
    /* stop token: the first sampled token of completion 0 ends it at once */
    int32_t first = a.tok[0];
    ds_rollout_free(&a);
    ds_rollout_free(&b);
    o.stop_id = first;
    run(m, &o, false, &a);
    CHECK_EQ_INT(a.len[0], 1);
    CHECK(a.stopped[0]);
    for (int64_t s = 0; s < a.n; s++) {
        for (int64_t t = 0; t + 1 < a.len[s]; t++) CHECK(a.tok[s * a.max_new + t] != first);
        CHECK(a.stopped[s] == (a.tok[s * a.max_new + a.len[s] - 1] == first));
    }
    ds_rollout_free(&a);
    /* greedy: the G completions of a prompt are the same */
    o.stop_id = -1;
    o.sp.temperature = 0;
    run(m, &o, false, &a);
    CHECK(!memcmp(a.tok, a.tok + a.max_new, 12 * sizeof *a.tok));
    CHECK(!memcmp(a.tok, a.tok + 2 * a.max_new, 12 * sizeof *a.tok));
    ds_rollout_free(&a);
    ds_model_close(m);
}
