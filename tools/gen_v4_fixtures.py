#!/usr/bin/env python3
"""
gen_v4_fixtures.py - builds tests/fixtures/tiny-v4: a tiny random
DeepSeek-V4 checkpoint (DeepseekV4ForCausalLM, written by transformers'
`save_pretrained`) and reference outputs computed by transformers 5.x's
deepseek_v4 modeling code (PyTorch, float32, eager attention).

    pip install torch transformers safetensors numpy
    python3 tools/gen_v4_fixtures.py        # rewrites tests/fixtures/tiny-v4

The config covers every V4 component: layer types sliding / CSA / HCA
(window 8, compression rates 4 and 8, 40 tokens: longer than the window and
several windows of each rate), index_topk 3 of up to 10 compressed entries,
hyper-connections (hc_mult 4, Sinkhorn), hash-routed layers then
sqrtsoftplus / noaux_tc ones, a SwiGLU limit low enough that the clamps act
(the script asserts both gate and up get clamped), attention sinks, the
grouped output projection (o_groups 2) and YaRN on the compressed layers' rope. Every parameter is drawn at random
(transformers initialises sinks, hyper-connection biases, position biases
and tid2eid to constants). Weights are stored as BF16 except the modules
transformers keeps in fp32; the reference reloads exactly the stored values.

Files:
    ref.json                tokens, prompt, greedy continuation, provenance, checks
    ref_logits.f32          full forward                       [T, V]
    ref_incr_logits.f32     one token at a time (DynamicCache)  [T, V]
    ref_chunk_logits.f32    prefill in chunks of 7 (DynamicCache) [T, V]
    tokenizer.json          tests/fixtures/tiny-chat's, so chat and serve run on the folder

The indexer's choice must not hang on rounding: the script recomputes every
query's index scores (hook on the scorer) and takes the first seed from
SEED_V4 (default 1) on whose index_topk-th and next score are not closer
than a relative margin.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mv4

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
NAME = "tiny-v4"
T = 40
PROMPT = 6
N_GEN = 12
CHUNK = 7
INDEX_MARGIN = 1e-3
SEED = int(os.environ.get("SEED_V4", "1"))

CFG = dict(
    vocab_size=576, hidden_size=64, moe_intermediate_size=32, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=1, head_dim=32, q_lora_rank=48, qk_rope_head_dim=8,
    num_experts_per_tok=2, n_routed_experts=8, n_shared_experts=1, scoring_func="sqrtsoftplus",
    routed_scaling_factor=1.5, rope_theta=10000.0, compress_rope_theta=160000.0,
    layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                 "compressed_sparse_attention"],
    mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe"],
    compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
    hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, swiglu_limit=1.5, sliding_window=8,
    o_groups=2, o_lora_rank=16, index_n_heads=4, index_head_dim=16, index_topk=3,
    num_nextn_predict_layers=0, rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1,
    max_position_embeddings=4096, tie_word_embeddings=False,
    # YaRN on the compressed layers' rope (transformers forces attention_factor 1.0 there);
    # original length 1024 puts the ramp (0, 0.5, 1, 1) inside the 4 frequencies of the 8 roped dims
    rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=1024, beta_fast=32, beta_slow=1),
)


def init_weights(model, gen):
    """std 1/sqrt(fan_in) matrices, norms around 1, random sinks / biases /
    hyper-connection parameters / position biases / tid2eid."""
    E, K = model.config.n_routed_experts, model.config.num_experts_per_tok
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.endswith(("position_bias",)) and ".fn" not in name and "hc_fn" not in name:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            elif name.endswith(("position_bias",)):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif ".fn" in name or "hc_fn" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            elif name.endswith("sinks"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name.endswith(("base", "hc_base")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith(("scale", "hc_scale")):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            else:  # norm weights
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("tid2eid"):
                rows = [torch.randperm(E, generator=gen)[:K] for _ in range(b.shape[0])]
                b.copy_(torch.stack(rows))
        # routers: larger, so routing has clear margins
        for layer in model.model.layers:
            layer.mlp.gate.weight.mul_(3.0)


def index_gap_hook(worst, rate):
    def hook(mod, args, out):
        scores = out.double()                      # [B, S, Tc]
        S, Tc = scores.shape[1], scores.shape[2]
        k = mod_topk[0]
        for s in range(S):
            avail = (s + 1) // rate
            if avail <= k:
                continue
            v = torch.sort(scores[0, s, :avail], descending=True).values
            gap = float((v[k - 1] - v[k]) / (v.abs().max() + 1e-30))
            worst[0] = min(worst[0], gap)
    return hook


mod_topk = [0]


def main():
    seed = SEED
    while not build(seed):
        seed += 1
        assert seed < SEED + 40, "no seed with clear index margins"


def build(SEED):
    d = os.path.join(ROOT, NAME)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    config = DeepseekV4Config(**CFG)
    config.architectures = ["DeepseekV4ForCausalLM"]
    model = DeepseekV4ForCausalLM(config).float().eval()
    init_weights(model, gen)
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    ref, info = DeepseekV4ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                      output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref.eval()
    # the stored tid2eid must be what the reference routes with
    stored = load_file(os.path.join(d, "model.safetensors"))
    assert torch.equal(stored["model.layers.0.ffn.gate.tid2eid"], ref.model.layers[0].mlp.gate.tid2eid)

    rng = np.random.default_rng(SEED)
    V = config.vocab_size
    tokens = [int(config.bos_token_id)] + [int(x) for x in rng.integers(2, V, T - 1)]
    ids = torch.tensor([tokens])
    worst = [float("inf")]
    mod_topk[0] = config.index_topk
    clamps = {"gate": 0, "up": 0}
    orig_gate = mv4.DeepseekV4Experts._apply_gate

    def counting_gate(self, gate_up):
        g, u = gate_up.chunk(2, dim=-1)
        clamps["gate"] += int((g > self.limit).sum())
        clamps["up"] += int((u.abs() > self.limit).sum())
        return orig_gate(self, gate_up)

    mv4.DeepseekV4Experts._apply_gate = counting_gate
    hooks = [m.register_forward_hook(index_gap_hook(worst, config.compress_rates["compressed_sparse_attention"]))
             for m in ref.modules() if isinstance(m, mv4.DeepseekV4IndexerScorer)]
    with torch.no_grad():
        full = ref(ids, use_cache=False).logits[0].numpy().astype(np.float32)
    for h in hooks:
        h.remove()
    mv4.DeepseekV4Experts._apply_gate = orig_gate
    if worst[0] <= INDEX_MARGIN:
        print(f"seed {SEED}: index top-k margin {worst[0]:.2e}, trying the next seed")
        return False
    assert clamps["gate"] > 0 and clamps["up"] > 0, clamps
    with torch.no_grad():
        cache = DynamicCache(config=ref.config)
        incr = []
        for t in range(T):
            o = ref(ids[:, t:t + 1], cache=cache, use_cache=True, position_ids=torch.tensor([[t]]))
            incr.append(o.logits[0, -1].numpy())
        incr = np.stack(incr).astype(np.float32)
        cache = DynamicCache(config=ref.config)
        chunk = []
        for t0 in range(0, T, CHUNK):
            t1 = min(T, t0 + CHUNK)
            o = ref(ids[:, t0:t1], cache=cache, use_cache=True, position_ids=torch.arange(t0, t1)[None])
            chunk.append(o.logits[0].numpy())
        chunk = np.concatenate(chunk).astype(np.float32)
        prompt = tokens[:PROMPT]
        g = ref.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, PROMPT, dtype=torch.long),
                         max_new_tokens=N_GEN, min_new_tokens=N_GEN, do_sample=False, eos_token_id=None,
                         pad_token_id=V - 1)
        greedy = [int(x) for x in g[0, PROMPT:]]
    full.tofile(os.path.join(d, "ref_logits.f32"))
    incr.tofile(os.path.join(d, "ref_incr_logits.f32"))
    chunk.tofile(os.path.join(d, "ref_chunk_logits.f32"))
    meta = {
        "generator": "python3 tools/gen_v4_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "seed": SEED, "storage_dtype": "bf16 (fp32 where transformers keeps fp32)", "tokens": tokens,
        "vocab_size": V, "prompt": prompt, "greedy": greedy, "chunk": CHUNK,
        "ref_logits": {"file": "ref_logits.f32", "shape": [T, V], "what": "HF fp32 full forward, no cache"},
        "ref_incr_logits": {"file": "ref_incr_logits.f32", "shape": [T, V], "what": "HF fp32 one token at a time"},
        "ref_chunk_logits": {"file": "ref_chunk_logits.f32", "shape": [T, V],
                             "what": f"HF fp32 prefill in chunks of {CHUNK}"},
        "incr_vs_full_maxdiff": float(np.abs(full - incr).max()),
        "chunk_vs_full_maxdiff": float(np.abs(full - chunk).max()),
        "index_topk_min_relative_gap": worst[0],
        "swiglu_clamps": clamps,
    }
    json.dump(meta, open(os.path.join(d, "ref.json"), "w"), indent=1)
    # tiny-chat's byte-level BPE (562 ids < vocab_size): chat / generate / serve run on the folder
    shutil.copy(os.path.join(ROOT, "tiny-chat", "tokenizer.json"), d)
    sz = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{NAME}: {sz / 1e6:.2f} MB, greedy {greedy}, incr-vs-full {meta['incr_vs_full_maxdiff']:.2e}, "
          f"chunk-vs-full {meta['chunk_vs_full_maxdiff']:.2e}, index gap {worst[0]:.2e}, clamps {clamps}, seed {SEED}")
    return True


if __name__ == "__main__":
    main()
