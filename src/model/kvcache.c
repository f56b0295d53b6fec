/*
 * kvcache.c - the attention cache of one sequence (see model.h), one row
 * layout per layer (width[l], row_bytes[l]). MLA layers store per
 * position c (Rkv, after kv_a_layernorm) then k_pe (Dr, after RoPE). Grows by doubling up to max_ctx. Optional quantized rows
 * (Q8 / FP8 with per-block fp32 scales) cut its memory ~3.6x; BF16 rows
 * (ds_bf16_round_row) halve it and are read as they are by flash decode;
 * I8 rows (one scale per part of the row: c, k_pe, a DSA index key, plus
 * each part's code sum) are too, by the int8 flash decode (attn_i8.c).
 * DeepSeek-V4 caches keep no rows per position: kvcache_v4.c holds their
 * state, and this file's entry points hand V4 caches over to it.
 */
#include "model.h"
#include "model_internal.h"
#include "../tensor/ops.h"
#include "../core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KV_Q8_BLOCK 32
#define KV_FP8_BLOCK 64

/* ------------------------------------------------------- row formats */

size_t ds_kv_row_bytes(ds_kv_type t, int64_t width) {
    switch (t) {
    case DS_KV_Q8: return (size_t)((width + KV_Q8_BLOCK - 1) / KV_Q8_BLOCK) * 4 + (size_t)width;
    case DS_KV_FP8: return (size_t)((width + KV_FP8_BLOCK - 1) / KV_FP8_BLOCK) * 4 + (size_t)width;
    case DS_KV_BF16: return (size_t)width * 2;
    case DS_KV_I8: return DS_KV_I8_HEAD + (size_t)width;
    default: return (size_t)width * sizeof(float);
    }
}

int ds_kv_type_from_name(const char *s) {
    if (!strcmp(s, "f32")) return DS_KV_F32;
    if (!strcmp(s, "q8") || !strcmp(s, "q8_0")) return DS_KV_Q8;
    if (!strcmp(s, "fp8") || !strcmp(s, "f8")) return DS_KV_FP8;
    if (!strcmp(s, "bf16")) return DS_KV_BF16;
    if (!strcmp(s, "i8") || !strcmp(s, "int8")) return DS_KV_I8;
    return -1;
}

const char *ds_kv_type_name(ds_kv_type t) {
    return t == DS_KV_Q8 ? "q8" : t == DS_KV_FP8 ? "fp8" : t == DS_KV_BF16 ? "bf16" : t == DS_KV_I8 ? "i8" : "f32";
}

/* I8 layout: scales d[3] (fp32), code sums s[3] (int32), then the codes;
 * part p covers [b[p], b[p+1]) with b = 0, Rkv, Rkv + Dr, W (clamped to W).
 * code = nearbyint(x / d) with d = max|x| / 127 over the part (|code| <= 127). */
static void i8_bounds(const ds_kvcache *c, int64_t W, int64_t b[4]) {
    b[0] = 0;
    b[1] = DS_MIN(W, c->i8_part[0]);
    b[2] = DS_MIN(W, c->i8_part[1]);
    b[3] = W;
}

