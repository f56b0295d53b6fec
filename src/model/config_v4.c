/*
 * config_v4.c - a DeepSeek-V4 config.json (model_type deepseek_v4,
 * DeepseekV4ForCausalLM) -> ds_config: the keys transformers 5.x's
 * DeepseekV4Config writes (and the legacy ones it folds in: compress_ratios,
 * compress_rate_csa/hca, num_hash_layers, qk_rope_head_dim), its defaults
 * for absent keys, the per-layer kinds from layer_types / mlp_layer_types
 * (the MTP layers' from the release's compress_ratios[L + i]), and
 * cross-field checks. A key this file does not know is an error (it
 * would describe something we do not run); so is a value transformers would
 * accept but that changes nothing here in a way we cannot honour.
 */
#include "config.h"
#include "../io/json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Keys read below, plus the generic PreTrainedConfig / generation keys that
 * carry nothing for the forward. */
static const char *const known_keys[] = {
    "architectures", "model_type", "vocab_size", "hidden_size", "moe_intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "q_lora_rank", "qk_rope_head_dim",
    "partial_rotary_factor", "num_experts_per_tok", "n_routed_experts", "n_shared_experts", "scoring_func",
    "norm_topk_prob", "routed_scaling_factor", "max_position_embeddings", "rope_theta", "layer_types",
    "compress_rates", "compress_ratios", "compress_rate_csa", "compress_rate_hca", "compress_rope_theta",
    "hc_mult", "hc_sinkhorn_iters", "hc_eps", "mlp_layer_types", "num_hash_layers", "swiglu_limit",
    "sliding_window", "o_groups", "o_lora_rank", "index_n_heads", "index_head_dim", "index_topk",
    "num_nextn_predict_layers", "hidden_act", "rms_norm_eps", "bos_token_id", "eos_token_id",
    "tie_word_embeddings", "rope_parameters", "rope_scaling", "attention_bias", "mlp_bias", "topk_method",
    "n_group", "topk_group", "quantization_config",
    /* no effect on inference */
    "output_router_logits", "router_aux_loss_coef", "router_jitter_noise", "initializer_range", "use_cache",
    "pad_token_id", "attention_dropout", "transformers_version", "dtype", "torch_dtype", "expert_dtype",
    "return_dict", "output_hidden_states", "output_attentions", "is_encoder_decoder", "id2label", "label2id",
    "problem_type", "tokenizer_class", "chunk_size_feed_forward", "auto_map", "use_return_dict",
};

static int check_keys(json_t *j, const char *w, ds_err *e) {
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        bool ok = key[0] == '_';
        for (size_t i = 0; !ok && i < sizeof known_keys / sizeof *known_keys; i++) ok = strcmp(key, known_keys[i]) == 0;
        if (!ok)
            return ds_err_set(e, DS_EUNSUPPORTED, "%s: unknown DeepSeek-V4 config key '%s' (not one transformers' "
                              "DeepseekV4Config defines)", w, key);
    }
    return DS_OK;
}

static int layer_kind_of(const char *s, int64_t csa, int64_t hca) {
    (void)csa, (void)hca;
    if (!s) return 0;
    if (!strcmp(s, "sliding_attention")) return DS_ATTN_SWA;
    if (!strcmp(s, "compressed_sparse_attention")) return DS_ATTN_CSA;
    if (!strcmp(s, "heavily_compressed_attention")) return DS_ATTN_HCA;
    return 0;
}

/* compress_ratios[l]: 0 sliding, the CSA rate (4), the HCA rate (128) */
static int ratio_kind(const ds_config *c, json_t *v, const char *w, int64_t l, uint8_t *kind, ds_err *e) {
    int64_t r = json_is_integer(v) ? json_integer_value(v) : -1;
    *kind = r == 0 ? DS_ATTN_SWA : r == c->compress_rate_csa ? DS_ATTN_CSA : r == c->compress_rate_hca ? DS_ATTN_HCA : 0;
    if (!*kind)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: compress_ratios[%lld] must be 0, %lld (CSA) or %lld (HCA)", w,
                          (long long)l, (long long)c->compress_rate_csa, (long long)c->compress_rate_hca);
    return DS_OK;
}

