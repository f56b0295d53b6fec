/*
 * convert.c - ds_model -> GGUF (`deepseek2` / `deepseek32` / `deepseek4`,
 * llama.cpp's names, shapes and metadata), and random GGUF models for
 * benchmarks. See convert.h.
 *
 * Every output tensor is described by a `wt`: name, row-major shape, output
 * type and a source (a 2-D/3-D view, the routed experts of a layer, an fp32
 * vector, kv_b_proj split per head, or random). Tensors are written in
 * chunks of whole row groups; the rows of a chunk are produced and
 * quantized in parallel (ds_par_for), then appended to the file.
 *
 * MLA split (as llama.cpp's DeepseekV2Model.modify_tensors): per head h,
 * kv_b_proj rows [h(Dn+Dv), +Dn) are W_UK[h] (Dn, Rkv) and the next Dv rows
 * W_UV[h] (Dv, Rkv); attn_k_b[h] = W_UK[h]ᵀ (Rkv, Dn), attn_v_b[h] = W_UV[h].
 */
#include "convert.h"
#include "tensors.h"
#include "../core/rng.h"
#include "../core/thread.h"
#include "../io/gguf.h"
#include "../io/json.h"
#include "../tensor/mxfp4.h"
#include "../tensor/quant.h"
#include "../tokenizer/tok_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { SRC_MAT, SRC_EXPERTS, SRC_VEC, SRC_KB, SRC_VB, SRC_KVB, SRC_INDEX, SRC_RANDOM } src_kind;

typedef struct wt {
    char name[DS_GGUF_MAX_NAME];
    int ndim;
    int64_t shape[3];
    ds_dtype type;
    src_kind kind;
    const ds_tensor *t;          /* SRC_MAT */
    const ds_mlp_w *experts;     /* SRC_EXPERTS: [E] */
    size_t eoff;                 /* SRC_EXPERTS: the field (gate, up, down) in ds_mlp_w */
    const float *vec;            /* SRC_VEC */
    const int32_t *idx;          /* SRC_INDEX: an int32 table (V4's tid2eid), written I32 */
    const ds_layer_w *lw;        /* SRC_KB / SRC_VB / SRC_KVB */
    float rstd;                  /* SRC_RANDOM: value scale (0: ones, <0: zeros) */
    int64_t rows, cols, group;   /* rows = numel / cols; produced `group` rows at a time */
} wt;

typedef struct wlist {
    wt *v;
    int64_t n, cap;
} wlist;

/* ------------------------------------------------------------------ types */

ds_dtype ds_convert_type_from_name(const char *s) {
    static const struct { const char *n; ds_dtype t; } k[] = {
        { "f32", DS_DTYPE_F32 }, { "f16", DS_DTYPE_F16 }, { "bf16", DS_DTYPE_BF16 }, { "q8_0", DS_DTYPE_Q8_0 },
        { "q4_0", DS_DTYPE_Q4_0 }, { "q5_0", DS_DTYPE_Q5_0 }, { "q4_k", DS_DTYPE_Q4_K }, { "q6_k", DS_DTYPE_Q6_K },
        { "q4_1", DS_DTYPE_Q4_1 }, { "q5_1", DS_DTYPE_Q5_1 }, { "q2_k", DS_DTYPE_Q2_K }, { "q3_k", DS_DTYPE_Q3_K },
        { "q5_k", DS_DTYPE_Q5_K }, { "iq4_nl", DS_DTYPE_IQ4_NL }, { "iq4_xs", DS_DTYPE_IQ4_XS },
        { "mxfp4", DS_DTYPE_MXFP4 },   /* routed experts of V4 only: FP4 repacked, no quantizer */
        /* read, not written (ds_quant_has_quantizer): named so the error can say so */
        { "iq2_xxs", DS_DTYPE_IQ2_XXS }, { "iq2_xs", DS_DTYPE_IQ2_XS }, { "iq2_s", DS_DTYPE_IQ2_S },
        { "iq3_xxs", DS_DTYPE_IQ3_XXS }, { "iq3_s", DS_DTYPE_IQ3_S }, { "iq1_s", DS_DTYPE_IQ1_S }, { "iq1_m", DS_DTYPE_IQ1_M },
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcasecmp(s, k[i].n)) return k[i].t;
    return DS_DTYPE_COUNT;
}

void ds_convert_opts_default(ds_convert_opts *o, ds_dtype t) {
    memset(o, 0, sizeof *o);
    o->attn = o->ffn = o->experts = o->embed = o->head = t;
    /* llama.cpp's mixes: the output head in Q6_K below 6 bits */
    if (ds_dtype_is_quant(t) && t != DS_DTYPE_Q8_0 && t != DS_DTYPE_Q6_K) o->head = DS_DTYPE_Q6_K;
}

/* The type actually used for rows of `cols`: llama.cpp's fallbacks. */
static ds_dtype fit_type(ds_dtype t, int64_t cols) {
    while (!ds_quant_row_ok(t, cols)) {
        if (t == DS_DTYPE_Q4_K) t = DS_DTYPE_Q5_0;
        else if (t == DS_DTYPE_Q5_K) t = DS_DTYPE_Q5_1;
        else if (t == DS_DTYPE_Q6_K) t = DS_DTYPE_Q8_0;
        else if (ds_dtype_block(t) == DS_QK_K) t = DS_DTYPE_IQ4_NL;   /* Q2_K, Q3_K, IQ4_XS */
        else return DS_DTYPE_F16;
    }
    return t;
}

static int llama_ftype(ds_dtype t) {
    switch (t) {
    case DS_DTYPE_F32: return 0;
    case DS_DTYPE_F16: return 1;
    case DS_DTYPE_Q4_0: return 2;
    case DS_DTYPE_Q8_0: return 7;
    case DS_DTYPE_Q5_0: return 8;
    case DS_DTYPE_Q4_K: return 15;  /* Q4_K_M: the closest mix llama.cpp names */
    case DS_DTYPE_Q6_K: return 18;
    case DS_DTYPE_Q4_1: return 3;
    case DS_DTYPE_Q5_1: return 9;
    case DS_DTYPE_Q2_K: return 10;
    case DS_DTYPE_Q3_K: return 12;  /* Q3_K_M */
    case DS_DTYPE_Q5_K: return 17;  /* Q5_K_M */
    case DS_DTYPE_IQ4_NL: return 25;
    case DS_DTYPE_IQ4_XS: return 30;
    case DS_DTYPE_BF16: return 32;
    case DS_DTYPE_MXFP4: return 38;  /* MOSTLY_MXFP4_MOE, as llama.cpp's V4 converter */
    default: return 0;
    }
}

/* ------------------------------------------------------------- the list */

