/*
 * gguf.c - the GGUF reader (validate everything, then hand out borrowed
 * views into the mapping) and the atomic streaming writer. See gguf.h for
 * the format and the checks. Owns no model knowledge: the deepseek2
 * key/tensor names live in src/model/model_gguf.c and the converter.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ type table */

static const ds_ggml_type_info k_types[DS_GGML_TYPE_COUNT] = {
    [0] = { "f32", 1, 4, DS_DTYPE_F32 },
    [1] = { "f16", 1, 2, DS_DTYPE_F16 },
    [2] = { "q4_0", 32, 18, DS_DTYPE_Q4_0 },
    [3] = { "q4_1", 32, 20, DS_DTYPE_Q4_1 },
    [6] = { "q5_0", 32, 22, DS_DTYPE_Q5_0 },
    [7] = { "q5_1", 32, 24, DS_DTYPE_Q5_1 },
    [8] = { "q8_0", 32, 34, DS_DTYPE_Q8_0 },
    [9] = { "q8_1", 32, 36, DS_DTYPE_COUNT },
    [10] = { "q2_K", 256, 84, DS_DTYPE_Q2_K },
    [11] = { "q3_K", 256, 110, DS_DTYPE_Q3_K },
    [12] = { "q4_K", 256, 144, DS_DTYPE_Q4_K },
    [13] = { "q5_K", 256, 176, DS_DTYPE_Q5_K },
    [14] = { "q6_K", 256, 210, DS_DTYPE_Q6_K },
    [15] = { "q8_K", 256, 292, DS_DTYPE_COUNT },
    [16] = { "iq2_xxs", 256, 66, DS_DTYPE_IQ2_XXS },
    [17] = { "iq2_xs", 256, 74, DS_DTYPE_IQ2_XS },
    [18] = { "iq3_xxs", 256, 98, DS_DTYPE_IQ3_XXS },
    [19] = { "iq1_s", 256, 50, DS_DTYPE_IQ1_S },
    [20] = { "iq4_nl", 32, 18, DS_DTYPE_IQ4_NL },
    [21] = { "iq3_s", 256, 110, DS_DTYPE_IQ3_S },
    [22] = { "iq2_s", 256, 82, DS_DTYPE_IQ2_S },
    [23] = { "iq4_xs", 256, 136, DS_DTYPE_IQ4_XS },
    [24] = { "i8", 1, 1, DS_DTYPE_COUNT },
    [25] = { "i16", 1, 2, DS_DTYPE_COUNT },
    [26] = { "i32", 1, 4, DS_DTYPE_I32 },
    [27] = { "i64", 1, 8, DS_DTYPE_I64 },
    [28] = { "f64", 1, 8, DS_DTYPE_COUNT },
    [29] = { "iq1_m", 256, 56, DS_DTYPE_IQ1_M },
    [30] = { "bf16", 1, 2, DS_DTYPE_BF16 },
    [34] = { "tq1_0", 256, 54, DS_DTYPE_COUNT },
    [35] = { "tq2_0", 256, 66, DS_DTYPE_COUNT },
    [39] = { "mxfp4", 32, 17, DS_DTYPE_MXFP4 },   /* V4's routed experts: viewed in place (mxfp4.h) */
    [40] = { "nvfp4", 64, 36, DS_DTYPE_COUNT },
    [41] = { "q1_0", 128, 18, DS_DTYPE_COUNT },
    [42] = { "q2_0", 64, 18, DS_DTYPE_COUNT },
};

const ds_ggml_type_info *ds_ggml_type(uint32_t t) {
    if (t >= DS_GGML_TYPE_COUNT || !k_types[t].name) return NULL;
    return &k_types[t];
}

int ds_ggml_type_of(ds_dtype d) {
    if (d == DS_DTYPE_COUNT) return -1;
    for (int i = 0; i < DS_GGML_TYPE_COUNT; i++)
        if (k_types[i].name && k_types[i].dtype == d) return i;
    return -1;
}

static size_t scalar_size(ds_gguf_type t) {
    switch (t) {
    case DS_GGUF_UINT8: case DS_GGUF_INT8: case DS_GGUF_BOOL: return 1;
    case DS_GGUF_UINT16: case DS_GGUF_INT16: return 2;
    case DS_GGUF_UINT32: case DS_GGUF_INT32: case DS_GGUF_FLOAT32: return 4;
    case DS_GGUF_UINT64: case DS_GGUF_INT64: case DS_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static const char *type_name(ds_gguf_type t) {
    static const char *n[] = { "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64" };
    return (unsigned)t < DS_GGUF_TYPE_COUNT ? n[t] : "?";
}

/* ---------------------------------------------------------------- cursor */

typedef struct {
    const uint8_t *buf;
    size_t size, pos;
    const char *what;
    ds_err *e;
} cursor;

static int need(cursor *c, uint64_t n, const char *item) {
    if (n > c->size - c->pos)
        return ds_err_set(c->e, DS_EFORMAT, "%s: truncated: %s needs %llu bytes at offset %zu, file has %zu", c->what,
                          item, (unsigned long long)n, c->pos, c->size);
    return DS_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *item) {
    int rc = need(c, 4, item);
    if (rc) return rc;
    memcpy(v, c->buf + c->pos, 4);
    c->pos += 4;
    return DS_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *item) {
    int rc = need(c, 8, item);
    if (rc) return rc;
    memcpy(v, c->buf + c->pos, 8);
    c->pos += 8;
    return DS_OK;
}

/* A string: returns a pointer into the buffer and its length. */
static int rd_str(cursor *c, const char **s, uint64_t *len, uint64_t max, const char *item) {
    uint64_t n;
    int rc = rd_u64(c, &n, item);
    if (rc) return rc;
    if (n > max)
        return ds_err_set(c->e, DS_EFORMAT, "%s: %s at offset %zu has length %llu, limit %llu", c->what, item, c->pos - 8,
                          (unsigned long long)n, (unsigned long long)max);
    if ((rc = need(c, n, item))) return rc;
    *s = (const char *)c->buf + c->pos;
    *len = n;
    c->pos += (size_t)n;
    return DS_OK;
}

static char *dup_n(const char *s, uint64_t n) {
    char *d = malloc((size_t)n + 1);
    if (!d) return NULL;
    memcpy(d, s, (size_t)n);
    d[n] = 0;
    return d;
}

/* Reads one scalar of type t into kv->v. */
static int rd_scalar(cursor *c, ds_gguf_type t, ds_gguf_kv *kv) {
    size_t sz = scalar_size(t);
    int rc = need(c, sz, kv->key);
    if (rc) return rc;
    const uint8_t *p = c->buf + c->pos;
    c->pos += sz;
    switch (t) {
    case DS_GGUF_UINT8: kv->v.u = p[0]; break;
    case DS_GGUF_INT8: kv->v.i = (int8_t)p[0]; break;
    case DS_GGUF_BOOL:
        if (p[0] > 1)
            return ds_err_set(c->e, DS_EFORMAT, "%s: key '%s': bool value %u is not 0 or 1", c->what, kv->key, p[0]);
        kv->v.u = p[0];
        break;
    case DS_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); kv->v.u = x; break; }
    case DS_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); kv->v.i = x; break; }
    case DS_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); kv->v.u = x; break; }
    case DS_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); kv->v.i = x; break; }
    case DS_GGUF_FLOAT32: { float x; memcpy(&x, p, 4); kv->v.f = x; break; }
    case DS_GGUF_UINT64: memcpy(&kv->v.u, p, 8); break;
    case DS_GGUF_INT64: memcpy(&kv->v.i, p, 8); break;
    case DS_GGUF_FLOAT64: memcpy(&kv->v.f, p, 8); break;
    default: DS_ASSERT(!"not a scalar type");
    }
    return DS_OK;
}

