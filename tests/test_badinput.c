/*
 * test_badinput.c - bad model input (issue 2, item 6): corrupted or hostile
 * safetensors files, shard indexes and config.json values, tensors that do
 * not fit the config, and out-of-range token ids.
 *
 * Every case checks the exact negative status code and that the message
 * names what is wrong and where (file, tensor or field). Broken model
 * folders are built from the tiny fixtures under a mkdtemp() folder in /tmp
 * and removed at the end of each test. Header-level corruptions are written
 * as raw bytes; tensor-level ones are re-serialized by xset_write below,
 * which keeps every other tensor byte-identical and the layout contiguous.
 */
#include "test.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mmap_file.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"

/* ------------------------------------------------------------ temp dirs */

static char g_tmp[256];

static const char *tmp_begin(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ds_badinput.XXXXXX");
    if (!mkdtemp(g_tmp)) {
        ds_test_fail(__FILE__, __LINE__, "mkdtemp failed");
        g_tmp[0] = 0;
    }
    return g_tmp;
}

static void rm_rf(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[1024];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) rm_rf(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void tmp_end(void) {
    if (g_tmp[0] && strncmp(g_tmp, "/tmp/ds_badinput.", 17) == 0) rm_rf(g_tmp);
    g_tmp[0] = 0;
}

/* Rotating static path buffers: P("%s/x", dir). */
static const char *P(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *P(const char *fmt, ...) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ & 7];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, 1024, fmt, ap);
    va_end(ap);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { ds_test_fail(__FILE__, __LINE__, "cannot write %s", path); return; }
    if (n && fwrite(data, 1, n, f) != n) ds_test_fail(__FILE__, __LINE__, "short write %s", path);
    fclose(f);
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

static char *read_all(const char *path, size_t *n) {
    char *buf = NULL;
    ds_err e = { 0 };
    if (ds_read_file(path, 64u << 20, &buf, n, &e)) ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
    return buf;
}

static void copy_file(const char *src, const char *dst) {
    size_t n;
    char *b = read_all(src, &n);
    if (b) write_bytes(dst, b, n);
    free(b);
}

/* ------------------------------------------------------ error checking */

static int check_err_(const char *file, int line, int rc, const ds_err *e, int want, const char *const *needles) {
    int ok = 1;
    if (rc != want) {
        ds_test_fail(file, line, "status %d (%s), expected %d (%s); message: %s", rc, ds_status_str(rc), want,
                     ds_status_str(want), e->msg);
        ok = 0;
    }
    for (int i = 0; needles[i]; i++)
        if (!strstr(e->msg, needles[i])) {
            ds_test_fail(file, line, "message \"%s\" does not mention \"%s\"", e->msg, needles[i]);
            ok = 0;
        }
    return ok;
}
/* EXPECT_ERR(rc, e, DS_EFORMAT, "needle", ...): rc is the code and e.msg
 * contains every needle. */
#define EXPECT_ERR(rc, e, code, ...) \
    check_err_(__FILE__, __LINE__, (rc), &(e), (code), (const char *const[]){ __VA_ARGS__, NULL })

static int open_model(const char *dir, ds_err *e) {
    ds_model *m = NULL;
    int rc = ds_model_open(&m, dir, e);
    if (rc == DS_OK) ds_model_close(m);
    return rc;
}

static int open_st(const char *path, ds_err *e) {
    ds_safetensors st;
    int rc = ds_safetensors_open_file(&st, path, e);
    if (rc == DS_OK) ds_safetensors_close(&st);
    return rc;
}

/* ------------------------------------------- raw safetensors writing */

/* File = u64 LE `hlen_field` + header bytes + data. */
static void write_st_raw(const char *path, uint64_t hlen_field, const char *hdr, size_t hdr_len, const void *data,
                         size_t data_len) {
    size_t n = 8 + hdr_len + data_len;
    uint8_t *b = calloc(1, n);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen_field >> (8 * i));
    memcpy(b + 8, hdr, hdr_len);
    if (data_len) memcpy(b + 8 + hdr_len, data, data_len);
    write_bytes(path, b, n);
    free(b);
}

/* A header with the correct length field and `data_len` zero bytes of data. */
static void write_st_hdr(const char *path, const char *hdr, size_t data_len) {
    void *z = calloc(1, data_len ? data_len : 1);
    write_st_raw(path, strlen(hdr), hdr, strlen(hdr), z, data_len);
    free(z);
}

/* --------------------------------------- tensor sets (re-serialization) */

