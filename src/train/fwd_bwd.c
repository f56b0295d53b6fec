/*
 * fwd_bwd.c - one training step: the layer loop forward with saved
 * activations, the three losses, and the backward pass in mirror order.
 *
 *   x = Embed[tok]                                         (N, D)
 *   for l < L:  x += MLA_l(RMSNorm(x));  x += FFN_l(RMSNorm(x), tok)   (FFN by ffn_kind[l])
 *   h = RMSNorm(x; model.norm);  logits = h · lm_headᵀ      -> ce
 *   MTP (layer L), rows t < T-2 of each sequence:
 *     y = eh_proj[enorm(Embed tok[t+1]) ; hnorm(h_t)];  y = Block_L(y)
 *     logits = head(shared_head.norm(y))                    -> mtp (target tok[t+2])
 *   loss = ce + λ·mtp + α·balance
 *   (or, with a ds_token_loss hook, a per-token weighted −log p in place of ce;
 *    no MTP: GRPO's policy gradient)
 * Backward: MTP head -> MTP block -> eh_proj -> (embedding, h); then the
 * LM head, final norm, blocks L-1..0, embedding. See tmodel.h for the exact
 * loss definitions.
 */
#include "tinternal.h"
#include "tgemm.h"
#include "tops.h"
#include "../core/thread.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ds_tacts_free(ds_tacts *a) {
    if (!a) return;
    ds_arena_free(&a->arena);
    free(a->blk);
    free(a);
}

/* activations and gradient scratch: fully overwritten before use, not zeroed */
#define ALLOC(p, n) do { (p) = ds_arena_array(s->a, (size_t)(n), sizeof *(p)); if (!(p)) goto oom; } while (0)
/* gradient accumulators (+=): zeroed */
#define ZALLOC(p, n) do { (p) = ds_arena_calloc(s->a, (size_t)(n), sizeof *(p)); if (!(p)) goto oom; } while (0)

int tr_block_alloc(tr_step *s, int64_t l, tr_block_acts *a, int64_t B, int64_t T, ds_err *e) {
    const ds_config *c = &s->m->cfg;
    int64_t N = B * T, D = c->hidden_size, H = c->n_head, Dq = c->qk_nope_head_dim + c->qk_rope_head_dim;
    int64_t Rq = c->q_lora_rank, Rkv = c->kv_lora_rank, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim;
    memset(a, 0, sizeof *a);
    a->B = B; a->T = T; a->N = N;
    ALLOC(a->x_in, N * D); ALLOC(a->xn1, N * D); ALLOC(a->rstd1, N);
    if (Rq > 0) { ALLOC(a->qa, N * Rq); ALLOC(a->qa_rstd, N); ALLOC(a->qan, N * Rq); }
    ALLOC(a->q, N * H * Dq); ALLOC(a->kva, N * (Rkv + Dr)); ALLOC(a->kv_rstd, N); ALLOC(a->c, N * Rkv);
    ALLOC(a->k, N * H * Dq); ALLOC(a->kv, N * H * (c->qk_nope_head_dim + Dv));
    ALLOC(a->att, B * H * T * T); ALLOC(a->o, N * H * Dv);
    ALLOC(a->x_mid, N * D); ALLOC(a->xn2, N * D); ALLOC(a->rstd2, N);
    if (c->ffn_kind[l] == DS_FFN_DENSE) {
        int64_t I = c->intermediate_size;
        ALLOC(a->gu, N * 2 * I); ALLOC(a->sig, N * I); ALLOC(a->h, N * I);
    } else {  /* DS_FFN_MOE; the config admits no other kind (ds_config_validate) */
        int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, F = c->moe_intermediate_size;
        int64_t FS = c->n_shared_experts * F;
        ALLOC(a->rlog, N * E); ALLOC(a->scores, N * E); ALLOC(a->idx, N * K); ALLOC(a->wt, N * K);
        ALLOC(a->ex_off, E + 1); ALLOC(a->slot_row, N * K); ALLOC(a->slot_k, N * K); ALLOC(a->row_slots, N * K);
        ALLOC(a->egu, N * K * 2 * F); ALLOC(a->esig, N * K * F); ALLOC(a->eh, N * K * F);
        ALLOC(a->ey, N * K * D);
        if (FS > 0) { ALLOC(a->sgu, N * 2 * FS); ALLOC(a->ssig, N * FS); ALLOC(a->sh, N * FS); }
        if (s->want_balance && l < c->n_layer) ALLOC(a->bal_f, B * E);
    }
    return DS_OK;
oom:
    return ds_err_set(e, DS_ENOMEM, "out of memory for the activations of layer %lld (B = %lld, T = %lld)",
                      (long long)l, (long long)B, (long long)T);
}

