/*
 * tensors.c - the tensor table (see tensors.h) and its rules: which
 * layers have a kind, its shape, its names, its field.
 */
#include "tensors.h"
#include "../train/tmodel.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define M(f) offsetof(ds_model, f), offsetof(ds_tweights, f)
#define LW(f, t) offsetof(ds_layer_w, f), offsetof(ds_tlayer, t)
#define LG(f) offsetof(ds_layer_w, f), DS_TK_NO_FIELD
#define XW(f) offsetof(ds_mlp_w, f), offsetof(ds_tmlp, f)
#define XG(f) offsetof(ds_mlp_w, f), DS_TK_NO_FIELD
#define LG_M(f) offsetof(ds_model, f), DS_TK_NO_FIELD
#define V1(a) 1, { DS_TD_##a }
#define S2(a, b) 2, { DS_TD_##a, DS_TD_##b }
#define S3(a, b, c) 3, { DS_TD_##a, DS_TD_##b, DS_TD_##c }
#define ALL DS_TW_ALWAYS
#define F32 DS_TC_F32
#define ATTN DS_TC_ATTN
#define FFN DS_TC_FFN

const ds_tkind ds_tkinds[DS_TK_COUNT] = {
    /* scope,        HF suffix, GGUF suffix, shape, when, type class, flags, fields */
    [DS_TK_EMBED] = { DS_TS_MODEL, "model.embed_tokens.weight", "token_embd.weight", S2(V, D), ALL, DS_TC_EMBED,
                      DS_TF_NO_REPACK, M(embed) },
    [DS_TK_FINAL_NORM] = { DS_TS_MODEL, "model.norm.weight", "output_norm.weight", V1(D), ALL, F32, 0, M(final_norm) },
    [DS_TK_LM_HEAD] = { DS_TS_MODEL, "lm_head.weight", "output.weight", S2(V, D), DS_TW_UNTIED, DS_TC_HEAD, 0, M(lm_head) },

    [DS_TK_ATTN_NORM] = { DS_TS_LAYER, "input_layernorm.weight", "attn_norm.weight", V1(D), ALL, F32, 0,
                          LW(attn_norm, attn_norm) },
    [DS_TK_Q_A] = { DS_TS_LAYER, "self_attn.q_a_proj.weight", "attn_q_a.weight", S2(RQ, D), DS_TW_Q_LORA, ATTN, 0,
                    LW(q_a_proj, q_a) },
    [DS_TK_Q_A_NORM] = { DS_TS_LAYER, "self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight", V1(RQ), DS_TW_Q_LORA,
                         F32, 0, LW(q_a_norm, q_a_norm) },
    [DS_TK_Q_B] = { DS_TS_LAYER, "self_attn.q_b_proj.weight", "attn_q_b.weight", S2(HDQ, RQ), DS_TW_Q_LORA, ATTN, 0,
                    LW(q_b_proj, q_b) },
    [DS_TK_Q] = { DS_TS_LAYER, "self_attn.q_proj.weight", "attn_q.weight", S2(HDQ, D), DS_TW_Q_PLAIN, ATTN, 0,
                  LW(q_proj, q_proj) },
    [DS_TK_KV_A] = { DS_TS_LAYER, "self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight", S2(KVA, D), ALL, ATTN,
                     0, LW(kv_a_proj, kv_a) },
    [DS_TK_KV_A_NORM] = { DS_TS_LAYER, "self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight", V1(RKV), ALL, F32,
                          0, LW(kv_a_norm, kv_a_norm) },
    [DS_TK_KV_B] = { DS_TS_LAYER, "self_attn.kv_b_proj.weight", "attn_kv_b.weight", S2(KVB, RKV), DS_TW_KV_JOINT,
                     ATTN, 0, LW(kv_b_proj, kv_b) },
    [DS_TK_K_B] = { DS_TS_LAYER, NULL, "attn_k_b.weight", S3(H, RKV, DN), DS_TW_KV_SPLIT, ATTN, 0, LG(wk_b) },
    [DS_TK_V_B] = { DS_TS_LAYER, NULL, "attn_v_b.weight", S3(H, DV, RKV), DS_TW_KV_SPLIT, ATTN, 0, LG(wv_b) },
    [DS_TK_O] = { DS_TS_LAYER, "self_attn.o_proj.weight", "attn_output.weight", S2(D, HDV), ALL, ATTN, 0,
                  LW(o_proj, o_proj) },
    [DS_TK_FFN_NORM] = { DS_TS_LAYER, "post_attention_layernorm.weight", "ffn_norm.weight", V1(D), ALL, F32, 0,
                         LW(ffn_norm, ffn_norm) },
    [DS_TK_GATE] = { DS_TS_LAYER, "mlp.gate_proj.weight", "ffn_gate.weight", S2(I, D), DS_TW_DENSE, FFN, DS_TF_GATE,
                     LW(mlp.gate, mlp.gate) },
    [DS_TK_UP] = { DS_TS_LAYER, "mlp.up_proj.weight", "ffn_up.weight", S2(I, D), DS_TW_DENSE, FFN, 0, LW(mlp.up, mlp.up) },
    [DS_TK_DOWN] = { DS_TS_LAYER, "mlp.down_proj.weight", "ffn_down.weight", S2(D, I), DS_TW_DENSE, FFN, 0,
                     LW(mlp.down, mlp.down) },
    [DS_TK_ROUTER] = { DS_TS_LAYER, "mlp.gate.weight", "ffn_gate_inp.weight", S2(E, D), DS_TW_MOE, F32, DS_TF_NO_REPACK,
                       LW(router, router) },
    [DS_TK_ROUTER_BIAS] = { DS_TS_LAYER, "mlp.gate.e_score_correction_bias", "exp_probs_b.bias", V1(E),
                            DS_TW_MOE_NOAUX, F32, DS_TF_BIAS | DS_TF_GGUF_OPTIONAL, LW(router_bias, router_bias) },
    [DS_TK_EXP_GATE] = { DS_TS_EXPERT, "gate_proj.weight", "ffn_gate_exps.weight", S2(F, D), DS_TW_GU_SEPARATE,
                         DS_TC_EXPERTS, DS_TF_GATE, XW(gate) },
    [DS_TK_EXP_UP] = { DS_TS_EXPERT, "up_proj.weight", "ffn_up_exps.weight", S2(F, D), DS_TW_GU_SEPARATE, DS_TC_EXPERTS,
                       0, XW(up) },
    /* gate rows [0, F) then up rows [F, 2F) of every expert; model_gguf.c views both */
    [DS_TK_EXP_GATE_UP] = { DS_TS_EXPERT, NULL, "ffn_gate_up_exps.weight", S2(2F, D), DS_TW_GU_MERGED, DS_TC_EXPERTS,
                            0, offsetof(ds_mlp_w, gate), DS_TK_NO_FIELD },
    [DS_TK_EXP_DOWN] = { DS_TS_EXPERT, "down_proj.weight", "ffn_down_exps.weight", S2(D, F), DS_TW_MOE, DS_TC_EXPERTS,
                         0, XW(down) },
    [DS_TK_SH_GATE] = { DS_TS_LAYER, "mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight", S2(SF, D),
                        DS_TW_SHARED, FFN, DS_TF_GATE, LW(shared.gate, shared.gate) },
    [DS_TK_SH_UP] = { DS_TS_LAYER, "mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight", S2(SF, D), DS_TW_SHARED,
                      FFN, 0, LW(shared.up, shared.up) },
    [DS_TK_SH_DOWN] = { DS_TS_LAYER, "mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight", S2(D, SF),
                        DS_TW_SHARED, FFN, 0, LW(shared.down, shared.down) },

    [DS_TK_EH_PROJ] = { DS_TS_MTP, "eh_proj.weight", "nextn.eh_proj.weight", S2(D, 2D), ALL, FFN, 0,
                        LW(eh_proj, eh_proj) },
    [DS_TK_ENORM] = { DS_TS_MTP, "enorm.weight", "nextn.enorm.weight", V1(D), ALL, F32, 0, LW(enorm, enorm) },
    [DS_TK_HNORM] = { DS_TS_MTP, "hnorm.weight", "nextn.hnorm.weight", V1(D), ALL, F32, 0, LW(hnorm, hnorm) },
    [DS_TK_HEAD_NORM] = { DS_TS_MTP, "shared_head.norm.weight", "nextn.shared_head_norm.weight", V1(D), ALL, F32, 0,
                          LW(head_norm, head_norm) },
    [DS_TK_MTP_EMBED] = { DS_TS_MTP, "embed_tokens.weight", "nextn.embed_tokens.weight", S2(V, D), DS_TW_OPTIONAL,
                          DS_TC_EMBED, DS_TF_NO_REPACK, LW(embed, embed) },
    [DS_TK_MTP_HEAD] = { DS_TS_MTP, "shared_head.head.weight", "nextn.shared_head_head.weight", S2(V, D),
                         DS_TW_OPTIONAL, DS_TC_HEAD, 0, LW(head, head) },

    /* the V3.2 lightning indexer (dsa.c); GGUF names as llama.cpp's indexer tensors */
    [DS_TK_IDX_Q_B] = { DS_TS_LAYER, "self_attn.indexer.wq_b.weight", "indexer.attn_q_b.weight", S2(HIDI, RQ), DS_TW_DSA,
                        ATTN, 0, LG(idx_q_b) },
    [DS_TK_IDX_K] = { DS_TS_LAYER, "self_attn.indexer.wk.weight", "indexer.attn_k.weight", S2(DI, D), DS_TW_DSA, ATTN, 0,
                      LG(idx_k) },
    [DS_TK_IDX_K_NORM] = { DS_TS_LAYER, "self_attn.indexer.k_norm.weight", "indexer.k_norm.weight", V1(DI), DS_TW_DSA,
                           F32, 0, LG(idx_k_norm) },
    [DS_TK_IDX_K_NORM_B] = { DS_TS_LAYER, "self_attn.indexer.k_norm.bias", "indexer.k_norm.bias", V1(DI), DS_TW_DSA,
                             F32, 0, LG(idx_k_norm_b) },
    [DS_TK_IDX_W] = { DS_TS_LAYER, "self_attn.indexer.weights_proj.weight", "indexer.proj.weight", S2(HI, D), DS_TW_DSA,
                      F32, DS_TF_NO_REPACK, LG(idx_w) },

    /* DeepSeek-V4: the names transformers' save_pretrained writes (its conversion
     * mapping reversed: DeepSeek's own attn./ffn. names under "model."); GGUF:
     * llama.cpp's `deepseek4` names (its conversion/deepseek.py, DeepseekV4Model) */
#define V4 DS_TW_V4
#define NR DS_TF_NO_REPACK
    [DS_TK_V4_EMBED] = { DS_TS_MODEL, "model.embed_tokens.weight", "token_embd.weight", S2(V, D), V4, DS_TC_EMBED, NR, LG_M(embed) },
    [DS_TK_V4_NORM] = { DS_TS_MODEL, "model.norm.weight", "output_norm.weight", V1(D), V4, F32, 0, LG_M(final_norm) },
    [DS_TK_V4_HEAD] = { DS_TS_MODEL, "head.weight", "output.weight", S2(V, D), DS_TW_V4_UNTIED, DS_TC_HEAD, 0, LG_M(lm_head) },
    [DS_TK_V4_HC_HEAD_FN] = { DS_TS_MODEL, "model.hc_head.hc_fn", "output_hc_fn.weight", S2(NHC, NHCD), V4, F32, NR, LG_M(hc_head_fn) },
    [DS_TK_V4_HC_HEAD_BASE] = { DS_TS_MODEL, "model.hc_head.hc_base", "output_hc_base.weight", V1(NHC), V4, F32, 0, LG_M(hc_head_base) },
    [DS_TK_V4_HC_HEAD_SCALE] = { DS_TS_MODEL, "model.hc_head.hc_scale", "output_hc_scale.weight", V1(1), V4, F32, 0, LG_M(hc_head_scale) },
    [DS_TK_V4_ATTN_NORM] = { DS_TS_LAYER, "attn_norm.weight", "attn_norm.weight", V1(D), V4, F32, 0, LG(attn_norm) },
    [DS_TK_V4_FFN_NORM] = { DS_TS_LAYER, "ffn_norm.weight", "ffn_norm.weight", V1(D), V4, F32, 0, LG(ffn_norm) },
    [DS_TK_V4_HC_ATTN_FN] = { DS_TS_LAYER, "hc_attn_fn", "hc_attn_fn.weight", S2(NHCM, NHCD), V4, F32, NR, LG(hc_attn_fn) },
    [DS_TK_V4_HC_ATTN_BASE] = { DS_TS_LAYER, "hc_attn_base", "hc_attn_base.weight", V1(NHCM), V4, F32, 0, LG(hc_attn_base) },
    [DS_TK_V4_HC_ATTN_SCALE] = { DS_TS_LAYER, "hc_attn_scale", "hc_attn_scale.weight", V1(3), V4, F32, 0, LG(hc_attn_scale) },
    [DS_TK_V4_HC_FFN_FN] = { DS_TS_LAYER, "hc_ffn_fn", "hc_ffn_fn.weight", S2(NHCM, NHCD), V4, F32, NR, LG(hc_ffn_fn) },
    [DS_TK_V4_HC_FFN_BASE] = { DS_TS_LAYER, "hc_ffn_base", "hc_ffn_base.weight", V1(NHCM), V4, F32, 0, LG(hc_ffn_base) },
    [DS_TK_V4_HC_FFN_SCALE] = { DS_TS_LAYER, "hc_ffn_scale", "hc_ffn_scale.weight", V1(3), V4, F32, 0, LG(hc_ffn_scale) },
    [DS_TK_V4_SINKS] = { DS_TS_LAYER, "attn.attn_sink", "attn_sinks.weight", V1(H), V4, F32, 0, LG(sinks) },
    [DS_TK_V4_Q_A] = { DS_TS_LAYER, "attn.wq_a.weight", "attn_q_a.weight", S2(RQ, D), V4, ATTN, 0, LG(q_a_proj) },
    [DS_TK_V4_Q_A_NORM] = { DS_TS_LAYER, "attn.q_norm.weight", "attn_q_a_norm.weight", V1(RQ), V4, F32, 0, LG(q_a_norm) },
    [DS_TK_V4_Q_B] = { DS_TS_LAYER, "attn.wq_b.weight", "attn_q_b.weight", S2(HDH, RQ), V4, ATTN, 0, LG(q_b_proj) },
    [DS_TK_V4_KV] = { DS_TS_LAYER, "attn.wkv.weight", "attn_kv.weight", S2(DH, D), V4, ATTN, 0, LG(kv_proj) },
    [DS_TK_V4_KV_NORM] = { DS_TS_LAYER, "attn.norm.weight", "attn_kv_a_norm.weight", V1(DH), V4, F32, 0, LG(kv_norm) },
    [DS_TK_V4_O_A] = { DS_TS_LAYER, "attn.wo_a.weight", "attn_output_a.weight", S2(GRO, HDHG), V4, ATTN, 0, LG(o_a_proj) },
    [DS_TK_V4_O_B] = { DS_TS_LAYER, "attn.wo_b.weight", "attn_output_b.weight", S2(D, GRO), V4, ATTN, 0, LG(o_proj) },
    /* the compressor: CSA layers make two series (2·Dh), HCA layers one (Dh); the same fields */
    [DS_TK_V4_CSA_KV] = { DS_TS_LAYER, "attn.compressor.wkv.weight", "attn_compressor_kv.weight", S2(2DH, D), DS_TW_V4_CSA, ATTN, 0, LG(cmp_kv) },
    [DS_TK_V4_CSA_GATE] = { DS_TS_LAYER, "attn.compressor.wgate.weight", "attn_compressor_gate.weight", S2(2DH, D), DS_TW_V4_CSA, ATTN, 0,
                            LG(cmp_gate) },
    [DS_TK_V4_CSA_APE] = { DS_TS_LAYER, "attn.compressor.ape", "attn_compressor_ape.weight", S2(RCSA, 2DH), DS_TW_V4_CSA, F32, NR, LG(cmp_ape) },
    [DS_TK_V4_CSA_NORM] = { DS_TS_LAYER, "attn.compressor.norm.weight", "attn_compressor_norm.weight", V1(DH), DS_TW_V4_CSA, F32, 0, LG(cmp_norm) },
    [DS_TK_V4_HCA_KV] = { DS_TS_LAYER, "attn.compressor.wkv.weight", "attn_compressor_kv.weight", S2(DH, D), DS_TW_V4_HCA, ATTN, 0, LG(cmp_kv) },
    [DS_TK_V4_HCA_GATE] = { DS_TS_LAYER, "attn.compressor.wgate.weight", "attn_compressor_gate.weight", S2(DH, D), DS_TW_V4_HCA, ATTN, 0,
                            LG(cmp_gate) },
    [DS_TK_V4_HCA_APE] = { DS_TS_LAYER, "attn.compressor.ape", "attn_compressor_ape.weight", S2(RHCA, DH), DS_TW_V4_HCA, F32, NR, LG(cmp_ape) },
    [DS_TK_V4_HCA_NORM] = { DS_TS_LAYER, "attn.compressor.norm.weight", "attn_compressor_norm.weight", V1(DH), DS_TW_V4_HCA, F32, 0, LG(cmp_norm) },
    /* the CSA indexer: its own compressor at Di, queries from the q LoRA latent */
    [DS_TK_V4_IDX_KV] = { DS_TS_LAYER, "attn.indexer.compressor.wkv.weight", "indexer_compressor_kv.weight", S2(2DI, D), DS_TW_V4_CSA, ATTN, 0,
                          LG(icmp_kv) },
    [DS_TK_V4_IDX_GATE] = { DS_TS_LAYER, "attn.indexer.compressor.wgate.weight", "indexer_compressor_gate.weight", S2(2DI, D), DS_TW_V4_CSA, ATTN, 0,
                            LG(icmp_gate) },
    [DS_TK_V4_IDX_APE] = { DS_TS_LAYER, "attn.indexer.compressor.ape", "indexer_compressor_ape.weight", S2(RCSA, 2DI), DS_TW_V4_CSA, F32, NR,
                           LG(icmp_ape) },
    [DS_TK_V4_IDX_NORM] = { DS_TS_LAYER, "attn.indexer.compressor.norm.weight", "indexer_compressor_norm.weight", V1(DI), DS_TW_V4_CSA, F32, 0,
                            LG(icmp_norm) },
    [DS_TK_V4_IDX_W] = { DS_TS_LAYER, "attn.indexer.weights_proj.weight", "indexer.proj.weight", S2(HI, D), DS_TW_V4_CSA, F32, NR, LG(idx_w) },
    [DS_TK_V4_IDX_Q_B] = { DS_TS_LAYER, "attn.indexer.wq_b.weight", "indexer.attn_q_b.weight", S2(HIDI, RQ), DS_TW_V4_CSA, ATTN, 0, LG(idx_q_b) },
    [DS_TK_V4_ROUTER] = { DS_TS_LAYER, "ffn.gate.weight", "ffn_gate_inp.weight", S2(E, D), V4, F32, NR, LG(router) },
    [DS_TK_V4_ROUTER_BIAS] = { DS_TS_LAYER, "ffn.gate.bias", "exp_probs_b.bias", V1(E), DS_TW_V4_MOE, F32, DS_TF_BIAS, LG(router_bias) },
    [DS_TK_V4_TID2EID] = { DS_TS_LAYER, "ffn.gate.tid2eid", "ffn_gate_tid2eid.weight", S2(V, K), DS_TW_V4_HASH, F32, NR | DS_TF_INDEX,
                           LG(tid2eid) },
    [DS_TK_V4_EXP_GATE] = { DS_TS_EXPERT, "w1.weight", "ffn_gate_exps.weight", S2(F, D), V4, DS_TC_EXPERTS, DS_TF_GATE, XG(gate) },
    [DS_TK_V4_EXP_UP] = { DS_TS_EXPERT, "w3.weight", "ffn_up_exps.weight", S2(F, D), V4, DS_TC_EXPERTS, 0, XG(up) },
    [DS_TK_V4_EXP_DOWN] = { DS_TS_EXPERT, "w2.weight", "ffn_down_exps.weight", S2(D, F), V4, DS_TC_EXPERTS, 0, XG(down) },
    [DS_TK_V4_SH_GATE] = { DS_TS_LAYER, "ffn.shared_experts.w1.weight", "ffn_gate_shexp.weight", S2(F, D), V4, FFN, DS_TF_GATE, LG(shared.gate) },
    [DS_TK_V4_SH_UP] = { DS_TS_LAYER, "ffn.shared_experts.w3.weight", "ffn_up_shexp.weight", S2(F, D), V4, FFN, 0, LG(shared.up) },
    [DS_TK_V4_SH_DOWN] = { DS_TS_LAYER, "ffn.shared_experts.w2.weight", "ffn_down_shexp.weight", S2(D, F), V4, FFN, 0, LG(shared.down) },
    /* the MTP block: model.layers.<L+i>.<suffix> (the release: mtp.<i>.<suffix>); embedding and head are the main ones */
    [DS_TK_V4_MTP_E_PROJ] = { DS_TS_MTP, "e_proj.weight", NULL, S2(D, D), V4, FFN, 0, LG(e_proj) },
    [DS_TK_V4_MTP_H_PROJ] = { DS_TS_MTP, "h_proj.weight", NULL, S2(D, D), V4, FFN, 0, LG(h_proj) },
    [DS_TK_V4_MTP_ENORM] = { DS_TS_MTP, "enorm.weight", NULL, V1(D), V4, F32, 0, LG(enorm) },
    [DS_TK_V4_MTP_HNORM] = { DS_TS_MTP, "hnorm.weight", NULL, V1(D), V4, F32, 0, LG(hnorm) },
    [DS_TK_V4_MTP_NORM] = { DS_TS_MTP, "norm.weight", NULL, V1(D), V4, F32, 0, LG(head_norm) },
    [DS_TK_V4_MTP_HC_FN] = { DS_TS_MTP, "hc_head_fn", NULL, S2(NHC, NHCD), V4, F32, NR, LG(hc_head_fn) },
    [DS_TK_V4_MTP_HC_BASE] = { DS_TS_MTP, "hc_head_base", NULL, V1(NHC), V4, F32, 0, LG(hc_head_base) },
    [DS_TK_V4_MTP_HC_SCALE] = { DS_TS_MTP, "hc_head_scale", NULL, V1(1), V4, F32, 0, LG(hc_head_scale) },
#undef V4
#undef NR
};

