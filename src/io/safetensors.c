/*
 * safetensors.c - reader, validator and writer for safetensors (see .h).
 */
#include "safetensors.h"
#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* --------------------------------------------------------------- dtypes */

static const struct { const char *name; size_t size; ds_dtype dtype; } k_dtypes[] = {
    { "F32", 4, DS_DTYPE_F32 },      { "F16", 2, DS_DTYPE_F16 },   { "BF16", 2, DS_DTYPE_BF16 },
    { "F8_E4M3", 1, DS_DTYPE_F8_E4M3 }, { "I32", 4, DS_DTYPE_I32 }, { "I64", 8, DS_DTYPE_I64 },
    { "F64", 8, DS_DTYPE_COUNT },    { "F8_E5M2", 1, DS_DTYPE_COUNT }, { "I8", 1, DS_DTYPE_COUNT },
    { "U8", 1, DS_DTYPE_COUNT },     { "I16", 2, DS_DTYPE_COUNT }, { "U16", 2, DS_DTYPE_COUNT },
    { "U32", 4, DS_DTYPE_COUNT },    { "U64", 8, DS_DTYPE_COUNT }, { "BOOL", 1, DS_DTYPE_COUNT },
    { "F8_E8M0", 1, DS_DTYPE_COUNT },   /* V4 release scales: model.c converts them */
};

/* ---------------------------------------------------------------- parse */

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const ds_st_tensor *)a)->name, ((const ds_st_tensor *)b)->name);
}

typedef struct { uint64_t begin, end; const char *name; } span;
static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

static int parse_one(ds_st_tensor *t, const char *name, json_t *v, uint64_t data_size,
                     const char *what, ds_err *e) {
    if (!json_is_object(v)) return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': entry is not an object", what, name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt)) return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': missing or non-string 'dtype'", what, name);
    if (!json_is_array(sh)) return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': missing or non-array 'shape'", what, name);
    if (!json_is_array(off) || json_array_size(off) != 2)
        return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end]", what, name);
    const char *dts = json_string_value(dt);
    size_t esize = 0;
    t->dtype = DS_DTYPE_COUNT;
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (strcmp(dts, k_dtypes[i].name) == 0) { esize = k_dtypes[i].size; t->dtype = k_dtypes[i].dtype; }
    if (esize == 0) return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': unknown dtype '%.20s'", what, name, dts);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dts);
    size_t nd = json_array_size(sh);
    if (nd > DS_ST_MAX_DIMS)
        return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': %zu dimensions (max %d)", what, name, nd, DS_ST_MAX_DIMS);
    t->ndim = (int)nd;
    size_t bytes = esize;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", what, name, i);
        t->shape[i] = json_integer_value(d);
        if (!ds_size_mul(bytes, (size_t)t->shape[i], &bytes))
            return ds_err_set(e, DS_ERANGE, "%s: tensor '%s': size overflows", what, name);
    }
    json_t *b = json_array_get(off, 0), *en = json_array_get(off, 1);
    if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 || json_integer_value(en) < 0)
        return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': data_offsets must be non-negative integers", what, name);
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(en);
    if (t->begin > t->end)
        return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': data_offsets begin %llu > end %llu", what, name,
                          (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_size)
        return ds_err_set(e, DS_ERANGE, "%s: tensor '%s': data_offsets end %llu beyond data size %llu (file truncated?)",
                          what, name, (unsigned long long)t->end, (unsigned long long)data_size);
    if (t->end - t->begin != bytes)
        return ds_err_set(e, DS_EFORMAT, "%s: tensor '%s': %llu bytes stored but dtype %s × shape needs %zu",
                          what, name, (unsigned long long)(t->end - t->begin), dts, bytes);
    return DS_OK;
}

/* The data region must be exactly covered by the tensors of this file, as
 * the format requires (and HF's reader enforces): sorted by offsets, each
 * tensor starts where the previous one ended; no overlap, no hole, no
 * trailing bytes (which would let a file be a polyglot). */
