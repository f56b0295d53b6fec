/*
 * forward.c - the layer loop: embedding, decoder blocks, final norm, LM
 * head; the MTP module; the naive checking path.
 *
 *   h = Embed[tokens]                                   (T, n_streams = 1, D)
 *   for l < L:  h += Attn_l(RMSNorm(h)); h += FFN_l(RMSNorm(h), tokens)
 *               (kinds per layer: ds_config.attn_kind / ffn_kind)
 *   logits = lm_head(RMSNorm(h))                        (rows, V)
 *
 *   MTP (layer L): x = eh_proj([enorm(Embed[t+1]) ; hnorm(h_t)])
 *                  x = Block_L(x); logits = head(shared_head.norm(x))
 *   V4's MTP block (the release's MTPBlock), h_t the main model's streams
 *   before its collapse (hc, D):
 *                  x[s] = e_proj(enorm(Embed[t+1])) + h_proj(hnorm(h_t[s]))
 *                  x = Block_L(x) (a V4 layer: hyper-connections, its attention
 *                  kind, MoE); logits = head(norm(hc_head_L(x)))
 */
#include "model_internal.h"
#include "../dist/dist.h"
#include "../tensor/ops.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ context */

int ds_ctx_new(ds_ctx **out, ds_err *e) {
    *out = calloc(1, sizeof **out);
    if (!*out) return ds_err_set(e, DS_ENOMEM, "out of memory for a forward context");
    ds_arena_init(&(*out)->arena);
    return DS_OK;
}

void ds_ctx_free(ds_ctx *x) {
    if (!x) return;
    ds_ctx_prefill_end(x);
    ds_arena_free(&x->arena);
    ds_par_env_release(&x->env);
    free(x);
}

void ds_ctx_set_threads(ds_ctx *x, int n) { x->env.n_threads = n > 0 ? n : 0; }

/* A forward call runs with x's scratch and thread count bound to the calling
 * thread; a NULL x gets a context for this call only. */
typedef struct { ds_ctx *x, *own; ds_par_env *prev; } ctx_use;

static int ctx_enter(ctx_use *u, ds_ctx *x, ds_err *e) {
    memset(u, 0, sizeof *u);
    if (!x) {
        int rc = ds_ctx_new(&u->own, e);
        if (rc) return rc;
        x = u->own;
    }
    u->x = x;
    ds_arena_reset(&x->arena);
    x->env.failed = false;
    u->prev = ds_par_env_bind(&x->env);
    return DS_OK;
}

static int ctx_leave(ctx_use *u, int rc, ds_err *e) {
    ds_par_env_bind(u->prev);
    /* consolidate now, not at the next call's start: a call that grew the
     * arena leaves one block sized for it, already faulted in, so the next
     * call of the same size takes no page faults (bench's warm-up prefill
     * then really warms the first timed one) */
    if (!u->own) ds_arena_reset(&u->x->arena);
    if (!rc && u->x->env.failed) rc = ds_err_set(e, DS_ENOMEM, "out of memory for kernel scratch");
    ds_ctx_free(u->own);
    return rc;
}

/* ---------------------------------------------------------- batch plan */

int64_t ds_plan_small_tokens(const ds_seg *segs, int n_segs) {
    int64_t S = 0;
    for (int i = 0; i < n_segs && segs[i].n < DS_TOKEN_BLOCK_MIN; i++) S += segs[i].n;
    return S;
}

int ds_plan_jobs(const ds_seg *segs, int n_segs, ds_mm_job *jobs, float *y, int64_t ldy, const float *x,
                 int64_t ldx, const ds_tensor *w, int64_t r0, int64_t N) {
    int nj = 0, i = 0;
    int64_t S = 0;
    while (i < n_segs && segs[i].n < DS_TOKEN_BLOCK_MIN) S += segs[i++].n;
    if (S > 0) jobs[nj++] = (ds_mm_job){ y, ldy, x, ldx, w, r0, N, S, true };
    for (; i < n_segs; i++)
        jobs[nj++] = (ds_mm_job){ y + segs[i].t0 * ldy, ldy, x + segs[i].t0 * ldx, ldx, w, r0, N, segs[i].n, false };
    return nj;
}