#undef M
#undef LW
#undef XG
#undef LG_M
#undef LG
#undef XW
#undef V1
#undef S2
#undef S3
#undef ALL
#undef F32
#undef ATTN
#undef FFN

ds_tneed ds_tk_need(const ds_tkind *k, const ds_config *c, int64_t l, unsigned forms) {
    if ((k->scope == DS_TS_MODEL) != (l < 0) || (k->scope == DS_TS_MTP && l < c->n_layer)) return DS_TN_NO;
    if ((k->when >= DS_TW_V4) != (c->arch == DS_ARCH_V4)) return DS_TN_NO;   /* V4 has its own rows */
    bool moe = l >= 0 && ds_config_layer_is_moe(c, l);
    bool has;
    switch (k->when) {
    case DS_TW_ALWAYS: has = true; break;
    case DS_TW_Q_LORA: has = c->q_lora_rank > 0; break;
    case DS_TW_Q_PLAIN: has = c->q_lora_rank == 0; break;
    case DS_TW_KV_JOINT: has = !(forms & DS_FORM_KV_SPLIT); break;
    case DS_TW_KV_SPLIT: has = forms & DS_FORM_KV_SPLIT; break;
    case DS_TW_DENSE: has = !moe; break;
    case DS_TW_MOE: has = moe; break;
    case DS_TW_MOE_NOAUX: has = moe && c->topk_method == DS_TOPK_NOAUX_TC; break;
    case DS_TW_GU_SEPARATE: has = moe && !(forms & DS_FORM_GU_MERGED); break;
    case DS_TW_GU_MERGED: has = moe && (forms & DS_FORM_GU_MERGED); break;
    case DS_TW_SHARED: has = moe && c->n_shared_experts > 0; break;
    case DS_TW_UNTIED: return c->tie_word_embeddings ? DS_TN_MAYBE : DS_TN_YES;
    case DS_TW_OPTIONAL: return DS_TN_MAYBE;
    case DS_TW_DSA: has = l >= 0 && l < DS_MAX_LAYERS && c->attn_kind[l] == DS_ATTN_DSA; break;
    case DS_TW_V4: has = true; break;
    case DS_TW_V4_UNTIED: return c->tie_word_embeddings ? DS_TN_MAYBE : DS_TN_YES;
    case DS_TW_V4_CSA: has = l >= 0 && l < DS_MAX_LAYERS && c->attn_kind[l] == DS_ATTN_CSA; break;
    case DS_TW_V4_HCA: has = l >= 0 && l < DS_MAX_LAYERS && c->attn_kind[l] == DS_ATTN_HCA; break;
    case DS_TW_V4_MOE: has = l >= 0 && l < DS_MAX_LAYERS && c->ffn_kind[l] == DS_FFN_MOE; break;
    case DS_TW_V4_HASH: has = l >= 0 && l < DS_MAX_LAYERS && c->ffn_kind[l] == DS_FFN_HASH_MOE; break;
    default: has = false;
    }
    return has ? DS_TN_YES : DS_TN_NO;
}

