/*
 * model_gguf.c - opening a llama.cpp-style GGUF file (architecture
 * `deepseek2`, V3.2's `deepseek32` = deepseek2 + indexer keys, or V4's
 * `deepseek4`, see gguf_config_v4 below) into the same ds_model /
 * ds_layer_w structs model.c fills from a Hugging Face folder. Does not own the forward pass or the format
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
 * Tensors: the table of tensors.h (GGUF names, ggml ne reversed into our
 * row-major shapes): attn_kv_b or its per-head split attn_k_b (H, Rkv, Dn)
 * = W_UKᵀ -> wk_b and attn_v_b (H, Dv, Rkv) -> wv_b; routed experts stacked
 * (E, F, D) (or gate and up merged, (E, 2F, D)) -> per-expert 2-D views of
 * the owned experts only; MTP block N = L: nextn.* plus an ordinary layer.
 * Norm vectors and the router bias are converted to owned fp32 arrays;
 * V4's tid2eid to an owned int32 table; everything else, V4's MXFP4
 * experts included (read in place by mxfp4.h's kernels), stays a view into
 * the mapping.
 */
#include "model.h"
#include "model_internal.h"
#include "rope.h"
#include "tensors.h"
#include "../io/gguf.h"
#include "../tensor/mxfp4.h"

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

/* Stacked experts (E, r, c) -> the 2-D view of expert x; `row0`/`rows` select a
 * row range of it (the merged gate_up form). */
static void expert_views(const ds_tensor *stack, int64_t x, int64_t row0, int64_t rows, ds_tensor *out) {
    *out = ds_tensor_slice(stack, x);
    size_t rb = ds_dtype_row_bytes(out->dtype, out->shape[1]);
    out->data = (const uint8_t *)out->data + rb * (size_t)row0;
    if (out->rp) out->rp = row0 % 8 == 0 ? (const uint8_t *)out->rp + rb * (size_t)row0 : NULL;
    out->shape[0] = rows;
    out->nbytes = rb * (size_t)rows;
}

/* V4's hash-routing table (I32/I64 [V, K], llama.cpp: ne {K, V}) into an
 * owned int32 array, every entry an expert id. */
static int bind_index(gbinder *b, const char *name, const int64_t *shape, int32_t **out) {
    const ds_gguf_tensor *t = gfind(b, name);
    if (!t) return ds_err_set(b->e, DS_ENOTFOUND, "%s: missing tensor '%s'", b->g->what, name);
    ds_tensor v;
    int rc = ds_gguf_view(b->g, t, &v, b->e);
    if (rc) return rc;
    if (v.dtype != DS_DTYPE_I32 && v.dtype != DS_DTYPE_I64)
        return ds_err_set(b->e, DS_EFORMAT, "%s: tensor '%s' must be an integer table (I32 or I64)", b->g->what, name);
    if (v.ndim != 2 || v.shape[0] != shape[0] || v.shape[1] != shape[1]) return shape_err(b, &v, name, 2, shape);
    int64_t n = shape[0] * shape[1], E = b->m->cfg.n_routed_experts;
    int32_t *o = ds_alloc((size_t)n * sizeof *o);   /* freed by ds_model_close (the table's index kinds) */
    if (!o) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        int64_t x;
        if (v.dtype == DS_DTYPE_I64) memcpy(&x, (const uint8_t *)v.data + i * 8, 8);
        else { int32_t x32; memcpy(&x32, (const uint8_t *)v.data + i * 4, 4); x = x32; }
        if (x < 0 || x >= E) {
            ds_free(o);
            return ds_err_set(b->e, DS_ERANGE, "%s: tensor '%s' [%lld, %lld] = %lld is not an expert id in [0, %lld)",
                              b->g->what, name, (long long)(i / shape[1]), (long long)(i % shape[1]), (long long)x,
                              (long long)E);
        }
        o[i] = (int32_t)x;
    }
    *out = o;
    b->n_params += n;
    b->bytes += (int64_t)v.nbytes;
    return DS_OK;
}

