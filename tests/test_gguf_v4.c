/*
 * test_gguf_v4.c - DeepSeek-V4 GGUFs in llama.cpp's `deepseek4` layout:
 * MXFP4 blocks against the PyPI gguf package's dequantizer, a file written
 * by llama.cpp's own converter (tiny-v4-fp8: FP4 experts as MXFP4) against
 * the folder and transformers, our writer's files read back (F32/BF16 exact,
 * MXFP4 experts bit for bit, Q8_0 / Q4_K within KL bounds), our files run by
 * llama.cpp (fixtures/gguf/v4-llama, v32-llama: llama.cpp's logits recorded
 * by tools/gen_v4_gguf_fixtures.py), bad deepseek4 metadata, and V3.2's
 * `deepseek32` (llama.cpp's converter's file, ours).
 *
 * Tolerances (tiny random models, logits O(1-5)):
 *   same weights (F32 / BF16 / MXFP4 = the folder's values): identical logits
 *     on AVX2 and up (0; 3e-5 with DS_ISA=generic, as test_gguf.c), and vs
 *     transformers <= 1e-4 like tests/test_model.c;
 *   llama.cpp on our F32 file: measured 1.0e-5 max |dlogit| (its own
 *     summation order); bound 1e-4;
 *   Q8_0 / Q4_K: ~3x the measured mean KL (printed). tiny-v4 is sensitive:
 *     its indexer top-k has relative margins of 0.5 % and every weight class
 *     alone moves the KL by 1e-3 .. 9e-3 at Q8_0 (README).
 */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/mmap_file.h"
#include "io/gguf.h"
#include "io/json.h"
#include "model/convert.h"
#include "model/model.h"
#include "runtime/compare.h"
#include "tensor/fp4.h"
#include "tensor/mxfp4.h"

static const char *v4tmp(const char *name) {
    static char dir[64], buf[4][256];
    static int k;
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/ds_test_gguf_v4_XXXXXX");
        if (!mkdtemp(dir)) snprintf(dir, sizeof dir, "/tmp");
    }
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static float *read_f32(const char *path, size_t n) {
    char *buf;
    size_t len;
    ds_err e = { 0 };
    if (ds_read_file(path, 64 << 20, &buf, &len, &e) || len != n * sizeof(float)) {
        ds_test_fail(__FILE__, __LINE__, "%s: %s", path, e.code ? e.msg : "wrong size");
        if (!e.code) free(buf);
        return NULL;
    }
    return (float *)buf;
}

/* tokens of a fixture's ref.json (at most 64) */
static int ref_tokens(const char *ref_json, int32_t *tok, int64_t *T) {
    json_t *j;
    ds_err e = { 0 };
    if (ds_json_load_file(ref_json, 1 << 20, &j, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return -1; }
    json_t *t = json_object_get(j, "tokens");
    *T = DS_MIN((int64_t)json_array_size(t), 64);
    for (int64_t i = 0; i < *T; i++) tok[i] = (int32_t)json_integer_value(json_array_get(t, (size_t)i));
    json_decref(j);
    return *T > 0 ? 0 : -1;
}

static float *logits_of(ds_model *m, const int32_t *tok, int64_t T, bool incremental) {
    int64_t V = m->cfg.vocab_size;
    float *out = calloc((size_t)(T * V), sizeof(float));
    ds_kvcache c;
    ds_err e = { 0 };
    CHECK(ds_kvcache_init(&c, m, T, &e) == 0);
    if (incremental) {
        for (int64_t t = 0; t < T; t++) {
            ds_seq_chunk ch = { &c, tok + t, 1, true };
            CHECK_MSG(ds_model_forward(m, NULL, &ch, 1, out + t * V, NULL, &e) == 0, "%s", e.msg);
        }
    } else {
        ds_seq_chunk ch = { &c, tok, T, true };
        CHECK_MSG(ds_model_forward(m, NULL, &ch, 1, out, NULL, &e) == 0, "%s", e.msg);
    }
    ds_kvcache_free(&c);
    return out;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = ds_max_err(m, fabs((double)a[i] - b[i]));
    return m;
}

static double same_bits_bound(double b) { return ds_isa_level() == DS_ISA_GENERIC ? fmax(b, 3e-5) : b; }

static ds_model *open_path(const char *path) {
    ds_model *m = NULL;
    ds_err e = { 0 };
    if (ds_model_open(&m, path, &e)) ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg);
    return m;
}

