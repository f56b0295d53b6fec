/*
 * model_gguf.c - opening a llama.cpp-style GGUF file (architecture
 * `deepseek2`) into the same ds_model / ds_layer_w structs model.c fills
 * from a Hugging Face folder. Does not own the forward pass or the format
 * parser (io/gguf.c); the writer side is model/convert.c.
 *
 * Metadata (prefix `deepseek2.`) -> ds_config:
 *   block_count = L + nextn_predict_layers, embedding_length D,
 *   feed_forward_length I, expert_feed_forward_length F, attention.head_count H,
 *   attention.q_lora_rank Rq (absent or 0: plain attn_q), attention.kv_lora_rank Rkv,
 *   rope.dimension_count Dr, attention.key_length_mla / value_length_mla = Dn+Dr / Dv
 *   (legacy files: key_length / value_length), leading_dense_block_count,
 *   expert_count / expert_used_count / expert_shared_count, expert_group_count /
 *   expert_group_used_count, expert_gating_func (1 softmax, 2 sigmoid),
 *   expert_weights_scale, expert_weights_norm, rope.freq_base,
 *   rope.scaling.{type,factor,original_context_length,yarn_beta_fast,yarn_beta_slow},
 *   rope.scaling.yarn_log_multiplier = 0.1·mscale_all_dim (llama.cpp's legacy x0.1).
 * Routing: sigmoid -> noaux_tc (V3; exp_probs_b is the selection bias),
 * softmax with groups > 1 -> group_limited_greedy (V2), else greedy.
 *
 * Tensors (ggml ne reversed into our row-major shapes):
 *   token_embd (V, D), output_norm (D), output (V, D) or tied,
 *   blk.N.attn_norm, attn_q_a (Rq, D), attn_q_a_norm, attn_q_b (H·Dq, Rq) | attn_q (H·Dq, D),
 *   attn_kv_a_mqa (Rkv+Dr, D), attn_kv_a_norm (Rkv),
 *   attn_k_b (H, Rkv, Dn) = W_UKᵀ -> wk_b and attn_v_b (H, Dv, Rkv) -> wv_b (MLA form),
 *   or attn_kv_b (H·(Dn+Dv), Rkv) -> kv_b_proj (legacy form), attn_output (D, H·Dv),
 *   ffn_norm, ffn_{gate,up,down} (dense), ffn_gate_inp (E, D), exp_probs_b.bias (E),
 *   ffn_{gate,up}_exps (E, F, D) or ffn_gate_up_exps (E, 2F, D), ffn_down_exps (E, D, F)
 *   -> per-expert 2-D views, ffn_{gate,up,down}_shexp;
 *   MTP block N = L: nextn.{eh_proj (D, 2D), enorm, hnorm, shared_head_norm,
 *   embed_tokens, shared_head_head} plus an ordinary layer.
 * Norm vectors and the router bias are converted to owned fp32 arrays;
 * everything else stays a view into the mapping.
 */
#include "model.h"
#include "model_internal.h"
#include "rope.h"
#include "../io/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct gbinder {
    ds_model *m;
    ds_gguf *g;
    ds_err *e;
    bool *used;          /* [n_tensors] */
    int64_t n_params, bytes;
} gbinder;

static const ds_gguf_tensor *gfind(gbinder *b, const char *name) {
    const ds_gguf_tensor *t = ds_gguf_find_tensor(b->g, name);
    if (t) b->used[t - b->g->tensors] = true;
    return t;
}

static int shape_err(gbinder *b, const ds_tensor *v, const char *name, int nd, const int64_t *want) {
    char got[96] = "", exp[96] = "";
    for (int i = 0; i < v->ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)v->shape[i]);
    for (int i = 0; i < nd; i++)
        snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? ", " : "", (long long)want[i]);
    return ds_err_set(b->e, DS_EFORMAT, "%s: tensor '%s' has shape [%s], expected [%s]", b->g->what, name, got, exp);
}