typedef struct xt {
    char name[200];
    char dtype[16];
    int ndim;
    int64_t shape[DS_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} xt;

typedef struct xset {
    xt t[512];
    int n;
    ds_safetensors src;
    void *owned[64];
    int n_owned;
} xset;

static size_t dtype_bytes(const char *d) {
    static const struct { const char *n; size_t s; } k[] = {
        { "F64", 8 }, { "F32", 4 }, { "F16", 2 }, { "BF16", 2 }, { "F8_E4M3", 1 }, { "I64", 8 },
        { "I32", 4 }, { "I16", 2 }, { "I8", 1 },  { "U8", 1 },   { "BOOL", 1 },
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(k[i].n, d)) return k[i].s;
    return 1;
}

static int xset_load(xset *s, const char *fixture_name) {
    memset(s, 0, sizeof *s);
    ds_err e = { 0 };
    if (ds_safetensors_open_file(&s->src, P("tests/fixtures/%s/model.safetensors", fixture_name), &e)) {
        ds_test_fail(__FILE__, __LINE__, "%s", e.msg);
        return -1;
    }
    for (int64_t i = 0; i < s->src.n_tensors && s->n < 512; i++) {
        const ds_st_tensor *a = &s->src.tensors[i];
        xt *t = &s->t[s->n++];
        snprintf(t->name, sizeof t->name, "%s", a->name);
        snprintf(t->dtype, sizeof t->dtype, "%s", a->dtype_name);
        t->ndim = a->ndim;
        memcpy(t->shape, a->shape, sizeof t->shape);
        t->data = a->data;
        t->nbytes = a->end - a->begin;
    }
    return 0;
}

static void xset_free(xset *s) {
    for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
    ds_safetensors_close(&s->src);
    s->n = s->n_owned = 0;
}

static xt *xset_get(xset *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    ds_test_fail(__FILE__, __LINE__, "fixture has no tensor '%s'", name);
    return &s->t[0];
}

static void xset_del(xset *s, const char *name) {
    xt *t = xset_get(s, name);
    *t = s->t[--s->n];
}

/* Gives t a new dtype and shape, with zero-filled data of the right size. */
static void xt_retype(xset *s, xt *t, const char *dtype, int ndim, const int64_t *shape) {
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    size_t n = dtype_bytes(dtype);
    for (int i = 0; i < ndim; i++) { t->shape[i] = shape[i]; n *= (size_t)shape[i]; }
    void *d = calloc(1, n ? n : 1);
    if (s->n_owned < 64) s->owned[s->n_owned++] = d;
    t->data = d;
    t->nbytes = n;
}

static xt *xset_add(xset *s, const char *name, const char *dtype, int ndim, const int64_t *shape) {
    xt *t = &s->t[s->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    xt_retype(s, t, dtype, ndim, shape);
    return t;
}

/* Writes tensors [lo, hi) of s as a valid safetensors file. */
static void xset_write_range(const xset *s, int lo, int hi, const char *path) {
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t off = 0;
    for (int i = lo; i < hi; i++) {
        const xt *t = &s->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_object_set_new(h, t->name, json_pack("{s:s, s:o, s:[I,I]}", "dtype", t->dtype, "shape", shape,
                                                  "data_offsets", (json_int_t)off, (json_int_t)(off + t->nbytes)));
        off += t->nbytes;
    }
    char *js = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    size_t hl = strlen(js), padded = (hl + 7) & ~(size_t)7;
    uint8_t *b = malloc(8 + padded + off);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, js, hl);
    memset(b + 8 + hl, ' ', padded - hl);
    uint8_t *p = b + 8 + padded;
    for (int i = lo; i < hi; i++) {
        if (s->t[i].nbytes) memcpy(p, s->t[i].data, s->t[i].nbytes);
        p += s->t[i].nbytes;
    }
    write_bytes(path, b, 8 + padded + off);
    free(b);
    free(js);
}

/* A model folder: the fixture's config.json plus s as model.safetensors. */
static void make_model(const char *dir, const char *fixture_name, const xset *s) {
    copy_file(P("tests/fixtures/%s/config.json", fixture_name), P("%s/config.json", dir));
    xset_write_range(s, 0, s->n, P("%s/model.safetensors", dir));
}

/* ====================================================== safetensors file */

TEST(badinput_st_empty_file) {
    const char *d = tmp_begin();
    write_bytes(P("%s/model.safetensors", d), "", 0);
    ds_err e = { 0 };
    EXPECT_ERR(open_st(P("%s/model.safetensors", d), &e), e, DS_EFORMAT, "model.safetensors", "too short");
    /* 7 bytes: still no room for the length field */
    write_bytes(P("%s/model.safetensors", d), "\x08\0\0\0\0\0\0", 7);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(P("%s/model.safetensors", d), &e), e, DS_EFORMAT, "model.safetensors", "too short");
    /* the same through the model loader */
    copy_file("tests/fixtures/tiny-v3/config.json", P("%s/config.json", d));
    write_bytes(P("%s/model.safetensors", d), "", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors", "too short");
    tmp_end();
}

TEST(badinput_st_header_over_100mb) {
    const char *d = tmp_begin();
    const char *f = P("%s/big.safetensors", d);
    const char *hdr = "{}";
    write_st_raw(f, 100000001ull, hdr, 2, NULL, 0);
    ds_err e = { 0 };
    EXPECT_ERR(open_st(f, &e), e, DS_ERANGE, "big.safetensors", "header length 100000001", "limit");
    write_st_raw(f, UINT64_MAX, hdr, 2, NULL, 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_ERANGE, "big.safetensors", "header length 18446744073709551615");
    /* exactly at the limit is not rejected as too large (only as truncated) */
    write_st_raw(f, 100000000ull, hdr, 2, NULL, 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "big.safetensors", "truncated");
    tmp_end();
}

TEST(badinput_st_truncated_in_header) {
    const char *d = tmp_begin();
    size_t n;
    char *b = read_all("tests/fixtures/tiny-v3/model.safetensors", &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (uint8_t)b[i];
    copy_file("tests/fixtures/tiny-v3/config.json", P("%s/config.json", d));
    write_bytes(P("%s/model.safetensors", d), b, 8 + hl / 2);
    ds_err e = { 0 };
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors", "truncated");
    /* cut right after the header: every tensor is beyond the data */
    write_bytes(P("%s/model.safetensors", d), b, 8 + hl);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_ERANGE, "model.safetensors", "tensor '", "beyond data size 0");
    free(b);
    tmp_end();
}

TEST(badinput_st_truncated_in_data) {
    const char *d = tmp_begin();
    size_t n;
    char *b = read_all("tests/fixtures/tiny-v3/model.safetensors", &n);
    copy_file("tests/fixtures/tiny-v3/config.json", P("%s/config.json", d));
    /* find the tensor that ends last: the one the cut lands in */
    ds_safetensors st;
    ds_err e = { 0 };
    CHECK(ds_safetensors_open_file(&st, "tests/fixtures/tiny-v3/model.safetensors", &e) == DS_OK);
    const char *last = NULL;
    uint64_t last_end = 0;
    for (int64_t i = 0; i < st.n_tensors; i++)
        if (st.tensors[i].end > last_end) { last_end = st.tensors[i].end; last = st.tensors[i].name; }
    write_bytes(P("%s/model.safetensors", d), b, n - 100);
    EXPECT_ERR(open_model(d, &e), e, DS_ERANGE, "model.safetensors", P("tensor '%s'", last), "beyond data size",
               "truncated");
    /* one byte short */
    write_bytes(P("%s/model.safetensors", d), b, n - 1);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_ERANGE, "model.safetensors", P("tensor '%s'", last));
    ds_safetensors_close(&st);
    free(b);
    tmp_end();
}

TEST(badinput_st_offsets) {
    const char *d = tmp_begin();
    const char *f = P("%s/x.safetensors", d);
    ds_err e = { 0 };
    /* end beyond the data */
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12);
    EXPECT_ERR(open_st(f, &e), e, DS_ERANGE, "x.safetensors", "tensor 'w'", "end 16 beyond data size 12");
    /* begin > end */
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "tensor 'w'", "begin 8 > end 0");
    /* negative / non-integer offsets, wrong arity */
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "data_offsets");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.0,4]}}", 4);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "data_offsets");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "data_offsets");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "data_offsets");
    tmp_end();
}

TEST(badinput_st_overlap_hole_trailing) {
    const char *d = tmp_begin();
    const char *f = P("%s/x.safetensors", d);
    ds_err e = { 0 };
    /* partial overlap */
    write_st_hdr(f,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "'a' and 'b' overlap");
    /* the same bytes twice (weight mirroring) */
    write_st_hdr(f,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "overlap");
    /* an overlap hidden behind an empty tensor between the two */
    write_st_hdr(f,
                 "{\"big\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                 "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 16);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "'big' and 'empty' overlap");
    /* a hole between tensors */
    write_st_hdr(f,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "hole before 'b'");
    /* first tensor not at 0 */
    write_st_hdr(f, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "hole before 'a'");
    /* trailing bytes after the last tensor (polyglot file) */
    write_st_hdr(f, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "5 trailing bytes");
    tmp_end();
}

TEST(badinput_st_size_vs_dtype_shape) {
    const char *d = tmp_begin();
    const char *f = P("%s/x.safetensors", d);
    ds_err e = { 0 };
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "tensor 'w'", "8 bytes stored", "needs 12");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "needs 8");
    tmp_end();
}

TEST(badinput_st_shape_overflow) {
    const char *d = tmp_begin();
    const char *f = P("%s/x.safetensors", d);
    ds_err e = { 0 };
    /* 2 × (2^63-1) × 4 bytes wraps a 64-bit size: must not wrap to 8 */
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,9223372036854775807],\"data_offsets\":[0,8]}}", 8);
    EXPECT_ERR(open_st(f, &e), e, DS_ERANGE, "x.safetensors", "tensor 'w'", "overflow");
    /* 2^32 × 2^32 × 4 wraps to exactly 0 bytes */
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_ERANGE, "tensor 'w'", "overflow");
    /* 2^62 × 4 = 2^64 wraps to 0 as well */
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_ERANGE, "tensor 'w'", "overflow");
    /* a dimension beyond int64 does not even parse as an integer */
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,18446744073709551614],\"data_offsets\":[0,8]}}", 8);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors");
    /* negative, fractional, too many dimensions */
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "shape[0]");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "shape[0]");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "9 dimensions");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,16]}}", 16);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "shape");
    tmp_end();
}

