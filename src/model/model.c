/*
 * model.c - opening a model folder: config, safetensors, binding every
 * tensor by name into ds_layer_w fields with shape/dtype/scale checks, the
 * RoPE table, parameter counts. The forward pass lives in forward.c.
 */
#include "model.h"
#include "model_internal.h"
#include "rope.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- binding */

typedef struct binder {
    ds_model *m;
    ds_err *e;
    int64_t n_params;
    int64_t bytes;
} binder;

static const char *file_of(binder *b, const ds_st_tensor *t) {
    return b->m->st.files[t->file].map.path;
}

/* A 2-D weight [d0, d1]: F32/BF16/F16, or F8_E4M3 with a block-scale
 * companion `<name>_scale_inv`. */
static int bind_matrix(binder *b, const char *name, int64_t d0, int64_t d1, ds_tensor *out) {
    ds_st_tensor *t = ds_safetensors_find(&b->m->st, name);
    if (!t) return ds_err_set(b->e, DS_ENOTFOUND, "%s: missing tensor '%s'", b->m->dir, name);
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1) {
        char got[128] = "";
        for (int i = 0; i < t->ndim && i < 4; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        return ds_err_set(b->e, DS_EFORMAT, "%s: tensor '%s' has shape [%s], expected [%lld, %lld]", file_of(b, t),
                          name, got, (long long)d0, (long long)d1);
    }
    t->used = true;
    ds_st_view(t, out);
    switch (t->dtype) {
    case DS_DTYPE_F32: case DS_DTYPE_BF16: case DS_DTYPE_F16: break;
    case DS_DTYPE_F8_E4M3: {
        char sname[512];
        snprintf(sname, sizeof sname, "%s_scale_inv", name);
        ds_st_tensor *s = ds_safetensors_find(&b->m->st, sname);
        if (!s)
            return ds_err_set(b->e, DS_ENOTFOUND, "%s: FP8 tensor '%s' has no block scale '%s'", file_of(b, t), name, sname);
        int64_t br = b->m->cfg.fp8 ? b->m->cfg.fp8_block_r : 128, bc = b->m->cfg.fp8 ? b->m->cfg.fp8_block_c : 128;
        int64_t sr = (d0 + br - 1) / br, sc = (d1 + bc - 1) / bc;
        if (s->dtype != DS_DTYPE_F32)
            return ds_err_set(b->e, DS_EFORMAT, "%s: scale '%s' has dtype %s, expected F32", file_of(b, s), sname, s->dtype_name);
        if (s->ndim != 2 || s->shape[0] != sr || s->shape[1] != sc)
            return ds_err_set(b->e, DS_EFORMAT, "%s: scale '%s' has the wrong shape, expected [%lld, %lld] for %lldx%lld blocks",
                              file_of(b, s), sname, (long long)sr, (long long)sc, (long long)br, (long long)bc);
        s->used = true;
        out->scale = (const float *)s->data;
        out->scale_rows = sr;
        out->scale_cols = sc;
        out->block_r = (int)br;
        out->block_c = (int)bc;
        b->bytes += (int64_t)(s->end - s->begin);
        break;
    }
    default:
        return ds_err_set(b->e, DS_EUNSUPPORTED, "%s: tensor '%s' has dtype %s; weights must be F32, BF16, F16 or F8_E4M3",
                          file_of(b, t), name, t->dtype_name);
    }
    b->n_params += d0 * d1;
    b->bytes += (int64_t)(t->end - t->begin);
    return DS_OK;
}