static int check_layout(ds_safetensors *st, int64_t first, uint64_t data_size, const char *what, ds_err *e) {
    int64_t cnt = st->n_tensors - first;
    int rc = DS_OK;
    span *sp = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof *sp);
    if (!sp) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", what);
    for (int64_t i = 0; i < cnt; i++)
        sp[i] = (span){ st->tensors[first + i].begin, st->tensors[first + i].end, st->tensors[first + i].name };
    qsort(sp, (size_t)cnt, sizeof *sp, cmp_span);
    uint64_t pos = 0;
    const span *prev = NULL;
    for (int64_t i = 0; i < cnt && !rc; i++) {
        if (sp[i].begin < pos)
            rc = ds_err_set(e, DS_EFORMAT, "%s: tensors '%s' and '%s' overlap (bytes %llu..%llu and %llu..%llu)",
                            what, prev->name, sp[i].name, (unsigned long long)prev->begin,
                            (unsigned long long)prev->end, (unsigned long long)sp[i].begin,
                            (unsigned long long)sp[i].end);
        else if (sp[i].begin > pos)
            rc = ds_err_set(e, DS_EFORMAT, "%s: bytes %llu..%llu of the data region belong to no tensor (hole before '%s')",
                            what, (unsigned long long)pos, (unsigned long long)sp[i].begin, sp[i].name);
        pos = sp[i].end;
        prev = &sp[i];
    }
    if (!rc && pos != data_size)
        rc = ds_err_set(e, DS_EFORMAT, "%s: %llu trailing bytes after the last tensor (data region %llu bytes, tensors end at %llu)",
                        what, (unsigned long long)(data_size - pos), (unsigned long long)data_size, (unsigned long long)pos);
    free(sp);
    return rc;
}

int ds_safetensors_parse(ds_safetensors *st, const uint8_t *buf, size_t size, int file,
                         const char *what, ds_err *e) {
    if (size < 8) return ds_err_set(e, DS_EFORMAT, "%s: file is %zu bytes, too short for a safetensors header", what, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    if (n > DS_ST_MAX_HEADER)
        return ds_err_set(e, DS_ERANGE, "%s: header length %llu exceeds the %u-byte limit", what,
                          (unsigned long long)n, DS_ST_MAX_HEADER);
    if (n > size - 8)
        return ds_err_set(e, DS_EFORMAT, "%s: header length %llu but file has only %zu bytes after it (truncated)",
                          what, (unsigned long long)n, size - 8);
    json_t *root;
    int rc = ds_json_load_buf(what, (const char *)buf + 8, (size_t)n, &root, e);
    if (rc) return rc;
    if (!json_is_object(root)) {
        json_decref(root);
        return ds_err_set(e, DS_EFORMAT, "%s: header is not a JSON object", what);
    }
    uint64_t data_size = size - 8 - n;
    const uint8_t *data = buf + 8 + n;
    size_t count = json_object_size(root);
    ds_st_tensor *grown = realloc(st->tensors, (size_t)(st->n_tensors + (int64_t)count + 1) * sizeof *grown);
    if (!grown) { json_decref(root); return ds_err_set(e, DS_ENOMEM, "%s: out of memory", what); }
    st->tensors = grown;
    int64_t first = st->n_tensors;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) { rc = ds_err_set(e, DS_EFORMAT, "%s: __metadata__ is not an object", what); break; }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv)
                if (!json_is_string(mv)) {
                    rc = ds_err_set(e, DS_EFORMAT, "%s: __metadata__ value '%.100s' is not a string", what, mk);
                    break;
                }
            if (rc) break;
            continue;
        }
        ds_st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        t->name = strdup(key);
        if (!t->name) { rc = ds_err_set(e, DS_ENOMEM, "%s: out of memory", what); break; }
        st->n_tensors++;
        t->file = file;
        rc = parse_one(t, key, val, data_size, what, e);
        if (rc) break;
        t->data = data + t->begin;
        size_t esz = ds_dtype_size(t->dtype);
        if (esz > 1 && ((uintptr_t)t->data % esz) != 0 && t->end > t->begin) {
            /* misaligned for its element type: keep an aligned private copy */
            t->owned = ds_alloc(t->end - t->begin);
            if (!t->owned) { rc = ds_err_set(e, DS_ENOMEM, "%s: out of memory", what); break; }
            memcpy(t->owned, t->data, t->end - t->begin);
            t->data = t->owned;
        }
    }
    json_decref(root);
    if (rc) return rc;
    return check_layout(st, first, data_size, what, e);
}