/* Routed experts stored as ggml MXFP4 (E, r, c): each owned expert a view
 * (r, c) of MXFP4 rows into the mapping, read in place by the kernels
 * (mxfp4.h) - nothing resident beyond the page cache. An expert-parallel
 * rank views its experts [lo, hi) only. */
static int bind_mxfp4_experts(gbinder *b, const ds_gguf_tensor *t, const ds_tkind *k, int64_t l, const int64_t *st) {
    ds_model *m = b->m;
    int64_t E = st[0], r = st[1], c = st[2];
    if (t->n_dims != 3 || t->ne[2] != E || t->ne[1] != r || t->ne[0] != c || c % DS_MXFP4_BLOCK)
        return ds_err_set(b->e, DS_EFORMAT, "%s: MXFP4 tensor '%s' must have ggml shape {%lld, %lld, %lld} (rows a "
                          "multiple of 32 values)", b->g->what, t->name, (long long)c, (long long)r, (long long)E);
    size_t per = (size_t)(r * (c / DS_MXFP4_BLOCK)) * DS_MXFP4_BLOCK_BYTES;   /* bytes per expert */
    for (int64_t x = m->expert_lo; x < m->expert_hi; x++) {
        ds_tensor *w = ds_tk_field(k, m, l, x);
        memset(w, 0, sizeof *w);
        w->name = t->name;
        w->dtype = DS_DTYPE_MXFP4;
        w->ndim = 2;
        w->shape[0] = r, w->shape[1] = c;
        w->data = (const uint8_t *)t->data + (size_t)x * per;
        w->nbytes = per;
    }
    b->n_params += E * r * c;
    b->bytes += (int64_t)t->nbytes;
    return DS_OK;
}

static bool gstored(gbinder *b, const ds_tkind *k, int64_t l) {
    char n[128];
    ds_tk_name(k, true, l, -1, n, sizeof n);
    return ds_gguf_find_tensor(b->g, n) != NULL;
}

/* Binds kind k of layer l into its field; a routed-expert kind is checked
 * whole (E, r, c) and viewed per owned expert. */
static int bind_kind(gbinder *b, const ds_tkind *k, int64_t l, ds_tneed need) {
    ds_model *m = b->m;
    char n[128];
    int64_t s[3];
    int nd = ds_tk_shape(k, &m->cfg, s);
    ds_tk_name(k, true, l, -1, n, sizeof n);
    if ((need == DS_TN_MAYBE || (k->flags & DS_TF_GGUF_OPTIONAL)) && !ds_gguf_find_tensor(b->g, n)) return DS_OK;
    if (k->flags & DS_TF_INDEX) return bind_index(b, n, s, ds_tk_field(k, m, l, -1));
    if (k->ndim == 1) return bind_vec(b, n, s[0], ds_tk_field(k, m, l, -1));
    if (k->scope != DS_TS_EXPERT) return bind_w(b, n, nd, s, ds_tk_field(k, m, l, -1));
    ds_tensor stack;
    int64_t st[3] = { m->cfg.n_routed_experts, s[0], s[1] }, F = m->cfg.moe_intermediate_size;
    const ds_gguf_tensor *gt = ds_gguf_find_tensor(b->g, n);
    if (gt && gt->type == DS_GGML_MXFP4) {
        gfind(b, n);
        if (m->cfg.arch != DS_ARCH_V4)
            return ds_err_set(b->e, DS_EUNSUPPORTED, "%s: tensor '%s' is MXFP4, which deepseek.c reads for DeepSeek-V4's "
                              "routed experts only", b->g->what, n);
        return bind_mxfp4_experts(b, gt, k, l, st);
    }
    int rc = bind_w(b, n, 3, st, &stack);
    if (rc) return rc;
    for (int64_t x = m->expert_lo; x < m->expert_hi; x++) {
        ds_mlp_w *w = &m->layers[l].experts[x];
        if (k == &ds_tkinds[DS_TK_EXP_GATE_UP]) {
            expert_views(&stack, x, 0, F, &w->gate);
            expert_views(&stack, x, F, F, &w->up);
        } else {
            expert_views(&stack, x, 0, s[0], ds_tk_field(k, m, l, x));
        }
    }
    return DS_OK;
}

