#!/usr/bin/env python3
"""
make_random_model.py - writes a DeepSeek-architecture Hugging Face folder with
random weights (numpy only; no torch), for benchmarks at realistic shapes.

    python3 tools/make_random_model.py OUT_DIR [--preset bench-small|v2-lite|v3-mini]
                                       [--dtype bf16|f32|fp8] [--layers N] [--shard-mb MB]

Presets:
  bench-small  V3 architecture, ~0.37B params (hidden 1024, 8 layers, 32 experts)
  v2-lite      DeepSeek-V2-Lite shapes (27 layers, 64 experts, 15.7B params)
  v3-mini      V3 routing (noaux_tc, 8 groups) at hidden 2048, 12 layers, 64 experts
  v3-attn      DeepSeek-V3's attention and vocabulary (hidden 7168, 128 heads, q_lora 1536, MLA
               latent 512 + rope 64), 4 layers, the MoE shrunk to 8 experts of 512 (top 4): the
               V3 side of the long-context table (README, DeepSeek-V4); 4 groups of 2, top 2 groups

Weights are N(0, 1/fan_in); the router gets 4x that so routing is not uniform.
Shards are written when --shard-mb is given, with model.safetensors.index.json.
"""
import argparse
import json
import os
import struct

import numpy as np

PRESETS = {
    "bench-small": dict(model_type="deepseek_v3", vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                        moe_intermediate_size=352, num_hidden_layers=8, num_attention_heads=16,
                        q_lora_rank=384, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32,
                        v_head_dim=64, first_k_dense_replace=1, n_routed_experts=32, n_shared_experts=1,
                        num_experts_per_tok=4, n_group=4, topk_group=2, topk_method="noaux_tc",
                        scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
                        num_nextn_predict_layers=0, bos_token_id=0, eos_token_id=1),
    "v2-lite": dict(model_type="deepseek_v2", vocab_size=102400, hidden_size=2048, intermediate_size=10944,
                    moe_intermediate_size=1408, num_hidden_layers=27, num_attention_heads=16,
                    q_lora_rank=None, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                    v_head_dim=128, first_k_dense_replace=1, n_routed_experts=64, n_shared_experts=2,
                    num_experts_per_tok=6, n_group=1, topk_group=1, topk_method="greedy",
                    scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=1.0,
                    bos_token_id=100000, eos_token_id=100001),
    "v3-mini": dict(model_type="deepseek_v3", vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                    moe_intermediate_size=512, num_hidden_layers=12, num_attention_heads=16,
                    q_lora_rank=768, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                    v_head_dim=128, first_k_dense_replace=1, n_routed_experts=64, n_shared_experts=1,
                    num_experts_per_tok=8, n_group=8, topk_group=4, topk_method="noaux_tc",
                    scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
                    num_nextn_predict_layers=0, bos_token_id=0, eos_token_id=1),
    "v3-attn": dict(model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, intermediate_size=2048,
                    moe_intermediate_size=512, num_hidden_layers=4, num_attention_heads=128,
                    q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                    v_head_dim=128, first_k_dense_replace=1, n_routed_experts=8, n_shared_experts=1,
                    num_experts_per_tok=4, n_group=4, topk_group=2, topk_method="noaux_tc",
                    scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
                    num_nextn_predict_layers=0, bos_token_id=0, eos_token_id=1),
}

DT = {"f32": ("F32", np.float32, 4), "bf16": ("BF16", np.uint16, 2), "fp8": ("F8_E4M3", np.uint8, 1)}


def to_bf16(a):
    u = a.astype(np.float32).view(np.uint32)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def to_fp8(a):
    """float32 -> e4m3fn bytes (round to nearest, saturating), vectorized via a table."""
    codes = np.arange(127, dtype=np.uint8)
    e, m = codes >> 3, codes & 7
    vals = np.where(e == 0, (m / 8.0) * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e.astype(np.float64) - 7))
    vals = vals[:127]  # 0x00..0x7e
    mag = np.clip(np.abs(a), 0, 448.0)
    idx = np.searchsorted(vals, mag)
    idx = np.clip(idx, 1, 126)
    lo, hi = vals[idx - 1], vals[idx]
    idx = np.where(mag - lo <= hi - mag, idx - 1, idx).astype(np.uint8)
    return idx | np.where(a < 0, 0x80, 0).astype(np.uint8)