TEST(badinput_st_valid_edge_cases_load) {
    /* hostile-looking but valid: whitespace padding, a scalar, an empty
     * tensor with a huge other dimension, metadata */
    const char *d = tmp_begin();
    const char *f = P("%s/x.safetensors", d);
    ds_err e = { 0 };
    write_st_hdr(f,
                 "  {\"__metadata__\":{\"format\":\"pt\"},"
                 "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                 "\"z\":{\"dtype\":\"BF16\",\"shape\":[0,9223372036854775807],\"data_offsets\":[4,4]},"
                 "\"v\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[4,20]}}     ", 20);
    ds_safetensors st;
    int rc = ds_safetensors_open_file(&st, f, &e);
    CHECK_MSG(rc == DS_OK, "%s", e.msg);
    if (rc == DS_OK) {
        CHECK_EQ_INT(st.n_tensors, 3);
        ds_st_tensor *s = ds_safetensors_find(&st, "s"), *z = ds_safetensors_find(&st, "z");
        CHECK(s && s->ndim == 0 && s->end - s->begin == 4);
        CHECK(z && z->ndim == 2 && z->end == z->begin);
        ds_safetensors_close(&st);
    }
    tmp_end();
}

TEST(badinput_st_dtype) {
    const char *d = tmp_begin();
    const char *f = P("%s/x.safetensors", d);
    ds_err e = { 0 };
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "tensor 'w'", "unknown dtype 'F7'");
    write_st_hdr(f, "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "dtype");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'w'", "unknown dtype");
    tmp_end();
}

TEST(badinput_st_header_json) {
    const char *d = tmp_begin();
    const char *f = P("%s/x.safetensors", d);
    ds_err e = { 0 };
    write_st_hdr(f, "[]", 0);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "not a JSON object");
    write_st_hdr(f, "\"x\"", 0);  /* jansson: "'[' or '{' expected" */
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "invalid JSON");
    write_st_hdr(f, "{\"w\":{\"dtype\":\"F32\",", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "invalid JSON");
    write_st_hdr(f, "{", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "invalid JSON");
    write_st_hdr(f, "", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "invalid JSON");
    write_st_hdr(f, "{} garbage", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "invalid JSON");
    write_st_hdr(f, "{\"\xff\xfe\":1}", 0);  /* not UTF-8 */
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "invalid JSON");
    /* duplicate tensor name within one header */
    write_st_hdr(f,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "duplicate");
    /* entry not an object; bad __metadata__ */
    write_st_hdr(f, "{\"a\":[1,2]}", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "tensor 'a'", "not an object");
    write_st_hdr(f, "{\"__metadata__\":[]}", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "__metadata__");
    write_st_hdr(f, "{\"__metadata__\":{\"format\":1}}", 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "__metadata__ value 'format'");
    /* NUL inside the header */
    write_st_raw(f, 4, "{\0}\0", 4, NULL, 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_st(f, &e), e, DS_EFORMAT, "x.safetensors", "invalid JSON");
    tmp_end();
}

TEST(badinput_st_not_a_file) {
    const char *d = tmp_begin();
    ds_err e = { 0 };
    EXPECT_ERR(open_st(P("%s/none.safetensors", d), &e), e, DS_ENOTFOUND, "none.safetensors");
    /* model.safetensors that is a directory */
    copy_file("tests/fixtures/tiny-v3/config.json", P("%s/config.json", d));
    mkdir(P("%s/model.safetensors", d), 0755);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EIO, "model.safetensors", "not a regular file");
    tmp_end();
}

/* ============================================================= folders */

TEST(badinput_dir_without_weights) {
    const char *d = tmp_begin();
    ds_err e = { 0 };
    /* no config.json at all */
    EXPECT_ERR(open_model(d, &e), e, DS_ENOTFOUND, "config.json");
    /* config but no safetensors */
    copy_file("tests/fixtures/tiny-v3/config.json", P("%s/config.json", d));
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_ENOTFOUND, d, "no model.safetensors");
    /* nonexistent folder */
    ds_err_clear(&e);
    EXPECT_ERR(open_model(P("%s/nope", d), &e), e, DS_ENOTFOUND, "nope");
    tmp_end();
}

TEST(badinput_empty_or_bad_config_file) {
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) return;
    make_model(d, "tiny-v3", &s);
    ds_err e = { 0 };
    write_text(P("%s/config.json", d), "");
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "config.json", "invalid JSON");
    write_text(P("%s/config.json", d), "{\"hidden_size\": 64,");
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "config.json", "invalid JSON");
    write_text(P("%s/config.json", d), "[1, 2]");
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "config.json", "not a JSON object");
    xset_free(&s);
    tmp_end();
}

/* ======================================================= tensor binding */

TEST(badinput_fixture_roundtrip_loads) {
    /* the re-serializer itself produces loadable models (control case) */
    static const char *fx[] = { "tiny-v3", "tiny-v3-fp8", "tiny-v2-lite", "tiny-v2", "tiny-v32", "tiny-v32-fp8" };
    for (int i = 0; i < 6; i++) {
        const char *d = tmp_begin();
        xset s;
        if (xset_load(&s, fx[i])) { tmp_end(); return; }
        make_model(d, fx[i], &s);
        ds_err e = { 0 };
        int rc = open_model(d, &e);
        CHECK_MSG(rc == DS_OK, "%s: %s", fx[i], e.msg);
        xset_free(&s);
        tmp_end();
    }
}

TEST(badinput_missing_tensor) {
    static const char *names[] = { "model.layers.1.self_attn.kv_b_proj.weight", "model.norm.weight",
                                   "model.layers.2.mlp.experts.15.down_proj.weight",
                                   "model.layers.1.mlp.gate.e_score_correction_bias", "lm_head.weight",
                                   "model.layers.3.eh_proj.weight" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *d = tmp_begin();
        xset s;
        if (xset_load(&s, "tiny-v3")) { tmp_end(); return; }
        xset_del(&s, names[i]);
        make_model(d, "tiny-v3", &s);
        ds_err e = { 0 };
        EXPECT_ERR(open_model(d, &e), e, DS_ENOTFOUND, "missing tensor", P("'%s'", names[i]), d);
        xset_free(&s);
        tmp_end();
    }
}

/* V4: the re-serialized fixture loads; a missing tensor of each kind of
 * layer is named, so are a compressor of the wrong layer type's shape, a
 * tid2eid naming a non-existent expert and a tensor the layer type lacks. */
TEST(badinput_v4_tensors) {
    static const char *names[] = { "model.layers.2.attn.compressor.ape", "model.layers.1.attn.indexer.wq_b.weight",
                                   "model.layers.0.ffn.gate.tid2eid", "model.hc_head.hc_fn",
                                   "model.layers.3.hc_ffn_scale", "model.layers.2.ffn.gate.bias",
                                   "model.layers.3.attn.attn_sink", "model.layers.1.ffn.experts.7.w2.weight", "head.weight" };
    for (size_t i = 0; i <= sizeof names / sizeof names[0]; i++) {
        const char *d = tmp_begin();
        xset s;
        if (xset_load(&s, "tiny-v4")) { tmp_end(); return; }
        if (i < sizeof names / sizeof names[0]) xset_del(&s, names[i]);
        make_model(d, "tiny-v4", &s);
        ds_err e = { 0 };
        int rc = open_model(d, &e);
        if (i == sizeof names / sizeof names[0]) CHECK_MSG(rc == DS_OK, "tiny-v4 re-serialized: %s", e.msg);
        else CHECK_MSG(rc == DS_ENOTFOUND && strstr(e.msg, names[i]), "tiny-v4 without %s: rc %d, '%s'", names[i], rc, e.msg);
        xset_free(&s);
        tmp_end();
    }
    for (int k = 0; k < 3; k++) {
        const char *d = tmp_begin();
        xset s;
        if (xset_load(&s, "tiny-v4")) { tmp_end(); return; }
        const char *what;
        int want;
        if (k == 0) {   /* layer 2 is HCA: one series of Dh = 32, not CSA's two */
            xt_retype(&s, xset_get(&s, "model.layers.2.attn.compressor.wkv.weight"), "F32", 2, (const int64_t[]){ 64, 64 });
            what = "model.layers.2.attn.compressor.wkv.weight", want = DS_EFORMAT;
        } else if (k == 1) {   /* expert 8 of 8 */
            xt *t = xset_get(&s, "model.layers.1.ffn.gate.tid2eid");
            xt_retype(&s, t, "I64", 2, (const int64_t[]){ 576, 2 });
            ((int64_t *)t->data)[77] = 8;
            what = "expert id", want = DS_ERANGE;
        } else {   /* a sliding layer has no compressor */
            xset_add(&s, "model.layers.0.attn.compressor.ape", "F32", 2, (const int64_t[]){ 4, 64 });
            what = "unexpected tensor 'model.layers.0.attn.compressor.ape'", want = DS_EFORMAT;
        }
        make_model(d, "tiny-v4", &s);
        ds_err e = { 0 };
        int rc = open_model(d, &e);
        CHECK_MSG(rc == want && strstr(e.msg, what), "case %d: rc %d, '%s' (want %d, '%s')", k, rc, e.msg, want, what);
        xset_free(&s);
        tmp_end();
    }
}

