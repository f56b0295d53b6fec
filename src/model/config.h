/*
 * config.h - the model hyper-parameters, read from a Hugging Face
 * config.json (DeepseekV2ForCausalLM / DeepseekV3ForCausalLM).
 *
 * Dimension letters used in shape comments across src/model:
 *   T tokens, D hidden_size, V vocab_size, L layers, H heads,
 *   Dn qk_nope_head_dim, Dr qk_rope_head_dim, Dq = Dn + Dr, Dv v_head_dim,
 *   Rq q_lora_rank, Rkv kv_lora_rank, I dense FFN width, F expert FFN width,
 *   E routed experts, K experts per token, S ctx (cached positions),
 *   Hi index_n_heads, Di index_head_dim, Ktop index_topk (V3.2 lightning indexer).
 */
#ifndef DS_CONFIG_H
#define DS_CONFIG_H

#include "../core/base.h"

typedef enum { DS_ARCH_V2 = 2, DS_ARCH_V3 = 3, DS_ARCH_V4 = 4 } ds_arch;
/* What each layer is made of (ds_config.attn_kind / ffn_kind). V2/V3 have
 * MLA everywhere and dense or MoE FFNs; the other kinds are declared for
 * later architectures and rejected by ds_config_validate until implemented. */
/* DS_ATTN_DSA: MLA whose queries attend only to the index_topk earlier
 * positions a lightning indexer picks (DeepSeek Sparse Attention, V3.2; dsa.c). */
/* DS_ATTN_SWA / CSA / HCA: DeepSeek-V4's attention (v4attn.c): one shared K=V
 * head over a sliding window of sliding_window tokens, plus (CSA) the top
 * index_topk of the entries a compressor makes of every compress_rate_csa
 * tokens (overlapping windows, picked by an indexer) or (HCA) every entry
 * of compress_rate_hca tokens. */
typedef enum { DS_ATTN_UNSET = 0, DS_ATTN_MLA = 1, DS_ATTN_DSA = 2, DS_ATTN_SWA = 3, DS_ATTN_CSA = 4,
               DS_ATTN_HCA = 5 } ds_attn_kind;
typedef enum { DS_FFN_UNSET = 0, DS_FFN_DENSE = 1, DS_FFN_MOE = 2, DS_FFN_HASH_MOE = 3 } ds_ffn_kind;
#define DS_MAX_LAYERS (1024 + 8)  /* num_hidden_layers <= 1024, plus up to 8 MTP layers */
typedef enum { DS_TOPK_GREEDY = 0, DS_TOPK_GROUP_LIMITED = 1, DS_TOPK_NOAUX_TC = 2 } ds_topk_method;
typedef enum { DS_SCORE_SOFTMAX = 0, DS_SCORE_SIGMOID = 1, DS_SCORE_SQRTSOFTPLUS = 2 } ds_score_func;

typedef struct ds_config {
    ds_arch arch;
    int64_t vocab_size;          /* V */
    int64_t hidden_size;         /* D */
    int64_t intermediate_size;   /* I */
    int64_t moe_intermediate_size; /* F */
    int64_t n_layer;             /* L (main model; MTP layers come after) */
    int64_t n_head;              /* H */
    int64_t q_lora_rank;         /* Rq; 0 = plain q_proj */
    int64_t kv_lora_rank;        /* Rkv */
    int64_t qk_nope_head_dim;    /* Dn */
    int64_t qk_rope_head_dim;    /* Dr */
    int64_t v_head_dim;          /* Dv */
    int64_t first_k_dense_replace;
    int64_t moe_layer_freq;
    int64_t n_routed_experts;    /* E; 0 = dense model */
    int64_t n_shared_experts;
    int64_t num_experts_per_tok; /* K */
    int64_t n_group, topk_group;
    ds_topk_method topk_method;
    ds_score_func scoring_func;
    bool norm_topk_prob;
    double routed_scaling_factor;
    int64_t n_mtp;               /* num_nextn_predict_layers */
    /* DeepSeek Sparse Attention (V3.2, model_type deepseek_v32): index_topk > 0 */
    int64_t index_n_heads;       /* Hi */
    int64_t index_head_dim;      /* Di (its first Dr dims are roped, half-split) */
    int64_t index_topk;          /* Ktop; 0: no indexer (V2/V3) */
    /* per layer, main layers then MTP layers ([0, L + n_mtp)); filled by
     * ds_config_derive_layers from first_k_dense_replace / moe_layer_freq */
    uint8_t attn_kind[DS_MAX_LAYERS];  /* ds_attn_kind */
    uint8_t ffn_kind[DS_MAX_LAYERS];   /* ds_ffn_kind */
    int64_t n_streams;           /* residual streams (hyper-connections' hc_mult); 1 for V2/V3 */
    double rms_norm_eps;
    double rope_theta;
    int64_t max_position_embeddings;
    /* YaRN */
    bool yarn;
    double rope_factor, rope_orig_max_pos, beta_fast, beta_slow, mscale, mscale_all_dim;
    /* FP8 */
    bool fp8;
    int64_t fp8_block_r, fp8_block_c;
    bool tie_word_embeddings;
    int64_t bos_token_id, eos_token_id;  /* -1 when unknown */
    char model_type[32];
    /* DeepSeek-V4 (arch DS_ARCH_V4; v4attn.c, hc.c). Dr = qk_rope_head_dim is the
     * roped tail of each head; n_streams = hc_mult. */
    int64_t head_dim;            /* Dh: q, K=V and output per head */
    int64_t o_groups, o_lora_rank; /* G, Ro: grouped output projection */
    int64_t sliding_window;      /* Nw: keys a query sees in its own window (itself included) */
    int64_t compress_rate_csa, compress_rate_hca; /* tokens per compressed entry */
    double compress_rope_theta;  /* CSA/HCA layers' RoPE base (YaRN: the yarn fields above) */
    int64_t hc_sinkhorn_iters;
    double hc_eps;
    double swiglu_limit;         /* > 0: gate <= limit, |up| <= limit before SiLU(gate)·up */
} ds_config;

