/*
 * config.h - the model hyper-parameters, read from a Hugging Face
 * config.json (DeepseekV2ForCausalLM / DeepseekV3ForCausalLM).
 *
 * Dimension letters used in shape comments across src/model:
 *   T tokens, D hidden_size, V vocab_size, L layers, H heads,
 *   Dn qk_nope_head_dim, Dr qk_rope_head_dim, Dq = Dn + Dr, Dv v_head_dim,
 *   Rq q_lora_rank, Rkv kv_lora_rank, I dense FFN width, F expert FFN width,
 *   E routed experts, K experts per token, S ctx (cached positions).
 */
#ifndef DS_CONFIG_H
#define DS_CONFIG_H

#include "../core/base.h"

typedef enum { DS_ARCH_V2 = 2, DS_ARCH_V3 = 3 } ds_arch;
typedef enum { DS_TOPK_GREEDY = 0, DS_TOPK_GROUP_LIMITED = 1, DS_TOPK_NOAUX_TC = 2 } ds_topk_method;
typedef enum { DS_SCORE_SOFTMAX = 0, DS_SCORE_SIGMOID = 1 } ds_score_func;

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
} ds_config;

/* Parses and validates DIR/config.json (or a config.json path). */
int ds_config_load(ds_config *c, const char *path, ds_err *e);
/* Same, from a JSON text in memory; `what` names it in messages. */
int ds_config_parse(ds_config *c, const char *json, size_t len, const char *what, ds_err *e);
/* Validates ranges and cross-field constraints (also after programmatic edits). */
int ds_config_validate(const ds_config *c, const char *what, ds_err *e);

static inline bool ds_config_layer_is_moe(const ds_config *c, int64_t l) {
    return c->n_routed_experts > 0 && l >= c->first_k_dense_replace && l % c->moe_layer_freq == 0;
}

/* Softmax scale: Dq^-0.5 · mscale² (YaRN). */
double ds_config_softmax_scale(const ds_config *c);

#endif
