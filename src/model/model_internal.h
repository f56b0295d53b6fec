/*
 * model_internal.h - private glue between model.c, forward.c, mla.c,
 * moe.c and moe_exchange.c: the forward-pass workspace, the per-layer
 * entry points and the MoE pipeline's stages.
 */
#ifndef DS_MODEL_INTERNAL_H
#define DS_MODEL_INTERNAL_H

#include "model.h"
#include "../core/arena.h"
#include "../core/thread.h"
#include "../tensor/ops.h"

/* The mutable state of forward passes (model.h: ds_ctx). */
/* The decompressed K/V of one prefill, kept across its chunks (prefill_kv.c). */
#define DS_PREFILL_KV_BUDGET ((size_t)2 << 30)   /* bytes, all layers: a 4K prefill of V2-Lite takes 1.1 GiB (bf16) / 2.2 GiB (f32) */
typedef struct ds_prefill_kv {
    ds_kvcache *cache;    /* the sequence being prefilled */
    int64_t cap;          /* rows per layer (the cache's length at the end of the prefill, rounded up to even) */
    int64_t n_layer;
    size_t budget, used;  /* bytes */
    size_t es;            /* bytes per value: 4 (fp32) or 2 (bf16) */
    void **buf;           /* [n_layer] (H, cap, Dq + Dv) per head keys then values; NULL: not yet used */
    int64_t *rows;        /* [n_layer] rows [0, rows) of buf are decompressed */
    bool *full;           /* [n_layer] no room in the budget: decompress as without a store */
} ds_prefill_kv;
/* Layer l's store for S rows of H heads × width values of es bytes, allocated
 * on first use; NULL if there is none (no store, over budget, S > cap). */
void *ds_prefill_kv_layer(ds_prefill_kv *p, int64_t l, int64_t H, int64_t width, size_t es, int64_t S);

struct ds_ctx {
    ds_arena arena;       /* activations; reset at the start of every forward call */
    ds_par_env env;       /* bound during a call: per-thread kernel scratch, thread count */
    ds_prefill_kv *kvx;   /* between ds_ctx_prefill_begin and _end, else NULL */
};

/* A segment of the batch: tokens [t0, t0+n) of one sequence, at absolute
 * positions pos0 .. pos0+n-1, attending to `cache` layer rows [0, pos0+n). */
typedef struct ds_seg {
    ds_kvcache *cache;
    int64_t t0, n, pos0;
    ds_prefill_kv *kvx;   /* the prefill's K/V store when it is this cache's, else NULL */
} ds_seg;

/* Batch invariance. ds_model_forward orders the segments of a batch so
 * that those shorter than DS_TOKEN_BLOCK_MIN tokens come first; their tokens
 * ([0, S)) are computed one by one, and every longer segment is computed as
 * its own block, exactly as if it ran alone. So a sequence's numbers never
 * depend on what else shares the batch (continuous batching gives the same
 * text as running each request alone). */
int64_t ds_plan_small_tokens(const ds_seg *segs, int n_segs);
/* Appends to jobs (room for 1 + n_segs) the jobs of one logical matmul
 * y[T, N] = x[T, K] · W[r0 : r0+N]ᵀ over all tokens of the batch; returns
 * how many were added. */
int ds_plan_jobs(const ds_seg *segs, int n_segs, ds_mm_job *jobs, float *y, int64_t ldy, const float *x,
                 int64_t ldx, const ds_tensor *w, int64_t r0, int64_t N);
/* The same, run at once (one parallel pass). */
void ds_plan_matmul(const ds_seg *segs, int n_segs, float *y, int64_t ldy, const float *x, int64_t ldx,
                    const ds_tensor *w, int64_t r0, int64_t N);

/* out[T, D] = MLA(xn) for layer l; writes this batch's latents into the
 * caches first. naive: decompress K/V per head instead of absorbing. */
/* Rows [j0, j0+n) of layer l as fp32: in place for an fp32 cache, else
 * dequantized into scratch (n · width floats). */
const float *ds_kvcache_rows_f32_at(const ds_kvcache *c, int64_t l, int64_t j0, int64_t n, float *scratch);
/* A BF16 cache's stored rows from position j0 of layer l (width[l] values each). */
const uint16_t *ds_kvcache_rows_bf16_at(const ds_kvcache *c, int64_t l, int64_t j0);
/* An I8 cache's stored rows from position j0 of layer l (row_bytes[l] apart:
 * DS_KV_I8_HEAD bytes of scales and code sums, then width[l] int8 codes). */
const uint8_t *ds_kvcache_rows_i8_at(const ds_kvcache *c, int64_t l, int64_t j0);
int ds_mla_forward(const ds_model *m, int64_t l, float *out, const float *xn, int64_t T,
                   const ds_seg *segs, int n_segs, bool naive, ds_arena *a, ds_err *e);

