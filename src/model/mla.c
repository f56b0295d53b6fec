/*
 * mla.c - Multi-head Latent Attention (spec §3), absorbed form.
 *
 *   q      = q_b(RMSNorm(q_a(x)))  or  q_proj(x)          (T, H, Dq) = [q_nope Dn | q_pe Dr]
 *   kv_a   = kv_a_proj(x)                                  (T, Rkv + Dr)
 *   c      = RMSNorm(kv_a[:Rkv]),  k_pe = RoPE(kv_a[Rkv:]) -> cache row [c | k_pe]
 *   q_abs  = W_UK[h]ᵀ q_nope[h]                            (T, H, Rkv)
 *   s[t,j] = scale · ([q_abs | RoPE(q_pe)] · cache[j])     j <= pos(t)
 *   u[t,h] = Σ_j softmax(s)[j] · c_j                       (T, H, Rkv)
 *   o[t,h] = W_UV[h] u[t,h]                                (T, H, Dv)
 *   out    = o_proj(concat_h o)                            (T, D)
 * W_UK[h] / W_UV[h] are rows [h(Dn+Dv), +Dn) / [h(Dn+Dv)+Dn, +Dv) of kv_b_proj.
 * The naive path (for checking) decompresses k_nope, v per head instead.
 *
 * Short segments (decode, < DS_TOKEN_BLOCK_MIN tokens) use flash decode:
 * every query row's cache range is cut into splits of KV_SPLIT rows (a
 * multiple of it beyond 16 splits, which bounds the partials) at fixed
 * positions (0, split, 2·split, ...: a function of the row's length only); a split is one work item that folds
 * its rows in blocks of KV_BLOCK into a running (max, sum, u) for all H
 * heads at once (ds_mla_attn_step: a latent row is read once for every
 * head, no T-long score arrays). The items of all rows of all short
 * segments are spread over the threads; the partials of a row are then
 * merged in split order. The split points depend only on the position, so a
 * row's bits do not depend on the batch or the thread count. Quantized
 * caches are dequantized block by block inside the item; a bf16 cache's
 * rows are read as stored by ds_mla_attn_step_bf16 (the query row rounded to
 * bf16 once; vdpbf16ps where the CPU has AVX512-BF16, the same bits with
 * AVX2; DSA layers' gathered rows take the fp32 step). Long segments over a
 * bf16 or i8 cache run the expanded form's scores and weighted sums with the
 * same bf16 kernels (expanded_bf16; i8 rows dequantized first). Within a prefill in several chunks
 * (ds_prefill: ds_ctx_prefill_begin) the decompressed keys and values of each
 * layer stay in the prefill's store (prefill_kv.c), so a chunk decompresses
 * only the rows the store lacks (its own), not all visible rows again.
 *
 * DSA layers (V3.2, attn_kind DS_ATTN_DSA): the cache row is [c | k_pe |
 * index key] (the key written by dsa.c). A segment whose queries all see
 * <= index_topk positions attends densely on the paths above; in the others
 * every query row goes through the flash-decode items (absorbed form, no
 * expanded prefill): over all visible rows when the row sees <= index_topk of
 * them, else over the positions the indexer selected (gathered; split like a
 * decode row of that many positions).
 */
#include "model_internal.h"
#include "rope.h"
#include "../core/thread.h"
#include "../tensor/ops.h"

#include <math.h>
#include <string.h>

#define Q_BLOCK 64    /* query rows per attention block (bounds score scratch) */
#define KV_SPLIT 256  /* cache rows per flash-decode work item (a multiple of it past 16 items) */
#define KV_MAX_SPLITS 16

/* rows per split for a query row that sees vis cache rows: a function of vis
 * alone (batch invariance), at most KV_MAX_SPLITS partials per row */
static int64_t split_rows(int64_t vis) {
    int64_t n = (vis + KV_SPLIT - 1) / KV_SPLIT;
    return KV_SPLIT * ((n + KV_MAX_SPLITS - 1) / KV_MAX_SPLITS);
}
/* Segments of at least EXPANDED_MIN tokens (prefill chunks) use the expanded
 * form: per head, k_nope = W_UK c and v = W_UV c are decompressed for the
 * S visible rows once (S·Rkv·(Dn+Dv) MACs) and the scores and the weighted
 * sum then cost n·S·(Dq+Dv) MACs instead of the absorbed n·S·(W+Rkv): for
 * V2-Lite/V3 shapes 320 vs 1088 per query-key pair, so the expanded form
 * costs less once n > Rkv·(Dn+Dv) / ((W+Rkv) − (Dq+Dv)) ≈ 171 (and the
 * chunk needs no q_abs / W_UV projections). Measured: README, long context.
 * Inside a prefill with the K/V store (prefill_kv.c) a chunk decompresses
 * only its own n rows, so the expanded form wins by more. */
#define EXPANDED_MIN 192
#define KV_BLOCK 64   /* cache rows per flash-decode step (its rows stay in L1/L2 for all heads) */

/* A segment of a DSA layer with a query that sees more than index_topk
 * positions: all its rows go through the flash-decode items (over their
 * selections); the other segments attend densely on the usual paths. */
static bool sparse_seg(const ds_model *m, int64_t l, const ds_seg *sg) {
    return m->cfg.attn_kind[l] == DS_ATTN_DSA && sg->pos0 + sg->n > m->cfg.index_topk;
}

typedef struct {
    int seg;
    int64_t i, j0, j1;  /* query row i of the segment; cache rows [j0, j1) */
    int64_t h0, h1;     /* its heads [h0, h1) (all, or a group: see group_heads) */
    const int32_t *sel; /* DSA: entries [j0, j1) of this selection are the rows; NULL: rows j0.. */
} fd_item;