/* One rope_parameters sub-dict ("main" or "compress"). */
static int rope_sub(ds_config *c, json_t *rp, const char *w, const char *label, double *theta, bool compress, ds_err *e) {
    char rw[600];
    snprintf(rw, sizeof rw, "%s: rope_parameters.%s", w, label);
    const char *rt = NULL;
    int rc;
    if ((rc = ds_json_get_str(rp, rw, "rope_type", false, &rt, e))) return rc;
    if (!rt && (rc = ds_json_get_str(rp, rw, "type", false, &rt, e))) return rc;
    if ((rc = ds_json_get_num(rp, rw, "rope_theta", false, 1.0, 1e12, theta, e))) return rc;
    double prf = -1;
    if ((rc = ds_json_get_num(rp, rw, "partial_rotary_factor", false, 0.0, 1.0, &prf, e))) return rc;
    if (prf >= 0 && (int64_t)(c->head_dim * prf) != c->qk_rope_head_dim)
        return ds_err_set(e, DS_EINVAL, "%s: partial_rotary_factor %g gives %lld roped dims; the config says %lld", rw,
                          prf, (long long)(c->head_dim * prf), (long long)c->qk_rope_head_dim);
    if (!rt || !strcmp(rt, "default")) return DS_OK;
    if (strcmp(rt, "yarn") != 0 || !compress)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: rope type '%s' is not supported (%s)", rw, rt,
                          compress ? "default or yarn" : "default");
    c->yarn = true;
    c->rope_factor = 1.0; c->rope_orig_max_pos = (double)c->max_position_embeddings; c->beta_fast = 32; c->beta_slow = 1;
    c->mscale = 1.0; c->mscale_all_dim = 0.0;
    double af = 1.0;
    if ((rc = ds_json_get_num(rp, rw, "factor", true, 1.0, 1e6, &c->rope_factor, e))) return rc;
    if ((rc = ds_json_get_num(rp, rw, "original_max_position_embeddings", false, 1, 1e12, &c->rope_orig_max_pos, e))) return rc;
    if ((rc = ds_json_get_num(rp, rw, "beta_fast", false, 0, 1e6, &c->beta_fast, e))) return rc;
    if ((rc = ds_json_get_num(rp, rw, "beta_slow", false, 0, 1e6, &c->beta_slow, e))) return rc;
    if ((rc = ds_json_get_num(rp, rw, "attention_factor", false, 0, 1e3, &af, e))) return rc;
    if (af != 1.0)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: attention_factor %g (V4 scales neither cos nor sin: 1.0)", rw, af);
    bool trunc = true;
    if ((rc = ds_json_get_bool(rp, rw, "truncate", false, &trunc, e))) return rc;
    if (!trunc) return ds_err_set(e, DS_EUNSUPPORTED, "%s: truncate = false is not supported", rw);
    return DS_OK;
}