static int finish(ds_safetensors *st, ds_err *e) {
    if (st->n_tensors > 1)  /* tensors is NULL for an index with an empty weight_map */
        qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_name);
    for (int64_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0)
            return ds_err_set(e, DS_EFORMAT, "tensor '%s' appears twice (in %s and %s)", st->tensors[i].name,
                              st->files[st->tensors[i - 1].file].map.path, st->files[st->tensors[i].file].map.path);
    return DS_OK;
}

static int add_file(ds_safetensors *st, const char *path, ds_err *e) {
    ds_st_file *grown = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *grown);
    if (!grown) return ds_err_set(e, DS_ENOMEM, "out of memory");
    st->files = grown;
    ds_st_file *f = &st->files[st->n_files];
    memset(f, 0, sizeof *f);
    int rc = ds_mmap_open(&f->map, path, e);
    if (rc) return rc;
    st->n_files++;
    return ds_safetensors_parse(st, f->map.data, f->map.size, st->n_files - 1, path, e);
}

int ds_safetensors_open_file(ds_safetensors *st, const char *path, ds_err *e) {
    memset(st, 0, sizeof *st);
    int rc = add_file(st, path, e);
    if (!rc) rc = finish(st, e);
    if (rc) ds_safetensors_close(st);
    return rc;
}

/* A shard name must be a plain file name inside the model folder. */
static bool safe_shard_name(const char *s) {
    if (!*s || s[0] == '.' || strchr(s, '/') || strchr(s, '\\')) return false;
    return strlen(s) < 256;
}

int ds_safetensors_open_dir(ds_safetensors *st, const char *dir, ds_err *e) {
    memset(st, 0, sizeof *st);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &sb) != 0)
            return ds_err_set(e, DS_ENOTFOUND, "%s: no model.safetensors or model.safetensors.index.json", dir);
        return ds_safetensors_open_file(st, path, e);
    }
    json_t *idx;
    int rc = ds_json_load_file(path, DS_JSON_MAX_BYTES, &idx, e);
    if (rc) return rc;
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(idx);
        return ds_err_set(e, DS_EFORMAT, "%s: missing object 'weight_map'", path);
    }
    /* open each distinct shard once, in first-seen order */
    const char **names = NULL;
    int n_names = 0;
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) { rc = ds_err_set(e, DS_EFORMAT, "%s: weight_map['%s'] is not a string", path, key); break; }
        const char *fn = json_string_value(val);
        if (!safe_shard_name(fn)) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: weight_map['%s'] names '%s', which is not a file inside the model folder",
                            path, key, fn);
            break;
        }
        int seen = 0;
        for (int i = 0; i < n_names; i++) if (strcmp(names[i], fn) == 0) { seen = 1; break; }
        if (seen) continue;
        const char **g = realloc(names, (size_t)(n_names + 1) * sizeof *g);
        if (!g) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); break; }
        names = g;
        names[n_names++] = fn;
    }
    for (int i = 0; !rc && i < n_names; i++) {
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/%s", dir, names[i]);
        rc = add_file(st, sp, e);
    }
    free(names);
    if (!rc) rc = finish(st, e);
    /* every index entry must exist in the shard it names */
    if (!rc) {
        json_object_foreach(wm, key, val) {
            ds_st_tensor *t = ds_safetensors_find(st, key);
            const char *fn = json_string_value(val);
            if (!t) { rc = ds_err_set(e, DS_ENOTFOUND, "%s: tensor '%s' listed in the index is not in %s", path, key, fn); break; }
            const char *p = st->files[t->file].map.path, *slash = strrchr(p, '/');
            if (strcmp(slash ? slash + 1 : p, fn) != 0) {
                rc = ds_err_set(e, DS_EFORMAT, "%s: tensor '%s' is listed in %s but stored in %s", path, key, fn, p);
                break;
            }
        }
    }
    json_decref(idx);
    if (rc) ds_safetensors_close(st);
    return rc;
}