/* A weight of nd dims with the given row-major shape, any computable dtype. */
static int bind_w(gbinder *b, const char *name, int nd, const int64_t *shape, ds_tensor *out) {
    const ds_gguf_tensor *t = gfind(b, name);
    if (!t) return ds_err_set(b->e, DS_ENOTFOUND, "%s: missing tensor '%s'", b->g->what, name);
    int rc = ds_gguf_view(b->g, t, out, b->e);
    if (rc) return rc;
    bool ok = out->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = out->shape[i] == shape[i];
    if (!ok) return shape_err(b, out, name, nd, shape);
    if (out->dtype == DS_DTYPE_I32 || out->dtype == DS_DTYPE_I64)
        return ds_err_set(b->e, DS_EUNSUPPORTED, "%s: tensor '%s' has an integer type", b->g->what, name);
    b->n_params += ds_tensor_numel(out);
    b->bytes += (int64_t)out->nbytes;
    return DS_OK;
}

static int bind_2d(gbinder *b, const char *name, int64_t d0, int64_t d1, ds_tensor *out) {
    int64_t s[2] = { d0, d1 };
    return bind_w(b, name, 2, s, out);
}

/* A vector [d0] converted to owned fp32. */
static int bind_vec(gbinder *b, const char *name, int64_t d0, float **out) {
    ds_tensor v;
    int64_t s[1] = { d0 };
    int rc = bind_w(b, name, 1, s, &v);
    if (rc) return rc;
    *out = ds_alloc((size_t)d0 * sizeof(float));
    if (!*out) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
    ds_tensor_to_f32(&v, *out);
    return DS_OK;
}

#define BN(buf, l, suffix) (snprintf(buf, sizeof buf, "blk.%lld.%s", (long long)(l), suffix), buf)

/* Stacked experts (E, r, c) -> per-expert 2-D views; `row0`/`rows` select a
 * row range of every expert (the merged gate_up form). */
static void expert_views(const ds_tensor *stack, int64_t x, int64_t row0, int64_t rows, ds_tensor *out) {
    *out = ds_tensor_slice(stack, x);
    size_t rb = ds_dtype_row_bytes(out->dtype, out->shape[1]);
    out->data = (const uint8_t *)out->data + rb * (size_t)row0;
    if (out->rp) out->rp = row0 % 8 == 0 ? (const uint8_t *)out->rp + rb * (size_t)row0 : NULL;
    out->shape[0] = rows;
    out->nbytes = rb * (size_t)rows;
}