static bool is_int_type(ds_gguf_type t) {
    return t == DS_GGUF_UINT8 || t == DS_GGUF_INT8 || t == DS_GGUF_UINT16 || t == DS_GGUF_INT16 ||
           t == DS_GGUF_UINT32 || t == DS_GGUF_INT32 || t == DS_GGUF_UINT64 || t == DS_GGUF_INT64;
}
static bool is_signed_type(ds_gguf_type t) {
    return t == DS_GGUF_INT8 || t == DS_GGUF_INT16 || t == DS_GGUF_INT32 || t == DS_GGUF_INT64;
}

static int read_value(cursor *c, ds_gguf_kv *kv);

static int read_kv(cursor *c, ds_gguf_kv *kv, int64_t idx) {
    const char *ks;
    uint64_t klen;
    char item[64];
    snprintf(item, sizeof item, "key %lld", (long long)idx);
    int rc = rd_str(c, &ks, &klen, DS_GGUF_MAX_KEY, item);
    if (rc) return rc;
    if (klen == 0) return ds_err_set(c->e, DS_EFORMAT, "%s: key %lld is empty", c->what, (long long)idx);
    if (memchr(ks, 0, (size_t)klen))
        return ds_err_set(c->e, DS_EFORMAT, "%s: key %lld contains a NUL byte", c->what, (long long)idx);
    kv->key = dup_n(ks, klen);
    if (!kv->key) return ds_err_set(c->e, DS_ENOMEM, "out of memory");
    uint32_t t;
    if ((rc = rd_u32(c, &t, kv->key))) return rc;
    if (t >= DS_GGUF_TYPE_COUNT)
        return ds_err_set(c->e, DS_EFORMAT, "%s: key '%s' has invalid value type %u", c->what, kv->key, t);
    kv->type = (ds_gguf_type)t;
    kv->n = 1;
    kv->val_off = c->pos;
    rc = read_value(c, kv);
    kv->val_len = c->pos - kv->val_off;
    return rc;
}