static void quant_row_i8(const ds_kvcache *c, const float *x, int64_t W, uint8_t *out) {
    int64_t b[4];
    i8_bounds(c, W, b);
    int8_t *q = (int8_t *)(out + DS_KV_I8_HEAD);
    for (int p = 0; p < 3; p++) {
        float amax = 0;
        for (int64_t i = b[p]; i < b[p + 1]; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0;
        int32_t sum = 0;
        for (int64_t i = b[p]; i < b[p + 1]; i++) {
            float v = nearbyintf(x[i] * id);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;   /* x·(1/d) may round just past 127 */
            q[i] = (int8_t)v;
            sum += q[i];
        }
        memcpy(out + 4 * p, &d, 4);
        memcpy(out + 12 + 4 * p, &sum, 4);
    }
}

static void dequant_row_i8(const ds_kvcache *c, const uint8_t *in, int64_t W, float *y) {
    int64_t b[4];
    i8_bounds(c, W, b);
    const int8_t *q = (const int8_t *)(in + DS_KV_I8_HEAD);
    for (int p = 0; p < 3; p++) {
        float d;
        memcpy(&d, in + 4 * p, 4);
        for (int64_t i = b[p]; i < b[p + 1]; i++) y[i] = d * (float)q[i];
    }
}

/* layout: fp32 scales of all blocks, then the codes */
static void quant_row(ds_kv_type t, const float *x, int64_t W, uint8_t *out) {
    int64_t B = t == DS_KV_Q8 ? KV_Q8_BLOCK : KV_FP8_BLOCK, nb = (W + B - 1) / B;
    float *sc = (float *)out;
    uint8_t *q = out + 4 * nb;
    for (int64_t b = 0; b < nb; b++) {
        int64_t i0 = b * B, i1 = DS_MIN(W, i0 + B);
        float amax = 0;
        for (int64_t i = i0; i < i1; i++) amax = fmaxf(amax, fabsf(x[i]));
        if (t == DS_KV_Q8) {
            float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0;
            memcpy(&sc[b], &d, 4);
            for (int64_t i = i0; i < i1; i++) q[i] = (uint8_t)(int8_t)nearbyintf(x[i] * id);
        } else {
            float d = amax / 448.0f, id = d > 0 ? 1.0f / d : 0;
            memcpy(&sc[b], &d, 4);
            for (int64_t i = i0; i < i1; i++) q[i] = ds_f32_to_fp8_e4m3(x[i] * id);
        }
    }
}

static void dequant_row(const ds_kvcache *c, ds_kv_type t, const uint8_t *in, int64_t W, float *y) {
    if (t == DS_KV_I8) {
        dequant_row_i8(c, in, W, y);
        return;
    }
    if (t == DS_KV_BF16) {
        const uint16_t *b = (const uint16_t *)in;
        for (int64_t i = 0; i < W; i++) y[i] = ds_bf16_to_f32(b[i]);
        return;
    }
    ds_kv_dequant_row(y, in, W, t == DS_KV_Q8 ? KV_Q8_BLOCK : KV_FP8_BLOCK, t == DS_KV_FP8);
}

/* bytes of a stored row of layer l (hand-built views: fp32, no row_bytes) */
static size_t row_bytes(const ds_kvcache *c, int64_t l) {
    return c->row_bytes ? c->row_bytes[l] : (size_t)c->width[l] * sizeof(float);
}

int ds_kvcache_set_type(ds_kvcache *c, ds_kv_type t, ds_err *e) {
    if (t != DS_KV_F32 && t != DS_KV_Q8 && t != DS_KV_FP8 && t != DS_KV_BF16 && t != DS_KV_I8) return ds_err_set(e, DS_EINVAL, "unknown KV cache type %d", (int)t);
    if (c->cap > 0) return ds_err_set(e, DS_EINVAL, "the KV cache type must be set before first use");
    if (!c->row_bytes) return ds_err_set(e, DS_EINVAL, "a KV cache view has no storage type");
    c->type = t;
    for (int64_t l = 0; l < c->n_layer; l++) c->row_bytes[l] = ds_kv_row_bytes(t, c->width[l]);
    if (t != DS_KV_F32 && !c->kvq) {
        ds_dtype_init();
        c->kvq = calloc((size_t)c->n_layer, sizeof *c->kvq);
        if (!c->kvq) return ds_err_set(e, DS_ENOMEM, "out of memory");
    }
    return DS_OK;
}

void ds_kvcache_write_row(ds_kvcache *c, int64_t l, int64_t pos, const float *row) {
    DS_ASSERT(pos >= 0 && pos < c->cap);
    int64_t W = c->width[l];
    if (c->type == DS_KV_F32) memcpy(c->kv[l] + pos * W, row, (size_t)W * sizeof(float));
    else if (c->type == DS_KV_BF16) ds_bf16_round_row((uint16_t *)(c->kvq[l] + (size_t)pos * c->row_bytes[l]), row, W);
    else if (c->type == DS_KV_I8) quant_row_i8(c, row, W, c->kvq[l] + (size_t)pos * c->row_bytes[l]);
    else quant_row(c->type, row, W, c->kvq[l] + (size_t)pos * c->row_bytes[l]);
}

const float *ds_kvcache_rows_f32(const ds_kvcache *c, int64_t l, int64_t n, float *scratch) {
    if (c->type == DS_KV_F32) return c->kv[l];
    int64_t W = c->width[l];
    for (int64_t i = 0; i < n; i++) dequant_row(c, c->type, c->kvq[l] + (size_t)i * c->row_bytes[l], W, scratch + i * W);
    return scratch;
}

const float *ds_kvcache_rows_f32_at(const ds_kvcache *c, int64_t l, int64_t j0, int64_t n, float *scratch) {
    int64_t W = c->width[l];
    if (c->type == DS_KV_F32) return c->kv[l] + j0 * W;
    for (int64_t i = 0; i < n; i++)
        dequant_row(c, c->type, c->kvq[l] + (size_t)(j0 + i) * c->row_bytes[l], W, scratch + i * W);
    return scratch;
}

const uint16_t *ds_kvcache_rows_bf16_at(const ds_kvcache *c, int64_t l, int64_t j0) {
    DS_ASSERT(c->type == DS_KV_BF16);
    return (const uint16_t *)(c->kvq[l] + (size_t)j0 * c->row_bytes[l]);
}

const uint8_t *ds_kvcache_rows_i8_at(const ds_kvcache *c, int64_t l, int64_t j0) {
    DS_ASSERT(c->type == DS_KV_I8);
    return c->kvq[l] + (size_t)j0 * c->row_bytes[l];
}

int ds_kvcache_init(ds_kvcache *c, const ds_model *m, int64_t max_ctx, ds_err *e) {
    memset(c, 0, sizeof *c);
    if (max_ctx < 1) return ds_err_set(e, DS_EINVAL, "context size must be >= 1");
    c->n_layer = m->cfg.n_layer + m->n_mtp;
    c->max_ctx = max_ctx;
    c->kv = calloc((size_t)c->n_layer, sizeof *c->kv);
    c->width = calloc((size_t)c->n_layer, sizeof *c->width);
    c->row_bytes = calloc((size_t)c->n_layer, sizeof *c->row_bytes);
    if (!c->kv || !c->width || !c->row_bytes) { ds_kvcache_free(c); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    c->type = DS_KV_F32;
    c->i8_part[0] = m->cfg.kv_lora_rank;
    c->i8_part[1] = m->cfg.kv_lora_rank + m->cfg.qk_rope_head_dim;
    for (int64_t l = 0; l < c->n_layer; l++) {
        c->width[l] = ds_config_kv_width(&m->cfg, l);
        c->row_bytes[l] = ds_kv_row_bytes(DS_KV_F32, c->width[l]);
    }
    if (m->cfg.arch == DS_ARCH_V4) {
        int rc = ds_v4cache_init(c, &m->cfg, e);
        if (rc) { ds_kvcache_free(c); return rc; }
    }
    return DS_OK;
}

void ds_kvcache_free(ds_kvcache *c) {
    if (!c) return;
    ds_v4cache_free(c);
    if (c->kv)
        for (int64_t l = 0; l < c->n_layer; l++) ds_free(c->kv[l]);
    if (c->kvq)
        for (int64_t l = 0; l < c->n_layer; l++) ds_free(c->kvq[l]);
    free(c->kv);
    free(c->kvq);
    free(c->width);
    free(c->row_bytes);
    memset(c, 0, sizeof *c);
}

void ds_kvcache_clear(ds_kvcache *c) {
    c->n_past = c->mtp_n_past = 0;
    if (c->v4) ds_v4cache_clear(c);
}

bool ds_kvcache_can_truncate(const ds_kvcache *c, int64_t n) {
    if (!c->v4 || n <= 0) return true;
    if (n > c->n_past) n = c->n_past;   /* (a failed forward may have moved the rings past n_past: checked too) */
    for (int64_t l = 0; l < c->n_layer; l++)   /* an MTP layer keeps min(n, mtp_n_past) */
        if (!ds_v4cache_holds(&c->v4[l], c->v4[l].mtp ? DS_MIN(n, c->mtp_n_past) : n)) return false;
    return true;
}

int64_t ds_kvcache_truncate(ds_kvcache *c, int64_t n) {
    if (n < 0) n = 0;
    /* V4: the rings no longer hold what position n reads, or nothing is kept
     * (the rings' bounds must go too, or a refill in chunks reads stale ones) */
    if (!ds_kvcache_can_truncate(c, n) || (c->v4 && n == 0)) {
        ds_kvcache_clear(c);
        return 0;
    }
    if (n < c->n_past) c->n_past = n;
    if (n < c->mtp_n_past) c->mtp_n_past = n;
    return c->n_past;
}

int ds_kvcache_reserve(ds_kvcache *c, int64_t upto, ds_err *e) {
    if (upto > c->max_ctx)
        return ds_err_set(e, DS_ERANGE, "context full: %lld positions needed, the context holds %lld",
                          (long long)upto, (long long)c->max_ctx);
    if (upto <= c->cap) return DS_OK;
    int64_t cap = c->cap ? c->cap : 256;
    while (cap < upto) cap *= 2;
    if (cap > c->max_ctx) cap = c->max_ctx;
    if (c->v4) {   /* rings (once) and entries: kvcache_v4.c */
        int rc = ds_v4cache_reserve(c, cap, e);
        if (!rc) c->cap = cap;
        return rc;
    }
    for (int64_t l = 0; l < c->n_layer; l++) {
        size_t rb = row_bytes(c, l);
        uint8_t *nb = ds_alloc((size_t)cap * rb);
        if (!nb) return ds_err_set(e, DS_ENOMEM, "out of memory growing the KV cache to %lld positions", (long long)cap);
        if (c->type == DS_KV_F32) {
            if (c->kv[l]) memcpy(nb, c->kv[l], (size_t)c->cap * rb);
            ds_free(c->kv[l]);
            c->kv[l] = (float *)nb;
        } else {
            if (c->kvq[l]) memcpy(nb, c->kvq[l], (size_t)c->cap * rb);
            ds_free(c->kvq[l]);
            c->kvq[l] = nb;
        }
    }
    c->cap = cap;
    return DS_OK;
}

int64_t ds_kvcache_bytes_per_token(const ds_model *m) {
    int64_t n = 0;
    for (int64_t l = 0; l < m->cfg.n_layer; l++) n += ds_config_kv_width(&m->cfg, l);
    return n * (int64_t)sizeof(float);
}

int64_t ds_kvcache_bytes_per_pos(const ds_kvcache *c, int64_t n_layers) {
    int64_t n = 0;
    for (int64_t l = 0; l < n_layers && l < c->n_layer; l++) n += (int64_t)row_bytes(c, l);
    return n;
}

int ds_kvcache_fill_synthetic(ds_kvcache *c, int64_t n, uint64_t seed, ds_err *e) {
    if (c->n_past || c->mtp_n_past) return ds_err_set(e, DS_EINVAL, "a synthetic fill needs an empty cache");
    int rc = ds_kvcache_reserve(c, n, e);
    if (rc) return rc;
    if (c->v4) {
        ds_v4cache_fill_synthetic(c, n, seed);
    } else {
        int64_t Wmax = 0;
        for (int64_t l = 0; l < c->n_layer; l++) Wmax = DS_MAX(Wmax, c->width[l]);
        float *row = malloc((size_t)DS_MAX(Wmax, 1) * sizeof(float));
        if (!row) return ds_err_set(e, DS_ENOMEM, "out of memory");
        ds_rng r;
        ds_rng_seed(&r, seed);
        for (int64_t l = 0; l < c->n_layer; l++)
            for (int64_t p = 0; p < n; p++) {
                for (int64_t i = 0; i < c->width[l]; i++) row[i] = (float)ds_rng_uniform(&r) - 0.5f;
                ds_kvcache_write_row(c, l, p, row);
            }
        free(row);
    }
    c->n_past = n;
    return DS_OK;
}

int64_t ds_kvcache_bytes(const ds_kvcache *c) {
    if (c->v4) return ds_v4cache_bytes(c);
    int64_t b = 0;
    for (int64_t l = 0; l < c->n_layer; l++) b += c->cap * (int64_t)row_bytes(c, l);
    return b;
}

int64_t ds_kvcache_uniform_width(const ds_kvcache *c) {
    if (c->v4) return -1;   /* no rows per position */
    for (int64_t l = 1; l < c->n_layer; l++)
        if (c->width[l] != c->width[0]) return -1;
    return c->n_layer > 0 ? c->width[0] : 0;
}

int ds_kvcache_copy_prefix(ds_kvcache *dst, const ds_kvcache *src, int64_t n, ds_err *e) {
    bool same = dst->n_layer == src->n_layer;
    for (int64_t l = 0; same && l < dst->n_layer; l++) same = dst->width[l] == src->width[l];
    if (!same) return ds_err_set(e, DS_EINVAL, "KV caches of different models");
    if (dst->type != src->type)
        return ds_err_set(e, DS_EINVAL, "KV caches of different types (%s vs %s)", ds_kv_type_name(dst->type),
                          ds_kv_type_name(src->type));
    if (n < 0 || n > src->n_past) return ds_err_set(e, DS_ERANGE, "prefix of %lld positions, source holds %lld",
                                                   (long long)n, (long long)src->n_past);
    if (src->v4 || dst->v4) {
        int rc = src->v4 && dst->v4 ? ds_v4cache_copy(dst, src, n, e)
                                    : ds_err_set(e, DS_EINVAL, "KV caches of different models");
        if (rc) return rc;
        dst->n_past = n;
        dst->mtp_n_past = 0;
        return DS_OK;
    }
    int rc = ds_kvcache_reserve(dst, n, e);
    if (rc) return rc;
    for (int64_t l = 0; l < dst->n_layer; l++) {
        if (n <= 0) continue;
        if (dst->type == DS_KV_F32) memcpy(dst->kv[l], src->kv[l], (size_t)n * (size_t)dst->width[l] * sizeof(float));
        else memcpy(dst->kvq[l], src->kvq[l], (size_t)n * row_bytes(dst, l));
    }
    dst->n_past = n;
    dst->mtp_n_past = 0;
    return DS_OK;
}