int tr_block_forward(tr_step *s, int64_t l, tr_block_acts *a, float *x, const int32_t *tok, ds_err *e) {
    ds_tmodel *m = s->m;
    const ds_tlayer *w = &m->W.layers[l];
    int64_t N = a->N, D = m->cfg.hidden_size;
    float eps = (float)m->cfg.rms_norm_eps;
    ds_arena_mark mk = ds_arena_get_mark(s->a);
    float *y = ds_arena_array(s->a, (size_t)(N * D), sizeof(float));
    if (!y) return ds_err_set(e, DS_ENOMEM, "out of memory in layer %lld", (long long)l);
    if (m->cfg.attn_kind[l] != DS_ATTN_MLA || m->cfg.n_streams != 1)
        return ds_err_set(e, DS_EUNSUPPORTED, "layer %lld: only MLA attention on one residual stream is trained",
                          (long long)l);
    /* x: (N, n_streams = 1, D), updated in place */
    memcpy(a->x_in, x, (size_t)(N * D) * sizeof(float));
    /* attention */
    tr_rmsnorm_forward(a->xn1, D, a->rstd1, x, D, w->attn_norm, N, D, eps);
    tr_mla_forward(s, l, a, y);
    tr_vec_add(x, y, N * D);
    memcpy(a->x_mid, x, (size_t)(N * D) * sizeof(float));
    /* feed-forward */
    tr_rmsnorm_forward(a->xn2, D, a->rstd2, x, D, w->ffn_norm, N, D, eps);
    int rc = tr_ffn_forward(s, l, a, y, tok, e);
    if (rc) return rc;
    tr_vec_add(x, y, N * D);
    ds_arena_release(s->a, mk);
    return DS_OK;
}

void tr_block_backward(tr_step *s, int64_t l, tr_block_acts *a, float *dx, tr_grad_scratch *gs) {
    ds_tmodel *m = s->m;
    const ds_tlayer *w = &m->W.layers[l];
    ds_tlayer *g = &m->G.layers[l];
    int64_t N = a->N, D = m->cfg.hidden_size;
    /* feed-forward half: dx (= d out) also flows straight through the residual */
    memset(gs->dxn, 0, (size_t)(N * D) * sizeof(float));
    tr_ffn_backward(s, l, a, dx, gs->dxn, gs);
    tr_rmsnorm_backward(dx, D, g->ffn_norm, gs->dxn, D, a->x_mid, D, w->ffn_norm, a->rstd2, N, D);
    /* attention half */
    memset(gs->dxn, 0, (size_t)(N * D) * sizeof(float));
    tr_mla_backward(s, l, a, dx, gs->dxn, gs);
    tr_rmsnorm_backward(dx, D, g->attn_norm, gs->dxn, D, a->x_in, D, w->attn_norm, a->rstd1, N, D);
}