/* DeepSeek Sparse Attention's indexer (dsa.c), for DSA layers. */
typedef struct ds_dsa_sel {
    int32_t *idx;   /* (T, Ktop): the cache positions token t attends to, ascending */
    int64_t *n;     /* [T] entries of idx[t]: Ktop, or 0 when t sees <= Ktop positions (all of them) */
} ds_dsa_sel;
/* Index keys of the T new tokens (LayerNorm, roped) into rows (T, ldrow) at column off. */
void ds_dsa_keys(const ds_model *m, int64_t l, const float *xn, int64_t T, const ds_seg *segs, int n_segs,
                 float *rows, int64_t ldrow, int64_t off);
/* The selection of every token (their index keys already in the caches);
 * qr (T, Rq): MLA's normed q LoRA latent. Allocates out from a. */
int ds_dsa_select(const ds_model *m, int64_t l, const float *xn, const float *qr, int64_t T, const ds_seg *segs,
                  int n_segs, ds_arena *a, ds_dsa_sel *out, ds_err *e);
/* The min(k, n) positions of the highest scores (ties: the lower position;
 * NaN counts as -inf) into sel, ascending. scratch: n · 8 bytes. */
void ds_dsa_topk(const float *score, int64_t n, int64_t k, int32_t *sel, void *scratch);

/* DeepSeek-V4's cache of one layer (kvcache_v4.c). A ring holds the rows of
 * the last S positions it was given: position p at row p % S; `lo` is the
 * lowest position it still holds (it only grows, as writes overwrite). */
typedef struct ds_v4ring {
    int64_t S, W, lo;   /* rows, floats per row, lowest position held */
    float *data;        /* (S, W) */
} ds_v4ring;

typedef struct ds_v4state {
    int64_t R;          /* compression rate; 0: sliding layer */
    int64_t Nw;         /* sliding window */
    bool csa;           /* two overlapping series and an indexer (else HCA, or sliding when R = 0) */
    int64_t cw;         /* compressor width: Dh (HCA), 2·Dh (CSA) */
    ds_v4ring kv;       /* (Nw + slack, Dh) the window's K=V rows */
    ds_v4ring raw;      /* (R (HCA) / 2R (CSA) + slack, Wraw) the compressor's raw rows:
                           c (cw) | z (cw, ape not added) [| c^I (2Di) | z^I (2Di)]; CSA/HCA only */
    int64_t We;         /* entry width: Dh [+ Di] */
    int64_t ent_cap;    /* entries allocated */
    float *ent;         /* (ent_cap, We) entry w (window [wR, (w+1)R)): e_w (Dh) [| k^I_w (Di)] */
    bool mtp;           /* an MTP layer: its positions are the cache's mtp_n_past, not n_past */
} ds_v4state;

/* The row of position p in a ring (held or about to be written). */
static inline float *ds_v4ring_row(const ds_v4ring *r, int64_t p) { return r->data + (p % r->S) * r->W; }
/* Writes position p's row; the ring then holds [max(lo, p + 1 - S), p]. */
void ds_v4ring_put(ds_v4ring *r, int64_t p, const float *row);
/* True when the layer's state can continue at position n (its rings hold
 * every row the positions >= n read; n at most the positions written). */
bool ds_v4cache_holds(const ds_v4state *st, int64_t n);
/* kvcache.c's V4 part: set up the layers' shapes (init), allocate the rings
 * on first use and the entries for `upto` positions (reserve), forget all
 * (clear), copy src's state (copy: entries of the first n positions), free,
 * and the bytes held. */
int ds_v4cache_init(ds_kvcache *c, const ds_config *cfg, ds_err *e);
int ds_v4cache_reserve(ds_kvcache *c, int64_t upto, ds_err *e);
void ds_v4cache_clear(ds_kvcache *c);
int ds_v4cache_copy(ds_kvcache *dst, const ds_kvcache *src, int64_t n, ds_err *e);
void ds_v4cache_free(ds_kvcache *c);
/* ds_kvcache_fill_synthetic's V4 part (rings and entries; after reserve) */
void ds_v4cache_fill_synthetic(ds_kvcache *c, int64_t n, uint64_t seed);
int64_t ds_v4cache_bytes(const ds_kvcache *c);

/* DeepSeek-V4 attention (v4attn.c): out[T, D] for a SWA / CSA / HCA layer;
 * writes this batch's rows (and the compressed entries of the windows they
 * close) into the caches first. */
int ds_v4_attn_forward(const ds_model *m, int64_t l, float *out, const float *xn, int64_t T, const ds_seg *segs,
                       int n_segs, ds_arena *a, ds_err *e);

/* DeepSeek-V4 hyper-connections (hc.c) on x (T, hc, D). ds_hc_pre: the block
 * input u (T, D) and the mixing weights post (T, hc), comb (T, hc, hc) from
 * one mixer (fn, base, scale); ds_hc_post: x = post·y + combᵀ·x in place;
 * ds_hc_head: the final collapse h (T, D). DS_ENOMEM when the arena is full. */
int ds_hc_pre(const ds_model *m, const ds_tensor *fn, const float *base, const float *scale, const float *x, int64_t T,
              const ds_seg *segs, int n_segs, float *u, float *post, float *comb, ds_arena *a);
