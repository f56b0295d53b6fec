/*
 * test_model.c - forward-pass parity against Hugging Face transformers.
 *
 * Fixtures (tests/fixtures/tiny-*, made by tools/gen_fixtures.py) hold tiny
 * random checkpoints written by save_pretrained and the logits transformers
 * computes for them in float32 from exactly the stored weights.
 *
 * Tolerance: we also compute in float32, so only summation order differs.
 * transformers' own full-sequence vs. token-by-token logits differ by up to
 * 1.4e-5 on these models (ref.json: incr_vs_full_maxdiff); logits are O(1-5).
 * We require max |ours - HF| <= 1e-4 (about 7x HF's self-disagreement, far
 * below any real bug: a wrong RoPE pair, routing flip or norm order moves
 * logits by >= 1e-2) and the same argmax in every row.
 *
 * Where transformers departs from DeepSeek's official inference code we follow
 * the official semantics; on these fixtures the two coincide:
 *   - group masking with -inf (HF now does too; V2's 0.0 mask is equivalent for
 *     softmax scores, which are > 0);
 *   - no 1e-20 in the top-k renormalization (a 1e-20 relative change);
 *   - YaRN always on when configured (official: iff max_seq_len > 4096);
 *   - fp32 everywhere instead of the official bf16 rounding points.
 */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mmap_file.h"
#include "io/json.h"
#include "model/convert.h"
#include "model/model.h"
#include "model/model_internal.h"
#include "runtime/generate.h"

#define TOL 1e-4

typedef struct {
    json_t *ref;
    int32_t tokens[64];
    int64_t T, V;
    int32_t prompt[64], greedy[64];
    int64_t n_prompt, n_greedy;
} ref_t;

static int load_ref(const char *name, ref_t *r) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/%s/ref.json", name);
    ds_err e = { 0 };
    memset(r, 0, sizeof *r);
    if (ds_json_load_file(path, 1 << 20, &r->ref, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return -1; }
    json_t *t = json_object_get(r->ref, "tokens");
    r->T = (int64_t)json_array_size(t);
    for (int64_t i = 0; i < r->T; i++) r->tokens[i] = (int32_t)json_integer_value(json_array_get(t, (size_t)i));
    r->V = json_integer_value(json_object_get(r->ref, "vocab_size"));
    t = json_object_get(r->ref, "prompt");
    r->n_prompt = (int64_t)json_array_size(t);
    for (int64_t i = 0; i < r->n_prompt; i++) r->prompt[i] = (int32_t)json_integer_value(json_array_get(t, (size_t)i));
    t = json_object_get(r->ref, "greedy");
    r->n_greedy = (int64_t)json_array_size(t);
    for (int64_t i = 0; i < r->n_greedy; i++) r->greedy[i] = (int32_t)json_integer_value(json_array_get(t, (size_t)i));
    return 0;
}

static float *load_f32(const char *name, const char *file, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/%s/%s", name, file);
    char *buf;
    size_t len;
    ds_err e = { 0 };
    if (ds_read_file(path, 64 << 20, &buf, &len, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return NULL; }
    if (len != n * sizeof(float)) { ds_test_fail(__FILE__, __LINE__, "%s: %zu bytes, expected %zu", path, len, n * 4); free(buf); return NULL; }
    return (float *)buf;
}

static int64_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

static void compare(const char *what, const float *ours, const float *ref, int64_t rows, int64_t V) {
    double worst = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t v = 0; v < V; v++) {
            double d = fabs((double)ours[r * V + v] - ref[r * V + v]);
            worst = ds_max_err(worst, d);
        }
        CHECK_MSG(argmax(ours + r * V, V) == argmax(ref + r * V, V), "%s: row %lld argmax %lld vs HF %lld", what,
                  (long long)r, (long long)argmax(ours + r * V, V), (long long)argmax(ref + r * V, V));
    }
    CHECK_MSG(worst <= TOL, "%s: max |ours - HF| = %.3g > %.1g", what, worst, TOL);
}

static ds_model *open_fixture(const char *name) {
    char dir[512];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, dir, &e)) ds_test_fail(__FILE__, __LINE__, "open %s: %s", dir, e.msg);
    return m;
}

typedef struct { int32_t *got; int *n; } collector;

static int collect_tok(void *ud, int32_t tok, const char *text, size_t len) {
    collector *u = ud;
    if (*u->n < 64) u->got[(*u->n)++] = tok;
    return 0;
}

/* full forward, token-by-token forward, greedy generation */
static void parity(const char *name) {
    ref_t r;
    if (load_ref(name, &r)) return;
    ds_model *m = open_fixture(name);
    if (!m) { json_decref(r.ref); return; }
    int64_t T = r.T, V = r.V, D = ds_model_hidden_width(m);   /* hidden rows (V4: hc·D) */
    CHECK_EQ_INT(m->cfg.vocab_size, V);
    float *full = load_f32(name, "ref_logits.f32", (size_t)(T * V));
    float *incr = load_f32(name, "ref_incr_logits.f32", (size_t)(T * V));
    float *out = calloc((size_t)(T * V), sizeof(float));
    float *hid = calloc((size_t)(T * D), sizeof(float));
    ds_err e = { 0 };
    ds_kvcache c;
    CHECK(ds_kvcache_init(&c, m, 64, &e) == 0);
    if (full && incr) {
        ds_seq_chunk ch = { &c, r.tokens, T, true };
        CHECK(ds_model_forward(m, NULL, &ch, 1, out, hid, &e) == 0);
        compare("full forward", out, full, T, V);
        ds_kvcache_clear(&c);
        for (int64_t t = 0; t < T; t++) {
            ds_seq_chunk one = { &c, r.tokens + t, 1, true };
            CHECK(ds_model_forward(m, NULL, &one, 1, out + t * V, NULL, &e) == 0);
        }
        compare("incremental", out, incr, T, V);
        /* chunked prefill in uneven pieces through the same cache */
        ds_kvcache_clear(&c);
        int64_t cuts[] = { 0, 3, 4, 9, T };
        for (int k = 0; k < 4; k++) {
            ds_seq_chunk ch2 = { &c, r.tokens + cuts[k], cuts[k + 1] - cuts[k], true };
            CHECK(ds_model_forward(m, NULL, &ch2, 1, out + cuts[k] * V, NULL, &e) == 0);
        }
        compare("chunked prefill", out, full, T, V);
        CHECK(ds_model_forward_naive(m, NULL, r.tokens, T, out, &e) == 0);
        compare("naive attention", out, full, T, V);
    }
    /* greedy generation through the cache */
    ds_sampler_params sp;
    ds_sampler_params_default(&sp);
    ds_session ss;
    CHECK(ds_session_init(&ss, m, NULL, c.max_ctx, &sp, &e) == 0);
    int32_t got[64];
    int n_got = 0;
    ds_gen_opts o = { .max_tokens = r.n_greedy, .prefill_chunk = 2 };  /* prefill in chunks of 2 */
    ds_gen_stats st;
    collector ud = { got, &n_got };
    CHECK(ds_generate(&ss, r.prompt, r.n_prompt, &o, collect_tok, &ud, &st, &e) == 0);
    CHECK_EQ_INT(n_got, r.n_greedy);
    for (int i = 0; i < n_got && i < r.n_greedy; i++)
        CHECK_MSG(got[i] == r.greedy[i], "%s greedy token %d: %d vs HF %d", name, i, got[i], r.greedy[i]);
    ds_session_free(&ss);
    ds_kvcache_free(&c);
    free(full); free(incr); free(out); free(hid);
    ds_model_close(m);
    json_decref(r.ref);
}