static wt *add(wlist *L, const char *name, ds_dtype type, int ndim, int64_t d0, int64_t d1, int64_t d2, ds_err *e) {
    if (L->n == L->cap) {
        int64_t cap = L->cap ? L->cap * 2 : 256;
        wt *nv = realloc(L->v, (size_t)cap * sizeof *nv);
        if (!nv) { ds_err_set(e, DS_ENOMEM, "out of memory"); return NULL; }
        L->v = nv;
        L->cap = cap;
    }
    wt *w = &L->v[L->n++];
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    w->ndim = ndim;
    w->shape[0] = d0;
    w->shape[1] = d1;
    w->shape[2] = d2;
    w->cols = ndim == 1 ? d0 : ndim == 2 ? d1 : d2;
    w->rows = ndim == 1 ? 1 : ndim == 2 ? d0 : d0 * d1;
    w->type = ndim == 1 ? DS_DTYPE_F32 : fit_type(type, w->cols);
    w->group = 1;
    w->kind = SRC_RANDOM;
    w->rstd = 0.02f;
    return w;
}

static ds_dtype class_type(ds_tclass cls, const ds_convert_opts *o) {
    switch (cls) {
    case DS_TC_ATTN: return o->attn;
    case DS_TC_FFN: return o->ffn;
    case DS_TC_EXPERTS: return o->experts;
    case DS_TC_EMBED: return o->embed;
    case DS_TC_HEAD: return o->head;
    default: return DS_DTYPE_F32;
    }
}

/* Whether m holds kind k of layer l itself (a tied head is the embedding). */
static bool stored(const ds_model *m, const ds_tkind *k, int64_t l) {
    if (k == &ds_tkinds[DS_TK_LM_HEAD]) return m->lm_head.data != m->embed.data;
    if (k->scope == DS_TS_EXPERT) return true;
    const void *f = ds_tk_field(k, (ds_model *)m, l, -1);
    if (k->flags & DS_TF_INDEX) return *(int32_t *const *)f != NULL;
    return k->ndim == 1 ? *(float *const *)f != NULL : ds_tensor_present(f);
}

/* Where the rows of kind k of layer l come from in m. The kv_b forms are
 * made from whichever form m holds. */
static void set_source(wt *w, const ds_model *m, const ds_tkind *k, int64_t l) {
    const ds_config *c = &m->cfg;
    const ds_layer_w *lw = l >= 0 ? &m->layers[l] : NULL;
    const void *f = k->scope == DS_TS_EXPERT ? NULL : ds_tk_field(k, (ds_model *)m, l, -1);
    int id = (int)(k - ds_tkinds);
    if (k->flags & DS_TF_INDEX) { w->kind = SRC_INDEX; w->idx = *(int32_t *const *)f; w->type = DS_DTYPE_I32; }
    else if (k->ndim == 1) { w->kind = SRC_VEC; w->vec = *(float *const *)f; }
    else if (k->scope == DS_TS_EXPERT) { w->kind = SRC_EXPERTS; w->experts = lw->experts; w->eoff = k->w_off; }
    else if (id == DS_TK_K_B && !ds_tensor_present(&lw->wk_b)) { w->kind = SRC_KB; w->lw = lw; w->group = c->kv_lora_rank; }
    else if (id == DS_TK_V_B && !ds_tensor_present(&lw->wv_b)) { w->kind = SRC_VB; w->lw = lw; w->group = c->v_head_dim; }
    else if (id == DS_TK_KV_B && !ds_tensor_present(&lw->kv_b_proj)) {
        w->kind = SRC_KVB; w->lw = lw; w->group = c->qk_nope_head_dim + c->v_head_dim;
    } else { w->kind = SRC_MAT; w->t = f; }
}

/* Fills the tensor list by the table, in its (GGUF) order; m == NULL means
 * random weights of config c (optional kinds left out). */
static int build_list(wlist *L, const ds_config *c, const ds_model *m, int64_t n_mtp, const ds_convert_opts *o, ds_err *e) {
    unsigned forms = o->legacy_kv_b ? 0 : DS_FORM_KV_SPLIT;
    for (int64_t l = -1; l < c->n_layer + n_mtp; l++)
        for (int i = 0; i < DS_TK_COUNT; i++) {
            const ds_tkind *k = &ds_tkinds[i];
            ds_tneed need = ds_tk_need(k, c, l, forms);
            bool kv_b = i == DS_TK_KV_B || i == DS_TK_K_B || i == DS_TK_V_B;
            if (!need || (m ? !kv_b && !stored(m, k, l) : need == DS_TN_MAYBE)) continue;
            char n[DS_GGUF_MAX_NAME];
            int64_t s[3];
            int nd = ds_tk_shape(k, c, s);
            ds_tk_name(k, true, l, -1, n, sizeof n);
            ds_dtype t = class_type(k->cls, o);
            wt *w = k->scope == DS_TS_EXPERT ? add(L, n, t, 3, c->n_routed_experts, s[0], s[1], e)
                                             : add(L, n, t, nd, s[0], s[1], s[2], e);
            if (!w) return e->code;
            if (k->ndim == 1) w->rstd = (k->flags & DS_TF_BIAS) ? -1 : 0;  /* zeros : ones */
            if (m) set_source(w, m, k, l);
            if (w->kind == SRC_EXPERTS && (t == DS_DTYPE_MXFP4 || o->fp4_as_mxfp4)) {
                const ds_tensor *x0 = (const ds_tensor *)((const char *)&w->experts[0] + w->eoff);
                if ((x0->dtype == DS_DTYPE_F4_E2M1 && x0->block_c == DS_MXFP4_BLOCK && w->cols % DS_MXFP4_BLOCK == 0) ||
                    x0->dtype == DS_DTYPE_MXFP4)
                    w->type = DS_DTYPE_MXFP4;   /* the same bits, repacked (mxfp4.h) or copied from a GGUF */
                else if (t == DS_DTYPE_MXFP4)
                    return ds_err_set(e, DS_EUNSUPPORTED, "%s: --experts mxfp4 repacks FP4 e2m1 experts (scales per 32 "
                                      "values) without loss; these are %s (deepseek.c has no MXFP4 quantizer)", n,
                                      ds_dtype_name(x0->dtype));
            }
        }
    return DS_OK;
}

/* --------------------------------------------------------------- metadata */

#define K2(buf, suffix) (snprintf(buf, sizeof buf, "%s.%s", arch, suffix), buf)

static int write_vocab(ds_gguf_writer *g, const ds_config *c, const char *dir, ds_err *e);

static int write_tokenizer(ds_gguf_writer *g, const ds_config *c, const ds_convert_opts *o, ds_err *e);
static int write_meta_v4(ds_gguf_writer *g, const ds_config *c, const ds_convert_opts *o, ds_err *e);