static int alloc_grad_scratch(tr_step *s, tr_grad_scratch *gs, int64_t N, ds_err *e) {
    const ds_config *c = &s->m->cfg;
    int64_t D = c->hidden_size, H = c->n_head, Dq = c->qk_nope_head_dim + c->qk_rope_head_dim;
    int64_t Rq = DS_MAX(c->q_lora_rank, 1), Rkv = c->kv_lora_rank, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim;
    int64_t E = DS_MAX(c->n_routed_experts, 1), K = DS_MAX(c->num_experts_per_tok, 1), F = DS_MAX(c->moe_intermediate_size, 1);
    int64_t FF = DS_MAX(c->intermediate_size, c->n_shared_experts * c->moe_intermediate_size);
    bool any_moe = ds_tmodel_moe_layers(s->m, NULL) > 0;
    memset(gs, 0, sizeof *gs);
    ALLOC(gs->dxn, N * D); ALLOC(gs->dq, N * H * Dq); ALLOC(gs->dk, N * H * Dq);
    ALLOC(gs->dkv, N * H * (c->qk_nope_head_dim + Dv)); ALLOC(gs->dkva, N * (Rkv + Dr)); ALLOC(gs->dc, N * Rkv);
    ALLOC(gs->dqa, N * Rq); ALLOC(gs->dqan, N * Rq); ALLOC(gs->dout, N * H * Dv);
    ALLOC(gs->dgu, N * 2 * FF); ALLOC(gs->dh, N * FF);
    if (any_moe) {
        ALLOC(gs->dwt, N * K); ALLOC(gs->dscores, N * E);
        ALLOC(gs->eslot_dy, N * K * D); ALLOC(gs->eslot_dx, N * K * D);
        ALLOC(gs->eslot_dgu, N * K * 2 * F); ALLOC(gs->eslot_dh, N * K * F);
    }
    return DS_OK;
oom:
    return ds_err_set(e, DS_ENOMEM, "out of memory for gradient scratch (%lld rows)", (long long)N);
}

static void embed_forward(float *x, const float *table, const int32_t *tok, int64_t n, int64_t D) {
    for (int64_t i = 0; i < n; i++) memcpy(x + i * D, table + (int64_t)tok[i] * D, (size_t)D * sizeof(float));
}

static void embed_backward(float *dtable, const float *dx, const int32_t *tok, int64_t n, int64_t D) {
    for (int64_t i = 0; i < n; i++) tr_vec_add(dtable + (int64_t)tok[i] * D, dx + i * D, D);
}

/* One worker's step: every kernel parallel inside (or serial when nested). No
 * token checks (callers check). tl: the per-token hook (GRPO) or NULL; seq0:
 * this worker's first sequence in the whole batch (the hook's index). */