/* Head groups for a flash-decode row that is one split (fewer than
 * KV_SPLIT visible rows): with fewer such rows than threads (a decode step
 * of one or a few sequences, short context) the row's heads are cut into
 * groups (an even count each, the AVX-512 step's head pairs), one work item
 * each, so the threads share the attention instead of one thread doing it
 * while the others wait. A head's bits do not depend on the heads that
 * share its step call (ds_mla_attn_step, _bf16: tests
 * ops_mla_flash_decode_head_groups_bits, ops_mla_flash_decode_vs_ref,
 * attn_bf16_flash_decode), so any grouping gives the same bits. The int8
 * query layout interleaves heads: those rows keep one item. */
static int64_t group_heads(int64_t H, int64_t n_single_rows, int nt) {   /* heads per item; H: no groups */
    if (nt < 2 || n_single_rows < 1 || n_single_rows >= nt || H < 4) return H;
    int64_t g = DS_MIN((int64_t)nt / n_single_rows, H / 2);
    return 2 * ((H / 2 + g - 1) / g);
}

typedef struct {
    const ds_model *m;
    const ds_layer_w *w;
    int64_t l, T;
    int64_t ldkv;       /* floats per cache row of layer l (>= Rkv + Dr) */
    const ds_seg *segs;
    int n_segs;
    const float *q;     /* (T, H, Dq) roped */
    float *qcat;        /* (T, H, W) [q_abs | q_pe] */
    uint16_t *qcat_bf16; /* (T, H, W) qcat rounded to bf16 for the rows of segments with a bf16 cache, or NULL */
    float *u;           /* (T, H, Rkv) */
    float *o;           /* (T, H, Dv) */
    bool naive;
    const float **kvf;  /* [n_segs] this layer's cache rows [kv0[s], S) as fp32 for long segments / naive (else NULL) */
    const int64_t *kv0; /* [n_segs] the first row in kvf[s]: the rows the prefill's store lacks, else 0 */
    void **kvs;         /* [n_segs] the prefill's K/V store of this layer for an expanded segment (prefill_kv.c), or NULL */
    /* flash decode */
    const fd_item *items;
    int64_t n_items;
    float *pu, *pm, *pl;        /* per item partials: (H, Rkv), H, H */
    const int64_t *row_first;   /* [n_rows + 1] first item of each short query row */
    const int64_t *row_t;       /* [n_rows] token index of each short query row */
    const ds_seg *asegs;        /* the segments in the absorbed form (all but the expanded ones), in order */
    int n_asegs;
    const ds_dsa_sel *sel;      /* DSA layers: each token's selected positions */
    uint8_t *qcat_i8;           /* (T, DS_MLA_Q_I8_BYTES(H, W)) qcat rounded to int8 (ds_mla_q_i8) for the
                                   flash-decode rows over an i8 cache, or NULL */
} attn_ctx;

/* flash decode reads an i8 cache's rows as stored (ds_mla_attn_step_i8):
 * not DSA layers' gathered rows (ld > W), and the parts must be whole
 * groups of 4 codes; otherwise the rows are dequantized like q8's */
static bool i8_direct(const ds_kvcache *kc, int64_t ld, int64_t W, int64_t Rkv) {
    return kc->type == DS_KV_I8 && ld == W && Rkv % 4 == 0 && W % 4 == 0;
}

/* Decompressed keys (S, Dq) = [W_UK c_j | k_pe_j] and values (S, Dv) = W_UV c_j of head h. */
static void decompress_head(attn_ctx *c, int64_t h, const float *kv, int64_t S, float *kh, float *vh) {
    const ds_config *cfg = &c->m->cfg;
    int64_t Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim, Dq = Dn + Dr;
    int64_t Rkv = cfg->kv_lora_rank, ld = c->ldkv, Dv = cfg->v_head_dim;
    if (ds_tensor_present(&c->w->wk_b)) {
        ds_tensor kb = ds_tensor_slice(&c->w->wk_b, h), vb = ds_tensor_slice(&c->w->wv_b, h);
        ds_matmul_t(kh, Dq, kv, ld, &kb, 0, Rkv, S);     /* k_nope = c · W_UKᵀ */
        ds_matmul(vh, Dv, kv, ld, &vb, 0, Dv, S);
    } else {
        ds_matmul(kh, Dq, kv, ld, &c->w->kv_b_proj, h * (Dn + Dv), Dn, S);
        ds_matmul(vh, Dv, kv, ld, &c->w->kv_b_proj, h * (Dn + Dv) + Dn, Dv, S);
    }
    for (int64_t j = 0; j < S; j++) memcpy(kh + j * Dq + Dn, kv + j * ld + Rkv, (size_t)Dr * sizeof(float));
}

/* The expanded form over a bf16 cache: k = [W_UK c | k_pe] and v = W_UV c
 * (computed in fp32 from the stored bf16 rows) rounded to bf16 once per head
 * and segment, each block's queries rounded once, and the scores and the
 * weighted sum in bf16 with fp32 sums (vdpbf16ps; the AVX2 kernels and the
 * twins give the same bits). Half the bytes of the fp32 sgemm's operands
 * and twice its multiply-adds per instruction. The keys are kept
 * transposed in groups of 16 rows (ds_bf16_round_keys_t), so the score
 * kernel (ds_mla_scores_bf16_kt) has the keys as its vector lanes and no
 * horizontal sums (15 % faster than the flash-decode kernel with query rows
 * in place of heads, ds_mla_scores_bf16: 64 × 2048 × 192, 1 thread), and
 * skips the keys no row of a tile sees (the block's causal corner). The
 * values are kept in row pairs (ds_bf16_round_pairs: the layout vdpbf16ps
 * reads, made once per row, not per block and head) and the softmax writes
 * each row's weights as bf16 directly (ds_mla_softmax_bf16: the bits of
 * ds_softmax then rounding, one pass fewer, no fp32 weights). The weighted
 * sum walks the values in chunks of KV_CHUNK rows, so each chunk stays in
 * L2 while all of the block's query rows pass over it (u carried from chunk
 * to chunk with α = 1, exact: the same bits as one call over all rows; alone
 * at 1 thread it measured no faster — L3 kept up — kept for threads sharing
 * L3); the score kernel tiles the keys by 64 itself. The expanded form
 * still beats the absorbed one here: for a 512-token chunk at depth 4096
 * absorbed costs n·S·(W+Rkv) = 512·4608·1088 MACs per head (2.6 G, all in
 * these kernels) against S·Rkv·(Dn+Dv) = 4608·512·256 (0.6 G, the
 * quantized decompression matmul) + n·S·(Dq+Dv) = 512·4608·320 (0.75 G):
 * the same ~171-token break-even as the fp32 form (EXPANDED_MIN). */