int ds_config_parse_v4(ds_config *c, json_t *j, const char *w, ds_err *e) {
    int rc;
    if ((rc = check_keys(j, w, e))) return rc;
    c->arch = DS_ARCH_V4;
    snprintf(c->model_type, sizeof c->model_type, "deepseek_v4");
#define GI(key, req, lo, hi, dst) do { if ((rc = ds_json_get_int(j, w, key, req, lo, hi, dst, e))) return rc; } while (0)
#define GN(key, req, lo, hi, dst) do { if ((rc = ds_json_get_num(j, w, key, req, lo, hi, dst, e))) return rc; } while (0)
#define GB(key, dst) do { if ((rc = ds_json_get_bool(j, w, key, false, dst, e))) return rc; } while (0)
    /* transformers' DeepseekV4Config defaults (V4-Flash) where a key is absent */
    c->vocab_size = 129280, c->hidden_size = 4096, c->moe_intermediate_size = 2048, c->n_layer = 43;
    c->n_head = 64, c->head_dim = 512, c->q_lora_rank = 1024, c->num_experts_per_tok = 6, c->n_routed_experts = 256;
    c->routed_scaling_factor = 1.5, c->max_position_embeddings = 1048576, c->rope_theta = 10000.0;
    c->compress_rope_theta = 160000.0, c->n_streams = 4, c->hc_sinkhorn_iters = 20, c->hc_eps = 1e-6;
    c->swiglu_limit = 10.0, c->sliding_window = 128, c->o_groups = 8, c->o_lora_rank = 1024;
    c->index_n_heads = 64, c->index_head_dim = 128, c->index_topk = 512, c->rms_norm_eps = 1e-6;
    c->bos_token_id = 0, c->eos_token_id = 1;
    c->compress_rate_csa = 4, c->compress_rate_hca = 128, c->moe_layer_freq = 1;
    GI("vocab_size", false, 1, 1 << 24, &c->vocab_size);
    GI("hidden_size", false, 1, 1 << 17, &c->hidden_size);
    GI("moe_intermediate_size", false, 1, 1 << 20, &c->moe_intermediate_size);
    c->intermediate_size = c->moe_intermediate_size;   /* transformers: intermediate_size -> moe_intermediate_size */
    GI("num_hidden_layers", false, 1, 1024, &c->n_layer);
    GI("num_attention_heads", false, 1, 4096, &c->n_head);
    int64_t kvh = 1;
    GI("num_key_value_heads", false, 1, 4096, &kvh);
    if (kvh != 1)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: num_key_value_heads = %lld; DeepSeek-V4 has one shared K=V head", w,
                          (long long)kvh);
    GI("head_dim", false, 2, 1 << 14, &c->head_dim);
    GI("q_lora_rank", false, 1, 1 << 16, &c->q_lora_rank);
    c->qk_rope_head_dim = c->head_dim * 64 / 512;
    double prf = -1;
    GN("partial_rotary_factor", false, 0.0, 1.0, &prf);
    if (prf >= 0) c->qk_rope_head_dim = (int64_t)(c->head_dim * prf);
    int64_t dr = -1;
    GI("qk_rope_head_dim", false, 2, 1 << 14, &dr);
    if (dr >= 0 && prf < 0) c->qk_rope_head_dim = dr;
    if (dr >= 0 && dr != c->qk_rope_head_dim)
        return ds_err_set(e, DS_EINVAL, "%s: qk_rope_head_dim = %lld disagrees with partial_rotary_factor (%lld dims)", w,
                          (long long)dr, (long long)c->qk_rope_head_dim);
    c->qk_nope_head_dim = c->head_dim - c->qk_rope_head_dim;
    c->v_head_dim = c->head_dim;
    GI("num_experts_per_tok", false, 1, 1 << 16, &c->num_experts_per_tok);
    GI("n_routed_experts", false, 1, 1 << 16, &c->n_routed_experts);
    c->n_shared_experts = 1;
    GI("n_shared_experts", false, 0, 1024, &c->n_shared_experts);
    if (c->n_shared_experts != 1)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: n_shared_experts = %lld; DeepSeek-V4 (transformers) always has one "
                          "shared expert of width moe_intermediate_size", w, (long long)c->n_shared_experts);
    c->n_group = c->topk_group = 1;
    GI("n_group", false, 1, 1, &c->n_group);
    GI("topk_group", false, 1, 1, &c->topk_group);
    c->topk_method = DS_TOPK_NOAUX_TC;
    const char *s = NULL;
    if ((rc = ds_json_get_str(j, w, "topk_method", false, &s, e))) return rc;
    if (s && strcmp(s, "noaux_tc") != 0)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: topk_method '%s': DeepSeek-V4 routes noaux_tc (bias for selection only)", w, s);
    s = "sqrtsoftplus";
    if ((rc = ds_json_get_str(j, w, "scoring_func", false, &s, e))) return rc;
    if (!strcmp(s, "sqrtsoftplus")) c->scoring_func = DS_SCORE_SQRTSOFTPLUS;
    else if (!strcmp(s, "sigmoid")) c->scoring_func = DS_SCORE_SIGMOID;
    else if (!strcmp(s, "softmax")) c->scoring_func = DS_SCORE_SOFTMAX;
    else return ds_err_set(e, DS_EUNSUPPORTED, "%s: scoring_func '%s' is not sqrtsoftplus, sigmoid or softmax", w, s);
    c->norm_topk_prob = true;
    GB("norm_topk_prob", &c->norm_topk_prob);
    if (!c->norm_topk_prob)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: norm_topk_prob = false: DeepSeek-V4's router always renormalises "
                          "the chosen weights", w);
    GN("routed_scaling_factor", false, 0.0, 1e6, &c->routed_scaling_factor);
    GI("max_position_embeddings", false, 1, 1ll << 32, &c->max_position_embeddings);
    GN("rope_theta", false, 1.0, 1e12, &c->rope_theta);
    GN("compress_rope_theta", false, 1.0, 1e12, &c->compress_rope_theta);
    GI("hc_mult", false, 1, 64, &c->n_streams);
    GI("hc_sinkhorn_iters", false, 1, 1000, &c->hc_sinkhorn_iters);
    GN("hc_eps", false, 0.0, 1.0, &c->hc_eps);
    GN("swiglu_limit", false, 0.0, 1e9, &c->swiglu_limit);
    GI("sliding_window", false, 1, 1ll << 32, &c->sliding_window);
    GI("o_groups", false, 1, 4096, &c->o_groups);
    GI("o_lora_rank", false, 1, 1 << 16, &c->o_lora_rank);
    GI("index_n_heads", false, 1, 4096, &c->index_n_heads);
    GI("index_head_dim", false, 2, 1 << 14, &c->index_head_dim);
    GI("index_topk", false, 1, 1ll << 32, &c->index_topk);
    c->n_mtp = 0;   /* the MTP layers (release: mtp.N.*; transformers builds none) come after the L main ones */
    GI("num_nextn_predict_layers", false, 0, 8, &c->n_mtp);
    GN("rms_norm_eps", false, 0.0, 1.0, &c->rms_norm_eps);
    GI("bos_token_id", false, 0, 1 << 24, &c->bos_token_id);
    if (json_is_array(json_object_get(j, "eos_token_id"))) {
        json_t *eos = json_object_get(j, "eos_token_id");
        json_t *x0 = json_array_get(eos, 0);
        if (!json_is_integer(x0) || json_integer_value(x0) < 0 || json_integer_value(x0) > (1 << 24))
            return ds_err_set(e, DS_EFORMAT, "%s: field 'eos_token_id'[0] must be a token id", w);
        c->eos_token_id = json_integer_value(x0);
    } else {
        GI("eos_token_id", false, 0, 1 << 24, &c->eos_token_id);
    }
    GB("tie_word_embeddings", &c->tie_word_embeddings);
    bool ab = false, mb = false;
    GB("attention_bias", &ab);
    GB("mlp_bias", &mb);
    if (ab || mb) return ds_err_set(e, DS_EUNSUPPORTED, "%s: attention_bias / mlp_bias = true is not supported", w);
    s = NULL;
    if ((rc = ds_json_get_str(j, w, "hidden_act", false, &s, e))) return rc;
    if (s && strcmp(s, "silu") != 0) return ds_err_set(e, DS_EUNSUPPORTED, "%s: hidden_act '%s' is not supported (silu)", w, s);
    /* FP8 e4m3 with 128x128 ue8m0 block scales (the release); its routed
     * experts are FP4 e2m1 whatever the config says: model.c tells by dtype */
    if ((rc = ds_config_parse_fp8(c, json_object_get(j, "quantization_config"), w, e))) return rc;

    /* compression rates: the dict, then the legacy scalars override */
    json_t *cr = json_object_get(j, "compress_rates");
    if (cr && !json_is_null(cr)) {
        if (!json_is_object(cr)) return ds_err_set(e, DS_EFORMAT, "%s: 'compress_rates' must be an object", w);
        char cw[600];
        snprintf(cw, sizeof cw, "%s: compress_rates", w);
        const char *key;
        json_t *v;
        json_object_foreach(cr, key, v) {
            if (strcmp(key, "compressed_sparse_attention") && strcmp(key, "heavily_compressed_attention"))
                return ds_err_set(e, DS_EUNSUPPORTED, "%s: unknown layer type '%s'", cw, key);
        }
        if ((rc = ds_json_get_int(cr, cw, "compressed_sparse_attention", false, 1, 1 << 20, &c->compress_rate_csa, e))) return rc;
        if ((rc = ds_json_get_int(cr, cw, "heavily_compressed_attention", false, 1, 1 << 20, &c->compress_rate_hca, e))) return rc;
    }
    GI("compress_rate_csa", false, 1, 1 << 20, &c->compress_rate_csa);
    GI("compress_rate_hca", false, 1, 1 << 20, &c->compress_rate_hca);

    /* layer kinds */
    int64_t L = c->n_layer;
    memset(c->attn_kind, DS_ATTN_UNSET, sizeof c->attn_kind);
    memset(c->ffn_kind, DS_FFN_UNSET, sizeof c->ffn_kind);
    json_t *lt = json_object_get(j, "layer_types"), *lr = json_object_get(j, "compress_ratios");
    if (lr && !json_is_null(lr) && !json_is_array(lr))
        return ds_err_set(e, DS_EFORMAT, "%s: 'compress_ratios' must be an array", w);
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt) || (int64_t)json_array_size(lt) < L)
            return ds_err_set(e, DS_EFORMAT, "%s: 'layer_types' must list num_hidden_layers = %lld layer types", w, (long long)L);
        for (int64_t l = 0; l < L; l++) {
            const char *v = json_string_value(json_array_get(lt, (size_t)l));
            if (!(c->attn_kind[l] = (uint8_t)layer_kind_of(v, c->compress_rate_csa, c->compress_rate_hca)))
                return ds_err_set(e, DS_EUNSUPPORTED, "%s: layer_types[%lld] = '%s' is not sliding_attention, "
                                  "compressed_sparse_attention or heavily_compressed_attention", w, (long long)l,
                                  v ? v : "(not a string)");
        }
    } else if (lr && !json_is_null(lr)) {
        if (!json_is_array(lr) || (int64_t)json_array_size(lr) < L)
            return ds_err_set(e, DS_EFORMAT, "%s: 'compress_ratios' must list num_hidden_layers = %lld ratios", w, (long long)L);
        for (int64_t l = 0; l < L; l++) {
            json_t *v = json_array_get(lr, (size_t)l);
            if ((rc = ratio_kind(c, v, w, l, &c->attn_kind[l], e))) return rc;
        }
    } else {   /* transformers' default: 2 HCA, then HCA / CSA alternating */
        for (int64_t l = 0; l < L; l++)
            c->attn_kind[l] = l < 2 ? DS_ATTN_HCA : ((l - 2) % 2 ? DS_ATTN_CSA : DS_ATTN_HCA);
    }
    /* The MTP layers (the release's MTPBlock(layer_id = L + i)): the attention
     * its code builds is compress_ratios[L + i] (V4-Flash / -Pro list L + 1
     * ratios, the last 0: sliding); a layer_types list longer than L may name
     * it too (our extension); with neither, sliding. Score-routed MoE always
     * (the release hashes only layer_id < num_hash_layers). */
    for (int64_t l = L; l < L + c->n_mtp; l++) {
        const char *v = lt && json_is_array(lt) ? json_string_value(json_array_get(lt, (size_t)l)) : NULL;
        json_t *r = lr && json_is_array(lr) ? json_array_get(lr, (size_t)l) : NULL;
        c->attn_kind[l] = DS_ATTN_SWA;
        if (v && !(c->attn_kind[l] = (uint8_t)layer_kind_of(v, c->compress_rate_csa, c->compress_rate_hca)))
            return ds_err_set(e, DS_EUNSUPPORTED, "%s: layer_types[%lld] (MTP layer %lld) = '%s' is not sliding_attention, "
                              "compressed_sparse_attention or heavily_compressed_attention", w, (long long)l,
                              (long long)(l - L), v);
        if (!v && r && (rc = ratio_kind(c, r, w, l, &c->attn_kind[l], e))) return rc;
        c->ffn_kind[l] = DS_FFN_MOE;
    }
    json_t *mt = json_object_get(j, "mlp_layer_types");
    if (mt && !json_is_null(mt)) {
        if (!json_is_array(mt) || (int64_t)json_array_size(mt) < L)
            return ds_err_set(e, DS_EFORMAT, "%s: 'mlp_layer_types' must list num_hidden_layers = %lld types", w, (long long)L);
        for (int64_t l = 0; l < L; l++) {
            const char *v = json_string_value(json_array_get(mt, (size_t)l));
            c->ffn_kind[l] = v && !strcmp(v, "moe") ? DS_FFN_MOE : v && !strcmp(v, "hash_moe") ? DS_FFN_HASH_MOE : 0;
            if (!c->ffn_kind[l])
                return ds_err_set(e, DS_EUNSUPPORTED, "%s: mlp_layer_types[%lld] = '%s' is not moe or hash_moe", w,
                                  (long long)l, v ? v : "(not a string)");
        }
    } else {
        int64_t nh = 3;
        GI("num_hash_layers", false, 0, 1024, &nh);
        for (int64_t l = 0; l < L; l++) c->ffn_kind[l] = l < nh ? DS_FFN_HASH_MOE : DS_FFN_MOE;
    }

    /* RoPE: nested {main, compress} (what transformers writes), or flat YaRN keys for the compressed layers */
    json_t *rp = json_object_get(j, "rope_parameters");
    if (!json_is_object(rp)) rp = json_object_get(j, "rope_scaling");
    if (json_is_object(rp)) {
        json_t *mn = json_object_get(rp, "main"), *cp = json_object_get(rp, "compress");
        if (json_is_object(mn) || json_is_object(cp)) {
            if (!json_is_object(mn) || !json_is_object(cp))
                return ds_err_set(e, DS_EFORMAT, "%s: rope_parameters needs both 'main' and 'compress'", w);
            if ((rc = rope_sub(c, mn, w, "main", &c->rope_theta, false, e))) return rc;
            if ((rc = rope_sub(c, cp, w, "compress", &c->compress_rope_theta, true, e))) return rc;
        } else {
            double th = c->compress_rope_theta;
            if ((rc = rope_sub(c, rp, w, "(flat)", &th, true, e))) return rc;
        }
    }