/* V3.2: a missing indexer tensor (or its FP8 scale) is named; a wrong shape too */
TEST(badinput_v32_indexer_tensors) {
    static const struct { const char *fx, *name; } miss[] = {
        { "tiny-v32", "model.layers.0.self_attn.indexer.wq_b.weight" },
        { "tiny-v32", "model.layers.2.self_attn.indexer.k_norm.bias" },
        { "tiny-v32", "model.layers.3.self_attn.indexer.weights_proj.weight" },   /* the MTP layer's */
        { "tiny-v32-fp8", "model.layers.1.self_attn.indexer.wk.weight_scale_inv" },
    };
    for (size_t i = 0; i < sizeof miss / sizeof miss[0]; i++) {
        const char *d = tmp_begin();
        xset s;
        if (xset_load(&s, miss[i].fx)) { tmp_end(); return; }
        xset_del(&s, miss[i].name);
        make_model(d, miss[i].fx, &s);
        ds_err e = { 0 };
        int rc = open_model(d, &e);
        CHECK_MSG(rc == DS_ENOTFOUND && strstr(e.msg, miss[i].name), "%s without %s: rc %d, '%s'", miss[i].fx,
                  miss[i].name, rc, e.msg);
        xset_free(&s);
        tmp_end();
    }
}

/* A process that owns experts [1, 3) still checks the others: a wrong file
 * is caught on every process. */
TEST(badinput_unowned_expert_checked) {
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) { tmp_end(); return; }
    ds_model_opts o = { 1, 3, 0, 0, false };
    ds_model *m = NULL;
    ds_err e = { 0 };
    xset_del(&s, "model.layers.2.mlp.experts.15.down_proj.weight");
    make_model(d, "tiny-v3", &s);
    EXPECT_ERR(ds_model_open_opts(&m, d, &o, &e), e, DS_ENOTFOUND, "missing tensor",
               "'model.layers.2.mlp.experts.15.down_proj.weight'");
    xset_free(&s);
    if (xset_load(&s, "tiny-v3")) { tmp_end(); return; }
    int64_t sh[2] = { 3, 5 };
    xt_retype(&s, xset_get(&s, "model.layers.1.mlp.experts.0.gate_proj.weight"), "BF16", 2, sh);
    make_model(d, "tiny-v3", &s);
    ds_err_clear(&e);
    EXPECT_ERR(ds_model_open_opts(&m, d, &o, &e), e, DS_EFORMAT, "'model.layers.1.mlp.experts.0.gate_proj.weight'",
               "has shape [3, 5]");
    CHECK(m == NULL);
    xset_free(&s);
    tmp_end();
}

TEST(badinput_unexpected_tensor) {
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) return;
    int64_t sh[2] = { 4, 4 };
    xset_add(&s, "model.layers.0.mlp.extra.weight", "BF16", 2, sh);
    make_model(d, "tiny-v3", &s);
    ds_err e = { 0 };
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors", "unexpected tensor",
               "'model.layers.0.mlp.extra.weight'");
    /* a layer beyond num_hidden_layers + MTP */
    xset_del(&s, "model.layers.0.mlp.extra.weight");
    xset_add(&s, "model.layers.9.input_layernorm.weight", "BF16", 1, sh);
    make_model(d, "tiny-v3", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "unexpected tensor", "'model.layers.9.input_layernorm.weight'");
    /* e_score_correction_bias on a V2 model (greedy routing) */
    xset_free(&s);
    if (xset_load(&s, "tiny-v2-lite")) { tmp_end(); return; }
    int64_t e8[1] = { 8 };
    xset_add(&s, "model.layers.1.mlp.gate.e_score_correction_bias", "F32", 1, e8);
    make_model(d, "tiny-v2-lite", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "unexpected tensor", "'model.layers.1.mlp.gate.e_score_correction_bias'");
    /* a stray block scale next to a BF16 weight */
    xset_free(&s);
    if (xset_load(&s, "tiny-v3")) { tmp_end(); return; }
    int64_t sc[2] = { 1, 1 };
    xset_add(&s, "model.layers.0.mlp.up_proj.weight_scale_inv", "F32", 2, sc);
    make_model(d, "tiny-v3", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "unexpected tensor", "'model.layers.0.mlp.up_proj.weight_scale_inv'");
    xset_free(&s);
    tmp_end();
}

TEST(badinput_wrong_shape) {
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) return;
    /* transposed: same byte count, so only the binder can tell */
    xt *t = xset_get(&s, "model.layers.0.mlp.gate_proj.weight");
    int64_t a = t->shape[0];
    t->shape[0] = t->shape[1];
    t->shape[1] = a;
    make_model(d, "tiny-v3", &s);
    ds_err e = { 0 };
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors", "'model.layers.0.mlp.gate_proj.weight'",
               "shape [64, 96], expected [96, 64]");
    xset_free(&s);
    /* a norm vector of the wrong length */
    if (xset_load(&s, "tiny-v3")) { tmp_end(); return; }
    int64_t v[1] = { 32 };
    xt_retype(&s, xset_get(&s, "model.norm.weight"), "BF16", 1, v);
    make_model(d, "tiny-v3", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors", "'model.norm.weight'", "vector of 64");
    xset_free(&s);
    /* a matrix stored as 3-D */
    if (xset_load(&s, "tiny-v3")) { tmp_end(); return; }
    int64_t s3[3] = { 320, 8, 8 };
    xt_retype(&s, xset_get(&s, "model.embed_tokens.weight"), "BF16", 3, s3);
    make_model(d, "tiny-v3", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "'model.embed_tokens.weight'", "shape [320, 8, 8]");
    xset_free(&s);
    tmp_end();
}

TEST(badinput_config_disagrees_with_tensors) {
    /* hidden_size / vocab_size in config.json that the tensors do not have */
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) return;
    make_model(d, "tiny-v3", &s);
    size_t n;
    char *cfg = read_all("tests/fixtures/tiny-v3/config.json", &n);
    json_t *j = json_loadb(cfg, n, 0, NULL);
    json_object_set_new(j, "vocab_size", json_integer(400));
    json_dump_file(j, P("%s/config.json", d), 0);
    ds_err e = { 0 };
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "'model.embed_tokens.weight'", "expected [400, 64]");
    json_object_set_new(j, "vocab_size", json_integer(320));
    json_object_set_new(j, "kv_lora_rank", json_integer(16));
    json_dump_file(j, P("%s/config.json", d), 0);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors", "self_attn.kv_a_proj_with_mqa.weight");
    json_decref(j);
    free(cfg);
    xset_free(&s);
    tmp_end();
}

