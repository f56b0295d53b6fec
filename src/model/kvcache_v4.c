/*
 * kvcache_v4.c - DeepSeek-V4's compact cache (model_internal.h's ds_v4state):
 * per layer only what v4attn.c's math reads, nothing per position but the
 * compressed entries.
 *
 * Layer l (Dh head dim, Di indexer head dim, Nw window, R rate):
 *   kv ring   (Nw + slack, Dh)           every layer: the window's K=V rows
 *   raw ring  (R + slack, 2·Dh)          HCA: the open window's c | z
 *             (2R + slack, 4·Dh + 4·Di)  CSA: c | z | c^I | z^I of the open
 *                                        window and the one before (series a)
 *   entries   (n / R, Dh [+ Di])         HCA e_w; CSA e_w | k^I_w
 * The MTP layers (l >= L) are shaped by their own attention kind and count
 * the cache's MTP positions (mtp_n_past).
 * A ring's position p lives at row p % S; writing p drops p - S. The slack
 * rows let a cache be truncated back up to `slack` positions exactly (a
 * rejected draft, a failed batch, bench's repetitions); further back the
 * rows are gone and truncation (kvcache.c) empties the cache and answers
 * 0 positions; the callers refill from their token ids (api/deepseek.c,
 * cli/cmd_chat.c; serve's sched.c reuses a slot only where its rings reach).
 */
#include "model.h"
#include "model_internal.h"
#include "../core/rng.h"

#include <stdlib.h>
#include <string.h>

void ds_v4ring_put(ds_v4ring *r, int64_t p, const float *row) {
    memcpy(ds_v4ring_row(r, p), row, (size_t)r->W * sizeof(float));
    if (p + 1 - r->S > r->lo) r->lo = p + 1 - r->S;
}

/* lowest position the kv / raw rings must hold for positions >= n */
static int64_t need_kv(const ds_v4state *st, int64_t n) { return DS_MAX(0, n - st->Nw + 1); }
static int64_t need_raw(const ds_v4state *st, int64_t n) {
    int64_t w = n / st->R;   /* the window position n falls in (its entry is not written yet) */
    return st->csa ? DS_MAX(0, (w - 1) * st->R) : w * st->R;
}

bool ds_v4cache_holds(const ds_v4state *st, int64_t n) {
    if (n <= 0) return true;
    if (need_kv(st, n) < st->kv.lo) return false;
    return !st->R || need_raw(st, n) >= st->raw.lo;
}

/* the layer's shape (no storage) */
static void layer_shape(const ds_config *cfg, int64_t l, int64_t slack, ds_v4state *st) {
    int64_t Dh = cfg->head_dim, Di = cfg->index_head_dim;
    memset(st, 0, sizeof *st);
    st->Nw = cfg->sliding_window;
    st->kv = (ds_v4ring){ st->Nw + slack, Dh, 0, NULL };
    if (cfg->attn_kind[l] == DS_ATTN_HCA) {
        st->R = cfg->compress_rate_hca, st->cw = Dh, st->We = Dh;
        st->raw = (ds_v4ring){ st->R + slack, 2 * Dh, 0, NULL };
    } else if (cfg->attn_kind[l] == DS_ATTN_CSA) {
        st->R = cfg->compress_rate_csa, st->cw = 2 * Dh, st->We = Dh + Di, st->csa = true;
        st->raw = (ds_v4ring){ 2 * st->R + slack, 4 * Dh + 4 * Di, 0, NULL };
    }
}

int ds_v4cache_init(ds_kvcache *c, const ds_config *cfg, ds_err *e) {
    c->v4 = calloc((size_t)c->n_layer, sizeof *c->v4);
    if (!c->v4) return ds_err_set(e, DS_ENOMEM, "out of memory");
    c->v4_slack = DS_V4_SLACK;
    for (int64_t l = 0; l < c->n_layer; l++) {   /* layers [L, L + n_mtp): the MTP block's, own kind */
        layer_shape(cfg, l, c->v4_slack, &c->v4[l]);
        c->v4[l].mtp = l >= cfg->n_layer;
    }
    return DS_OK;
}

int ds_kvcache_set_v4_slack(ds_kvcache *c, int64_t slack, ds_err *e) {
    if (!c->v4) return DS_OK;   /* MLA caches keep every position anyway */
    if (c->cap > 0) return ds_err_set(e, DS_EINVAL, "the V4 cache's ring slack must be set before first use");
    if (slack < 0 || slack > (int64_t)1 << 24) return ds_err_set(e, DS_EINVAL, "V4 ring slack %lld is out of range", (long long)slack);
    for (int64_t l = 0; l < c->n_layer; l++) {
        ds_v4state *st = &c->v4[l];
        st->kv.S = st->Nw + slack;
        if (st->R) st->raw.S += slack - c->v4_slack;
    }
    c->v4_slack = slack;
    return DS_OK;
}