void ds_plan_matmul(const ds_seg *segs, int n_segs, float *y, int64_t ldy, const float *x, int64_t ldx,
                    const ds_tensor *w, int64_t r0, int64_t N) {
    /* many segments: the job list in the caller's scratch (kept between calls) */
    ds_mm_job stack[17], *jobs = n_segs < 16 ? stack
                                             : ds_scratch_bytes(ds_thread_id(), DS_SLOT_PLAN, (size_t)(n_segs + 1) * sizeof *jobs);
    if (!jobs) return;   /* out of memory: the env records it, the forward returns DS_ENOMEM */
    int nj = ds_plan_jobs(segs, n_segs, jobs, y, ldy, x, ldx, w, r0, N);
    ds_matmul_multi(jobs, nj);
}

/* ------------------------------------------------------------- forward */

/* out[T, D] = attention of layer l over xn, by the layer's attention kind */
static int attn_forward(const ds_model *m, int64_t l, float *out, const float *xn, int64_t T, const ds_seg *segs,
                        int n_segs, bool naive, ds_arena *a, ds_err *e) {
    switch (m->cfg.attn_kind[l]) {
    case DS_ATTN_MLA:
    case DS_ATTN_DSA: return ds_mla_forward(m, l, out, xn, T, segs, n_segs, naive, a, e);  /* DSA: mla.c + dsa.c */
    case DS_ATTN_SWA:
    case DS_ATTN_CSA:
    case DS_ATTN_HCA: return ds_v4_attn_forward(m, l, out, xn, T, segs, n_segs, a, e);      /* V4: v4attn.c */
    default:
        return ds_err_set(e, DS_EUNSUPPORTED, "layer %lld: attention kind %d is not implemented", (long long)l,
                          m->cfg.attn_kind[l]);
    }
}

/* A DeepSeek-V4 block on hc streams (hc.c): each of attention and FFN reads
 * the streams collapsed by its mixer and is expanded back into them. */
static int block_v4(const ds_model *m, int64_t l, float *x, const int32_t *tok, int64_t T, const ds_seg *segs,
                    int n_segs, ds_arena *a, ds_err *e) {
    const ds_layer_w *w = &m->layers[l];
    int64_t D = m->cfg.hidden_size, hc = m->cfg.n_streams;
    float eps = (float)m->cfg.rms_norm_eps;
    ds_arena_mark mk = ds_arena_get_mark(a);
    float *u = ds_arena_array(a, (size_t)(T * D), sizeof(float));          /* (T, D) block input */
    float *y = ds_arena_array(a, (size_t)(T * D), sizeof(float));          /* (T, D) block output */
    float *post = ds_arena_array(a, (size_t)(T * hc), sizeof(float));      /* (T, hc) */
    float *comb = ds_arena_array(a, (size_t)(T * hc * hc), sizeof(float)); /* (T, hc, hc) */
    if (!u || !y || !post || !comb) return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld", (long long)l);
    int rc;
    if (ds_hc_pre(m, &w->hc_attn_fn, w->hc_attn_base, w->hc_attn_scale, x, T, segs, n_segs, u, post, comb, a))
        return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld", (long long)l);
    ds_rmsnorm(u, u, w->attn_norm, T, D, eps);
    if ((rc = attn_forward(m, l, y, u, T, segs, n_segs, false, a, e))) return rc;
    ds_hc_post(&m->cfg, x, y, post, comb, T);
    if (ds_hc_pre(m, &w->hc_ffn_fn, w->hc_ffn_base, w->hc_ffn_scale, x, T, segs, n_segs, u, post, comb, a))
        return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld", (long long)l);
    ds_rmsnorm(u, u, w->ffn_norm, T, D, eps);
    if ((rc = ds_ffn_forward(m, l, y, u, tok, T, segs, n_segs, a, e))) return rc;
    ds_hc_post(&m->cfg, x, y, post, comb, T);
    ds_arena_release(a, mk);
    return DS_OK;
}