static int step_one(ds_tmodel *m, const int32_t *tokens, int64_t seq0, int64_t B, int64_t T, const ds_loss_opts *o,
                    const ds_token_loss *tl, ds_losses *out, ds_err *e) {
    const ds_config *c = &m->cfg;
    int64_t D = c->hidden_size, V = c->vocab_size, L = c->n_layer, N = B * T;
    float eps = (float)c->rms_norm_eps;
    memset(out, 0, sizeof *out);
    if (!m->acts) {
        m->acts = calloc(1, sizeof *m->acts);
        if (!m->acts) return ds_err_set(e, DS_ENOMEM, "out of memory");
        m->acts->blk = calloc((size_t)(L + m->n_mtp), sizeof(tr_block_acts));
        if (!m->acts->blk) return ds_err_set(e, DS_ENOMEM, "out of memory");
        m->acts->arena.huge = true;   /* hundreds of MB, streamed through every step */
    }
    ds_arena_reset(&m->acts->arena);
    if (tr_rope_table(m, T)) return ds_err_set(e, DS_ENOMEM, "out of memory for the RoPE table");
    tr_step st = { m, &m->acts->arena, 0.0f, true, 0.0, o->no_grad };
    tr_step *s = &st;
    st.balance_scale = o->no_grad ? 0.0f : o->balance_alpha * o->grad_scale / (float)B;
    bool mtp = m->n_mtp > 0 && T > 2 && !tl;
    int64_t Tm = T - 2, Nm = B * Tm;
    int rc;
    float *x, *hf, *rstd_f, *logits;
    int32_t *tgt;
    ALLOC(x, N * D); ALLOC(hf, N * D); ALLOC(rstd_f, N); ALLOC(logits, N * V); ALLOC(tgt, N);
    for (int64_t l = 0; l < L; l++)
        if ((rc = tr_block_alloc(s, l, &m->acts->blk[l], B, T, e))) return rc;

    /* ---- main model forward */
    embed_forward(x, m->W.embed, tokens, N, D);
    for (int64_t l = 0; l < L; l++)
        if ((rc = tr_block_forward(s, l, &m->acts->blk[l], x, tokens, e))) return rc;
    tr_rmsnorm_forward(hf, D, rstd_f, x, D, m->W.final_norm, N, D, eps);
    TR_FP32(tr_linear_forward(logits, hf, m->W.lm_head, N, D, V));   /* bf16 mode: heads stay fp32 */
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) tgt[b * T + t] = t + 1 < T ? tokens[b * T + t + 1] : -1;
    if (tl) {   /* the per-token hook (GRPO): logits -> softmax, lp -> weights -> dlogits */
        float *lp, *tw;
        ALLOC(lp, N); ALLOC(tw, N);
        tr_token_logprobs(logits, tgt, N, V, lp);
        memset(tw, 0, (size_t)N * sizeof(float));
        tl->weights(tl->ud, seq0, B, T, lp, tw);
        if (!o->no_grad) tr_token_weighted_backward(logits, tgt, N, V, tw);
    } else {
        double ce_n = (double)(B * (T - 1));
        out->ce = tr_crossentropy_forward_backward(logits, tgt, N, V, o->no_grad ? 0.0f : (float)(o->grad_scale / ce_n)) / ce_n;
    }
    out->balance = st.balance_sum / (double)B;
    st.want_balance = false;   /* the MTP layer's routing does not enter the balance loss */

    /* ---- MTP forward */
    float *m_cat = NULL, *m_hin = NULL, *m_rstd_e = NULL, *m_rstd_h = NULL, *m_x = NULL, *m_xout = NULL;
    float *m_hn = NULL, *m_rstd_o = NULL, *m_logits = NULL;
    int32_t *m_tok = NULL, *m_tgt = NULL;
    tr_block_acts *ma = mtp ? &m->acts->blk[L] : NULL;
    const ds_tlayer *mw = mtp ? &m->W.layers[L] : NULL;
    if (mtp) {
        if ((rc = tr_block_alloc(s, L, ma, B, Tm, e))) return rc;
        ALLOC(m_cat, Nm * 2 * D); ALLOC(m_hin, Nm * D); ALLOC(m_rstd_e, Nm); ALLOC(m_rstd_h, Nm); ALLOC(m_x, Nm * D);
        ALLOC(m_xout, Nm * D); ALLOC(m_hn, Nm * D); ALLOC(m_rstd_o, Nm); ALLOC(m_logits, Nm * V);
        ALLOC(m_tok, Nm); ALLOC(m_tgt, Nm);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < Tm; t++) {
                int64_t r = b * Tm + t;
                m_tok[r] = tokens[b * T + t + 1];
                m_tgt[r] = tokens[b * T + t + 2];
                memcpy(m_hin + r * D, hf + (b * T + t) * D, (size_t)D * sizeof(float));
            }
        float *emb = m_x;  /* the embedding rows, before normalization (scratch) */
        embed_forward(emb, mw->embed, m_tok, Nm, D);
        tr_rmsnorm_forward(m_cat, 2 * D, m_rstd_e, emb, D, mw->enorm, Nm, D, eps);
        tr_rmsnorm_forward(m_cat + D, 2 * D, m_rstd_h, m_hin, D, mw->hnorm, Nm, D, eps);
        tr_linear_forward(m_x, m_cat, mw->eh_proj, Nm, 2 * D, D);
        memcpy(m_xout, m_x, (size_t)(Nm * D) * sizeof(float));
        if ((rc = tr_block_forward(s, L, ma, m_xout, m_tok, e))) return rc;
        tr_rmsnorm_forward(m_hn, D, m_rstd_o, m_xout, D, mw->head_norm, Nm, D, eps);
        TR_FP32(tr_linear_forward(m_logits, m_hn, mw->head, Nm, D, V));
        float ds = o->no_grad ? 0.0f : (float)(o->grad_scale * o->mtp_weight / (double)Nm);
        out->mtp = tr_crossentropy_forward_backward(m_logits, m_tgt, Nm, V, ds) / (double)Nm;
    }
    out->loss = out->ce + (double)o->mtp_weight * out->mtp + (double)o->balance_alpha * out->balance;
    if (o->no_grad) return DS_OK;

    /* ---- backward */
    tr_grad_scratch gs;
    if ((rc = alloc_grad_scratch(s, &gs, N, e))) return rc;
    float *dhf, *dx;
    ZALLOC(dhf, N * D); ZALLOC(dx, N * D);
    if (mtp) {
        ds_tlayer *mg = &m->G.layers[L];
        float *dhn, *dxm, *dcat, *demb, *dhin;
        ZALLOC(dhn, Nm * D); ZALLOC(dxm, Nm * D); ZALLOC(dcat, Nm * 2 * D); ZALLOC(demb, Nm * D); ZALLOC(dhin, Nm * D);
        TR_FP32(tr_linear_backward(dhn, mg->head, m_logits, m_hn, mw->head, Nm, D, V));
        tr_rmsnorm_backward(dxm, D, mg->head_norm, dhn, D, m_xout, D, mw->head_norm, m_rstd_o, Nm, D);
        tr_block_backward(s, L, ma, dxm, &gs);
        tr_linear_backward(dcat, mg->eh_proj, dxm, m_cat, mw->eh_proj, Nm, 2 * D, D);
        /* re-gather the embedding rows (m_x was overwritten by eh_proj) */
        float *emb = dhn;
        embed_forward(emb, mw->embed, m_tok, Nm, D);
        tr_rmsnorm_backward(demb, D, mg->enorm, dcat, 2 * D, emb, D, mw->enorm, m_rstd_e, Nm, D);
        tr_rmsnorm_backward(dhin, D, mg->hnorm, dcat + D, 2 * D, m_hin, D, mw->hnorm, m_rstd_h, Nm, D);
        embed_backward(mg->embed, demb, m_tok, Nm, D);
        for (int64_t b = 0; b < B; b++) tr_vec_add(dhf + b * T * D, dhin + b * Tm * D, Tm * D);
    }
    TR_FP32(tr_linear_backward(dhf, m->G.lm_head, logits, hf, m->W.lm_head, N, D, V));
    tr_rmsnorm_backward(dx, D, m->G.final_norm, dhf, D, x, D, m->W.final_norm, rstd_f, N, D);
    for (int64_t l = L - 1; l >= 0; l--) tr_block_backward(s, l, &m->acts->blk[l], dx, &gs);
    embed_backward(m->G.embed, dx, tokens, N, D);
    return DS_OK;