#define KV_CHUNK 256   /* values per weighted-sum call (64 KB of 128-value rows); even: whole row pairs */
typedef struct {
    uint16_t *kb, *vb, *qb, *pb;   /* keys transposed (DS_KT_ROWS(S), Dq); (⌈S/2⌉, 2·Dv) in row pairs; (Q_BLOCK, Dq);
                                      (Q_BLOCK, S + S % 2) weights; all bf16 */
    float *ub, *zero, *one;        /* (Q_BLOCK, Dv) block output; Q_BLOCK zeros, ones (α) */
} expanded_bf16;

/* Caches whose long segments run the expanded form in bf16: bf16, and i8
 * (its rows dequantized to fp32 for the decompression like before, then the
 * same bf16 operands; i8 is lossy already — its int8 rows' error, up to
 * max/254 per value, is far above bf16's 2^-9 — and the fp32 sgemm path cost
 * ~2x per multiply-add; README, long context). */
static bool expanded_bf16_cache(const ds_kvcache *kc) { return kc->type == DS_KV_BF16 || kc->type == DS_KV_I8; }

/* kd, vd: the fp32 keys and values of rows [r0, S) (r0 > 0 only with the
 * prefill's store kst / vst, (S, Dq) / (S rounded up to even, Dv) in row
 * pairs, whose rows [0, r0) are rounded already); without a store (kst NULL)
 * r0 is 0 and kb, vb are scratch. */
static bool expanded_bf16_init(expanded_bf16 *b, const float *kd, const float *vd, int64_t r0, int64_t S,
                               int64_t Dq, int64_t Dv, uint16_t *kst, uint16_t *vst, int tid) {
    int64_t S2 = S + S % 2;
    size_t nk = kst ? 0 : (size_t)(DS_KT_ROWS(S) * Dq), nv = kst ? 0 : (size_t)(S2 * Dv), nq = (size_t)(Q_BLOCK * Dq);
    size_t np = (size_t)(Q_BLOCK * S2), nu = (size_t)(Q_BLOCK * Dv);
    /* bf16 parts first (sizes rounded up to whole floats) */
    size_t hk = (nk + 1) / 2, hv = (nv + 1) / 2, hq = (nq + 1) / 2, hp = (np + 1) / 2;
    float *buf = ds_scratch(tid, 2, hk + hv + hq + hp + nu + 2 * Q_BLOCK);
    if (!buf) return false;   /* out of memory: the context reports it */
    b->kb = kst ? kst : (uint16_t *)buf;
    b->vb = vst ? vst : (uint16_t *)(buf + hk);
    b->qb = (uint16_t *)(buf + hk + hv);
    b->pb = (uint16_t *)(buf + hk + hv + hq);
    b->ub = buf + hk + hv + hq + hp;
    b->zero = b->ub + nu;
    b->one = b->zero + Q_BLOCK;
    for (int i = 0; i < Q_BLOCK; i++) b->zero[i] = 0.0f, b->one[i] = 1.0f;
    ds_bf16_round_keys_t(b->kb, kd, r0, S - r0, Dq);
    ds_bf16_round_pairs(b->vb, vd, r0, S - r0, Dv);
    return true;
}

/* Block [b0, b0 + nb) of a segment over a bf16 cache (expanded_bf16): the
 * block's Sv visible keys, row i (at token t0 + i) seeing the first vis0 + i */
static void expanded_bf16_block(attn_ctx *c, expanded_bf16 *bf, int64_t h, int64_t t0, int64_t nb, int64_t Sv,
                                int64_t vis0, float *sc) {
    const ds_config *cfg = &c->m->cfg;
    int64_t H = cfg->n_head, Dq = cfg->qk_nope_head_dim + cfg->qk_rope_head_dim, Dv = cfg->v_head_dim;
    int64_t Sv2 = Sv + Sv % 2;
    for (int64_t i = 0; i < nb; i++) ds_bf16_round_row(bf->qb + i * Dq, c->q + ((t0 + i) * H + h) * Dq, Dq);
    ds_mla_scores_bf16_kt(sc, Sv, bf->qb, Dq, nb, bf->kb, Dq, Sv, vis0);   /* raw scores (nb, Sv), the visible ones */
    for (int64_t i = 0; i < nb; i++)   /* scale, mask, softmax, bf16 weights */
        ds_mla_softmax_bf16(bf->pb + i * Sv2, sc + i * Sv, vis0 + i, Sv, c->m->attn_scale);
    memset(bf->ub, 0, (size_t)(nb * Dv) * sizeof(float));
    for (int64_t j0 = 0; j0 < Sv; j0 += KV_CHUNK)   /* rows of pair j0 / 2 start at j0·Dv */
        ds_mla_pv_bf16_pk(bf->ub, Dv, bf->pb + j0, Sv2, j0 ? bf->one : bf->zero, nb, bf->vb + j0 * Dv,
                          DS_MIN(KV_CHUNK, Sv - j0));
    for (int64_t i = 0; i < nb; i++) memcpy(c->o + ((t0 + i) * H + h) * Dv, bf->ub + i * Dv, (size_t)Dv * sizeof(float));
}

/* Attention of head h for one long segment in the expanded form (blocked
 * causal: Q_BLOCK query rows against the keys visible to the block's last
 * row, masked); writes o directly. A bf16 or i8 cache's segment runs the
 * scores and the weighted sum in bf16 (expanded_bf16, expanded_bf16_cache). */