#undef GI
#undef GN
#undef GB

    /* cross-field checks */
    int64_t H = c->n_head, Dh = c->head_dim, Dr = c->qk_rope_head_dim;
    if (Dr < 2 || Dr % 2 || Dr > Dh)
        return ds_err_set(e, DS_EINVAL, "%s: %lld roped dims must be even and within head_dim = %lld", w, (long long)Dr,
                          (long long)Dh);
    if (Dr > c->index_head_dim)
        return ds_err_set(e, DS_EINVAL, "%s: index_head_dim = %lld is smaller than the %lld roped dims", w,
                          (long long)c->index_head_dim, (long long)Dr);
    if ((H * Dh) % c->o_groups)
        return ds_err_set(e, DS_EINVAL, "%s: o_groups = %lld does not divide num_attention_heads x head_dim = %lld", w,
                          (long long)c->o_groups, (long long)(H * Dh));
    if (c->num_experts_per_tok > c->n_routed_experts)
        return ds_err_set(e, DS_ERANGE, "%s: num_experts_per_tok = %lld exceeds n_routed_experts = %lld", w,
                          (long long)c->num_experts_per_tok, (long long)c->n_routed_experts);
    if (c->bos_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size)
        return ds_err_set(e, DS_ERANGE, "%s: bos/eos token ids must be < vocab_size = %lld", w, (long long)c->vocab_size);
    if (c->yarn && !(c->beta_fast > 0.0 && c->beta_slow > 0.0))
        return ds_err_set(e, DS_ERANGE, "%s: yarn beta_fast / beta_slow must be > 0", w);
    return ds_config_validate(c, w, e);
}