/* A 1-D vector [d0] in any float dtype, converted to an owned fp32 array. */
static int bind_vector(binder *b, const char *name, int64_t d0, float **out) {
    ds_st_tensor *t = ds_safetensors_find(&b->m->st, name);
    if (!t) return ds_err_set(b->e, DS_ENOTFOUND, "%s: missing tensor '%s'", b->m->dir, name);
    if (t->ndim != 1 || t->shape[0] != d0)
        return ds_err_set(b->e, DS_EFORMAT, "%s: tensor '%s' should be a vector of %lld values", file_of(b, t), name,
                          (long long)d0);
    if (t->dtype != DS_DTYPE_F32 && t->dtype != DS_DTYPE_BF16 && t->dtype != DS_DTYPE_F16)
        return ds_err_set(b->e, DS_EUNSUPPORTED, "%s: tensor '%s' has dtype %s; expected F32, BF16 or F16", file_of(b, t),
                          name, t->dtype_name);
    t->used = true;
    ds_tensor v;
    ds_st_view(t, &v);
    *out = ds_alloc((size_t)d0 * sizeof(float));
    if (!*out) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
    ds_tensor_to_f32(&v, *out);
    b->n_params += d0;
    b->bytes += (int64_t)(t->end - t->begin);
    return DS_OK;
}

static bool has(binder *b, const char *name) { return ds_safetensors_find(&b->m->st, name) != NULL; }

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

static int bind_mlp(binder *b, const char *prefix, int64_t D, int64_t F, ds_mlp_w *w) {
    char n[512];
    int rc;
    if ((rc = bind_matrix(b, NAME(n, "%s.gate_proj.weight", prefix), F, D, &w->gate))) return rc;
    if ((rc = bind_matrix(b, NAME(n, "%s.up_proj.weight", prefix), F, D, &w->up))) return rc;
    return bind_matrix(b, NAME(n, "%s.down_proj.weight", prefix), D, F, &w->down);
}

static int bind_layer(binder *b, int64_t l, bool mtp) {
    ds_model *m = b->m;
    const ds_config *c = &m->cfg;
    ds_layer_w *w = &m->layers[l];
    int64_t D = c->hidden_size, H = c->n_head, Dq = c->qk_nope_head_dim + c->qk_rope_head_dim;
    char n[512], p[256];
    int rc;
    snprintf(p, sizeof p, "model.layers.%lld", (long long)l);
    if ((rc = bind_vector(b, NAME(n, "%s.input_layernorm.weight", p), D, &w->attn_norm))) return rc;
    if ((rc = bind_vector(b, NAME(n, "%s.post_attention_layernorm.weight", p), D, &w->ffn_norm))) return rc;
    if (c->q_lora_rank > 0) {
        if ((rc = bind_matrix(b, NAME(n, "%s.self_attn.q_a_proj.weight", p), c->q_lora_rank, D, &w->q_a_proj))) return rc;
        if ((rc = bind_vector(b, NAME(n, "%s.self_attn.q_a_layernorm.weight", p), c->q_lora_rank, &w->q_a_norm))) return rc;
        if ((rc = bind_matrix(b, NAME(n, "%s.self_attn.q_b_proj.weight", p), H * Dq, c->q_lora_rank, &w->q_b_proj))) return rc;
    } else {
        if ((rc = bind_matrix(b, NAME(n, "%s.self_attn.q_proj.weight", p), H * Dq, D, &w->q_proj))) return rc;
    }
    if ((rc = bind_matrix(b, NAME(n, "%s.self_attn.kv_a_proj_with_mqa.weight", p), c->kv_lora_rank + c->qk_rope_head_dim, D,
                          &w->kv_a_proj))) return rc;
    if ((rc = bind_vector(b, NAME(n, "%s.self_attn.kv_a_layernorm.weight", p), c->kv_lora_rank, &w->kv_a_norm))) return rc;
    if ((rc = bind_matrix(b, NAME(n, "%s.self_attn.kv_b_proj.weight", p), H * (c->qk_nope_head_dim + c->v_head_dim),
                          c->kv_lora_rank, &w->kv_b_proj))) return rc;
    if ((rc = bind_matrix(b, NAME(n, "%s.self_attn.o_proj.weight", p), D, H * c->v_head_dim, &w->o_proj))) return rc;

    w->is_moe = ds_config_layer_is_moe(c, l);
    if (!w->is_moe) {
        if ((rc = bind_mlp(b, NAME(n, "%s.mlp", p), D, c->intermediate_size, &w->mlp))) return rc;
    } else {
        int64_t E = c->n_routed_experts;
        if ((rc = bind_matrix(b, NAME(n, "%s.mlp.gate.weight", p), E, D, &w->router))) return rc;
        NAME(n, "%s.mlp.gate.e_score_correction_bias", p);
        if (c->topk_method == DS_TOPK_NOAUX_TC) {
            if ((rc = bind_vector(b, n, E, &w->router_bias))) return rc;
        } else if (has(b, n)) {
            return ds_err_set(b->e, DS_EFORMAT, "%s: unexpected tensor '%s' (topk_method is not noaux_tc)", m->dir, n);
        }
        w->experts = calloc((size_t)E, sizeof *w->experts);
        if (!w->experts) return ds_err_set(b->e, DS_ENOMEM, "out of memory");
        for (int64_t x = 0; x < E; x++) {
            char ep[300];
            snprintf(ep, sizeof ep, "%s.mlp.experts.%lld", p, (long long)x);
            if ((rc = bind_mlp(b, ep, D, c->moe_intermediate_size, &w->experts[x]))) return rc;
        }
        if (c->n_shared_experts > 0)
            if ((rc = bind_mlp(b, NAME(n, "%s.mlp.shared_experts", p), D, c->n_shared_experts * c->moe_intermediate_size,
                               &w->shared))) return rc;
    }
    if (mtp) {
        if ((rc = bind_vector(b, NAME(n, "%s.enorm.weight", p), D, &w->enorm))) return rc;
        if ((rc = bind_vector(b, NAME(n, "%s.hnorm.weight", p), D, &w->hnorm))) return rc;
        if ((rc = bind_matrix(b, NAME(n, "%s.eh_proj.weight", p), D, 2 * D, &w->eh_proj))) return rc;
        if ((rc = bind_vector(b, NAME(n, "%s.shared_head.norm.weight", p), D, &w->head_norm))) return rc;
        if (has(b, NAME(n, "%s.embed_tokens.weight", p)))
            if ((rc = bind_matrix(b, n, c->vocab_size, D, &w->embed))) return rc;
        if (has(b, NAME(n, "%s.shared_head.head.weight", p)))
            if ((rc = bind_matrix(b, n, c->vocab_size, D, &w->head))) return rc;
    }
    return DS_OK;
}