TEST(model_parity_v3_bf16) { parity("tiny-v3"); }
TEST(model_parity_v3_fp8) { parity("tiny-v3-fp8"); }
TEST(model_parity_v2_lite_f16) { parity("tiny-v2-lite"); }
TEST(model_parity_v2_f32) { parity("tiny-v2"); }
TEST(model_parity_v32_bf16) { parity("tiny-v32"); }   /* V3.2 sparse attention: 24 tokens, index_topk 8 */
TEST(model_parity_v32_fp8) { parity("tiny-v32-fp8"); }   /* FP8 with ue8m0 scales, the indexer's too */
/* DeepSeek-V4: sliding / CSA / HCA layers (window 8, rates 4 and 8, 40 tokens, top 3
 * of up to 10 entries), hyper-connections, hash and sqrtsoftplus routing, clamps */
TEST(model_parity_v4) { parity("tiny-v4"); }
/* the same weights under the release's tensor names, two shards (tools/gen_v4_release_fixtures.py) */
TEST(model_parity_v4_official) { parity("tiny-v4-official"); }
/* quantized as the release: FP8 e4m3 with ue8m0 block scales (32x32), FP4 e2m1 experts (ue8m0 per 32) */
TEST(model_parity_v4_fp8) { parity("tiny-v4-fp8"); }

/* MTP logits vs the reference written from vLLM's deepseek_mtp.py semantics
 * (V4: from the official inference code's MTPBlock, tools/gen_v4_mtp_fixtures.py) */
static void mtp_parity(const char *name) {
    ref_t r;
    if (load_ref(name, &r)) return;
    ds_model *m = open_fixture(name);
    if (!m) { json_decref(r.ref); return; }
    CHECK_EQ_INT(m->n_mtp, 1);
    int64_t T = r.T, V = r.V, D = ds_model_hidden_width(m);   /* hidden rows: D, V4 hc·D */
    float *ref = load_f32(name, "ref_mtp_logits.f32", (size_t)((T - 1) * V));
    float *out = calloc((size_t)(T * V), sizeof(float));
    float *hid = calloc((size_t)(T * D), sizeof(float));
    ds_err e = { 0 };
    ds_kvcache c;
    CHECK(ds_kvcache_init(&c, m, 64, &e) == 0);
    ds_seq_chunk ch = { &c, r.tokens, T, false };
    CHECK(ds_model_forward(m, NULL, &ch, 1, out, hid, &e) == 0);
    CHECK(ds_model_forward_mtp(m, NULL, &c, hid, r.tokens + 1, T - 1, out, &e) == 0);
    if (ref) compare("mtp full", out, ref, T - 1, V);
    /* incremental MTP rows through its own cache positions */
    ds_kvcache_clear(&c);
    ch.all_logits = false;
    CHECK(ds_model_forward(m, NULL, &ch, 1, out, hid, &e) == 0);
    for (int64_t t = 0; t < T - 1; t++)
        CHECK(ds_model_forward_mtp(m, NULL, &c, hid + t * D, r.tokens + t + 1, 1, out + t * V, &e) == 0);
    if (ref) compare("mtp incremental", out, ref, T - 1, V);
    if (m->cfg.arch == DS_ARCH_V4) {
        /* the reference's own token-by-token rows, and MTP rows in uneven chunks after a
         * chunked main prefill (the MTP layer's rings and compressor entries across chunks) */
        float *iref = load_f32(name, "ref_mtp_incr_logits.f32", (size_t)((T - 1) * V));
        if (iref) compare("mtp incremental (reference token by token)", out, iref, T - 1, V);
        free(iref);
        ds_kvcache_clear(&c);
        int64_t cuts[] = { 0, 5, 6, 17, T };
        for (int k = 0; k < 4; k++) {
            ds_seq_chunk ck = { &c, r.tokens + cuts[k], cuts[k + 1] - cuts[k], false };
            CHECK(ds_model_forward(m, NULL, &ck, 1, out, hid + cuts[k] * D, &e) == 0);
        }
        int64_t mcuts[] = { 0, 3, 4, 13, T - 1 };
        for (int k = 0; k < 4; k++)
            CHECK(ds_model_forward_mtp(m, NULL, &c, hid + mcuts[k] * D, r.tokens + mcuts[k] + 1, mcuts[k + 1] - mcuts[k],
                                       out + mcuts[k] * V, &e) == 0);
        if (ref) compare("mtp chunked", out, ref, T - 1, V);
        /* the MTP layer's own kind: a CSA layer (compress_ratios[L]) with its own state */
        CHECK_EQ_INT(m->cfg.attn_kind[m->cfg.n_layer], DS_ATTN_CSA);
        CHECK_EQ_INT(c.mtp_n_past, T - 1);
    }
    ds_kvcache_free(&c);
    free(ref); free(out); free(hid);
    ds_model_close(m);
    json_decref(r.ref);
}

TEST(model_mtp_v3_bf16) { mtp_parity("tiny-v3"); }
TEST(model_mtp_v3_fp8) { mtp_parity("tiny-v3-fp8"); }
TEST(model_mtp_v32_bf16) { mtp_parity("tiny-v32"); }
TEST(model_mtp_v32_fp8) { mtp_parity("tiny-v32-fp8"); }   /* the MTP layer with sparse attention (23 rows, top 8) */
/* DeepSeek-V4's MTP block (release names mtp.0.*, a CSA layer): BF16, and FP8 + FP4 experts */
TEST(model_mtp_v4) { mtp_parity("tiny-v4-mtp"); }
TEST(model_mtp_v4_fp8) { mtp_parity("tiny-v4-mtp-fp8"); }

TEST(model_no_mtp_stored) {
    ds_model *m = open_fixture("tiny-v2");
    if (!m) return;
    ds_err e = { 0 };
    ds_kvcache c;
    CHECK(ds_kvcache_init(&c, m, 8, &e) == 0);
    float h[64] = { 0 }, lg[512];
    int32_t t = 5;
    CHECK(ds_model_forward_mtp(m, NULL, &c, h, &t, 1, lg, &e) == DS_ENOTFOUND);
    ds_kvcache_free(&c);
    ds_model_close(m);
}

/* Two sequences in one batch give the same logits as each alone (the
 * server's continuous batching relies on this). */
TEST(model_batch_equals_single) {
    ref_t r;
    if (load_ref("tiny-v3", &r)) return;
    ds_model *m = open_fixture("tiny-v3");
    if (!m) { json_decref(r.ref); return; }
    int64_t V = r.V;
    ds_err e = { 0 };
    ds_kvcache a, b;
    CHECK(ds_kvcache_init(&a, m, 64, &e) == 0);
    CHECK(ds_kvcache_init(&b, m, 64, &e) == 0);
    float *single = calloc((size_t)(32 * V), sizeof(float)), *batch = calloc((size_t)(32 * V), sizeof(float));
    /* a: tokens[0..9); b: tokens[4..T) */
    ds_seq_chunk sa = { &a, r.tokens, 9, true }, sb = { &b, r.tokens + 4, r.T - 4, true };
    CHECK(ds_model_forward(m, NULL, &sa, 1, single, NULL, &e) == 0);
    CHECK(ds_model_forward(m, NULL, &sb, 1, single + 9 * V, NULL, &e) == 0);
    ds_kvcache_clear(&a);
    ds_kvcache_clear(&b);
    ds_seq_chunk both[2] = { sa, sb };
    CHECK(ds_model_forward(m, NULL, both, 2, batch, NULL, &e) == 0);
    double worst = 0;
    for (int64_t i = 0; i < (9 + r.T - 4) * V; i++) worst = ds_max_err(worst, fabs(single[i] - batch[i]));
    CHECK_MSG(worst < 1e-5, "batched vs single max diff %g", worst);
    /* next decode step for both, batched, vs alone */
    int32_t na = 7, nb = 11;
    ds_seq_chunk d2[2] = { { &a, &na, 1, false }, { &b, &nb, 1, false } };
    CHECK(ds_model_forward(m, NULL, d2, 2, batch, NULL, &e) == 0);
    ds_kvcache_truncate(&a, 9);
    ds_kvcache_truncate(&b, r.T - 4);
    ds_seq_chunk s1 = { &a, &na, 1, false }, s2 = { &b, &nb, 1, false };
    CHECK(ds_model_forward(m, NULL, &s1, 1, single, NULL, &e) == 0);
    CHECK(ds_model_forward(m, NULL, &s2, 1, single + V, NULL, &e) == 0);
    worst = 0;
    for (int64_t i = 0; i < 2 * V; i++) worst = ds_max_err(worst, fabs(single[i] - batch[i]));
    CHECK_MSG(worst < 1e-5, "batched decode vs single max diff %g", worst);
    free(single); free(batch);
    ds_kvcache_free(&a); ds_kvcache_free(&b);
    ds_model_close(m);
    json_decref(r.ref);
}

