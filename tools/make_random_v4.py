#!/usr/bin/env python3
"""
make_random_v4.py - writes a DeepseekV4ForCausalLM Hugging Face folder with random
weights (numpy only; no torch) at DeepSeek-V4-Flash's attention shapes, for the
long-context benchmark (README, "DeepSeek-V4"): keep it on /tmp, not in the repo.

    python3 tools/make_random_v4.py OUT_DIR [--layers sliding,csa,hca,csa] [--experts 8]
                                    [--moe-inter 512] [--vocab 129280] [--seed 0]

V4-Flash's attention as its config gives it: hidden 4096, 64 heads of 512 (rope 64 on
the tail), q_lora_rank 1024, o_groups 8 x o_lora_rank 1024, sliding window 128,
compress rates 4 (CSA) and 128 (HCA), an indexer of 64 heads x 128 picking the top
512 entries, 4 hyper-connection streams. The MoE is shrunk (--experts, --moe-inter;
V4-Flash has 256 experts of 2048, top 6) so the folder stays a few GB: it is the same
per-token cost at every depth, and the benchmark is about how decode grows with depth.
The tensor names are those transformers 5.x's save_pretrained writes (as in
tests/fixtures/tiny-v4). Weights are N(0, 1/fan_in), norms ~1, bf16.
"""
import argparse
import json
import os
import struct

import numpy as np

KIND = {"sliding": "sliding_attention", "csa": "compressed_sparse_attention", "hca": "heavily_compressed_attention"}


