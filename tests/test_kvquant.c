/*
 * test_kvquant.c - the quantized KV-cache storage (--kv-type q8|fp8|bf16):
 * row round trips, memory per token, and the effect on logits of the tiny
 * fixtures against the fp32 cache (64 pseudo-random tokens, one forward).
 *
 * Measured (README "KV cache"): Q8 mean KL 2.4e-5..3.3e-5 nats on
 * tiny-v3 / tiny-v3-fp8 / tiny-v2-lite (top-1 98-100 %), 2.5e-3 on tiny-v2
 * (group-limited routing flips); FP8 (e4m3, 3 mantissa bits) 6e-4..2.8e-2;
 * BF16 2.6e-6..3.1e-6 in one forward (dequantized rows), 4.4e-6..2.2e-5 in
 * decode (flash decode on bf16 rows, bf16 queries and weights).
 * Bounds below are ~10x (Q8), ~2x (FP8, BF16 decode), ~3x (BF16) those
 * values, and KL must be above 0 (the quantized rows were used).
 */
#include "test.h"

#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "model/model.h"
#include "model/model_internal.h"
#include "runtime/compare.h"

TEST(kvquant_rows_and_memory) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, "tests/fixtures/tiny-v3", &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    int64_t W = m->cfg.kv_lora_rank + m->cfg.qk_rope_head_dim;
    CHECK_EQ_INT(ds_kv_row_bytes(DS_KV_F32, 576), 2304);
    CHECK_EQ_INT(ds_kv_row_bytes(DS_KV_Q8, 576), 648);   /* 18 blocks of 32: 4 + 32 bytes */
    CHECK_EQ_INT(ds_kv_row_bytes(DS_KV_FP8, 576), 612);  /* 9 blocks of 64: 4 + 64 bytes */
    CHECK_EQ_INT(ds_kv_row_bytes(DS_KV_BF16, 576), 1152);
    CHECK(ds_kv_type_from_name("q8") == DS_KV_Q8 && ds_kv_type_from_name("fp8") == DS_KV_FP8 &&
          ds_kv_type_from_name("f32") == DS_KV_F32 && ds_kv_type_from_name("bf16") == DS_KV_BF16 &&
          ds_kv_type_from_name("q4") == -1);
    ds_rng r;
    ds_rng_seed(&r, 3);
    float row[64], back[64 * 4];
    for (int t = 1; t <= 3; t++) {
        ds_kvcache c;
        CHECK(ds_kvcache_init(&c, m, 8, &e) == 0);
        CHECK(ds_kvcache_set_type(&c, (ds_kv_type)t, &e) == 0);
        CHECK(ds_kvcache_reserve(&c, 4, &e) == 0);
        /* the storage really is the quantized rows: row_bytes of the type per
         * layer (MLA layers store Rkv + Dr values), no fp32 rows, and each
         * layer's block sized cap x row_bytes (an fp32 block would be larger) */
        CHECK(ds_kvcache_uniform_width(&c) == W);
        CHECK(ds_kvcache_bytes_per_pos(&c, m->cfg.n_layer) == m->cfg.n_layer * (int64_t)ds_kv_row_bytes((ds_kv_type)t, W));
        for (int64_t l = 0; l < c.n_layer; l++) {
            CHECK(c.width[l] == W && c.row_bytes[l] == ds_kv_row_bytes((ds_kv_type)t, W));
            CHECK(c.row_bytes[l] < ds_kv_row_bytes(DS_KV_F32, W));
            CHECK(c.kv[l] == NULL && c.kvq[l] != NULL);
            size_t got = c.kvq[l] ? malloc_usable_size(c.kvq[l]) : 0, want = (size_t)c.cap * c.row_bytes[l];
            CHECK_MSG(got >= want && got < want + 256, "%s layer %lld: %zu bytes allocated for %lld rows of %zu",
                      ds_kv_type_name((ds_kv_type)t), (long long)l, got, (long long)c.cap, c.row_bytes[l]);
        }
        double maxrel = 0;
        for (int pos = 0; pos < 4; pos++) {
            for (int i = 0; i < W; i++) row[i] = ds_rng_normal(&r) * (i % 7 == 0 ? 4.0f : 1.0f);
            ds_kvcache_write_row(&c, 0, pos, row);
            const float *rows = ds_kvcache_rows_f32(&c, 0, pos + 1, back);
            double amax = 0;
            for (int i = 0; i < W; i++) amax = fmax(amax, fabs(row[i]));
            for (int i = 0; i < W; i++) maxrel = ds_max_err(maxrel, fabs(rows[pos * W + i] - row[i]) / amax);
        }
        /* q8: half a step of max/127; fp8: 3 mantissa bits (relative 1/16); bf16: 8 significant bits */
        double rb = t == DS_KV_Q8 ? 0.5 / 127 : t == DS_KV_FP8 ? 1.0 / 16 : 1.0 / 256;
        CHECK_MSG(maxrel <= rb + 1e-6, "%s: row error %g", ds_kv_type_name((ds_kv_type)t), maxrel);
        CHECK_MSG(maxrel > 0, "%s: rows stored exactly (not rounded?)", ds_kv_type_name((ds_kv_type)t));
        /* copy_prefix between caches of the same type; a different type is refused */
        c.n_past = 4;
        ds_kvcache d, f;
        CHECK(ds_kvcache_init(&d, m, 8, &e) == 0 && ds_kvcache_set_type(&d, (ds_kv_type)t, &e) == 0);
        CHECK(ds_kvcache_copy_prefix(&d, &c, 3, &e) == 0 && d.n_past == 3);
        CHECK(!memcmp(d.kvq[0], c.kvq[0], 3 * c.row_bytes[0]));
        CHECK(ds_kvcache_init(&f, m, 8, &e) == 0);
        CHECK(ds_kvcache_copy_prefix(&f, &c, 3, &e) == DS_EINVAL);
        e.code = 0;
        CHECK(ds_kvcache_set_type(&c, DS_KV_F32, &e) == DS_EINVAL);  /* not after first use */
        e.code = 0;
        ds_kvcache_free(&c);
        ds_kvcache_free(&d);
        ds_kvcache_free(&f);
    }
    ds_model_close(m);
}