/* MTP layers are optional: transformers' save_pretrained does not write them. */
static bool mtp_layer_stored(ds_model *m, int64_t l) {
    char prefix[64];
    int len = snprintf(prefix, sizeof prefix, "model.layers.%lld.", (long long)l);
    for (int64_t i = 0; i < m->st.n_tensors; i++)
        if (strncmp(m->st.tensors[i].name, prefix, (size_t)len) == 0) return true;
    return false;
}

static bool ignorable(const char *name) {
    size_t n = strlen(name);
    const char *suffix = "rotary_emb.inv_freq";
    size_t sl = strlen(suffix);
    return n >= sl && strcmp(name + n - sl, suffix) == 0;
}

int ds_model_open(ds_model **out, const char *dir, ds_err *e) {
    *out = NULL;
    if (ds_path_is_gguf(dir)) return ds_model_open_gguf(out, dir, e);
    ds_dtype_init();
    ds_model *m = calloc(1, sizeof *m);
    if (!m) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int rc;
    m->dir = strdup(dir);
    if (!m->dir) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    if ((rc = ds_config_load(&m->cfg, dir, e))) goto fail;
    if ((rc = ds_safetensors_open_dir(&m->st, dir, e))) goto fail;
    const ds_config *c = &m->cfg;
    m->expert_lo = 0, m->expert_hi = c->n_routed_experts;
    binder b = { m, e, 0, 0 };
    m->layers = calloc((size_t)(c->n_layer + c->n_mtp), sizeof *m->layers);
    if (!m->layers) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    if ((rc = bind_matrix(&b, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, &m->embed))) goto fail;
    if ((rc = bind_vector(&b, "model.norm.weight", c->hidden_size, &m->final_norm))) goto fail;
    if (has(&b, "lm_head.weight") || !c->tie_word_embeddings) {
        if ((rc = bind_matrix(&b, "lm_head.weight", c->vocab_size, c->hidden_size, &m->lm_head))) goto fail;
    } else {
        m->lm_head = m->embed;
    }
    for (int64_t l = 0; l < c->n_layer; l++)
        if ((rc = bind_layer(&b, l, false))) goto fail;
    int64_t params_main = b.n_params;
    m->n_mtp = 0;
    for (int64_t l = c->n_layer; l < c->n_layer + c->n_mtp; l++) {
        if (!mtp_layer_stored(m, l)) break;
        if ((rc = bind_layer(&b, l, true))) goto fail;
        m->n_mtp++;
    }
    (void)params_main;
    for (int64_t i = 0; i < m->st.n_tensors; i++) {
        ds_st_tensor *t = &m->st.tensors[i];
        if (!t->used && !ignorable(t->name)) {
            rc = ds_err_set(e, DS_EFORMAT, "%s: unexpected tensor '%s' (not part of a %s model with this config)",
                            m->st.files[t->file].map.path, t->name, c->model_type);
            goto fail;
        }
    }
    m->n_params = b.n_params;
    m->file_bytes = b.bytes;
    m->inv_freq = ds_alloc((size_t)(c->qk_rope_head_dim / 2) * sizeof(float));
    if (!m->inv_freq) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    ds_rope_inv_freq(c, m->inv_freq);
    m->attn_scale = (float)ds_config_softmax_scale(c);
    if ((rc = ds_model_repack(m, e))) goto fail;
    *out = m;
    return DS_OK;
fail:
    ds_model_close(m);
    return rc;
}