/* Binds every tensor of layer l (-1: the model's own) by the table, in the
 * layouts the file uses (attn_kv_b or attn_k_b + attn_v_b; gate and up
 * experts apart or merged). */
static int bind_layer(gbinder *b, int64_t l) {
    ds_model *m = b->m;
    const ds_config *c = &m->cfg;
    unsigned forms = 0;
    int rc;
    if (l >= 0) {
        forms = (gstored(b, &ds_tkinds[DS_TK_KV_B], l) ? 0 : DS_FORM_KV_SPLIT) |
                (gstored(b, &ds_tkinds[DS_TK_EXP_GATE_UP], l) ? DS_FORM_GU_MERGED : 0);
        if ((m->layers[l].is_moe = ds_config_layer_is_moe(c, l)) &&
            !(m->layers[l].experts = calloc((size_t)c->n_routed_experts, sizeof(ds_mlp_w))))
            return ds_err_set(b->e, DS_ENOMEM, "out of memory");
    }
    for (int i = 0; i < DS_TK_COUNT; i++) {
        ds_tneed need = ds_tk_need(&ds_tkinds[i], c, l, forms);
        if (need && (rc = bind_kind(b, &ds_tkinds[i], l, need))) return rc;
    }
    if (l >= 0 && m->layers[l].is_moe && c->topk_method != DS_TOPK_NOAUX_TC &&
        gstored(b, &ds_tkinds[DS_TK_ROUTER_BIAS], l)) {
        char n[128];
        ds_tk_name(&ds_tkinds[DS_TK_ROUTER_BIAS], true, l, -1, n, sizeof n);
        return ds_err_set(b->e, DS_EFORMAT, "%s: unexpected tensor '%s' (the gating function is not sigmoid)", b->g->what, n);
    }
    return DS_OK;
}

/* ---------------------------------------------------------------- config */

#define KEY(buf, suffix) (snprintf(buf, sizeof buf, "%s.%s", arch, suffix), buf)

static int gguf_config_v4(const ds_gguf *g, ds_config *c, ds_err *e);