static int bind_layer(gbinder *b, int64_t l, bool mtp) {
    ds_model *m = b->m;
    const ds_config *c = &m->cfg;
    ds_layer_w *w = &m->layers[l];
    int64_t D = c->hidden_size, H = c->n_head, Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim, Dq = Dn + Dr;
    int64_t Rkv = c->kv_lora_rank, Dv = c->v_head_dim;
    char n[128];
    int rc;
    if ((rc = bind_vec(b, BN(n, l, "attn_norm.weight"), D, &w->attn_norm))) return rc;
    if ((rc = bind_vec(b, BN(n, l, "ffn_norm.weight"), D, &w->ffn_norm))) return rc;
    if (c->q_lora_rank > 0) {
        if ((rc = bind_2d(b, BN(n, l, "attn_q_a.weight"), c->q_lora_rank, D, &w->q_a_proj))) return rc;
        if ((rc = bind_vec(b, BN(n, l, "attn_q_a_norm.weight"), c->q_lora_rank, &w->q_a_norm))) return rc;
        if ((rc = bind_2d(b, BN(n, l, "attn_q_b.weight"), H * Dq, c->q_lora_rank, &w->q_b_proj))) return rc;
    } else {
        if ((rc = bind_2d(b, BN(n, l, "attn_q.weight"), H * Dq, D, &w->q_proj))) return rc;
    }
    if ((rc = bind_2d(b, BN(n, l, "attn_kv_a_mqa.weight"), Rkv + Dr, D, &w->kv_a_proj))) return rc;
    if ((rc = bind_vec(b, BN(n, l, "attn_kv_a_norm.weight"), Rkv, &w->kv_a_norm))) return rc;
    if (ds_gguf_find_tensor(b->g, BN(n, l, "attn_kv_b.weight"))) {
        if ((rc = bind_2d(b, n, H * (Dn + Dv), Rkv, &w->kv_b_proj))) return rc;
    } else {
        int64_t sk[3] = { H, Rkv, Dn }, sv[3] = { H, Dv, Rkv };
        if ((rc = bind_w(b, BN(n, l, "attn_k_b.weight"), 3, sk, &w->wk_b))) return rc;
        if ((rc = bind_w(b, BN(n, l, "attn_v_b.weight"), 3, sv, &w->wv_b))) return rc;
    }
    if ((rc = bind_2d(b, BN(n, l, "attn_output.weight"), D, H * Dv, &w->o_proj))) return rc;

    w->is_moe = ds_config_layer_is_moe(c, l);
    if (!w->is_moe) {
        int64_t I = c->intermediate_size;
        if ((rc = bind_2d(b, BN(n, l, "ffn_gate.weight"), I, D, &w->mlp.gate))) return rc;
        if ((rc = bind_2d(b, BN(n, l, "ffn_up.weight"), I, D, &w->mlp.up))) return rc;
        if ((rc = bind_2d(b, BN(n, l, "ffn_down.weight"), D, I, &w->mlp.down))) return rc;
    } else {
        int64_t E = c->n_routed_experts, F = c->moe_intermediate_size;
        if ((rc = bind_2d(b, BN(n, l, "ffn_gate_inp.weight"), E, D, &w->router))) return rc;
        if (ds_gguf_find_tensor(b->g, BN(n, l, "exp_probs_b.bias"))) {
            if (c->topk_method != DS_TOPK_NOAUX_TC)
                return ds_err_set(b->e, DS_EFORMAT, "%s: unexpected tensor '%s' (the gating function is not sigmoid)",
                                  b->g->what, n);
            if ((rc = bind_vec(b, n, E, &w->router_bias))) return rc;
        }
        ds_tensor gate, up, down;
        int64_t sd[3] = { E, D, F };
        if ((rc = bind_w(b, BN(n, l, "ffn_down_exps.weight"), 3, sd, &down))) return rc;
        bool merged = ds_gguf_find_tensor(b->g, BN(n, l, "ffn_gate_up_exps.weight")) != NULL;
        if (merged) {
            int64_t s[3] = { E, 2 * F, D };
            if ((rc = bind_w(b, n, 3, s, &gate))) return rc;
            up = gate;
        } else {
            int64_t s[3] = { E, F, D };
            if ((rc = bind_w(b, BN(n, l, "ffn_gate_exps.weight"), 3, s, &gate))) return rc;
            if ((rc = bind_w(b, BN(n, l, "ffn_up_exps.weight"), 3, s, &up))) return rc;
        }
        w->experts = calloc((size_t)E, sizeof *w->experts);
        if (!w->experts) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
        for (int64_t x = 0; x < E; x++) {
            expert_views(&gate, x, 0, F, &w->experts[x].gate);
            expert_views(&up, x, merged ? F : 0, F, &w->experts[x].up);
            expert_views(&down, x, 0, D, &w->experts[x].down);
        }
        if (c->n_shared_experts > 0) {
            int64_t S = c->n_shared_experts * F;
            if ((rc = bind_2d(b, BN(n, l, "ffn_gate_shexp.weight"), S, D, &w->shared.gate))) return rc;
            if ((rc = bind_2d(b, BN(n, l, "ffn_up_shexp.weight"), S, D, &w->shared.up))) return rc;
            if ((rc = bind_2d(b, BN(n, l, "ffn_down_shexp.weight"), D, S, &w->shared.down))) return rc;
        }
    }
    if (mtp) {
        if ((rc = bind_vec(b, BN(n, l, "nextn.enorm.weight"), D, &w->enorm))) return rc;
        if ((rc = bind_vec(b, BN(n, l, "nextn.hnorm.weight"), D, &w->hnorm))) return rc;
        if ((rc = bind_2d(b, BN(n, l, "nextn.eh_proj.weight"), D, 2 * D, &w->eh_proj))) return rc;
        if (ds_gguf_find_tensor(b->g, BN(n, l, "nextn.shared_head_norm.weight"))) {
            if ((rc = bind_vec(b, n, D, &w->head_norm))) return rc;
        } else {
            return ds_err_set(b->e, DS_ENOTFOUND, "%s: missing tensor '%s'", b->g->what, n);
        }
        if (ds_gguf_find_tensor(b->g, BN(n, l, "nextn.embed_tokens.weight")))
            if ((rc = bind_2d(b, n, c->vocab_size, D, &w->embed))) return rc;
        if (ds_gguf_find_tensor(b->g, BN(n, l, "nextn.shared_head_head.weight")))
            if ((rc = bind_2d(b, n, c->vocab_size, D, &w->head))) return rc;
    }
    return DS_OK;
}