static int64_t dim(const ds_config *c, ds_tdim d) {
    int64_t H = c->n_head, Dn = c->qk_nope_head_dim, Dv = c->v_head_dim;
    switch (d) {
    case DS_TD_D: return c->hidden_size;
    case DS_TD_2D: return 2 * c->hidden_size;
    case DS_TD_V: return c->vocab_size;
    case DS_TD_H: return H;
    case DS_TD_DN: return Dn;
    case DS_TD_DV: return Dv;
    case DS_TD_RQ: return c->q_lora_rank;
    case DS_TD_RKV: return c->kv_lora_rank;
    case DS_TD_HDQ: return H * (Dn + c->qk_rope_head_dim);
    case DS_TD_KVA: return c->kv_lora_rank + c->qk_rope_head_dim;
    case DS_TD_KVB: return H * (Dn + Dv);
    case DS_TD_HDV: return H * Dv;
    case DS_TD_I: return c->intermediate_size;
    case DS_TD_F: return c->moe_intermediate_size;
    case DS_TD_2F: return 2 * c->moe_intermediate_size;
    case DS_TD_E: return c->n_routed_experts;
    case DS_TD_SF: return c->n_shared_experts * c->moe_intermediate_size;
    case DS_TD_HI: return c->index_n_heads;
    case DS_TD_DI: return c->index_head_dim;
    case DS_TD_HIDI: return c->index_n_heads * c->index_head_dim;
    case DS_TD_DH: return c->head_dim;
    case DS_TD_2DH: return 2 * c->head_dim;
    case DS_TD_HDH: return H * c->head_dim;
    case DS_TD_HDHG: return c->o_groups > 0 ? H * c->head_dim / c->o_groups : 0;
    case DS_TD_GRO: return c->o_groups * c->o_lora_rank;
    case DS_TD_2DI: return 2 * c->index_head_dim;
    case DS_TD_RCSA: return c->compress_rate_csa;
    case DS_TD_RHCA: return c->compress_rate_hca;
    case DS_TD_NHC: return c->n_streams;
    case DS_TD_NHCM: return (2 + c->n_streams) * c->n_streams;
    case DS_TD_NHCD: return c->n_streams * c->hidden_size;
    case DS_TD_3: return 3;
    case DS_TD_1: return 1;
    case DS_TD_K: return c->num_experts_per_tok;
    }
    return 0;
}