int ds_model_gguf_config(const ds_gguf *g, ds_config *c, ds_err *e) {
    memset(c, 0, sizeof *c);
    char k[128], s[64];
    int rc;
    if ((rc = ds_gguf_get_str(g, "general.architecture", true, s, sizeof s, e))) return rc;
    if (!strcmp(s, "deepseek4")) return gguf_config_v4(g, c, e);
    if (strcmp(s, "deepseek2") != 0 && strcmp(s, "deepseek32") != 0)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: architecture '%s' is not deepseek2, deepseek32 or deepseek4", g->what, s);
    const bool v32 = !strcmp(s, "deepseek32");   /* V3.2: deepseek2's keys and tensors plus the indexer's */
    const char *arch = v32 ? "deepseek32" : "deepseek2";
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
    snprintf(c->model_type, sizeof c->model_type, "%s",
             v32 ? "deepseek_v32" : c->arch == DS_ARCH_V3 ? "deepseek_v3" : "deepseek_v2");
    if (v32) {
        GI("attention.indexer.head_count", true, 1, 4096, &c->index_n_heads);
        GI("attention.indexer.key_length", true, 2, 4096, &c->index_head_dim);
        GI("attention.indexer.top_k", true, 1, 1ll << 32, &c->index_topk);
    }
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
    if ((rc = ds_gguf_get_int(g, KEY(k, "vocab_size"), false, 1, 1 << 24, &c->vocab_size, e))) return rc;
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

/* -------------------------------------------------- deepseek4 metadata */

#define KEY4(buf, suffix) (snprintf(buf, sizeof buf, "deepseek4.%s", suffix), buf)

/* A per-layer float array key (llama.cpp's swiglu_clamp_*) or scalar that
 * must hold one value for every layer: ours is one config field. */
static int v4_uniform(const ds_gguf *g, const char *key, int64_t L, double *out, ds_err *e) {
    const ds_gguf_kv *kv = ds_gguf_find_kv(g, key);
    if (!kv) return DS_OK;
    if (kv->type != DS_GGUF_ARRAY) return ds_gguf_get_num(g, key, true, 0.0, 1e9, out, e);
    if (kv->arr_type == DS_GGUF_STRING || kv->arr_type == DS_GGUF_ARRAY || (int64_t)kv->n < L)
        return ds_err_set(e, DS_EFORMAT, "%s: '%s' must be a number or %lld numbers", g->what, key, (long long)L);
    for (int64_t l = 0; l < L; l++)
        if (ds_gguf_arr_num(kv, (uint64_t)l) != ds_gguf_arr_num(kv, 0))
            return ds_err_set(e, DS_EUNSUPPORTED, "%s: '%s' differs between layers (%g at layer 0, %g at layer %lld)",
                              g->what, key, ds_gguf_arr_num(kv, 0), ds_gguf_arr_num(kv, (uint64_t)l), (long long)l);
    *out = ds_gguf_arr_num(kv, 0);
    return DS_OK;
}

/* llama.cpp's `deepseek4` keys (conversion/deepseek.py, DeepseekV4Model;
 * src/models/deepseek4.cpp) -> the ds_config config_v4.c makes from a folder:
 *   block_count L (+ nextn_predict_layers), embedding_length D, attention.head_count H
 *   (head_count_kv 1), attention.key_length = value_length = Dh, rope.dimension_count Dr,
 *   attention.q_lora_rank, attention.sliding_window, expert_feed_forward_length F,
 *   expert_count / expert_used_count / expert_shared_count (1), expert_weights_scale,
 *   expert_weights_norm (true), expert_gating_func (4 sqrtsoftplus, 2 sigmoid, 1 softmax),
 *   swiglu_clamp_exp / _shexp (per layer, one value), attention.indexer.{head_count,
 *   key_length, top_k}, attention.output_group_count / output_lora_rank,
 *   attention.compress_ratios [L] (0 sliding, 4 CSA, other HCA: llama.cpp's rule),
 *   attention.compress_rope_freq_base, hyper_connection.{count, sinkhorn_iterations,
 *   epsilon}, hash_layer_count (the first layers route by tid2eid), rope.freq_base (the
 *   sliding layers), rope.scaling.* YaRN (the compressed layers, as a release config's
 *   rope_scaling), attention.layer_norm_rms_epsilon, context_length, vocab_size. */
static int gguf_config_v4(const ds_gguf *g, ds_config *c, ds_err *e) {
    char k[128];
    int rc;
#define GI(key, req, lo, hi, dst) do { if ((rc = ds_gguf_get_int(g, KEY4(k, key), req, lo, hi, dst, e))) return rc; } while (0)
#define GN(key, req, lo, hi, dst) do { if ((rc = ds_gguf_get_num(g, KEY4(k, key), req, lo, hi, dst, e))) return rc; } while (0)
    c->arch = DS_ARCH_V4;
    snprintf(c->model_type, sizeof c->model_type, "deepseek_v4");
    int64_t blocks = 0, kvh = 1, kl = 0, vl = 0, shared = 1, gating = 4;
    GI("block_count", true, 1, DS_MAX_LAYERS, &blocks);
    GI("nextn_predict_layers", false, 0, 8, &c->n_mtp);
    if (c->n_mtp >= blocks)
        return ds_err_set(e, DS_EFORMAT, "%s: nextn_predict_layers = %lld leaves no main layers of %lld", g->what,
                          (long long)c->n_mtp, (long long)blocks);
    c->n_layer = blocks - c->n_mtp;
    c->n_mtp = 0;   /* V4's MTP layers are not built (as from a folder); their tensors are an error below */
    GI("embedding_length", true, 1, 1 << 17, &c->hidden_size);
    GI("attention.head_count", true, 1, 4096, &c->n_head);
    GI("attention.head_count_kv", false, 1, 4096, &kvh);
    if (kvh != 1)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: attention.head_count_kv = %lld; DeepSeek-V4 has one shared K=V head",
                          g->what, (long long)kvh);
    GI("attention.key_length", true, 2, 1 << 14, &kl);
    GI("attention.value_length", false, 2, 1 << 14, &vl);
    if (vl && vl != kl)
        return ds_err_set(e, DS_EFORMAT, "%s: attention.value_length %lld != key_length %lld (V4: K = V)", g->what,
                          (long long)vl, (long long)kl);
    c->head_dim = c->v_head_dim = kl;
    GI("rope.dimension_count", true, 2, 1 << 14, &c->qk_rope_head_dim);
    c->qk_nope_head_dim = c->head_dim - c->qk_rope_head_dim;
    GI("attention.q_lora_rank", true, 1, 1 << 16, &c->q_lora_rank);
    GI("attention.sliding_window", true, 1, 1ll << 32, &c->sliding_window);
    GI("expert_count", true, 1, 1 << 16, &c->n_routed_experts);
    GI("expert_used_count", true, 1, 1 << 16, &c->num_experts_per_tok);
    GI("expert_shared_count", false, 0, 1024, &shared);
    if (shared != 1)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: expert_shared_count = %lld; DeepSeek-V4 has one shared expert",
                          g->what, (long long)shared);
    c->n_shared_experts = 1;
    double F = 0;
    if ((rc = v4_uniform(g, KEY4(k, "expert_feed_forward_length"), blocks, &F, e))) return rc;
    if (F < 1 || F > (1 << 20) || F != (int64_t)F)
        return ds_err_set(e, DS_EFORMAT, "%s: deepseek4.expert_feed_forward_length is missing or not a width", g->what);
    c->moe_intermediate_size = c->intermediate_size = (int64_t)F;
    c->routed_scaling_factor = 1.0;
    GN("expert_weights_scale", false, 0.0, 1e6, &c->routed_scaling_factor);
    c->norm_topk_prob = true;
    if ((rc = ds_gguf_get_bool(g, KEY4(k, "expert_weights_norm"), false, &c->norm_topk_prob, e))) return rc;
    if (!c->norm_topk_prob)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: expert_weights_norm = false: DeepSeek-V4's router always "
                          "renormalises the chosen weights", g->what);
    GI("expert_gating_func", false, 1, 4, &gating);
    if (gating == 4) c->scoring_func = DS_SCORE_SQRTSOFTPLUS;
    else if (gating == 2) c->scoring_func = DS_SCORE_SIGMOID;
    else if (gating == 1) c->scoring_func = DS_SCORE_SOFTMAX;
    else
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: expert_gating_func = %lld is not softmax (1), sigmoid (2) or "
                          "sqrtsoftplus (4)", g->what, (long long)gating);
    c->topk_method = DS_TOPK_NOAUX_TC;
    c->n_group = c->topk_group = 1;
    c->moe_layer_freq = 1;
    c->swiglu_limit = 10.0;
    double shl = -1;
    if ((rc = v4_uniform(g, KEY4(k, "swiglu_clamp_exp"), blocks, &c->swiglu_limit, e))) return rc;
    if ((rc = v4_uniform(g, KEY4(k, "swiglu_clamp_shexp"), blocks, &shl, e))) return rc;
    if (shl >= 0 && shl != c->swiglu_limit)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: swiglu_clamp_shexp %g differs from swiglu_clamp_exp %g", g->what, shl,
                          c->swiglu_limit);
    GI("attention.indexer.head_count", true, 1, 4096, &c->index_n_heads);
    GI("attention.indexer.key_length", true, 2, 1 << 14, &c->index_head_dim);
    GI("attention.indexer.top_k", true, 1, 1ll << 32, &c->index_topk);
    GI("attention.output_group_count", true, 1, 4096, &c->o_groups);
    GI("attention.output_lora_rank", true, 1, 1 << 16, &c->o_lora_rank);
    c->compress_rope_theta = 160000.0;
    GN("attention.compress_rope_freq_base", false, 1.0, 1e12, &c->compress_rope_theta);
    GI("hyper_connection.count", true, 1, 64, &c->n_streams);
    c->hc_sinkhorn_iters = 20;
    c->hc_eps = 1e-6;
    GI("hyper_connection.sinkhorn_iterations", false, 1, 1000, &c->hc_sinkhorn_iters);
    GN("hyper_connection.epsilon", false, 0.0, 1.0, &c->hc_eps);
    int64_t hout = 0, nh = 0;
    GI("embedding_length_out", false, 1, 1ll << 32, &hout);
    if (hout && hout != c->n_streams * c->hidden_size)
        return ds_err_set(e, DS_EFORMAT, "%s: embedding_length_out %lld != hyper_connection.count x embedding_length",
                          g->what, (long long)hout);
    GI("hash_layer_count", false, 0, blocks, &nh);
    c->rms_norm_eps = 1e-6;
    GN("attention.layer_norm_rms_epsilon", false, 0.0, 1.0, &c->rms_norm_eps);
    c->rope_theta = 10000.0;
    GN("rope.freq_base", false, 1.0, 1e12, &c->rope_theta);
    c->max_position_embeddings = 4096;
    GI("context_length", false, 1, 1ll << 32, &c->max_position_embeddings);
    char rt[32] = "";
    if ((rc = ds_gguf_get_str(g, KEY4(k, "rope.scaling.type"), false, rt, sizeof rt, e))) return rc;
    if (!strcmp(rt, "yarn")) {   /* the compressed layers' RoPE (model.c: the sliding ones stay plain) */
        c->yarn = true;
        c->rope_factor = 1.0; c->rope_orig_max_pos = (double)c->max_position_embeddings; c->beta_fast = 32; c->beta_slow = 1;
        c->mscale = 1.0; c->mscale_all_dim = 0.0;
        GN("rope.scaling.factor", true, 1.0, 1e6, &c->rope_factor);
        GN("rope.scaling.original_context_length", false, 1, 1e12, &c->rope_orig_max_pos);
        GN("rope.scaling.yarn_beta_fast", false, 0, 1e6, &c->beta_fast);
        GN("rope.scaling.yarn_beta_slow", false, 0, 1e6, &c->beta_slow);
        if (!(c->beta_fast > 0.0 && c->beta_slow > 0.0))
            return ds_err_set(e, DS_ERANGE, "%s: yarn beta_fast / beta_slow must be > 0", g->what);
    } else if (rt[0] && strcmp(rt, "none") != 0) {
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: rope.scaling.type '%s' is not supported (yarn or none)", g->what, rt);
    }
    /* layer kinds: compress_ratios and hash_layer_count */
    const ds_gguf_kv *cr = ds_gguf_find_kv(g, KEY4(k, "attention.compress_ratios"));
    if (!cr || cr->type != DS_GGUF_ARRAY || cr->arr_type == DS_GGUF_STRING || cr->arr_type == DS_GGUF_ARRAY ||
        (int64_t)cr->n < blocks)
        return ds_err_set(e, DS_EFORMAT, "%s: deepseek4.attention.compress_ratios must list block_count = %lld ratios",
                          g->what, (long long)blocks);
    memset(c->attn_kind, DS_ATTN_UNSET, sizeof c->attn_kind);
    memset(c->ffn_kind, DS_FFN_UNSET, sizeof c->ffn_kind);
    c->compress_rate_csa = 4, c->compress_rate_hca = 0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        double r = ds_gguf_arr_num(cr, (uint64_t)l);
        if (r < 0 || r > (1 << 20) || r != (int64_t)r)
            return ds_err_set(e, DS_EFORMAT, "%s: compress_ratios[%lld] = %g is not a ratio", g->what, (long long)l, r);
        if (r != 0 && r != 4 && c->compress_rate_hca && r != c->compress_rate_hca)
            return ds_err_set(e, DS_EUNSUPPORTED, "%s: compress_ratios[%lld] = %g, but an earlier layer compresses by "
                              "%lld (one heavily compressed rate)", g->what, (long long)l, r,
                              (long long)c->compress_rate_hca);
        c->attn_kind[l] = r == 0 ? DS_ATTN_SWA : r == 4 ? DS_ATTN_CSA : DS_ATTN_HCA;
        if (r != 0 && r != 4) c->compress_rate_hca = (int64_t)r;
        c->ffn_kind[l] = l < nh ? DS_FFN_HASH_MOE : DS_FFN_MOE;
    }
    if (!c->compress_rate_hca) c->compress_rate_hca = 128;