static void attn_seg_expanded(attn_ctx *c, int s, int64_t h, int tid) {
    const ds_config *cfg = &c->m->cfg;
    const ds_seg *sg = &c->segs[s];
    int64_t H = cfg->n_head, Dq = cfg->qk_nope_head_dim + cfg->qk_rope_head_dim, Dv = cfg->v_head_dim;
    int64_t S = sg->pos0 + sg->n, r0 = c->kv0[s];   /* rows [r0, S) are decompressed here */
    bool bf16 = expanded_bf16_cache(sg->cache);
    /* head h's part of the prefill's store: keys (cap, Dq) then values (cap, Dv); cap is a multiple of 64 */
    int64_t cap = sg->kvx ? sg->kvx->cap : 0;
    char *st = c->kvs[s] ? (char *)c->kvs[s] + (size_t)(h * cap * (Dq + Dv)) * (bf16 ? 2 : 4) : NULL;
    float *kh, *vh, *kd, *vd;   /* fp32 keys / values of rows [0, S) and of rows [r0, S) */
    if (st && !bf16) {
        kh = (float *)st, vh = kh + cap * Dq, kd = kh + r0 * Dq, vd = vh + r0 * Dv;
    } else {
        kd = kh = ds_scratch(tid, 3, (size_t)((S - r0) * Dq));
        vd = vh = ds_scratch(tid, 4, (size_t)((S - r0) * Dv));
        if (!kd || !vd) return;   /* out of memory: the context reports it */
    }
    decompress_head(c, h, c->kvf[s], S - r0, kd, vd);
    expanded_bf16 bf = { 0 };
    if (bf16 && !expanded_bf16_init(&bf, kd, vd, r0, S, Dq, Dv, st ? (uint16_t *)st : NULL,
                                    st ? (uint16_t *)st + cap * Dq : NULL, tid))
        return;
    for (int64_t b0 = 0; b0 < sg->n; b0 += Q_BLOCK) {
        int64_t nb = DS_MIN(Q_BLOCK, sg->n - b0), Sv = sg->pos0 + b0 + nb, t0 = sg->t0 + b0;
        float *sc = ds_scratch(tid, 1, (size_t)(nb * Sv));
        if (!sc) return;
        if (bf.kb) { expanded_bf16_block(c, &bf, h, t0, nb, Sv, sg->pos0 + b0 + 1, sc); continue; }
        ds_sgemm(false, true, nb, Sv, Dq, c->m->attn_scale, c->q + (t0 * H + h) * Dq, H * Dq, kh, Dq, 0.0f, sc, Sv);
        for (int64_t i = 0; i < nb; i++) {   /* in one pass over the row: mask, softmax */
            float *row = sc + i * Sv;
            for (int64_t j = sg->pos0 + b0 + i + 1; j < Sv; j++) row[j] = -INFINITY;
            ds_softmax(row, Sv);
        }
        ds_sgemm(false, false, nb, Dv, Sv, 1.0f, sc, Sv, vh, Dv, 0.0f, c->o + (t0 * H + h) * Dv, H * Dv);
    }
}

/* qcat[:, h, :Rkv] = q_nope · W_UK[h], qcat[:, h, Rkv:] = q_pe for the
 * absorbed segments' tokens (per token for short segments, per block for
 * long ones: batch plan). With none, qcat is not allocated (NULL) and no
 * pointer into it is formed. */
static void absorb_q_head(attn_ctx *c, int64_t h) {
    const ds_config *cfg = &c->m->cfg;
    int64_t H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim, Dq = Dn + Dr;
    int64_t Rkv = cfg->kv_lora_rank, W = Rkv + Dr, Dv = cfg->v_head_dim;
    if (!c->n_asegs) return;
    if (ds_tensor_present(&c->w->wk_b)) {
        ds_tensor kb = ds_tensor_slice(&c->w->wk_b, h);   /* (Rkv, Dn) = W_UK[h]ᵀ */
        ds_plan_matmul(c->asegs, c->n_asegs, c->qcat + h * W, H * W, c->q + h * Dq, H * Dq, &kb, 0, Rkv);
    } else {
        int64_t S = ds_plan_small_tokens(c->asegs, c->n_asegs);
        if (S > 0)
            ds_matmul_t_ex(c->qcat + h * W, H * W, c->q + h * Dq, H * Dq, &c->w->kv_b_proj, h * (Dn + Dv), Dn, S, true);
        for (int s = 0; s < c->n_asegs; s++) {
            const ds_seg *sg = &c->asegs[s];
            if (sg->n < DS_TOKEN_BLOCK_MIN) continue;
            ds_matmul_t_ex(c->qcat + (sg->t0 * H + h) * W, H * W, c->q + (sg->t0 * H + h) * Dq, H * Dq,
                           &c->w->kv_b_proj, h * (Dn + Dv), Dn, sg->n, false);
        }
    }
    for (int s = 0; s < c->n_asegs; s++)
        for (int64_t t = c->asegs[s].t0; t < c->asegs[s].t0 + c->asegs[s].n; t++)
            memcpy(c->qcat + (t * H + h) * W + Rkv, c->q + (t * H + h) * Dq + Dn, (size_t)Dr * sizeof(float));
}

