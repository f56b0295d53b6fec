/*
 * data.c - token shards and the deterministic batch loader (see data.h).
 */
#include "data.h"
#include "../core/rng.h"
#include "../io/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- shards */

static uint64_t rd64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

int ds_shard_write(const char *path, const int32_t *tok, int64_t n, int64_t vocab_size, ds_err *e) {
    int bytes = vocab_size <= 65536 ? 2 : 4;
    size_t total = DS_SHARD_HEADER + (size_t)n * (size_t)bytes;
    uint8_t *buf = calloc(1, total);
    if (!buf) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", path);
    memcpy(buf, DS_SHARD_MAGIC, 8);
    wr32(buf + 8, 1);
    wr32(buf + 12, (uint32_t)bytes);
    wr64(buf + 16, (uint64_t)n);
    wr64(buf + 24, (uint64_t)vocab_size);
    uint8_t *p = buf + DS_SHARD_HEADER;
    for (int64_t i = 0; i < n; i++) {
        uint32_t t = (uint32_t)tok[i];
        for (int b = 0; b < bytes; b++) *p++ = (uint8_t)(t >> (8 * b));
    }
    int rc = ds_write_file_atomic(path, buf, total, e);
    free(buf);
    return rc;
}

static int shard_open(ds_shard *s, const char *path, int64_t vocab, ds_err *e) {
    memset(s, 0, sizeof *s);
    int rc = ds_mmap_open(&s->map, path, e);
    if (rc) return rc;
    const uint8_t *h = s->map.data;
    if (s->map.size < DS_SHARD_HEADER || memcmp(h, DS_SHARD_MAGIC, 8) != 0)
        return ds_err_set(e, DS_EFORMAT, "%s: not a token shard (bad magic)", path);
    if (rd32(h + 8) != 1) return ds_err_set(e, DS_EUNSUPPORTED, "%s: shard version %u is not supported", path, rd32(h + 8));
    s->bytes = (int)rd32(h + 12);
    uint64_t n = rd64(h + 16), v = rd64(h + 24);
    if (s->bytes != 2 && s->bytes != 4) return ds_err_set(e, DS_EFORMAT, "%s: %d bytes per token", path, s->bytes);
    if (n > (s->map.size - DS_SHARD_HEADER) / (uint64_t)s->bytes || DS_SHARD_HEADER + n * (uint64_t)s->bytes != s->map.size)
        return ds_err_set(e, DS_EFORMAT, "%s: header says %llu tokens but the file has %zu bytes", path,
                          (unsigned long long)n, s->map.size);
    if ((int64_t)v != vocab)
        return ds_err_set(e, DS_EFORMAT, "%s: vocab size %llu differs from data.json's %lld", path, (unsigned long long)v,
                          (long long)vocab);
    s->n = (int64_t)n;
    s->tok = h + DS_SHARD_HEADER;
    for (int64_t i = 0; i < s->n; i++) {   /* validate once: the loader trusts ids afterwards */
        uint32_t t = s->bytes == 2 ? (uint32_t)(s->tok[2 * i] | s->tok[2 * i + 1] << 8) : rd32(s->tok + 4 * i);
        if ((int64_t)t >= vocab)
            return ds_err_set(e, DS_ERANGE, "%s: token %u at %lld is >= vocab size %lld", path, t, (long long)i, (long long)vocab);
    }
    return DS_OK;
}

static inline int32_t shard_tok(const ds_shard *s, int64_t i) {
    const uint8_t *p = s->tok + i * s->bytes;
    return s->bytes == 2 ? (int32_t)(p[0] | p[1] << 8) : (int32_t)rd32(p);
}

static int open_list(ds_data *d, json_t *arr, ds_shard **out, int *n, int64_t *tokens, const char *what, ds_err *e) {
    *n = 0;
    *tokens = 0;
    if (!json_is_array(arr)) return ds_err_set(e, DS_EFORMAT, "%s/data.json: '%s' must be a list of shard files", d->dir, what);
    size_t k = json_array_size(arr);
    *out = calloc(k ? k : 1, sizeof(ds_shard));
    if (!*out) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (size_t i = 0; i < k; i++) {
        const char *f = json_string_value(json_array_get(arr, i));
        if (!f || strchr(f, '/') || f[0] == '.')
            return ds_err_set(e, DS_EFORMAT, "%s/data.json: bad shard name in '%s'", d->dir, what);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", d->dir, f);
        int rc = shard_open(&(*out)[i], path, d->vocab_size, e);
        (*n)++;
        if (rc) return rc;
        *tokens += (*out)[i].n;
    }
    return DS_OK;
}

int ds_data_open(ds_data *d, const char *dir, ds_err *e) {
    memset(d, 0, sizeof *d);
    d->dir = strdup(dir);
    if (!d->dir) return ds_err_set(e, DS_ENOMEM, "out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/data.json", dir);
    json_t *j;
    int rc = ds_json_load_file(path, 16u << 20, &j, e);
    if (rc) return rc;
    if ((rc = ds_json_get_int(j, path, "vocab_size", true, 1, 1 << 30, &d->vocab_size, e))) goto done;
    if ((rc = open_list(d, json_object_get(j, "train"), &d->train, &d->n_train, &d->train_tokens, "train", e))) goto done;
    if ((rc = open_list(d, json_object_get(j, "val"), &d->val, &d->n_val, &d->val_tokens, "val", e))) goto done;
    if (d->train_tokens < 2) rc = ds_err_set(e, DS_EINVAL, "%s: no training tokens", dir);
done:
    json_decref(j);
    return rc;
}