TEST(model_context_full_is_an_error) {
    ds_model *m = open_fixture("tiny-v3");
    if (!m) return;
    ds_err e = { 0 };
    ds_kvcache c;
    CHECK(ds_kvcache_init(&c, m, 4, &e) == 0);
    int32_t t[5] = { 0, 1, 2, 3, 4 };
    float *lg = calloc(5 * 320, sizeof(float));
    ds_seq_chunk ch = { &c, t, 5, false };
    CHECK(ds_model_forward(m, NULL, &ch, 1, lg, NULL, &e) == DS_ERANGE);
    CHECK(strstr(e.msg, "context") != NULL);
    CHECK_EQ_INT(c.n_past, 0);
    free(lg);
    ds_kvcache_free(&c);
    ds_model_close(m);
}

TEST(model_param_counts) {
    ds_model *m = open_fixture("tiny-v3");
    if (!m) return;
    ds_param_counts pc;
    ds_model_param_counts(m, &pc);
    /* every stored tensor is counted once: main + MTP == stored */
    CHECK_EQ_INT(pc.main + pc.mtp, pc.total);
    CHECK(pc.mtp > 0);
    CHECK(pc.active < pc.main);
    ds_model_close(m);
}

/* The split MLA form (GGUF attn_k_b / attn_v_b: per-head W_UKᵀ and W_UV as
 * 3-D tensors) gives the same logits as kv_b_proj. Built here from kv_b. */
TEST(model_split_kv_b_form) {
    ref_t r;
    if (load_ref("tiny-v3", &r)) return;
    ds_model *m = open_fixture("tiny-v3");
    if (!m) { json_decref(r.ref); return; }
    const ds_config *c = &m->cfg;
    int64_t H = c->n_head, Dn = c->qk_nope_head_dim, Dv = c->v_head_dim, Rkv = c->kv_lora_rank, L = c->n_layer;
    float **bufs = calloc((size_t)(2 * L), sizeof *bufs);
    float *row = malloc((size_t)Rkv * sizeof(float));
    for (int64_t l = 0; l < L; l++) {
        ds_layer_w *w = &m->layers[l];
        float *kb = bufs[2 * l] = malloc((size_t)(H * Rkv * Dn) * sizeof(float));
        float *vb = bufs[2 * l + 1] = malloc((size_t)(H * Dv * Rkv) * sizeof(float));
        for (int64_t h = 0; h < H; h++) {
            for (int64_t d = 0; d < Dn; d++) {
                ds_tensor_row_f32(&w->kv_b_proj, h * (Dn + Dv) + d, 0, Rkv, row);
                for (int64_t k = 0; k < Rkv; k++) kb[(h * Rkv + k) * Dn + d] = row[k];
            }
            for (int64_t d = 0; d < Dv; d++) ds_tensor_row_f32(&w->kv_b_proj, h * (Dn + Dv) + Dn + d, 0, Rkv, vb + (h * Dv + d) * Rkv);
        }
        w->wk_b = (ds_tensor){ .name = "wk_b", .dtype = DS_DTYPE_F32, .ndim = 3, .shape = { H, Rkv, Dn }, .data = kb };
        w->wv_b = (ds_tensor){ .name = "wv_b", .dtype = DS_DTYPE_F32, .ndim = 3, .shape = { H, Dv, Rkv }, .data = vb };
    }
    int64_t T = r.T, V = r.V;
    float *full = load_f32("tiny-v3", "ref_logits.f32", (size_t)(T * V));
    float *out = calloc((size_t)(T * V), sizeof(float));
    ds_err e = { 0 };
    ds_kvcache kc;
    CHECK(ds_kvcache_init(&kc, m, 64, &e) == 0);
    ds_seq_chunk ch = { &kc, r.tokens, T, true };
    CHECK(ds_model_forward(m, NULL, &ch, 1, out, NULL, &e) == 0);
    if (full) compare("split kv_b absorbed", out, full, T, V);
    CHECK(ds_model_forward_naive(m, NULL, r.tokens, T, out, &e) == 0);
    if (full) compare("split kv_b naive", out, full, T, V);
    for (int64_t i = 0; i < 2 * L; i++) free(bufs[i]);
    free(bufs); free(row); free(full); free(out);
    ds_kvcache_free(&kc);
    ds_model_close(m);
    json_decref(r.ref);
}

/* MTP speculative decoding emits exactly what plain decoding emits, whether
 * drafts are accepted or not. Random MTP weights never agree with the main
 * model, so an oracle drafter (the known plain continuation, wrong on every
 * third token) exercises the accept and reject paths too. */
typedef struct { const int32_t *truth; int64_t n_prompt, n; } oracle;
static int32_t oracle_draft(void *ud, int64_t pos, int32_t mtp_draft) {
    oracle *o = ud;
    int64_t i = pos - o->n_prompt;
    if (i < 0 || i >= o->n || pos % 3 == 0) return mtp_draft;
    return o->truth[i];
}

static void mtp_spec_slack(const char *name, float temperature, int64_t slack) {
    ds_model *m = open_fixture(name);
    if (!m) return;
    ds_err e = { 0 };
    int32_t prompt[5] = { 0, 11, 29, 7, 3 };
    int32_t plain[48], spec[48], spec2[48];
    int n_plain = 0, n_spec = 0, n_spec2 = 0;
    ds_sampler_params sp;
    ds_sampler_params_default(&sp);
    sp.temperature = temperature;
    sp.seed = 42;
    for (int run = 0; run < 3; run++) {
        ds_session ss;
        CHECK(ds_session_init(&ss, m, NULL, 128, &sp, &e) == 0);
        if (slack >= 0) CHECK(ds_kvcache_set_v4_slack(ss.cache, slack, &e) == 0);
        oracle orc = { plain, 5, n_plain };
        ds_gen_opts o = { .max_tokens = 40, .prefill_chunk = 2, .mtp = run > 0, .draft_override = run == 2 ? oracle_draft : NULL, .draft_ud = &orc };
        ds_gen_stats st;
        int32_t *dst = run == 0 ? plain : run == 1 ? spec : spec2;
        int *nd = run == 0 ? &n_plain : run == 1 ? &n_spec : &n_spec2;
        collector col = { dst, nd };
        CHECK_MSG(ds_generate(&ss, prompt, 5, &o, collect_tok, &col, &st, &e) == 0, "%s", e.msg);
        if (run == 2) CHECK_MSG(st.n_accepted > 10 && st.n_accepted < st.n_draft, "accepted %lld of %lld",
                                (long long)st.n_accepted, (long long)st.n_draft);
        if (run == 2) CHECK(st.n_main_forwards < 35);
        ds_session_free(&ss);
    }
    CHECK_EQ_INT(n_plain, 40);
    CHECK_EQ_INT(n_spec, 40);
    CHECK_EQ_INT(n_spec2, 40);
    CHECK(memcmp(plain, spec, sizeof(int32_t) * 40) == 0);
    CHECK(memcmp(plain, spec2, sizeof(int32_t) * 40) == 0);
    ds_model_close(m);
}