int ds_block_forward(const ds_model *m, int64_t l, float *x, const int32_t *tok, int64_t T, const ds_seg *segs,
                     int n_segs, bool naive, ds_arena *a, ds_err *e) {
    const ds_layer_w *w = &m->layers[l];
    int64_t D = m->cfg.hidden_size;
    float eps = (float)m->cfg.rms_norm_eps;
    /* x: (T, n_streams, D); with one stream the block reads and updates it in place */
    if (m->cfg.arch == DS_ARCH_V4) return block_v4(m, l, x, tok, T, segs, n_segs, a, e);
    if (m->cfg.n_streams != 1)
        return ds_err_set(e, DS_EUNSUPPORTED, "layer %lld: %lld residual streams (hyper-connections) are not implemented",
                          (long long)l, (long long)m->cfg.n_streams);
    ds_arena_mark mk = ds_arena_get_mark(a);
    float *xn = ds_arena_array(a, (size_t)(T * D), sizeof(float));   /* (T, D) written whole by the norms */
    float *y = ds_arena_calloc(a, (size_t)(T * D), sizeof(float));    /* (T, D) */
    if (!xn || !y) return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld", (long long)l);
    int rc;
    /* attention */
    ds_rmsnorm(xn, x, w->attn_norm, T, D, eps);
    if ((rc = attn_forward(m, l, y, xn, T, segs, n_segs, naive, a, e))) return rc;
    ds_add_rows(x, y, T, D);
    /* feed-forward */
    ds_rmsnorm(xn, x, w->ffn_norm, T, D, eps);
    if ((rc = ds_ffn_forward(m, l, y, xn, tok, T, segs, n_segs, a, e))) return rc;
    ds_add_rows(x, y, T, D);
    ds_arena_release(a, mk);
    return DS_OK;
}

static int check_tokens(const ds_model *m, const int32_t *tok, int64_t n, ds_err *e) {
    for (int64_t i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= m->cfg.vocab_size)
            return ds_err_set(e, DS_ERANGE, "token id %d at position %lld is out of range (vocab_size %lld)", tok[i],
                              (long long)i, (long long)m->cfg.vocab_size);
    return DS_OK;
}

/* x (n, n_streams, D): every stream of a token starts as its embedding */
static void embed_streams(const ds_model *m, const int32_t *tok, int64_t n, float *x) {
    int64_t D = m->cfg.hidden_size, hc = m->cfg.n_streams;
    for (int64_t j = 0; j < n; j++) {
        ds_tensor_row_f32(&m->embed, tok[j], 0, D, x + j * hc * D);
        for (int64_t s = 1; s < hc; s++) memcpy(x + (j * hc + s) * D, x + j * hc * D, (size_t)D * sizeof(float));
    }
}

/* *x (T, n_streams, D) -> (T, D): V4's hyper-connection head; one stream is itself */
static int collapse_streams(const ds_model *m, float **x, int64_t T, const ds_seg *segs, int n_segs, ds_arena *a,
                            ds_err *e) {
    if (m->cfg.arch != DS_ARCH_V4) return DS_OK;
    float *h = ds_arena_array(a, (size_t)(T * m->cfg.hidden_size), sizeof(float));
    if (!h || ds_hc_head(m, *x, T, segs, n_segs, h, a)) return ds_err_set(e, DS_ENOMEM, "out of memory");
    *x = h;
    return DS_OK;
}