void ds_data_close(ds_data *d) {
    if (!d) return;
    for (int i = 0; i < d->n_train; i++) ds_mmap_close(&d->train[i].map);
    for (int i = 0; i < d->n_val; i++) ds_mmap_close(&d->val[i].map);
    free(d->train);
    free(d->val);
    free(d->order);
    free(d->win_start);
    free(d->dir);
    memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- loader */

static int begin_epoch(ds_data *d, ds_err *e) {
    ds_rng r;
    ds_rng_seed(&r, d->seed * 0x9E3779B97F4A7C15ull + (uint64_t)d->epoch + 1);
    int64_t stride = d->T - 1;
    d->shift = (int64_t)(ds_rng_u64(&r) % (uint64_t)stride);
    int64_t total = 0;
    for (int s = 0; s < d->n_train; s++) {
        d->win_start[s] = total;
        int64_t usable = d->train[s].n - d->shift;
        int64_t nw = usable >= d->T ? (usable - 1) / stride : 0;
        total += nw;
    }
    d->win_start[d->n_train] = total;
    if (total == 0) {
        /* shards shorter than T + shift: retry without the shift */
        d->shift = 0;
        total = 0;
        for (int s = 0; s < d->n_train; s++) {
            d->win_start[s] = total;
            total += d->train[s].n >= d->T ? (d->train[s].n - 1) / stride : 0;
        }
        d->win_start[d->n_train] = total;
        if (total == 0)
            return ds_err_set(e, DS_EINVAL, "%s: no training shard holds a window of %lld tokens", d->dir, (long long)d->T);
    }
    int64_t *o = realloc(d->order, (size_t)total * sizeof *o);
    if (!o) return ds_err_set(e, DS_ENOMEM, "out of memory for %lld windows", (long long)total);
    d->order = o;
    d->n_windows = total;
    for (int64_t i = 0; i < total; i++) o[i] = i;
    for (int64_t i = total - 1; i > 0; i--) {   /* Fisher-Yates */
        int64_t j = (int64_t)(ds_rng_u64(&r) % (uint64_t)(i + 1));
        int64_t t = o[i]; o[i] = o[j]; o[j] = t;
    }
    return DS_OK;
}

int ds_data_start(ds_data *d, int64_t T, uint64_t seed, int64_t epoch, int64_t pos, ds_err *e) {
    if (T < 2) return ds_err_set(e, DS_EINVAL, "sequence length must be >= 2");
    d->T = T;
    d->seed = seed;
    d->epoch = epoch;
    free(d->win_start);
    d->win_start = calloc((size_t)d->n_train + 1, sizeof(int64_t));
    if (!d->win_start) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int rc = begin_epoch(d, e);
    if (rc) return rc;
    if (pos < 0 || pos > d->n_windows)
        return ds_err_set(e, DS_ERANGE, "data position %lld is outside epoch %lld's %lld windows", (long long)pos,
                          (long long)epoch, (long long)d->n_windows);
    d->pos = pos;
    return DS_OK;
}

int ds_data_next(ds_data *d, int32_t *out, int64_t B, ds_err *e) {
    for (int64_t b = 0; b < B; b++) {
        if (d->pos >= d->n_windows) {
            d->epoch++;
            d->pos = 0;
            int rc = begin_epoch(d, e);
            if (rc) return rc;
        }
        int64_t w = d->order[d->pos++];
        int s = 0;
        while (d->win_start[s + 1] <= w) s++;
        int64_t off = d->shift + (w - d->win_start[s]) * (d->T - 1);
        for (int64_t t = 0; t < d->T; t++) out[b * d->T + t] = shard_tok(&d->train[s], off + t);
    }
    return DS_OK;
}

int64_t ds_data_val_windows(const ds_data *d, int64_t T, int64_t n_seq, int32_t *out) {
    int64_t k = 0;
    for (int s = 0; s < d->n_val && k < n_seq; s++)
        for (int64_t off = 0; off + T <= d->val[s].n && k < n_seq; off += T - 1, k++)
            for (int64_t t = 0; t < T; t++) out[k * T + t] = shard_tok(&d->val[s], off + t);
    return k;
}

/* ---------------------------------------------------------------- byte tokenizer */

static int put_utf8(char *o, uint32_t c) {
    if (c < 0x80) { o[0] = (char)c; return 1; }
    o[0] = (char)(0xC0 | (c >> 6));
    o[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

char *ds_byte_tokenizer_json(void) {
    /* GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to 256+n */
    uint32_t cp[256];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    json_t *vocab = json_object();
    for (int b = 0; b < 256; b++) {
        char s[8] = { 0 };
        put_utf8(s, cp[b]);
        json_object_set_new(vocab, s, json_integer(b));
    }
    json_t *added = json_array();
    const char *names[2] = { "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                             "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>" };
    for (int i = 0; i < 2; i++)
        json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", 256 + i, "content", names[i],
                                               "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1));
    json_t *root = json_pack(
        "{s:s, s:n, s:n, s:o, s:n, s:{s:s, s:b, s:b, s:b}, s:n, s:{s:s, s:b, s:b, s:b},"
        " s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:[]}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
        "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0,
        "post_processor",
        "decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1,
        "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
        "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges");
    if (!root) return NULL;
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(root);
    return s;
}