static void kl_case(const char *fx, ds_kv_type t, double bound) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", fx);
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, dir, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    int32_t tok[64];
    ds_rng r;
    ds_rng_seed(&r, 1);
    for (int i = 0; i < 64; i++) tok[i] = (int32_t)(ds_rng_u64(&r) % (uint64_t)m->cfg.vocab_size);
    ds_logit_stats s, s2;
    ds_compare_opts o = { DS_KV_F32, t, false };
    CHECK_MSG(ds_compare_models(m, m, tok, 64, &o, &s, &e) == 0, "%s", e.msg);
    /* KL > 0: the quantized cache was used (an ignored --kv-type gives the
     * fp32 logits, KL exactly 0, and would pass any upper bound) */
    CHECK_MSG(s.kl_mean > 0 && s.kl_mean <= bound, "%s kv %s: mean KL %.3g, want (0, %.3g] (top-1 %.2f)", fx,
              ds_kv_type_name(t), s.kl_mean, bound, s.top1);
    o.incremental = true;  /* the decode path sees the same quantized rows */
    CHECK(ds_compare_models(m, m, tok, 16, &o, &s2, &e) == 0);
    CHECK_MSG(s2.kl_mean > 0 && s2.kl_mean <= bound * 4, "%s kv %s (decode): mean KL %.3g, want (0, %.3g]", fx,
              ds_kv_type_name(t), s2.kl_mean, bound * 4);
    printf("    %s kv %s: mean KL %.3g (one forward), %.3g (decode), top-1 %.2f\n", fx, ds_kv_type_name(t), s.kl_mean,
           s2.kl_mean, s.top1);
    ds_model_close(m);
}