static int read_value(cursor *c, ds_gguf_kv *kv) {
    int rc;
    uint32_t t = kv->type;
    if (t == DS_GGUF_STRING) return rd_str(c, &kv->str, &kv->str_len, DS_GGUF_MAX_STRING, kv->key);
    if (t != DS_GGUF_ARRAY) return rd_scalar(c, kv->type, kv);
    uint32_t et;
    uint64_t n;
    if ((rc = rd_u32(c, &et, kv->key)) || (rc = rd_u64(c, &n, kv->key))) return rc;
    if (et >= DS_GGUF_TYPE_COUNT)
        return ds_err_set(c->e, DS_EFORMAT, "%s: key '%s': invalid array element type %u", c->what, kv->key, et);
    if (et == DS_GGUF_ARRAY)
        return ds_err_set(c->e, DS_EFORMAT, "%s: key '%s': nested arrays are not supported", c->what, kv->key);
    if (n > DS_GGUF_MAX_ARRAY)
        return ds_err_set(c->e, DS_EFORMAT, "%s: key '%s': array of %llu elements exceeds the limit %u", c->what, kv->key,
                          (unsigned long long)n, DS_GGUF_MAX_ARRAY);
    kv->arr_type = (ds_gguf_type)et;
    kv->n = n;
    if (et == DS_GGUF_STRING) {
        /* every element takes >= 8 bytes: bound n by the bytes left before allocating */
        if (n > (c->size - c->pos) / 8)
            return ds_err_set(c->e, DS_EFORMAT, "%s: key '%s': %llu strings cannot fit in the %zu bytes left", c->what,
                              kv->key, (unsigned long long)n, c->size - c->pos);
        kv->str_pos = malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
        if (!kv->str_pos) return ds_err_set(c->e, DS_ENOMEM, "out of memory");
        for (uint64_t i = 0; i < n; i++) {
            kv->str_pos[i] = c->pos;
            const char *s;
            uint64_t len;
            if ((rc = rd_str(c, &s, &len, DS_GGUF_MAX_STRING, kv->key))) return rc;
        }
        return DS_OK;
    }
    size_t es = scalar_size(kv->arr_type);
    if ((rc = need(c, n * es, kv->key))) return rc;  /* n <= 2^30, es <= 8: no overflow */
    if (kv->arr_type == DS_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (c->buf[c->pos + i] > 1)
                return ds_err_set(c->e, DS_EFORMAT, "%s: key '%s': bool element %llu is not 0 or 1", c->what, kv->key,
                                  (unsigned long long)i);
    kv->arr = c->buf + c->pos;
    c->pos += (size_t)(n * es);
    return DS_OK;
}

static int read_tensor_info(cursor *c, ds_gguf_tensor *t, int64_t idx) {
    const char *ns;
    uint64_t nlen;
    char item[64];
    snprintf(item, sizeof item, "tensor %lld name", (long long)idx);
    int rc = rd_str(c, &ns, &nlen, DS_GGUF_MAX_KEY, item);
    if (rc) return rc;
    if (nlen == 0 || nlen >= DS_GGUF_MAX_NAME)
        return ds_err_set(c->e, DS_EFORMAT, "%s: tensor %lld: name length %llu is not in [1, %d)", c->what, (long long)idx,
                          (unsigned long long)nlen, DS_GGUF_MAX_NAME);
    if (memchr(ns, 0, (size_t)nlen))
        return ds_err_set(c->e, DS_EFORMAT, "%s: tensor %lld: name contains a NUL byte", c->what, (long long)idx);
    t->name = dup_n(ns, nlen);
    if (!t->name) return ds_err_set(c->e, DS_ENOMEM, "out of memory");
    if ((rc = rd_u32(c, &t->n_dims, t->name))) return rc;
    if (t->n_dims < 1 || t->n_dims > DS_GGUF_MAX_DIMS)
        return ds_err_set(c->e, DS_EFORMAT, "%s: tensor '%s' has %u dimensions (1..%d allowed)", c->what, t->name, t->n_dims,
                          DS_GGUF_MAX_DIMS);
    uint64_t numel = 1;
    for (int d = 0; d < DS_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if ((uint32_t)d < t->n_dims && (rc = rd_u64(c, &ne, t->name))) return rc;
        if (ne < 1 || ne > (uint64_t)INT64_MAX)
            return ds_err_set(c->e, DS_EFORMAT, "%s: tensor '%s': dimension %d has %llu elements", c->what, t->name, d,
                              (unsigned long long)ne);
        if (__builtin_mul_overflow(numel, ne, &numel) || numel > (uint64_t)INT64_MAX)
            return ds_err_set(c->e, DS_EFORMAT, "%s: tensor '%s': element count overflows", c->what, t->name);
        t->ne[d] = (int64_t)ne;
    }
    if ((rc = rd_u32(c, &t->type, t->name))) return rc;
    const ds_ggml_type_info *ti = ds_ggml_type(t->type);
    if (!ti) return ds_err_set(c->e, DS_EFORMAT, "%s: tensor '%s' has unknown ggml type %u", c->what, t->name, t->type);
    if (t->ne[0] % ti->blck)
        return ds_err_set(c->e, DS_EFORMAT, "%s: tensor '%s' of type %s has rows of %lld elements, not a multiple of %lld",
                          c->what, t->name, ti->name, (long long)t->ne[0], (long long)ti->blck);
    if (__builtin_mul_overflow(numel / (uint64_t)ti->blck, (uint64_t)ti->size, &t->nbytes))
        return ds_err_set(c->e, DS_EFORMAT, "%s: tensor '%s': byte size overflows", c->what, t->name);
    return rd_u64(c, &t->offset, t->name);
}

static const ds_gguf *g_sort_ctx;
static int cmp_by_name(const void *a, const void *b) {
    return strcmp(g_sort_ctx->tensors[*(const int64_t *)a].name, g_sort_ctx->tensors[*(const int64_t *)b].name);
}
static int cmp_by_offset(const void *a, const void *b) {
    uint64_t x = g_sort_ctx->tensors[*(const int64_t *)a].offset, y = g_sort_ctx->tensors[*(const int64_t *)b].offset;
    return x < y ? -1 : x > y;
}

static int parse(ds_gguf *g, ds_err *e) {
    cursor c = { g->buf, g->size, 0, g->what, e };
    int rc;
    uint32_t magic;
    if ((rc = rd_u32(&c, &magic, "magic"))) return rc;
    if (magic != DS_GGUF_MAGIC) return ds_err_set(e, DS_EFORMAT, "%s: not a GGUF file (bad magic)", g->what);
    if ((rc = rd_u32(&c, &g->version, "version"))) return rc;
    if (g->version != 2 && g->version != 3)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: GGUF version %u is not supported (2 or 3)", g->what, g->version);
    uint64_t nt, nkv;
    if ((rc = rd_u64(&c, &nt, "tensor count")) || (rc = rd_u64(&c, &nkv, "key count"))) return rc;
    /* each key takes >= 8+1+4+1 bytes, each tensor info >= 8+1+4+8+4+8 */
    if (nkv > (c.size - c.pos) / 14)
        return ds_err_set(e, DS_EFORMAT, "%s: %llu keys cannot fit in a %zu-byte file", g->what, (unsigned long long)nkv, c.size);
    if (nt > (c.size - c.pos) / 33)
        return ds_err_set(e, DS_EFORMAT, "%s: %llu tensors cannot fit in a %zu-byte file", g->what, (unsigned long long)nt, c.size);
    g->kv = calloc((size_t)(nkv ? nkv : 1), sizeof *g->kv);
    g->tensors = calloc((size_t)(nt ? nt : 1), sizeof *g->tensors);
    g->by_name = calloc((size_t)(nt ? nt : 1), sizeof *g->by_name);
    if (!g->kv || !g->tensors || !g->by_name) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < nkv; i++) {
        g->n_kv = (int64_t)i + 1;
        if ((rc = read_kv(&c, &g->kv[i], (int64_t)i))) return rc;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->kv[j].key, g->kv[i].key))
                return ds_err_set(e, DS_EFORMAT, "%s: duplicate key '%s'", g->what, g->kv[i].key);
    }
    g->alignment = DS_GGUF_DEFAULT_ALIGNMENT;
    const ds_gguf_kv *al = ds_gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != DS_GGUF_UINT32)
            return ds_err_set(e, DS_EFORMAT, "%s: general.alignment must be a u32, not %s", g->what, type_name(al->type));
        if (al->v.u == 0 || (al->v.u & (al->v.u - 1)) || al->v.u > (1u << 20))
            return ds_err_set(e, DS_EFORMAT, "%s: general.alignment = %llu is not a power of two <= 2^20", g->what,
                              (unsigned long long)al->v.u);
        g->alignment = al->v.u;
    }
    for (uint64_t i = 0; i < nt; i++) {
        g->n_tensors = (int64_t)i + 1;
        if ((rc = read_tensor_info(&c, &g->tensors[i], (int64_t)i))) return rc;
        g->by_name[i] = (int64_t)i;
    }
    g->data_offset = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (nt > 0 && g->data_offset > g->size)
        return ds_err_set(e, DS_EFORMAT, "%s: truncated: the data region would start at %llu, file has %zu bytes", g->what,
                          (unsigned long long)g->data_offset, g->size);
    uint64_t data_size = g->data_offset <= g->size ? g->size - g->data_offset : 0;
    g_sort_ctx = g;
    qsort(g->by_name, (size_t)nt, sizeof *g->by_name, cmp_by_name);
    for (uint64_t i = 1; i < nt; i++)
        if (!strcmp(g->tensors[g->by_name[i]].name, g->tensors[g->by_name[i - 1]].name))
            return ds_err_set(e, DS_EFORMAT, "%s: duplicate tensor name '%s'", g->what, g->tensors[g->by_name[i]].name);
    for (uint64_t i = 0; i < nt; i++) {
        ds_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': offset %llu is not a multiple of the alignment %llu", g->what,
                              t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': bytes [%llu, +%llu) run past the data region (%llu bytes)",
                              g->what, t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                              (unsigned long long)data_size);
        t->data = g->buf + g->data_offset + t->offset;
    }
    /* no overlaps: sort a copy by offset */
    int64_t *ord = malloc((size_t)(nt ? nt : 1) * sizeof *ord);
    if (!ord) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < nt; i++) ord[i] = (int64_t)i;
    qsort(ord, (size_t)nt, sizeof *ord, cmp_by_offset);
    for (uint64_t i = 1; i < nt; i++) {
        const ds_gguf_tensor *a = &g->tensors[ord[i - 1]], *b = &g->tensors[ord[i]];
        if (a->offset + a->nbytes > b->offset) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: tensors '%s' and '%s' overlap", g->what, a->name, b->name);
            free(ord);
            return rc;
        }
    }
    free(ord);
    return DS_OK;
}

