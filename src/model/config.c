/*
 * config.c - config.json -> ds_config, with every field range-checked and
 * errors naming the field.
 */
#include "config.h"
#include "../io/json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define BIG (1ll << 40)

double ds_config_softmax_scale(const ds_config *c) {
    double s = 1.0 / sqrt((double)(c->qk_nope_head_dim + c->qk_rope_head_dim));
    if (c->yarn && c->mscale_all_dim != 0.0 && c->rope_factor > 1.0) {
        double m = 0.1 * c->mscale_all_dim * log(c->rope_factor) + 1.0;
        s *= m * m;
    }
    return s;
}

const char *ds_config_arch_name(const ds_config *c) {
    if (c->arch == DS_ARCH_V4) return "DeepseekV4ForCausalLM";
    if (c->index_topk > 0) return "DeepseekV32ForCausalLM";
    return c->arch == DS_ARCH_V3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM";
}

void ds_config_derive_layers(ds_config *c) {
    int64_t n = DS_MIN(c->n_layer + c->n_mtp, DS_MAX_LAYERS);
    memset(c->attn_kind, DS_ATTN_UNSET, sizeof c->attn_kind);
    memset(c->ffn_kind, DS_FFN_UNSET, sizeof c->ffn_kind);
    for (int64_t l = 0; l < n; l++) {
        bool moe = c->n_routed_experts > 0 && l >= c->first_k_dense_replace && c->moe_layer_freq > 0 &&
                   l % c->moe_layer_freq == 0;
        c->attn_kind[l] = c->index_topk > 0 ? DS_ATTN_DSA : DS_ATTN_MLA;
        c->ffn_kind[l] = moe ? DS_FFN_MOE : DS_FFN_DENSE;
    }
    c->n_streams = 1;
}

/* The per-layer description: every layer has a kind this code implements. */
static int validate_layers(const ds_config *c, const char *w, ds_err *e) {
    if (c->n_layer + c->n_mtp > DS_MAX_LAYERS)
        return ds_err_set(e, DS_ERANGE, "%s: %lld layers (incl. MTP) exceed the limit of %d", w,
                          (long long)(c->n_layer + c->n_mtp), DS_MAX_LAYERS);
    bool v4 = c->arch == DS_ARCH_V4;
    if (c->n_streams != 1 && !v4)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: %lld residual streams (hyper-connections, hc_mult) are not "
                          "implemented; only 1", w, (long long)c->n_streams);
    if (v4 && c->n_streams < 1)
        return ds_err_set(e, DS_ERANGE, "%s: hc_mult must be >= 1", w);
    for (int64_t l = 0; v4 && l < c->n_layer + c->n_mtp; l++) {   /* DeepSeek-V4 (config_v4.c) */
        int k = c->attn_kind[l];
        if (k != DS_ATTN_SWA && k != DS_ATTN_CSA && k != DS_ATTN_HCA)
            return ds_err_set(e, DS_EINVAL, "%s: layer %lld: attention kind %d is not a DeepSeek-V4 kind", w, (long long)l, k);
        if (c->ffn_kind[l] != DS_FFN_MOE && c->ffn_kind[l] != DS_FFN_HASH_MOE)
            return ds_err_set(e, DS_EINVAL, "%s: layer %lld: DeepSeek-V4 layers are MoE or hash-routed MoE", w, (long long)l);
    }
    if (v4) return DS_OK;
    for (int64_t l = 0; l < c->n_layer + c->n_mtp; l++) {
        if (c->attn_kind[l] == DS_ATTN_DSA && !(c->index_topk > 0 && c->index_n_heads > 0 &&
                                                 c->index_head_dim >= c->qk_rope_head_dim && c->q_lora_rank > 0))
            return ds_err_set(e, DS_EINVAL, "%s: layer %lld: sparse attention needs index_topk >= 1, index_n_heads >= 1, "
                              "index_head_dim >= qk_rope_head_dim and q_lora_rank > 0 (the indexer reads the q LoRA "
                              "latent)", w, (long long)l);
        if (c->attn_kind[l] != DS_ATTN_MLA && c->attn_kind[l] != DS_ATTN_DSA)
            return ds_err_set(e, c->attn_kind[l] == DS_ATTN_UNSET ? DS_EINVAL : DS_EUNSUPPORTED,
                              "%s: layer %lld: attention kind %d is %s", w, (long long)l, c->attn_kind[l],
                              c->attn_kind[l] == DS_ATTN_UNSET ? "not set (ds_config_derive_layers)" : "not implemented");
        switch (c->ffn_kind[l]) {
        case DS_FFN_DENSE: break;
        case DS_FFN_MOE:
            if (c->n_routed_experts < 1)
                return ds_err_set(e, DS_EINVAL, "%s: layer %lld is MoE but n_routed_experts = 0", w, (long long)l);
            break;
        case DS_FFN_HASH_MOE:
            return ds_err_set(e, DS_EUNSUPPORTED, "%s: layer %lld: hash-routed MoE is not implemented yet", w,
                              (long long)l);
        case DS_FFN_UNSET:
            return ds_err_set(e, DS_EINVAL, "%s: layer %lld: FFN kind not set (ds_config_derive_layers)", w,
                              (long long)l);
        default:
            return ds_err_set(e, DS_EINVAL, "%s: layer %lld: unknown FFN kind %d", w, (long long)l, c->ffn_kind[l]);
        }
    }
    return DS_OK;
}

