/*
 * v4attn.c - DeepSeek-V4 attention (attn_kind DS_ATTN_SWA / CSA / HCA), as
 * transformers 5.x's DeepseekV4Attention computes it; its cache rows.
 *
 * Per token t at position p, xn = input_layernorm(collapsed streams) (D):
 *   qr = RMSNorm_w(wq_a xn)                                  (Rq)
 *   q  = RoPE_tail(RMSNorm(wq_b qr) per head, p)              (H, Dh) unweighted norm
 *   kv = RoPE_tail(RMSNorm_w(wkv xn), p)                      (Dh) one head, K = V
 * RoPE_tail rotates the LAST Dr dims in interleaved pairs; sliding layers use
 * rope_theta ("main"), CSA/HCA layers compress_rope_theta ("compress").
 * Keys of t: the kv of positions (p - Nw, p] (its sliding window), plus
 *   HCA: every compressed entry w with (w+1)·R <= p+1 (R = compress_rate_hca)
 *   CSA: of the entries with (w+1)·R <= p+1 (R = compress_rate_csa), the
 *        index_topk an indexer scores highest (all of them when fewer)
 * Per head: softmax over [scale·q·k_j ..., sink_h] (the sink takes its share
 * and gives nothing), o_h = Σ_j p_j k_j, then RoPE_tail(o_h, -p) (K = V
 * carried the keys' rotation into the output). Output: o_b(o_a grouped):
 * group g of the H·Dh outputs (H·Dh/G values) through rows [g·Ro, (g+1)·Ro)
 * of wo_a, then wo_b (D, G·Ro).
 *
 * Compressor (one entry per closed window of R tokens), from the raw
 * projections c = wkv_c xn and z = wgate_c xn + ape[j] (j: place in window):
 *   HCA  e_w[d] = Σ_{j<R} softmax_j(z_{wR+j}[d]) c_{wR+j}[d]
 *   CSA  the same over 2R slots: series a (first Dh of c, z) of window w-1
 *        (absent for w = 0) and series b (last Dh) of window w
 *   e_w = RoPE_tail(RMSNorm_w(e_w), w·R) with the compress rope.
 * The CSA indexer has its own compressor at Di (entries k_w) and scores
 *   I[t, w] = Σ_h (wproj xn · Hi^-1/2)[h] · relu(Di^-1/2 · q^I_h · k_w),
 *   q^I = RoPE_tail(wq_b^I qr, p) per head (Hi, Di).
 *
 * The cache (kvcache_v4.c, ds_v4state): per layer a ring of the window's
 * kv rows, for CSA/HCA a ring of the compressor's raw rows c | z (and the
 * indexer's c^I | z^I) of the open window(s), and the entries e_w (CSA:
 * e_w | k^I_w), written once the window's last token is. A batch's new rows
 * (T, Dh + Wraw) stay in the arena while its tokens attend (a token reads
 * earlier positions from the rings, the batch's own from there); then the
 * last S of them go into the rings. The same numbers as when every row was
 * kept per position (bit for bit): only where they are read from changed.
 * Attention runs in three passes over the threads: the indexer's scores
 * (by blocks of entries when few tokens: decode), each token's top-k and
 * its list of keys, then (token, group of heads) jobs; the dot products are
 * tensor/v4kern.c's (AVX2, or the C twin). A token's result depends only on
 * its own rows and the cache, however the jobs are split: batch invariant.
 * Rows are fp32: a quantized cache (q8/fp8) is refused for V4.
 */
#include "model_internal.h"
#include "rope.h"
#include "../core/thread.h"
#include "../tensor/ops.h"
#include "../tensor/v4kern.h"

#include <math.h>
#include <string.h>

/* x[n] /= sqrt(mean(x²) + eps), times w when given (fp32 like transformers' RMSNorm) */
static void rms(float *x, int64_t n, const float *w, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = 0; i < n; i++) x[i] = w ? (x[i] * inv) * w[i] : x[i] * inv;
}

/* rope on the last Dr dims of x[n] */
static void rope_tail(float *x, int64_t n, int64_t Dr, const float *inv_freq, int64_t pos) {
    ds_rope_apply(x + n - Dr, Dr, inv_freq, pos);
}

