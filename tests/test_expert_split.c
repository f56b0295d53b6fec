/*
 * test_expert_split.c - the MoE pipeline with the routed experts split
 * over several owners: route/pack once, each expert range computes its
 * experts "as if on its own process" (the one-process expert exchange,
 * moe_exchange.c), one combine. The logits must be bit-identical to the
 * one-owner forward, and rows for experts nobody owns are an error.
 */
#include "test.h"
#include "model/model_internal.h"

#include <stdlib.h>
#include <string.h>

/* Logits of a batch of 4 sequences (short ones computed per token, long
 * ones as blocks, so both matmul paths cross the exchange). */
static int run_batch(ds_model *m, float *logits, ds_err *e) {
    enum { NS = 4 };
    int64_t V = m->cfg.vocab_size, len[NS] = { 1, 19, 3, 24 };
    bool all[NS] = { false, true, true, true };
    int32_t tok[NS][32];
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < 32; i++) tok[s][i] = (int32_t)(1 + (s * 131 + i * 17) % (V - 1));
    ds_kvcache c[NS];
    ds_seq_chunk ch[NS];
    for (int s = 0; s < NS; s++) {
        if (ds_kvcache_init(&c[s], m, 64, e)) return -1;
        ch[s] = (ds_seq_chunk){ &c[s], tok[s], len[s], all[s] };
    }
    int rc = ds_model_forward(m, NULL, ch, NS, logits, NULL, e);
    for (int s = 0; s < NS; s++) ds_kvcache_free(&c[s]);
    return rc;
}

static void expert_split(const char *path) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg); return; }
    int64_t V = m->cfg.vocab_size, E = m->cfg.n_routed_experts, rows = 1 + 19 + 3 + 24;
    CHECK(E >= 4);
    float *one = calloc((size_t)(rows * V), sizeof(float)), *split = calloc((size_t)(rows * V), sizeof(float));
    CHECK(run_batch(m, one, &e) == DS_OK);
    /* two ranges, then three uneven ones (one of a single expert) */
    int64_t two[3] = { 0, E / 2, E }, three[4] = { 0, 1, E - 3, E };
    const int64_t *bounds[2] = { two, three };
    int64_t n_ranks[2] = { 2, 3 };
    for (int i = 0; i < 2; i++) {
        m->n_ranks = n_ranks[i];
        m->rank_experts = bounds[i];
        memset(split, 0, (size_t)(rows * V) * sizeof(float));
        CHECK_MSG(run_batch(m, split, &e) == DS_OK, "%s", e.msg);
        CHECK_MSG(memcmp(one, split, (size_t)(rows * V) * sizeof(float)) == 0,
                  "%s: logits with the experts split over %lld ranges differ from one range", path,
                  (long long)n_ranks[i]);
    }
    /* the upper half owned by nobody: a clear error, not wrong logits */
    int64_t half[2] = { 0, E / 2 };
    m->n_ranks = 1;
    m->rank_experts = half;
    e = (ds_err){ 0 };
    CHECK(run_batch(m, split, &e) == DS_EINVAL && strstr(e.msg, "owned by no process"));
    /* a range the process has not loaded: refused by the local experts */
    m->n_ranks = 0;
    m->rank_experts = NULL;
    m->expert_hi = E - 1;
    e = (ds_err){ 0 };
    int rc = run_batch(m, split, &e);
    CHECK(rc == DS_EINVAL && (strstr(e.msg, "owned by no process") || strstr(e.msg, "outside the local experts")));
    m->expert_hi = E;
    free(one); free(split);
    ds_model_close(m);
}

TEST(expert_split_bf16) { expert_split("tests/fixtures/tiny-v3"); }
TEST(expert_split_q4_k) { expert_split("tests/fixtures/gguf/kq.llama-q4_k_m.gguf"); }

/* An expert server (rank > 0 under `serve` on N ranks) repacks only its own
 * routed experts: with expert_servers its x8 copies are exactly those of the
 * same rank without it minus the replicated matmul weights', and rank 0
 * (which runs the forward) repacks as before. */
TEST(expert_server_repacks_only_experts) {
    const char *path = "tests/fixtures/gguf/kq.llama-q4_k_m.gguf";
    int64_t rp[2][2] = { { 0 } };   /* [rank][expert_servers] */
    for (int r = 0; r < 2; r++)
        for (int sv = 0; sv < 2; sv++) {
            ds_err e = { 0 };
            ds_model *m = NULL;
            ds_model_opts o = DS_MODEL_OPTS_DEFAULT;
            o.n_ranks = 2, o.rank = r, o.expert_servers = sv;
            if (ds_model_open_opts(&m, path, &o, &e)) { ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg); return; }
            ds_model_storage s;
            ds_model_storage_info(m, &s);
            rp[r][sv] = s.repacked_bytes;
            CHECK(m->experts_only == (sv && r > 0));
            ds_model_close(m);
        }
    if (rp[0][0] == 0) return;   /* no x8 kernels on this CPU (or DS_REPACK=0): nothing repacked either way */
    CHECK(rp[0][1] == rp[0][0]);
    CHECK(rp[1][1] > 0 && rp[1][1] < rp[1][0]);
}