/* Parses and validates DIR/config.json (or a config.json path). */
int ds_config_load(ds_config *c, const char *path, ds_err *e);
/* Same, from a JSON text in memory; `what` names it in messages. */
int ds_config_parse(ds_config *c, const char *json, size_t len, const char *what, ds_err *e);
/* The DeepSeek-V4 part of parsing (config_v4.c): j is config.json's object. */
struct json_t;
int ds_config_parse_v4(ds_config *c, struct json_t *j, const char *what, ds_err *e);
/* quantization_config (NULL or null: none) -> fp8 / fp8_block_r / fp8_block_c. */
int ds_config_parse_fp8(ds_config *c, struct json_t *qc, const char *what, ds_err *e);
/* Validates ranges and cross-field constraints (also after programmatic edits). */
int ds_config_validate(const ds_config *c, const char *what, ds_err *e);

/* Fills the per-layer kinds and n_streams of a V2/V3 config from its
 * fields (MLA everywhere, DSA when index_topk > 0; MoE where l >= first_k_dense_replace and
 * l % moe_layer_freq == 0, else dense; one residual stream). Parsers call
 * it; call it again after editing those fields by hand. */
void ds_config_derive_layers(ds_config *c);

/* Routed experts in layer l: MoE or hash-routed MoE (V4). */
static inline bool ds_config_layer_is_moe(const ds_config *c, int64_t l) {
    return l >= 0 && l < DS_MAX_LAYERS && (c->ffn_kind[l] == DS_FFN_MOE || c->ffn_kind[l] == DS_FFN_HASH_MOE);
}

/* Floats per KV-cache row of layer l: MLA caches the latent and the roped
 * key; DSA appends the indexer's key (Di); V4 layers as v4attn.c says. */
static inline int64_t ds_config_kv_width(const ds_config *c, int64_t l) {
    if (c->arch == DS_ARCH_V4) {
        int64_t Dh = c->head_dim, Di = c->index_head_dim;
        switch (l >= 0 && l < DS_MAX_LAYERS ? c->attn_kind[l] : 0) {
        /* V4 rows (v4attn.c): K=V | compressor kv, gate (raw) | entry [| indexer kv, gate | entry] */
        case DS_ATTN_HCA: return 4 * Dh;
        case DS_ATTN_CSA: return 6 * Dh + 5 * Di;
        default: return Dh;
        }
    }
    int64_t w = c->kv_lora_rank + c->qk_rope_head_dim;
    if (l >= 0 && l < DS_MAX_LAYERS && c->attn_kind[l] == DS_ATTN_DSA) w += c->index_head_dim;
    return w;
}

/* The Hugging Face architecture name of c ("DeepseekV32ForCausalLM", ...). */
const char *ds_config_arch_name(const ds_config *c);

/* Softmax scale: Dq^-0.5 · mscale² (YaRN). */
double ds_config_softmax_scale(const ds_config *c);

#endif
