/*
 * test_gguf.c - GGUF reader/writer round trips, malformed files, and
 * converted models: HF fixture -> GGUF (F32 / F16 / Q8_0, split and legacy
 * MLA forms, MTP kept) -> logits against the source and against the
 * Hugging Face reference logits.
 *
 * Tolerances (the fixtures are tiny random models, logits O(1-5)):
 *   F32 GGUF vs the safetensors model: max |dlogit| <= 1e-5 (same weights;
 *     only summation order differs between the BF16 and F32 kernels), and
 *     vs HF's logits <= 1e-4 like tests/test_model.c.
 *   F16 GGUF: max |dlogit| <= 0.05 (F32/BF16 -> F16 rounding of weights).
 *   Q8_0 GGUF: mean KL <= 0.02 nats, top-1 agreement >= 85 %. These tiny
 *     models route through near-ties (sigmoid + group top-k), so a 0.3 %
 *     weight perturbation flips some expert choices; see README.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/mmap_file.h"
#include "core/rng.h"
#include "io/gguf.h"
#include "io/json.h"
#include "model/convert.h"
#include "model/model.h"
#include "runtime/compare.h"
#include "tensor/quant.h"

static const char *tmpdir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/ds_test_gguf_XXXXXX");
        if (!mkdtemp(dir)) { dir[0] = 0; return "/tmp"; }
    }
    return dir;
}

static const char *tmpfile_path(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir(), name);
    return buf[k];
}

/* ------------------------------------------------------- reader / writer */

TEST(gguf_write_read_roundtrip) {
    ds_err e = { 0 };
    const char *path = tmpfile_path("rt.gguf");
    ds_gguf_writer *w = ds_gguf_writer_new();
    ds_gguf_w_str(w, "general.architecture", "test");
    ds_gguf_w_u32(w, "a.u32", 4000000000u);
    ds_gguf_w_i32(w, "a.i32", -5);
    ds_gguf_w_u64(w, "a.u64", 1ull << 40);
    ds_gguf_w_f32(w, "a.f32", 0.25f);
    ds_gguf_w_bool(w, "a.bool", true);
    int32_t ia[3] = { 1, -2, 3 };
    ds_gguf_w_arr(w, "a.arr_i32", DS_GGUF_INT32, ia, 3);
    const char *sa[3] = { "x", "", "hello world" };
    ds_gguf_w_arr(w, "a.arr_str", DS_GGUF_STRING, sa, 3);
    float vec[5] = { 1, 2, 3, 4, 5 };
    uint8_t q[2 * 34 * 3];
    for (size_t i = 0; i < sizeof q; i++) q[i] = (uint8_t)(i * 7);
    uint16_t h[2 * 3 * 4];
    for (int i = 0; i < 24; i++) h[i] = ds_f32_to_f16((float)i);
    int64_t s1[1] = { 5 }, s2[2] = { 3, 64 }, s3[3] = { 2, 3, 4 };
    CHECK(ds_gguf_w_tensor(w, "vec", DS_GGML_F32, 1, s1, &e) == 0);
    CHECK(ds_gguf_w_tensor(w, "mat.q8", DS_GGML_Q8_0, 2, s2, &e) == 1);
    CHECK(ds_gguf_w_tensor(w, "cube", DS_GGML_F16, 3, s3, &e) == 2);
    int64_t bad[2] = { 3, 48 };
    CHECK(ds_gguf_w_tensor(w, "bad", DS_GGML_Q8_0, 2, bad, &e) < 0);   /* 48 not a multiple of 32 */
    e.code = 0;
    CHECK(ds_gguf_w_tensor(w, "vec", DS_GGML_F32, 1, s1, &e) < 0);     /* duplicate */
    e.code = 0;
    CHECK(ds_gguf_writer_begin(w, path, &e) == 0);
    CHECK(ds_gguf_writer_write(w, vec, sizeof vec, &e) == 0);
    CHECK(ds_gguf_writer_write(w, q, 100, &e) == 0);                     /* in pieces */
    CHECK(ds_gguf_writer_write(w, q + 100, sizeof q - 100, &e) == 0);
    CHECK(ds_gguf_writer_write(w, h, sizeof h, &e) == 0);
    CHECK(ds_gguf_writer_write(w, h, 1, &e) != 0);                       /* more than declared */
    e.code = 0;
    CHECK(ds_gguf_writer_finish(w, &e) == 0);
    ds_gguf_writer_free(w);

    ds_gguf g;
    CHECK_MSG(ds_gguf_open(&g, path, &e) == 0, "%s", e.msg);
    if (e.code) return;
    CHECK_EQ_INT(g.version, 3);
    CHECK_EQ_INT(g.n_kv, 8);
    CHECK_EQ_INT(g.n_tensors, 3);
    int64_t v;
    double d;
    bool b;
    char s[64];
    CHECK(ds_gguf_get_int(&g, "a.u32", true, 0, INT64_MAX, &v, &e) == 0 && v == 4000000000ll);
    CHECK(ds_gguf_get_int(&g, "a.i32", true, -10, 10, &v, &e) == 0 && v == -5);
    CHECK(ds_gguf_get_int(&g, "a.u64", true, 0, INT64_MAX, &v, &e) == 0 && v == (1ll << 40));
    CHECK(ds_gguf_get_num(&g, "a.f32", true, 0, 1, &d, &e) == 0 && d == 0.25);
    CHECK(ds_gguf_get_bool(&g, "a.bool", true, &b, &e) == 0 && b);
    CHECK(ds_gguf_get_str(&g, "general.architecture", true, s, sizeof s, &e) == 0 && !strcmp(s, "test"));
    CHECK(ds_gguf_get_int(&g, "a.i32", true, 0, 10, &v, &e) == DS_ERANGE);
    e.code = 0;
    CHECK(ds_gguf_get_int(&g, "a.f32", true, 0, 10, &v, &e) == DS_EFORMAT);
    e.code = 0;
    CHECK(ds_gguf_get_int(&g, "missing", true, 0, 10, &v, &e) == DS_ENOTFOUND);
    e.code = 0;
    v = 77;
    CHECK(ds_gguf_get_int(&g, "missing", false, 0, 10, &v, &e) == 0 && v == 77);
    const ds_gguf_kv *kv = ds_gguf_find_kv(&g, "a.arr_str");
    CHECK(kv && kv->n == 3);
    if (kv) {
        const char *p;
        uint64_t len;
        ds_gguf_arr_str(&g, kv, 2, &p, &len);
        CHECK(len == 11 && !memcmp(p, "hello world", 11));
        ds_gguf_arr_str(&g, kv, 1, &p, &len);
        CHECK(len == 0);
    }
    kv = ds_gguf_find_kv(&g, "a.arr_i32");
    CHECK(kv && ds_gguf_arr_num(kv, 1) == -2);
    const ds_gguf_tensor *t = ds_gguf_find_tensor(&g, "mat.q8");
    CHECK(t && t->ne[0] == 64 && t->ne[1] == 3 && t->nbytes == sizeof q && !memcmp(t->data, q, sizeof q));
    CHECK(t && (t->data - g.buf) % 32 == 0);
    ds_tensor view;
    t = ds_gguf_find_tensor(&g, "cube");
    CHECK(t && ds_gguf_view(&g, t, &view, &e) == 0);
    CHECK(view.ndim == 3 && view.shape[0] == 2 && view.shape[1] == 3 && view.shape[2] == 4 && view.dtype == DS_DTYPE_F16);
    CHECK(!memcmp(view.data, h, sizeof h));
    CHECK(ds_gguf_find_tensor(&g, "nope") == NULL);
    ds_gguf_close(&g);
    unlink(path);
}