static int ring_alloc(ds_v4ring *r, ds_err *e) {
    if (r->data || r->W == 0) return DS_OK;
    r->data = ds_alloc((size_t)(r->S * r->W) * sizeof(float));
    if (!r->data) return ds_err_set(e, DS_ENOMEM, "out of memory for the V4 cache's rings (%lld x %lld)", (long long)r->S, (long long)r->W);
    r->lo = 0;
    return DS_OK;
}

int ds_v4cache_reserve(ds_kvcache *c, int64_t upto, ds_err *e) {
    int rc;
    for (int64_t l = 0; l < c->n_layer; l++) {
        ds_v4state *st = &c->v4[l];
        if ((rc = ring_alloc(&st->kv, e)) || (rc = ring_alloc(&st->raw, e))) return rc;
        if (!st->R) continue;
        int64_t need = upto / st->R;
        if (need <= st->ent_cap) continue;
        int64_t cap = st->ent_cap ? st->ent_cap : 64;
        while (cap < need) cap *= 2;
        cap = DS_MIN(cap, DS_MAX(need, c->max_ctx / st->R));
        float *nb = ds_alloc((size_t)(cap * st->We) * sizeof(float));
        if (!nb) return ds_err_set(e, DS_ENOMEM, "out of memory growing the V4 cache to %lld entries", (long long)cap);
        if (st->ent) memcpy(nb, st->ent, (size_t)(st->ent_cap * st->We) * sizeof(float));
        ds_free(st->ent);
        st->ent = nb;
        st->ent_cap = cap;
    }
    return DS_OK;
}

void ds_v4cache_clear(ds_kvcache *c) {
    for (int64_t l = 0; l < c->n_layer; l++) c->v4[l].kv.lo = c->v4[l].raw.lo = 0;
}

/* positions [p0, n) of src's ring into dst's (dst's lo follows) */
static void ring_copy(ds_v4ring *d, const ds_v4ring *s, int64_t n) {
    if (!d->W) return;
    int64_t p0 = DS_MAX(s->lo, n - d->S);
    d->lo = p0;
    for (int64_t p = p0; p < n; p++) memcpy(ds_v4ring_row(d, p), ds_v4ring_row(s, p), (size_t)d->W * sizeof(float));
}

int ds_v4cache_copy(ds_kvcache *dst, const ds_kvcache *src, int64_t n, ds_err *e) {
    for (int64_t l = 0; l < src->n_layer; l++)
        if (!src->v4[l].mtp && !ds_v4cache_holds(&src->v4[l], n))
            return ds_err_set(e, DS_ERANGE, "the V4 cache (at %lld positions) keeps only its last %lld rows: it cannot "
                              "give a prefix of %lld", (long long)src->n_past, (long long)src->v4_slack, (long long)n);
    int rc = ds_kvcache_reserve(dst, n, e);
    if (rc) return rc;
    for (int64_t l = 0; l < src->n_layer; l++) {
        ds_v4state *d = &dst->v4[l];
        const ds_v4state *s = &src->v4[l];
        if (n <= 0 || s->mtp) { d->kv.lo = d->raw.lo = 0; continue; }   /* the copy's MTP layer starts empty */
        ring_copy(&d->kv, &s->kv, n);
        ring_copy(&d->raw, &s->raw, n);
        if (s->R) memcpy(d->ent, s->ent, (size_t)(n / s->R * s->We) * sizeof(float));
    }
    return DS_OK;
}

static void fill_random(float *x, int64_t n, ds_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)ds_rng_uniform(r) - 0.5f;
}

void ds_v4cache_fill_synthetic(ds_kvcache *c, int64_t n, uint64_t seed) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int64_t l = 0; l < c->n_layer; l++) {
        ds_v4state *st = &c->v4[l];
        fill_random(st->kv.data, st->kv.S * st->kv.W, &r);
        st->kv.lo = DS_MAX(0, n - st->kv.S);
        if (!st->R) continue;
        fill_random(st->raw.data, st->raw.S * st->raw.W, &r);
        st->raw.lo = DS_MAX(0, n - st->raw.S);
        fill_random(st->ent, n / st->R * st->We, &r);
    }
}

void ds_v4cache_free(ds_kvcache *c) {
    if (!c->v4) return;
    for (int64_t l = 0; l < c->n_layer; l++) {
        ds_free(c->v4[l].kv.data);
        ds_free(c->v4[l].raw.data);
        ds_free(c->v4[l].ent);
    }
    free(c->v4);
    c->v4 = NULL;
}

int64_t ds_v4cache_bytes(const ds_kvcache *c) {
    int64_t b = 0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        const ds_v4state *st = &c->v4[l];
        if (st->kv.data) b += st->kv.S * st->kv.W;
        if (st->raw.data) b += st->raw.S * st->raw.W;
        b += st->ent_cap * st->We;
    }
    return b * (int64_t)sizeof(float);
}

int64_t ds_v4cache_layer_bytes(const ds_config *cfg, int64_t l, int64_t n, int64_t slack) {
    ds_v4state st;
    layer_shape(cfg, l, slack, &st);
    int64_t f = st.kv.S * st.kv.W + (st.R ? st.raw.S * st.raw.W + n / st.R * st.We : 0);
    return f * (int64_t)sizeof(float);
}