int ds_gguf_parse(ds_gguf *g, const uint8_t *buf, size_t size, const char *what, ds_err *e) {
    memset(g, 0, sizeof *g);
    g->buf = buf;
    g->size = size;
    g->what = strdup(what ? what : "gguf");
    if (!g->what) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int rc = parse(g, e);
    if (rc) ds_gguf_close(g);
    return rc;
}

int ds_gguf_open(ds_gguf *g, const char *path, ds_err *e) {
    memset(g, 0, sizeof *g);
    ds_mmap m;
    int rc = ds_mmap_open(&m, path, e);
    if (rc) return rc;
    if (!m.data) {
        ds_mmap_close(&m);
        return ds_err_set(e, DS_EFORMAT, "%s: empty file", path);
    }
    rc = ds_gguf_parse(g, m.data, m.size, path, e);
    if (rc) {
        ds_mmap_close(&m);
        return rc;
    }
    g->map = m;
    return DS_OK;
}

void ds_gguf_close(ds_gguf *g) {
    if (!g) return;
    if (g->parts) {  /* a split file: kv and names belong to the parts */
        for (int i = 0; i < g->n_parts; i++) ds_gguf_close(&g->parts[i]);
        free(g->parts);
        free(g->tensors);
        free(g->by_name);
        free(g->what);
        memset(g, 0, sizeof *g);
        return;
    }
    for (int64_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str_pos);
    }
    for (int64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->by_name);
    free(g->what);
    if (g->map.data || g->map.path) ds_mmap_close(&g->map);
    memset(g, 0, sizeof *g);
}

/* ----------------------------------------------------------- split files */

void ds_gguf_split_name(char *buf, size_t cap, const char *prefix, int no, int count) {
    snprintf(buf, cap, "%s-%05d-of-%05d.gguf", prefix, no + 1, count);
}

/* Parses PREFIX-NNNNN-of-MMMMM.gguf: the prefix length, part (1-based), count; false if not so named. */
static bool split_parse(const char *path, size_t *prefix_len, int *no, int *count) {
    size_t n = strlen(path);
    const size_t tail = strlen("-00001-of-00001.gguf");
    if (n <= tail) return false;
    const char *p = path + n - tail;
    int a = 0, b = 0;
    for (int i = 0; i < 5; i++) {
        if (p[1 + i] < '0' || p[1 + i] > '9' || p[10 + i] < '0' || p[10 + i] > '9') return false;
        a = a * 10 + (p[1 + i] - '0');
        b = b * 10 + (p[10 + i] - '0');
    }
    if (p[0] != '-' || strncmp(p + 6, "-of-", 4) || strcmp(p + 15, ".gguf") || a < 1 || b < 1 || a > b) return false;
    *prefix_len = n - tail;
    *no = a;
    *count = b;
    return true;
}

int ds_gguf_split_first(const char *path, char *buf, size_t cap, ds_err *e) {
    size_t pl;
    int no, count;
    if (strlen(path) + 1 > cap) return ds_err_set(e, DS_ERANGE, "%s: path too long", path);
    if (!split_parse(path, &pl, &no, &count) || no == 1) {
        snprintf(buf, cap, "%s", path);
        return DS_OK;
    }
    char prefix[4096];
    snprintf(prefix, sizeof prefix, "%.*s", (int)DS_MIN(pl, sizeof prefix - 1), path);
    ds_gguf_split_name(buf, cap, prefix, 0, count);
    return DS_OK;
}

static int split_keys(const ds_gguf *g, int64_t *no, int64_t *count, ds_err *e) {
    *no = 0;
    *count = 0;
    int rc = ds_gguf_get_int(g, "split.count", false, 0, DS_GGUF_MAX_SPLITS, count, e);
    if (!rc && *count > 0) rc = ds_gguf_get_int(g, "split.no", true, 0, *count - 1, no, e);
    return rc;
}