static int forward_main(const ds_model *m, ds_arena *a, ds_prefill_kv *kvx, ds_seq_chunk *chunks, int n_chunks,
                        float *logits, float *hidden, ds_err *e) {
    const ds_config *c = &m->cfg;
    int64_t D = c->hidden_size, V = c->vocab_size, T = 0;
    int rc;
    for (int i = 0; i < n_chunks; i++) {
        if (chunks[i].n <= 0) return ds_err_set(e, DS_EINVAL, "empty chunk %d", i);
        if ((rc = check_tokens(m, chunks[i].tokens, chunks[i].n, e))) return rc;
        if ((rc = ds_kvcache_reserve(chunks[i].cache, chunks[i].cache->n_past + chunks[i].n, e))) return rc;
        T += chunks[i].n;
    }
    /* (T, n_streams, D) residual streams; one for V2/V3 (validated), the hidden state itself */
    float *x = ds_arena_calloc(a, (size_t)(T * c->n_streams * D), sizeof(float));
    int32_t *tok = ds_arena_array(a, (size_t)T, sizeof(int32_t));         /* (T) token ids, plan order */
    ds_seg *segs = ds_arena_calloc(a, (size_t)n_chunks, sizeof(ds_seg));  /* plan order */
    int *order = ds_arena_calloc(a, (size_t)n_chunks, sizeof(int));       /* plan position -> chunk */
    int *where = ds_arena_calloc(a, (size_t)n_chunks, sizeof(int));       /* chunk -> plan position */
    if (!x || !tok || !segs || !order || !where) return ds_err_set(e, DS_ENOMEM, "out of memory for %lld tokens", (long long)T);
    /* plan order: chunks shorter than a token block first (computed per
     * token), then each longer chunk as its own block (ds_plan_jobs) */
    int k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n_chunks; i++)
            if ((chunks[i].n < DS_TOKEN_BLOCK_MIN) == (pass == 0)) { where[i] = k; order[k++] = i; }
    int64_t t0 = 0;
    for (int p = 0; p < n_chunks; p++) {
        const ds_seq_chunk *ch = &chunks[order[p]];
        segs[p] = (ds_seg){ ch->cache, t0, ch->n, ch->cache->n_past, kvx && kvx->cache == ch->cache ? kvx : NULL };
        embed_streams(m, ch->tokens, ch->n, x + t0 * c->n_streams * D);
        memcpy(tok + t0, ch->tokens, (size_t)ch->n * sizeof(int32_t));
        t0 += ch->n;
    }
    for (int64_t l = 0; l < c->n_layer; l++)
        if ((rc = ds_block_forward(m, l, x, tok, T, segs, n_chunks, false, a, e))) return rc;
    /* the MTP input: V4's streams before the collapse, else the final-normed state */
    int64_t HW = ds_model_hidden_width(m);
    bool v4 = c->arch == DS_ARCH_V4;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            if ((rc = collapse_streams(m, &x, T, segs, n_chunks, a, e))) return rc;
            ds_rmsnorm(x, x, m->final_norm, T, D, (float)c->rms_norm_eps);
        }
        if (!hidden || v4 != (pass == 0)) continue;
        int64_t h0 = 0;
        for (int i = 0; i < n_chunks; i++) {
            memcpy(hidden + h0 * HW, x + segs[where[i]].t0 * HW, (size_t)(chunks[i].n * HW) * sizeof(float));
            h0 += chunks[i].n;
        }
    }
    if (logits) {
        /* LM head over the rows that want logits. Chunks giving fewer than a
         * token block of rows are computed per token (gathered into `small`
         * first); a chunk giving a block writes its logits directly. */
        int64_t *ostart = ds_arena_calloc(a, (size_t)n_chunks, sizeof(int64_t)); /* chunk -> first logits row */
        int64_t n_small = 0, o = 0;
        for (int i = 0; i < n_chunks; i++) {
            int64_t cnt = chunks[i].all_logits ? chunks[i].n : 1;
            if (ostart) ostart[i] = o;
            o += cnt;
            if (cnt < DS_TOKEN_BLOCK_MIN) n_small += cnt;
        }
        /* every chunk small (decode): the gathered rows are the logits rows in
         * order, so the head writes them in place (no buffer to zero and copy:
         * V floats per token, 400 KB for V2's vocabulary); the same per-token
         * job either way, so the same bits */
        bool direct = n_small == o;
        float *rows = ds_arena_calloc(a, (size_t)(DS_MAX(n_small, 1) * D), sizeof(float));  /* (n_small, D) */
        float *out = direct ? logits : ds_arena_calloc(a, (size_t)(DS_MAX(n_small, 1) * V), sizeof(float));   /* (n_small, V) */
        ds_mm_job *jobs = ds_arena_calloc(a, (size_t)n_chunks + 1, sizeof(ds_mm_job));
        if (!ostart || !rows || !out || !jobs) return ds_err_set(e, DS_ENOMEM, "out of memory for the logits");
        int nj = 0;
        int64_t r = 0;
        for (int i = 0; i < n_chunks; i++) {
            int64_t cnt = chunks[i].all_logits ? chunks[i].n : 1;
            int64_t src = segs[where[i]].t0 + (chunks[i].all_logits ? 0 : chunks[i].n - 1);
            if (cnt < DS_TOKEN_BLOCK_MIN) {
                memcpy(rows + r * D, x + src * D, (size_t)(cnt * D) * sizeof(float));
                r += cnt;
            } else {
                jobs[nj++] = (ds_mm_job){ logits + ostart[i] * V, V, x + src * D, D, &m->lm_head, 0, V, cnt, false };
            }
        }
        if (n_small > 0) jobs[nj++] = (ds_mm_job){ out, V, rows, D, &m->lm_head, 0, V, n_small, true };
        ds_matmul_multi(jobs, nj);
        r = 0;
        for (int i = 0; i < n_chunks && !direct; i++) {
            int64_t cnt = chunks[i].all_logits ? chunks[i].n : 1;
            if (cnt >= DS_TOKEN_BLOCK_MIN) continue;
            memcpy(logits + ostart[i] * V, out + r * V, (size_t)(cnt * V) * sizeof(float));
            r += cnt;
        }
    }
    for (int i = 0; i < n_chunks; i++) chunks[i].cache->n_past += chunks[i].n;
    return DS_OK;
}