int ds_config_validate(const ds_config *c, const char *w, ds_err *e) {
    if (c->n_head * (c->qk_nope_head_dim + c->qk_rope_head_dim) > BIG)
        return ds_err_set(e, DS_ERANGE, "%s: heads × head dim too large", w);
    if (c->qk_rope_head_dim % 2)
        return ds_err_set(e, DS_EINVAL, "%s: qk_rope_head_dim = %lld must be even", w, (long long)c->qk_rope_head_dim);
    if (c->n_routed_experts > 0) {
        if (c->num_experts_per_tok < 1 || c->num_experts_per_tok > c->n_routed_experts)
            return ds_err_set(e, DS_ERANGE, "%s: num_experts_per_tok = %lld must be in [1, n_routed_experts = %lld]", w,
                              (long long)c->num_experts_per_tok, (long long)c->n_routed_experts);
        if (c->n_group < 1 || c->n_routed_experts % c->n_group)
            return ds_err_set(e, DS_EINVAL, "%s: n_group = %lld must divide n_routed_experts = %lld", w,
                              (long long)c->n_group, (long long)c->n_routed_experts);
        if (c->topk_group < 1 || c->topk_group > c->n_group)
            return ds_err_set(e, DS_ERANGE, "%s: topk_group = %lld must be in [1, n_group = %lld]", w,
                              (long long)c->topk_group, (long long)c->n_group);
        if (c->topk_method != DS_TOPK_GREEDY &&
            c->num_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
            return ds_err_set(e, DS_EINVAL, "%s: num_experts_per_tok = %lld exceeds the experts in topk_group groups", w,
                              (long long)c->num_experts_per_tok);
        if (c->topk_method == DS_TOPK_NOAUX_TC && c->n_routed_experts / c->n_group < 2)
            return ds_err_set(e, DS_EINVAL, "%s: noaux_tc needs at least 2 experts per group", w);
        if (c->moe_layer_freq < 1) return ds_err_set(e, DS_ERANGE, "%s: moe_layer_freq must be >= 1", w);
    }
    if (c->first_k_dense_replace > c->n_layer)
        return ds_err_set(e, DS_ERANGE, "%s: first_k_dense_replace = %lld exceeds num_hidden_layers = %lld", w,
                          (long long)c->first_k_dense_replace, (long long)c->n_layer);
    int rc = validate_layers(c, w, e);
    if (rc) return rc;
    if (c->yarn && !(c->rope_factor >= 1.0))
        return ds_err_set(e, DS_ERANGE, "%s: rope_scaling.factor must be >= 1", w);
    /* YaRN divides by ln(rope_theta) and takes ln(L0 / (2π beta)) */
    if (!(c->rope_theta > 1.0))
        return ds_err_set(e, DS_ERANGE, "%s: rope_theta = %g must be > 1", w, c->rope_theta);
    if (c->yarn && !(c->beta_fast > 0.0 && c->beta_slow > 0.0 && c->rope_orig_max_pos >= 1.0))
        return ds_err_set(e, DS_ERANGE, "%s: rope_scaling beta_fast = %g, beta_slow = %g must be > 0 and "
                          "original_max_position_embeddings = %g >= 1", w, c->beta_fast, c->beta_slow, c->rope_orig_max_pos);
    if (c->bos_token_id >= c->vocab_size)
        return ds_err_set(e, DS_ERANGE, "%s: bos_token_id = %lld is >= vocab_size = %lld", w,
                          (long long)c->bos_token_id, (long long)c->vocab_size);
    if (c->eos_token_id >= c->vocab_size)
        return ds_err_set(e, DS_ERANGE, "%s: eos_token_id = %lld is >= vocab_size = %lld", w,
                          (long long)c->eos_token_id, (long long)c->vocab_size);
    return DS_OK;
}

static int parse_root(ds_config *c, json_t *j, const char *w, ds_err *e);

/* transformers 5 writes the per-layer kinds it derived (mlp_layer_types
 * "dense"/"sparse", layer_types "indexed_attention"...): they must agree
 * with ours, else the file describes a layout this code does not run. */
static int check_layer_types(const ds_config *c, json_t *j, const char *w, ds_err *e) {
    static const char *keys[2] = { "mlp_layer_types", "layer_types" };
    for (int k = 0; k < 2; k++) {
        json_t *a = json_object_get(j, keys[k]);
        if (!a || json_is_null(a)) continue;
        if (!json_is_array(a) || (int64_t)json_array_size(a) != c->n_layer)
            return ds_err_set(e, DS_EFORMAT, "%s: field '%s' must be a list of num_hidden_layers = %lld strings", w,
                              keys[k], (long long)c->n_layer);
        for (int64_t l = 0; l < c->n_layer; l++) {
            const char *v = json_string_value(json_array_get(a, (size_t)l));
            const char *want = k == 0 ? (c->ffn_kind[l] == DS_FFN_MOE ? "sparse" : "dense")
                                      : (c->attn_kind[l] == DS_ATTN_DSA ? "indexed_attention" : "full_attention");
            if (!v || strcmp(v, want) != 0)
                return ds_err_set(e, DS_EUNSUPPORTED, "%s: field '%s'[%lld] is '%s'; this config's layer %lld is '%s' "
                                  "(other layouts are not supported)", w, keys[k], (long long)l, v ? v : "(not a string)",
                                  (long long)l, want);
        }
    }
    return DS_OK;
}

/* quantization_config (absent: nothing): block FP8 e4m3, scales fp32 or
 * ue8m0 (powers of two; V3.1 / V3.2 store them as fp32 scale_inv tensors,
 * V4's release as float8_e8m0fnu `.scale` tensors). */
int ds_config_parse_fp8(ds_config *c, json_t *qc, const char *w, ds_err *e) {
    if (!qc || json_is_null(qc)) return DS_OK;
    char qw[600];
    snprintf(qw, sizeof qw, "%s: quantization_config", w);
    if (!json_is_object(qc)) return ds_err_set(e, DS_EFORMAT, "%s must be an object", qw);
    const char *qm = NULL, *fmt = NULL, *sfmt = NULL, *act = NULL;
    int rc;
    if ((rc = ds_json_get_str(qc, qw, "quant_method", true, &qm, e))) return rc;
    if (strcmp(qm, "fp8") != 0) return ds_err_set(e, DS_EUNSUPPORTED, "%s: quant_method '%s' is not supported (fp8)", qw, qm);
    if ((rc = ds_json_get_str(qc, qw, "fmt", false, &fmt, e))) return rc;
    if (fmt && strcmp(fmt, "e4m3") != 0) return ds_err_set(e, DS_EUNSUPPORTED, "%s: fmt '%s' is not supported (e4m3)", qw, fmt);
    if ((rc = ds_json_get_str(qc, qw, "scale_fmt", false, &sfmt, e))) return rc;
    if (sfmt && strcmp(sfmt, "ue8m0") != 0)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: scale_fmt '%s' is not supported (ue8m0 or none)", qw, sfmt);
    if ((rc = ds_json_get_str(qc, qw, "activation_scheme", false, &act, e))) return rc;
    if (act && strcmp(act, "dynamic") != 0)
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: activation_scheme '%s' is not supported (dynamic)", qw, act);
    c->fp8 = true;
    c->fp8_block_r = c->fp8_block_c = 128;
    json_t *bs = json_object_get(qc, "weight_block_size");
    if (bs) {
        if (!json_is_array(bs) || json_array_size(bs) != 2 || !json_is_integer(json_array_get(bs, 0)) ||
            !json_is_integer(json_array_get(bs, 1)) || json_integer_value(json_array_get(bs, 0)) < 1 ||
            json_integer_value(json_array_get(bs, 1)) < 1 || json_integer_value(json_array_get(bs, 0)) > 65536 ||
            json_integer_value(json_array_get(bs, 1)) > 65536)
            return ds_err_set(e, DS_EFORMAT, "%s: weight_block_size must be [rows, cols] of positive integers", qw);
        c->fp8_block_r = json_integer_value(json_array_get(bs, 0));
        c->fp8_block_c = json_integer_value(json_array_get(bs, 1));
    }
    return DS_OK;
}

int ds_config_load(ds_config *c, const char *path_in, ds_err *e) {
    memset(c, 0, sizeof *c);
    char path[4096];
    struct stat sb;
    if (stat(path_in, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(path, sizeof path, "%s/config.json", path_in);
    else snprintf(path, sizeof path, "%s", path_in);
    json_t *j;
    int rc = ds_json_load_file(path, 16u << 20, &j, e);
    if (rc) return rc;
    return parse_root(c, j, path, e);
}

int ds_config_parse(ds_config *c, const char *json, size_t len, const char *what, ds_err *e) {
    memset(c, 0, sizeof *c);
    json_t *j;
    int rc = ds_json_load_buf(what, json, len, &j, e);
    if (rc) return rc;
    return parse_root(c, j, what, e);
}

/* Takes ownership of j. */
static int parse_root(ds_config *c, json_t *j, const char *w, ds_err *e) {
    int rc;
    if (!json_is_object(j)) { json_decref(j); return ds_err_set(e, DS_EFORMAT, "%s: not a JSON object", w); }

    const char *mt = NULL;
    rc = ds_json_get_str(j, w, "model_type", false, &mt, e);
    if (rc) goto done;
    const char *arch_name = NULL;
    json_t *archs = json_object_get(j, "architectures");
    if (json_is_array(archs) && json_array_size(archs) > 0 && json_is_string(json_array_get(archs, 0)))
        arch_name = json_string_value(json_array_get(archs, 0));
    bool v32 = (mt && strcmp(mt, "deepseek_v32") == 0) || (arch_name && strcmp(arch_name, "DeepseekV32ForCausalLM") == 0);
    if (v32 || (mt && strcmp(mt, "deepseek_v3") == 0) || (arch_name && strcmp(arch_name, "DeepseekV3ForCausalLM") == 0))
        c->arch = DS_ARCH_V3;
    else if ((mt && strcmp(mt, "deepseek_v2") == 0) || (arch_name && strcmp(arch_name, "DeepseekV2ForCausalLM") == 0))
        c->arch = DS_ARCH_V2;
    else if ((mt && strcmp(mt, "deepseek_v4") == 0) || (arch_name && strcmp(arch_name, "DeepseekV4ForCausalLM") == 0)) {
        rc = ds_config_parse_v4(c, j, w, e);   /* config_v4.c */
        goto done;
    } else {
        rc = ds_err_set(e, DS_EUNSUPPORTED, "%s: model_type '%s' / architectures '%s' is not DeepSeek-V2, V3 or V3.2", w,
                        mt ? mt : "(none)", arch_name ? arch_name : "(none)");
        goto done;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s",
             v32 ? "deepseek_v32" : c->arch == DS_ARCH_V3 ? "deepseek_v3" : "deepseek_v2");

#define GI(key, req, lo, hi, dst) do { if ((rc = ds_json_get_int(j, w, key, req, lo, hi, dst, e))) goto done; } while (0)
#define GN(key, req, lo, hi, dst) do { if ((rc = ds_json_get_num(j, w, key, req, lo, hi, dst, e))) goto done; } while (0)
    GI("vocab_size", true, 1, 1 << 24, &c->vocab_size);
    GI("hidden_size", true, 1, 1 << 17, &c->hidden_size);
    GI("intermediate_size", true, 1, 1 << 20, &c->intermediate_size);
    c->moe_intermediate_size = 0;
    GI("num_hidden_layers", true, 1, 1024, &c->n_layer);
    GI("num_attention_heads", true, 1, 4096, &c->n_head);
    c->q_lora_rank = 0;
    GI("q_lora_rank", false, 1, 1 << 16, &c->q_lora_rank);
    GI("kv_lora_rank", true, 1, 1 << 16, &c->kv_lora_rank);
    GI("qk_nope_head_dim", true, 0, 4096, &c->qk_nope_head_dim);
    GI("qk_rope_head_dim", true, 2, 4096, &c->qk_rope_head_dim);
    GI("v_head_dim", true, 1, 4096, &c->v_head_dim);
    c->first_k_dense_replace = 0;
    GI("first_k_dense_replace", false, 0, 1024, &c->first_k_dense_replace);
    c->moe_layer_freq = 1;
    GI("moe_layer_freq", false, 1, 1024, &c->moe_layer_freq);
    c->n_routed_experts = 0;
    GI("n_routed_experts", false, 0, 1 << 16, &c->n_routed_experts);
    c->n_shared_experts = 0;
    GI("n_shared_experts", false, 0, 1024, &c->n_shared_experts);
    if (c->n_routed_experts > 0 || c->n_shared_experts > 0) GI("moe_intermediate_size", true, 1, 1 << 20, &c->moe_intermediate_size);
    c->num_experts_per_tok = 0;
    GI("num_experts_per_tok", c->n_routed_experts > 0, 1, 1 << 16, &c->num_experts_per_tok);
    c->n_group = 1;
    GI("n_group", false, 1, 1 << 16, &c->n_group);
    c->topk_group = 1;
    GI("topk_group", false, 1, 1 << 16, &c->topk_group);
    c->n_mtp = 0;
    GI("num_nextn_predict_layers", false, 0, 8, &c->n_mtp);
    if (v32) {  /* the lightning indexer (transformers' defaults are DeepSeek-V3.2-Exp's) */
        c->index_n_heads = 64, c->index_head_dim = 128, c->index_topk = 2048;
        GI("index_n_heads", false, 1, 4096, &c->index_n_heads);
        GI("index_head_dim", false, 2, 4096, &c->index_head_dim);
        GI("index_topk", false, 1, 1ll << 32, &c->index_topk);
    }
    c->rms_norm_eps = 1e-6;
    GN("rms_norm_eps", false, 0.0, 1.0, &c->rms_norm_eps);
    c->rope_theta = 10000.0;
    GN("rope_theta", false, 1.0, 1e12, &c->rope_theta);
    c->max_position_embeddings = 4096;
    GI("max_position_embeddings", false, 1, 1ll << 32, &c->max_position_embeddings);
    c->routed_scaling_factor = 1.0;
    GN("routed_scaling_factor", false, 0.0, 1e6, &c->routed_scaling_factor);
    c->bos_token_id = -1;
    c->eos_token_id = -1;
    GI("bos_token_id", false, 0, 1 << 24, &c->bos_token_id);
    if (json_is_array(json_object_get(j, "eos_token_id"))) {
        /* a list of stop ids: the first one is the end-of-sequence token */
        json_t *eos = json_object_get(j, "eos_token_id");
        for (size_t i = 0; i < json_array_size(eos); i++) {
            json_t *x = json_array_get(eos, i);
            if (!json_is_integer(x)) {
                rc = ds_err_set(e, DS_EFORMAT, "%s: field 'eos_token_id'[%zu] must be an integer", w, i);
                goto done;
            }
            if (json_integer_value(x) < 0 || json_integer_value(x) > (1 << 24)) {
                rc = ds_err_set(e, DS_ERANGE, "%s: field 'eos_token_id'[%zu] = %lld is out of range [0, %d]", w, i,
                                (long long)json_integer_value(x), 1 << 24);
                goto done;
            }
        }
        if (json_array_size(eos) > 0) c->eos_token_id = json_integer_value(json_array_get(eos, 0));
    } else {
        GI("eos_token_id", false, 0, 1 << 24, &c->eos_token_id);
    }
    c->tie_word_embeddings = false;
    if ((rc = ds_json_get_bool(j, w, "tie_word_embeddings", false, &c->tie_word_embeddings, e))) goto done;
    c->norm_topk_prob = false;
    if ((rc = ds_json_get_bool(j, w, "norm_topk_prob", false, &c->norm_topk_prob, e))) goto done;
    bool attention_bias = false;
    if ((rc = ds_json_get_bool(j, w, "attention_bias", false, &attention_bias, e))) goto done;
    if (attention_bias) { rc = ds_err_set(e, DS_EUNSUPPORTED, "%s: attention_bias = true is not supported", w); goto done; }
    const char *act = NULL;
    if ((rc = ds_json_get_str(j, w, "hidden_act", false, &act, e))) goto done;
    if (act && strcmp(act, "silu") != 0) {
        rc = ds_err_set(e, DS_EUNSUPPORTED, "%s: hidden_act '%s' is not supported (only silu)", w, act);
        goto done;
    }

    /* routing */
    const char *tm = NULL, *sf = NULL;
    if ((rc = ds_json_get_str(j, w, "topk_method", false, &tm, e))) goto done;
    if ((rc = ds_json_get_str(j, w, "scoring_func", false, &sf, e))) goto done;
    if (!tm) tm = c->arch == DS_ARCH_V3 ? "noaux_tc" : "greedy";
    if (!sf) sf = c->arch == DS_ARCH_V3 ? "sigmoid" : "softmax";
    if (strcmp(tm, "greedy") == 0) c->topk_method = DS_TOPK_GREEDY;
    else if (strcmp(tm, "group_limited_greedy") == 0) c->topk_method = DS_TOPK_GROUP_LIMITED;
    else if (strcmp(tm, "noaux_tc") == 0) c->topk_method = DS_TOPK_NOAUX_TC;
    else { rc = ds_err_set(e, DS_EUNSUPPORTED, "%s: topk_method '%s' is not one of greedy, group_limited_greedy, noaux_tc", w, tm); goto done; }
    if (strcmp(sf, "softmax") == 0) c->scoring_func = DS_SCORE_SOFTMAX;
    else if (strcmp(sf, "sigmoid") == 0) c->scoring_func = DS_SCORE_SIGMOID;
    else { rc = ds_err_set(e, DS_EUNSUPPORTED, "%s: scoring_func '%s' is not softmax or sigmoid", w, sf); goto done; }

    /* rope scaling (HF: rope_scaling; transformers v5 may write rope_parameters) */
    json_t *rs = json_object_get(j, "rope_scaling");
    if (!json_is_object(rs)) rs = json_object_get(j, "rope_parameters");
    if (json_is_object(rs)) {
        const char *rt = NULL;
        char rw[600];
        snprintf(rw, sizeof rw, "%s: %s", w, json_is_object(json_object_get(j, "rope_scaling")) ? "rope_scaling" : "rope_parameters");
        if ((rc = ds_json_get_str(rs, rw, "type", false, &rt, e))) goto done;
        if (!rt && (rc = ds_json_get_str(rs, rw, "rope_type", false, &rt, e))) goto done;
        double theta = c->rope_theta;
        if ((rc = ds_json_get_num(rs, rw, "rope_theta", false, 1.0, 1e12, &theta, e))) goto done;
        c->rope_theta = theta;
        if (rt && strcmp(rt, "yarn") == 0) {
            c->yarn = true;
            c->rope_factor = 1.0; c->rope_orig_max_pos = 4096; c->beta_fast = 32; c->beta_slow = 1;
            c->mscale = 1.0; c->mscale_all_dim = 0.0;
            if ((rc = ds_json_get_num(rs, rw, "factor", true, 1.0, 1e6, &c->rope_factor, e))) goto done;
            if ((rc = ds_json_get_num(rs, rw, "original_max_position_embeddings", false, 1, 1e12, &c->rope_orig_max_pos, e))) goto done;
            if ((rc = ds_json_get_num(rs, rw, "beta_fast", false, 0, 1e6, &c->beta_fast, e))) goto done;
            if ((rc = ds_json_get_num(rs, rw, "beta_slow", false, 0, 1e6, &c->beta_slow, e))) goto done;
            if ((rc = ds_json_get_num(rs, rw, "mscale", false, 0, 1e3, &c->mscale, e))) goto done;
            if ((rc = ds_json_get_num(rs, rw, "mscale_all_dim", false, 0, 1e3, &c->mscale_all_dim, e))) goto done;
        } else if (rt && strcmp(rt, "default") != 0) {
            rc = ds_err_set(e, DS_EUNSUPPORTED, "%s: rope_scaling type '%s' is not supported (yarn or none)", w, rt);
            goto done;
        }
    }

    /* FP8 */
    if ((rc = ds_config_parse_fp8(c, json_object_get(j, "quantization_config"), w, e))) goto done;
    ds_config_derive_layers(c);
    if ((rc = check_layer_types(c, j, w, e))) goto done;
    GI("hc_mult", false, 1, 1024, &c->n_streams);  /* hyper-connections: validate says they are not implemented */
#undef GI
#undef GN
    rc = ds_config_validate(c, w, e);
done:
    json_decref(j);
    return rc;
}