/* Attention of head h for all segments (absorbed; segments of >= EXPANDED_MIN tokens expanded). */
static void attn_head_absorbed(attn_ctx *c, int64_t h, int tid) {
    const ds_config *cfg = &c->m->cfg;
    int64_t H = cfg->n_head, Dr = cfg->qk_rope_head_dim;
    int64_t Rkv = cfg->kv_lora_rank, W = Rkv + Dr;
    float scale = c->m->attn_scale;
    absorb_q_head(c, h);
    for (int s = 0; s < c->n_segs; s++) {
        const ds_seg *sg = &c->segs[s];
        const float *kv = c->kvf[s];  /* (S, W) */
        if (sparse_seg(c->m, c->l, sg) || sg->n < DS_TOKEN_BLOCK_MIN) continue;   /* flash decode, after all heads' queries */
        if (sg->n >= EXPANDED_MIN) { attn_seg_expanded(c, s, h, tid); continue; }
        for (int64_t b0 = 0; b0 < sg->n; b0 += Q_BLOCK) {
            int64_t nb = DS_MIN(Q_BLOCK, sg->n - b0);
            int64_t S = sg->pos0 + b0 + nb;   /* keys visible to the last row of the block */
            float *sc = ds_scratch(tid, 1, (size_t)(nb * S));
            if (!sc) return;
            int64_t t0 = sg->t0 + b0;
            ds_sgemm(false, true, nb, S, W, scale, c->qcat + (t0 * H + h) * W, H * W, kv, c->ldkv, 0.0f, sc, S);
            for (int64_t i = 0; i < nb; i++) {
                int64_t visible = sg->pos0 + b0 + i + 1;
                float *row = sc + i * S;
                for (int64_t j = visible; j < S; j++) row[j] = -INFINITY;
                ds_softmax(row, S);
            }
            ds_sgemm(false, false, nb, Rkv, S, 1.0f, sc, S, kv, c->ldkv, 0.0f, c->u + (t0 * H + h) * Rkv, H * Rkv);
        }
    }
}

/* o = u · W_UV[h]ᵀ */
static void out_head(attn_ctx *c, int64_t h) {
    const ds_config *cfg = &c->m->cfg;
    int64_t H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Rkv = cfg->kv_lora_rank, Dv = cfg->v_head_dim;
    if (!c->n_asegs) return;   /* u is not allocated (see absorb_q_head) */
    if (ds_tensor_present(&c->w->wv_b)) {
        ds_tensor vb = ds_tensor_slice(&c->w->wv_b, h);   /* (Dv, Rkv) */
        ds_plan_matmul(c->asegs, c->n_asegs, c->o + h * Dv, H * Dv, c->u + h * Rkv, H * Rkv, &vb, 0, Dv);
    } else {
        ds_plan_matmul(c->asegs, c->n_asegs, c->o + h * Dv, H * Dv, c->u + h * Rkv, H * Rkv, &c->w->kv_b_proj,
                       h * (Dn + Dv) + Dn, Dv);
    }
}

/* Attention of head h (naive, decompressed): k = [W_UK c_j | k_pe_j], v = W_UV c_j. */
static void attn_head_naive(attn_ctx *c, int64_t h, int tid) {
    const ds_config *cfg = &c->m->cfg;
    int64_t H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim, Dq = Dn + Dr;
    int64_t Dv = cfg->v_head_dim;
    float scale = c->m->attn_scale;
    for (int s = 0; s < c->n_segs; s++) {
        const ds_seg *sg = &c->segs[s];
        const float *kv = c->kvf[s];
        int64_t S = sg->pos0 + sg->n;
        float *kh = ds_scratch(tid, 1, (size_t)(S * Dq));      /* (S, Dq) */
        float *vh = ds_scratch(tid, 2, (size_t)(S * Dv));      /* (S, Dv) */
        float *sc = ds_scratch(tid, 3, (size_t)S);
        if (!kh || !vh || !sc) return;
        decompress_head(c, h, kv, S, kh, vh);
        for (int64_t i = 0; i < sg->n; i++) {
            int64_t t = sg->t0 + i, visible = sg->pos0 + i + 1;
            const float *qv = c->q + (t * H + h) * Dq;
            for (int64_t j = 0; j < visible; j++) {
                float d = 0;
                for (int64_t k = 0; k < Dq; k++) d += qv[k] * kh[j * Dq + k];
                sc[j] = d * scale;
            }
            if (c->sel && c->sel->n[t] > 0) {   /* DSA: only the selected positions */
                const int32_t *sel = c->sel->idx + t * cfg->index_topk;
                for (int64_t j = 0, k = 0; j < visible; j++) {
                    if (k < c->sel->n[t] && sel[k] == j) k++;
                    else sc[j] = -INFINITY;
                }
            }
            ds_softmax(sc, visible);
            float *o = c->o + (t * H + h) * Dv;
            for (int64_t k = 0; k < Dv; k++) o[k] = 0;
            for (int64_t j = 0; j < visible; j++)
                for (int64_t k = 0; k < Dv; k++) o[k] += sc[j] * vh[j * Dv + k];
        }
    }
}

static void attn_worker(void *vctx, int64_t h0, int64_t h1, int tid) {
    attn_ctx *c = vctx;
    for (int64_t h = h0; h < h1; h++) {
        if (c->naive) attn_head_naive(c, h, tid);
        else attn_head_absorbed(c, h, tid);
    }
}

static void out_worker(void *vctx, int64_t h0, int64_t h1, int tid) {
    (void)tid;
    for (int64_t h = h0; h < h1; h++) out_head(vctx, h);
}