/* Across the ranks of an MPI job (m->distributed, not m->expert_servers) every rank runs the same
 * step on the same tokens: a hash of the step (kind, positions, tokens) is
 * compared with rank 0's before it runs, so ranks that diverged stop with an
 * error on every rank instead of exchanging mismatched expert rows. */
static int step_agree(const ds_model *m, const char *what, uint64_t h, ds_err *e) {
    if (!m->distributed || m->expert_servers) return DS_OK;  /* expert servers: rank 0 alone runs steps */
    int q, rc = ds_dist_agree(h, &q, e);
    if (rc) return rc;
    if (q >= 0)
        return ds_err_set(e, DS_EINVAL, "rank %d of %lld is not running the same %s step as rank 0 (other tokens "
                          "or positions): the ranks have diverged", q, (long long)m->n_ranks, what);
    return DS_OK;
}

static uint64_t hash_tokens(uint64_t h, const int32_t *tok, int64_t n, int64_t pos) {
    h = ds_dist_hash(h, &n, sizeof n);
    h = ds_dist_hash(h, &pos, sizeof pos);
    return tok ? ds_dist_hash(h, tok, (size_t)n * sizeof *tok) : h;
}

int ds_model_forward(const ds_model *m, ds_ctx *x, ds_seq_chunk *chunks, int n_chunks, float *logits, float *hidden,
                     ds_err *e) {
    if (m->distributed && !m->expert_servers) {
        uint64_t h = ds_dist_hash(DS_DIST_HASH0, "main", 4);
        for (int i = 0; i < n_chunks; i++)
            h = hash_tokens(ds_dist_hash(h, &chunks[i].all_logits, 1), chunks[i].tokens, chunks[i].n,
                            chunks[i].cache->n_past);
        int rc = step_agree(m, "forward", h, e);
        if (rc) return rc;
    }
    ctx_use u;
    int rc = ctx_enter(&u, x, e);
    if (rc) return rc;
    return ctx_leave(&u, forward_main(m, &u.x->arena, u.x->kvx, chunks, n_chunks, logits, hidden, e), e);
}