/* A hand-rolled GGUF byte builder for malformed files. */
typedef struct { uint8_t b[4096]; size_t n; } bb;
static void p32(bb *x, uint32_t v) { memcpy(x->b + x->n, &v, 4); x->n += 4; }
static void p64(bb *x, uint64_t v) { memcpy(x->b + x->n, &v, 8); x->n += 8; }
static void pstr(bb *x, const char *s) { p64(x, strlen(s)); memcpy(x->b + x->n, s, strlen(s)); x->n += strlen(s); }
static void pad(bb *x) { while (x->n % 32) x->b[x->n++] = 0; }
static void hdr(bb *x, uint64_t nt, uint64_t nkv) { x->n = 0; p32(x, DS_GGUF_MAGIC); p32(x, 3); p64(x, nt); p64(x, nkv); }
static void tinfo(bb *x, const char *name, uint32_t nd, const int64_t *ne, uint32_t type, uint64_t off) {
    pstr(x, name);
    p32(x, nd);
    for (uint32_t i = 0; i < nd; i++) p64(x, (uint64_t)ne[i]);
    p32(x, type);
    p64(x, off);
}

static int parse_bb(bb *x, char *msg) {
    ds_gguf g;
    ds_err e = { 0 };
    int rc = ds_gguf_parse(&g, x->b, x->n, "mem", &e);
    if (!rc) ds_gguf_close(&g);
    if (msg) snprintf(msg, 512, "%s", e.msg);
    return rc;
}

static void expect_bad(bb *x, const char *what, const char *needle) {
    char msg[512];
    int rc = parse_bb(x, msg);
    CHECK_MSG(rc != 0, "%s: accepted", what);
    CHECK_MSG(!needle || strstr(msg, needle), "%s: message '%s' lacks '%s'", what, msg, needle);
}