oom:
    return ds_err_set(e, DS_ENOMEM, "out of memory for a step of %lld x %lld tokens", (long long)B, (long long)T);
}

int tr_step_one(ds_tmodel *m, const int32_t *tokens, int64_t B, int64_t T, const ds_loss_opts *o,
                ds_losses *out, ds_err *e) {
    return step_one(m, tokens, 0, B, T, o, NULL, out, e);
}

/* ---------------------------------------------------------------- data-parallel dispatch */

typedef struct {
    ds_tmodel *m;
    const int32_t *tokens;
    int64_t B, T, nw;
    const ds_loss_opts *o;
    const ds_token_loss *tl;
    ds_losses ls[64];
    int rc[64];
    ds_err err[64];
} dp_ctx;

static void dp_worker(void *vc, int64_t w0, int64_t w1, int tid) {
    (void)tid;
    dp_ctx *c = vc;
    for (int64_t w = w0; w < w1; w++) {
        int64_t b0 = c->B * w / c->nw, b1 = c->B * (w + 1) / c->nw;
        ds_tmodel *wm = w == 0 ? c->m : c->m->workers[w - 1];
        ds_loss_opts o = *c->o;
        o.grad_scale = c->o->grad_scale * (float)(b1 - b0) / (float)c->B;   /* (the token hook ignores it) */
        if (w > 0) {
            if (!o.no_grad) memset(wm->g, 0, (size_t)wm->n_floats * sizeof(float));
            ds_tmodel_reset_load(wm);
        }
        c->rc[w] = step_one(wm, c->tokens + b0 * c->T, b0, b1 - b0, c->T, &o, c->tl, &c->ls[w], &c->err[w]);
    }
}