/* Slot i of ns: its place k in its window, position and column offset. */
static inline void slot_of(int64_t i, int64_t ns, int64_t R, int64_t w, bool two, int64_t n, int64_t *k, int64_t *pos,
                           int64_t *off) {
    bool prev = ns == 2 * R && i < R;   /* series a of window w-1 */
    *k = i % R;
    *pos = (prev ? w - 1 : w) * R + *k;
    *off = two && !prev ? n : 0;
}

/* Compressed entry of window w (n dims) from cache rows [w0, (w+1)·R), given
 * as `rows` (row j at rows + (j - w0)·W), kv at column c_off and gate at
 * z_off of each row; ape (R, cw). two: CSA's two series (a = dims [0, n) of
 * window w-1, absent for w = 0; b = dims [n, 2n) of window w), else one. */
static void compress_entry(float *out, const float *rows, int64_t w0, int64_t w, int64_t R, int64_t W, int64_t c_off,
                           int64_t z_off, int64_t n, bool two, const float *ape, int64_t cw, const float *norm, float eps,
                           int64_t Dr, const float *inv_freq) {
    int64_t ns = two && w > 0 ? 2 * R : R;   /* slots: [series a of w-1,] then window w */
    for (int64_t d = 0; d < n; d++) {
        float mx = -INFINITY;
        for (int64_t i = 0; i < ns; i++) {
            int64_t k, pos, off;
            slot_of(i, ns, R, w, two, n, &k, &pos, &off);
            float g = rows[(pos - w0) * W + z_off + off + d] + ape[k * cw + off + d];
            mx = g > mx ? g : mx;
        }
        double se = 0;
        for (int64_t i = 0; i < ns; i++) {
            int64_t k, pos, off;
            slot_of(i, ns, R, w, two, n, &k, &pos, &off);
            se += (double)expf(rows[(pos - w0) * W + z_off + off + d] + ape[k * cw + off + d] - mx);
        }
        float den = (float)se, v = 0;
        for (int64_t i = 0; i < ns; i++) {
            int64_t k, pos, off;
            slot_of(i, ns, R, w, two, n, &k, &pos, &off);
            float g = rows[(pos - w0) * W + z_off + off + d] + ape[k * cw + off + d];
            v += (expf(g - mx) / den) * rows[(pos - w0) * W + c_off + off + d];
        }
        out[d] = v;
    }
    rms(out, n, norm, eps);
    rope_tail(out, n, Dr, inv_freq, w * R);
}


/* Offsets in a batch row (T, Wc = Dh + Wraw): kv at 0, then the raw row:
 * c at Dh, z at Dh + cw [, c^I at Dh + 2cw, z^I at Dh + 2cw + 2Di]. */
static int64_t batch_width(const ds_v4state *st) { return st->kv.W + (st->R ? st->raw.W : 0); }

/* The raw row of position j for a segment whose new rows start at pos0 */
static const float *raw_row(const ds_v4state *st, const float *brows, int64_t Wc, int64_t pos0, int64_t j) {
    return j >= pos0 ? brows + (j - pos0) * Wc + st->kv.W : ds_v4ring_row(&st->raw, j);
}

/* The entries of the windows that close inside a segment (positions
 * [pos0, pos0+n)), from the rings and the segment's new rows brows. */
static int write_entries(const ds_model *m, int64_t l, const ds_seg *sg, ds_v4state *st, const float *brows,
                         const float *ape, const float *iape, ds_arena *a, ds_err *e) {
    const ds_config *cfg = &m->cfg;
    const ds_layer_w *lw = &m->layers[l];
    int64_t R = st->R, Wr = st->raw.W, Wc = batch_width(st), cw = st->cw;
    int64_t Dh = cfg->head_dim, Di = cfg->index_head_dim, Dr = cfg->qk_rope_head_dim;
    float eps = (float)cfg->rms_norm_eps;
    ds_arena_mark mk = ds_arena_get_mark(a);
    float *win = ds_arena_array(a, (size_t)(2 * R * Wr), sizeof(float));   /* (≤ 2R, Wr) the window's raw rows */
    if (!win) return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld's compressor", (long long)l);
    for (int64_t p = sg->pos0; p < sg->pos0 + sg->n; p++) {
        if ((p + 1) % R) continue;
        int64_t w = (p + 1) / R - 1, w0 = (st->csa && w > 0) ? (w - 1) * R : w * R;
        for (int64_t j = w0; j <= p; j++)
            memcpy(win + (j - w0) * Wr, raw_row(st, brows, Wc, sg->pos0, j), (size_t)Wr * sizeof(float));
        float *ent = st->ent + w * st->We;
        compress_entry(ent, win, w0, w, R, Wr, 0, cw, Dh, st->csa, ape, cw, lw->cmp_norm, eps, Dr, m->inv_freq_cmp);
        if (st->csa)
            compress_entry(ent + Dh, win, w0, w, R, Wr, 2 * cw, 2 * cw + 2 * Di, Di, true, iape, 2 * Di, lw->icmp_norm,
                           eps, Dr, m->inv_freq_cmp);
    }
    ds_arena_release(a, mk);
    return DS_OK;
}