TEST(badinput_wrong_dtype) {
    static const struct { const char *fx, *name, *dtype; } k[] = {
        { "tiny-v3", "model.layers.0.mlp.gate_proj.weight", "I32" },
        { "tiny-v3", "model.layers.0.mlp.gate_proj.weight", "F64" },
        { "tiny-v3", "lm_head.weight", "I64" },
        { "tiny-v3", "model.layers.1.self_attn.o_proj.weight", "U8" },
        { "tiny-v3", "model.norm.weight", "I32" },
        { "tiny-v3", "model.layers.1.mlp.gate.e_score_correction_bias", "F8_E4M3" },
        { "tiny-v2", "model.layers.2.mlp.experts.3.up_proj.weight", "BOOL" },
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        const char *d = tmp_begin();
        xset s;
        if (xset_load(&s, k[i].fx)) { tmp_end(); return; }
        xt *t = xset_get(&s, k[i].name);
        int64_t shape[DS_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        xt_retype(&s, t, k[i].dtype, t->ndim, shape);
        make_model(d, k[i].fx, &s);
        ds_err e = { 0 };
        EXPECT_ERR(open_model(d, &e), e, DS_EUNSUPPORTED, "model.safetensors", P("'%s'", k[i].name),
                   P("dtype %s", k[i].dtype));
        xset_free(&s);
        tmp_end();
    }
}

TEST(badinput_fp8_scales) {
    const char *w = "model.layers.0.mlp.down_proj.weight", *sn = "model.layers.0.mlp.down_proj.weight_scale_inv";
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3-fp8")) return;
    /* FP8 weight without its scale */
    xset_del(&s, sn);
    make_model(d, "tiny-v3-fp8", &s);
    ds_err e = { 0 };
    EXPECT_ERR(open_model(d, &e), e, DS_ENOTFOUND, "model.safetensors", P("'%s'", w), P("'%s'", sn));
    xset_free(&s);
    /* scale of the wrong shape: [2, 2] expected for 192 x 200 in 128-blocks */
    if (xset_load(&s, "tiny-v3-fp8")) { tmp_end(); return; }
    int64_t bad[2] = { 2, 3 };
    xt_retype(&s, xset_get(&s, sn), "F32", 2, bad);
    make_model(d, "tiny-v3-fp8", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors", P("'%s'", sn), "expected [2, 2]");
    /* scale as a vector */
    int64_t flat[1] = { 4 };
    xt_retype(&s, xset_get(&s, sn), "F32", 1, flat);
    make_model(d, "tiny-v3-fp8", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, P("'%s'", sn), "wrong shape");
    /* scale stored as BF16 instead of F32 */
    int64_t ok[2] = { 2, 2 };
    xt_retype(&s, xset_get(&s, sn), "BF16", 2, ok);
    make_model(d, "tiny-v3-fp8", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, P("'%s'", sn), "dtype BF16, expected F32");
    xset_free(&s);
    /* an FP8 weight in a BF16 checkpoint: accepted only with a scale */
    if (xset_load(&s, "tiny-v3")) { tmp_end(); return; }
    int64_t g[2] = { 96, 64 };
    xt_retype(&s, xset_get(&s, "model.layers.0.mlp.gate_proj.weight"), "F8_E4M3", 2, g);
    make_model(d, "tiny-v3", &s);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_ENOTFOUND, "'model.layers.0.mlp.gate_proj.weight_scale_inv'");
    xset_free(&s);
    tmp_end();
}

/* ========================================================= shard index */

/* Splits tiny-v3 into two shards (first half / second half of the sorted
 * names) and returns the index object (caller decrefs). */
static json_t *make_sharded(const char *d, xset *s) {
    copy_file("tests/fixtures/tiny-v3/config.json", P("%s/config.json", d));
    int half = s->n / 2;
    const char *s1 = "model-00001-of-00002.safetensors", *s2 = "model-00002-of-00002.safetensors";
    xset_write_range(s, 0, half, P("%s/%s", d, s1));
    xset_write_range(s, half, s->n, P("%s/%s", d, s2));
    json_t *wm = json_object();
    for (int i = 0; i < s->n; i++) json_object_set_new(wm, s->t[i].name, json_string(i < half ? s1 : s2));
    return json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)0, "weight_map", wm);
}

static void write_index(const char *d, json_t *idx) {
    json_dump_file(idx, P("%s/model.safetensors.index.json", d), JSON_INDENT(1));
}

TEST(badinput_shards_valid_control) {
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) return;
    json_t *idx = make_sharded(d, &s);
    write_index(d, idx);
    ds_err e = { 0 };
    ds_model *m = NULL;
    int rc = ds_model_open(&m, d, &e);
    CHECK_MSG(rc == DS_OK, "%s", e.msg);
    if (m) {
        CHECK_EQ_INT(m->st.n_files, 2);
        ds_model_close(m);
    }
    json_decref(idx);
    xset_free(&s);
    tmp_end();
}

TEST(badinput_shard_names_outside_folder) {
    static const char *bad[] = { "../evil.safetensors", "/etc/passwd", "sub/x.safetensors", "..", ".",
                                 "", "a\\b.safetensors", ".hidden.safetensors" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *d = tmp_begin();
        xset s;
        if (xset_load(&s, "tiny-v3")) { tmp_end(); return; }
        json_t *idx = make_sharded(d, &s);
        json_object_set_new(json_object_get(idx, "weight_map"), "model.norm.weight", json_string(bad[i]));
        write_index(d, idx);
        ds_err e = { 0 };
        EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors.index.json", "'model.norm.weight'",
                   P("'%s'", bad[i]), "not a file inside the model folder");
        json_decref(idx);
        xset_free(&s);
        tmp_end();
    }
}

TEST(badinput_shard_duplicate_tensor) {
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) return;
    json_t *idx = make_sharded(d, &s);
    write_index(d, idx);
    /* rewrite shard 2 with the first tensor of shard 1 added */
    int half = s.n / 2;
    s.t[s.n] = s.t[0];
    xset_write_range(&s, half, s.n + 1, P("%s/model-00002-of-00002.safetensors", d));
    ds_err e = { 0 };
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, P("tensor '%s' appears twice", s.t[0].name),
               "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors");
    json_decref(idx);
    xset_free(&s);
    tmp_end();
}

TEST(badinput_shard_index_inconsistent) {
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) return;
    ds_err e = { 0 };
    /* index lists a tensor its shard does not hold */
    json_t *idx = make_sharded(d, &s);
    json_object_set_new(json_object_get(idx, "weight_map"), "model.layers.0.bogus.weight",
                        json_string("model-00001-of-00002.safetensors"));
    write_index(d, idx);
    EXPECT_ERR(open_model(d, &e), e, DS_ENOTFOUND, "model.safetensors.index.json", "'model.layers.0.bogus.weight'",
               "model-00001-of-00002.safetensors");
    json_decref(idx);
    /* index puts a tensor in the wrong shard */
    idx = make_sharded(d, &s);
    json_object_set_new(json_object_get(idx, "weight_map"), s.t[0].name, json_string("model-00002-of-00002.safetensors"));
    write_index(d, idx);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, P("'%s'", s.t[0].name), "listed in model-00002-of-00002.safetensors");
    json_decref(idx);
    /* a shard that does not exist */
    idx = make_sharded(d, &s);
    json_object_set_new(json_object_get(idx, "weight_map"), "model.norm.weight", json_string("model-00003-of-00002.safetensors"));
    write_index(d, idx);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_ENOTFOUND, "model-00003-of-00002.safetensors");
    json_decref(idx);
    /* a shard that is truncated */
    idx = make_sharded(d, &s);
    write_index(d, idx);
    size_t n;
    char *b = read_all(P("%s/model-00002-of-00002.safetensors", d), &n);
    write_bytes(P("%s/model-00002-of-00002.safetensors", d), b, n - 3);
    free(b);
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_ERANGE, "model-00002-of-00002.safetensors", "beyond data size");
    json_decref(idx);
    xset_free(&s);
    tmp_end();
}

