/*
 * tensors.h - the one table of DeepSeek-V2/V3/V3.2/V4 tensors. A row per tensor
 * kind: the field it fills in the inference structs (model.h) and in the
 * training structs (train/tmodel.h), its Hugging Face and GGUF (llama.cpp
 * `deepseek2` / `deepseek32`; V4's rows `deepseek4`) names, its shape in config dims, which configs and layers
 * have it, and its GGUF type class. The loaders (model.c, model_gguf.c),
 * the trainer's parameter table (train/params.c), the GGUF writer
 * (convert.c) and repacking (repack_model.c) all walk it; a new tensor is
 * one new row.
 *
 * Rows are in GGUF file order (convert.c writes them so); the trainer keeps
 * its own checkpoint order (params.c says which).
 *
 * Names: a row stores the suffix; the scope adds the prefix
 *   HF    model scope: as is; layer / MTP: "model.layers.<l>."; expert:
 *         "model.layers.<l>.mlp.experts.<x>."
 *   GGUF  model scope: as is; otherwise "blk.<l>."; routed experts are
 *         stacked into one tensor (E, rows, cols) per kind.
 */
#ifndef DS_TENSORS_H
#define DS_TENSORS_H

#include "model.h"

typedef enum ds_tk {
    /* model scope */
    DS_TK_EMBED, DS_TK_FINAL_NORM, DS_TK_LM_HEAD,
    /* every layer */
    DS_TK_ATTN_NORM, DS_TK_Q_A, DS_TK_Q_A_NORM, DS_TK_Q_B, DS_TK_Q, DS_TK_KV_A, DS_TK_KV_A_NORM,
    DS_TK_KV_B, DS_TK_K_B, DS_TK_V_B, DS_TK_O, DS_TK_FFN_NORM,
    DS_TK_GATE, DS_TK_UP, DS_TK_DOWN, DS_TK_ROUTER, DS_TK_ROUTER_BIAS,
    DS_TK_EXP_GATE, DS_TK_EXP_UP, DS_TK_EXP_GATE_UP, DS_TK_EXP_DOWN,
    DS_TK_SH_GATE, DS_TK_SH_UP, DS_TK_SH_DOWN,
    /* MTP layers */
    DS_TK_EH_PROJ, DS_TK_ENORM, DS_TK_HNORM, DS_TK_HEAD_NORM, DS_TK_MTP_EMBED, DS_TK_MTP_HEAD,
    /* DSA layers (V3.2): the lightning indexer */
    DS_TK_IDX_Q_B, DS_TK_IDX_K, DS_TK_IDX_K_NORM, DS_TK_IDX_K_NORM_B, DS_TK_IDX_W,
    /* DeepSeek-V4 (arch DS_ARCH_V4 only; the V2/V3 rows above are never needed there) */
    DS_TK_V4_EMBED, DS_TK_V4_NORM, DS_TK_V4_HEAD, DS_TK_V4_HC_HEAD_FN, DS_TK_V4_HC_HEAD_BASE, DS_TK_V4_HC_HEAD_SCALE,
    DS_TK_V4_ATTN_NORM, DS_TK_V4_FFN_NORM, DS_TK_V4_HC_ATTN_FN, DS_TK_V4_HC_ATTN_BASE, DS_TK_V4_HC_ATTN_SCALE,
    DS_TK_V4_HC_FFN_FN, DS_TK_V4_HC_FFN_BASE, DS_TK_V4_HC_FFN_SCALE,
    DS_TK_V4_SINKS, DS_TK_V4_Q_A, DS_TK_V4_Q_A_NORM, DS_TK_V4_Q_B, DS_TK_V4_KV, DS_TK_V4_KV_NORM,
    DS_TK_V4_O_A, DS_TK_V4_O_B,
    DS_TK_V4_CSA_KV, DS_TK_V4_CSA_GATE, DS_TK_V4_CSA_APE, DS_TK_V4_CSA_NORM,
    DS_TK_V4_HCA_KV, DS_TK_V4_HCA_GATE, DS_TK_V4_HCA_APE, DS_TK_V4_HCA_NORM,
    DS_TK_V4_IDX_KV, DS_TK_V4_IDX_GATE, DS_TK_V4_IDX_APE, DS_TK_V4_IDX_NORM, DS_TK_V4_IDX_W, DS_TK_V4_IDX_Q_B,
    DS_TK_V4_ROUTER, DS_TK_V4_ROUTER_BIAS, DS_TK_V4_TID2EID,
    DS_TK_V4_EXP_GATE, DS_TK_V4_EXP_UP, DS_TK_V4_EXP_DOWN, DS_TK_V4_SH_GATE, DS_TK_V4_SH_UP, DS_TK_V4_SH_DOWN,
    /* DeepSeek-V4's MTP block (besides an ordinary V4 layer's rows) */
    DS_TK_V4_MTP_E_PROJ, DS_TK_V4_MTP_H_PROJ, DS_TK_V4_MTP_ENORM, DS_TK_V4_MTP_HNORM, DS_TK_V4_MTP_NORM,
    DS_TK_V4_MTP_HC_FN, DS_TK_V4_MTP_HC_BASE, DS_TK_V4_MTP_HC_SCALE,
    DS_TK_COUNT
} ds_tk;