static void mtp_spec(const char *name, float temperature) { mtp_spec_slack(name, temperature, -1); }

TEST(model_mtp_speculative_greedy_identical) { mtp_spec("tiny-v3", 0.0f); }
TEST(model_mtp_speculative_sampled_identical) { mtp_spec("tiny-v3-fp8", 0.8f); }
TEST(model_mtp_speculative_v32_identical) { mtp_spec("tiny-v32", 0.0f); }
/* V4: a rejected draft is dropped from the rings (the default slack, and none:
 * a window ring still holds the one row a rejection drops) */
TEST(model_mtp_speculative_v4_identical) {
    mtp_spec("tiny-v4-mtp", 0.0f);
    mtp_spec_slack("tiny-v4-mtp", 0.0f, 0);
    mtp_spec("tiny-v4-mtp-fp8", 0.8f);
}

/* Batch invariance: a sequence's logits are bit-for-bit the same whether it
 * runs alone or shares a batch with decode tokens, short chunks and long
 * prefills of other sequences (what continuous batching needs for "same
 * seed, same text, whatever the load"). Checked on BF16, FP8 and quantized
 * (Q8_0, Q4_K_M GGUF) weights. */
static void batch_invariance_kv(const char *path, ds_kv_type kvt) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg); return; }
    int64_t V = m->cfg.vocab_size;
    enum { NS = 5 };
    /* per sequence: a history prefilled alone (lengths from 5 to 700: flash
     * decode splits the cache at 256-row boundaries), then the batched chunk */
    int64_t hist_len[NS] = { 12, 5, 700, 300, 40 }, len[NS] = { 1, 200, 3, 1, 9 };   /* 200: expanded prefill */
    bool all[NS] = { false, true, true, false, false };
    static int32_t tok[NS][760];
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < 760; i++) tok[s][i] = (int32_t)(1 + (s * 131 + i * 17) % (V - 1));
    ds_kvcache c[NS];
    float *alone = calloc((size_t)(256 * V), sizeof(float)), *batch = calloc((size_t)(256 * V), sizeof(float));
    float *lg = calloc((size_t)V, sizeof(float));
    int64_t off = 0;
    for (int s = 0; s < NS; s++) {
        int64_t hist = hist_len[s];
        CHECK(ds_kvcache_init(&c[s], m, 1024, &e) == 0 && ds_kvcache_set_type(&c[s], kvt, &e) == 0);
        CHECK(ds_kvcache_set_v4_slack(&c[s], 256, &e) == 0);   /* V4: the rings keep the 200 rows truncated below */
        ds_seq_chunk h = { &c[s], tok[s], hist, false };
        CHECK(ds_model_forward(m, NULL, &h, 1, lg, NULL, &e) == 0);
        ds_seq_chunk ch = { &c[s], tok[s] + hist, len[s], all[s] };
        CHECK(ds_model_forward(m, NULL, &ch, 1, alone + off * V, NULL, &e) == 0);
        off += all[s] ? len[s] : 1;
        CHECK_EQ_INT(ds_kvcache_truncate(&c[s], hist), hist);
    }
    ds_seq_chunk chunks[NS];
    for (int s = 0; s < NS; s++) chunks[s] = (ds_seq_chunk){ &c[s], tok[s] + hist_len[s], len[s], all[s] };
    CHECK(ds_model_forward(m, NULL, chunks, NS, batch, NULL, &e) == 0);
    int64_t bad = 0;
    for (int64_t i = 0; i < off * V; i++) bad += memcmp(&alone[i], &batch[i], sizeof(float)) != 0;
    CHECK_MSG(bad == 0, "%s (%s cache): %lld of %lld logits differ between batched and alone", path,
              ds_kv_type_name(kvt), (long long)bad, (long long)(off * V));
    for (int s = 0; s < NS; s++) ds_kvcache_free(&c[s]);
    free(alone); free(batch); free(lg);
    ds_model_close(m);
}

static void batch_invariance(const char *path) { batch_invariance_kv(path, DS_KV_F32); }

TEST(model_batch_invariant_bf16) { batch_invariance("tests/fixtures/tiny-v3"); }
/* the bf16 latent cache (flash decode on bf16 rows): histories of 5 to 700
 * positions in one batch; 4 heads x 40-wide rows (vector kernels with a
 * half chunk), 6 x 88 with R = 72 (AVX2 weighted sum), V3.2's gathered rows */
TEST(model_batch_invariant_kv_bf16) {
    batch_invariance_kv("tests/fixtures/tiny-v3", DS_KV_BF16);
    batch_invariance_kv("tests/fixtures/tiny-v3-fp8", DS_KV_BF16);
    batch_invariance_kv("tests/fixtures/tiny-v32", DS_KV_BF16);
}
/* the i8 cache (int8 flash decode; V3.2's gathered rows dequantized) */
TEST(model_batch_invariant_kv_i8) {
    batch_invariance_kv("tests/fixtures/tiny-v3", DS_KV_I8);
    batch_invariance_kv("tests/fixtures/tiny-v2-lite", DS_KV_I8);
    batch_invariance_kv("tests/fixtures/tiny-v32", DS_KV_I8);
}
TEST(model_batch_invariant_fp8) { batch_invariance("tests/fixtures/tiny-v3-fp8"); }

/* Flash decode's head groups (mla.c head_groups): a decode step of one
 * sequence splits a short row's heads over the threads; 2 and 3 threads
 * give the logits of 1 thread bit for bit, 40 steps (f32 and bf16 caches;
 * 4 and 6 heads: groups of 2, a ragged last group at 3 threads) */
static void head_groups_threads(const char *path, ds_kv_type kvt) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg); return; }
    int64_t V = m->cfg.vocab_size;
    enum { N = 40 };
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)(1 + (i * 7919 + 13) % (V - 1));
    float *ref = calloc((size_t)(N * V), sizeof(float)), *out = calloc((size_t)(N * V), sizeof(float));
    int saved = ds_threads_get();
    for (int nt = 1; nt <= 3; nt++) {
        ds_threads_set(nt);
        ds_kvcache c;
        CHECK(ds_kvcache_init(&c, m, 64, &e) == 0 && ds_kvcache_set_type(&c, kvt, &e) == 0);
        for (int t = 0; t < N; t++) {
            ds_seq_chunk one = { &c, tok + t, 1, true };
            CHECK(ds_model_forward(m, NULL, &one, 1, (nt == 1 ? ref : out) + (int64_t)t * V, NULL, &e) == 0);
        }
        ds_kvcache_free(&c);
        if (nt > 1) {
            int64_t bad = 0;
            for (int64_t i = 0; i < N * V; i++) bad += memcmp(&ref[i], &out[i], sizeof(float)) != 0;
            CHECK_MSG(bad == 0, "%s (%s cache): %lld of %lld decode logits differ between 1 and %d threads", path,
                      ds_kv_type_name(kvt), (long long)bad, (long long)(N * V), nt);
        }
    }
    ds_threads_set(saved);
    free(ref); free(out);
    ds_model_close(m);
}

TEST(model_decode_head_groups_same_bits) {
    head_groups_threads("tests/fixtures/tiny-v3", DS_KV_F32);
    head_groups_threads("tests/fixtures/tiny-v3-fp8", DS_KV_F32);
    head_groups_threads("tests/fixtures/tiny-v2-lite", DS_KV_BF16);
    head_groups_threads("tests/fixtures/tiny-v3-fp8", DS_KV_BF16);
    head_groups_threads("tests/fixtures/tiny-v32", DS_KV_F32);
}

/* i8 cache: a chunk shorter than DS_TOKEN_BLOCK_MIN (its rows go through the
 * int8 flash decode together) gives the logits of single-token steps, bit for
 * bit, after a 300-position history (two splits); chunks of 5 and 7 */