#undef GI
#undef GN
    c->vocab_size = 0;
    if ((rc = ds_gguf_get_int(g, "deepseek4.vocab_size", false, 1, 1 << 24, &c->vocab_size, e))) return rc;
    const ds_gguf_tensor *emb = ds_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return ds_err_set(e, DS_ENOTFOUND, "%s: missing tensor 'token_embd.weight'", g->what);
    if (c->vocab_size == 0) c->vocab_size = emb->n_dims == 2 ? emb->ne[1] : 0;
    c->bos_token_id = 0, c->eos_token_id = 1;
    if ((rc = ds_gguf_get_int(g, "tokenizer.ggml.bos_token_id", false, 0, 1 << 24, &c->bos_token_id, e))) return rc;
    if ((rc = ds_gguf_get_int(g, "tokenizer.ggml.eos_token_id", false, 0, 1 << 24, &c->eos_token_id, e))) return rc;
    c->tie_word_embeddings = ds_gguf_find_tensor(g, "output.weight") == NULL;
    int64_t H = c->n_head, Dh = c->head_dim, Dr = c->qk_rope_head_dim;
    if (Dr % 2 || Dr > Dh || Dr > c->index_head_dim)
        return ds_err_set(e, DS_EINVAL, "%s: %lld roped dims must be even and within key_length %lld and indexer "
                          "key_length %lld", g->what, (long long)Dr, (long long)Dh, (long long)c->index_head_dim);
    if ((H * Dh) % c->o_groups)
        return ds_err_set(e, DS_EINVAL, "%s: output_group_count %lld does not divide head_count x key_length", g->what,
                          (long long)c->o_groups);
    if (c->num_experts_per_tok > c->n_routed_experts)
        return ds_err_set(e, DS_ERANGE, "%s: expert_used_count %lld exceeds expert_count %lld", g->what,
                          (long long)c->num_experts_per_tok, (long long)c->n_routed_experts);
    return ds_config_validate(c, g->what, e);
}

