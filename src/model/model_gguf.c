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
 * Tensors: the table of tensors.h (GGUF names, ggml ne reversed into our
 * row-major shapes): attn_kv_b or its per-head split attn_k_b (H, Rkv, Dn)
 * = W_UKᵀ -> wk_b and attn_v_b (H, Dv, Rkv) -> wv_b; routed experts stacked
 * (E, F, D) (or gate and up merged, (E, 2F, D)) -> per-expert 2-D views of
 * the owned experts only; MTP block N = L: nextn.* plus an ordinary layer.
 * Norm vectors and the router bias are converted to owned fp32 arrays;
 * everything else stays a view into the mapping.
 */
#include "model.h"
#include "model_internal.h"
#include "rope.h"
#include "tensors.h"
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
    if (k->ndim == 1) return bind_vec(b, n, s[0], ds_tk_field(k, m, l, -1));
    if (k->scope != DS_TS_EXPERT) return bind_w(b, n, nd, s, ds_tk_field(k, m, l, -1));
    ds_tensor stack;
    int64_t st[3] = { m->cfg.n_routed_experts, s[0], s[1] }, F = m->cfg.moe_intermediate_size;
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