TEST(gguf_bad_inputs) {
    bb x;
    int64_t ne1[1] = { 8 }, ne2[2] = { 32, 2 };
    /* a valid baseline: one key, two tensors */
    hdr(&x, 2, 1);
    pstr(&x, "k"); p32(&x, DS_GGUF_UINT32); p32(&x, 7);
    tinfo(&x, "a", 1, ne1, DS_GGML_F32, 0);
    tinfo(&x, "b", 2, ne2, DS_GGML_Q8_0, 32);
    pad(&x);
    memset(x.b + x.n, 0, 32 + 68);
    x.n += 32 + 68;
    CHECK_MSG(parse_bb(&x, NULL) == 0, "baseline rejected");
    bb base = x;
    /* every truncation of the needed bytes fails cleanly */
    for (size_t n = 0; n < base.n; n++) {
        x = base;
        x.n = n;
        CHECK_MSG(parse_bb(&x, NULL) != 0, "truncated to %zu bytes accepted", n);
    }
    x = base; x.b[0] = 'X'; expect_bad(&x, "magic", "magic");
    x = base; x.b[4] = 1; expect_bad(&x, "version 1", "version");
    x = base; memset(x.b + 8, 0xff, 8); expect_bad(&x, "tensor count", "tensors cannot fit");
    x = base; memset(x.b + 16, 0x7f, 8); expect_bad(&x, "key count", "keys cannot fit");

#define FILL(NB) do { memset(x.b + x.n, 0, NB); x.n += NB; } while (0)
    hdr(&x, 0, 1); p64(&x, 1ull << 62); FILL(64); expect_bad(&x, "key length", "length");
    hdr(&x, 0, 1); pstr(&x, ""); p32(&x, DS_GGUF_UINT8); x.b[x.n++] = 0; FILL(64); expect_bad(&x, "empty key", "empty");
    hdr(&x, 0, 2); pstr(&x, "k"); p32(&x, DS_GGUF_UINT8); x.b[x.n++] = 0; pstr(&x, "k"); p32(&x, DS_GGUF_UINT8);
    x.b[x.n++] = 0; expect_bad(&x, "duplicate key", "duplicate key");
    hdr(&x, 0, 1); pstr(&x, "k"); p32(&x, 13); p32(&x, 0); expect_bad(&x, "value type", "invalid value type");
    hdr(&x, 0, 1); pstr(&x, "k"); p32(&x, DS_GGUF_ARRAY); p32(&x, DS_GGUF_ARRAY); p64(&x, 1); expect_bad(&x, "nested", "nested");
    hdr(&x, 0, 1); pstr(&x, "k"); p32(&x, DS_GGUF_ARRAY); p32(&x, DS_GGUF_UINT64); p64(&x, 1ull << 29);
    expect_bad(&x, "array bytes", "truncated");
    hdr(&x, 0, 1); pstr(&x, "k"); p32(&x, DS_GGUF_ARRAY); p32(&x, DS_GGUF_STRING); p64(&x, 1ull << 40);
    expect_bad(&x, "array count", "array");
    hdr(&x, 0, 1); pstr(&x, "k"); p32(&x, DS_GGUF_ARRAY); p32(&x, DS_GGUF_STRING); p64(&x, 100); pstr(&x, "a");
    expect_bad(&x, "string array", NULL);
    hdr(&x, 0, 1); pstr(&x, "k"); p32(&x, DS_GGUF_BOOL); x.b[x.n++] = 2; expect_bad(&x, "bool", "bool");
    hdr(&x, 0, 1); pstr(&x, "k"); p32(&x, DS_GGUF_STRING); p64(&x, 1ull << 40); expect_bad(&x, "string length", "length");
    hdr(&x, 0, 1); pstr(&x, "general.alignment"); p32(&x, DS_GGUF_UINT32); p32(&x, 48); expect_bad(&x, "alignment", "power of two");
    hdr(&x, 0, 1); pstr(&x, "general.alignment"); p32(&x, DS_GGUF_UINT64); p64(&x, 32); expect_bad(&x, "alignment type", "u32");

    char longname[80];
    memset(longname, 'n', 64);
    longname[64] = 0;
#define ONE_TENSOR(NAME, ND, NE, TYPE, OFF, DATA) do { hdr(&x, 1, 0); tinfo(&x, NAME, ND, NE, TYPE, OFF); pad(&x); \
        memset(x.b + x.n, 0, DATA); x.n += DATA; } while (0)
    ONE_TENSOR(longname, 1, ne1, DS_GGML_F32, 0, 32); expect_bad(&x, "name length", "name length");
    ONE_TENSOR("a", 0, ne1, DS_GGML_F32, 0, 32); expect_bad(&x, "0 dims", "dimensions");
    int64_t ne5[5] = { 1, 1, 1, 1, 1 };
    ONE_TENSOR("a", 5, ne5, DS_GGML_F32, 0, 32); expect_bad(&x, "5 dims", "dimensions");
    int64_t ne0[1] = { 0 };
    ONE_TENSOR("a", 1, ne0, DS_GGML_F32, 0, 32); expect_bad(&x, "ne 0", "elements");
    int64_t nebig[3] = { 1ll << 31, 1ll << 31, 1ll << 31 };
    ONE_TENSOR("a", 3, nebig, DS_GGML_F32, 0, 32); expect_bad(&x, "numel overflow", "overflow");
    int64_t nebig2[2] = { 1ll << 32, 1ll << 31 };
    ONE_TENSOR("a", 2, nebig2, DS_GGML_F32, 0, 32); expect_bad(&x, "bytes overflow", NULL);
    ONE_TENSOR("a", 1, ne1, 4, 0, 32); expect_bad(&x, "retired type", "unknown ggml type");
    ONE_TENSOR("a", 1, ne1, 99, 0, 32); expect_bad(&x, "type 99", "unknown ggml type");
    int64_t ne48[1] = { 48 };
    ONE_TENSOR("a", 1, ne48, DS_GGML_Q8_0, 0, 64); expect_bad(&x, "block multiple", "multiple");
    /* every quant type: rows not a whole number of blocks; data shorter than the shape implies */
    for (uint32_t ty = 2; ty < DS_GGML_TYPE_COUNT; ty++) {
        const ds_ggml_type_info *ti = ds_ggml_type(ty);
        if (!ti || ti->blck == 1) continue;
        int64_t nq[2] = { ti->blck + 16, 2 }, nk[2] = { ti->blck, 4 };
        ONE_TENSOR("a", 2, nq, ty, 0, 4 * ti->size); expect_bad(&x, ti->name, "not a multiple");
        ONE_TENSOR("a", 2, nk, ty, 0, 4 * ti->size); CHECK_MSG(parse_bb(&x, NULL) == 0, "%s: exact size rejected", ti->name);
        ONE_TENSOR("a", 2, nk, ty, 0, 3 * ti->size); expect_bad(&x, ti->name, "data region");
    }
    ONE_TENSOR("a", 1, ne1, DS_GGML_F32, 16, 64); expect_bad(&x, "misaligned", "alignment");
    ONE_TENSOR("a", 1, ne1, DS_GGML_F32, 32, 32); expect_bad(&x, "past the end", "data region");
    ONE_TENSOR("a", 1, ne1, DS_GGML_F32, 1ull << 63, 32); expect_bad(&x, "huge offset", "data region");
    hdr(&x, 2, 0); tinfo(&x, "a", 2, ne2, DS_GGML_F32, 0); tinfo(&x, "b", 1, ne1, DS_GGML_F32, 256); pad(&x);
    FILL(288);
    CHECK(parse_bb(&x, NULL) == 0);
    hdr(&x, 2, 0); tinfo(&x, "a", 2, ne2, DS_GGML_F32, 0); tinfo(&x, "b", 1, ne1, DS_GGML_F32, 224); pad(&x);
    FILL(288); expect_bad(&x, "overlap", "overlap");
    hdr(&x, 2, 0); tinfo(&x, "a", 1, ne1, DS_GGML_F32, 0); tinfo(&x, "a", 1, ne1, DS_GGML_F32, 32); pad(&x);
    memset(x.b + x.n, 0, 64); x.n += 64; expect_bad(&x, "duplicate tensor", "duplicate tensor");
#undef ONE_TENSOR
#undef FILL

    /* random byte flips of the baseline: must never crash (ASan build checks memory) */
    ds_rng r;
    ds_rng_seed(&r, 99);
    for (int it = 0; it < 3000; it++) {
        x = base;
        int flips = 1 + (int)(ds_rng_u64(&r) % 4);
        for (int f = 0; f < flips; f++) x.b[ds_rng_u64(&r) % x.n] ^= (uint8_t)(1u << (ds_rng_u64(&r) % 8));
        parse_bb(&x, NULL);
    }
}

/* ------------------------------------------------------- converted models */

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

static int ref_array(const char *fixture_name, const char *key, int32_t *tok, int64_t *T);
static int ref_tokens(const char *fixture_name, int32_t *tok, int64_t *T) { return ref_array(fixture_name, "tokens", tok, T); }

static int ref_array(const char *fixture_name, const char *key, int32_t *tok, int64_t *T) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/%s/ref.json", fixture_name);
    json_t *j;
    ds_err e = { 0 };
    if (ds_json_load_file(path, 1 << 20, &j, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return -1; }
    json_t *t = json_object_get(j, key);
    *T = DS_MIN((int64_t)json_array_size(t), 64);
    for (int64_t i = 0; i < *T; i++) tok[i] = (int32_t)json_integer_value(json_array_get(t, (size_t)i));
    json_decref(j);
    return 0;
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
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        m = ds_max_err(m, d);
    }
    return m;
}

static ds_model *convert_open(ds_model *src, const char *name, ds_dtype t, bool legacy) {
    ds_convert_opts o;
    ds_convert_opts_default(&o, t);
    o.legacy_kv_b = legacy;
    ds_err e = { 0 };
    const char *path = tmpfile_path(name);
    if (ds_model_write_gguf(src, path, &o, &e)) { ds_test_fail(__FILE__, __LINE__, "write %s: %s", name, e.msg); return NULL; }
    ds_model *m = NULL;
    if (ds_model_open(&m, path, &e)) ds_test_fail(__FILE__, __LINE__, "open %s: %s", name, e.msg);
    return m;
}