/* After the batch's tokens attended: its last rows go into the rings. */
static void commit_rows(ds_v4state *st, const ds_seg *sg, const float *brows) {
    int64_t Wc = batch_width(st), end = sg->pos0 + sg->n;
    for (int64_t p = DS_MAX(sg->pos0, end - st->kv.S); p < end; p++) ds_v4ring_put(&st->kv, p, brows + (p - sg->pos0) * Wc);
    if (st->R)
        for (int64_t p = DS_MAX(sg->pos0, end - st->raw.S); p < end; p++)
            ds_v4ring_put(&st->raw, p, brows + (p - sg->pos0) * Wc + st->kv.W);
}

/* Scores are computed by blocks of this many entries when few tokens share
 * the layer (decode): the blocks go to the threads. */
#define V4_SCORE_BLOCK 2048
/* Heads per attention job (a multiple of 4: the kernels take heads by fours) */
#define V4_HEAD_GROUP 8

typedef struct attn_ctx {
    const ds_model *m;
    int64_t l;
    const ds_seg *segs;
    const int32_t *row_seg;  /* [T] segment of each row */
    const float *rows;       /* (T, Wc) the batch's new rows */
    const float *q;          /* (T, H·Dh) roped */
    const float *iq, *iw;    /* (T, Hi·Di) roped, (T, Hi) scaled: CSA only */
    const float *inv_freq;
    float *o;                /* (T, H·Dh) */
    float *sc;               /* (T, nEmax) indexer scores when pre-scored (few tokens), else NULL */
    int64_t nEmax, nblk;     /* entries of the last token, score blocks per token */
    const float **keys;      /* (T, kmax) each token's keys: window, then selected entries */
    int64_t kmax;
    int64_t *nk;             /* [T] keys per token */
    int64_t ngrp;            /* head groups per token */
} attn_ctx;

/* token t's position, its layer state and its number of entries */
static const ds_seg *token_seg(const attn_ctx *c, int64_t t, int64_t *p) {
    const ds_seg *sg = &c->segs[c->row_seg[t]];
    *p = sg->pos0 + (t - sg->t0);
    return sg;
}

static int64_t n_entries(const ds_v4state *st, int64_t p) { return st->R > 0 ? (p + 1) / st->R : 0; }

/* jobs (t, b): the indexer's scores of token t's entries in block b */
static void score_worker(void *vctx, int64_t j0, int64_t j1, int tid) {
    attn_ctx *c = vctx;
    const ds_config *cfg = &c->m->cfg;
    int64_t Hi = cfg->index_n_heads, Di = cfg->index_head_dim, Dh = cfg->head_dim;
    float iscale = (float)(1.0 / sqrt((double)Di));
    (void)tid;
    for (int64_t j = j0; j < j1; j++) {
        int64_t t = j / c->nblk, b = j % c->nblk, p;
        const ds_seg *sg = token_seg(c, t, &p);
        const ds_v4state *st = &sg->cache->v4[c->l];
        int64_t nE = n_entries(st, p), w0 = b * V4_SCORE_BLOCK, w1 = DS_MIN(nE, w0 + V4_SCORE_BLOCK);
        if (nE <= cfg->index_topk || w0 >= w1) continue;
        ds_v4_index_scores(c->sc + t * c->nEmax, c->iq + t * Hi * Di, c->iw + t * Hi, st->ent + Dh, st->We, w0, w1, Hi,
                           Di, iscale);
    }
}