typedef enum ds_tscope {
    DS_TS_MODEL,    /* once: fields of ds_model / ds_tweights */
    DS_TS_LAYER,    /* every layer, MTP layers included: ds_layer_w / ds_tlayer */
    DS_TS_EXPERT,   /* every routed expert of a MoE layer: ds_mlp_w / ds_tmlp */
    DS_TS_MTP,      /* MTP layers (l >= L) only: ds_layer_w / ds_tlayer */
} ds_tscope;

/* Which configs and layers have the kind (ds_tk_need). */
typedef enum ds_twhen {
    DS_TW_ALWAYS,
    DS_TW_Q_LORA,       /* Rq > 0 */
    DS_TW_Q_PLAIN,      /* Rq == 0 */
    DS_TW_KV_JOINT,     /* kv_b_proj as one matrix (HF; GGUF attn_kv_b) */
    DS_TW_KV_SPLIT,     /* kv_b_proj split per head (GGUF attn_k_b / attn_v_b) */
    DS_TW_DENSE,        /* !ds_config_layer_is_moe */
    DS_TW_MOE,          /* ds_config_layer_is_moe */
    DS_TW_MOE_NOAUX,    /* MoE layer and topk_method noaux_tc */
    DS_TW_GU_SEPARATE,  /* MoE layer, gate and up stacked apart */
    DS_TW_GU_MERGED,    /* MoE layer, GGUF ffn_gate_up_exps (E, 2F, D) */
    DS_TW_SHARED,       /* MoE layer and n_shared_experts > 0 */
    DS_TW_UNTIED,       /* required unless tie_word_embeddings, then optional */
    DS_TW_OPTIONAL,     /* optional (the MTP module's own embedding / head copies) */
    DS_TW_DSA,          /* layers with sparse attention (attn_kind DS_ATTN_DSA) */
    /* DeepSeek-V4 configs only (and then none of the kinds above) */
    DS_TW_V4,           /* every V4 layer / the V4 model scope */
    DS_TW_V4_UNTIED,    /* as DS_TW_UNTIED, V4 */
    DS_TW_V4_CSA,       /* compressed sparse attention layers: compressor (2 series) + indexer */
    DS_TW_V4_HCA,       /* heavily compressed attention layers: compressor (1 series) */
    DS_TW_V4_MOE,       /* top-k routed layers (router bias) */
    DS_TW_V4_HASH,      /* hash-routed layers (tid2eid) */
} ds_twhen;

/* Layouts a file may use, for ds_tk_need's `forms`. */
enum { DS_FORM_KV_SPLIT = 1, DS_FORM_GU_MERGED = 2 };

/* Shape letters of config.h, and the products the table uses. */
typedef enum ds_tdim {
    DS_TD_D, DS_TD_2D, DS_TD_V, DS_TD_H, DS_TD_DN, DS_TD_DV, DS_TD_RQ, DS_TD_RKV,
    DS_TD_HDQ,      /* H·Dq */
    DS_TD_KVA,      /* Rkv+Dr */
    DS_TD_KVB,      /* H·(Dn+Dv) */
    DS_TD_HDV,      /* H·Dv */
    DS_TD_I, DS_TD_F, DS_TD_2F, DS_TD_E,
    DS_TD_SF,       /* Es·F */
    DS_TD_HI, DS_TD_DI,
    DS_TD_HIDI,     /* Hi·Di */
    /* DeepSeek-V4 */
    DS_TD_DH, DS_TD_2DH, DS_TD_HDH,  /* Dh, 2·Dh, H·Dh */
    DS_TD_HDHG,     /* H·Dh / G: one output group's input */
    DS_TD_GRO,      /* G·Ro */
    DS_TD_2DI,      /* 2·Di */
    DS_TD_RCSA, DS_TD_RHCA, /* compress_rate_csa, compress_rate_hca */
    DS_TD_NHC, DS_TD_NHCM, DS_TD_NHCD, /* hc_mult, (2+hc)·hc, hc·D */
    DS_TD_3, DS_TD_1, DS_TD_K,
} ds_tdim;