TEST(model_kv_i8_chunk_eq_token_by_token) {
    static const char *fx[] = { "tiny-v3", "tiny-v2-lite" };
    for (int f = 0; f < 2; f++) {
        ds_model *m = open_fixture(fx[f]);
        if (!m) return;
        ds_err e = { 0 };
        int64_t V = m->cfg.vocab_size;
        int32_t tok[307];
        for (int i = 0; i < 307; i++) tok[i] = (int32_t)(1 + (i * 7919) % (V - 1));
        float *a = calloc((size_t)(7 * V), sizeof(float)), *b = calloc((size_t)(7 * V), sizeof(float));
        float *lg = calloc((size_t)V, sizeof(float));
        for (int64_t nc = 5; nc <= 7; nc += 2) {
            ds_kvcache c;
            CHECK(ds_kvcache_init(&c, m, 400, &e) == 0 && ds_kvcache_set_type(&c, DS_KV_I8, &e) == 0);
            ds_seq_chunk h = { &c, tok, 300, false };
            CHECK(ds_model_forward(m, NULL, &h, 1, lg, NULL, &e) == 0);
            ds_seq_chunk ch = { &c, tok + 300, nc, true };
            CHECK(ds_model_forward(m, NULL, &ch, 1, a, NULL, &e) == 0);
            CHECK_EQ_INT(ds_kvcache_truncate(&c, 300), 300);
            for (int i = 0; i < nc; i++) {
                ds_seq_chunk one = { &c, tok + 300 + i, 1, false };
                CHECK(ds_model_forward(m, NULL, &one, 1, b + i * V, NULL, &e) == 0);
            }
            CHECK_MSG(memcmp(a, b, (size_t)(nc * V) * sizeof(float)) == 0,
                      "%s: i8 cache, a chunk of %lld differs from single steps", fx[f], (long long)nc);
            ds_kvcache_free(&c);
        }
        free(a); free(b); free(lg);
        ds_model_close(m);
    }
}
TEST(model_batch_invariant_v32) { batch_invariance("tests/fixtures/tiny-v32"); }
TEST(model_batch_invariant_v4) { batch_invariance("tests/fixtures/tiny-v4"); }
TEST(model_batch_invariant_q8_0) { batch_invariance("tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf"); }
TEST(model_batch_invariant_q4_k) { batch_invariance("tests/fixtures/gguf/kq.llama-q4_k_m.gguf"); }
/* A random model of the kq shape with these types (tensor/quant_ext.h). */
static void batch_invariance_types(ds_dtype experts, ds_dtype attn, ds_dtype ffn, ds_dtype head) {
    ds_err e = { 0 };
    ds_model *kq = NULL;
    if (ds_model_open(&kq, "tests/fixtures/gguf/kq.llama-q4_k_m.gguf", &e)) { CHECK_MSG(0, "%s", e.msg); return; }
    ds_convert_opts o;
    ds_convert_opts_default(&o, DS_DTYPE_Q8_0);
    o.experts = experts;
    o.attn = attn;
    o.ffn = ffn;
    o.head = head;
    char dir[] = "/tmp/ds_bi_ext_XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    CHECK_MSG(ds_write_random_gguf(&kq->cfg, path, &o, 5, &e) == 0, "%s", e.msg);
    ds_model_close(kq);
    batch_invariance(path);
    unlink(path);
    rmdir(dir);
}
/* experts IQ2_XXS, attention Q3_K (both x8 kernels), dense FFN Q4_1, head Q5_K */
TEST(model_batch_invariant_ext_types) { batch_invariance_types(DS_DTYPE_IQ2_XXS, DS_DTYPE_Q3_K, DS_DTYPE_Q4_1, DS_DTYPE_Q5_K); }
/* experts and attention Q2_K (x8), dense FFN IQ4_XS, head Q3_K (x8) */
TEST(model_batch_invariant_x8_q2_k) { batch_invariance_types(DS_DTYPE_Q2_K, DS_DTYPE_Q2_K, DS_DTYPE_IQ4_XS, DS_DTYPE_Q3_K); }

/* Long context: 690 tokens prefilled in chunks (expanded and absorbed
 * prefill attention), then 10 decode steps (flash
 * decode over 3 splits of the latent cache), against the naive
 * (decompressed, one-pass softmax) forward over all 700 tokens; the same
 * decode with q8 and fp8 caches stays close to it. */