/* per token: the indexer's top-k (scoring here unless pre-scored) and the list of keys */
static void select_worker(void *vctx, int64_t t0, int64_t t1, int tid) {
    attn_ctx *c = vctx;
    const ds_config *cfg = &c->m->cfg;
    int64_t Nw = cfg->sliding_window, Hi = cfg->index_n_heads, Di = cfg->index_head_dim, Ktop = cfg->index_topk;
    int64_t Dh = cfg->head_dim;
    float iscale = (float)(1.0 / sqrt((double)Di));
    for (int64_t t = t0; t < t1; t++) {
        int64_t p;
        const ds_seg *sg = token_seg(c, t, &p);
        const ds_v4state *st = &sg->cache->v4[c->l];
        int64_t Wc = batch_width(st), j0 = DS_MAX(0, p - Nw + 1), nwin = p + 1 - j0, nE = n_entries(st, p), nsel = nE;
        const float *brows = c->rows + sg->t0 * Wc;
        const float **keys = c->keys + t * c->kmax;
        for (int64_t i = 0; i < nwin; i++) {   /* the window: earlier positions from the ring, the batch's own from brows */
            int64_t j = j0 + i;
            keys[i] = j >= sg->pos0 ? brows + (j - sg->pos0) * Wc : ds_v4ring_row(&st->kv, j);
        }
        if (st->csa && nE > Ktop) {
            int32_t *sel = ds_scratch_bytes(tid, 2, (size_t)(nE + 1) * sizeof(int32_t) * 3 + (size_t)nE * 8 + 64);
            float *sc = c->sc ? c->sc + t * c->nEmax : ds_scratch(tid, 1, (size_t)nE);
            if (!sel || !sc) { c->nk[t] = -1; continue; }   /* out of memory: reported by the caller */
            if (!c->sc)
                ds_v4_index_scores(sc, c->iq + t * Hi * Di, c->iw + t * Hi, st->ent + Dh, st->We, 0, nE, Hi, Di, iscale);
            ds_dsa_topk(sc, nE, Ktop, sel, sel + Ktop + 1);
            nsel = Ktop;
            for (int64_t i = 0; i < nsel; i++) keys[nwin + i] = st->ent + (int64_t)sel[i] * st->We;
        } else {
            for (int64_t i = 0; i < nsel; i++) keys[nwin + i] = st->ent + i * st->We;
        }
        c->nk[t] = nwin + nsel;
    }
}

/* jobs (t, g): heads [g·V4_HEAD_GROUP, ...) of token t, then their rotation back */
static void heads_worker(void *vctx, int64_t j0, int64_t j1, int tid) {
    attn_ctx *c = vctx;
    const ds_config *cfg = &c->m->cfg;
    const ds_layer_w *lw = &c->m->layers[c->l];
    int64_t H = cfg->n_head, Dh = cfg->head_dim, Dr = cfg->qk_rope_head_dim;
    for (int64_t j = j0; j < j1; j++) {
        int64_t t = j / c->ngrp, h0 = (j % c->ngrp) * V4_HEAD_GROUP, h1 = DS_MIN(H, h0 + V4_HEAD_GROUP), p;
        token_seg(c, t, &p);
        int64_t nk = c->nk[t];
        float *lg = nk >= 0 ? ds_scratch(tid, 3, (size_t)((h1 - h0) * nk + 1)) : NULL;
        if (!lg) continue;   /* out of memory: reported by the caller */
        float *o = c->o + t * H * Dh;
        ds_v4_attn_heads(o, c->q + t * H * Dh, c->keys + t * c->kmax, nk, h0, h1, Dh, c->m->attn_scale, lw->sinks, lg);
        for (int64_t h = h0; h < h1; h++) rope_tail(o + h * Dh, Dh, Dr, c->inv_freq, -p);
    }
}