/* Bounds per fixture, ~3x what was measured (printed by the test): F16
 * max |Δlogit| and Q8_0 mean KL (prefill, decode) vs the source model. */
typedef struct { double f16_max, q8_kl, q8_kl_inc; } parity_bounds;

/* A "same bits" bound: F16 rows and their F32 copies (norms, the split
 * k_b/v_b) go through kernels that add in the same order on AVX2 and up, so
 * the bound is 0 or a few ulps there; the plain-C kernels (DS_ISA=generic,
 * CPUs without AVX2) sum a dot product and an sgemm row in different orders,
 * measured 2.6e-6..1.4e-5 on these fixtures. */
static double same_bits_bound(double b) { return ds_isa_level() == DS_ISA_GENERIC ? fmax(b, 3e-5) : b; }

static void gguf_parity(const char *fx, parity_bounds bd) {
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", fx);
    ds_err e = { 0 };
    ds_model *src = NULL;
    if (ds_model_open(&src, dir, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    int32_t tok[64];
    int64_t T, V = src->cfg.vocab_size;
    if (ref_tokens(fx, tok, &T)) { ds_model_close(src); return; }
    snprintf(path, sizeof path, "%s/ref_logits.f32", dir);
    float *hf = read_f32(path, (size_t)(T * V));
    float *base = logits_of(src, tok, T, false), *base_inc = logits_of(src, tok, T, true);
    char name[128];

    /* F32, split MLA form (and legacy form) */
    for (int legacy = 0; legacy < 2; legacy++) {
        snprintf(name, sizeof name, "%s-f32%s.gguf", fx, legacy ? "-legacy" : "");
        ds_model *g = convert_open(src, name, DS_DTYPE_F32, legacy);
        if (!g) continue;
        CHECK_EQ_INT(g->cfg.n_layer, src->cfg.n_layer);
        CHECK_EQ_INT(g->n_mtp, src->n_mtp);
        CHECK(g->cfg.topk_method == src->cfg.topk_method && g->cfg.scoring_func == src->cfg.scoring_func);
        CHECK_NEAR(g->attn_scale, src->attn_scale, 1e-6);
        float *full = logits_of(g, tok, T, false), *inc = logits_of(g, tok, T, true);
        double d1 = max_abs_diff(full, base, T * V), d2 = max_abs_diff(inc, base_inc, T * V);
        CHECK_MSG(d1 <= same_bits_bound(1e-5) && d2 <= same_bits_bound(1e-5), "%s: F32 GGUF vs safetensors: full %.3g, incremental %.3g", name, d1, d2);
        if (hf) {
            double d3 = max_abs_diff(full, hf, T * V);
            CHECK_MSG(d3 <= 1e-4, "%s: F32 GGUF vs HF reference %.3g", name, d3);
        }
        if (src->n_mtp && !legacy) {
            snprintf(path, sizeof path, "%s/ref_mtp_logits.f32", dir);
            float *ref = read_f32(path, (size_t)((T - 1) * V)), *mtp = calloc((size_t)(T * V), sizeof(float));
            float *hid = calloc((size_t)(T * g->cfg.hidden_size), sizeof(float)), *lg = calloc((size_t)(T * V), sizeof(float));
            ds_kvcache c;
            CHECK(ds_kvcache_init(&c, g, T + 1, &e) == 0);
            ds_seq_chunk ch = { &c, tok, T, true };
            CHECK(ds_model_forward(g, NULL, &ch, 1, lg, hid, &e) == 0);
            CHECK(ds_model_forward_mtp(g, NULL, &c, hid, tok + 1, T - 1, mtp, &e) == 0);
            if (ref) CHECK_MSG(max_abs_diff(mtp, ref, (T - 1) * V) <= 1e-4, "%s: MTP logits vs reference %.3g", name,
                               max_abs_diff(mtp, ref, (T - 1) * V));
            ds_kvcache_free(&c);
            free(ref); free(mtp); free(hid); free(lg);
        }
        free(full); free(inc);
        ds_model_close(g);
    }
    /* F16 */
    snprintf(name, sizeof name, "%s-f16.gguf", fx);
    ds_model *g = convert_open(src, name, DS_DTYPE_F16, false);
    if (g) {
        float *full = logits_of(g, tok, T, false);
        double d = max_abs_diff(full, base, T * V);
        double bound = same_bits_bound(bd.f16_max);
        printf("    %s: F16 max |dlogit| %.3g (bound %.3g)\n", name, d, bound);
        CHECK_MSG(d <= bound, "%s: F16 GGUF max |dlogit| %.3g > %.3g", name, d, bound);
        free(full);
        ds_model_close(g);
    }
    /* Q8_0: prefill (dequant + sgemm) and decode (integer dots) paths */
    snprintf(name, sizeof name, "%s-q8_0.gguf", fx);
    g = convert_open(src, name, DS_DTYPE_Q8_0, false);
    if (g) {
        float *full = logits_of(g, tok, T, false), *inc = logits_of(g, tok, T, true);
        ds_logit_stats s1, s2;
        ds_logit_stats_compute(base, full, T, V, &s1);
        ds_logit_stats_compute(base_inc, inc, T, V, &s2);
        printf("    %s: Q8_0 KL prefill %.3g decode %.3g (bounds %.3g %.3g), top-1 %.2f %.2f\n", name, s1.kl_mean,
               s2.kl_mean, bd.q8_kl, bd.q8_kl_inc, s1.top1, s2.top1);
        CHECK_MSG(s1.kl_mean <= bd.q8_kl && s1.top1 >= 0.85, "%s: Q8_0 prefill KL %.3g (> %.3g?) top-1 %.2f", name,
                  s1.kl_mean, bd.q8_kl, s1.top1);
        CHECK_MSG(s2.kl_mean <= bd.q8_kl_inc && s2.top1 >= 0.85, "%s: Q8_0 decode KL %.3g (> %.3g?) top-1 %.2f", name,
                  s2.kl_mean, bd.q8_kl_inc, s2.top1);
        free(full); free(inc);
        /* GGUF -> GGUF: same type copies bytes exactly */
        ds_model *g2 = convert_open(g, "requant.gguf", DS_DTYPE_Q8_0, false);
        if (g2) {
            float *a = logits_of(g, tok, T, false), *b = logits_of(g2, tok, T, false);
            CHECK_MSG(max_abs_diff(a, b, T * V) == 0, "%s: Q8_0 -> Q8_0 requant changed logits", name);
            free(a); free(b);
            ds_model_close(g2);
        }
        ds_model_close(g);
    }
    free(hf); free(base); free(base_inc);
    ds_model_close(src);
}

/* ---------------------------------------------------------- split files */

/* convert --split-max-size: 3 parts (llama.cpp gguf-split layout) load as one
 * model with logits identical to the unsplit file, from any part; a missing
 * part, a wrong split.count and a wrong tensor total are errors naming them. */
TEST(gguf_split_three_parts) {
    ds_err e = { 0 };
    ds_model *src = NULL;
    if (ds_model_open(&src, "tests/fixtures/tiny-v3", &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    int32_t tok[64];
    int64_t T, V = src->cfg.vocab_size;
    if (ref_tokens("tiny-v3", tok, &T)) { ds_model_close(src); return; }
    ds_model *one = convert_open(src, "unsplit.gguf", DS_DTYPE_F32, false);
    if (!one) { ds_model_close(src); return; }
    float *base = logits_of(one, tok, T, false);
    struct stat st;
    CHECK(stat(tmpfile_path("unsplit.gguf"), &st) == 0);
    ds_convert_opts o;
    ds_convert_opts_default(&o, DS_DTYPE_F32);
    o.split_max_bytes = (uint64_t)st.st_size * 2 / 5;   /* -> 3 parts */
    char first[512], p2[512], p3[512];
    o.first_part = first;
    o.first_part_cap = sizeof first;
    CHECK_MSG(ds_model_write_gguf(src, tmpfile_path("sp.gguf"), &o, &e) == 0, "%s", e.msg);
    snprintf(p2, sizeof p2, "%s", tmpfile_path("sp-00002-of-00003.gguf"));
    snprintf(p3, sizeof p3, "%s", tmpfile_path("sp-00003-of-00003.gguf"));
    CHECK_MSG(strstr(first, "sp-00001-of-00003.gguf") != NULL, "first part %s (expected 3 parts)", first);
    /* part 2 is a valid GGUF of its own: split keys, no model metadata */
    ds_gguf g;
    if (ds_gguf_open(&g, p2, &e) == 0) {
        int64_t no = -1, cnt = -1, tc = -1;
        CHECK(ds_gguf_get_int(&g, "split.no", true, 0, 10, &no, &e) == 0 && no == 1);
        CHECK(ds_gguf_get_int(&g, "split.count", true, 0, 10, &cnt, &e) == 0 && cnt == 3);
        CHECK(ds_gguf_get_int(&g, "split.tensors.count", true, 0, 1 << 20, &tc, &e) == 0 && tc == one->gguf->n_tensors);
        CHECK(ds_gguf_find_kv(&g, "general.architecture") == NULL && g.n_tensors > 0);
        ds_gguf_close(&g);
    } else {
        CHECK_MSG(0, "%s", e.msg);
    }
    const char *paths[3] = { first, p2, p3 };
    for (int k = 0; k < 3; k++) {
        ds_model *m = NULL;
        if (ds_model_open(&m, paths[k], &e)) { CHECK_MSG(0, "open %s: %s", paths[k], e.msg); continue; }
        CHECK_EQ_INT(m->gguf->n_parts, 3);
        float *l = logits_of(m, tok, T, false);
        CHECK_MSG(max_abs_diff(l, base, T * V) == 0, "part %d: split logits differ from the unsplit file", k + 1);
        free(l);
        ds_model_close(m);
    }
    /* a missing part */
    char moved[600];
    snprintf(moved, sizeof moved, "%s.away", p3);
    CHECK(rename(p3, moved) == 0);
    ds_model *m = NULL;
    e = (ds_err){ 0 };
    CHECK(ds_model_open(&m, first, &e) == DS_ENOTFOUND);
    CHECK_MSG(strstr(e.msg, "part 3 of 3") && strstr(e.msg, "sp-00003-of-00003.gguf") && strstr(e.msg, "missing"), "%s", e.msg);
    CHECK(rename(moved, p3) == 0);
    /* a part that says it belongs to a split of 4 */
    snprintf(moved, sizeof moved, "%s.away", p2);
    CHECK(rename(p2, moved) == 0);
    ds_gguf_writer *w = ds_gguf_writer_new();
    ds_gguf_w_u16(w, "split.no", 1);
    ds_gguf_w_u16(w, "split.count", 4);
    ds_gguf_w_i32(w, "split.tensors.count", (int32_t)one->gguf->n_tensors);
    CHECK(ds_gguf_writer_begin(w, p2, &e) == 0 && ds_gguf_writer_finish(w, &e) == 0);
    ds_gguf_writer_free(w);
    e = (ds_err){ 0 };
    CHECK(ds_model_open(&m, first, &e) == DS_EFORMAT);
    CHECK_MSG(strstr(e.msg, "sp-00002-of-00003.gguf") && strstr(e.msg, "split.count = 4"), "%s", e.msg);
    /* right keys, but its tensors are missing: the total does not match */
    w = ds_gguf_writer_new();
    ds_gguf_w_u16(w, "split.no", 1);
    ds_gguf_w_u16(w, "split.count", 3);
    ds_gguf_w_i32(w, "split.tensors.count", (int32_t)one->gguf->n_tensors);
    CHECK(ds_gguf_writer_begin(w, p2, &e) == 0 && ds_gguf_writer_finish(w, &e) == 0);
    ds_gguf_writer_free(w);
    e = (ds_err){ 0 };
    CHECK(ds_model_open(&m, first, &e) == DS_EFORMAT);
    CHECK_MSG(strstr(e.msg, "split.tensors.count"), "%s", e.msg);
    CHECK(rename(moved, p2) == 0);
    /* a part not named PREFIX-0000K-of-0000N.gguf */
    char odd[600];
    snprintf(odd, sizeof odd, "%s", tmpfile_path("renamed.gguf"));
    CHECK(rename(p2, odd) == 0);
    e = (ds_err){ 0 };
    CHECK(ds_model_open(&m, odd, &e) == DS_EFORMAT);
    CHECK_MSG(strstr(e.msg, "not named"), "%s", e.msg);
    CHECK(rename(odd, p2) == 0);
    free(base);
    ds_model_close(one);
    ds_model_close(src);
}

/* Parts written by llama.cpp's own llama-gguf-split (tests/fixtures/gguf/split,
 * tools/gen_gguf_split_fixture.sh) load as the unsplit file, from any part. */
TEST(gguf_split_llamacpp) {
    ds_err e = { 0 };
    ds_model *one = NULL;
    if (ds_model_open(&one, "tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf", &e)) { CHECK_MSG(0, "%s", e.msg); return; }
    int32_t tok[8] = { 0, 5, 17, 42, 99, 3, 250, 7 };
    int64_t V = one->cfg.vocab_size;
    float *base = logits_of(one, tok, 8, false);
    for (int k = 1; k <= 4; k++) {
        char p[256];
        snprintf(p, sizeof p, "tests/fixtures/gguf/split/tiny-v3.llama-q8_0-%05d-of-00004.gguf", k);
        ds_model *m = NULL;
        if (ds_model_open(&m, p, &e)) { CHECK_MSG(0, "%s", e.msg); continue; }
        CHECK_EQ_INT(m->gguf->n_parts, 4);
        CHECK_EQ_INT(m->gguf->n_tensors, one->gguf->n_tensors);
        float *l = logits_of(m, tok, 8, false);
        CHECK_MSG(max_abs_diff(l, base, 8 * V) == 0, "%s: logits differ from the unsplit file", p);
        free(l);
        ds_model_close(m);
    }
    free(base);
    ds_model_close(one);
}

/* measured: F16 max |Δ| 1.07e-6, Q8_0 KL 3.0e-4 / 2.9e-4 */
TEST(gguf_model_v3) { gguf_parity("tiny-v3", (parity_bounds){ 3e-6, 9e-4, 9e-4 }); }
/* measured: 2.6e-3 (FP8 blocks rescaled to F16), 2.4e-4 / 2.4e-4 */
TEST(gguf_model_v3_fp8) { gguf_parity("tiny-v3-fp8", (parity_bounds){ 8e-3, 7e-4, 7e-4 }); }
/* measured: 0 (an F16 source stays F16: lossless), 3.2e-4 / 3.7e-4 */
TEST(gguf_model_v2_lite) { gguf_parity("tiny-v2-lite", (parity_bounds){ 0, 1e-3, 1.1e-3 }); }
/* measured: 0.0197 (an F32 source rounded to F16), 5.0e-3 / 4.1e-3 */
TEST(gguf_model_v2) { gguf_parity("tiny-v2", (parity_bounds){ 0.06, 0.015, 0.0125 }); }

TEST(gguf_model_bad_metadata) {
    /* a deepseek2 file missing a required key / with a wrong architecture */
    ds_err e = { 0 };
    const char *path = tmpfile_path("badarch.gguf");
    ds_gguf_writer *w = ds_gguf_writer_new();
    ds_gguf_w_str(w, "general.architecture", "llama");
    CHECK(ds_gguf_writer_begin(w, path, &e) == 0 && ds_gguf_writer_finish(w, &e) == 0);
    ds_gguf_writer_free(w);
    ds_model *m;
    CHECK(ds_model_open(&m, path, &e) == DS_EUNSUPPORTED);
    CHECK(strstr(e.msg, "deepseek2") != NULL);
    e.code = 0;
    w = ds_gguf_writer_new();
    ds_gguf_w_str(w, "general.architecture", "deepseek2");
    ds_gguf_w_u32(w, "deepseek2.block_count", 2);
    CHECK(ds_gguf_writer_begin(w, path, &e) == 0 && ds_gguf_writer_finish(w, &e) == 0);
    ds_gguf_writer_free(w);
    CHECK(ds_model_open(&m, path, &e) == DS_ENOTFOUND);
    CHECK_MSG(strstr(e.msg, "embedding_length") != NULL, "%s", e.msg);
    unlink(path);
}

/* ------------------------------------------- files written by llama.cpp */

/* tests/fixtures/gguf/ (tools/gen_gguf_fixtures.py, llama.cpp 82bb48500). */
static int fixture_tokens(int32_t *tok, int64_t *T) {
    json_t *j;
    ds_err e = { 0 };
    if (ds_json_load_file("tests/fixtures/gguf/ref.json", 1 << 20, &j, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return -1; }
    json_t *t = json_object_get(j, "tokens");
    *T = (int64_t)json_array_size(t);
    for (int64_t i = 0; i < *T && i < 64; i++) tok[i] = (int32_t)json_integer_value(json_array_get(t, (size_t)i));
    json_decref(j);
    return 0;
}

static ds_model *open_path(const char *path) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, path, &e)) ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg);
    return m;
}

TEST(gguf_llamacpp_f16_v2_lite) {
    /* convert_hf_to_gguf.py --outtype f16 of tiny-v2-lite: same logits as
     * the safetensors fixture (F16 -> F16 is lossless) and as HF */
    ds_model *g = open_path("tests/fixtures/gguf/tiny-v2-lite.llama-f16.gguf");
    ds_model *src = open_path("tests/fixtures/tiny-v2-lite");
    if (!g || !src) { ds_model_close(g); ds_model_close(src); return; }
    CHECK_EQ_INT(g->cfg.q_lora_rank, 0);
    CHECK(g->cfg.topk_method == DS_TOPK_GREEDY && g->cfg.scoring_func == DS_SCORE_SOFTMAX);
    int32_t tok[64];
    int64_t T, V = src->cfg.vocab_size;
    if (ref_tokens("tiny-v2-lite", tok, &T) == 0) {
        float *a = logits_of(g, tok, T, false), *b = logits_of(src, tok, T, false);
        float *hf = read_f32("tests/fixtures/tiny-v2-lite/ref_logits.f32", (size_t)(T * V));
        CHECK_MSG(max_abs_diff(a, b, T * V) <= same_bits_bound(1e-6), "llama.cpp F16 GGUF vs safetensors: %.3g", max_abs_diff(a, b, T * V));
        if (hf) CHECK_MSG(max_abs_diff(a, hf, T * V) <= 1e-4, "vs HF: %.3g", max_abs_diff(a, hf, T * V));
        free(a); free(b); free(hf);
    }
    ds_model_close(g);
    ds_model_close(src);
}

/* a's logits are no farther from a reference than b's: RMS difference and
 * mean KL at most b's; the largest single difference, an extreme of
 * thousands of chaotic values, within 1.25x b's */
static bool no_worse(const ds_logit_stats *a, const ds_logit_stats *b) {
    return a->rms <= b->rms && a->kl_mean <= b->kl_mean && a->max_abs <= 1.25 * b->max_abs;
}

TEST(gguf_llamacpp_q8_0_v3) {
    /* convert_hf_to_gguf.py --outtype q8_0 of tiny-v3: every tensor is
     * byte-identical to ours (same Q8_0 rounding); logits measured against
     * the exact forward (below) */
    ds_gguf theirs;
    ds_err e = { 0 };
    if (ds_gguf_open(&theirs, "tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf", &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    ds_model *src = open_path("tests/fixtures/tiny-v3");
    if (src) {
        ds_convert_opts o;
        ds_convert_opts_default(&o, DS_DTYPE_Q8_0);
        o.drop_mtp = true;
        const char *path = tmpfile_path("v3-ours-q8_0.gguf");
        CHECK(ds_model_write_gguf(src, path, &o, &e) == 0);
        ds_gguf ours;
        if (ds_gguf_open(&ours, path, &e) == 0) {
            CHECK_EQ_INT(ours.n_tensors, theirs.n_tensors);
            for (int64_t i = 0; i < theirs.n_tensors; i++) {
                const ds_gguf_tensor *a = &theirs.tensors[i], *b = ds_gguf_find_tensor(&ours, a->name);
                CHECK_MSG(b && b->type == a->type && b->nbytes == a->nbytes && !memcmp(a->data, b->data, a->nbytes),
                          "tensor '%s' differs from llama.cpp's", a->name);
            }
            ds_gguf_close(&ours);
        }
        ds_model_close(src);
    }
    ds_gguf_close(&theirs);
    /* Accuracy against the exact forward of this file (every tensor
     * dequantized to F32 by gguf-py, tools/gen_gguf_refs.py; llama.cpp's and
     * our F32 paths agree on it to 2.4e-6): ours must be at least as close
     * as llama.cpp's Q8_0 path (no_worse: RMS |Δlogit| and mean KL).
     *
     * Row 13 (token 11) is left out of that comparison and bounded on its
     * own: it sits on a near-tie of layer 2's group selection (exact group
     * scores 1.71482 vs 1.71421). The 8-bit activations of any single
     * attn_q_a matmul flip it (0.77 on that row) in llama.cpp exactly as in
     * ours (the two agree to 6e-4 on every row with only blk.0.attn_q_a left
     * Q8_0); llama.cpp's full Q8_0 run keeps the exact choice only because
     * its extra roundings elsewhere (fp16 activation scales, fp16
     * activations for the F16 attn_q_b/attn_k_b) happen to push it back.
     * Measured on rows 0-12 (RMS, KL, max): prefill 0.0182 1.6e-4 0.077,
     * decode 0.0199 2.0e-4 0.098, llama.cpp 0.0209 2.1e-4 0.085; row 13 max:
     * ours 0.80 / 0.83, llama.cpp's 0.076. */
    ds_model *g = open_path("tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf");
    int32_t tok[64];
    int64_t T;
    if (g && fixture_tokens(tok, &T) == 0) {
        int64_t V = g->cfg.vocab_size;
        CHECK_EQ_INT(g->n_mtp, 0);
        float *ll = read_f32("tests/fixtures/gguf/tiny-v3.llama-q8_0.llama_logits.f32", (size_t)(T * V));
        float *ex = read_f32("tests/fixtures/gguf/tiny-v3.llama-q8_0.exact_logits.f32", (size_t)(T * V));
        float *a = logits_of(g, tok, T, false), *b = logits_of(g, tok, T, true);
        if (ll && ex && T == 14) {
            ds_logit_stats so, si, sl;
            ds_logit_stats_compute(ex, a, 13, V, &so);
            ds_logit_stats_compute(ex, b, 13, V, &si);
            ds_logit_stats_compute(ex, ll, 13, V, &sl);
            double r13o = max_abs_diff(a + 13 * V, ex + 13 * V, V), r13i = max_abs_diff(b + 13 * V, ex + 13 * V, V);
            printf("    vs exact, rows 0-12 (RMS, KL, max |dlogit|): prefill %.3g %.3g %.3g, decode %.3g %.3g %.3g, "
                   "llama.cpp %.3g %.3g %.3g; row 13 max: %.3g / %.3g\n", so.rms, so.kl_mean, so.max_abs, si.rms, si.kl_mean,
                   si.max_abs, sl.rms, sl.kl_mean, sl.max_abs, r13o, r13i);
            CHECK_MSG(no_worse(&so, &sl), "prefill vs exact: RMS %.3g KL %.3g max %.3g, llama.cpp's %.3g %.3g %.3g", so.rms,
                      so.kl_mean, so.max_abs, sl.rms, sl.kl_mean, sl.max_abs);
            CHECK_MSG(no_worse(&si, &sl), "decode vs exact: RMS %.3g KL %.3g max %.3g, llama.cpp's %.3g %.3g %.3g", si.rms,
                      si.kl_mean, si.max_abs, sl.rms, sl.kl_mean, sl.max_abs);
            CHECK_MSG(r13o <= 0.9 && r13i <= 0.9, "row 13 (the routing near-tie) vs exact: %.3g / %.3g", r13o, r13i);
        } else CHECK_MSG(0, "missing reference logits (T = %lld)", (long long)T);
        free(ll); free(ex); free(a); free(b);
    }
    ds_model_close(g);
}

TEST(gguf_llamacpp_q4_k_m) {
    /* llama-quantize Q4_K_M (Q4_K, Q6_K, Q5_0 fallbacks) of a V3-style
     * model with 256-wide rows: logits close to llama.cpp's on the same file,
     * and as close to the unquantized HF model as llama.cpp's are */
    ds_model *g = open_path("tests/fixtures/gguf/kq.llama-q4_k_m.gguf");
    int32_t tok[64];
    int64_t T;
    if (g && fixture_tokens(tok, &T) == 0) {
        int64_t V = g->cfg.vocab_size;
        CHECK(g->layers[1].experts[0].gate.dtype == DS_DTYPE_Q4_K && g->layers[1].experts[0].down.dtype == DS_DTYPE_Q6_K);
        float *ll = read_f32("tests/fixtures/gguf/kq.llama-q4_k_m.llama_logits.f32", (size_t)(T * V));
        float *hf = read_f32("tests/fixtures/gguf/kq.hf_logits.f32", (size_t)(T * V));
        float *a = logits_of(g, tok, T, false), *b = logits_of(g, tok, T, true);
        if (ll && hf) {
            ds_logit_stats s1, s2, h1, h2;
            ds_logit_stats_compute(ll, a, T, V, &s1);
            ds_logit_stats_compute(ll, b, T, V, &s2);
            ds_logit_stats_compute(hf, a, T, V, &h1);
            ds_logit_stats_compute(hf, ll, T, V, &h2);
            CHECK_MSG(s1.kl_mean <= 2e-3 && s1.top1 >= 0.9, "vs llama.cpp (prefill): KL %.3g top-1 %.2f", s1.kl_mean, s1.top1);
            CHECK_MSG(s2.kl_mean <= 2e-3 && s2.top1 >= 0.9, "vs llama.cpp (decode): KL %.3g top-1 %.2f", s2.kl_mean, s2.top1);
            CHECK_MSG(h1.kl_mean <= 1.2 * h2.kl_mean + 1e-3, "vs HF: ours KL %.3g, llama.cpp's %.3g", h1.kl_mean, h2.kl_mean);
        }
        /* against the exact forward of this file (gguf-py dequantized, see
         * gguf_llamacpp_q8_0_v3): ours at least as close as llama.cpp's.
         * Measured (RMS, KL, max) printed by the test. */
        float *ex = read_f32("tests/fixtures/gguf/kq.llama-q4_k_m.exact_logits.f32", (size_t)(T * V));
        if (ll && ex) {
            ds_logit_stats so, si, sl;
            ds_logit_stats_compute(ex, a, T, V, &so);
            ds_logit_stats_compute(ex, b, T, V, &si);
            ds_logit_stats_compute(ex, ll, T, V, &sl);
            printf("    vs exact (RMS, KL, max |dlogit|): prefill %.3g %.3g %.3g, decode %.3g %.3g %.3g, llama.cpp %.3g %.3g %.3g\n",
                   so.rms, so.kl_mean, so.max_abs, si.rms, si.kl_mean, si.max_abs, sl.rms, sl.kl_mean, sl.max_abs);
            CHECK_MSG(no_worse(&so, &sl), "prefill vs exact: RMS %.3g KL %.3g max %.3g, llama.cpp's %.3g %.3g %.3g", so.rms,
                      so.kl_mean, so.max_abs, sl.rms, sl.kl_mean, sl.max_abs);
            CHECK_MSG(no_worse(&si, &sl), "decode vs exact: RMS %.3g KL %.3g max %.3g, llama.cpp's %.3g %.3g %.3g", si.rms,
                      si.kl_mean, si.max_abs, sl.rms, sl.kl_mean, sl.max_abs);
        } else CHECK_MSG(0, "missing reference logits");
        free(ll); free(hf); free(ex); free(a); free(b);
    }
    ds_model_close(g);
}

/* F32 GGUFs we write, run by llama.cpp (tools/gen_gguf_refs.py, llama.cpp
 * 0c1e570, F32 KV cache, flash attention off): the same logits as ours, MLA
 * and legacy attn_kv_b forms. Measured max |Δ| 1.7e-6..2.3e-6. Not tiny-v2:
 * llama.cpp scores V2's group_limited_greedy groups by their top-2 sum (V3's
 * rule; HF and ours: the max), which changes one of its 14 rows by 0.013. */
TEST(gguf_ours_f32_in_llamacpp) {
    static const char *fxs[] = { "tiny-v3", "tiny-v2-lite" };
    int32_t tok[64];
    int64_t T;
    if (fixture_tokens(tok, &T)) return;
    for (int f = 0; f < 2; f++) {
        char dir[256], path[512], name[128];
        snprintf(dir, sizeof dir, "tests/fixtures/%s", fxs[f]);
        ds_model *src = open_path(dir);
        if (!src) continue;
        int64_t V = src->cfg.vocab_size;
        for (int legacy = 0; legacy < 2; legacy++) {
            ds_convert_opts o;
            ds_convert_opts_default(&o, DS_DTYPE_F32);
            o.legacy_kv_b = legacy;
            o.drop_mtp = true;
            ds_err e = { 0 };
            snprintf(name, sizeof name, "%s-ours-f32%s.gguf", fxs[f], legacy ? "-legacy" : "");
            const char *gp = tmpfile_path(name);
            CHECK_MSG(ds_model_write_gguf(src, gp, &o, &e) == 0, "%s", e.msg);
            ds_model *g = open_path(gp);
            snprintf(path, sizeof path, "tests/fixtures/gguf/%s.ours-f32%s.llama_logits.f32", fxs[f], legacy ? "-legacy" : "");
            float *ll = read_f32(path, (size_t)(T * V));
            if (g && ll) {
                float *a = logits_of(g, tok, T, false), *b = logits_of(g, tok, T, true);
                double d1 = max_abs_diff(a, ll, T * V), d2 = max_abs_diff(b, ll, T * V);
                printf("    %s: vs llama.cpp max |dlogit| prefill %.3g decode %.3g\n", name, d1, d2);
                CHECK_MSG(d1 <= 1e-4 && d2 <= 1e-4, "%s: vs llama.cpp %.3g / %.3g", name, d1, d2);
                free(a); free(b);
            } else CHECK_MSG(0, "%s: missing model or %s", name, path);
            free(ll);
            ds_model_close(g);
            unlink(gp);
        }
        ds_model_close(src);
    }
}

TEST(gguf_q8_0_greedy_v2_lite) {
    /* greedy decoding from the Q8_0 GGUF follows the F32 model for the first
     * 16 tokens (30 observed; later tokens depart at near-ties, README) */
    ds_model *src = open_path("tests/fixtures/tiny-v2-lite");
    if (!src) return;
    ds_model *g = convert_open(src, "v2-lite-greedy-q8_0.gguf", DS_DTYPE_Q8_0, false);
    int32_t tok[64];
    int64_t T;
    if (g && ref_array("tiny-v2-lite", "prompt", tok, &T) == 0) {
        int32_t out[2][17];
        ds_model *ms[2] = { src, g };
        int64_t V = src->cfg.vocab_size;
        float *lg = malloc((size_t)V * sizeof(float));
        for (int k = 0; k < 2; k++) {
            ds_kvcache c;
            ds_err e = { 0 };
            CHECK(ds_kvcache_init(&c, ms[k], 64, &e) == 0);
            ds_seq_chunk ch = { &c, tok, T, false };
            CHECK(ds_model_forward(ms[k], NULL, &ch, 1, lg, NULL, &e) == 0);
            for (int i = 0; i < 16; i++) {
                int32_t best = 0;
                for (int64_t v = 1; v < V; v++) if (lg[v] > lg[best]) best = (int32_t)v;
                out[k][i] = best;
                ds_seq_chunk one = { &c, &out[k][i], 1, false };
                CHECK(ds_model_forward(ms[k], NULL, &one, 1, lg, NULL, &e) == 0);
            }
            ds_kvcache_free(&c);
        }
        CHECK_MSG(!memcmp(out[0], out[1], 16 * sizeof(int32_t)), "Q8_0 greedy departs from F32 within 16 tokens");
        free(lg);
    }
    ds_model_close(g);
    ds_model_close(src);
}