static void free_layer(ds_layer_w *w) {
    ds_free(w->attn_norm); ds_free(w->ffn_norm); ds_free(w->q_a_norm); ds_free(w->kv_a_norm);
    ds_free(w->router_bias); ds_free(w->enorm); ds_free(w->hnorm); ds_free(w->head_norm);
    free(w->experts);
}

void ds_model_close(ds_model *m) {
    if (!m) return;
    if (m->layers)
        for (int64_t l = 0; l < m->cfg.n_layer + m->cfg.n_mtp; l++) free_layer(&m->layers[l]);
    free(m->layers);
    ds_free(m->final_norm);
    ds_free(m->inv_freq);
    ds_model_repack_free(m);
    ds_model_gguf_release(m);
    ds_safetensors_close(&m->st);
    free(m->dir);
    free(m);
}

/* --------------------------------------------------------------- counts */

static int64_t attn_params(const ds_config *c) {
    int64_t D = c->hidden_size, H = c->n_head, Dq = c->qk_nope_head_dim + c->qk_rope_head_dim;
    int64_t q = c->q_lora_rank > 0 ? c->q_lora_rank * D + c->q_lora_rank + H * Dq * c->q_lora_rank : H * Dq * D;
    return q + (c->kv_lora_rank + c->qk_rope_head_dim) * D + c->kv_lora_rank +
           H * (c->qk_nope_head_dim + c->v_head_dim) * c->kv_lora_rank + D * H * c->v_head_dim + 2 * D;
}

void ds_model_param_counts(const ds_model *m, ds_param_counts *pc) {
    const ds_config *c = &m->cfg;
    int64_t D = c->hidden_size, V = c->vocab_size;
    int64_t embed = V * D, head = (m->lm_head.data == m->embed.data) ? 0 : V * D;
    int64_t expert = 3 * D * c->moe_intermediate_size;
    int64_t main_total = embed + head + D, active = embed + head + D;
    for (int64_t l = 0; l < c->n_layer; l++) {
        int64_t a = attn_params(c);
        main_total += a;
        active += a;
        if (!ds_config_layer_is_moe(c, l)) {
            main_total += 3 * D * c->intermediate_size;
            active += 3 * D * c->intermediate_size;
        } else {
            int64_t router = c->n_routed_experts * D + (c->topk_method == DS_TOPK_NOAUX_TC ? c->n_routed_experts : 0);
            main_total += router + c->n_routed_experts * expert + c->n_shared_experts * expert;
            active += router + c->num_experts_per_tok * expert + c->n_shared_experts * expert;
        }
    }
    pc->main = main_total;
    pc->total = m->n_params;
    pc->mtp = m->n_params - main_total;
    pc->active = active;
    pc->active_no_embed = active - embed - head;
}
