/*
 * kvcache.c - the MLA latent cache of one sequence (see model.h).
 * Per layer and position: c (Rkv, after kv_a_layernorm) then k_pe (Dr,
 * after RoPE). Grows by doubling up to max_ctx.
 */
#include "model.h"
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>

int ds_kvcache_init(ds_kvcache *c, const ds_model *m, int64_t max_ctx, ds_err *e) {
    memset(c, 0, sizeof *c);
    if (max_ctx < 1) return ds_err_set(e, DS_EINVAL, "context size must be >= 1");
    c->n_layer = m->cfg.n_layer + m->n_mtp;
    c->width = m->cfg.kv_lora_rank + m->cfg.qk_rope_head_dim;
    c->max_ctx = max_ctx;
    c->kv = calloc((size_t)c->n_layer, sizeof *c->kv);
    if (!c->kv) return ds_err_set(e, DS_ENOMEM, "out of memory");
    return DS_OK;
}

void ds_kvcache_free(ds_kvcache *c) {
    if (!c) return;
    if (c->kv)
        for (int64_t l = 0; l < c->n_layer; l++) ds_free(c->kv[l]);
    free(c->kv);
    memset(c, 0, sizeof *c);
}

void ds_kvcache_clear(ds_kvcache *c) { c->n_past = c->mtp_n_past = 0; }

void ds_kvcache_truncate(ds_kvcache *c, int64_t n) {
    if (n < c->n_past) c->n_past = n < 0 ? 0 : n;
    if (n < c->mtp_n_past) c->mtp_n_past = n < 0 ? 0 : n;
}

int ds_kvcache_reserve(ds_kvcache *c, int64_t upto, ds_err *e) {
    if (upto > c->max_ctx)
        return ds_err_set(e, DS_ERANGE, "context full: %lld positions needed, the context holds %lld",
                          (long long)upto, (long long)c->max_ctx);
    if (upto <= c->cap) return DS_OK;
    int64_t cap = c->cap ? c->cap : 256;
    while (cap < upto) cap *= 2;
    if (cap > c->max_ctx) cap = c->max_ctx;
    for (int64_t l = 0; l < c->n_layer; l++) {
        float *nb = ds_alloc((size_t)cap * (size_t)c->width * sizeof(float));
        if (!nb) return ds_err_set(e, DS_ENOMEM, "out of memory growing the KV cache to %lld positions", (long long)cap);
        if (c->kv[l]) memcpy(nb, c->kv[l], (size_t)c->cap * (size_t)c->width * sizeof(float));
        ds_free(c->kv[l]);
        c->kv[l] = nb;
    }
    c->cap = cap;
    return DS_OK;
}

int64_t ds_kvcache_bytes_per_token(const ds_model *m) {
    return (m->cfg.kv_lora_rank + m->cfg.qk_rope_head_dim) * m->cfg.n_layer * (int64_t)sizeof(float);
}

int ds_kvcache_copy_prefix(ds_kvcache *dst, const ds_kvcache *src, int64_t n, ds_err *e) {
    if (dst->width != src->width || dst->n_layer != src->n_layer)
        return ds_err_set(e, DS_EINVAL, "KV caches of different models");
    if (n < 0 || n > src->n_past) return ds_err_set(e, DS_ERANGE, "prefix of %lld positions, source holds %lld",
                                                   (long long)n, (long long)src->n_past);
    int rc = ds_kvcache_reserve(dst, n, e);
    if (rc) return rc;
    for (int64_t l = 0; l < dst->n_layer; l++)
        if (n > 0) memcpy(dst->kv[l], src->kv[l], (size_t)n * (size_t)dst->width * sizeof(float));
    dst->n_past = n;
    dst->mtp_n_past = 0;
    return DS_OK;
}