/* DeepSeek-V4's MTP block over n rows: h (n, hc, D) streams, next_tokens (n) */
static int forward_mtp_v4(const ds_model *m, ds_arena *a, ds_kvcache *cache, const float *h,
                          const int32_t *next_tokens, int64_t n, float *logits, ds_err *e) {
    const ds_config *c = &m->cfg;
    int64_t D = c->hidden_size, V = c->vocab_size, hc = c->n_streams, l = c->n_layer;
    const ds_layer_w *w = &m->layers[l];
    float eps = (float)c->rms_norm_eps;
    int rc;
    float *en = ds_arena_array(a, (size_t)(n * D), sizeof(float));       /* (n, D) enorm(embedding) */
    float *ep = ds_arena_array(a, (size_t)(n * D), sizeof(float));       /* (n, D) e_proj(en) */
    float *hn = ds_arena_array(a, (size_t)(n * hc * D), sizeof(float));  /* (n·hc, D) hnorm per stream */
    float *x = ds_arena_array(a, (size_t)(n * hc * D), sizeof(float));   /* (n, hc, D) block input */
    if (!en || !ep || !hn || !x) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) ds_tensor_row_f32(&m->embed, next_tokens[i], 0, D, en + i * D);
    ds_rmsnorm(en, en, w->enorm, n, D, eps);
    ds_rmsnorm(hn, h, w->hnorm, n * hc, D, eps);
    ds_matmul(ep, D, en, D, &w->e_proj, 0, D, n);
    ds_matmul(x, D, hn, D, &w->h_proj, 0, D, n * hc);
    for (int64_t i = 0; i < n; i++)
        for (int64_t s = 0; s < hc; s++)
            for (int64_t d = 0; d < D; d++) x[(i * hc + s) * D + d] += ep[i * D + d];
    ds_seg seg = { cache, 0, n, cache->mtp_n_past, NULL };
    if ((rc = ds_block_forward(m, l, x, next_tokens, n, &seg, 1, false, a, e))) return rc;
    if (logits) {
        float *y = ds_arena_array(a, (size_t)(n * D), sizeof(float));    /* (n, D) collapsed */
        if (!y || ds_hc_head_w(m, &w->hc_head_fn, w->hc_head_base, w->hc_head_scale, x, n, &seg, 1, y, a))
            return ds_err_set(e, DS_ENOMEM, "out of memory");
        ds_rmsnorm(y, y, w->head_norm, n, D, eps);
        ds_matmul(logits, V, y, D, &m->lm_head, 0, V, n);
    }
    cache->mtp_n_past += n;
    return DS_OK;
}