TEST(badinput_shard_index_malformed) {
    const char *d = tmp_begin();
    copy_file("tests/fixtures/tiny-v3/config.json", P("%s/config.json", d));
    const char *ip = P("%s/model.safetensors.index.json", d);
    static const char *texts[] = { "{\"weight_map\": []}", "{\"weight_map\": \"x\"}", "{\"metadata\": {}}", "[]" };
    for (int i = 0; i < 4; i++) {
        write_text(ip, texts[i]);
        ds_err e = { 0 };
        EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors.index.json", "weight_map");
    }
    ds_err e = { 0 };
    write_text(ip, "{\"weight_map\": {\"model.norm.weight\": 3}}");
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors.index.json", "'model.norm.weight'", "not a string");
    write_text(ip, "{\"weight_map\": {");
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_EFORMAT, "model.safetensors.index.json", "invalid JSON");
    write_text(ip, "{\"weight_map\": {}}");
    ds_err_clear(&e);
    EXPECT_ERR(open_model(d, &e), e, DS_ENOTFOUND, "missing tensor", "'model.embed_tokens.weight'");
    tmp_end();
}

/* ========================================================= config.json */

/* Parses the tiny-v3 (or other) config after `edit` changed it. */
static int parse_edited(const char *fx, void (*edit)(json_t *, const void *), const void *arg, ds_err *e) {
    size_t n;
    char *txt = read_all(P("tests/fixtures/%s/config.json", fx), &n);
    json_t *j = json_loadb(txt, n, 0, NULL);
    free(txt);
    if (!j) return -100;
    edit(j, arg);
    char *out = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    ds_config c;
    int rc = ds_config_parse(&c, out, strlen(out), "config.json", e);
    free(out);
    return rc;
}

typedef struct { const char *key; const char *json; } kv_edit;

/* Sets key (a "a.b" path goes one object down) to a JSON value, or deletes
 * it when json is NULL. */
static void edit_kv(json_t *j, const void *arg) {
    const kv_edit *k = arg;
    char key[128];
    snprintf(key, sizeof key, "%s", k->key);
    char *dot = strchr(key, '.');
    json_t *obj = j;
    const char *leaf = key;
    if (dot) {
        *dot = 0;
        obj = json_object_get(j, key);
        leaf = dot + 1;
    }
    if (!k->json) { json_object_del(obj, leaf); return; }
    json_t *v = json_loads(k->json, JSON_DECODE_ANY, NULL);
    if (!v) { ds_test_fail(__FILE__, __LINE__, "bad edit JSON %s", k->json); return; }
    json_object_set_new(obj, leaf, v);
}

/* One config edit: expected code and the text the message must contain. */
typedef struct { const char *fx, *key, *json; int code; const char *needle; } cfg_case;

static void run_cfg_cases(const cfg_case *cs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ds_err e = { 0 };
        kv_edit k = { cs[i].key, cs[i].json };
        int rc = parse_edited(cs[i].fx ? cs[i].fx : "tiny-v3", edit_kv, &k, &e);
        if (rc != cs[i].code || !strstr(e.msg, cs[i].needle) || !strstr(e.msg, "config.json"))
            ds_test_fail(__FILE__, __LINE__, "%s = %s: status %d (%s), expected %d; message \"%s\" should mention \"%s\"",
                         cs[i].key, cs[i].json ? cs[i].json : "(deleted)", rc, ds_status_str(rc), cs[i].code, e.msg,
                         cs[i].needle);
    }
}

TEST(badinput_config_fixtures_parse) {
    static const char *fx[] = { "tiny-v3", "tiny-v3-fp8", "tiny-v2-lite", "tiny-v2", "tiny-v32", "tiny-v32-fp8", "tiny-v4" };
    for (int i = 0; i < 7; i++) {
        ds_config c;
        ds_err e = { 0 };
        int rc = ds_config_load(&c, P("tests/fixtures/%s", fx[i]), &e);
        CHECK_MSG(rc == DS_OK, "%s: %s", fx[i], e.msg);
    }
}

/* Several edits of tiny-v3's config at once, then parse. */
typedef struct { int n; kv_edit k[4]; } kv_edits;
static void edit_many(json_t *j, const void *arg) {
    const kv_edits *m = arg;
    for (int i = 0; i < m->n; i++) edit_kv(j, &m->k[i]);
}

TEST(badinput_config_expert_limits) {
    /* the largest accepted routing runs without caps: 65,536 experts in
     * 32,768 groups, all kept (inference and training support it) */
    ds_err e = { 0 };
    kv_edits ok = { 4, { { "n_routed_experts", "65536" }, { "n_group", "32768" }, { "topk_group", "32768" },
                         { "num_experts_per_tok", "8" } } };
    CHECK_MSG(parse_edited("tiny-v3", edit_many, &ok, &e) == DS_OK, "%s", e.msg);
    kv_edits grp = { 3, { { "n_routed_experts", "65536" }, { "n_group", "65536" }, { "topk_group", "65536" } } };
    e = (ds_err){ 0 };  /* noaux_tc takes each group's top 2 */
    CHECK(parse_edited("tiny-v3", edit_many, &grp, &e) == DS_EINVAL && strstr(e.msg, "at least 2 experts per group"));
    static const cfg_case cs[] = {
        { NULL, "n_routed_experts", "65537", DS_ERANGE, "'n_routed_experts'" },
        { NULL, "n_group", "65537", DS_ERANGE, "'n_group'" },
        { NULL, "topk_group", "65537", DS_ERANGE, "'topk_group'" },
        { NULL, "num_experts_per_tok", "65537", DS_ERANGE, "'num_experts_per_tok'" },
    };
    run_cfg_cases(cs, sizeof cs / sizeof cs[0]);
}

TEST(badinput_config_layer_kinds) {
    /* V2/V3 fields -> per-layer kinds (MTP layer included); the lookup agrees with the formula */
    ds_config c;
    ds_err e = { 0 };
    CHECK(ds_config_load(&c, P("tests/fixtures/tiny-v3"), &e) == DS_OK);
    CHECK(c.n_streams == 1 && c.n_layer + c.n_mtp == 4);
    for (int64_t l = 0; l < c.n_layer + c.n_mtp; l++) {
        CHECK(c.attn_kind[l] == DS_ATTN_MLA);
        CHECK(ds_config_layer_is_moe(&c, l) == (l >= c.first_k_dense_replace && l % c.moe_layer_freq == 0));
    }
    CHECK(c.ffn_kind[0] == DS_FFN_DENSE && c.ffn_kind[3] == DS_FFN_MOE && c.ffn_kind[4] == DS_FFN_UNSET);
    /* declared but not implemented kinds, and kinds never filled in: clear errors */
    ds_config h = c;
    h.ffn_kind[1] = DS_FFN_HASH_MOE;
    e = (ds_err){ 0 };
    CHECK(ds_config_validate(&h, "cfg", &e) == DS_EUNSUPPORTED && strstr(e.msg, "layer 1: hash-routed MoE"));
    h = c;
    h.ffn_kind[3] = DS_FFN_UNSET;
    e = (ds_err){ 0 };
    CHECK(ds_config_validate(&h, "cfg", &e) == DS_EINVAL && strstr(e.msg, "layer 3: FFN kind not set"));
    h = c;
    h.attn_kind[2] = 7;
    e = (ds_err){ 0 };
    CHECK(ds_config_validate(&h, "cfg", &e) == DS_EUNSUPPORTED && strstr(e.msg, "layer 2: attention kind 7"));
    h = c;
    h.n_routed_experts = 0;
    e = (ds_err){ 0 };
    CHECK(ds_config_validate(&h, "cfg", &e) == DS_EINVAL && strstr(e.msg, "layer 1 is MoE"));
    ds_config_derive_layers(&h);  /* re-derived after the edit: all dense */
    e = (ds_err){ 0 };
    CHECK(ds_config_validate(&h, "cfg", &e) == DS_OK && !ds_config_layer_is_moe(&h, 1));
    static const cfg_case cs[] = {
        { NULL, "hc_mult", "4", DS_EUNSUPPORTED, "4 residual streams" },
        { NULL, "hc_mult", "0", DS_ERANGE, "'hc_mult'" },
    };
    run_cfg_cases(cs, sizeof cs / sizeof cs[0]);
}