typedef struct { ds_tmodel *m; int nw; } reduce_ctx;

static void reduce_worker(void *vc, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    reduce_ctx *c = vc;
    float *g = c->m->g;
    for (int w = 0; w < c->nw - 1; w++) {
        const float *s = c->m->workers[w]->g;
        for (int64_t i = i0; i < i1; i++) g[i] += s[i];
    }
}

int ds_tmodel_step(ds_tmodel *m, const int32_t *tokens, int64_t B, int64_t T, const ds_loss_opts *o,
                   ds_losses *out, ds_err *e) {
    return ds_tmodel_step_weighted(m, tokens, B, T, o, NULL, out, e);
}

int ds_tmodel_step_weighted(ds_tmodel *m, const int32_t *tokens, int64_t B, int64_t T, const ds_loss_opts *o,
                            const ds_token_loss *tl, ds_losses *out, ds_err *e) {
    memset(out, 0, sizeof *out);
    if (B < 1 || T < 2) return ds_err_set(e, DS_EINVAL, "a training step needs B >= 1 sequences of T >= 2 tokens");
    for (int64_t i = 0; i < B * T; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return ds_err_set(e, DS_ERANGE, "token id %d at position %lld is out of range (vocab_size %lld)", tokens[i],
                              (long long)i, (long long)m->cfg.vocab_size);
    int64_t nw = DS_MIN((int64_t)ds_threads_get(), B);
    if (nw > 64) nw = 64;
    if (nw <= 1) return step_one(m, tokens, 0, B, T, o, tl, out, e);
    int wrc = tr_workers_reserve(m, nw - 1, e);
    if (wrc) return wrc;
    dp_ctx *c = calloc(1, sizeof *c);
    if (!c) return ds_err_set(e, DS_ENOMEM, "out of memory");
    *c = (dp_ctx){ .m = m, .tokens = tokens, .B = B, .T = T, .nw = nw, .o = o, .tl = tl };
    ds_par_for(nw, 1, dp_worker, c);
    int rc = DS_OK;
    for (int64_t w = 0; w < nw; w++) {
        if (c->rc[w] && !rc) { rc = ds_err_set(e, c->rc[w], "%s", c->err[w].msg); }
        double f = (double)(B * (w + 1) / nw - B * w / nw) / (double)B;
        out->loss += f * c->ls[w].loss;
        out->ce += f * c->ls[w].ce;
        out->mtp += f * c->ls[w].mtp;
        out->balance += f * c->ls[w].balance;
    }
    free(c);
    if (rc) return rc;
    if (!o->no_grad) {
        reduce_ctx rcx = { m, (int)nw };
        ds_par_for(m->n_floats, 1 << 14, reduce_worker, &rcx);
        int64_t nl = (m->cfg.n_layer + m->n_mtp) * DS_MAX(m->cfg.n_routed_experts, 1);
        for (int64_t w = 0; w < nw - 1; w++)
            for (int64_t i = 0; i < nl; i++) m->load[i] += m->workers[w]->load[i];
    }
    return DS_OK;
}