/* GGUF output type class (ds_convert_opts); vectors are always F32. */
typedef enum ds_tclass { DS_TC_F32, DS_TC_ATTN, DS_TC_FFN, DS_TC_EXPERTS, DS_TC_EMBED, DS_TC_HEAD } ds_tclass;

enum {
    DS_TF_BIAS = 1,         /* selection bias: no gradient (sign rule), initialized 0 */
    DS_TF_NO_REPACK = 2,    /* read by row (embeddings) or kept as stored (router): no x8 copy */
    DS_TF_GATE = 4,         /* a gate projection: the trainer puts up right after it, one (2F, D) GEMM */
    DS_TF_GGUF_OPTIONAL = 8,/* llama.cpp files may leave it out even where the config has it */
    DS_TF_INDEX = 16,       /* an integer table (I32/I64 in the file) bound to an int32_t * field (tid2eid) */
};

#define DS_TK_NO_FIELD ((size_t)-1)

typedef struct ds_tkind {
    ds_tscope scope;
    const char *hf, *gguf;  /* name suffixes; NULL: not in that format */
    int ndim;               /* 1: a float * field (norms, bias), 2-3: a ds_tensor (DS_TF_INDEX: int32_t *) */
    ds_tdim shape[3];       /* row-major; per expert for DS_TS_EXPERT */
    ds_twhen when;
    ds_tclass cls;
    unsigned flags;         /* DS_TF_* */
    size_t w_off;           /* field in ds_model / ds_layer_w / ds_mlp_w, by scope */
    size_t t_off;           /* field in ds_tweights / ds_tlayer / ds_tmlp, or DS_TK_NO_FIELD */
} ds_tkind;

extern const ds_tkind ds_tkinds[DS_TK_COUNT];

typedef enum ds_tneed { DS_TN_NO = 0, DS_TN_YES, DS_TN_MAYBE } ds_tneed;

/* Whether layer l (-1: the model scope) of config c has kind k in a file
 * using `forms` (DS_FORM_*): no, yes (required), maybe (bound when present). */
ds_tneed ds_tk_need(const ds_tkind *k, const ds_config *c, int64_t l, unsigned forms);

/* k's shape for config c into shape[0..ndim); returns ndim. */
int ds_tk_shape(const ds_tkind *k, const ds_config *c, int64_t shape[3]);

/* k's Hugging Face (gguf false) or GGUF name for layer l, expert x. */
void ds_tk_name(const ds_tkind *k, bool gguf, int64_t l, int64_t x, char *buf, size_t n);

/* The field k fills in m: in m itself, m->layers[l] or m->layers[l].experts[x]
 * (a ds_tensor, or a float * for ndim 1). */
void *ds_tk_field(const ds_tkind *k, ds_model *m, int64_t l, int64_t x);

/* Parameters of layer l that every such layer stores (optional kinds left
 * out, kv_b joint), its routed experts counted n_experts times (E for the
 * total, K for the active ones); only the matrices when matrices_only. */
int64_t ds_tk_layer_params(const ds_config *c, int64_t l, int64_t n_experts, bool matrices_only);

/* Whether a Hugging Face folder stores any tensor of layer l (MTP layers
 * are optional: transformers' save_pretrained does not write them). */
bool ds_tk_hf_layer_stored(const ds_safetensors *st, int64_t l);

/* DeepSeek-V4's release names for a V4 row's Hugging Face name (what
 * transformers' save_pretrained writes, the table's) in a model of L main
 * layers: an MTP layer's "model.layers.<L+i>." is "mtp.<i>."; "model." dropped,
 * embed_tokens -> embed, hc_head.hc_fn -> hc_head_fn (base, scale alike),
 * the attention's K=V norm attn.norm -> attn.kv_norm; everything else
 * (attn., ffn., experts.X.w1, compressor., indexer.) is the same. The
 * release's own scales sit beside a weight as "<...>.scale" (float8_e8m0fnu)
 * where transformers writes "<...>.weight_scale_inv". */
void ds_tk_v4_official_name(const char *hf, int64_t L, char *buf, size_t n);

#endif