/* ---------------------------------------------------------------- config */

#define KEY(buf, suffix) (snprintf(buf, sizeof buf, "deepseek2.%s", suffix), buf)

int ds_model_gguf_config(const ds_gguf *g, ds_config *c, ds_err *e) {
    memset(c, 0, sizeof *c);
    char k[128], s[64];
    int rc;
    if ((rc = ds_gguf_get_str(g, "general.architecture", true, s, sizeof s, e))) return rc;
    if (strcmp(s, "deepseek2") != 0)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: architecture '%s' is not deepseek2", g->what, s);
#define GI(key, req, lo, hi, dst) do { if ((rc = ds_gguf_get_int(g, KEY(k, key), req, lo, hi, dst, e))) return rc; } while (0)
#define GN(key, req, lo, hi, dst) do { if ((rc = ds_gguf_get_num(g, KEY(k, key), req, lo, hi, dst, e))) return rc; } while (0)
    int64_t blocks = 0;
    GI("block_count", true, 1, 1024, &blocks);
    GI("nextn_predict_layers", false, 0, 8, &c->n_mtp);
    if (c->n_mtp >= blocks)
        return ds_err_set(e, DS_EFORMAT, "%s: nextn_predict_layers = %lld leaves no main layers of %lld", g->what,
                          (long long)c->n_mtp, (long long)blocks);
    c->n_layer = blocks - c->n_mtp;
    GI("embedding_length", true, 1, 1 << 17, &c->hidden_size);
    GI("feed_forward_length", true, 1, 1 << 20, &c->intermediate_size);
    GI("attention.head_count", true, 1, 4096, &c->n_head);
    GI("attention.q_lora_rank", false, 0, 1 << 16, &c->q_lora_rank);
    GI("attention.kv_lora_rank", true, 1, 1 << 16, &c->kv_lora_rank);
    GI("rope.dimension_count", true, 2, 4096, &c->qk_rope_head_dim);
    int64_t kl = 0, vl = 0;
    if (ds_gguf_find_kv(g, KEY(k, "attention.key_length_mla"))) {
        GI("attention.key_length_mla", true, 1, 8192, &kl);
        GI("attention.value_length_mla", true, 1, 4096, &vl);
    } else {
        GI("attention.key_length", true, 1, 8192, &kl);
        GI("attention.value_length", true, 1, 4096, &vl);
    }
    if (kl <= c->qk_rope_head_dim)
        return ds_err_set(e, DS_EFORMAT, "%s: key length %lld must exceed rope.dimension_count %lld", g->what, (long long)kl,
                          (long long)c->qk_rope_head_dim);
    c->qk_nope_head_dim = kl - c->qk_rope_head_dim;
    c->v_head_dim = vl;
    GI("leading_dense_block_count", false, 0, 1024, &c->first_k_dense_replace);
    c->moe_layer_freq = 1;
    GI("expert_count", false, 0, 1 << 16, &c->n_routed_experts);
    GI("expert_shared_count", false, 0, 1024, &c->n_shared_experts);
    if (c->n_routed_experts > 0 || c->n_shared_experts > 0) {
        GI("expert_feed_forward_length", true, 1, 1 << 20, &c->moe_intermediate_size);
        GI("expert_used_count", c->n_routed_experts > 0, 0, 1 << 16, &c->num_experts_per_tok);
    }
    c->n_group = c->topk_group = 1;
    GI("expert_group_count", false, 1, 1 << 16, &c->n_group);
    GI("expert_group_used_count", false, 1, 1 << 16, &c->topk_group);
    int64_t gating = 1;
    GI("expert_gating_func", false, 0, 4, &gating);
    if (gating == 2) {
        c->scoring_func = DS_SCORE_SIGMOID;
        c->topk_method = DS_TOPK_NOAUX_TC;
        c->arch = DS_ARCH_V3;
    } else if (gating <= 1) {
        c->scoring_func = DS_SCORE_SOFTMAX;
        c->topk_method = c->n_group > 1 ? DS_TOPK_GROUP_LIMITED : DS_TOPK_GREEDY;
        c->arch = DS_ARCH_V2;
    } else {
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: expert_gating_func = %lld is not softmax (1) or sigmoid (2)", g->what,
                          (long long)gating);
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", c->arch == DS_ARCH_V3 ? "deepseek_v3" : "deepseek_v2");
    c->routed_scaling_factor = 1.0;
    GN("expert_weights_scale", false, 0.0, 1e6, &c->routed_scaling_factor);
    c->norm_topk_prob = false;
    if ((rc = ds_gguf_get_bool(g, KEY(k, "expert_weights_norm"), false, &c->norm_topk_prob, e))) return rc;
    c->rms_norm_eps = 1e-6;
    GN("attention.layer_norm_rms_epsilon", false, 0.0, 1.0, &c->rms_norm_eps);
    c->rope_theta = 10000.0;
    GN("rope.freq_base", false, 1.0, 1e12, &c->rope_theta);
    c->max_position_embeddings = 4096;
    GI("context_length", false, 1, 1ll << 32, &c->max_position_embeddings);
    char rt[32] = "";
    if ((rc = ds_gguf_get_str(g, KEY(k, "rope.scaling.type"), false, rt, sizeof rt, e))) return rc;
    if (!strcmp(rt, "yarn")) {
        c->yarn = true;
        c->rope_factor = 1.0; c->rope_orig_max_pos = 4096; c->beta_fast = 32; c->beta_slow = 1;
        GN("rope.scaling.factor", true, 1.0, 1e6, &c->rope_factor);
        GN("rope.scaling.original_context_length", false, 1, 1e12, &c->rope_orig_max_pos);
        GN("rope.scaling.yarn_beta_fast", false, 0, 1e6, &c->beta_fast);
        GN("rope.scaling.yarn_beta_slow", false, 0, 1e6, &c->beta_slow);
        double lm = 0;
        GN("rope.scaling.yarn_log_multiplier", false, 0, 1e3, &lm);
        /* llama.cpp's converter stores 0.1·mscale_all_dim; released configs have mscale == mscale_all_dim */
        c->mscale_all_dim = lm / 0.1;
        c->mscale = c->mscale_all_dim;
    } else if (rt[0] && strcmp(rt, "none") != 0) {
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: rope.scaling.type '%s' is not supported (yarn or none)", g->what, rt);
    }
#undef GI
#undef GN
    /* vocabulary size: the key, else the embedding's rows */
    c->vocab_size = 0;
    if ((rc = ds_gguf_get_int(g, "deepseek2.vocab_size", false, 1, 1 << 24, &c->vocab_size, e))) return rc;
    const ds_gguf_tensor *emb = ds_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return ds_err_set(e, DS_ENOTFOUND, "%s: missing tensor 'token_embd.weight'", g->what);
    if (c->vocab_size == 0) c->vocab_size = emb->n_dims == 2 ? emb->ne[1] : 0;
    c->bos_token_id = c->eos_token_id = -1;
    if ((rc = ds_gguf_get_int(g, "tokenizer.ggml.bos_token_id", false, 0, 1 << 24, &c->bos_token_id, e))) return rc;
    if ((rc = ds_gguf_get_int(g, "tokenizer.ggml.eos_token_id", false, 0, 1 << 24, &c->eos_token_id, e))) return rc;
    c->tie_word_embeddings = ds_gguf_find_tensor(g, "output.weight") == NULL;
    ds_config_derive_layers(c);
    return ds_config_validate(c, g->what, e);
}