static int write_meta(ds_gguf_writer *g, const ds_config *c, int64_t n_mtp, const ds_convert_opts *o, ds_err *e) {
    char k[128];
    if (c->arch == DS_ARCH_V4) return write_meta_v4(g, c, o, e);
    if (c->moe_layer_freq != 1)
        return ds_err_set(e, DS_EUNSUPPORTED, "GGUF (deepseek2) cannot express moe_layer_freq = %lld", (long long)c->moe_layer_freq);
    /* V3.2 (sparse attention): llama.cpp's deepseek32, deepseek2's keys and tensors plus the indexer's */
    const bool v32 = c->index_topk > 0;
    const char *arch = v32 ? "deepseek32" : "deepseek2";
    ds_gguf_w_str(g, "general.architecture", arch);
    ds_gguf_w_str(g, "general.name",
                  o->name ? o->name : v32 ? "DeepSeek-V3.2" : c->arch == DS_ARCH_V3 ? "DeepSeek-V3" : "DeepSeek-V2");
    ds_gguf_w_u32(g, "general.file_type", (uint32_t)llama_ftype(o->experts));
    ds_gguf_w_u32(g, "general.quantization_version", 2);
    ds_gguf_w_u32(g, K2(k, "block_count"), (uint32_t)(c->n_layer + n_mtp));
    if (n_mtp) ds_gguf_w_u32(g, K2(k, "nextn_predict_layers"), (uint32_t)n_mtp);
    if (v32) {
        ds_gguf_w_u32(g, K2(k, "attention.indexer.head_count"), (uint32_t)c->index_n_heads);
        ds_gguf_w_u32(g, K2(k, "attention.indexer.key_length"), (uint32_t)c->index_head_dim);
        ds_gguf_w_u32(g, K2(k, "attention.indexer.top_k"), (uint32_t)c->index_topk);
    }
    ds_gguf_w_u32(g, K2(k, "context_length"), (uint32_t)DS_MIN(c->max_position_embeddings, (int64_t)UINT32_MAX));
    ds_gguf_w_u32(g, K2(k, "embedding_length"), (uint32_t)c->hidden_size);
    ds_gguf_w_u32(g, K2(k, "feed_forward_length"), (uint32_t)c->intermediate_size);
    ds_gguf_w_u32(g, K2(k, "attention.head_count"), (uint32_t)c->n_head);
    /* MLA form: one KV "head" (the latent); legacy form: per-head K/V like pre-MLA converters */
    ds_gguf_w_u32(g, K2(k, "attention.head_count_kv"), o->legacy_kv_b ? (uint32_t)c->n_head : 1);
    ds_gguf_w_f32(g, K2(k, "attention.layer_norm_rms_epsilon"), (float)c->rms_norm_eps);
    ds_gguf_w_u32(g, K2(k, "attention.q_lora_rank"), (uint32_t)c->q_lora_rank);
    ds_gguf_w_u32(g, K2(k, "attention.kv_lora_rank"), (uint32_t)c->kv_lora_rank);
    if (o->legacy_kv_b) {
        ds_gguf_w_u32(g, K2(k, "attention.key_length"), (uint32_t)(c->qk_nope_head_dim + c->qk_rope_head_dim));
        ds_gguf_w_u32(g, K2(k, "attention.value_length"), (uint32_t)c->v_head_dim);
    } else {
        ds_gguf_w_u32(g, K2(k, "attention.key_length"), (uint32_t)(c->kv_lora_rank + c->qk_rope_head_dim));
        ds_gguf_w_u32(g, K2(k, "attention.value_length"), (uint32_t)c->kv_lora_rank);
        ds_gguf_w_u32(g, K2(k, "attention.key_length_mla"), (uint32_t)(c->qk_nope_head_dim + c->qk_rope_head_dim));
        ds_gguf_w_u32(g, K2(k, "attention.value_length_mla"), (uint32_t)c->v_head_dim);
    }
    ds_gguf_w_u32(g, K2(k, "rope.dimension_count"), (uint32_t)c->qk_rope_head_dim);
    ds_gguf_w_f32(g, K2(k, "rope.freq_base"), (float)c->rope_theta);
    if (c->yarn) {
        ds_gguf_w_str(g, K2(k, "rope.scaling.type"), "yarn");
        ds_gguf_w_f32(g, K2(k, "rope.scaling.factor"), (float)c->rope_factor);
        ds_gguf_w_u32(g, K2(k, "rope.scaling.original_context_length"), (uint32_t)c->rope_orig_max_pos);
        ds_gguf_w_f32(g, K2(k, "rope.scaling.yarn_beta_fast"), (float)c->beta_fast);
        ds_gguf_w_f32(g, K2(k, "rope.scaling.yarn_beta_slow"), (float)c->beta_slow);
        ds_gguf_w_f32(g, K2(k, "rope.scaling.yarn_log_multiplier"), (float)(0.1 * c->mscale_all_dim));
    }
    ds_gguf_w_u32(g, K2(k, "leading_dense_block_count"), (uint32_t)c->first_k_dense_replace);
    ds_gguf_w_u32(g, K2(k, "vocab_size"), (uint32_t)c->vocab_size);
    if (c->n_routed_experts > 0 || c->n_shared_experts > 0)
        ds_gguf_w_u32(g, K2(k, "expert_feed_forward_length"), (uint32_t)c->moe_intermediate_size);
    ds_gguf_w_u32(g, K2(k, "expert_shared_count"), (uint32_t)c->n_shared_experts);
    if (c->n_routed_experts > 0) {
        ds_gguf_w_u32(g, K2(k, "expert_count"), (uint32_t)c->n_routed_experts);
        ds_gguf_w_u32(g, K2(k, "expert_used_count"), (uint32_t)c->num_experts_per_tok);
        ds_gguf_w_u32(g, K2(k, "expert_group_count"), (uint32_t)c->n_group);
        ds_gguf_w_u32(g, K2(k, "expert_group_used_count"), (uint32_t)c->topk_group);
        ds_gguf_w_f32(g, K2(k, "expert_weights_scale"), (float)c->routed_scaling_factor);
        if (c->norm_topk_prob) ds_gguf_w_bool(g, K2(k, "expert_weights_norm"), true);
        ds_gguf_w_u32(g, K2(k, "expert_gating_func"), c->scoring_func == DS_SCORE_SIGMOID ? 2 : 1);
    }
    return write_tokenizer(g, c, o, e);
}

#define K4(buf, suffix) (snprintf(buf, sizeof buf, "deepseek4.%s", suffix), buf)