int ds_gguf_open_model(ds_gguf *g, const char *path, ds_err *e) {
    ds_gguf first;
    int64_t no, count;
    int rc = ds_gguf_open(&first, path, e);
    if (rc) return rc;
    if ((rc = split_keys(&first, &no, &count, e))) { ds_gguf_close(&first); return rc; }
    if (count <= 1) { *g = first; return DS_OK; }
    size_t pl;
    int pno, pcount;
    if (!split_parse(path, &pl, &pno, &pcount) || pno != no + 1 || pcount != count) {
        ds_gguf_close(&first);
        return ds_err_set(e, DS_EFORMAT, "%s: part %lld of a split GGUF of %lld parts, but not named PREFIX-%05lld-of-%05lld.gguf "
                          "(the other parts are found by name)", path, (long long)no + 1, (long long)count,
                          (long long)no + 1, (long long)count);
    }
    char prefix[4096], name[4200];
    if (pl >= sizeof prefix) { ds_gguf_close(&first); return ds_err_set(e, DS_ERANGE, "%s: path too long", path); }
    memcpy(prefix, path, pl);
    prefix[pl] = 0;
    if (no != 0) {  /* any part given: start from the first, which holds the metadata */
        ds_gguf_close(&first);
        ds_gguf_split_name(name, sizeof name, prefix, 0, (int)count);
        struct stat sb;
        if (stat(name, &sb) != 0)
            return ds_err_set(e, DS_ENOTFOUND, "%s: part 1 of %lld of this split GGUF, '%s', is missing (%s)", path,
                              (long long)count, name, strerror(errno));
        if ((rc = ds_gguf_open(&first, name, e))) return rc;
        int64_t c2;
        if ((rc = split_keys(&first, &no, &c2, e))) { ds_gguf_close(&first); return rc; }
        if (no != 0 || c2 != count) {
            ds_gguf_close(&first);
            return ds_err_set(e, DS_EFORMAT, "%s: split.no = %lld, split.count = %lld; expected part 1 of %lld", name,
                              (long long)no, (long long)c2, (long long)count);
        }
    }
    memset(g, 0, sizeof *g);
    g->parts = calloc((size_t)count, sizeof *g->parts);
    if (!g->parts) { ds_gguf_close(&first); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    g->parts[0] = first;
    g->n_parts = 1;
    int64_t total = first.n_tensors;
    for (int i = 1; i < count; i++) {
        ds_gguf_split_name(name, sizeof name, prefix, i, (int)count);
        struct stat sb;
        if (stat(name, &sb) != 0) {
            rc = ds_err_set(e, DS_ENOTFOUND, "split GGUF %s: part %d of %lld, '%s', is missing (%s)", g->parts[0].what, i + 1,
                            (long long)count, name, strerror(errno));
            goto fail;
        }
        if ((rc = ds_gguf_open(&g->parts[i], name, e))) goto fail;
        g->n_parts++;
        int64_t pn, pc;
        if ((rc = split_keys(&g->parts[i], &pn, &pc, e))) goto fail;
        if (pc != count || pn != i) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: split.no = %lld, split.count = %lld; expected part %d of %lld (as %s says)",
                            name, (long long)pn, (long long)pc, i + 1, (long long)count, g->parts[0].what);
            goto fail;
        }
        total += g->parts[i].n_tensors;
    }
    int64_t want = total;
    if ((rc = ds_gguf_get_int(&g->parts[0], "split.tensors.count", false, 0, INT64_MAX, &want, e))) goto fail;
    if (want != total) {
        rc = ds_err_set(e, DS_EFORMAT, "split GGUF %s: the %lld parts hold %lld tensors, split.tensors.count says %lld",
                        g->parts[0].what, (long long)count, (long long)total, (long long)want);
        goto fail;
    }
    g->what = strdup(g->parts[0].what);
    g->tensors = calloc((size_t)(total ? total : 1), sizeof *g->tensors);
    g->by_name = calloc((size_t)(total ? total : 1), sizeof *g->by_name);
    if (!g->what || !g->tensors || !g->by_name) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    g->buf = g->parts[0].buf;
    g->size = g->parts[0].size;
    g->version = g->parts[0].version;
    g->alignment = g->parts[0].alignment;
    g->data_offset = g->parts[0].data_offset;
    g->n_kv = g->parts[0].n_kv;
    g->kv = g->parts[0].kv;
    for (int i = 0; i < g->n_parts; i++)
        for (int64_t k = 0; k < g->parts[i].n_tensors; k++) {
            g->by_name[g->n_tensors] = g->n_tensors;
            g->tensors[g->n_tensors++] = g->parts[i].tensors[k];
        }
    g_sort_ctx = g;
    qsort(g->by_name, (size_t)total, sizeof *g->by_name, cmp_by_name);
    for (int64_t i = 1; i < total; i++)
        if (!strcmp(g->tensors[g->by_name[i]].name, g->tensors[g->by_name[i - 1]].name)) {
            rc = ds_err_set(e, DS_EFORMAT, "split GGUF %s: tensor '%s' is in two parts", g->what,
                            g->tensors[g->by_name[i]].name);
            goto fail;
        }
    return DS_OK;
fail:
    ds_gguf_close(g);
    return rc;
}

/* ---------------------------------------------------------------- lookup */