/* ------------------------------------------------------------------ open */

int ds_model_open_gguf(ds_model **out, const char *path, const ds_model_opts *o, ds_err *e) {
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
    if ((rc = ds_gguf_open_model(g, path, e))) goto fail;
    if ((rc = ds_model_gguf_config(g, &m->cfg, e))) goto fail;
    if ((rc = ds_model_expert_range(m, o, e))) goto fail;
    const ds_config *c = &m->cfg;
    used = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *used);
    m->layers = calloc((size_t)(c->n_layer + c->n_mtp), sizeof *m->layers);
    if (!used || !m->layers) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    gbinder b = { m, g, e, used, 0, 0 };
    if ((rc = bind_layer(&b, -1))) goto fail;
    if (!ds_tensor_present(&m->lm_head)) m->lm_head = m->embed;  /* tied */
    for (int64_t l = 0; l < c->n_layer; l++)
        if ((rc = bind_layer(&b, l))) goto fail;
    m->n_mtp = 0;
    for (int64_t l = c->n_layer; l < c->n_layer + c->n_mtp; l++) {
        if (!gstored(&b, &ds_tkinds[DS_TK_EH_PROJ], l)) break;  /* trunk-only file */
        if ((rc = bind_layer(&b, l))) goto fail;
        m->n_mtp++;
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!used[i]) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: unexpected tensor '%s' (not part of a %s model with this metadata%s)",
                            path, g->tensors[i].name, c->arch == DS_ARCH_V4 ? "deepseek4" : "deepseek2",
                            c->arch == DS_ARCH_V4 && !strncmp(g->tensors[i].name, "blk.", 4) &&
                            strstr(g->tensors[i].name, ".nextn.") ? "; V4's MTP layers are not supported yet" : "");
            goto fail;
        }
    m->n_params = b.n_params;
    m->file_bytes = b.bytes;
    if ((rc = ds_model_rope_init(m, e))) goto fail;
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