void ds_safetensors_close(ds_safetensors *st) {
    if (!st) return;
    for (int64_t i = 0; i < st->n_tensors; i++) {
        free(st->tensors[i].name);
        ds_free(st->tensors[i].owned);
    }
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) ds_mmap_close(&st->files[i].map);
    free(st->files);
    memset(st, 0, sizeof *st);
}

ds_st_tensor *ds_safetensors_find(const ds_safetensors *st, const char *name) {
    int64_t lo = 0, hi = st->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

void ds_st_view(const ds_st_tensor *t, ds_tensor *out) {
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->dtype = t->dtype;
    out->ndim = t->ndim > DS_MAX_DIMS ? DS_MAX_DIMS : t->ndim;
    for (int i = 0; i < out->ndim; i++) out->shape[i] = t->shape[i];
    out->data = t->data;
    out->nbytes = t->end - t->begin;
}

/* --------------------------------------------------------------- writer */

int ds_safetensors_write(const char *path, const ds_st_write_item *items, int64_t n,
                         const char *metadata_json, ds_err *e) {
    json_t *hdr = json_object();
    if (!hdr) return ds_err_set(e, DS_ENOMEM, "out of memory");
    if (metadata_json) {
        json_t *md;
        int rc = ds_json_load_buf("metadata", metadata_json, strlen(metadata_json), &md, e);
        if (rc) { json_decref(hdr); return rc; }
        json_object_set_new(hdr, "__metadata__", md);
    }
    /* data is laid out widest dtype first so every tensor stays aligned
     * (the format allows no gaps between tensors) */
    int64_t *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    if (!order) { json_decref(hdr); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    int64_t m = 0;
    for (size_t sz = 8; sz >= 1; sz /= 2)
        for (int64_t i = 0; i < n; i++) if (ds_dtype_size(items[i].dtype) == sz) order[m++] = i;
    DS_ASSERT(m == n);
    uint64_t off = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = order[k];
        size_t bytes = ds_dtype_size(items[i].dtype);
        json_t *shape = json_array();
        for (int d = 0; d < items[i].ndim; d++) {
            bytes *= (size_t)items[i].shape[d];
            json_array_append_new(shape, json_integer(items[i].shape[d]));
        }
        json_t *t = json_pack("{s:s, s:o, s:[I,I]}", "dtype", ds_dtype_name(items[i].dtype), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + bytes));
        json_object_set_new(hdr, items[i].name, t);
        off += bytes;
    }
    char *js = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(hdr);
    if (!js) { free(order); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    size_t hl = strlen(js), padded = (hl + 7) & ~(size_t)7;
    size_t total = 8 + padded + off;
    uint8_t *buf = malloc(total);
    if (!buf) { free(js); free(order); return ds_err_set(e, DS_ENOMEM, "%s: out of memory (%zu bytes)", path, total); }
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, js, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    free(js);
        uint8_t *p = buf + 8 + padded;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = order[k];
        size_t bytes = ds_dtype_size(items[i].dtype);
        for (int d = 0; d < items[i].ndim; d++) bytes *= (size_t)items[i].shape[d];
        if (bytes) memcpy(p, items[i].data, bytes);
        p += bytes;
    }
    free(order);
    int rc = ds_write_file_atomic(path, buf, total, e);
    free(buf);
    return rc;
}
