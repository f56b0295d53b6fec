#!/usr/bin/env python3
"""
gen_server_fixture.py - writes tests/fixtures/tiny-chat/: a tiny
DeepSeek-V3-architecture model with random weights AND a tokenizer, for the
HTTP server's tests (protocol, batching, prefix cache, web chat). Random
weights produce gibberish; that is fine for protocol tests.

    pip install tokenizers numpy
    python3 tools/gen_server_fixture.py [--shared ../shared] [--out tests/fixtures/tiny-chat]

Writes:
  tokenizer.json          byte-level BPE trained here (tokenizers library) on
                          tinyshakespeare + some JSON/code text, with the
                          DeepSeek-V3 pre-tokenizer (copied from the real
                          tokenizer.json) and DeepSeek-V3 style added tokens:
                          <｜begin▁of▁sentence｜> (0), <｜end▁of▁sentence｜> (1),
                          <｜▁pad▁｜> (2), FIM, <｜User｜>, <｜Assistant｜>, <|EOT|>,
                          the nine tool-call tokens, then <think> and </think>
                          as non-special added tokens (as in R1)
  tokenizer_config.json   the real DeepSeek-V3 tokenizer_config.json (BOS/EOS,
                          add_bos_token, V3 chat_template)
  config.json, model.safetensors
                          DeepseekV3ForCausalLM: hidden 64, 2 layers (1 dense,
                          1 MoE with 8 routed experts, noaux_tc), MLA ranks
                          48/32, vocab = tokenizer size rounded up to 64, BF16,
                          weights N(0, 1/fan_in) from a fixed seed
  generation_config.json  BOS/EOS
  README                  provenance

Deterministic for a given tokenizers / numpy version. Total < 1 MB.
"""
import argparse
import json
import os
import struct

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL = [
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>",
    "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>",
    "<｜User｜>", "<｜Assistant｜>", "<|EOT|>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
    "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>",
    "<｜tool▁sep｜>",
]
BPE_VOCAB = 560   # specials + 256 bytes + merges

EXTRA_TEXT = """
{"name": "Alice", "age": 30, "tags": ["a", "b"], "ok": true, "none": null}
{"city": "Paris", "temperature": 21.5, "unit": "celsius"}
[1, 2, 3, {"x": -1.5e3}]
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
```json
{"location": "Hangzhou"}
```
The answer is 42. What is the weather like today? Hello! How are you?
"""


def bf16(a):
    u = a.astype(np.float32).view(np.uint32)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def build_tokenizer(shared, out):
    real = json.load(open(os.path.join(shared, "tokenizers/deepseek-v3/tokenizer.json"), encoding="utf-8"))
    pats = [p["pattern"]["Regex"] for p in real["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in pats]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    text = open(os.path.join(shared, "data/tinyshakespeare.txt"), encoding="utf-8").read()[:300000]
    docs = text.split("\n\n") + [EXTRA_TEXT] * 50
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=[AddedToken(s, normalized=False) for s in SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    tok.add_tokens([AddedToken("<think>", normalized=False, special=False),
                    AddedToken("</think>", normalized=False, special=False)])
    tok.save(os.path.join(out, "tokenizer.json"))
    cfg = json.load(open(os.path.join(shared, "tokenizers/deepseek-v3/tokenizer_config.json"), encoding="utf-8"))
    cfg["model_max_length"] = 4096
    json.dump(cfg, open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=2)
    return tok.get_vocab_size(with_added_tokens=True)


def build_model(out, n_tok, seed):
    V = (n_tok + 63) // 64 * 64
    cfg = dict(
        architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", vocab_size=V, hidden_size=64,
        intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=16, first_k_dense_replace=1, moe_layer_freq=1, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=2, n_group=4, topk_group=2, topk_method="noaux_tc", scoring_func="sigmoid",
        norm_topk_prob=True, routed_scaling_factor=2.5, num_nextn_predict_layers=0, rms_norm_eps=1e-6,
        rope_theta=10000.0, max_position_embeddings=4096, tie_word_embeddings=False, attention_bias=False,
        hidden_act="silu", bos_token_id=0, eos_token_id=1,
        rope_scaling=dict(type="yarn", factor=1.0, original_max_position_embeddings=4096, beta_fast=32,
                          beta_slow=1, mscale=1.0, mscale_all_dim=1.0))
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": 0, "eos_token_id": 1}, open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    rng = np.random.default_rng(seed)
    tensors = []
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    dn, dr, dv, rkv, rq = 16, 8, 16, 32, 48

    def mat(name, o, i, scale=1.0):
        tensors.append((name, (o, i), bf16(rng.standard_normal((o, i), dtype=np.float32) * np.float32(scale / np.sqrt(i)))))

    def vec(name, n):
        tensors.append((name, (n,), bf16(1 + 0.1 * rng.standard_normal(n, dtype=np.float32))))

    mat("model.embed_tokens.weight", V, D, np.sqrt(D))
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        vec(p + "input_layernorm.weight", D)
        vec(p + "post_attention_layernorm.weight", D)
        mat(p + "self_attn.q_a_proj.weight", rq, D)
        vec(p + "self_attn.q_a_layernorm.weight", rq)
        mat(p + "self_attn.q_b_proj.weight", H * (dn + dr), rq)
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
            mat(p + "mlp.gate.weight", E, D, 4.0)
            tensors.append((p + "mlp.gate.e_score_correction_bias", (E,),
                            (0.1 * rng.standard_normal(E, dtype=np.float32)).astype(np.float32)))
            for e in range(E):
                mat(p + f"mlp.experts.{e}.gate_proj.weight", F, D)
                mat(p + f"mlp.experts.{e}.up_proj.weight", F, D)
                mat(p + f"mlp.experts.{e}.down_proj.weight", D, F)
            mat(p + "mlp.shared_experts.gate_proj.weight", F, D)
            mat(p + "mlp.shared_experts.up_proj.weight", F, D)
            mat(p + "mlp.shared_experts.down_proj.weight", D, F)
    vec("model.norm.weight", D)
    mat("lm_head.weight", V, D, 4.0)
    tensors.sort(key=lambda t: -t[2].dtype.itemsize)  # f32 first keeps every tensor aligned
    hdr, off = {}, 0
    for name, shape, data in tensors:
        hdr[name] = {"dtype": "F32" if data.dtype == np.float32 else "BF16", "shape": list(shape),
                     "data_offsets": [off, off + data.nbytes]}
        off += data.nbytes
    hb = json.dumps(hdr).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, _, data in tensors:
            f.write(data.tobytes())
    return V


def main():
    ap = argparse.ArgumentParser()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ap.add_argument("--shared", default=os.path.join(root, "..", "shared"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "tiny-chat"))
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    n_tok = build_tokenizer(a.shared, a.out)
    V = build_model(a.out, n_tok, a.seed)
    import tokenizers
    with open(os.path.join(a.out, "README"), "w") as f:
        f.write(f"Generated by tools/gen_server_fixture.py --seed {a.seed} (tokenizers {tokenizers.__version__}, "
                f"numpy {np.__version__}): random DeepSeek-V3-architecture weights, {n_tok} tokens, vocab_size {V}. "
                "Do not edit by hand.\n")
    print(f"wrote {a.out}: {n_tok} tokens, vocab_size {V}")


if __name__ == "__main__":
    main()