const ds_gguf_kv *ds_gguf_find_kv(const ds_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const ds_gguf_tensor *ds_gguf_find_tensor(const ds_gguf *g, const char *name) {
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        int c = strcmp(g->tensors[g->by_name[mid]].name, name);
        if (c == 0) return &g->tensors[g->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static int missing(const ds_gguf *g, const char *key, bool required, ds_err *e) {
    return required ? ds_err_set(e, DS_ENOTFOUND, "%s: missing key '%s'", g->what, key) : DS_OK;
}

int ds_gguf_get_int(const ds_gguf *g, const char *key, bool required, int64_t lo, int64_t hi, int64_t *out, ds_err *e) {
    const ds_gguf_kv *kv = ds_gguf_find_kv(g, key);
    if (!kv) return missing(g, key, required, e);
    if (!is_int_type(kv->type))
        return ds_err_set(e, DS_EFORMAT, "%s: key '%s' is a %s, expected an integer", g->what, key, type_name(kv->type));
    bool neg = is_signed_type(kv->type) && kv->v.i < 0;
    if (!neg && kv->v.u > (uint64_t)INT64_MAX)
        return ds_err_set(e, DS_ERANGE, "%s: key '%s' = %llu is out of range [%lld, %lld]", g->what, key,
                          (unsigned long long)kv->v.u, (long long)lo, (long long)hi);
    int64_t v = neg ? kv->v.i : (int64_t)kv->v.u;
    if (v < lo || v > hi)
        return ds_err_set(e, DS_ERANGE, "%s: key '%s' = %lld is out of range [%lld, %lld]", g->what, key, (long long)v,
                          (long long)lo, (long long)hi);
    *out = v;
    return DS_OK;
}

int ds_gguf_get_num(const ds_gguf *g, const char *key, bool required, double lo, double hi, double *out, ds_err *e) {
    const ds_gguf_kv *kv = ds_gguf_find_kv(g, key);
    if (!kv) return missing(g, key, required, e);
    double v;
    if (kv->type == DS_GGUF_FLOAT32 || kv->type == DS_GGUF_FLOAT64) v = kv->v.f;
    else if (is_int_type(kv->type)) v = is_signed_type(kv->type) ? (double)kv->v.i : (double)kv->v.u;
    else return ds_err_set(e, DS_EFORMAT, "%s: key '%s' is a %s, expected a number", g->what, key, type_name(kv->type));
    if (!(v >= lo && v <= hi))
        return ds_err_set(e, DS_ERANGE, "%s: key '%s' = %g is out of range [%g, %g]", g->what, key, v, lo, hi);
    *out = v;
    return DS_OK;
}

int ds_gguf_get_bool(const ds_gguf *g, const char *key, bool required, bool *out, ds_err *e) {
    const ds_gguf_kv *kv = ds_gguf_find_kv(g, key);
    if (!kv) return missing(g, key, required, e);
    if (kv->type != DS_GGUF_BOOL)
        return ds_err_set(e, DS_EFORMAT, "%s: key '%s' is a %s, expected a bool", g->what, key, type_name(kv->type));
    *out = kv->v.u != 0;
    return DS_OK;
}

int ds_gguf_get_str(const ds_gguf *g, const char *key, bool required, char *buf, size_t cap, ds_err *e) {
    const ds_gguf_kv *kv = ds_gguf_find_kv(g, key);
    if (!kv) return missing(g, key, required, e);
    if (kv->type != DS_GGUF_STRING)
        return ds_err_set(e, DS_EFORMAT, "%s: key '%s' is a %s, expected a string", g->what, key, type_name(kv->type));
    if (kv->str_len >= cap)
        return ds_err_set(e, DS_ERANGE, "%s: key '%s': string of %llu bytes is too long (limit %zu)", g->what, key,
                          (unsigned long long)kv->str_len, cap - 1);
    memcpy(buf, kv->str, (size_t)kv->str_len);
    buf[kv->str_len] = 0;
    return DS_OK;
}

void ds_gguf_arr_str(const ds_gguf *g, const ds_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len) {
    DS_ASSERT(kv->type == DS_GGUF_ARRAY && kv->arr_type == DS_GGUF_STRING && i < kv->n);
    uint64_t n;
    memcpy(&n, g->buf + kv->str_pos[i], 8);
    *len = n;
    *s = (const char *)g->buf + kv->str_pos[i] + 8;
}

double ds_gguf_arr_num(const ds_gguf_kv *kv, uint64_t i) {
    DS_ASSERT(kv->type == DS_GGUF_ARRAY && i < kv->n && kv->arr);
    const uint8_t *p = kv->arr + i * scalar_size(kv->arr_type);
    switch (kv->arr_type) {
    case DS_GGUF_UINT8: case DS_GGUF_BOOL: return p[0];
    case DS_GGUF_INT8: return (int8_t)p[0];
    case DS_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); return x; }
    case DS_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); return x; }
    case DS_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); return x; }
    case DS_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); return x; }
    case DS_GGUF_FLOAT32: { float x; memcpy(&x, p, 4); return x; }
    case DS_GGUF_UINT64: { uint64_t x; memcpy(&x, p, 8); return (double)x; }
    case DS_GGUF_INT64: { int64_t x; memcpy(&x, p, 8); return (double)x; }
    case DS_GGUF_FLOAT64: { double x; memcpy(&x, p, 8); return x; }
    default: DS_ASSERT(!"not a numeric array");
    }
    return 0;
}

int ds_gguf_view(const ds_gguf *g, const ds_gguf_tensor *t, ds_tensor *out, ds_err *e) {
    const ds_ggml_type_info *ti = ds_ggml_type(t->type);
    DS_ASSERT(ti);
    if (ti->dtype == DS_DTYPE_COUNT || ti->dtype == DS_DTYPE_MXFP4)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: tensor '%s' has ggml type %s, which deepseek.c cannot compute with "
                          "(supported: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K, "
                          "iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq4_nl, iq4_xs; mxfp4 for DeepSeek-V4's "
                          "routed experts)", g->what, t->name, ti->name);
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->dtype = ti->dtype;
    out->ndim = (int)t->n_dims;
    for (uint32_t d = 0; d < t->n_dims; d++) out->shape[d] = t->ne[t->n_dims - 1 - d];
    out->data = t->data;
    out->nbytes = (size_t)t->nbytes;
    return DS_OK;
}

/* ------------------------------------------------------------------ writer */

typedef struct wtensor {
    char *name;
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[DS_GGUF_MAX_DIMS];
    uint64_t offset, nbytes;
} wtensor;

struct ds_gguf_writer {
    uint8_t *hdr;            /* serialized key/values */
    size_t hdr_len, hdr_cap;
    int64_t n_kv;
    wtensor *t;
    int64_t n_t, cap_t;
    uint64_t data_size;      /* running, padded */
    int err;                 /* first failure while adding keys */
    char err_msg[256];
    /* output */
    int fd;
    char *path, *tmp;
    uint8_t *buf;            /* write buffer */
    size_t buf_len;
    int64_t cur;             /* tensor being written */
    uint64_t cur_written;
    bool begun, finished;
};

#define WBUF (8u << 20)

ds_gguf_writer *ds_gguf_writer_new(void) {
    ds_gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->fd = -1;
    return w;
}

void ds_gguf_writer_free(ds_gguf_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmp && !w->finished) unlink(w->tmp);
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    free(w->hdr);
    free(w->buf);
    free(w->path);
    free(w->tmp);
    free(w);
}