int ds_tk_shape(const ds_tkind *k, const ds_config *c, int64_t shape[3]) {
    for (int i = 0; i < 3; i++) shape[i] = i < k->ndim ? dim(c, k->shape[i]) : 0;
    return k->ndim;
}

int64_t ds_tk_layer_params(const ds_config *c, int64_t l, int64_t n_experts, bool matrices_only) {
    int64_t n = 0;
    for (int i = 0; i < DS_TK_COUNT; i++) {
        const ds_tkind *k = &ds_tkinds[i];
        int64_t s[3];
        int nd = ds_tk_shape(k, c, s);
        if (ds_tk_need(k, c, l, 0) != DS_TN_YES || (matrices_only && nd == 1)) continue;
        n += (k->scope == DS_TS_EXPERT ? n_experts : 1) * s[0] * (nd > 1 ? s[1] : 1) * (nd > 2 ? s[2] : 1);
    }
    return n;
}

void ds_tk_name(const ds_tkind *k, bool gguf, int64_t l, int64_t x, char *buf, size_t n) {
    const char *suffix = gguf ? k->gguf : k->hf;
    if (k->scope == DS_TS_MODEL) snprintf(buf, n, "%s", suffix);
    else if (gguf) snprintf(buf, n, "blk.%lld.%s", (long long)l, suffix);
    else if (k->scope == DS_TS_EXPERT)
        snprintf(buf, n, "model.layers.%lld.%s.experts.%lld.%s", (long long)l, k->when >= DS_TW_V4 ? "ffn" : "mlp",
                 (long long)x, suffix);
    else snprintf(buf, n, "model.layers.%lld.%s", (long long)l, suffix);
}

