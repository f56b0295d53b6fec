/*
 * prefill_kv.c - the decompressed keys and values of one prefill, kept
 * across its chunks (ds_ctx_prefill_begin / _end, model.h).
 *
 * A prefill of N tokens runs as chunks of (by default) 512 tokens; each chunk
 * of >= EXPANDED_MIN tokens attends in the expanded form (mla.c), which
 * decompresses k_nope = W_UK c and v = W_UV c per head for every visible
 * cache row. Without this store chunk k decompresses all (k+1)·512 rows
 * again: 36 chunk-rows of work instead of 8 for a 4096-token prefill (the
 * decompression was the largest part of its attention). With it, a layer's
 * rows [0, rows[l]) stay decompressed here and a chunk decompresses only its
 * own rows: the same numbers (the decompression of a row does not depend on
 * the other rows: tested bit for bit), less work.
 *
 * Layout of layer l: H heads × cap rows × (Dq + Dv) values — per head the
 * keys (cap, Dq) = [W_UK c | k_pe] then the values (cap, Dv) = W_UV c, as
 * fp32, or bf16 for a bf16 cache (the expanded form's bf16 operands, rounded
 * once; the keys transposed in groups of 16 rows, ds_bf16_round_keys_t, the
 * values interleaved in row pairs, ds_bf16_round_pairs, so cap is the
 * prefill's length rounded up to a multiple of 64, DS_KT_ROWS). Layers are allocated when first used; a layer that would take the
 * store past its byte budget gets none and decompresses as before.
 * A layer's buffer (up to ~40 MB for V2-Lite at 4K) is on huge pages and not
 * zero-filled: the heads' workers fault it in as they write their rows, 2 MB
 * at a time (4 KB pages cost ~2 µs per fault here: 0.6 % of a 4K prefill,
 * every prefill, since the store is freed when the prefill ends).
 */
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>

int ds_ctx_prefill_begin(ds_ctx *x, const ds_model *m, ds_kvcache *cache, int64_t rows, size_t budget, ds_err *e) {
    ds_ctx_prefill_end(x);
    if (rows <= 0 || !cache) return DS_OK;
    ds_prefill_kv *p = calloc(1, sizeof *p);
    int64_t L = m->cfg.n_layer;
    if (!p || !(p->buf = calloc((size_t)L, sizeof *p->buf)) || !(p->rows = calloc((size_t)L, sizeof *p->rows)) ||
        !(p->full = calloc((size_t)L, sizeof *p->full))) {
        if (p) { free(p->buf); free(p->rows); free(p->full); }
        free(p);
        return ds_err_set(e, DS_ENOMEM, "out of memory for the prefill's K/V store");
    }
    p->cache = cache;
    p->cap = DS_KT_ROWS(rows);   /* whole groups of 64 keys (bf16 keys, ds_bf16_round_keys_t), whole row pairs (values) */
    p->n_layer = L;
    p->budget = budget ? budget : DS_PREFILL_KV_BUDGET;
    x->kvx = p;
    return DS_OK;
}

void ds_ctx_prefill_end(ds_ctx *x) {
    ds_prefill_kv *p = x->kvx;
    if (!p) return;
    for (int64_t l = 0; l < p->n_layer; l++) ds_free(p->buf[l]);
    free(p->buf);
    free(p->rows);
    free(p->full);
    free(p);
    x->kvx = NULL;
}

void *ds_prefill_kv_layer(ds_prefill_kv *p, int64_t l, int64_t H, int64_t width, size_t es, int64_t S) {
    if (!p || l < 0 || l >= p->n_layer || S > p->cap || p->full[l]) return NULL;
    if (!p->buf[l]) {
        size_t bytes = (size_t)H * (size_t)p->cap * (size_t)width * es;
        if (bytes > p->budget - p->used || !(p->buf[l] = ds_alloc_huge_nozero(bytes))) { p->full[l] = true; return NULL; }
        p->used += bytes;
        p->es = es;
        p->rows[l] = 0;
    }
    if (p->es != es) return NULL;   /* one cache, one element type: never, but do not mix */
    return p->buf[l];
}