/* flash decode: one split of one query row, all heads */
static void fd_item_worker(void *vctx, int64_t k0, int64_t k1, int tid) {
    attn_ctx *c = vctx;
    const ds_config *cfg = &c->m->cfg;
    int64_t H = cfg->n_head, Rkv = cfg->kv_lora_rank, W = Rkv + cfg->qk_rope_head_dim, ld = c->ldkv;
    float *sc = ds_scratch(tid, 1, (size_t)DS_MAX(DS_MLA_STEP_BF16_SCRATCH(H, KV_BLOCK, W),
                                                  DS_MLA_STEP_I8_SCRATCH(H, KV_BLOCK, Rkv)));
    float *deq = ds_scratch(tid, 2, (size_t)(KV_BLOCK * ld));
    float *one = ds_scratch(tid, 5, (size_t)ld);
    if (!sc || !deq || !one) return;   /* out of memory: the context reports it */
    for (int64_t k = k0; k < k1; k++) {
        const fd_item *it = &c->items[k];
        const ds_seg *sg = &c->segs[it->seg];
        int64_t h0 = it->h0, Hg = it->h1 - it->h0;   /* this item's heads */
        const float *q = c->qcat + (sg->t0 + it->i) * H * W + h0 * W;
        float *pu = c->pu + k * H * Rkv + h0 * Rkv, *pm = c->pm + k * H + h0, *pl = c->pl + k * H + h0;
        for (int64_t h = 0; h < Hg; h++) { pm[h] = -INFINITY; pl[h] = 0.0f; }
        memset(pu, 0, (size_t)(Hg * Rkv) * sizeof(float));
        if (sg->cache->type == DS_KV_BF16 && ld == W) {
            /* bf16 rows as stored; the query row rounded to bf16 once (ds_mla_forward) */
            const uint16_t *qb = c->qcat_bf16 + (sg->t0 + it->i) * H * W + h0 * W;
            for (int64_t j = it->j0; j < it->j1; j += KV_BLOCK)
                ds_mla_attn_step_bf16(pu, pm, pl, qb, W, Hg, ds_kvcache_rows_bf16_at(sg->cache, c->l, j), W,
                                      DS_MIN(KV_BLOCK, it->j1 - j), Rkv, c->m->attn_scale, sc);
            continue;
        }
        if (i8_direct(sg->cache, ld, W, Rkv)) {   /* (all heads: never grouped) */
            /* int8 rows as stored, int8 queries (rounded once per token: ds_mla_forward) */
            const uint8_t *qi = c->qcat_i8 + (sg->t0 + it->i) * DS_MLA_Q_I8_BYTES(H, W);
            for (int64_t j = it->j0; j < it->j1; j += KV_BLOCK)
                ds_mla_attn_step_i8(pu, pm, pl, qi, H, ds_kvcache_rows_i8_at(sg->cache, c->l, j),
                                    (int64_t)sg->cache->row_bytes[c->l], W, DS_MIN(KV_BLOCK, it->j1 - j), Rkv,
                                    c->m->attn_scale, sc);
            continue;
        }
        for (int64_t j = it->j0; j < it->j1; j += KV_BLOCK) {
            int64_t nb = DS_MIN(KV_BLOCK, it->j1 - j);
            const float *rows;
            if (ld == W) {
                rows = ds_kvcache_rows_f32_at(sg->cache, c->l, j, nb, deq);
            } else {   /* DSA: the rows' [c | k_pe] gathered to stride W (selected or contiguous) */
                for (int64_t r = 0; r < nb; r++) {
                    int64_t pos = it->sel ? it->sel[j + r] : j + r;
                    memcpy(deq + r * W, ds_kvcache_rows_f32_at(sg->cache, c->l, pos, 1, one), (size_t)W * sizeof(float));
                }
                rows = deq;
            }
            ds_mla_attn_step(pu, pm, pl, q, W, Hg, rows, W, nb, Rkv, c->m->attn_scale, sc);
        }
    }
}

/* flash decode: merge a row's partials in split order into u; one work item
 * per (row, head), so a single decoded row's merge is shared by the threads
 * too (each head's merge is independent: the same bits either way) */
static void fd_combine_worker(void *vctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    attn_ctx *c = vctx;
    const ds_config *cfg = &c->m->cfg;
    int64_t H = cfg->n_head, Rkv = cfg->kv_lora_rank;
    for (int64_t i = i0; i < i1; i++) {
        int64_t r = i / H, h = i % H;
        int64_t k0 = c->row_first[r], k1 = c->row_first[r + 1];
        while (h < c->items[k0].h0 || h >= c->items[k0].h1) k0++;   /* the item holding head h (grouped rows) */
        float *pu = c->pu + k0 * H * Rkv + h * Rkv, *pm = c->pm + k0 * H + h, *pl = c->pl + k0 * H + h;
        for (int64_t k = k0 + 1; k < k1 && c->items[k].h0 <= h && h < c->items[k].h1; k++)   /* the row's next splits */
            ds_mla_attn_merge(pu, pm, pl, c->pu + k * H * Rkv + h * Rkv, c->pm + k * H + h, c->pl + k * H + h, 1, Rkv);
        ds_mla_attn_finish(c->u + c->row_t[r] * H * Rkv + h * Rkv, Rkv, pu, pl, 1, Rkv);
    }
}

/* Tokens [t0, t1)'s cache rows and queries: c = RMSNorm(kv_a[:Rkv]), RoPE on
 * k_pe, the row [c | k_pe] into its segment's cache at its position, RoPE on
 * every head's q_pe. Each token's arithmetic is the same whichever thread
 * runs it; rows of distinct positions are distinct cache rows. */
typedef struct {
    const ds_model *m;
    int64_t l;
    const ds_seg *segs;
    int n_segs;
    float *kva, *q;   /* (T, ldkv) cache rows, (T, H, Dq) queries */
    int64_t ldkv;
} cache_rows_ctx;

static void cache_rows_worker(void *vctx, int64_t t0, int64_t t1, int tid) {
    (void)tid;
    const cache_rows_ctx *c = vctx;
    const ds_config *cfg = &c->m->cfg;
    const ds_layer_w *w = &c->m->layers[c->l];
    int64_t H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim, Dq = Dn + Dr;
    int64_t Rkv = cfg->kv_lora_rank;
    float eps = (float)cfg->rms_norm_eps;
    for (int s = 0; s < c->n_segs; s++) {
        const ds_seg *sg = &c->segs[s];
        int64_t a = DS_MAX(t0, sg->t0), b = DS_MIN(t1, sg->t0 + sg->n);
        for (int64_t t = a; t < b; t++) {
            int64_t pos = sg->pos0 + (t - sg->t0);
            float *row = c->kva + t * c->ldkv;
            ds_rmsnorm(row, row, w->kv_a_norm, 1, Rkv, eps);
            ds_rope_apply(row + Rkv, Dr, c->m->inv_freq, pos);
            ds_kvcache_write_row(sg->cache, c->l, pos, row);
            ds_rope_apply_n(c->q + t * H * Dq + Dn, H, Dq, Dr, c->m->inv_freq, pos);
        }
    }
}