/* ------------------------------------------------------------------ open */

int ds_model_open_gguf(ds_model **out, const char *path, ds_err *e) {
    *out = NULL;
    ds_dtype_init();
    ds_model *m = calloc(1, sizeof *m);
    ds_gguf *g = calloc(1, sizeof *g);
    bool *used = NULL;
    int rc;
    if (!m || !g) { free(m); free(g); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    m->gguf = g;
    m->dir = strdup(path);
    if (!m->dir) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    if ((rc = ds_gguf_open(g, path, e))) goto fail;
    if ((rc = ds_model_gguf_config(g, &m->cfg, e))) goto fail;
    const ds_config *c = &m->cfg;
    m->expert_lo = 0, m->expert_hi = c->n_routed_experts;
    used = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *used);
    m->layers = calloc((size_t)(c->n_layer + c->n_mtp), sizeof *m->layers);
    if (!used || !m->layers) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    gbinder b = { m, g, e, used, 0, 0 };
    if ((rc = bind_2d(&b, "token_embd.weight", c->vocab_size, c->hidden_size, &m->embed))) goto fail;
    if ((rc = bind_vec(&b, "output_norm.weight", c->hidden_size, &m->final_norm))) goto fail;
    if (!c->tie_word_embeddings) {
        if ((rc = bind_2d(&b, "output.weight", c->vocab_size, c->hidden_size, &m->lm_head))) goto fail;
    } else {
        m->lm_head = m->embed;
    }
    for (int64_t l = 0; l < c->n_layer; l++)
        if ((rc = bind_layer(&b, l, false))) goto fail;
    m->n_mtp = 0;
    for (int64_t l = c->n_layer; l < c->n_layer + c->n_mtp; l++) {
        char n[128];
        if (!ds_gguf_find_tensor(g, BN(n, l, "nextn.eh_proj.weight"))) break;  /* trunk-only file */
        if ((rc = bind_layer(&b, l, true))) goto fail;
        m->n_mtp++;
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!used[i]) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: unexpected tensor '%s' (not part of a deepseek2 model with this metadata)",
                            path, g->tensors[i].name);
            goto fail;
        }
    m->n_params = b.n_params;
    m->file_bytes = b.bytes;
    m->inv_freq = ds_alloc((size_t)(c->qk_rope_head_dim / 2) * sizeof(float));
    if (!m->inv_freq) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    ds_rope_inv_freq(c, m->inv_freq);
    m->attn_scale = (float)ds_config_softmax_scale(c);
    if ((rc = ds_model_repack(m, e))) goto fail;
    free(used);
    *out = m;
    return DS_OK;
fail:
    free(used);
    ds_model_close(m);
    return rc;
}

void ds_model_gguf_release(ds_model *m) {
    if (!m || !m->gguf) return;
    ds_gguf_close(m->gguf);
    free(m->gguf);
    m->gguf = NULL;
}

bool ds_path_is_gguf(const char *path) {
    size_t n = strlen(path);
    struct stat st;
    if (n <= 5 || strcmp(path + n - 5, ".gguf") != 0) return false;
    return stat(path, &st) != 0 || !S_ISDIR(st.st_mode);
}