void *ds_tk_field(const ds_tkind *k, ds_model *m, int64_t l, int64_t x) {
    char *base = k->scope == DS_TS_MODEL    ? (char *)m
                 : k->scope == DS_TS_EXPERT ? (char *)&m->layers[l].experts[x]
                                            : (char *)&m->layers[l];
    return base + k->w_off;
}

bool ds_tk_hf_layer_stored(const ds_safetensors *st, int64_t l) {
    char prefix[64];
    int len = snprintf(prefix, sizeof prefix, "model.layers.%lld.", (long long)l);
    for (int64_t i = 0; i < st->n_tensors; i++)
        if (strncmp(st->tensors[i].name, prefix, (size_t)len) == 0) return true;
    return false;
}

void ds_tk_v4_official_name(const char *hf, int64_t L, char *buf, size_t n) {
    static const char *const top[][2] = {
        { "model.embed_tokens.weight", "embed.weight" }, { "model.norm.weight", "norm.weight" },
        { "model.hc_head.hc_fn", "hc_head_fn" },         { "model.hc_head.hc_base", "hc_head_base" },
        { "model.hc_head.hc_scale", "hc_head_scale" },
    };
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (!strcmp(hf, top[i][0])) { snprintf(buf, n, "%s", top[i][1]); return; }
    const char *rest = strncmp(hf, "model.", 6) == 0 ? hf + 6 : hf;
    char mtp[256];
    long long l;
    int at = 0;
    if (sscanf(rest, "layers.%lld.%n", &l, &at) == 1 && at > 0 && l >= L) {   /* an MTP layer */
        snprintf(mtp, sizeof mtp, "mtp.%lld.%s", l - (long long)L, rest + at);
        rest = mtp;
    }
    size_t len = strlen(rest);
    const char *kv = ".attn.norm.weight";
    size_t kl = strlen(kv);
    if (len > kl && !strcmp(rest + len - kl, kv))
        snprintf(buf, n, "%.*s.attn.kv_norm.weight", (int)(len - kl), rest);
    else snprintf(buf, n, "%s", rest);
}