/* llama.cpp's `deepseek4` metadata (what its converter writes for a release
 * folder; model_gguf.c reads it back). The compressed layers' RoPE is the
 * YaRN of rope.scaling.*; hash-routed layers must lead (hash_layer_count). */
static int write_meta_v4(ds_gguf_writer *g, const ds_config *c, const ds_convert_opts *o, ds_err *e) {
    char k[128];
    int64_t L = c->n_layer, nh = 0;
    while (nh < L && c->ffn_kind[nh] == DS_FFN_HASH_MOE) nh++;
    for (int64_t l = nh; l < L; l++)
        if (c->ffn_kind[l] == DS_FFN_HASH_MOE)
            return ds_err_set(e, DS_EUNSUPPORTED, "GGUF (deepseek4) routes by hash only in the first layers "
                              "(hash_layer_count); layer %lld is hash-routed after a top-k one", (long long)l);
    if (c->compress_rate_csa != 4)
        for (int64_t l = 0; l < L; l++)
            if (c->attn_kind[l] == DS_ATTN_CSA)
                return ds_err_set(e, DS_EUNSUPPORTED, "GGUF (deepseek4) marks compressed sparse attention by ratio 4; "
                                  "this model compresses its CSA layers by %lld", (long long)c->compress_rate_csa);
    if (c->attn_kind[0] != DS_ATTN_UNSET && c->compress_rate_hca == 4)
        for (int64_t l = 0; l < L; l++)
            if (c->attn_kind[l] == DS_ATTN_HCA)
                return ds_err_set(e, DS_EUNSUPPORTED, "GGUF (deepseek4) reads ratio 4 as compressed sparse attention; "
                                  "this model's heavily compressed layers also compress by 4");
    float *clamp = malloc((size_t)L * sizeof *clamp);
    int32_t *ratios = malloc((size_t)L * sizeof *ratios);
    if (!clamp || !ratios) { free(clamp); free(ratios); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
    for (int64_t l = 0; l < L; l++) {
        clamp[l] = (float)c->swiglu_limit;
        ratios[l] = c->attn_kind[l] == DS_ATTN_CSA ? (int32_t)c->compress_rate_csa
                    : c->attn_kind[l] == DS_ATTN_HCA ? (int32_t)c->compress_rate_hca : 0;
    }
    ds_gguf_w_str(g, "general.architecture", "deepseek4");
    ds_gguf_w_str(g, "general.name", o->name ? o->name : "DeepSeek-V4");
    ds_gguf_w_u32(g, "general.file_type", (uint32_t)llama_ftype(o->experts));
    ds_gguf_w_u32(g, "general.quantization_version", 2);
    ds_gguf_w_u32(g, K4(k, "block_count"), (uint32_t)L);
    ds_gguf_w_u32(g, K4(k, "context_length"), (uint32_t)DS_MIN(c->max_position_embeddings, (int64_t)UINT32_MAX));
    ds_gguf_w_u32(g, K4(k, "embedding_length"), (uint32_t)c->hidden_size);
    ds_gguf_w_u32(g, K4(k, "attention.head_count"), (uint32_t)c->n_head);
    ds_gguf_w_u32(g, K4(k, "attention.head_count_kv"), 1);
    ds_gguf_w_u32(g, K4(k, "attention.key_length"), (uint32_t)c->head_dim);
    ds_gguf_w_u32(g, K4(k, "attention.value_length"), (uint32_t)c->head_dim);
    ds_gguf_w_f32(g, K4(k, "attention.layer_norm_rms_epsilon"), (float)c->rms_norm_eps);
    ds_gguf_w_f32(g, K4(k, "rope.freq_base"), (float)c->rope_theta);
    if (c->yarn) {
        ds_gguf_w_str(g, K4(k, "rope.scaling.type"), "yarn");
        ds_gguf_w_f32(g, K4(k, "rope.scaling.factor"), (float)c->rope_factor);
        ds_gguf_w_u32(g, K4(k, "rope.scaling.original_context_length"), (uint32_t)c->rope_orig_max_pos);
        ds_gguf_w_f32(g, K4(k, "rope.scaling.yarn_beta_fast"), (float)c->beta_fast);
        ds_gguf_w_f32(g, K4(k, "rope.scaling.yarn_beta_slow"), (float)c->beta_slow);
    }
    ds_gguf_w_u32(g, K4(k, "expert_count"), (uint32_t)c->n_routed_experts);
    ds_gguf_w_u32(g, K4(k, "expert_used_count"), (uint32_t)c->num_experts_per_tok);
    ds_gguf_w_u32(g, K4(k, "expert_gating_func"),
                  c->scoring_func == DS_SCORE_SQRTSOFTPLUS ? 4 : c->scoring_func == DS_SCORE_SIGMOID ? 2 : 1);
    ds_gguf_w_u32(g, K4(k, "rope.dimension_count"), (uint32_t)c->qk_rope_head_dim);
    ds_gguf_w_u32(g, K4(k, "attention.q_lora_rank"), (uint32_t)c->q_lora_rank);
    ds_gguf_w_u32(g, K4(k, "attention.sliding_window"), (uint32_t)c->sliding_window);
    ds_gguf_w_u32(g, K4(k, "expert_feed_forward_length"), (uint32_t)c->moe_intermediate_size);
    ds_gguf_w_u32(g, K4(k, "expert_shared_count"), (uint32_t)c->n_shared_experts);
    ds_gguf_w_f32(g, K4(k, "expert_weights_scale"), (float)c->routed_scaling_factor);
    ds_gguf_w_bool(g, K4(k, "expert_weights_norm"), c->norm_topk_prob);
    ds_gguf_w_arr(g, K4(k, "swiglu_clamp_exp"), DS_GGUF_FLOAT32, clamp, (uint64_t)L);
    ds_gguf_w_arr(g, K4(k, "swiglu_clamp_shexp"), DS_GGUF_FLOAT32, clamp, (uint64_t)L);
    ds_gguf_w_u32(g, K4(k, "attention.indexer.head_count"), (uint32_t)c->index_n_heads);
    ds_gguf_w_u32(g, K4(k, "attention.indexer.key_length"), (uint32_t)c->index_head_dim);
    ds_gguf_w_u32(g, K4(k, "attention.indexer.top_k"), (uint32_t)c->index_topk);
    ds_gguf_w_u32(g, K4(k, "attention.output_group_count"), (uint32_t)c->o_groups);
    ds_gguf_w_u32(g, K4(k, "attention.output_lora_rank"), (uint32_t)c->o_lora_rank);
    ds_gguf_w_arr(g, K4(k, "attention.compress_ratios"), DS_GGUF_INT32, ratios, (uint64_t)L);
    ds_gguf_w_f32(g, K4(k, "attention.compress_rope_freq_base"), (float)c->compress_rope_theta);
    ds_gguf_w_u32(g, K4(k, "hyper_connection.count"), (uint32_t)c->n_streams);
    ds_gguf_w_u32(g, K4(k, "hyper_connection.sinkhorn_iterations"), (uint32_t)c->hc_sinkhorn_iters);
    ds_gguf_w_f32(g, K4(k, "hyper_connection.epsilon"), (float)c->hc_eps);
    ds_gguf_w_u32(g, K4(k, "hash_layer_count"), (uint32_t)nh);
    ds_gguf_w_u32(g, K4(k, "embedding_length_out"), (uint32_t)(c->n_streams * c->hidden_size));
    ds_gguf_w_u32(g, K4(k, "vocab_size"), (uint32_t)c->vocab_size);
    free(clamp);
    free(ratios);
    return write_tokenizer(g, c, o, e);
}

/* tokenizer.*: the source GGUF's as they are, or from a tokenizer.json. */
static int write_tokenizer(ds_gguf_writer *g, const ds_config *c, const ds_convert_opts *o, ds_err *e) {
    if (!o->tokenizer_dir && o->tokenizer_gguf) {  /* re-quantizing a GGUF: its tokenizer as it is */
        const ds_gguf *src = o->tokenizer_gguf;
        bool any = false;
        for (int64_t i = 0; i < src->n_kv; i++)
            if (!strncmp(src->kv[i].key, "tokenizer.", 10)) { ds_gguf_w_copy(g, src, &src->kv[i]); any = true; }
        if (any) return DS_OK;
    }
    return write_vocab(g, c, o->tokenizer_dir, e);
}

/* tokenizer.ggml.* from a Hugging Face tokenizer.json (byte-level BPE), as
 * llama.cpp's _set_vocab_gpt2: tokens by id (missing ids "[PADn]", type
 * unused), added special tokens control, other added tokens user-defined. */
static int write_vocab(ds_gguf_writer *g, const ds_config *c, const char *dir, ds_err *e) {
    char path[4096];
    json_t *tj = NULL;
    if (dir) {
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        FILE *f = fopen(path, "r");
        if (f) {
            fclose(f);
            int rc = ds_json_load_file(path, 256u << 20, &tj, e);
            if (rc) return rc;
        }
    }
    if (!tj) {
        ds_gguf_w_str(g, "tokenizer.ggml.model", "none");
        if (c->bos_token_id >= 0) ds_gguf_w_u32(g, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_token_id);
        if (c->eos_token_id >= 0) ds_gguf_w_u32(g, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_token_id);
        return DS_OK;
    }
    int rc = DS_OK;
    int64_t V = c->vocab_size;
    char **tok = calloc((size_t)V, sizeof *tok);
    int32_t *type = calloc((size_t)V, sizeof *type);
    const char **merges = NULL;
    json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab");
    json_t *jm = json_object_get(model, "merges"), *added = json_object_get(tj, "added_tokens");
    if (!tok || !type) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
    if (!json_is_object(vocab) || !json_is_array(jm)) {
        rc = ds_err_set(e, DS_EFORMAT, "%s: expected a BPE model with vocab and merges", path);
        goto done;
    }
    const char *pre = tok_gguf_pre_name(json_object_get(tj, "pre_tokenizer"));
    if (!pre) {
        rc = ds_err_set(e, DS_EUNSUPPORTED, "%s: its pre_tokenizer is not the DeepSeek-V3, DeepSeek LLM or DeepSeek Coder one, "
                        "which are the only ones a GGUF can name here (tokenizer.ggml.pre deepseek-v3, deepseek-llm, "
                        "deepseek-coder); --tokenizer DIR picks another tokenizer.json", path);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (id >= 0 && id < V && !tok[id]) { tok[id] = strdup(key); type[id] = 1; }
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        const char *s = json_string_value(json_object_get(a, "content"));
        if (!s || id < 0 || id >= V) continue;
        free(tok[id]);
        tok[id] = strdup(s);
        type[id] = json_is_true(json_object_get(a, "special")) ? 3 : 4;
    }
    for (int64_t i = 0; i < V; i++)
        if (!tok[i]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%lld]", (long long)i);
            tok[i] = strdup(pad);
            type[i] = 5;
        }
    for (int64_t i = 0; i < V; i++)
        if (!tok[i]) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
    size_t nm = json_array_size(jm);
    merges = calloc(nm ? nm : 1, sizeof *merges);
    char **owned = calloc(nm ? nm : 1, sizeof *owned);
    if (!merges || !owned) { free(owned); rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
    for (size_t i = 0; i < nm; i++) {
        json_t *x = json_array_get(jm, i);
        if (json_is_string(x)) merges[i] = json_string_value(x);
        else if (json_is_array(x) && json_array_size(x) == 2) {  /* newer ["a", "b"] form */
            const char *a = json_string_value(json_array_get(x, 0)), *b = json_string_value(json_array_get(x, 1));
            size_t la = a ? strlen(a) : 0, lb = b ? strlen(b) : 0;
            owned[i] = malloc(la + lb + 2);
            if (!owned[i]) break;
            snprintf(owned[i], la + lb + 2, "%s %s", a ? a : "", b ? b : "");
            merges[i] = owned[i];
        } else merges[i] = "";
        if (!merges[i]) merges[i] = "";
    }
    ds_gguf_w_str(g, "tokenizer.ggml.model", "gpt2");
    ds_gguf_w_str(g, "tokenizer.ggml.pre", pre);
    ds_gguf_w_arr(g, "tokenizer.ggml.tokens", DS_GGUF_STRING, tok, (uint64_t)V);
    ds_gguf_w_arr(g, "tokenizer.ggml.token_type", DS_GGUF_INT32, type, (uint64_t)V);
    ds_gguf_w_arr(g, "tokenizer.ggml.merges", DS_GGUF_STRING, merges, nm);
    if (c->bos_token_id >= 0) ds_gguf_w_u32(g, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_token_id);
    if (c->eos_token_id >= 0) ds_gguf_w_u32(g, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_token_id);
    /* add_bos/add_eos and the chat template from tokenizer_config.json, if any */
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    json_t *tc = NULL;
    ds_err e2 = { 0 };
    bool add_bos = true, add_eos = false;  /* HF LlamaTokenizerFast defaults */
    const char *tpl = NULL;
    if (ds_json_load_file(path, 16u << 20, &tc, &e2) == DS_OK) {
        const json_t *ab = json_object_get(tc, "add_bos_token"), *ae = json_object_get(tc, "add_eos_token");
        if (json_is_boolean(ab)) add_bos = json_is_true(ab);
        if (json_is_boolean(ae)) add_eos = json_is_true(ae);
        const json_t *ct = json_object_get(tc, "chat_template");
        tpl = json_string_value(ct);
        for (size_t i = 0; json_is_array(ct) && i < json_array_size(ct); i++) {  /* [{name, template}]: "default" */
            const json_t *it = json_array_get(ct, i);
            const char *nm_ = json_string_value(json_object_get(it, "name"));
            if (!tpl || (nm_ && !strcmp(nm_, "default"))) tpl = json_string_value(json_object_get(it, "template"));
        }
    }
    ds_gguf_w_bool(g, "tokenizer.ggml.add_bos_token", add_bos);
    ds_gguf_w_bool(g, "tokenizer.ggml.add_eos_token", add_eos);
    if (tpl) ds_gguf_w_str(g, "tokenizer.chat_template", tpl);
    json_decref(tc);
    for (size_t i = 0; i < nm; i++) free(owned[i]);
    free(owned);
done:
    if (tok)
        for (int64_t i = 0; i < V; i++) free(tok[i]);
    free(tok);
    free(type);
    free(merges);
    json_decref(tj);
    return rc;
}

/* ------------------------------------------------------------ producing */

/* Expert x's matrix of a SRC_EXPERTS tensor. */
static const ds_tensor *expert(const wt *w, int64_t x) {
    return (const ds_tensor *)((const char *)&w->experts[x] + w->eoff);
}

/* Source rows [r0, r0+n) of w as fp32 into out (n a multiple of w->group). */
static void produce_f32(const wt *w, const ds_config *c, int64_t r0, int64_t n, float *out, float *tmp) {
    int64_t K = w->cols;
    switch (w->kind) {
    case SRC_MAT:
        for (int64_t i = 0; i < n; i++) ds_tensor_row_f32(w->t, r0 + i, 0, K, out + i * K);
        break;
    case SRC_EXPERTS: {
        int64_t per = w->shape[1];
        for (int64_t i = 0; i < n; i++) ds_tensor_row_f32(expert(w, (r0 + i) / per), (r0 + i) % per, 0, K, out + i * K);
        break;
    }
    case SRC_VEC:
        memcpy(out, w->vec, (size_t)K * sizeof(float));
        break;
    case SRC_KB: {  /* group = one head: out (Rkv, Dn) = W_UK[h]ᵀ */
        int64_t Dn = c->qk_nope_head_dim, Dv = c->v_head_dim, Rkv = c->kv_lora_rank;
        for (int64_t h0 = r0 / Rkv; h0 < (r0 + n) / Rkv; h0++) {
            for (int64_t k = 0; k < Dn; k++) ds_tensor_row_f32(&w->lw->kv_b_proj, h0 * (Dn + Dv) + k, 0, Rkv, tmp + k * Rkv);
            float *o = out + (h0 * Rkv - r0) * Dn;
            for (int64_t j = 0; j < Rkv; j++)
                for (int64_t k = 0; k < Dn; k++) o[j * Dn + k] = tmp[k * Rkv + j];
        }
        break;
    }
    case SRC_VB: {  /* group = one head: out (Dv, Rkv) = W_UV[h] */
        int64_t Dn = c->qk_nope_head_dim, Dv = c->v_head_dim, Rkv = c->kv_lora_rank;
        for (int64_t i = 0; i < n; i++) {
            int64_t r = r0 + i, h0 = r / Dv;
            ds_tensor_row_f32(&w->lw->kv_b_proj, h0 * (Dn + Dv) + Dn + r % Dv, 0, Rkv, out + i * Rkv);
        }
        break;
    }
    case SRC_KVB: {  /* legacy kv_b from the split form; group = one head (Dn + Dv rows) */
        int64_t Dn = c->qk_nope_head_dim, Dv = c->v_head_dim, Rkv = c->kv_lora_rank;
        for (int64_t h0 = r0 / (Dn + Dv); h0 < (r0 + n) / (Dn + Dv); h0++) {
            float *o = out + (h0 * (Dn + Dv) - r0) * Rkv;
            ds_tensor kb = ds_tensor_slice(&w->lw->wk_b, h0), vb = ds_tensor_slice(&w->lw->wv_b, h0);
            for (int64_t j = 0; j < Rkv; j++) ds_tensor_row_f32(&kb, j, 0, Dn, tmp + j * Dn);
            for (int64_t k = 0; k < Dn; k++)
                for (int64_t j = 0; j < Rkv; j++) o[k * Rkv + j] = tmp[j * Dn + k];
            for (int64_t k = 0; k < Dv; k++) ds_tensor_row_f32(&vb, k, 0, Rkv, o + (Dn + k) * Rkv);
        }
        break;
    }
    case SRC_INDEX:
    case SRC_RANDOM:
        DS_ASSERT(!"random and index tensors are produced as bytes");
    }
}

static uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t z = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E5Bull + (a << 6) + (a >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Random row r of w directly in its output type. */
static void produce_random(const wt *w, uint64_t seed, int64_t r, uint8_t *out) {
    ds_rng g;
    ds_rng_seed(&g, mix(seed, (uint64_t)r));
    int64_t K = w->cols;
    size_t rb = ds_dtype_row_bytes(w->type, K);
    float sd = w->rstd;
    if (w->type == DS_DTYPE_F32 || w->type == DS_DTYPE_F16 || w->type == DS_DTYPE_BF16) {
        for (int64_t i = 0; i < K; i++) {
            float v = sd > 0 ? (float)((ds_rng_uniform(&g) * 2 - 1) * 1.7320508 * sd) : sd == 0 ? 1.0f : 0.0f;
            if (w->type == DS_DTYPE_F32) memcpy(out + 4 * i, &v, 4);
            else {
                uint16_t h = w->type == DS_DTYPE_F16 ? ds_f32_to_f16(v) : ds_f32_to_bf16(v);
                memcpy(out + 2 * i, &h, 2);
            }
        }
        return;
    }
    for (size_t i = 0; i < rb; i += 8) {
        uint64_t x = ds_rng_u64(&g);
        memcpy(out + i, &x, DS_MIN(8, rb - i));
    }
    /* scales so that values have standard deviation ~sd and mean ~0 */
    int64_t nb = K / ds_dtype_block(w->type);
    size_t bb = ds_dtype_block_bytes(w->type);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *p = out + bb * (size_t)b;
        uint16_t h;
        switch (w->type) {
        case DS_DTYPE_Q8_0: h = ds_f32_to_f16(sd / 74.0f); memcpy(p, &h, 2); break;
        case DS_DTYPE_Q4_0: h = ds_f32_to_f16(sd / 4.6f); memcpy(p, &h, 2); break;
        case DS_DTYPE_Q5_0: h = ds_f32_to_f16(sd / 9.2f); memcpy(p, &h, 2); break;
        case DS_DTYPE_Q4_K: {
            ds_block_q4_K *q = (ds_block_q4_K *)p;
            float d = sd / (32.0f * 4.6f);
            q->d = ds_f32_to_f16(d);
            q->dmin = ds_f32_to_f16(d * 7.5f);
            for (int j = 0; j < 4; j++) { q->scales[j] = 160; q->scales[j + 4] = 160; q->scales[j + 8] = 0; }
            break;
        }
        case DS_DTYPE_Q6_K: {
            ds_block_q6_K *q = (ds_block_q6_K *)p;
            for (int j = 0; j < 16; j++) q->scales[j] = 16;
            q->d = ds_f32_to_f16(sd / (16.0f * 18.5f));
            break;
        }
        default:
            /* the other types: the block's scale fields set so its values have RMS ~sd */
            ds_quant_set_block_rms(w->type, p, sd);
            break;
        }
    }
}

typedef struct {
    const wt *w;
    const ds_config *c;
    int64_t r0;          /* first row of the chunk */
    uint8_t *out;        /* chunk output */
    size_t rb;           /* output bytes per row */
    uint64_t seed;
} chunk_ctx;

static void chunk_worker(void *vctx, int64_t g0, int64_t g1, int tid) {
    (void)tid;
    chunk_ctx *cc = vctx;
    const wt *w = cc->w;
    int64_t G = w->group, K = w->cols;
    if (w->kind == SRC_RANDOM) {
        for (int64_t r = g0 * G; r < g1 * G; r++) produce_random(w, cc->seed, cc->r0 + r, cc->out + cc->rb * (size_t)r);
        return;
    }
    if (w->kind == SRC_INDEX) {
        memcpy(cc->out + cc->rb * (size_t)(g0 * G), w->idx + (cc->r0 + g0 * G) * K, cc->rb * (size_t)((g1 - g0) * G));
        return;
    }
    if (w->type == DS_DTYPE_MXFP4) {   /* FP4 expert rows repacked, bit for bit */
        int64_t per = w->shape[1];
        for (int64_t r = g0 * G; r < g1 * G; r++) {
            const ds_tensor *x = expert(w, (cc->r0 + r) / per);
            int64_t rr = (cc->r0 + r) % per;
            if (x->dtype == DS_DTYPE_MXFP4) {   /* a GGUF source: its blocks as they are */
                memcpy(cc->out + cc->rb * (size_t)r, (const uint8_t *)x->data + cc->rb * (size_t)rr, cc->rb);
                continue;
            }
            ds_e2m1_to_mxfp4((const uint8_t *)x->data + rr * (K / 2), x->scale_e8m0 + rr * x->scale_cols,
                             K / DS_MXFP4_BLOCK, cc->out + cc->rb * (size_t)r);
        }
        return;
    }
    float *buf = malloc((size_t)(G * K) * sizeof(float));
    float *tmp = (w->kind == SRC_KB || w->kind == SRC_KVB)
                     ? malloc((size_t)(cc->c->kv_lora_rank * (cc->c->qk_nope_head_dim + cc->c->v_head_dim)) * sizeof(float))
                     : NULL;
    DS_ASSERT(buf && (tmp || (w->kind != SRC_KB && w->kind != SRC_KVB)));
    for (int64_t g = g0; g < g1; g++) {
        int64_t r = g * G;
        produce_f32(w, cc->c, cc->r0 + r, G, buf, tmp);
        for (int64_t i = 0; i < G; i++) ds_quantize_row_ref(w->type, buf + i * K, cc->out + cc->rb * (size_t)(r + i), K);
    }
    free(buf);
    free(tmp);
}

/* True when the source rows already have the output type: copy bytes. */
static bool direct_copy(const wt *w) {
    if (w->kind == SRC_MAT) return w->t->dtype == w->type && !w->t->scale;
    if (w->kind == SRC_EXPERTS) return expert(w, 0)->dtype == w->type && !expert(w, 0)->scale;
    return false;
}

static const uint8_t *copy_src(const wt *w, int64_t r) {
    if (w->kind == SRC_MAT) return (const uint8_t *)w->t->data + ds_dtype_row_bytes(w->type, w->cols) * (size_t)r;
    int64_t per = w->shape[1];
    return (const uint8_t *)expert(w, r / per)->data + ds_dtype_row_bytes(w->type, w->cols) * (size_t)(r % per);
}

/* One output file: its writer and the tensors [t0, t1) of the list. */
typedef struct { ds_gguf_writer *g; int64_t t0, t1; char path[4200]; } wpart;

/* Assigns tensors to parts of at most max bytes (header included; a tensor
 * larger than max alone), like llama.cpp's gguf-split --split-max-size. */
static int plan_parts(const wlist *L, const ds_convert_opts *o, uint64_t meta_bytes, wpart **out, int *n, ds_err *e) {
    int cap = 16;
    wpart *p = calloc((size_t)cap, sizeof *p);
    if (!p) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int k = 0;
    p[0].t0 = 0;
    uint64_t cur = meta_bytes;
    for (int64_t i = 0; i < L->n; i++) {
        const wt *w = &L->v[i];
        uint64_t b = (uint64_t)ds_dtype_row_bytes(w->type, w->cols) * (uint64_t)w->rows;
        b = (b + 31) / 32 * 32 + 128;  /* data + its header entry, roughly */
        if (o->split_max_bytes && i > p[k].t0 && cur + b > o->split_max_bytes) {
            p[k].t1 = i;
            if (++k == cap) {
                wpart *np = realloc(p, (size_t)(cap *= 2) * sizeof *p);
                if (!np) { free(p); return ds_err_set(e, DS_ENOMEM, "out of memory"); }
                p = np;
            }
            memset(&p[k], 0, sizeof p[k]);
            p[k].t0 = i;
            cur = 4096;
        }
        cur += b;
    }
    p[k].t1 = L->n;
    *n = k + 1;
    *out = p;
    if (*n > DS_GGUF_MAX_SPLITS) {
        free(p);
        return ds_err_set(e, DS_EINVAL, "--split-max-size: %d parts, at most %d", *n, DS_GGUF_MAX_SPLITS);
    }
    return DS_OK;
}

static int write_all(const ds_config *c, const ds_model *m, const char *path, const ds_convert_opts *o, uint64_t seed,
                     ds_err *e) {
    int64_t n_mtp = 0;
    if (!o->drop_mtp) n_mtp = m ? m->n_mtp : c->n_mtp;
    if (c->arch == DS_ARCH_V4 && n_mtp > 0)   /* not silently: the user asks for the model without it */
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: DeepSeek-V4's MTP layer has no tensor names in llama.cpp's deepseek4 "
                          "layout (as of 0c1e570); pass --no-mtp to write the model without it", path);
    wlist L = { 0 };
    wpart *P = NULL;
    int np = 0;
    uint8_t *chunk = NULL;
    int rc;
    ds_gguf_writer *meta = ds_gguf_writer_new();
    if (!meta) return ds_err_set(e, DS_ENOMEM, "out of memory");
    if ((rc = build_list(&L, c, m, n_mtp, o, e))) goto done;
    ds_convert_opts om = *o;   /* general.file_type: MXFP4 experts make the file llama.cpp's MOSTLY_MXFP4_MOE */
    for (int64_t i = 0; i < L.n; i++)
        if (L.v[i].type == DS_DTYPE_MXFP4) om.experts = DS_DTYPE_MXFP4;
    if ((rc = write_meta(meta, c, n_mtp, &om, e))) goto done;
    if ((rc = plan_parts(&L, o, ds_gguf_w_header_bytes(meta), &P, &np, e))) goto done;
    /* part names: PATH's prefix (without .gguf and any -00001-of-0000N) + -%05d-of-%05d.gguf */
    char prefix[4096];
    snprintf(prefix, sizeof prefix, "%s", path);
    size_t pl = strlen(prefix);
    if (pl > 5 && !strcmp(prefix + pl - 5, ".gguf")) prefix[pl -= 5] = 0;
    if (pl > 15 && !strncmp(prefix + pl - 15, "-00001-of-", 10)) prefix[pl - 15] = 0;
    int64_t total = 0;
    for (int k = 0; k < np; k++) {
        wpart *p = &P[k];
        if (np == 1) {
            p->g = meta;
            meta = NULL;
            snprintf(p->path, sizeof p->path, "%s", path);
        } else {
            ds_gguf_split_name(p->path, sizeof p->path, prefix, k, np);
            if (k == 0) { p->g = meta; meta = NULL; }
            else if (!(p->g = ds_gguf_writer_new())) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
            ds_gguf_w_u16(p->g, "split.no", (uint16_t)k);
            ds_gguf_w_u16(p->g, "split.count", (uint16_t)np);
            ds_gguf_w_i32(p->g, "split.tensors.count", (int32_t)L.n);
        }
        for (int64_t i = p->t0; i < p->t1; i++) {
            wt *w = &L.v[i];
            int64_t shape[3] = { w->shape[0], w->shape[1], w->shape[2] };
            int64_t idx = ds_gguf_w_tensor(p->g, w->name, (uint32_t)ds_ggml_type_of(w->type), w->ndim, shape, e);
            if (idx < 0) { rc = (int)idx; goto done; }
            total += (int64_t)ds_gguf_w_tensor_bytes(p->g, idx);
        }
    }
    if (o->first_part && o->first_part_cap) snprintf(o->first_part, o->first_part_cap, "%s", P[0].path);
    const size_t chunk_cap = 32u << 20;
    chunk = malloc(chunk_cap);
    if (!chunk) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
    int64_t done_bytes = 0;
    for (int k = 0; k < np; k++) {
        ds_gguf_writer *g = P[k].g;
        if ((rc = ds_gguf_writer_begin(g, P[k].path, e))) goto done;
        for (int64_t i = P[k].t0; i < P[k].t1; i++) {
            const wt *w = &L.v[i];
            size_t rb = ds_dtype_row_bytes(w->type, w->cols);
            size_t gb = rb * (size_t)w->group;
            int64_t groups = w->rows / w->group;
            int64_t per_chunk = DS_MAX(1, (int64_t)(chunk_cap / gb));
            DS_ASSERT(gb <= chunk_cap);
            bool copy = m && direct_copy(w);
            for (int64_t g0 = 0; g0 < groups; g0 += per_chunk) {
                int64_t ng = DS_MIN(per_chunk, groups - g0);
                int64_t r0 = g0 * w->group;
                if (copy) {
                    for (int64_t r = 0; r < ng * w->group; r++) memcpy(chunk + rb * (size_t)r, copy_src(w, r0 + r), rb);
                } else {
                    chunk_ctx cc = { w, c, r0, chunk, rb, mix(seed, (uint64_t)i) };
                    int64_t min_groups = DS_MAX(1, (int64_t)(1 << 16) / DS_MAX(1, w->group * w->cols));
                    ds_par_for(ng, min_groups, chunk_worker, &cc);
                }
                if ((rc = ds_gguf_writer_write(g, chunk, gb * (size_t)ng, e))) goto done;
                done_bytes += (int64_t)(gb * (size_t)ng);
                if (o->progress) o->progress(o->progress_ud, done_bytes, total, w->name);
            }
        }
        if ((rc = ds_gguf_writer_finish(g, e))) goto done;
    }
done:
    free(chunk);
    free(L.v);
    for (int k = 0; k < np; k++) ds_gguf_writer_free(P[k].g);
    free(P);
    ds_gguf_writer_free(meta);
    return rc;
}