/* src written with opts o (experts: FP4 kept as MXFP4 unless o says otherwise), then opened */
static ds_model *write_open(const ds_model *src, const char *name, const ds_convert_opts *o) {
    ds_err e = { 0 };
    const char *path = v4tmp(name);
    if (ds_model_write_gguf(src, path, o, &e)) { ds_test_fail(__FILE__, __LINE__, "write %s: %s", name, e.msg); return NULL; }
    return open_path(path);
}

/* The ggml type of tensor `name` in the GGUF at path (-1: absent). */
static int file_type_of(const char *path, const char *name) {
    ds_gguf g;
    ds_err e = { 0 };
    if (ds_gguf_open(&g, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return -1; }
    const ds_gguf_tensor *t = ds_gguf_find_tensor(&g, name);
    int ty = t ? (int)t->type : -1;
    ds_gguf_close(&g);
    return ty;
}

/* ---------------------------------------------------------------- MXFP4 */

TEST(mxfp4_vs_gguf_numpy) {
    /* tests/fixtures/quant/mxfp4.bin (tools/gen_mxfp4_fixture.py): blocks and gguf's floats */
    char *buf;
    size_t len;
    ds_err e = { 0 };
    if (ds_read_file("tests/fixtures/quant/mxfp4.bin", 1 << 20, &buf, &len, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    uint32_t h[4];
    memcpy(h, buf, sizeof h);
    CHECK(h[0] == 39 && h[2] == DS_MXFP4_BLOCK_BYTES && h[3] == DS_MXFP4_BLOCK);
    int64_t nb = h[1];
    CHECK(len == 16 + (size_t)nb * (17 + 32 * 4));
    const uint8_t *blocks = (const uint8_t *)buf + 16;
    float *ref = malloc((size_t)nb * 32 * sizeof(float)), *out = malloc((size_t)nb * 32 * sizeof(float));
    memcpy(ref, blocks + nb * 17, (size_t)nb * 32 * sizeof(float));
    /* the reference dequantizer, block by block, exactly (code 8 is -0 in fp4.h's
     * table and +0 in ggml's: equal values) */
    ds_mxfp4_dequant_ref(blocks, nb, out);
    int64_t bad = -1;
    for (int64_t i = 0; i < nb * 32 && bad < 0; i++)
        if (out[i] != ref[i]) bad = i;
    CHECK_MSG(bad < 0, "block %lld value %lld: %g vs gguf %g", (long long)(bad / 32), (long long)(bad % 32),
              bad >= 0 ? out[bad] : 0, bad >= 0 ? ref[bad] : 0);
    /* repacked into fp4.h rows: the FP4 reference (and AVX2) row dequantizers give the same floats */
    uint8_t *q = malloc((size_t)nb * 16), *s = malloc((size_t)nb), *back = malloc((size_t)nb * 17);
    ds_mxfp4_to_e2m1(blocks, nb, q, s);
    ds_fp4_row_ref(q, s, DS_MXFP4_BLOCK, 0, nb * 32, out);
    bad = -1;
    for (int64_t i = 0; i < nb * 32 && bad < 0; i++)
        if (out[i] != ref[i]) bad = i;
    CHECK_MSG(bad < 0, "e2m1 rows differ from gguf's MXFP4 values at %lld", (long long)bad);
    if (ds_isa_level() >= DS_ISA_AVX2) {
        ds_fp4_row_avx2(q, s, DS_MXFP4_BLOCK, nb * 32, out);
        bad = -1;
        for (int64_t i = 0; i < nb * 32 && bad < 0; i++)
            if (out[i] != ref[i]) bad = i;
        CHECK_MSG(bad < 0, "AVX2 e2m1 rows differ from gguf's values at %lld", (long long)bad);
    }
    /* and back: the same bytes (lossless both ways) */
    ds_e2m1_to_mxfp4(q, s, nb, back);
    CHECK(memcmp(back, blocks, (size_t)nb * 17) == 0);
    free(q); free(s); free(back); free(ref); free(out); free(buf);
}

/* ---------------------------------------------- llama.cpp's own converter */

TEST(gguf_v4_llamacpp_converter) {
    /* convert_hf_to_gguf.py (DeepseekV4Model) of tiny-v4-fp8 with its FP8
     * matrices as exact BF16 (tools/gen_v4_gguf_fixtures.py): BF16 matrices,
     * MXFP4 experts, I32 tid2eid. Same weights as the folder: same logits,
     * and transformers' within 1e-4. */
    const char *path = "tests/fixtures/gguf/tiny-v4-fp8.llama-mxfp4.gguf";
    ds_model *g = open_path(path), *src = open_path("tests/fixtures/tiny-v4-fp8");
    if (!g || !src) { ds_model_close(g); ds_model_close(src); return; }
    const ds_config *a = &g->cfg, *b = &src->cfg;
    CHECK(a->arch == DS_ARCH_V4 && a->scoring_func == DS_SCORE_SQRTSOFTPLUS);
    CHECK_EQ_INT(a->n_layer, b->n_layer);
    CHECK_EQ_INT(a->compress_rate_csa, b->compress_rate_csa);
    CHECK_EQ_INT(a->compress_rate_hca, b->compress_rate_hca);
    for (int64_t l = 0; l < a->n_layer; l++) {
        CHECK_EQ_INT(a->attn_kind[l], b->attn_kind[l]);
        CHECK_EQ_INT(a->ffn_kind[l], b->ffn_kind[l]);
    }
    CHECK(a->yarn == b->yarn && a->rope_factor == b->rope_factor && a->rope_orig_max_pos == b->rope_orig_max_pos);
    CHECK(a->rope_theta == b->rope_theta && a->compress_rope_theta == b->compress_rope_theta);
    CHECK(a->swiglu_limit == b->swiglu_limit && a->routed_scaling_factor == b->routed_scaling_factor);
    CHECK_EQ_INT(a->n_streams, b->n_streams);
    CHECK_EQ_INT(a->o_groups, b->o_groups);
    CHECK_EQ_INT(a->index_head_dim, b->index_head_dim);
    CHECK_EQ_INT(a->sliding_window, b->sliding_window);
    CHECK_EQ_INT(g->n_params, src->n_params);
    /* MXFP4 experts are views into the file mapping (no resident copy), every owned expert */
    for (int64_t l = 0; l < a->n_layer; l++)
        for (int64_t x = 0; x < a->n_routed_experts && g->layers[l].experts; x++) {
            const ds_tensor *w[3] = { &g->layers[l].experts[x].gate, &g->layers[l].experts[x].up,
                                      &g->layers[l].experts[x].down };
            for (int k = 0; k < 3; k++) {
                if (!w[k]->data) continue;   /* a dense layer */
                const uint8_t *p = w[k]->data;
                CHECK_MSG(w[k]->dtype == DS_DTYPE_MXFP4 && p >= g->gguf->buf && p + w[k]->nbytes <= g->gguf->buf + g->gguf->size,
                          "layer %lld expert %lld [%d]: %s, not a view into the mapping", (long long)l, (long long)x, k,
                          ds_dtype_name(w[k]->dtype));
            }
        }
    CHECK(g->layers[3].experts[5].down.dtype == DS_DTYPE_MXFP4);
    {   /* an expert-parallel share [2, 5): the same views for the owned experts, nothing for the others */
        ds_model_opts o = DS_MODEL_OPTS_DEFAULT;
        o.expert_lo = 2, o.expert_hi = 5;
        ds_model *p = NULL;
        ds_err e = { 0 };
        if (ds_model_open_opts(&p, path, &o, &e)) ds_test_fail(__FILE__, __LINE__, "open %s [2, 5): %s", path, e.msg);
        else {
            for (int64_t x = 0; x < a->n_routed_experts; x++) {
                const ds_tensor *pw = &p->layers[3].experts[x].down, *gw = &g->layers[3].experts[x].down;
                bool own = x >= 2 && x < 5;
                CHECK_MSG(own ? pw->dtype == DS_DTYPE_MXFP4 && pw->nbytes == gw->nbytes &&
                                    (const uint8_t *)pw->data - p->gguf->buf == (const uint8_t *)gw->data - g->gguf->buf
                              : pw->data == NULL,
                          "expert %lld of the share [2, 5)", (long long)x);
            }
            ds_model_close(p);
        }
    }
    CHECK_EQ_INT(file_type_of(path, "blk.3.ffn_down_exps.weight"), DS_GGML_MXFP4);
    int32_t tok[64];
    int64_t T, V = b->vocab_size;
    if (ref_tokens("tests/fixtures/tiny-v4-fp8/ref.json", tok, &T) == 0) {
        float *x = logits_of(g, tok, T, false), *y = logits_of(src, tok, T, false), *xi = logits_of(g, tok, T, true);
        float *hf = read_f32("tests/fixtures/tiny-v4-fp8/ref_logits.f32", (size_t)(T * V));
        double d = max_abs_diff(x, y, T * V);
        CHECK_MSG(d <= same_bits_bound(0), "llama.cpp's V4 GGUF vs the folder: %.3g", d);
        if (hf) {
            CHECK_MSG(max_abs_diff(x, hf, T * V) <= 1e-4, "vs transformers: %.3g", max_abs_diff(x, hf, T * V));
            CHECK_MSG(max_abs_diff(xi, hf, T * V) <= 1e-4, "incremental vs transformers: %.3g", max_abs_diff(xi, hf, T * V));
        }
        free(x); free(y); free(xi); free(hf);
    }
    ds_model_close(g);
    ds_model_close(src);
}

/* ------------------------------------------------------------ our writer */

TEST(gguf_v4_write_read_exact) {
    /* tiny-v4 (BF16) -> F32 and BF16 GGUFs; tiny-v4-fp8 (FP8 + FP4) -> BF16
     * matrices + MXFP4 experts (exact: e4m3 x 2^k fits BF16, FP4 repacked);
     * llama.cpp's file -> ours (GGUF -> GGUF, MXFP4 copied): all the source's logits */
    static const struct { const char *fx, *src; ds_dtype t; } cases[] = {
        { "tiny-v4", "tests/fixtures/tiny-v4", DS_DTYPE_F32 },
        { "tiny-v4", "tests/fixtures/tiny-v4", DS_DTYPE_BF16 },
        { "tiny-v4-fp8", "tests/fixtures/tiny-v4-fp8", DS_DTYPE_BF16 },
        { "tiny-v4-official", "tests/fixtures/tiny-v4-official", DS_DTYPE_BF16 },
        { "tiny-v4-fp8", "tests/fixtures/gguf/tiny-v4-fp8.llama-mxfp4.gguf", DS_DTYPE_BF16 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char ref[256], hfp[256], name[64];
        snprintf(ref, sizeof ref, "tests/fixtures/%s/ref.json", cases[i].fx);
        snprintf(hfp, sizeof hfp, "tests/fixtures/%s/ref_logits.f32", cases[i].fx);
        snprintf(name, sizeof name, "v4-%zu.gguf", i);
        ds_model *src = open_path(cases[i].src);
        if (!src) continue;
        ds_convert_opts o;
        ds_convert_opts_default(&o, cases[i].t);
        o.fp4_as_mxfp4 = true;
        ds_model *g = write_open(src, name, &o);
        int32_t tok[64];
        int64_t T, V = src->cfg.vocab_size;
        if (g && ref_tokens(ref, tok, &T) == 0) {
            CHECK_EQ_INT(g->n_params, src->n_params);
            ds_dtype e0 = src->layers[2].experts[0].gate.dtype;
            bool fp4 = e0 == DS_DTYPE_F4_E2M1 || e0 == DS_DTYPE_MXFP4;
            CHECK_EQ_INT(file_type_of(v4tmp(name), "blk.2.ffn_gate_exps.weight"),
                         fp4 ? DS_GGML_MXFP4 : ds_ggml_type_of(cases[i].t));
            CHECK_EQ_INT(file_type_of(v4tmp(name), "blk.0.ffn_gate_tid2eid.weight"), DS_GGML_I32);
            float *x = logits_of(g, tok, T, false), *y = logits_of(src, tok, T, false);
            float *xi = logits_of(g, tok, T, true), *yi = logits_of(src, tok, T, true);
            float *hf = read_f32(hfp, (size_t)(T * V));
            double d1 = max_abs_diff(x, y, T * V), d2 = max_abs_diff(xi, yi, T * V);
            /* an FP8 source decodes through the FP8 dot kernel, its BF16 copy through the
             * BF16 one: the same values summed in another order (measured 5.3e-6) */
            double bound = same_bits_bound(src->layers[0].kv_proj.dtype == DS_DTYPE_F8_E4M3 ? 1e-5 : 0);
            printf("    %s -> %s: vs source %.3g (incremental %.3g)\n", cases[i].src, ds_dtype_name(cases[i].t), d1, d2);
            CHECK_MSG(d1 <= bound && d2 <= bound, "%s -> %s GGUF vs source: %.3g / %.3g (bound %.3g)", cases[i].src,
                      ds_dtype_name(cases[i].t), d1, d2, bound);
            if (hf) CHECK_MSG(max_abs_diff(x, hf, T * V) <= 1e-4, "%s: vs transformers %.3g", name, max_abs_diff(x, hf, T * V));
            free(x); free(y); free(xi); free(yi); free(hf);
        }
        ds_model_close(g);
        ds_model_close(src);
    }
}

TEST(gguf_v4_quantized) {
    /* --type q8_0 / q4_k of tiny-v4 (BF16) and of tiny-v4-fp8 (FP4 experts stay
     * MXFP4): mean KL vs the source; bounds ~3x measured (see README) */
    static const struct { const char *src; ds_dtype t; double kl; } cases[] = {
        { "tests/fixtures/tiny-v4", DS_DTYPE_Q8_0, 0.02 },
        { "tests/fixtures/tiny-v4", DS_DTYPE_Q4_K, 0.3 },
        { "tests/fixtures/tiny-v4-fp8", DS_DTYPE_Q8_0, 0.03 },
    };
    int32_t tok[64];
    int64_t T;
    if (ref_tokens("tests/fixtures/tiny-v4/ref.json", tok, &T)) return;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ds_model *src = open_path(cases[i].src);
        if (!src) continue;
        ds_convert_opts o;
        ds_convert_opts_default(&o, cases[i].t);
        o.fp4_as_mxfp4 = true;
        char name[64];
        snprintf(name, sizeof name, "v4q-%zu.gguf", i);
        ds_model *g = write_open(src, name, &o);
        if (g) {
            /* FP4 experts stay MXFP4; others take the type (tiny-v4's 64-wide rows: Q4_K falls back to Q5_0) */
            ds_dtype e0 = src->layers[2].experts[0].gate.dtype;
            bool fp4 = e0 == DS_DTYPE_F4_E2M1 || e0 == DS_DTYPE_MXFP4;
            int ty = file_type_of(v4tmp(name), "blk.2.ffn_up_exps.weight");
            CHECK_MSG(fp4 ? ty == DS_GGML_MXFP4 : ty != DS_GGML_MXFP4 && ty != DS_GGML_BF16, "%s: experts type %d", name, ty);
            float *x = logits_of(g, tok, T, false), *y = logits_of(src, tok, T, false);
            float *xi = logits_of(g, tok, T, true);
            ds_logit_stats s, si;
            ds_logit_stats_compute(y, x, T, src->cfg.vocab_size, &s);
            ds_logit_stats_compute(y, xi, T, src->cfg.vocab_size, &si);
            printf("    %s %s: KL prefill %.3g decode %.3g (bound %.3g), top-1 %.2f\n", cases[i].src,
                   ds_dtype_name(cases[i].t), s.kl_mean, si.kl_mean, cases[i].kl, s.top1);
            CHECK_MSG(s.kl_mean <= cases[i].kl && si.kl_mean <= cases[i].kl, "%s %s: KL %.3g / %.3g > %.3g", cases[i].src,
                      ds_dtype_name(cases[i].t), s.kl_mean, si.kl_mean, cases[i].kl);
            CHECK(s.kl_mean > 0);   /* it did quantize */
            free(x); free(y); free(xi);
        }
        ds_model_close(g);
        ds_model_close(src);
    }
    /* --experts mxfp4 from non-FP4 experts: a named error, no file */
    ds_model *src = open_path("tests/fixtures/tiny-v4");
    if (src) {
        ds_convert_opts o;
        ds_convert_opts_default(&o, DS_DTYPE_Q8_0);
        o.experts = DS_DTYPE_MXFP4;
        ds_err e = { 0 };
        CHECK(ds_model_write_gguf(src, v4tmp("bad-mxfp4.gguf"), &o, &e) == DS_EUNSUPPORTED);
        CHECK_MSG(strstr(e.msg, "mxfp4") && strstr(e.msg, "ffn_gate_exps"), "%s", e.msg);
        CHECK(access(v4tmp("bad-mxfp4.gguf"), F_OK) != 0);
        ds_model_close(src);
    }
}

/* --------------------------------------------- our file run by llama.cpp */

/* fixtures/gguf/v4-llama and v32-llama: models llama.cpp's graphs run
 * (V4: index_head_dim 64, HCA ratio 128; V3.2: index_head_dim 64, no MTP);
 * llama.cpp's logits of `deepseek convert --type f32` of each were recorded
 * (tools/gen_v4_gguf_fixtures.py; measured V4 1.0e-5 from ours and 1.2e-5
 * from transformers', V3.2 2.3e-6 and 3.1e-6). Our writer must still make
 * the very file llama.cpp ran (its FNV-1a 64 in ref.json: a changed name, key
 * or layout needs llama.cpp run again, tools/gen_v4_gguf_fixtures.py), and
 * that file, read back, must match the folder exactly and both references
 * within 1e-4. */
static void ours_in_llamacpp(const char *fx, const char *arch) {
    char dir[256], path[320];
    snprintf(dir, sizeof dir, "tests/fixtures/gguf/%s", fx);
    ds_model *src = open_path(dir);
    if (!src) return;
    ds_convert_opts o;
    ds_convert_opts_default(&o, DS_DTYPE_F32);
    char name[64];
    snprintf(name, sizeof name, "%s-f32.gguf", fx);
    ds_model *g = write_open(src, name, &o);
    int32_t tok[64];
    int64_t T, V = src->cfg.vocab_size;
    snprintf(path, sizeof path, "%s/ref.json", dir);
    if (g && ref_tokens(path, tok, &T) == 0) {
        ds_gguf gg;
        ds_err e = { 0 };
        char a[32] = "";
        if (ds_gguf_open(&gg, v4tmp(name), &e) == 0) {
            ds_gguf_get_str(&gg, "general.architecture", true, a, sizeof a, &e);
            ds_gguf_close(&gg);
        }
        CHECK_MSG(!strcmp(a, arch), "%s: architecture '%s'", fx, a);
        char *bytes;
        size_t len;
        if (ds_read_file(v4tmp(name), 64 << 20, &bytes, &len, &e) == 0) {
            uint64_t h = 0xcbf29ce484222325ull;
            for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)bytes[i]) * 0x100000001b3ull;
            free(bytes);
            char hex[17], want[32] = "";
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
            json_t *j = NULL;
            snprintf(path, sizeof path, "%s/ref.json", dir);
            if (ds_json_load_file(path, 1 << 20, &j, &e) == 0) {
                const char *w = json_string_value(json_object_get(j, "gguf_fnv1a64"));
                snprintf(want, sizeof want, "%s", w ? w : "");
                json_decref(j);
            }
            CHECK_MSG(!strcmp(hex, want), "%s: our F32 GGUF (FNV-1a %s) is not the file llama.cpp ran (%s)", fx, hex, want);
        }
        snprintf(path, sizeof path, "%s/llama_logits.f32", dir);
        float *ll = read_f32(path, (size_t)(T * V));
        snprintf(path, sizeof path, "%s/hf_logits.f32", dir);
        float *hf = read_f32(path, (size_t)(T * V));
        float *x = logits_of(g, tok, T, false), *y = logits_of(src, tok, T, false), *xi = logits_of(g, tok, T, true);
        CHECK_MSG(max_abs_diff(x, y, T * V) <= same_bits_bound(0), "%s: F32 GGUF vs folder %.3g", fx, max_abs_diff(x, y, T * V));
        if (ll && hf) {
            double d1 = max_abs_diff(x, ll, T * V), d2 = max_abs_diff(xi, ll, T * V), d3 = max_abs_diff(x, hf, T * V);
            printf("    %s: vs llama.cpp %.3g (incremental %.3g), vs transformers %.3g\n", fx, d1, d2, d3);
            CHECK_MSG(d1 <= 1e-4 && d2 <= 1e-4, "%s: vs llama.cpp's logits of the same file: %.3g / %.3g", fx, d1, d2);
            CHECK_MSG(d3 <= 1e-4, "%s: vs transformers %.3g", fx, d3);
        }
        free(ll); free(hf); free(x); free(y); free(xi);
    }
    ds_model_close(g);
    ds_model_close(src);
}

TEST(gguf_v4_ours_in_llamacpp) { ours_in_llamacpp("v4-llama", "deepseek4"); }

TEST(gguf_v32_ours_in_llamacpp) { ours_in_llamacpp("v32-llama", "deepseek32"); }

/* ------------------------------------------------------- bad metadata */

/* Copies the llama.cpp fixture with key `drop` left out (NULL: none) and
 * key `set` (a u32 key, or compress_ratios as an i32 array) given `val`. */
static const char *variant(const char *name, const char *drop, const char *set, int64_t val) {
    const char *in = "tests/fixtures/gguf/tiny-v4-fp8.llama-mxfp4.gguf", *out = v4tmp(name);
    ds_gguf g;
    ds_err e = { 0 };
    if (ds_gguf_open(&g, in, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return NULL; }
    ds_gguf_writer *w = ds_gguf_writer_new();
    for (int64_t i = 0; i < g.n_kv; i++) {
        const char *k = g.kv[i].key;
        if (drop && !strcmp(k, drop)) continue;
        if (set && !strcmp(k, set)) {
            if (!strcmp(set, "deepseek4.attention.compress_ratios")) {
                int32_t r[4] = { 0, 4, (int32_t)val, 4 };
                ds_gguf_w_arr(w, k, DS_GGUF_INT32, r, 4);
            } else {
                ds_gguf_w_u32(w, k, (uint32_t)val);
            }
            continue;
        }
        ds_gguf_w_copy(w, &g, &g.kv[i]);
    }
    int rc = 0;
    for (int64_t i = 0; i < g.n_tensors && !rc; i++) {
        const ds_gguf_tensor *t = &g.tensors[i];
        int64_t shape[4];
        for (uint32_t d = 0; d < t->n_dims; d++) shape[d] = t->ne[t->n_dims - 1 - d];
        rc = ds_gguf_w_tensor(w, t->name, t->type, (int)t->n_dims, shape, &e) < 0;
    }
    if (!rc) rc = ds_gguf_writer_begin(w, out, &e);
    for (int64_t i = 0; i < g.n_tensors && !rc; i++) rc = ds_gguf_writer_write(w, g.tensors[i].data, g.tensors[i].nbytes, &e);
    if (!rc) rc = ds_gguf_writer_finish(w, &e);
    if (rc) ds_test_fail(__FILE__, __LINE__, "variant %s: %s", name, e.msg);
    ds_gguf_writer_free(w);
    ds_gguf_close(&g);
    return rc ? NULL : out;
}

TEST(gguf_v4_bad_metadata) {
    static const struct { const char *drop, *set; int64_t val; const char *want; } cases[] = {
        { "deepseek4.attention.compress_ratios", NULL, 0, "compress_ratios" },
        { "deepseek4.hyper_connection.count", NULL, 0, "hyper_connection.count" },
        { NULL, "deepseek4.attention.compress_ratios", 16, "attn_compressor_ape" },   /* HCA 16: its ape is for 8 */
        { NULL, "deepseek4.attention.head_count_kv", 4, "head_count_kv" },
        { NULL, "deepseek4.expert_gating_func", 3, "expert_gating_func" },
        { NULL, "deepseek4.hash_layer_count", 3, "tid2eid" },   /* layer 2 would need a hash table */
        { NULL, "deepseek4.expert_shared_count", 2, "expert_shared_count" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad-%zu.gguf", i);
        const char *p = variant(name, cases[i].drop, cases[i].set, cases[i].val);
        if (!p) continue;
        ds_model *m = NULL;
        ds_err e = { 0 };
        int rc = ds_model_open(&m, p, &e);
        CHECK_MSG(rc != 0 && strstr(e.msg, cases[i].want), "case %zu: rc %d, '%s' (want '%s')", i, rc, e.msg,
                  cases[i].want);
        ds_model_close(m);
    }
    /* the unchanged copy opens (the variants fail for their edit, not the copy) */
    const char *ok = variant("ok.gguf", NULL, NULL, 0);
    ds_model *m = ok ? open_path(ok) : NULL;
    CHECK(m != NULL);
    ds_model_close(m);
}

/* ------------------------------------------------------------- V3.2 */

TEST(gguf_v32_deepseek32) {
    /* llama.cpp's DeepseekV32Model (`deepseek32`, bf16, MTP layer kept) of
     * tiny-v32: the folder's logits and MTP logits, transformers' within
     * 1e-4; our writer: F32 reads back exactly, Q8_0 within a KL bound
     * (tiny-v32's indexer top-8 has 0.3 % margins: every weight class alone
     * moves the KL by ~0.02 on random tokens, all together 0.066 there and
     * 0.011 on these tokens: the bound) */
    ds_model *g = open_path("tests/fixtures/gguf/tiny-v32.llama-bf16.gguf"), *src = open_path("tests/fixtures/tiny-v32");
    int32_t tok[64];
    int64_t T;
    if (!g || !src || ref_tokens("tests/fixtures/tiny-v32/ref.json", tok, &T)) { ds_model_close(g); ds_model_close(src); return; }
    int64_t V = src->cfg.vocab_size, D = src->cfg.hidden_size;
    CHECK(!strcmp(g->cfg.model_type, "deepseek_v32"));
    CHECK_EQ_INT(g->cfg.index_topk, src->cfg.index_topk);
    CHECK_EQ_INT(g->cfg.index_head_dim, src->cfg.index_head_dim);
    CHECK_EQ_INT(g->cfg.attn_kind[0], DS_ATTN_DSA);
    CHECK_EQ_INT(g->n_mtp, src->n_mtp);
    float *x = logits_of(g, tok, T, false), *y = logits_of(src, tok, T, false);
    float *hf = read_f32("tests/fixtures/tiny-v32/ref_logits.f32", (size_t)(T * V));
    CHECK_MSG(max_abs_diff(x, y, T * V) <= same_bits_bound(0), "llama.cpp's V3.2 GGUF vs folder %.3g", max_abs_diff(x, y, T * V));
    if (hf) CHECK_MSG(max_abs_diff(x, hf, T * V) <= 1e-4, "vs transformers %.3g", max_abs_diff(x, hf, T * V));
    if (g->n_mtp) {   /* the MTP head from the file */
        float *ref = read_f32("tests/fixtures/tiny-v32/ref_mtp_logits.f32", (size_t)((T - 1) * V));
        float *mtp = calloc((size_t)(T * V), sizeof(float)), *hid = calloc((size_t)(T * D), sizeof(float));
        float *lg = calloc((size_t)(T * V), sizeof(float));
        ds_kvcache c;
        ds_err e = { 0 };
        CHECK(ds_kvcache_init(&c, g, T + 1, &e) == 0);
        ds_seq_chunk ch = { &c, tok, T, true };
        CHECK(ds_model_forward(g, NULL, &ch, 1, lg, hid, &e) == 0);
        CHECK_MSG(ds_model_forward_mtp(g, NULL, &c, hid, tok + 1, T - 1, mtp, &e) == 0, "%s", e.msg);
        if (ref) CHECK_MSG(max_abs_diff(mtp, ref, (T - 1) * V) <= 1e-4, "MTP vs transformers %.3g",
                           max_abs_diff(mtp, ref, (T - 1) * V));
        ds_kvcache_free(&c);
        free(ref); free(mtp); free(hid); free(lg);
    }
    /* our writer: deepseek32 again */
    ds_convert_opts o;
    ds_convert_opts_default(&o, DS_DTYPE_F32);
    ds_model *w = write_open(src, "v32-f32.gguf", &o);
    if (w) {
        float *z = logits_of(w, tok, T, false), *zi = logits_of(w, tok, T, true), *yi = logits_of(src, tok, T, true);
        CHECK_MSG(max_abs_diff(z, y, T * V) <= same_bits_bound(1e-5) && max_abs_diff(zi, yi, T * V) <= same_bits_bound(1e-5),
                  "our F32 V3.2 GGUF vs folder %.3g / %.3g", max_abs_diff(z, y, T * V), max_abs_diff(zi, yi, T * V));
        CHECK_EQ_INT(w->n_mtp, src->n_mtp);
        ds_gguf gg;
        ds_err e = { 0 };
        char arch[32] = "";
        if (ds_gguf_open(&gg, v4tmp("v32-f32.gguf"), &e) == 0) {
            ds_gguf_get_str(&gg, "general.architecture", true, arch, sizeof arch, &e);
            int64_t hk = 0;
            ds_gguf_get_int(&gg, "deepseek32.attention.indexer.top_k", true, 0, 1 << 20, &hk, &e);
            CHECK(!strcmp(arch, "deepseek32") && hk == src->cfg.index_topk);
            ds_gguf_close(&gg);
        }
        free(z); free(zi); free(yi);
        ds_model_close(w);
    }
    ds_convert_opts_default(&o, DS_DTYPE_Q8_0);
    w = write_open(src, "v32-q8_0.gguf", &o);
    if (w) {
        float *z = logits_of(w, tok, T, false);
        ds_logit_stats s;
        ds_logit_stats_compute(y, z, T, V, &s);
        printf("    tiny-v32 Q8_0: KL %.3g, top-1 %.2f\n", s.kl_mean, s.top1);
        CHECK_MSG(s.kl_mean > 0 && s.kl_mean <= 0.04, "V3.2 Q8_0 KL %.3g", s.kl_mean);
        free(z);
        ds_model_close(w);
    }
    free(x); free(y); free(hf);
    ds_model_close(g);
    ds_model_close(src);
}