static int forward_mtp(const ds_model *m, ds_arena *a, ds_kvcache *cache, const float *h, const int32_t *next_tokens,
                       int64_t n, float *logits, ds_err *e) {
    const ds_config *c = &m->cfg;
    if (m->n_mtp < 1) return ds_err_set(e, DS_ENOTFOUND, "%s: the model has no MTP module stored", m->dir);
    if (n <= 0) return DS_OK;
    if (c->arch == DS_ARCH_V4) {
        int rc = check_tokens(m, next_tokens, n, e);
        if (!rc) rc = ds_kvcache_reserve(cache, cache->mtp_n_past + n, e);
        return rc ? rc : forward_mtp_v4(m, a, cache, h, next_tokens, n, logits, e);
    }
    int64_t D = c->hidden_size, V = c->vocab_size, l = c->n_layer;
    const ds_layer_w *w = &m->layers[l];
    float eps = (float)c->rms_norm_eps;
    int rc;
    if ((rc = check_tokens(m, next_tokens, n, e))) return rc;
    if ((rc = ds_kvcache_reserve(cache, cache->mtp_n_past + n, e))) return rc;
    float *cat = ds_arena_calloc(a, (size_t)(n * 2 * D), sizeof(float));  /* (n, 2D) [enorm(emb) | hnorm(h)] */
    float *x = ds_arena_calloc(a, (size_t)(n * D), sizeof(float));        /* (n, D) */
    if (!cat || !x) return ds_err_set(e, DS_ENOMEM, "out of memory");
    const ds_tensor *emb = ds_tensor_present(&w->embed) ? &w->embed : &m->embed;
    for (int64_t i = 0; i < n; i++) {
        float *row = cat + i * 2 * D;
        ds_tensor_row_f32(emb, next_tokens[i], 0, D, row);
        ds_rmsnorm(row, row, w->enorm, 1, D, eps);
        ds_rmsnorm(row + D, h + i * D, w->hnorm, 1, D, eps);
    }
    ds_matmul(x, D, cat, 2 * D, &w->eh_proj, 0, D, n);
    ds_seg seg = { cache, 0, n, cache->mtp_n_past, NULL };
    if ((rc = ds_block_forward(m, l, x, next_tokens, n, &seg, 1, false, a, e))) return rc;
    if (logits) {
        ds_rmsnorm(x, x, w->head_norm, n, D, eps);
        const ds_tensor *head = ds_tensor_present(&w->head) ? &w->head : &m->lm_head;
        ds_matmul(logits, V, x, D, head, 0, V, n);
    }
    cache->mtp_n_past += n;
    return DS_OK;
}

int ds_model_forward_mtp(const ds_model *m, ds_ctx *x, ds_kvcache *cache, const float *h, const int32_t *next_tokens,
                         int64_t n, float *logits, ds_err *e) {
    int rc = step_agree(m, "MTP", hash_tokens(ds_dist_hash(DS_DIST_HASH0, "mtp", 3), next_tokens, n, cache->mtp_n_past), e);
    if (rc) return rc;
    ctx_use u;
    rc = ctx_enter(&u, x, e);
    if (rc) return rc;
    return ctx_leave(&u, forward_mtp(m, &u.x->arena, cache, h, next_tokens, n, logits, e), e);
}

static int forward_naive(const ds_model *m, ds_arena *a, const int32_t *tokens, int64_t T, float *logits, ds_err *e) {
    const ds_config *c = &m->cfg;
    int64_t D = c->hidden_size, V = c->vocab_size;
    int rc;
    if ((rc = check_tokens(m, tokens, T, e))) return rc;
    ds_kvcache cache;
    if ((rc = ds_kvcache_init(&cache, m, T, e))) return rc;
    if ((rc = ds_kvcache_reserve(&cache, T, e))) { ds_kvcache_free(&cache); return rc; }
    float *x = ds_arena_calloc(a, (size_t)(T * c->n_streams * D), sizeof(float));
    if (!x) { ds_kvcache_free(&cache); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    embed_streams(m, tokens, T, x);
    ds_seg seg = { &cache, 0, T, 0, NULL };
    for (int64_t l = 0; l < c->n_layer && !rc; l++) rc = ds_block_forward(m, l, x, tokens, T, &seg, 1, true, a, e);
    if (!rc) rc = collapse_streams(m, &x, T, &seg, 1, a, e);
    if (!rc) {
        ds_rmsnorm(x, x, m->final_norm, T, D, (float)c->rms_norm_eps);
        ds_matmul(logits, V, x, D, &m->lm_head, 0, V, T);
    }
    ds_kvcache_free(&cache);
    return rc;
}

int ds_model_forward_naive(const ds_model *m, ds_ctx *x, const int32_t *tokens, int64_t T, float *logits, ds_err *e) {
    int rc = step_agree(m, "naive forward", hash_tokens(ds_dist_hash(DS_DIST_HASH0, "naive", 5), tokens, T, 0), e);
    if (rc) return rc;
    ctx_use u;
    rc = ctx_enter(&u, x, e);
    if (rc) return rc;
    return ctx_leave(&u, forward_naive(m, &u.x->arena, tokens, T, logits, e), e);
}