class Writer:
    def __init__(self, out, shard_bytes):
        self.out, self.shard_bytes = out, shard_bytes
        self.pending, self.size, self.n, self.index = [], 0, 0, {}

    def add(self, name, dtype, shape, data):
        self.pending.append((name, dtype, shape, data))
        self.size += data.nbytes
        if self.shard_bytes and self.size >= self.shard_bytes:
            self.flush()

    def flush(self, final=False):
        if not self.pending:
            return
        self.n += 1
        fn = f"model-{self.n:05d}.safetensors" if self.shard_bytes else "model.safetensors"
        # widest dtype first so every tensor stays aligned
        self.pending.sort(key=lambda t: -t[3].dtype.itemsize)
        hdr, off = {}, 0
        for name, dt, shape, data in self.pending:
            hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + data.nbytes]}
            off += data.nbytes
            self.index[name] = fn
        hb = json.dumps(hdr).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        with open(os.path.join(self.out, fn), "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for _, _, _, data in self.pending:
                f.write(data.tobytes())
        print(f"  wrote {fn} ({off / 1e6:.1f} MB)", flush=True)
        self.pending, self.size = [], 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--preset", default="bench-small", choices=PRESETS)
    ap.add_argument("--dtype", default="bf16", choices=DT)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--shard-mb", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = dict(PRESETS[a.preset])
    if a.layers:
        cfg["num_hidden_layers"] = a.layers
    cfg.update(num_key_value_heads=cfg["num_attention_heads"], moe_layer_freq=1, rms_norm_eps=1e-6,
               rope_theta=10000.0, max_position_embeddings=163840, tie_word_embeddings=False,
               attention_bias=False, hidden_act="silu",
               rope_scaling=dict(type="yarn", factor=40.0, original_max_position_embeddings=4096, beta_fast=32,
                                 beta_slow=1, mscale=0.707 if cfg["model_type"] == "deepseek_v2" else 1.0,
                                 mscale_all_dim=0.707 if cfg["model_type"] == "deepseek_v2" else 1.0),
               architectures=["DeepseekV3ForCausalLM" if cfg["model_type"] == "deepseek_v3" else "DeepseekV2ForCausalLM"])
    if a.dtype == "fp8":
        cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                      "weight_block_size": [128, 128]}
    os.makedirs(a.out, exist_ok=True)
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    rng = np.random.default_rng(a.seed)
    w = Writer(a.out, a.shard_mb << 20)
    D, V, H = cfg["hidden_size"], cfg["vocab_size"], cfg["num_attention_heads"]
    dn, dr, dv, rkv, rq = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"], cfg["q_lora_rank"]

    def mat(name, o, i, scale=1.0, linear=True):
        x = rng.standard_normal((o, i), dtype=np.float32) * np.float32(scale / np.sqrt(i))
        if a.dtype == "fp8" and linear:
            sr, sc = -(-o // 128), -(-i // 128)
            s = np.empty((sr, sc), np.float32)
            q = np.empty((o, i), np.uint8)
            for r in range(sr):
                for c in range(sc):
                    blk = x[r * 128:(r + 1) * 128, c * 128:(c + 1) * 128]
                    s[r, c] = max(float(np.abs(blk).max()), 1e-12) / 448.0
                    q[r * 128:(r + 1) * 128, c * 128:(c + 1) * 128] = to_fp8(blk / s[r, c])
            w.add(name, "F8_E4M3", (o, i), q)
            w.add(name + "_scale_inv", "F32", (sr, sc), s)
        elif a.dtype == "f32":
            w.add(name, "F32", (o, i), x)
        else:
            w.add(name, "BF16", (o, i), to_bf16(x))

    def vec(name, n):
        w.add(name, "F32" if a.dtype == "f32" else "BF16", (n,),
              (1 + 0.1 * rng.standard_normal(n, dtype=np.float32)) if a.dtype == "f32"
              else to_bf16(1 + 0.1 * rng.standard_normal(n, dtype=np.float32)))

    mat("model.embed_tokens.weight", V, D, np.sqrt(D), linear=False)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        vec(p + "input_layernorm.weight", D)
        vec(p + "post_attention_layernorm.weight", D)
        if rq:
            mat(p + "self_attn.q_a_proj.weight", rq, D)
            vec(p + "self_attn.q_a_layernorm.weight", rq)
            mat(p + "self_attn.q_b_proj.weight", H * (dn + dr), rq)
        else:
            mat(p + "self_attn.q_proj.weight", H * (dn + dr), D)
        mat(p + "self_attn.kv_a_proj_with_mqa.weight", rkv + dr, D)
        vec(p + "self_attn.kv_a_layernorm.weight", rkv)
        mat(p + "self_attn.kv_b_proj.weight", H * (dn + dv), rkv)
        mat(p + "self_attn.o_proj.weight", D, H * dv)
        if l < cfg["first_k_dense_replace"]:
            I = cfg["intermediate_size"]
            mat(p + "mlp.gate_proj.weight", I, D)
            mat(p + "mlp.up_proj.weight", I, D)
            mat(p + "mlp.down_proj.weight", D, I)
        else:
            E, F = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
            mat(p + "mlp.gate.weight", E, D, 4.0, linear=False)
            if cfg["topk_method"] == "noaux_tc":
                w.add(p + "mlp.gate.e_score_correction_bias", "F32", (E,), 0.1 * rng.standard_normal(E, dtype=np.float32))
            for e in range(E):
                mat(p + f"mlp.experts.{e}.gate_proj.weight", F, D)
                mat(p + f"mlp.experts.{e}.up_proj.weight", F, D)
                mat(p + f"mlp.experts.{e}.down_proj.weight", D, F)
            Fs = F * cfg["n_shared_experts"]
            mat(p + "mlp.shared_experts.gate_proj.weight", Fs, D)
            mat(p + "mlp.shared_experts.up_proj.weight", Fs, D)
            mat(p + "mlp.shared_experts.down_proj.weight", D, Fs)
        print(f"layer {l} done", flush=True)
    vec("model.norm.weight", D)
    mat("lm_head.weight", V, D, linear=False)
    w.flush()
    if a.shard_mb:
        json.dump({"metadata": {}, "weight_map": w.index}, open(os.path.join(a.out, "model.safetensors.index.json"), "w"))


if __name__ == "__main__":
    main()