TEST(badinput_forward_unimplemented_layer_kind) {
    /* a loaded V3 model whose layer 1 is declared hash-routed (no tid2eid): the forward refuses, naming the layer */
    ds_model *m = NULL;
    ds_err e = { 0 };
    if (ds_model_open(&m, P("tests/fixtures/tiny-v3"), &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    ds_kvcache kc;
    CHECK(ds_kvcache_init(&kc, m, 16, &e) == DS_OK);
    int32_t tok[3] = { 1, 2, 3 };
    ds_seq_chunk ch = { &kc, tok, 3, false };
    float *lg = calloc((size_t)m->cfg.vocab_size, sizeof(float));
    m->cfg.ffn_kind[1] = DS_FFN_HASH_MOE;
    CHECK(ds_model_forward(m, NULL, &ch, 1, lg, NULL, &e) == DS_EUNSUPPORTED && strstr(e.msg, "layer 1"));
    m->cfg.ffn_kind[1] = DS_FFN_MOE;
    ds_kvcache_clear(&kc);
    CHECK(ds_model_forward(m, NULL, &ch, 1, lg, NULL, &e) == DS_OK);
    free(lg);
    ds_kvcache_free(&kc);
    ds_model_close(m);
}

TEST(badinput_config_invalid_json) {
    static const char *texts[] = { "", "{", "{\"hidden_size\": 64,}", "{\"a\":1}{}", "nul", "{\"a\": 1e400}",
                                   "{\"a\":1, \"a\":2}", "\"deepseek\"", "[]", "42" };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        ds_config c;
        ds_err e = { 0 };
        int rc = ds_config_parse(&c, texts[i], strlen(texts[i]), "cfg.json", &e);
        CHECK_MSG(rc == DS_EFORMAT && strstr(e.msg, "cfg.json"), "'%s': status %d, message %s", texts[i], rc, e.msg);
    }
}

TEST(badinput_config_missing_fields) {
    static const char *req[] = { "hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads",
                                 "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                                 "intermediate_size", "moe_intermediate_size", "num_experts_per_tok" };
    cfg_case cs[sizeof req / sizeof req[0]];
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        cs[i] = (cfg_case){ NULL, req[i], NULL, DS_ENOTFOUND, req[i] };
    run_cfg_cases(cs, sizeof req / sizeof req[0]);
    /* null counts as missing */
    static const cfg_case c2[] = { { NULL, "hidden_size", "null", DS_ENOTFOUND, "'hidden_size'" } };
    run_cfg_cases(c2, 1);
}

TEST(badinput_config_out_of_range) {
    static const cfg_case cs[] = {
        { NULL, "hidden_size", "0", DS_ERANGE, "'hidden_size' = 0" },
        { NULL, "hidden_size", "-64", DS_ERANGE, "'hidden_size' = -64" },
        { NULL, "hidden_size", "9223372036854775807", DS_ERANGE, "'hidden_size'" },
        { NULL, "vocab_size", "1e12", DS_ERANGE, "'vocab_size' = 1000000000000" },
        { NULL, "vocab_size", "1000000000000", DS_ERANGE, "'vocab_size'" },
        { NULL, "vocab_size", "0", DS_ERANGE, "'vocab_size'" },
        { NULL, "num_hidden_layers", "0", DS_ERANGE, "'num_hidden_layers'" },
        { NULL, "num_hidden_layers", "-1", DS_ERANGE, "'num_hidden_layers'" },
        { NULL, "num_hidden_layers", "1000000000", DS_ERANGE, "'num_hidden_layers'" },
        { NULL, "num_attention_heads", "0", DS_ERANGE, "'num_attention_heads'" },
        { NULL, "kv_lora_rank", "0", DS_ERANGE, "'kv_lora_rank'" },
        { NULL, "q_lora_rank", "-1", DS_ERANGE, "'q_lora_rank'" },
        { NULL, "v_head_dim", "100000", DS_ERANGE, "'v_head_dim'" },
        { NULL, "num_experts_per_tok", "17", DS_ERANGE, "num_experts_per_tok = 17" },
        { NULL, "num_experts_per_tok", "0", DS_ERANGE, "'num_experts_per_tok'" },
        { NULL, "n_routed_experts", "-2", DS_ERANGE, "'n_routed_experts'" },
        { NULL, "n_group", "3", DS_EINVAL, "n_group = 3 must divide n_routed_experts = 16" },
        { NULL, "n_group", "0", DS_ERANGE, "'n_group'" },
        { NULL, "n_group", "32", DS_EINVAL, "n_group = 32" },
        { NULL, "topk_group", "5", DS_ERANGE, "topk_group = 5" },
        { NULL, "topk_group", "0", DS_ERANGE, "'topk_group'" },
        { NULL, "qk_rope_head_dim", "7", DS_EINVAL, "qk_rope_head_dim = 7" },
        { NULL, "qk_rope_head_dim", "0", DS_ERANGE, "'qk_rope_head_dim'" },
        { NULL, "first_k_dense_replace", "4", DS_ERANGE, "first_k_dense_replace = 4" },
        { NULL, "moe_layer_freq", "0", DS_ERANGE, "'moe_layer_freq'" },
        { NULL, "num_nextn_predict_layers", "100", DS_ERANGE, "'num_nextn_predict_layers'" },
        { NULL, "rms_norm_eps", "-1e-6", DS_ERANGE, "'rms_norm_eps'" },
        { NULL, "rope_theta", "0", DS_ERANGE, "'rope_theta'" },
        { NULL, "rope_parameters.rope_theta", "1", DS_ERANGE, "rope_theta = 1 must be > 1" },
        { NULL, "max_position_embeddings", "0", DS_ERANGE, "'max_position_embeddings'" },
        { NULL, "routed_scaling_factor", "-2.5", DS_ERANGE, "'routed_scaling_factor'" },
        { NULL, "bos_token_id", "-5", DS_ERANGE, "'bos_token_id'" },
        { NULL, "bos_token_id", "320", DS_ERANGE, "bos_token_id = 320" },
        { NULL, "eos_token_id", "100000", DS_ERANGE, "eos_token_id = 100000" },
        { NULL, "eos_token_id", "[-3]", DS_ERANGE, "eos_token_id" },
        { NULL, "eos_token_id", "[\"x\"]", DS_EFORMAT, "eos_token_id" },
        { NULL, "rope_parameters.factor", "0", DS_ERANGE, "'factor'" },
        { NULL, "rope_parameters.factor", "-4", DS_ERANGE, "'factor'" },
        { NULL, "rope_parameters.beta_fast", "0", DS_ERANGE, "beta_fast" },
        { NULL, "rope_parameters.beta_slow", "-1", DS_ERANGE, "'beta_slow'" },
        { NULL, "rope_parameters.original_max_position_embeddings", "0", DS_ERANGE,
          "'original_max_position_embeddings'" },
        { "tiny-v3-fp8", "quantization_config.weight_block_size", "[128]", DS_EFORMAT, "weight_block_size" },
        { "tiny-v3-fp8", "quantization_config.weight_block_size", "[0, 128]", DS_EFORMAT, "weight_block_size" },
        { "tiny-v3-fp8", "quantization_config.weight_block_size", "[128, 1e9]", DS_EFORMAT, "weight_block_size" },
    };
    run_cfg_cases(cs, sizeof cs / sizeof cs[0]);
}

TEST(badinput_config_wrong_types) {
    static const cfg_case cs[] = {
        { NULL, "hidden_size", "\"64\"", DS_EFORMAT, "'hidden_size' must be an integer" },
        { NULL, "hidden_size", "64.5", DS_EFORMAT, "'hidden_size' must be an integer" },
        { NULL, "hidden_size", "true", DS_EFORMAT, "'hidden_size'" },
        { NULL, "vocab_size", "[320]", DS_EFORMAT, "'vocab_size'" },
        { NULL, "vocab_size", "1e300", DS_EFORMAT, "'vocab_size'" },
        { NULL, "n_routed_experts", "{}", DS_EFORMAT, "'n_routed_experts'" },
        { NULL, "rms_norm_eps", "\"1e-6\"", DS_EFORMAT, "'rms_norm_eps' must be a number" },
        { NULL, "tie_word_embeddings", "1", DS_EFORMAT, "'tie_word_embeddings'" },
        { NULL, "norm_topk_prob", "\"yes\"", DS_EFORMAT, "'norm_topk_prob'" },
        { NULL, "hidden_act", "7", DS_EFORMAT, "'hidden_act' must be a string" },
        { NULL, "topk_method", "[]", DS_EFORMAT, "'topk_method'" },
        { NULL, "model_type", "3", DS_EFORMAT, "'model_type'" },
        { NULL, "rope_parameters.type", "1", DS_EFORMAT, "'type'" },
        { NULL, "rope_parameters.factor", "\"40\"", DS_EFORMAT, "'factor'" },
        { "tiny-v3-fp8", "quantization_config.quant_method", "8", DS_EFORMAT, "'quant_method'" },
    };
    run_cfg_cases(cs, sizeof cs / sizeof cs[0]);
}

static void edit_llama(json_t *j, const void *arg) {
    (void)arg;
    json_object_set_new(j, "model_type", json_string("llama"));
    json_object_set_new(j, "architectures", json_pack("[s]", "LlamaForCausalLM"));
}

static void edit_no_arch(json_t *j, const void *arg) {
    (void)arg;
    json_object_del(j, "model_type");
    json_object_del(j, "architectures");
}

TEST(badinput_config_unsupported) {
    ds_err e = { 0 };
    EXPECT_ERR(parse_edited("tiny-v3", edit_llama, NULL, &e), e, DS_EUNSUPPORTED, "config.json", "model_type 'llama'",
               "LlamaForCausalLM");
    ds_err_clear(&e);
    EXPECT_ERR(parse_edited("tiny-v3", edit_no_arch, NULL, &e), e, DS_EUNSUPPORTED, "config.json", "model_type");
    static const cfg_case cs[] = {
        { NULL, "hidden_act", "\"gelu\"", DS_EUNSUPPORTED, "hidden_act 'gelu'" },
        { NULL, "topk_method", "\"random\"", DS_EUNSUPPORTED, "topk_method 'random'" },
        { NULL, "scoring_func", "\"tanh\"", DS_EUNSUPPORTED, "scoring_func 'tanh'" },
        { NULL, "rope_parameters.type", "\"linear\"", DS_EUNSUPPORTED, "rope_scaling type 'linear'" },
        { NULL, "attention_bias", "true", DS_EUNSUPPORTED, "attention_bias" },
        { "tiny-v3-fp8", "quantization_config.quant_method", "\"gptq\"", DS_EUNSUPPORTED, "quant_method 'gptq'" },
        { "tiny-v3-fp8", "quantization_config.fmt", "\"e5m2\"", DS_EUNSUPPORTED, "fmt 'e5m2'" },
    };
    run_cfg_cases(cs, sizeof cs / sizeof cs[0]);
}

TEST(badinput_config_via_model_open_names_file) {
    const char *d = tmp_begin();
    xset s;
    if (xset_load(&s, "tiny-v3")) return;
    make_model(d, "tiny-v3", &s);
    size_t n;
    char *cfg = read_all("tests/fixtures/tiny-v3/config.json", &n);
    json_t *j = json_loadb(cfg, n, 0, NULL);
    json_object_set_new(j, "num_experts_per_tok", json_integer(99));
    json_dump_file(j, P("%s/config.json", d), 0);
    ds_err e = { 0 };
    EXPECT_ERR(open_model(d, &e), e, DS_ERANGE, P("%s/config.json", d), "num_experts_per_tok = 99");
    json_decref(j);
    free(cfg);
    xset_free(&s);
    tmp_end();
}

/* ============================================================ token ids */

TEST(badinput_token_ids_out_of_range) {
    ds_model *m = NULL;
    ds_err e = { 0 };
    if (ds_model_open(&m, "tests/fixtures/tiny-v3", &e)) { CHECK_MSG(0, "%s", e.msg); return; }
    int64_t V = m->cfg.vocab_size, D = m->cfg.hidden_size;
    ds_kvcache cache;
    CHECK(ds_kvcache_init(&cache, m, 16, &e) == DS_OK);
    float *logits = malloc((size_t)(4 * V) * sizeof(float));
    float *hidden = malloc((size_t)(4 * D) * sizeof(float));
    const int32_t bad[][3] = { { 1, 2, (int32_t)V }, { -1, 2, 3 }, { 1, INT32_MAX, 3 }, { INT32_MIN, 0, 0 } };
    const char *needle[] = { P("token id %lld at position 2", (long long)V), "token id -1 at position 0",
                             "token id 2147483647 at position 1", "token id -2147483648 at position 0" };
    for (int i = 0; i < 4; i++) {
        ds_seq_chunk ch = { &cache, bad[i], 3, true };
        ds_err_clear(&e);
        EXPECT_ERR(ds_model_forward(m, NULL, &ch, 1, logits, hidden, &e), e, DS_ERANGE, needle[i], "vocab_size 320");
        CHECK_EQ_INT(cache.n_past, 0);  /* nothing was appended */
    }
    /* a good chunk followed by a bad one in the same batch: nothing runs */
    ds_kvcache c2;
    CHECK(ds_kvcache_init(&c2, m, 16, &e) == DS_OK);
    const int32_t good[2] = { 5, 6 };
    ds_seq_chunk chs[2] = { { &cache, good, 2, true }, { &c2, bad[0], 3, true } };
    ds_err_clear(&e);
    EXPECT_ERR(ds_model_forward(m, NULL, chs, 2, logits, NULL, &e), e, DS_ERANGE, "vocab_size");
    CHECK_EQ_INT(cache.n_past, 0);
    CHECK_EQ_INT(c2.n_past, 0);
    /* the MTP module checks its tokens too */
    ds_seq_chunk ok = { &cache, good, 2, true };
    ds_err_clear(&e);
    CHECK(ds_model_forward(m, NULL, &ok, 1, logits, hidden, &e) == DS_OK);
    if (m->n_mtp > 0) {
        const int32_t nb[1] = { (int32_t)V + 7 };
        ds_err_clear(&e);
        EXPECT_ERR(ds_model_forward_mtp(m, NULL, &cache, hidden, nb, 1, logits, &e), e, DS_ERANGE, "token id 327");
    }
    /* naive path */
    ds_err_clear(&e);
    EXPECT_ERR(ds_model_forward_naive(m, NULL, bad[1], 3, logits, &e), e, DS_ERANGE, "token id -1");
    ds_kvcache_free(&c2);
    ds_kvcache_free(&cache);
    free(logits);
    free(hidden);
    ds_model_close(m);
}