void ds_hc_post(const ds_config *c, float *x, const float *y, const float *post, const float *comb, int64_t T);
int ds_hc_head(const ds_model *m, const float *x, int64_t T, const ds_seg *segs, int n_segs, float *h, ds_arena *a);
/* the same collapse with given weights (fn (hc, hc·D), base (hc), scale (1)): V4's MTP block has its own */
int ds_hc_head_w(const ds_model *m, const ds_tensor *fn, const float *base, const float *scale, const float *x,
                 int64_t T, const ds_seg *segs, int n_segs, float *h, ds_arena *a);

/* out[T, D] = FFN(xn) for layer l, by the layer's FFN kind (dense SwiGLU
 * or MoE). tok[T]: the batch's token ids (hash-routed MoE routes on them). */
int ds_ffn_forward(const ds_model *m, int64_t l, float *out, const float *xn, const int32_t *tok, int64_t T,
                   const ds_seg *segs, int n_segs, ds_arena *a, ds_err *e);

/* The MoE pipeline (moe.c): route -> pack -> exchange -> local experts ->
 * combine. A routed row (a token's k-th choice) travels with its
 * bookkeeping to whichever process owns its expert and its output comes
 * back to the same packed position; the combine then adds each token's
 * contributions in packed order (expert id ascending), so the sums are
 * bit-identical however the experts are spread over processes. */
typedef struct ds_moe_slot {
    int64_t token;   /* row of the origin's batch */
    int32_t expert;  /* global expert id */
    int32_t k;       /* position in the token's top-K */
    float weight;    /* combine weight w_k */
    int32_t block;   /* matmul block of the row: 0 = the per-token rows, s+1 = long segment s
                        (the expert matmuls split as they would with each sequence alone) */
} ds_moe_slot;

/* The origin's shared experts, y (T, D) = Shared(x), run in the same
 * matmul passes as its local experts (with MPI: while the rows travel). */
typedef struct ds_moe_shared {
    const ds_mlp_w *w;
    const float *x;
    float *y;
    int64_t T;
    const ds_seg *segs;
    int n_segs;
} ds_moe_shared;

/* y[n, D] = Expert_{slot[i].expert}(x[i]) for n received rows grouped by
 * expert ascending; every expert must lie in [lo, hi) and be loaded here
 * ([m->expert_lo, m->expert_hi)). `sh` (or NULL) joins the same passes. */
int ds_moe_local_experts(const ds_model *m, int64_t l, int64_t lo, int64_t hi, const ds_moe_slot *slot,
                         const float *x, int64_t n, float *y, const ds_moe_shared *sh, ds_arena *a, ds_err *e);

/* The expert exchange (moe_exchange.c), the call an MPI layer implements:
 * packed rows (slot[R] + x (R, D), grouped by expert ascending) go out to
 * the processes owning their experts, which run ds_moe_local_experts; the
 * outputs come back into y (R, D) at the rows' packed positions. `sh`:
 * this process's shared experts, run alongside its own local experts. */
int ds_moe_exchange(const ds_model *m, int64_t l, const ds_moe_slot *slot, const float *x, int64_t R, float *y,
                    const ds_moe_shared *sh, ds_arena *a, ds_err *e);

/* Expert selection for one token (spec §5.2-5.4). logits[E] are router
 * logits; bias[E] (noaux_tc only) is used for selection only. Writes the K
 * chosen experts (idx) and their combine weights (wt); scores[E] receives
 * the unbiased gate scores s (softmax or sigmoid). tmp: >= E + n_group floats. */
void ds_moe_route(const ds_config *c, const float *logits, const float *bias, int32_t *idx, float *wt,
                  float *scores, float *tmp);

/* One decoder block in place on the residual streams x (T, n_streams, D):
 * x += Attn(norm(x)); x += FFN(norm(x), tok), dispatched on the layer's
 * kinds. tok[T]: the token ids of the batch rows. */
int ds_block_forward(const ds_model *m, int64_t l, float *x, const int32_t *tok, int64_t T, const ds_seg *segs,
                     int n_segs, bool naive, ds_arena *a, ds_err *e);

/* Sets m->expert_lo/hi from o (NULL: all experts), checked against m->cfg (model.c). */
int ds_model_expert_range(ds_model *m, const ds_model_opts *o, ds_err *e);

/* deepseek2 / deepseek32 / deepseek4 GGUF metadata -> config (model_gguf.c); exposed for the fuzzer. */
struct ds_gguf;
int ds_model_gguf_config(const struct ds_gguf *g, ds_config *c, ds_err *e);
/* The RoPE tables and attention scale of m->cfg (V4: the plain and the compressed
 * layers' tables); model.c and model_gguf.c call it after binding. */
int ds_model_rope_init(ds_model *m, ds_err *e);

/* x8 row-interleaved copies of the quantized matmul weights (tensor/repack.h),
 * made at the end of ds_model_open / ds_model_open_gguf unless DS_REPACK=0;
 * freed by ds_model_close (repack_model.c). */
int ds_model_repack(ds_model *m, ds_err *e);
void ds_model_repack_free(ds_model *m);

/* Makes room for `extra` more positions past max(n_past, mtp_n_past). */
int ds_kvcache_reserve(ds_kvcache *c, int64_t upto, ds_err *e);

#endif