int ds_mla_forward(const ds_model *m, int64_t l, float *out, const float *xn, int64_t T,
                   const ds_seg *segs, int n_segs, bool naive, ds_arena *a, ds_err *e) {
    const ds_config *cfg = &m->cfg;
    const ds_layer_w *w = &m->layers[l];
    int64_t D = cfg->hidden_size, H = cfg->n_head, Dn = cfg->qk_nope_head_dim, Dr = cfg->qk_rope_head_dim;
    int64_t Dq = Dn + Dr, Rkv = cfg->kv_lora_rank, W = Rkv + Dr, Dv = cfg->v_head_dim;
    bool dsa = cfg->attn_kind[l] == DS_ATTN_DSA;
    int64_t ldkv = ds_config_kv_width(cfg, l);   /* cache row: [c | k_pe], DSA: [c | k_pe | index key] */
    float eps = (float)cfg->rms_norm_eps;

    /* q, kva and o are written whole before they are read (the projections;
     * o by the expanded form or out_worker, every row); the absorbed form's
     * qcat and u only where some segment takes it (decode, short chunks,
     * DSA's sparse rows; not the naive check): a prefill chunk in the
     * expanded form alone needs neither (35 MB per layer at 512 tokens of V2-Lite) */
    ds_seg *asegs = ds_arena_calloc(a, (size_t)n_segs, sizeof *asegs);   /* the segments in the absorbed form */
    if (!asegs) return ds_err_set(e, DS_ENOMEM, "out of memory in attention");
    int n_asegs = 0;
    for (int s = 0; s < n_segs; s++)
        if (sparse_seg(m, l, &segs[s]) || segs[s].n < EXPANDED_MIN) asegs[n_asegs++] = segs[s];
    bool absorbed = !naive && n_asegs > 0;
    float *q = ds_arena_array(a, (size_t)(T * H * Dq), sizeof(float));        /* (T, H, Dq) */
    float *kva = ds_arena_array(a, (size_t)(T * ldkv), sizeof(float));        /* (T, ldkv) cache rows */
    float *o = ds_arena_array(a, (size_t)(T * H * Dv), sizeof(float));        /* (T, H, Dv) */
    float *qcat = absorbed ? ds_arena_calloc(a, (size_t)(T * H * W), sizeof(float)) : NULL;  /* (T, H, W) */
    float *u = absorbed ? ds_arena_calloc(a, (size_t)(T * H * Rkv), sizeof(float)) : NULL;   /* (T, H, Rkv) */
    if (!q || !kva || !o || (absorbed && (!qcat || !u))) return ds_err_set(e, DS_ENOMEM, "out of memory in attention");

    /* queries, latent + rope key: the projections of xn run in one pass */
    float *qa = NULL;
    if (cfg->q_lora_rank > 0) {
        qa = ds_arena_calloc(a, (size_t)(T * cfg->q_lora_rank), sizeof(float));  /* (T, Rq) */
        if (!qa) return ds_err_set(e, DS_ENOMEM, "out of memory in attention");
    }
    ds_mm_job *jobs = ds_arena_calloc(a, (size_t)(2 * (n_segs + 1)), sizeof(ds_mm_job));
    if (!jobs) return ds_err_set(e, DS_ENOMEM, "out of memory in attention");
    int nj = ds_plan_jobs(segs, n_segs, jobs, kva, ldkv, xn, D, &w->kv_a_proj, 0, W);
    if (cfg->q_lora_rank > 0)
        nj += ds_plan_jobs(segs, n_segs, jobs + nj, qa, cfg->q_lora_rank, xn, D, &w->q_a_proj, 0, cfg->q_lora_rank);
    else
        nj += ds_plan_jobs(segs, n_segs, jobs + nj, q, H * Dq, xn, D, &w->q_proj, 0, H * Dq);
    ds_matmul_multi(jobs, nj);
    if (cfg->q_lora_rank > 0) {
        ds_rmsnorm(qa, qa, w->q_a_norm, T, cfg->q_lora_rank, eps);
        ds_plan_matmul(segs, n_segs, q, H * Dq, qa, cfg->q_lora_rank, &w->q_b_proj, 0, H * Dq);
    }
    if (dsa) ds_dsa_keys(m, l, xn, T, segs, n_segs, kva, ldkv, W);
    /* into the caches (tokens split over the threads) */
    cache_rows_ctx cr = { m, l, segs, n_segs, kva, q, ldkv };
    ds_par_for(T, 16, cache_rows_worker, &cr);
    ds_dsa_sel sel = { 0 };
    int rc;
    if (dsa && (rc = ds_dsa_select(m, l, xn, qa, T, segs, n_segs, a, &sel, e))) return rc;
    /* the cache rows each segment attends to, as fp32 (quantized caches are
     * dequantized once per layer here, not per head) */
    const float **kvf = ds_arena_calloc(a, (size_t)n_segs, sizeof *kvf);
    int64_t *kv0 = ds_arena_calloc(a, (size_t)n_segs, sizeof *kv0);
    void **kvs = ds_arena_calloc(a, (size_t)n_segs, sizeof *kvs);
    if (!kvf || !kv0 || !kvs) return ds_err_set(e, DS_ENOMEM, "out of memory in attention");
    int64_t n_rows = 0, n_items = 0, n_single = 0;   /* n_single: rows of one split that may take head groups */
    for (int s = 0; s < n_segs; s++) {
        int64_t S = segs[s].pos0 + segs[s].n;
        if (!naive && (sparse_seg(m, l, &segs[s]) || segs[s].n < DS_TOKEN_BLOCK_MIN)) {   /* flash decode reads the cache itself */
            n_rows += segs[s].n;
            for (int64_t i = 0; i < segs[s].n; i++) {
                int64_t t = segs[s].t0 + i, vis = dsa && sel.n[t] ? sel.n[t] : segs[s].pos0 + i + 1;
                int64_t sp = split_rows(vis);
                n_items += (vis + sp - 1) / sp;
                n_single += vis <= sp && !i8_direct(segs[s].cache, ldkv, W, Rkv);
            }
            continue;
        }
        /* a prefill's later chunk of the expanded form: the store holds the
         * decompressed rows [0, kv0) of the earlier chunks (prefill_kv.c) */
        ds_prefill_kv *kvx = segs[s].kvx;
        if (!naive && segs[s].n >= EXPANDED_MIN && kvx &&
            (kvs[s] = ds_prefill_kv_layer(kvx, l, H, Dq + Dv, expanded_bf16_cache(segs[s].cache) ? 2 : 4, S)))
            kv0[s] = DS_MIN(kvx->rows[l], segs[s].pos0);
        float *scratch = NULL;
        if (segs[s].cache->type != DS_KV_F32 &&
            !(scratch = ds_arena_array(a, (size_t)((S - kv0[s]) * ldkv), sizeof(float))))
            return ds_err_set(e, DS_ENOMEM, "out of memory dequantizing the KV cache");
        kvf[s] = ds_kvcache_rows_f32_at(segs[s].cache, l, kv0[s], S - kv0[s], scratch);
    }
    attn_ctx c = { m, w, l, T, ldkv, segs, n_segs, q, qcat, NULL, u, o, naive, kvf, kv0, kvs, NULL, 0, NULL, NULL,
                   NULL, NULL, NULL, asegs, n_asegs, dsa ? &sel : NULL, NULL };
    ds_par_for_steal(H, 1, 1, attn_worker, &c);   /* queries (absorbed), long segments, naive: heads in runs (their weight slices) */
    for (int s = 0; s < n_segs; s++)
        if (kvs[s]) segs[s].kvx->rows[l] = segs[s].pos0 + segs[s].n;   /* the store now holds all of them */
    if (n_rows > 0) {
        int64_t gh = group_heads(H, n_single, ds_threads_get());
        n_items += ((H + gh - 1) / gh - 1) * n_single;   /* a single row's heads in groups of gh */
        fd_item *items = ds_arena_calloc(a, (size_t)n_items, sizeof *items);
        int64_t *row_first = ds_arena_calloc(a, (size_t)(n_rows + 1), sizeof *row_first);
        int64_t *row_t = ds_arena_calloc(a, (size_t)n_rows, sizeof *row_t);
        float *pu = ds_arena_calloc(a, (size_t)(n_items * H * Rkv), sizeof(float));
        float *pm = ds_arena_calloc(a, (size_t)(n_items * H), sizeof(float));
        float *pl = ds_arena_calloc(a, (size_t)(n_items * H), sizeof(float));
        if (!items || !row_first || !row_t || !pu || !pm || !pl)
            return ds_err_set(e, DS_ENOMEM, "out of memory in attention");
        int64_t k = 0, r = 0;
        for (int s = 0; s < n_segs; s++) {
            if (!sparse_seg(m, l, &segs[s]) && segs[s].n >= DS_TOKEN_BLOCK_MIN) continue;
            for (int64_t i = 0; i < segs[s].n; i++, r++) {
                int64_t t = segs[s].t0 + i, vis = segs[s].pos0 + i + 1;
                const int32_t *rsel = NULL;
                if (dsa && sel.n[t]) rsel = sel.idx + t * cfg->index_topk, vis = sel.n[t];
                int64_t sp = split_rows(vis);
                row_first[r] = k;
                row_t[r] = t;
                if (vis <= sp && !i8_direct(segs[s].cache, ldkv, W, Rkv))   /* one split: head groups (gh = H: one item) */
                    for (int64_t h0 = 0; h0 < H; h0 += gh, k++)
                        items[k] = (fd_item){ s, i, 0, vis, h0, DS_MIN(H, h0 + gh), rsel };
                else
                    for (int64_t j0 = 0; j0 < vis; j0 += sp, k++)
                        items[k] = (fd_item){ s, i, j0, DS_MIN(vis, j0 + sp), 0, H, rsel };
            }
        }
        row_first[r] = k;
        if (ldkv == W)   /* bf16 caches: their query rows rounded once, not per item */
            for (int s = 0; s < n_segs; s++) {
                if (segs[s].cache->type != DS_KV_BF16 || (!sparse_seg(m, l, &segs[s]) && segs[s].n >= DS_TOKEN_BLOCK_MIN))
                    continue;
                if (!c.qcat_bf16 && !(c.qcat_bf16 = ds_arena_calloc(a, (size_t)(T * H * W), sizeof(uint16_t))))
                    return ds_err_set(e, DS_ENOMEM, "out of memory in attention");
                ds_bf16_round_row(c.qcat_bf16 + segs[s].t0 * H * W, qcat + segs[s].t0 * H * W, segs[s].n * H * W);
            }
        for (int s = 0; s < n_segs; s++) {   /* i8 caches: their query rows rounded to int8 once */
            if (!i8_direct(segs[s].cache, ldkv, W, Rkv) || (!sparse_seg(m, l, &segs[s]) && segs[s].n >= DS_TOKEN_BLOCK_MIN))
                continue;
            int64_t qb = DS_MLA_Q_I8_BYTES(H, W);
            if (!c.qcat_i8 && !(c.qcat_i8 = ds_arena_calloc(a, (size_t)(T * qb), 1)))
                return ds_err_set(e, DS_ENOMEM, "out of memory in attention");
            for (int64_t t = segs[s].t0; t < segs[s].t0 + segs[s].n; t++)
                ds_mla_q_i8(c.qcat_i8 + t * qb, qcat + t * H * W, W, H, W, Rkv);
        }
        c.items = items; c.n_items = n_items; c.pu = pu; c.pm = pm; c.pl = pl;
        c.row_first = row_first; c.row_t = row_t;
        ds_par_for_dynamic(n_items, 1, 1, fd_item_worker, &c);
        ds_par_for_dynamic(n_rows * H, 4, 4, fd_combine_worker, &c);
    }
    if (!naive) ds_par_for_steal(H, 1, 1, out_worker, &c);
    ds_plan_matmul(segs, n_segs, out, D, o, H * Dv, &w->o_proj, 0, D);
    return DS_OK;
}