int ds_v4_attn_forward(const ds_model *m, int64_t l, float *out, const float *xn, int64_t T, const ds_seg *segs,
                       int n_segs, ds_arena *a, ds_err *e) {
    const ds_config *cfg = &m->cfg;
    const ds_layer_w *lw = &m->layers[l];
    int64_t D = cfg->hidden_size, H = cfg->n_head, Dh = cfg->head_dim, Dr = cfg->qk_rope_head_dim, Rq = cfg->q_lora_rank;
    int64_t G = cfg->o_groups, Ro = cfg->o_lora_rank, Gin = H * Dh / G, Hi = cfg->index_n_heads, Di = cfg->index_head_dim;
    float eps = (float)cfg->rms_norm_eps;
    for (int s = 0; s < n_segs; s++) {
        const ds_kvcache *kc = segs[s].cache;
        if (kc->type != DS_KV_F32)   /* q8/fp8 rows would round the compressor's raw gates: far off (~1 logit) */
            return ds_err_set(e, DS_EUNSUPPORTED, "layer %lld: DeepSeek-V4 needs an f32 KV cache (its rows hold the "
                              "compressor's raw gates); --kv-type %s is not supported for V4", (long long)l,
                              ds_kv_type_name(kc->type));
        if (!kc->v4) return ds_err_set(e, DS_EINVAL, "layer %lld: a DeepSeek-V4 layer needs a V4 cache", (long long)l);
        if (!ds_v4cache_holds(&kc->v4[l], segs[s].pos0))
            return ds_err_set(e, DS_ERANGE, "layer %lld: the V4 cache no longer holds the rows position %lld reads "
                              "(its rings keep %lld positions beyond the window); truncate and refill",
                              (long long)l, (long long)segs[s].pos0, (long long)kc->v4_slack);
    }
    const ds_v4state *st0 = &segs[0].cache->v4[l];   /* the layer's shape (the same in every cache of the model) */
    bool csa = st0->csa;
    int64_t R = st0->R, cw = st0->cw, Wc = batch_width(st0), C = Dh;   /* C: c's column in a batch row */
    const float *inv_freq = cfg->attn_kind[l] == DS_ATTN_SWA ? m->inv_freq : m->inv_freq_cmp;
    ds_arena_mark mk = ds_arena_get_mark(a);
    float *qr = ds_arena_array(a, (size_t)(T * Rq), sizeof(float));         /* (T, Rq) */
    float *q = ds_arena_array(a, (size_t)(T * H * Dh), sizeof(float));      /* (T, H·Dh), then the attention output */
    float *o = ds_arena_array(a, (size_t)(T * H * Dh), sizeof(float));      /* (T, H·Dh) */
    float *rows = ds_arena_calloc(a, (size_t)(T * Wc), sizeof(float));      /* (T, Wc) new kv | raw rows */
    float *oa = ds_arena_array(a, (size_t)(T * G * Ro), sizeof(float));     /* (T, G·Ro) */
    int32_t *row_seg = ds_arena_array(a, (size_t)DS_MAX(T, 1), sizeof(int32_t));
    float *iq = csa ? ds_arena_array(a, (size_t)(T * Hi * Di), sizeof(float)) : NULL;  /* (T, Hi·Di) */
    float *iw = csa ? ds_arena_array(a, (size_t)(T * Hi), sizeof(float)) : NULL;       /* (T, Hi) */
    float *ape = R ? ds_arena_array(a, (size_t)(R * cw), sizeof(float)) : NULL;        /* (R, cw) */
    float *iape = csa ? ds_arena_array(a, (size_t)(R * 2 * Di), sizeof(float)) : NULL; /* (R, 2Di) */
    if (!qr || !q || !o || !rows || !oa || !row_seg || (csa && (!iq || !iw || !iape)) || (R && !ape))
        return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld's attention", (long long)l);
    for (int s = 0; s < n_segs; s++)
        for (int64_t t = segs[s].t0; t < segs[s].t0 + segs[s].n; t++) row_seg[t] = s;
    /* projections */
    ds_plan_matmul(segs, n_segs, qr, Rq, xn, D, &lw->q_a_proj, 0, Rq);
    for (int64_t t = 0; t < T; t++) rms(qr + t * Rq, Rq, lw->q_a_norm, eps);
    ds_plan_matmul(segs, n_segs, q, H * Dh, qr, Rq, &lw->q_b_proj, 0, H * Dh);
    ds_plan_matmul(segs, n_segs, rows, Wc, xn, D, &lw->kv_proj, 0, Dh);
    if (R) {
        ds_plan_matmul(segs, n_segs, rows + C, Wc, xn, D, &lw->cmp_kv, 0, cw);
        ds_plan_matmul(segs, n_segs, rows + C + cw, Wc, xn, D, &lw->cmp_gate, 0, cw);
        for (int64_t k = 0; k < R; k++) ds_tensor_row_f32(&lw->cmp_ape, k, 0, cw, ape + k * cw);
    }
    if (csa) {
        ds_plan_matmul(segs, n_segs, rows + C + 2 * cw, Wc, xn, D, &lw->icmp_kv, 0, 2 * Di);
        ds_plan_matmul(segs, n_segs, rows + C + 2 * cw + 2 * Di, Wc, xn, D, &lw->icmp_gate, 0, 2 * Di);
        for (int64_t k = 0; k < R; k++) ds_tensor_row_f32(&lw->icmp_ape, k, 0, 2 * Di, iape + k * 2 * Di);
        ds_plan_matmul(segs, n_segs, iq, Hi * Di, qr, Rq, &lw->idx_q_b, 0, Hi * Di);
        ds_plan_matmul(segs, n_segs, iw, Hi, xn, D, &lw->idx_w, 0, Hi);
    }
    float iws = (float)(1.0 / sqrt((double)Hi));
    for (int s = 0; s < n_segs; s++)
        for (int64_t i = 0; i < segs[s].n; i++) {
            int64_t t = segs[s].t0 + i, p = segs[s].pos0 + i;
            for (int64_t h = 0; h < H; h++) {
                rms(q + t * H * Dh + h * Dh, Dh, NULL, eps);
                rope_tail(q + t * H * Dh + h * Dh, Dh, Dr, inv_freq, p);
            }
            float *kv = rows + t * Wc;
            rms(kv, Dh, lw->kv_norm, eps);
            rope_tail(kv, Dh, Dr, inv_freq, p);
            if (csa) {
                for (int64_t h = 0; h < Hi; h++) rope_tail(iq + t * Hi * Di + h * Di, Di, Dr, m->inv_freq_cmp, p);
                for (int64_t h = 0; h < Hi; h++) iw[t * Hi + h] *= iws;
            }
        }
    int rc;
    if (R)
        for (int s = 0; s < n_segs; s++)
            if ((rc = write_entries(m, l, &segs[s], &segs[s].cache->v4[l], rows + segs[s].t0 * Wc, ape, iape, a, e)))
                return rc;
    /* attention: the indexer's scores (by blocks over the threads when few
     * tokens), each token's top-k and keys, then (token, head group) jobs */
    attn_ctx ac = { m, l, segs, row_seg, rows, q, iq, iw, inv_freq, o, NULL, 0, 0, NULL, 0, NULL,
                    (H + V4_HEAD_GROUP - 1) / V4_HEAD_GROUP };
    int64_t nsel_max = 0;
    for (int s = 0; s < n_segs; s++) {
        int64_t nE = n_entries(&segs[s].cache->v4[l], segs[s].pos0 + segs[s].n - 1);
        ac.nEmax = DS_MAX(ac.nEmax, nE);
        nsel_max = DS_MAX(nsel_max, csa ? DS_MIN(nE, cfg->index_topk) : nE);
    }
    ac.kmax = cfg->sliding_window + nsel_max;
    ac.keys = ds_arena_array(a, (size_t)(T * ac.kmax), sizeof(float *));
    ac.nk = ds_arena_array(a, (size_t)T, sizeof(int64_t));
    if (!ac.keys || !ac.nk) return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld's attention", (long long)l);
    if (csa && ac.nEmax > cfg->index_topk && T < 2 * (int64_t)ds_threads_get()) {
        ac.nblk = (ac.nEmax + V4_SCORE_BLOCK - 1) / V4_SCORE_BLOCK;
        ac.sc = ds_arena_array(a, (size_t)(T * ac.nEmax), sizeof(float));
        if (!ac.sc) return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld's indexer", (long long)l);
        ds_par_for(T * ac.nblk, 1, score_worker, &ac);
    }
    ds_par_for(T, 1, select_worker, &ac);
    ds_par_for(T * ac.ngrp, 1, heads_worker, &ac);
    for (int64_t t = 0; t < T; t++)
        if (ac.nk[t] < 0) return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld's attention", (long long)l);
    for (int s = 0; s < n_segs; s++) commit_rows(&segs[s].cache->v4[l], &segs[s], rows + segs[s].t0 * Wc);
    /* grouped output projection, then wo_b */
    for (int64_t g = 0; g < G; g++)
        ds_plan_matmul(segs, n_segs, oa + g * Ro, G * Ro, o + g * Gin, H * Dh, &lw->o_a_proj, g * Ro, Ro);
    ds_plan_matmul(segs, n_segs, out, D, oa, G * Ro, &lw->o_proj, 0, D);
    ds_arena_release(a, mk);
    return DS_OK;
}