static void long_context_vs_naive(const char *name, const double qbound[5], int64_t topk) {
    ds_model *m = open_fixture(name);
    if (!m) return;
    if (topk > 0) m->cfg.index_topk = topk;   /* V3.2: a top-k past the context makes every segment dense */
    ds_err e = { 0 };
    enum { T = 700, P = 690 };
    int64_t V = m->cfg.vocab_size;
    int32_t *tok = malloc(T * sizeof *tok);
    float *naive = calloc((size_t)(T * V), sizeof(float)), *out = calloc((size_t)((T - P) * V), sizeof(float));
    float *pre = calloc((size_t)(P * V), sizeof(float));
    float *lg = calloc((size_t)V, sizeof(float));
    for (int i = 0; i < T; i++) tok[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    CHECK(ds_model_forward_naive(m, NULL, tok, T, naive, &e) == 0);
    static const ds_kv_type kts[5] = { DS_KV_F32, DS_KV_Q8, DS_KV_FP8, DS_KV_BF16, DS_KV_I8 };
    for (int kt = 0; kt < 5; kt++) {
        ds_kvcache c;
        CHECK(ds_kvcache_init(&c, m, T, &e) == 0);
        CHECK(ds_kvcache_set_type(&c, kts[kt], &e) == 0);
        /* prefill: 300 tokens (expanded form), 100 (absorbed), 290 (expanded, into a long cache) */
        ds_seq_chunk a = { &c, tok, 300, true }, b = { &c, tok + 300, 100, true }, b2 = { &c, tok + 400, P - 400, true };
        CHECK(ds_model_forward(m, NULL, &a, 1, pre, NULL, &e) == 0);
        CHECK(ds_model_forward(m, NULL, &b, 1, pre + 300 * V, NULL, &e) == 0);
        CHECK(ds_model_forward(m, NULL, &b2, 1, pre + 400 * V, NULL, &e) == 0);
        if (kt == 0) compare("long context chunked prefill vs naive", pre, naive, P, V);
        if (kts[kt] == DS_KV_BF16) {   /* bf16: the expanded chunks' scores and weighted sums in bf16 too */
            double pw = 0;
            for (int64_t i = 0; i < P * V; i++) pw = ds_max_err(pw, fabs((double)pre[i] - naive[i]));
            printf("    %s: bf16 cache, long context chunked prefill max |dlogit| %.3g vs naive f32\n", name, pw);
            CHECK_MSG(pw < qbound[3], "%s: bf16 cache, chunked prefill max |d| %.3g vs naive (bound %g)", name, pw,
                      qbound[3]);
        }
        for (int t = P; t < T; t++) {
            ds_seq_chunk one = { &c, tok + t, 1, false };
            CHECK(ds_model_forward(m, NULL, &one, 1, out + (t - P) * V, NULL, &e) == 0);
        }
        double worst = 0;
        for (int64_t i = 0; i < (T - P) * V; i++) worst = ds_max_err(worst, fabs((double)out[i] - naive[P * V + i]));
        if (kt == 0) compare("long context decode vs naive", out, naive + P * V, T - P, V);
        else {
            printf("    %s: %s cache, long context decode max |dlogit| %.3g vs naive f32\n", name, ds_kv_type_name(kts[kt]), worst);
            double qb = qbound[kt == 4 ? 4 : kt - 1];   /* [3] is the bf16 prefill's */
            CHECK_MSG(worst < qb, "%s: %s cache, long context decode max |d| %.3g vs naive (bound %g)", name,
                      ds_kv_type_name(kts[kt]), worst, qb);
        }
        ds_kvcache_free(&c);
    }
    free(tok); free(naive); free(out); free(lg); free(pre);
    ds_model_close(m);
}

/* quantized-cache bounds: ~2x the observed (q8, fp8 and bf16 storage error,
 * and bf16's rounded queries and weights; see test_kvquant.c; the fifth: i8,
 * int8 rows, queries and u8 weights); the fourth:
 * the bf16 cache's chunked prefill (690 positions, storage error dominates:
 * the fp32 expanded form over the same bf16 rows was as far off) */
TEST(model_long_context_vs_naive_v3) { long_context_vs_naive("tiny-v3", (const double[5]){ 0.05, 1.0, 0.035, 2.6, 0.05 }, 0); }
/* V3.2: quantized index keys move top-8 selections among 700 positions, hence the loose bounds */
TEST(model_long_context_vs_naive_v32) { long_context_vs_naive("tiny-v32", (const double[5]){ 7.0, 6.0, 3.0, 7.7, 6.0 }, 0); }
/* the same V3.2 model with index_topk 1000 > 700: DSA layers on the dense paths (expanded and absorbed
 * prefill over cache rows that carry the index key) */
TEST(model_long_context_vs_naive_v32_dense) { long_context_vs_naive("tiny-v32", (const double[5]){ 0.15, 0.25, 0.15, 3.4, 0.04 }, 1000); }
TEST(model_long_context_vs_naive_v2_lite) { long_context_vs_naive("tiny-v2-lite", (const double[5]){ 0.025, 0.1, 0.02, 0.5, 0.04 }, 0); }

/* V3.2 configs: the indexer keys, and layouts we do not run are named errors */
TEST(model_v32_config_errors) {
    char *base;
    size_t n;
    ds_err e = { 0 };
    if (ds_read_file("tests/fixtures/tiny-v32/config.json", 1 << 20, &base, &n, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    ds_config c;
    CHECK(ds_config_parse(&c, base, n, "v32", &e) == DS_OK);
    CHECK_EQ_INT(c.index_topk, 8);
    CHECK_EQ_INT(c.attn_kind[0], DS_ATTN_DSA);
    CHECK_EQ_INT(ds_config_kv_width(&c, 2), 32 + 8 + 16);
    static const struct { const char *from, *to, *msg; } bad[] = {
        { "\"sparse\",\n    \"sparse\"", "\"sparse\",\n    \"dense\"", "mlp_layer_types" },
        { "\"q_lora_rank\": 48", "\"q_lora_rank\": null", "q_lora_rank" },
        { "\"index_topk\": 8", "\"index_topk\": 0", "index_topk" },
        { "\"index_head_dim\": 16", "\"index_head_dim\": 4", "index_head_dim" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *p = strstr(base, bad[i].from);
        CHECK_MSG(p != NULL, "config has no '%s'", bad[i].from);
        if (!p) continue;
        char buf[8192];
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - base), base, bad[i].to, p + strlen(bad[i].from));
        ds_err e2 = { 0 };
        CHECK_MSG(ds_config_parse(&c, buf, strlen(buf), "v32", &e2) != DS_OK, "accepted %s", bad[i].to);
        CHECK_MSG(strstr(e2.msg, bad[i].msg) != NULL, "error '%s' does not name %s", e2.msg, bad[i].msg);
    }
    free(base);
    /* FP8 scale formats: ue8m0 (power-of-two fp32 scales) loads, others are named */
    if (ds_read_file("tests/fixtures/tiny-v32-fp8/config.json", 1 << 20, &base, &n, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    CHECK(ds_config_parse(&c, base, n, "v32-fp8", &e) == DS_OK);
    CHECK(c.fp8);
    char *p = strstr(base, "\"ue8m0\"");
    CHECK(p != NULL);
    if (p) {
        memcpy(p, "\"e5m2x\"", 7);
        ds_err e2 = { 0 };
        CHECK(ds_config_parse(&c, base, n, "v32-fp8", &e2) == DS_EUNSUPPORTED);
        CHECK_MSG(strstr(e2.msg, "scale_fmt") != NULL, "error '%s' does not name scale_fmt", e2.msg);
    }
    free(base);
}

/* V4: prefill in chunks of 7 against transformers' own chunked prefill
 * (ref_chunk_logits.f32), and a truncated cache refilled gives the same
 * logits (the cache rows of a position never depend on later tokens). */
TEST(model_v4_chunks_and_truncate) {
    ref_t r;
    if (load_ref("tiny-v4", &r)) return;
    ds_model *m = open_fixture("tiny-v4");
    if (!m) { json_decref(r.ref); return; }
    int64_t T = r.T, V = r.V;
    float *ref = load_f32("tiny-v4", "ref_chunk_logits.f32", (size_t)(T * V));
    float *out = calloc((size_t)(T * V), sizeof(float)), *again = calloc((size_t)(T * V), sizeof(float));
    ds_err e = { 0 };
    ds_kvcache c;
    CHECK(ds_kvcache_init(&c, m, 64, &e) == 0);
    for (int64_t t0 = 0; ref && t0 < T; t0 += 7) {
        ds_seq_chunk ch = { &c, r.tokens + t0, DS_MIN(7, T - t0), true };
        CHECK(ds_model_forward(m, NULL, &ch, 1, out + t0 * V, NULL, &e) == 0);
    }
    if (ref) compare("chunks of 7", out, ref, T, V);
    /* cut inside a CSA overlap and an HCA window (13 = 3·4 + 1 = 8 + 5), refill */
    ds_kvcache_truncate(&c, 13);
    ds_seq_chunk rest = { &c, r.tokens + 13, T - 13, true };
    CHECK(ds_model_forward(m, NULL, &rest, 1, again + 13 * V, NULL, &e) == 0);
    int64_t bad = 0;
    for (int64_t i = 13 * V; i < T * V; i++) bad += fabsf(again[i] - out[i]) > 1e-5f;
    CHECK_MSG(bad == 0, "%lld logits differ after truncating to 13 positions and refilling", (long long)bad);
    ds_kvcache_free(&c);
    free(ref); free(out); free(again);
    ds_model_close(m);
    json_decref(r.ref);
}

/* V4's compact cache (kvcache_v4.c): with no slack the rings wrap every few
 * tokens (window 8, CSA's open windows 8, HCA's 8): token by token it still
 * gives transformers' incremental logits, bit for bit what a cache with
 * slack gives; truncating further back than the rings reach answers 0
 * positions (refilled from the ids: the same logits), copying such a prefix
 * is a named error, and the cache holds far less than a row per position. */
TEST(model_v4_compact_cache) {
    ref_t r;
    if (load_ref("tiny-v4", &r)) return;
    ds_model *m = open_fixture("tiny-v4");
    if (!m) { json_decref(r.ref); return; }
    int64_t T = r.T, V = r.V;
    float *ref = load_f32("tiny-v4", "ref_incr_logits.f32", (size_t)(T * V));
    float *a = calloc((size_t)(T * V), sizeof(float)), *b = calloc((size_t)(T * V), sizeof(float));
    ds_err e = { 0 };
    ds_kvcache c0, cs, cp;
    CHECK(ds_kvcache_init(&c0, m, 64, &e) == 0 && ds_kvcache_init(&cs, m, 64, &e) == 0 && ds_kvcache_init(&cp, m, 64, &e) == 0);
    CHECK(ds_kvcache_set_v4_slack(&c0, 0, &e) == 0);
    for (int64_t t = 0; t < T; t++) {
        ds_seq_chunk x = { &c0, r.tokens + t, 1, false }, y = { &cs, r.tokens + t, 1, false };
        CHECK(ds_model_forward(m, NULL, &x, 1, a + t * V, NULL, &e) == 0);
        CHECK(ds_model_forward(m, NULL, &y, 1, b + t * V, NULL, &e) == 0);
    }
    if (ref) compare("token by token, no slack", a, ref, T, V);
    CHECK_MSG(memcmp(a, b, (size_t)(T * V) * sizeof(float)) == 0, "no slack and slack %d differ", DS_V4_SLACK);
    ds_err e1 = { 0 };
    CHECK(ds_kvcache_set_v4_slack(&c0, 4, &e1) != 0);   /* only before first use */
    CHECK(ds_kvcache_can_truncate(&c0, T));
    CHECK(!ds_kvcache_can_truncate(&c0, 13));
    CHECK(ds_kvcache_copy_prefix(&cp, &c0, 13, &e) == DS_ERANGE);
    CHECK_MSG(strstr(e.msg, "prefix of 13") != NULL, "error '%s' does not name the prefix", e.msg);
    CHECK(ds_kvcache_copy_prefix(&cp, &cs, 13, &e) == 0);   /* within the slack: exact */
    ds_seq_chunk rest = { &cp, r.tokens + 13, T - 13, true };
    float *c = calloc((size_t)(T * V), sizeof(float));
    CHECK(ds_model_forward(m, NULL, &rest, 1, c + 13 * V, NULL, &e) == 0);
    int64_t bad = 0;
    for (int64_t i = 13 * V; i < T * V; i++) bad += fabsf(c[i] - b[i]) > 1e-5f;
    CHECK_MSG(bad == 0, "%lld logits differ after copying a 13-position prefix and refilling", (long long)bad);
    /* no slack: truncating to 13 empties the cache; refilled from the ids, the same logits */
    CHECK_EQ_INT(ds_kvcache_truncate(&c0, 13), 0);
    CHECK_EQ_INT(c0.n_past, 0);
    ds_seq_chunk all = { &c0, r.tokens, T, true };
    CHECK(ds_model_forward(m, NULL, &all, 1, c, NULL, &e) == 0);
    bad = 0;
    for (int64_t i = 0; i < T * V; i++) bad += fabsf(c[i] - b[i]) > 1e-5f;
    CHECK_MSG(bad == 0, "%lld logits differ after the emptied cache was refilled", (long long)bad);
    /* truncating to 0 (serve's slot reuse when nothing of the prompt can be reused) must
     * empty the rings too: the refill then reads no stale ring bounds */
    CHECK_EQ_INT(ds_kvcache_truncate(&c0, 0), 0);
    for (int64_t t0 = 0; t0 < T; t0 += 10) {   /* in chunks: the later ones read the rings */
        ds_seq_chunk part = { &c0, r.tokens + t0, DS_MIN(10, T - t0), true };
        CHECK(ds_model_forward(m, NULL, &part, 1, c + t0 * V, NULL, &e) == 0);
    }
    bad = 0;
    for (int64_t i = 0; i < T * V; i++) bad += fabsf(c[i] - b[i]) > 1e-5f;
    CHECK_MSG(bad == 0, "%lld logits differ after truncating to 0 and refilling (%s)", (long long)bad, e.msg);
    /* a row per position would be (32 + 2·272 + 128)·4 B x 40; the rings are fixed, entries 40/4, 40/8 */
    CHECK_MSG(ds_kvcache_bytes(&c0) < 30000, "slack-0 cache holds %lld bytes", (long long)ds_kvcache_bytes(&c0));
    ds_kvcache_free(&c0); ds_kvcache_free(&cs); ds_kvcache_free(&cp);
    free(ref); free(a); free(b); free(c);
    ds_model_close(m);
    json_decref(r.ref);
}

/* V4 configs: what we parse, and keys / values we do not run are named errors */
TEST(model_v4_config_errors) {
    char *base;
    size_t n;
    ds_err e = { 0 };
    if (ds_read_file("tests/fixtures/tiny-v4/config.json", 1 << 20, &base, &n, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    ds_config c;
    CHECK(ds_config_parse(&c, base, n, "v4", &e) == DS_OK);
    CHECK_EQ_INT(c.arch, DS_ARCH_V4);
    CHECK_EQ_INT(c.n_streams, 4);
    CHECK_EQ_INT(c.attn_kind[0], DS_ATTN_SWA);
    CHECK_EQ_INT(c.attn_kind[1], DS_ATTN_CSA);
    CHECK_EQ_INT(c.attn_kind[2], DS_ATTN_HCA);
    CHECK_EQ_INT(c.ffn_kind[0], DS_FFN_HASH_MOE);
    CHECK_EQ_INT(c.ffn_kind[2], DS_FFN_MOE);
    CHECK_EQ_INT(c.compress_rate_hca, 8);
    CHECK_EQ_INT(c.qk_rope_head_dim, 8);
    static const struct { const char *from, *to, *msg; } bad[] = {
        { "\"sliding_window\": 8", "\"sliding_windows\": 8", "sliding_windows" },
        { "\"sliding_attention\"", "\"full_attention\"", "layer_types[0]" },
        { "\"hash_moe\"", "\"dense\"", "mlp_layer_types[0]" },
        { "\"o_groups\": 2", "\"o_groups\": 3", "o_groups" },
        { "\"num_key_value_heads\": 1", "\"num_key_value_heads\": 2", "num_key_value_heads" },
        { "\"scoring_func\": \"sqrtsoftplus\"", "\"scoring_func\": \"relu\"", "scoring_func" },
        { "\"index_head_dim\": 16", "\"index_head_dim\": 4", "index_head_dim" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *p = strstr(base, bad[i].from);
        CHECK_MSG(p != NULL, "config has no '%s'", bad[i].from);
        if (!p) continue;
        char buf[8192];
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - base), base, bad[i].to, p + strlen(bad[i].from));
        ds_err e2 = { 0 };
        CHECK_MSG(ds_config_parse(&c, buf, strlen(buf), "v4", &e2) != DS_OK, "accepted %s", bad[i].to);
        CHECK_MSG(strstr(e2.msg, bad[i].msg) != NULL, "error '%s' does not name %s", e2.msg, bad[i].msg);
    }
    free(base);
}

/* V4's MTP layers in a config: num_nextn_predict_layers of them after the L main
 * layers, their attention kind from the release's compress_ratios[L + i] (or a
 * layer_types list that long), sliding otherwise; score-routed MoE */
TEST(model_v4_mtp_config) {
    char *base, *plain;
    size_t n, n2;
    ds_err e = { 0 };
    if (ds_read_file("tests/fixtures/tiny-v4-mtp/config.json", 1 << 20, &base, &n, &e) ||
        ds_read_file("tests/fixtures/tiny-v4/config.json", 1 << 20, &plain, &n2, &e)) {
        ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    ds_config c;
    CHECK(ds_config_parse(&c, base, n, "v4", &e) == DS_OK);
    CHECK_EQ_INT(c.n_layer, 4);
    CHECK_EQ_INT(c.n_mtp, 1);
    CHECK_EQ_INT(c.attn_kind[1], DS_ATTN_CSA);
    CHECK_EQ_INT(c.attn_kind[2], DS_ATTN_HCA);   /* compress_ratios: the HCA rate (8 here) names HCA */
    CHECK_EQ_INT(c.attn_kind[4], DS_ATTN_CSA);
    CHECK_EQ_INT(c.ffn_kind[4], DS_FFN_MOE);
    char buf[8192];
    struct { const char *from, *to; int kind; const char *msg; } v[] = {
        { "    4\n  ]", "    0\n  ]", DS_ATTN_SWA, NULL },
        { "    4\n  ]", "    8\n  ]", DS_ATTN_HCA, NULL },
        { "    4\n  ]", "    16\n  ]", 0, "compress_ratios[4]" },
        { "    4\n  ]", "    4, \"x\"\n  ]", DS_ATTN_CSA, NULL },   /* more ratios than layers: unread */
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *p = strstr(base, v[i].from);
        CHECK_MSG(p != NULL, "config has no '%s'", v[i].from);
        if (!p) continue;
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - base), base, v[i].to, p + strlen(v[i].from));
        ds_err e2 = { 0 };
        int rc = ds_config_parse(&c, buf, strlen(buf), "v4", &e2);
        if (v[i].msg) {
            CHECK_MSG(rc != DS_OK, "accepted %s", v[i].to);
            CHECK_MSG(strstr(e2.msg, v[i].msg) != NULL, "error '%s' does not name %s", e2.msg, v[i].msg);
        } else {
            CHECK_MSG(rc == DS_OK, "%s: %s", v[i].to, e2.msg);
            if (rc == DS_OK) CHECK_EQ_INT(c.attn_kind[4], v[i].kind);
        }
    }
    /* transformers' form (layer_types of L entries): the MTP layer is sliding, as the release's;
     * a fifth layer_types entry names it */
    struct { const char *from, *to; int kind; } w[] = {
        { "\"num_nextn_predict_layers\": 0", "\"num_nextn_predict_layers\": 1", DS_ATTN_SWA },
        { "\"compressed_sparse_attention\"\n  ],", "\"compressed_sparse_attention\", \"heavily_compressed_attention\"],", -1 },
    };
    char buf2[8192];
    snprintf(buf2, sizeof buf2, "%s", plain);
    for (size_t i = 0; i < 2; i++) {
        char *p = strstr(buf2, w[i].from);
        CHECK_MSG(p != NULL, "config has no '%s'", w[i].from);
        if (!p) break;
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - buf2), buf2, w[i].to, p + strlen(w[i].from));
        snprintf(buf2, sizeof buf2, "%s", buf);
        ds_err e2 = { 0 };
        CHECK_MSG(ds_config_parse(&c, buf2, strlen(buf2), "v4", &e2) == DS_OK, "%s", e2.msg);
        CHECK_EQ_INT(c.n_mtp, 1);
        CHECK_EQ_INT(c.attn_kind[4], w[i].kind < 0 ? DS_ATTN_HCA : w[i].kind);
    }
    free(base);
    free(plain);
}

/* V4's quantization_config: the release's (fp8, e4m3, ue8m0, dynamic, blocks) parses;
 * anything else is an error naming the key */
TEST(model_v4_quant_config) {
    char *base;
    size_t n;
    ds_err e = { 0 };
    if (ds_read_file("tests/fixtures/tiny-v4-fp8/config.json", 1 << 20, &base, &n, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    ds_config c;
    CHECK(ds_config_parse(&c, base, n, "v4", &e) == DS_OK);
    CHECK(c.fp8);
    CHECK_EQ_INT(c.fp8_block_r, 32);
    CHECK_EQ_INT(c.fp8_block_c, 32);
    static const struct { const char *from, *to, *msg; } bad[] = {
        { "\"scale_fmt\": \"ue8m0\"", "\"scale_fmt\": \"e4m3\"", "scale_fmt" },
        { "\"quant_method\": \"fp8\"", "\"quant_method\": \"awq\"", "quant_method" },
        { "\"fmt\": \"e4m3\"", "\"fmt\": \"e5m2\"", "fmt" },
        { "\"activation_scheme\": \"dynamic\"", "\"activation_scheme\": \"static\"", "activation_scheme" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *p = strstr(base, bad[i].from);
        CHECK_MSG(p != NULL, "config has no '%s'", bad[i].from);
        if (!p) continue;
        char buf[8192];
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - base), base, bad[i].to, p + strlen(bad[i].from));
        ds_err e2 = { 0 };
        CHECK_MSG(ds_config_parse(&c, buf, strlen(buf), "v4", &e2) != DS_OK, "accepted %s", bad[i].to);
        CHECK_MSG(strstr(e2.msg, bad[i].msg) != NULL, "error '%s' does not name %s", e2.msg, bad[i].msg);
    }
    free(base);
}

/* The indexer's top-k (quickselect) against a plain twin: sort everything by
 * (score desc, position asc), take k, positions ascending. Scores with many
 * ties and NaNs (-inf). */
static bool topk_before(const float *s, int32_t a, int32_t b) {
    float x = isnan(s[a]) ? -INFINITY : s[a], y = isnan(s[b]) ? -INFINITY : s[b];
    return x > y || (x == y && a < b);
}

TEST(model_dsa_topk_vs_sort) {
    static const int64_t ns[] = { 1, 2, 5, 64, 333, 1000 };
    static float s[1000];
    static int32_t got[1010], ref[1000];
    static char scratch[1000 * 8];
    uint64_t r = 12345;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (int trial = 0; trial < 20; trial++) {
            int64_t n = ns[a], levels = 1 + trial % 7;
            for (int64_t j = 0; j < n; j++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                int64_t v = (int64_t)(r >> 33) % (trial < 10 ? levels : 1000000);
                s[j] = (float)v - 3.0f;
                if ((r >> 20) % 97 == 0) s[j] = NAN;
            }
            int64_t ks[] = { 1, 7, n / 2, n, n + 3 };
            for (int ki = 0; ki < 5; ki++) {
                int64_t k = ks[ki] < 1 ? 1 : ks[ki], kk = k < n ? k : n;
                for (int64_t j = 0; j < n; j++) ref[j] = (int32_t)j;
                for (int64_t i = 1; i < n; i++)   /* insertion sort by the selection order */
                    for (int64_t j = i; j > 0 && topk_before(s, ref[j], ref[j - 1]); j--) {
                        int32_t t = ref[j]; ref[j] = ref[j - 1]; ref[j - 1] = t;
                    }
                for (int64_t i = 1; i < kk; i++)   /* the first kk, ascending */
                    for (int64_t j = i; j > 0 && ref[j] < ref[j - 1]; j--) {
                        int32_t t = ref[j]; ref[j] = ref[j - 1]; ref[j - 1] = t;
                    }
                ds_dsa_topk(s, n, k, got, scratch);
                CHECK_MSG(memcmp(got, ref, (size_t)kk * sizeof *got) == 0, "topk n=%lld k=%lld trial %d differs",
                          (long long)n, (long long)k, trial);
            }
        }
}

/* The routers ride in the repacked weights' memory (repack_model.c: read
 * from huge pages, not the file's 4 KiB pages): where the model was
 * repacked, every layer's router lies inside that copy and holds the bytes
 * the file holds (the model opened with DS_REPACK=0 reads them in place). */
TEST(model_router_copied_with_repack) {
    const char *path = "tests/fixtures/gguf/kq.llama-q4_k_m.gguf";
    ds_err e = { 0 };
    ds_model *m = NULL, *raw = NULL;
    if (ds_model_open(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg); return; }
    if (!m->rp_buf) {
        ds_model_close(m);
        SKIP("nothing repacked (no x8 kernels at this level, or DS_REPACK=0)");
    }
    const char *old = getenv("DS_REPACK");
    setenv("DS_REPACK", "0", 1);
    int rc = ds_model_open(&raw, path, &e);
    if (old) setenv("DS_REPACK", old, 1); else unsetenv("DS_REPACK");
    CHECK(rc == 0 && raw && !raw->rp_buf);
    int routers = 0;
    for (int64_t l = 0; raw && l < m->cfg.n_layer; l++) {
        const ds_tensor *t = &m->layers[l].router, *r = &raw->layers[l].router;
        if (!ds_tensor_present(t)) continue;
        routers++;
        const uint8_t *p = t->data, *b = m->rp_buf;
        CHECK_MSG(p >= b && p + t->nbytes <= b + m->rp_bytes, "layer %lld: the router is not in the repacked copy", (long long)l);
        CHECK_MSG(t->nbytes == r->nbytes && memcmp(t->data, r->data, t->nbytes) == 0, "layer %lld: the router's bytes differ", (long long)l);
    }
    CHECK(routers > 0);
    ds_model_close(raw);
    ds_model_close(m);
}