int ds_model_write_gguf(const ds_model *m, const char *path, const ds_convert_opts *o, ds_err *e) {
    if (m->expert_lo != 0 || m->expert_hi != m->cfg.n_routed_experts)
        return ds_err_set(e, DS_EINVAL, "%s: holds routed experts [%lld, %lld) of %lld; converting needs them all", m->dir,
                          (long long)m->expert_lo, (long long)m->expert_hi, (long long)m->cfg.n_routed_experts);
    const ds_dtype used[5] = { o->attn, o->ffn, o->experts, o->embed, o->head };
    for (int k = 0; k < 5; k++)
        if (!ds_quant_has_quantizer(used[k]) && !(k == 2 && used[k] == DS_DTYPE_MXFP4))
            return ds_err_set(e, DS_EUNSUPPORTED, "%s: deepseek.c reads %s but does not write it (the IQ1/IQ2/IQ3 types "
                              "need an importance matrix: llama.cpp's llama-quantize --imatrix)", path, ds_dtype_name(used[k]));
    ds_convert_opts oo = *o;
    if (!oo.tokenizer_dir && !oo.tokenizer_gguf && m->gguf) oo.tokenizer_gguf = m->gguf;
    return write_all(&m->cfg, m, path, &oo, 0, e);
}

int ds_write_random_gguf(const ds_config *c, const char *path, const ds_convert_opts *o, uint64_t seed, ds_err *e) {
    int rc = ds_config_validate(c, "random model config", e);
    if (rc) return rc;
    if (c->arch == DS_ARCH_V4)
        return ds_err_set(e, DS_EUNSUPPORTED, "random model config: random DeepSeek-V4 GGUFs are not supported (convert a "
                          "V4 folder instead)");
    return write_all(c, NULL, path, o, seed, e);
}