TEST(kvquant_q8_logits) {
    kl_case("tiny-v3", DS_KV_Q8, 3e-4);
    kl_case("tiny-v3-fp8", DS_KV_Q8, 3e-4);
    kl_case("tiny-v2-lite", DS_KV_Q8, 3e-4);
    kl_case("tiny-v2", DS_KV_Q8, 1e-2);
}

TEST(kvquant_bf16_logits) {
    kl_case("tiny-v3", DS_KV_BF16, 1e-5);
    kl_case("tiny-v2-lite", DS_KV_BF16, 1e-5);
    kl_case("tiny-v3-fp8", DS_KV_BF16, 1e-5);
}

/* I8 rows: 24 header bytes (3 scales, 3 code sums) + W codes; one scale per
 * part (latent, rope), so the round trip is within half a step of each
 * part's max/127; the stored code sums are the codes' sums */
TEST(kvquant_i8_rows) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, "tests/fixtures/tiny-v3", &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    int64_t R = m->cfg.kv_lora_rank, W = R + m->cfg.qk_rope_head_dim;
    CHECK_EQ_INT(ds_kv_row_bytes(DS_KV_I8, 576), 600);
    CHECK(ds_kv_type_from_name("i8") == DS_KV_I8 && !strcmp(ds_kv_type_name(DS_KV_I8), "i8"));
    ds_kvcache c;
    CHECK(ds_kvcache_init(&c, m, 8, &e) == 0 && ds_kvcache_set_type(&c, DS_KV_I8, &e) == 0);
    CHECK(ds_kvcache_reserve(&c, 4, &e) == 0);
    CHECK(c.kv[0] == NULL && c.kvq[0] != NULL && c.row_bytes[0] == (size_t)(24 + W));
    ds_rng r;
    ds_rng_seed(&r, 5);
    float row[64], back[64 * 4];
    for (int pos = 0; pos < 4; pos++) {
        /* the rope part 100x larger than the latent: one scale for the row would flatten the latent */
        for (int i = 0; i < W; i++) row[i] = ds_rng_normal(&r) * (i >= R ? 100.0f : 1.0f) * (pos == 3 && i < R ? 0.0f : 1.0f);
        ds_kvcache_write_row(&c, 0, pos, row);
        const float *rows = ds_kvcache_rows_f32(&c, 0, pos + 1, back);
        double am[2] = { 0, 0 };
        for (int i = 0; i < W; i++) am[i >= R] = fmax(am[i >= R], fabs(row[i]));
        const uint8_t *st = c.kvq[0] + (size_t)pos * c.row_bytes[0];
        int32_t sum[2] = { 0, 0 }, ssum[2];
        float d[3];
        memcpy(d, st, 12);
        memcpy(ssum, st + 12, 8);
        for (int i = 0; i < W; i++) {
            double err = fabs(rows[pos * W + i] - row[i]);
            CHECK_MSG(err <= am[i >= R] * (0.5 / 127) * (1 + 1e-5), "pos %d value %d: %g for %g", pos, i,
                      (double)rows[pos * W + i], (double)row[i]);
            sum[i >= R] += (int8_t)st[24 + i];
        }
        CHECK(sum[0] == ssum[0] && sum[1] == ssum[1]);
        CHECK(d[0] == (float)am[0] / 127.0f && d[1] == (float)am[1] / 127.0f && d[2] == 0);
    }
    ds_kvcache_free(&c);
    ds_model_close(m);
}

/* int8 rows read by int8 attention in decode (int8 queries, u8 weights) */
TEST(kvquant_i8_logits) {
    kl_case("tiny-v3", DS_KV_I8, 3e-4);
    kl_case("tiny-v2-lite", DS_KV_I8, 3e-4);
    kl_case("tiny-v3-fp8", DS_KV_I8, 3e-4);
}

TEST(kvquant_fp8_logits) {
    kl_case("tiny-v3", DS_KV_FP8, 0.04);
    kl_case("tiny-v2-lite", DS_KV_FP8, 2e-3);
}