def to_bf16(a):
    u = a.astype(np.float32).view(np.uint32)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", default="sliding,csa,hca,csa")
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--moe-inter", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=129280)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    kinds = [KIND[k] for k in a.layers.split(",")]
    L, D, H, Dh, Dr, Rq, G, Ro = len(kinds), 4096, 64, 512, 64, 1024, 8, 1024
    Hi, Di, hc, V, E, F, K = 64, 128, 4, a.vocab, a.experts, a.moe_inter, 6
    Rc, Rh = 4, 128
    n_hash = min(2, L)
    cfg = {
        "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 1, "dtype": "bfloat16",
        "compress_rates": {"compressed_sparse_attention": Rc, "heavily_compressed_attention": Rh},
        "compress_rope_theta": 160000.0, "hc_eps": 1e-6, "hc_mult": hc, "hc_sinkhorn_iters": 20,
        "head_dim": Dh, "hidden_act": "silu", "hidden_size": D, "index_head_dim": Di, "index_n_heads": Hi,
        "index_topk": 512, "initializer_range": 0.02, "layer_types": kinds, "max_position_embeddings": 1048576,
        "mlp_bias": False, "mlp_layer_types": ["hash_moe"] * n_hash + ["moe"] * (L - n_hash),
        "moe_intermediate_size": F, "n_routed_experts": E, "n_shared_experts": 1, "norm_topk_prob": True,
        "num_attention_heads": H, "num_experts_per_tok": K, "num_hidden_layers": L, "num_key_value_heads": 1,
        "num_nextn_predict_layers": 0, "o_groups": G, "o_lora_rank": Ro, "partial_rotary_factor": Dr / Dh,
        "q_lora_rank": Rq, "qk_rope_head_dim": Dr, "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "compress": {"attention_factor": 1.0, "beta_fast": 32, "beta_slow": 1, "factor": 16.0,
                         "original_max_position_embeddings": 65536, "partial_rotary_factor": Dr / Dh,
                         "rope_theta": 160000.0, "rope_type": "yarn"},
            "main": {"partial_rotary_factor": Dr / Dh, "rope_theta": 10000.0, "rope_type": "default"}},
        "rope_theta": 10000.0, "routed_scaling_factor": 1.5, "scoring_func": "sqrtsoftplus",
        "sliding_window": 128, "swiglu_limit": 10.0, "tie_word_embeddings": False, "vocab_size": V,
    }
    os.makedirs(a.out, exist_ok=True)
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    rng = np.random.default_rng(a.seed)
    hdr, blobs, off = {}, [], 0

    def add(name, dt, shape, data):
        nonlocal off
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + data.nbytes]}
        blobs.append(data)
        off += data.nbytes

    def mat(name, o, i, scale=1.0):
        add(name, "BF16", (o, i), to_bf16(rng.standard_normal((o, i), dtype=np.float32) * np.float32(scale / np.sqrt(i))))

    def vec(name, n, mean=1.0, sd=0.1):
        add(name, "BF16", (n,), to_bf16(mean + sd * rng.standard_normal(n, dtype=np.float32)))

    mat("model.embed_tokens.weight", V, D, np.sqrt(D))
    for l, kind in enumerate(kinds):
        p = f"model.layers.{l}."
        at = p + "attn."
        vec(at + "attn_sink", H, 0.0, 1.0)
        vec(at + "norm.weight", Dh)
        vec(at + "q_norm.weight", Rq)
        mat(at + "wkv.weight", Dh, D)
        mat(at + "wo_a.weight", G * Ro, H * Dh // G)
        mat(at + "wo_b.weight", D, G * Ro)
        mat(at + "wq_a.weight", Rq, D)
        mat(at + "wq_b.weight", H * Dh, Rq)
        if kind != KIND["sliding"]:
            R, cw = (Rc, 2 * Dh) if kind == KIND["csa"] else (Rh, Dh)
            vec(at + "compressor.ape", R * cw, 0.0, 0.1)
            hdr[at + "compressor.ape"]["shape"] = [R, cw]
            vec(at + "compressor.norm.weight", Dh)
            mat(at + "compressor.wgate.weight", cw, D)
            mat(at + "compressor.wkv.weight", cw, D)
            if kind == KIND["csa"]:
                ix = at + "indexer."
                vec(ix + "compressor.ape", R * 2 * Di, 0.0, 0.1)
                hdr[ix + "compressor.ape"]["shape"] = [R, 2 * Di]
                vec(ix + "compressor.norm.weight", Di)
                mat(ix + "compressor.wgate.weight", 2 * Di, D)
                mat(ix + "compressor.wkv.weight", 2 * Di, D)
                mat(ix + "weights_proj.weight", Hi, D)
                mat(ix + "wq_b.weight", Hi * Di, Rq)
        vec(p + "attn_norm.weight", D)
        vec(p + "ffn_norm.weight", D)
        for e in range(E):
            mat(p + f"ffn.experts.{e}.w1.weight", F, D)
            mat(p + f"ffn.experts.{e}.w2.weight", D, F)
            mat(p + f"ffn.experts.{e}.w3.weight", F, D)
        mat(p + "ffn.gate.weight", E, D, 4.0)
        if l < n_hash:
            tid = np.stack([rng.permutation(E)[:K] for _ in range(V)]).astype(np.int64)
            add(p + "ffn.gate.tid2eid", "I64", (V, K), tid)
        else:
            vec(p + "ffn.gate.bias", E, 0.0, 0.1)
        mat(p + "ffn.shared_experts.w1.weight", F, D)
        mat(p + "ffn.shared_experts.w2.weight", D, F)
        mat(p + "ffn.shared_experts.w3.weight", F, D)
        for s in ("attn", "ffn"):
            vec(p + f"hc_{s}_base", (2 + hc) * hc, 0.0, 0.1)
            mat(p + f"hc_{s}_fn", (2 + hc) * hc, hc * D)
            vec(p + f"hc_{s}_scale", 3, 1.0, 0.1)
        print(f"layer {l} ({kind}) done", flush=True)
    vec("model.hc_head.hc_base", hc, 0.0, 0.1)
    mat("model.hc_head.hc_fn", hc, hc * D)
    vec("model.hc_head.hc_scale", 1, 1.0, 0.1)
    vec("model.norm.weight", D)
    mat("head.weight", V, D)
    # widest dtype first so every tensor stays aligned
    order = sorted(range(len(blobs)), key=lambda i: -blobs[i].dtype.itemsize)
    names = list(hdr)
    new, off = {}, 0
    for i in order:
        n = names[i]
        new[n] = dict(hdr[n], data_offsets=[off, off + blobs[i].nbytes])
        off += blobs[i].nbytes
    hb = json.dumps(new).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for i in order:
            f.write(blobs[i].tobytes())
    print(f"wrote {a.out}/model.safetensors ({off / 1e9:.2f} GB)", flush=True)


if __name__ == "__main__":
    main()