static void wfail(ds_gguf_writer *w, const char *msg, const char *key) {
    if (!w->err) {
        w->err = DS_ENOMEM;
        snprintf(w->err_msg, sizeof w->err_msg, "%s%s%s", msg, key ? ": " : "", key ? key : "");
    }
}

static void hput(ds_gguf_writer *w, const void *p, size_t n) {
    if (w->err) return;
    if (w->begun) { wfail(w, "key added after ds_gguf_writer_begin", NULL); w->err = DS_EINVAL; return; }
    if (w->hdr_len + n > w->hdr_cap) {
        size_t cap = w->hdr_cap ? w->hdr_cap : 4096;
        while (cap < w->hdr_len + n) cap *= 2;
        uint8_t *nb = realloc(w->hdr, cap);
        if (!nb) { wfail(w, "out of memory", NULL); return; }
        w->hdr = nb;
        w->hdr_cap = cap;
    }
    memcpy(w->hdr + w->hdr_len, p, n);
    w->hdr_len += n;
}

static void hput_u32(ds_gguf_writer *w, uint32_t v) { hput(w, &v, 4); }
static void hput_u64(ds_gguf_writer *w, uint64_t v) { hput(w, &v, 8); }
static void hput_str(ds_gguf_writer *w, const char *s) {
    uint64_t n = strlen(s);
    hput_u64(w, n);
    hput(w, s, (size_t)n);
}

static void key(ds_gguf_writer *w, const char *k, ds_gguf_type t) {
    if (!k || !*k || strlen(k) > DS_GGUF_MAX_KEY) { wfail(w, "bad key", k); w->err = DS_EINVAL; return; }
    hput_str(w, k);
    hput_u32(w, (uint32_t)t);
    w->n_kv++;
}

void ds_gguf_w_u16(ds_gguf_writer *w, const char *k, uint16_t v) { key(w, k, DS_GGUF_UINT16); hput(w, &v, 2); }
void ds_gguf_w_u32(ds_gguf_writer *w, const char *k, uint32_t v) { key(w, k, DS_GGUF_UINT32); hput(w, &v, 4); }
void ds_gguf_w_i32(ds_gguf_writer *w, const char *k, int32_t v) { key(w, k, DS_GGUF_INT32); hput(w, &v, 4); }
void ds_gguf_w_u64(ds_gguf_writer *w, const char *k, uint64_t v) { key(w, k, DS_GGUF_UINT64); hput(w, &v, 8); }
void ds_gguf_w_f32(ds_gguf_writer *w, const char *k, float v) { key(w, k, DS_GGUF_FLOAT32); hput(w, &v, 4); }
void ds_gguf_w_bool(ds_gguf_writer *w, const char *k, bool v) { uint8_t b = v; key(w, k, DS_GGUF_BOOL); hput(w, &b, 1); }
void ds_gguf_w_str(ds_gguf_writer *w, const char *k, const char *v) { key(w, k, DS_GGUF_STRING); hput_str(w, v); }

void ds_gguf_w_arr(ds_gguf_writer *w, const char *k, ds_gguf_type et, const void *data, uint64_t n) {
    if (et == DS_GGUF_ARRAY || et >= DS_GGUF_TYPE_COUNT || n > DS_GGUF_MAX_ARRAY) {
        wfail(w, "bad array", k);
        w->err = DS_EINVAL;
        return;
    }
    key(w, k, DS_GGUF_ARRAY);
    hput_u32(w, (uint32_t)et);
    hput_u64(w, n);
    if (et == DS_GGUF_STRING) {
        const char *const *s = data;
        for (uint64_t i = 0; i < n; i++) hput_str(w, s[i]);
    } else {
        hput(w, data, (size_t)(n * scalar_size(et)));
    }
}

void ds_gguf_w_copy(ds_gguf_writer *w, const ds_gguf *g, const ds_gguf_kv *kv) {
    key(w, kv->key, kv->type);
    hput(w, g->buf + kv->val_off, (size_t)kv->val_len);
}

int64_t ds_gguf_w_tensor(ds_gguf_writer *w, const char *name, uint32_t type, int ndim, const int64_t *shape, ds_err *e) {
    if (w->begun) return ds_err_set(e, DS_EINVAL, "gguf writer: tensor '%s' declared after the header was written", name);
    size_t nl = strlen(name);
    if (nl == 0 || nl >= DS_GGUF_MAX_NAME)
        return ds_err_set(e, DS_EINVAL, "gguf writer: tensor name '%s' must be 1..%d bytes", name, DS_GGUF_MAX_NAME - 1);
    const ds_ggml_type_info *ti = ds_ggml_type(type);
    if (!ti) return ds_err_set(e, DS_EINVAL, "gguf writer: tensor '%s': unknown ggml type %u", name, type);
    if (ndim < 1 || ndim > DS_GGUF_MAX_DIMS)
        return ds_err_set(e, DS_EINVAL, "gguf writer: tensor '%s' has %d dimensions", name, ndim);
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return ds_err_set(e, DS_EINVAL, "gguf writer: duplicate tensor '%s'", name);
    wtensor t = { 0 };
    uint64_t numel = 1;
    for (int d = 0; d < DS_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < ndim ? shape[ndim - 1 - d] : 1;
        if (t.ne[d] < 1 || __builtin_mul_overflow(numel, (uint64_t)t.ne[d], &numel))
            return ds_err_set(e, DS_EINVAL, "gguf writer: tensor '%s' has a bad shape", name);
    }
    if (t.ne[0] % ti->blck)
        return ds_err_set(e, DS_EINVAL, "gguf writer: tensor '%s': rows of %lld elements are not a multiple of %s's block of %lld",
                          name, (long long)t.ne[0], ti->name, (long long)ti->blck);
    t.type = type;
    t.n_dims = (uint32_t)ndim;
    t.nbytes = numel / (uint64_t)ti->blck * ti->size;
    t.offset = w->data_size;
    w->data_size += (t.nbytes + DS_GGUF_DEFAULT_ALIGNMENT - 1) / DS_GGUF_DEFAULT_ALIGNMENT * DS_GGUF_DEFAULT_ALIGNMENT;
    t.name = strdup(name);
    if (!t.name) return ds_err_set(e, DS_ENOMEM, "out of memory");
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? w->cap_t * 2 : 256;
        wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) { free(t.name); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
        w->t = nt;
        w->cap_t = cap;
    }
    w->t[w->n_t] = t;
    return w->n_t++;
}

uint64_t ds_gguf_w_header_bytes(const ds_gguf_writer *w) {
    uint64_t pos = 24 + w->hdr_len;
    for (int64_t i = 0; i < w->n_t; i++) pos += 8 + strlen(w->t[i].name) + 4 + 8ull * w->t[i].n_dims + 4 + 8;
    return (pos + DS_GGUF_DEFAULT_ALIGNMENT - 1) / DS_GGUF_DEFAULT_ALIGNMENT * DS_GGUF_DEFAULT_ALIGNMENT;
}

uint64_t ds_gguf_w_tensor_bytes(const ds_gguf_writer *w, int64_t i) {
    DS_ASSERT(i >= 0 && i < w->n_t);
    return w->t[i].nbytes;
}

static int flush_buf(ds_gguf_writer *w, ds_err *e) {
    size_t off = 0;
    while (off < w->buf_len) {
        ssize_t n = write(w->fd, w->buf + off, w->buf_len - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return ds_err_set(e, DS_EIO, "%s: write: %s", w->tmp, strerror(errno));
        }
        off += (size_t)n;
    }
    w->buf_len = 0;
    return DS_OK;
}

static int out(ds_gguf_writer *w, const void *p, size_t n, ds_err *e) {
    const uint8_t *s = p;
    while (n > 0) {
        size_t k = DS_MIN(n, WBUF - w->buf_len);
        memcpy(w->buf + w->buf_len, s, k);
        w->buf_len += k;
        s += k;
        n -= k;
        if (w->buf_len == WBUF) {
            int rc = flush_buf(w, e);
            if (rc) return rc;
        }
    }
    return DS_OK;
}

static int out_pad(ds_gguf_writer *w, uint64_t pos, ds_err *e) {
    static const uint8_t zeros[DS_GGUF_DEFAULT_ALIGNMENT];
    size_t pad = (size_t)((DS_GGUF_DEFAULT_ALIGNMENT - pos % DS_GGUF_DEFAULT_ALIGNMENT) % DS_GGUF_DEFAULT_ALIGNMENT);
    return pad ? out(w, zeros, pad, e) : DS_OK;
}

int ds_gguf_writer_begin(ds_gguf_writer *w, const char *path, ds_err *e) {
    if (w->err) return ds_err_set(e, w->err, "gguf writer: %s", w->err_msg);
    if (w->begun) return ds_err_set(e, DS_EINVAL, "gguf writer: already begun");
    size_t len = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(len + 32);
    w->buf = malloc(WBUF);
    if (!w->path || !w->tmp || !w->buf) return ds_err_set(e, DS_ENOMEM, "out of memory");
    snprintf(w->tmp, len + 32, "%s.tmp.%ld", path, (long)getpid());
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int rc = ds_err_set(e, DS_EIO, "%s: %s", w->tmp, strerror(errno));
        free(w->tmp);
        w->tmp = NULL;
        return rc;
    }
    w->begun = true;
    uint32_t magic = DS_GGUF_MAGIC, version = DS_GGUF_VERSION;
    uint64_t nt = (uint64_t)w->n_t, nkv = (uint64_t)w->n_kv;
    int rc;
    if ((rc = out(w, &magic, 4, e)) || (rc = out(w, &version, 4, e)) || (rc = out(w, &nt, 8, e)) ||
        (rc = out(w, &nkv, 8, e)) || (rc = out(w, w->hdr, w->hdr_len, e)))
        return rc;
    uint64_t pos = 24 + w->hdr_len;
    for (int64_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        if ((rc = out(w, &nl, 8, e)) || (rc = out(w, t->name, (size_t)nl, e)) || (rc = out(w, &t->n_dims, 4, e)))
            return rc;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if ((rc = out(w, &t->ne[d], 8, e))) return rc;
        if ((rc = out(w, &t->type, 4, e)) || (rc = out(w, &t->offset, 8, e))) return rc;
        pos += 8 + nl + 4 + 8ull * t->n_dims + 4 + 8;
    }
    if ((rc = out_pad(w, pos, e))) return rc;
    w->cur = 0;
    w->cur_written = 0;
    return DS_OK;
}

int ds_gguf_writer_write(ds_gguf_writer *w, const void *data, size_t n, ds_err *e) {
    if (!w->begun || w->finished) return ds_err_set(e, DS_EINVAL, "gguf writer: not writing");
    if (w->cur >= w->n_t) return ds_err_set(e, DS_EINVAL, "gguf writer: more data than declared tensors");
    wtensor *t = &w->t[w->cur];
    if (n > t->nbytes - w->cur_written)
        return ds_err_set(e, DS_EINVAL, "gguf writer: tensor '%s': %llu bytes written, only %llu declared", t->name,
                          (unsigned long long)(w->cur_written + n), (unsigned long long)t->nbytes);
    int rc = out(w, data, n, e);
    if (rc) return rc;
    w->cur_written += n;
    if (w->cur_written == t->nbytes) {
        if ((rc = out_pad(w, t->nbytes, e))) return rc;
        w->cur++;
        w->cur_written = 0;
    }
    return DS_OK;
}

int ds_gguf_writer_finish(ds_gguf_writer *w, ds_err *e) {
    if (!w->begun || w->finished) return ds_err_set(e, DS_EINVAL, "gguf writer: not writing");
    if (w->cur != w->n_t)
        return ds_err_set(e, DS_EINVAL, "gguf writer: tensor '%s' was not (fully) written", w->t[w->cur].name);
    int rc = flush_buf(w, e);
    if (rc) return rc;
    if (fsync(w->fd) != 0 || close(w->fd) != 0) {
        w->fd = -1;
        return ds_err_set(e, DS_EIO, "%s: fsync/close: %s", w->tmp, strerror(errno));
    }
    w->fd = -1;
    if (rename(w->tmp, w->path) != 0) return ds_err_set(e, DS_EIO, "rename %s -> %s: %s", w->tmp, w->path, strerror(errno));
    w->finished = true;
    return DS_OK;
}
