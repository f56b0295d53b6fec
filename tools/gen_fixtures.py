#!/usr/bin/env python3
"""
gen_fixtures.py - builds the tiny DeepSeek checkpoints in tests/fixtures/ and
their reference outputs, computed by Hugging Face `transformers` (PyTorch).

    pip install torch transformers safetensors numpy
    python3 tools/gen_fixtures.py            # rewrites tests/fixtures/tiny-*

Each fixture folder holds a Hugging Face model folder (config.json +
safetensors, written by `save_pretrained` except for the FP8 and MTP tensors,
which have no HF writer) and reference outputs:

    ref.json              tokens, prompt, greedy continuation, shapes, provenance
    ref_logits.f32        HF logits of one full forward pass          [T, V]
    ref_incr_logits.f32   HF logits fed one token at a time (DynamicCache) [T, V]
    ref_mtp_logits.f32    MTP logits (reference below)                [T-1, V]

V3.2 (tiny-v32, DeepseekV32ForCausalLM): index_topk is smaller than the
sequence, so later queries attend to a sparse set; the script recomputes the
indexer's scores from the layer inputs (hooks) and refuses a fixture where the
index_topk-th and the next score of any query are closer than a margin
(selection there would depend on rounding, not on the model).

Reference numerics: the reference model is loaded in float32 from exactly the
stored weights (BF16/F16 upcast; FP8 dequantized as fp8 * scale_inv per
128x128 block, DeepSeek's weight_dequant in fp32), eager attention. Our C code
also computes in float32, so the two differ only by summation order.

MTP reference (vLLM deepseek_mtp.py semantics, written here with HF modules):
    row t (t = 0..T-2):  x_t = eh_proj(cat[enorm(embed(tok[t+1])), hnorm(h_t)])
    h_t = final-normed hidden state of the main model at position t
    x = DecoderLayer_L(x) over rows 0..T-2 (causal, positions 0..T-2)
    logits_t = shared_head.head(shared_head.norm(x_t))  -> predicts tok[t+2]
We do NOT zero the embedding at position 0 (vLLM does, as an inference-time
shortcut); DeepSeek's training objective (V3 paper eq. 21-25) uses the token
embedding at every position, and so do we.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import (DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM,
                          DeepseekV32Config, DeepseekV32ForCausalLM)
from transformers.cache_utils import DynamicCache

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
FP8_MAX = 448.0
BLOCK = 128


def base_v3(**kw):
    c = dict(
        vocab_size=320, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        first_k_dense_replace=1, moe_layer_freq=1, n_routed_experts=16, n_shared_experts=1,
        num_experts_per_tok=4, n_group=4, topk_group=2, topk_method="noaux_tc", scoring_func="sigmoid",
        norm_topk_prob=True, routed_scaling_factor=2.5, num_nextn_predict_layers=1,
        rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=163840,
        rope_scaling=dict(type="yarn", factor=40.0, original_max_position_embeddings=4096,
                          beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
        tie_word_embeddings=False, attention_bias=False, hidden_act="silu",
        bos_token_id=0, eos_token_id=1, rope_interleave=True,
    )
    c.update(kw)
    return c


SEED_V32 = int(os.environ.get("SEED_V32", "4"))
SEED_V32_FP8 = int(os.environ.get("SEED_V32_FP8", "2"))  # one whose top-k boundaries all have clear margins

VARIANTS = {
    # V3: q LoRA, noaux_tc (sigmoid + bias + top-2-sum groups), BF16, MTP layer
    "tiny-v3": dict(arch="v3", dtype="bf16", mtp=True, cfg=base_v3()),
    # V3 with FP8 linear weights in the real 128x128 block format; dims chosen
    # so most matrices have partial edge blocks (e.g. 288 rows = 2.25 blocks)
    "tiny-v3-fp8": dict(arch="v3", dtype="fp8", mtp=True, cfg=base_v3(
        vocab_size=256, hidden_size=192, intermediate_size=200, moe_intermediate_size=72,
        num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=6, q_lora_rank=136,
        kv_lora_rank=72, qk_nope_head_dim=24, qk_rope_head_dim=16, v_head_dim=24,
        n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1)),
    # V2-Lite: no q LoRA, softmax greedy routing, 2 shared experts, F16 storage
    "tiny-v2-lite": dict(arch="v2", dtype="f16", mtp=False, cfg=base_v3(
        q_lora_rank=None, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3,
        n_group=1, topk_group=1, topk_method="greedy", scoring_func="softmax", norm_topk_prob=False,
        routed_scaling_factor=1.0, num_nextn_predict_layers=0, bos_token_id=100, eos_token_id=101,
        rope_scaling=dict(type="yarn", factor=40.0, original_max_position_embeddings=4096,
                          beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707))),
    # V2: q LoRA, group-limited greedy (group score = max), x16 scaling, F32 storage
    "tiny-v2": dict(arch="v2", dtype="f32", mtp=False, cfg=base_v3(
        n_routed_experts=16, n_shared_experts=2, num_experts_per_tok=3, n_group=4, topk_group=2,
        topk_method="group_limited_greedy", scoring_func="softmax", norm_topk_prob=False,
        routed_scaling_factor=16.0, num_nextn_predict_layers=0, bos_token_id=100, eos_token_id=101,
        rope_scaling=dict(type="yarn", factor=40.0, original_max_position_embeddings=4096,
                          beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707))),
    # V3.2: V3 + the lightning indexer; 24 tokens against index_topk 8; tiny-chat's tokenizer.json
    # (no chat template: a deepseek_v32 folder is chatted with V3.1's format)
    "tiny-v32": dict(arch="v32", dtype="bf16", mtp=True, T=24, seed=SEED_V32, tokenizer="tiny-chat", cfg=base_v3(
        vocab_size=576, index_topk=8, index_n_heads=8, index_head_dim=16)),
    # V3.2-Exp's FP8 format: e4m3 weights (the indexer's wq_b / wk too) with power-of-two
    # ("ue8m0") fp32 block scales, partial edge blocks; weights_proj BF16
    "tiny-v32-fp8": dict(arch="v32", dtype="fp8", scale_fmt="ue8m0", mtp=True, T=24, seed=SEED_V32_FP8, cfg=base_v3(
        vocab_size=256, hidden_size=192, intermediate_size=200, moe_intermediate_size=72,
        num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=6, q_lora_rank=136,
        kv_lora_rank=72, qk_nope_head_dim=24, qk_rope_head_dim=16, v_head_dim=24,
        n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
        index_topk=8, index_n_heads=8, index_head_dim=32)),
}

T = 14          # tokens in the logits / incremental references
PROMPT = 5      # prompt length of the greedy-generation reference
N_GEN = 10      # greedy tokens


def make_config(arch, cfg):
    cfg = dict(cfg)
    if arch == "v2":
        cfg.pop("rope_interleave", None)
        cfg.pop("num_nextn_predict_layers", None)
        c = DeepseekV2Config(**cfg)
        c.architectures = ["DeepseekV2ForCausalLM"]
    elif arch == "v32":
        c = DeepseekV32Config(**cfg)
        c.architectures = ["DeepseekV32ForCausalLM"]
    else:
        c = DeepseekV3Config(**cfg)
        c.architectures = ["DeepseekV3ForCausalLM"]
    c._attn_implementation = "eager"
    return c


def init_weights(model, gen):
    """Well-conditioned random init: std 1/sqrt(fan_in) for matrices, norms
    around 1, a random e_score_correction_bias (with negatives, to exercise
    the -inf group mask), larger router weights so routing has clear margins."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1]
                std = 1.0 / fan_in ** 0.5
                if "gate.weight" in name:
                    std *= 4.0
                if "embed_tokens" in name:
                    std = 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:
                b.copy_(0.3 * torch.randn(b.shape, generator=gen) - 0.1)


def quantize_fp8(w, ue8m0=False):
    """[out, in] float -> (fp8 e4m3 tensor, fp32 scale_inv [ceil(out/128), ceil(in/128)]).
    ue8m0: power-of-two scales (V3.1/V3.2 "scale_fmt": "ue8m0"), rounded up."""
    out, inn = w.shape
    sr, sc = (out + BLOCK - 1) // BLOCK, (inn + BLOCK - 1) // BLOCK
    q = torch.empty(out, inn, dtype=torch.float8_e4m3fn)
    s = torch.empty(sr, sc, dtype=torch.float32)
    for i in range(sr):
        for j in range(sc):
            blk = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK].float()
            scale = max(blk.abs().max().item(), 1e-12) / FP8_MAX
            if ue8m0:
                scale = 2.0 ** np.ceil(np.log2(scale))
            s[i, j] = scale
            q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = (blk / scale).to(torch.float8_e4m3fn)
    return q, s


def dequantize_fp8(q, s):
    out, inn = q.shape
    full = s.repeat_interleave(BLOCK, 0)[:out].repeat_interleave(BLOCK, 1)[:, :inn]
    return q.float() * full


def is_fp8_linear(name):
    if not name.endswith(".weight") or ".mlp.gate.weight" in name:
        return False
    if name.endswith("indexer.wq_b.weight") or name.endswith("indexer.wk.weight"):
        return True   # V3.2: FP8 like the official checkpoint; its weights_proj stays BF16
    return any(k in name for k in ("_proj.weight",)) and "eh_proj" not in name and "weights_proj" not in name


STORE = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def mtp_tensors(cfg, L, gen):
    """Random MTP-module tensors named as in V3 checkpoints (layer index L)."""
    D, V = cfg["hidden_size"], cfg["vocab_size"]
    H, dn, dr, dv = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    rq, rkv, E, F, Es = cfg["q_lora_rank"], cfg["kv_lora_rank"], cfg["n_routed_experts"], cfg["moe_intermediate_size"], cfg["n_shared_experts"]

    def mat(o, i, scale=1.0):
        return torch.randn(o, i, generator=gen) * scale / i ** 0.5

    def vec(n):
        return 1.0 + 0.1 * torch.randn(n, generator=gen)

    p = f"model.layers.{L}."
    t = {
        p + "embed_tokens.weight": torch.randn(V, D, generator=gen),
        p + "enorm.weight": vec(D), p + "hnorm.weight": vec(D),
        p + "eh_proj.weight": mat(D, 2 * D),
        p + "shared_head.norm.weight": vec(D), p + "shared_head.head.weight": mat(V, D),
        p + "input_layernorm.weight": vec(D), p + "post_attention_layernorm.weight": vec(D),
        p + "self_attn.q_a_proj.weight": mat(rq, D), p + "self_attn.q_a_layernorm.weight": vec(rq),
        p + "self_attn.q_b_proj.weight": mat(H * (dn + dr), rq),
        p + "self_attn.kv_a_proj_with_mqa.weight": mat(rkv + dr, D), p + "self_attn.kv_a_layernorm.weight": vec(rkv),
        p + "self_attn.kv_b_proj.weight": mat(H * (dn + dv), rkv), p + "self_attn.o_proj.weight": mat(D, H * dv),
        p + "mlp.gate.weight": mat(E, D, 4.0),
        p + "mlp.gate.e_score_correction_bias": 0.3 * torch.randn(E, generator=gen) - 0.1,
        p + "mlp.shared_experts.gate_proj.weight": mat(Es * F, D), p + "mlp.shared_experts.up_proj.weight": mat(Es * F, D),
        p + "mlp.shared_experts.down_proj.weight": mat(D, Es * F),
    }
    if cfg.get("index_topk"):   # V3.2: the MTP layer's attention has its own indexer
        hi, di = cfg["index_n_heads"], cfg["index_head_dim"]
        t[p + "self_attn.indexer.wq_b.weight"] = mat(hi * di, rq)
        t[p + "self_attn.indexer.wk.weight"] = mat(di, D)
        t[p + "self_attn.indexer.k_norm.weight"] = vec(di)
        t[p + "self_attn.indexer.k_norm.bias"] = 0.1 * torch.randn(di, generator=gen)
        t[p + "self_attn.indexer.weights_proj.weight"] = mat(hi, D)
    for e in range(E):
        t[p + f"mlp.experts.{e}.gate_proj.weight"] = mat(F, D)
        t[p + f"mlp.experts.{e}.up_proj.weight"] = mat(F, D)
        t[p + f"mlp.experts.{e}.down_proj.weight"] = mat(D, F)
    return t


def mtp_reference(config, ref_model, weights, L, tokens, margins=None):
    """MTP logits [T-1, V] with HF modules (see module docstring). V3.2: the
    layer is transformers' DeepseekV32DecoderLayer (with its indexer; its
    top-k margins go to `margins`)."""
    import copy
    if config.model_type == "deepseek_v32":
        from transformers.models.deepseek_v32.modeling_deepseek_v32 import (
            DeepseekV32DecoderLayer as DecoderLayer, DeepseekV32RMSNorm as DeepseekV3RMSNorm,
            DeepseekV32RotaryEmbedding as DeepseekV3RotaryEmbedding)
        config = copy.deepcopy(config)   # the MTP layer (index L) is MoE
        config.mlp_layer_types = list(config.mlp_layer_types) + ["sparse"]
    else:
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
            DeepseekV3DecoderLayer as DecoderLayer, DeepseekV3RMSNorm, DeepseekV3RotaryEmbedding)
    p = f"model.layers.{L}."
    D = config.hidden_size
    E = config.n_routed_experts
    layer = DecoderLayer(config, L).float().eval()
    hook = None
    if margins is not None:
        hook = layer.self_attn.indexer.register_forward_hook(index_margin_hook(margins), with_kwargs=True)
    sd = {}
    for k, v in weights.items():
        if k.startswith(p) and not any(s in k for s in ("embed_tokens", "enorm", "hnorm", "eh_proj", "shared_head", "mlp.experts.")):
            sd[k[len(p):]] = v.float()
    sd["mlp.experts.gate_up_proj"] = torch.stack([torch.cat([weights[p + f"mlp.experts.{e}.gate_proj.weight"],
                                                            weights[p + f"mlp.experts.{e}.up_proj.weight"]], 0)
                                                 for e in range(E)]).float()
    sd["mlp.experts.down_proj"] = torch.stack([weights[p + f"mlp.experts.{e}.down_proj.weight"] for e in range(E)]).float()
    missing, unexpected = layer.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all("e_score_correction_bias" not in m for m in missing)
    assert not missing, missing
    enorm = DeepseekV3RMSNorm(D, config.rms_norm_eps)
    hnorm = DeepseekV3RMSNorm(D, config.rms_norm_eps)
    hd_norm = DeepseekV3RMSNorm(D, config.rms_norm_eps)
    enorm.weight.data = weights[p + "enorm.weight"].float()
    hnorm.weight.data = weights[p + "hnorm.weight"].float()
    hd_norm.weight.data = weights[p + "shared_head.norm.weight"].float()
    eh = weights[p + "eh_proj.weight"].float()
    emb = weights[p + "embed_tokens.weight"].float()
    head = weights[p + "shared_head.head.weight"].float()
    with torch.no_grad():
        out = ref_model(torch.tensor([tokens]), output_hidden_states=True)
        h = ref_model.model.norm(out.hidden_states[-1]) if False else out.hidden_states[-1]
        n = len(tokens) - 1
        x = torch.cat([enorm(emb[torch.tensor(tokens[1:])]), hnorm(h[0, :n])], -1) @ eh.T
        x = x[None]
        pos = torch.arange(n)[None]
        rot = DeepseekV3RotaryEmbedding(config)
        cos_sin = rot(x, pos)
        mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
        y = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
        if isinstance(y, tuple):
            y = y[0]
        if hook:
            hook.remove()
        return (hd_norm(y[0]) @ head.T).numpy()


def final_hidden_is_normed(model, tokens):
    """transformers returns hidden_states[-1] after the final norm; check it."""
    with torch.no_grad():
        out = model(torch.tensor([tokens]), output_hidden_states=True)
        logits2 = out.hidden_states[-1] @ model.lm_head.weight.T
        return torch.allclose(logits2, out.logits, atol=1e-4, rtol=1e-4)


INDEX_MARGIN = 1e-3   # relative gap required at every query's top-k boundary


def index_margin_hook(worst):
    """A forward hook for a V3.2 indexer: recomputes its scores from the
    inputs and lowers worst[0] to the smallest relative gap between the
    index_topk-th and the next score of any query."""
    from transformers.models.deepseek_v32.modeling_deepseek_v32 import apply_rotary_pos_emb

    def hook(mod, args, kwargs, out):
        x = kwargs.get("hidden_states", args[0] if args else None)
        qr = kwargs.get("q_resid", args[1] if len(args) > 1 else None)
        cos, sin = kwargs.get("position_embeddings", args[2] if len(args) > 2 else None)
        B, S, _ = x.shape
        q = mod.wq_b(qr).view(B, S, mod.n_heads, mod.head_dim).double()
        k = mod.k_norm(mod.wk(x)).unsqueeze(2).double()
        r = mod.qk_rope_head_dim
        qr_, kr_ = apply_rotary_pos_emb(q[..., :r], k[..., :r], cos.double(), sin.double(), unsqueeze_dim=2)
        q = torch.cat([qr_, q[..., r:]], -1)
        k = torch.cat([kr_, k[..., r:]], -1).squeeze(2)
        sc = torch.relu(torch.matmul(q, k.transpose(-1, -2).unsqueeze(1)) * mod.softmax_scale)
        w = mod.weights_proj(x.to(mod.weights_proj.weight.dtype)).double() * mod.n_heads ** -0.5
        idx = torch.matmul(w.unsqueeze(-2), sc).squeeze(-2)[0]   # [S, S]
        K = mod.index_topk
        for t in range(K, S):
            v = torch.sort(idx[t, :t + 1], descending=True).values
            gap = float(v[K - 1] - v[K]) / max(1.0, float(v[K - 1].abs()))
            worst[0] = min(worst[0], gap)
    return hook


def check_index_margins(model, tokens):
    """The smallest top-k margin of every V3.2 indexer in the full forward."""
    worst = [float("inf")]
    hook = index_margin_hook(worst)
    hs = [l.self_attn.indexer.register_forward_hook(hook, with_kwargs=True) for l in model.model.layers]
    with torch.no_grad():
        model(torch.tensor([tokens]))
    for h in hs:
        h.remove()
    return worst[0]


def build(name, spec, seed):
    d = os.path.join(ROOT, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = make_config(spec["arch"], spec["cfg"])
    cls = {"v3": DeepseekV3ForCausalLM, "v32": DeepseekV32ForCausalLM}.get(spec["arch"], DeepseekV2ForCausalLM)
    model = cls(config).float().eval()
    init_weights(model, gen)
    store = STORE.get(spec["dtype"], torch.bfloat16)
    model.to(store).save_pretrained(d, safe_serialization=True)
    path = os.path.join(d, "model.safetensors")
    weights = load_file(path)
    L = config.num_hidden_layers
    if spec["mtp"]:
        for k, v in mtp_tensors(spec["cfg"], L, gen).items():
            weights[k] = v.to(torch.float32 if "e_score_correction_bias" in k else store)
    deq = {}
    if spec["dtype"] == "fp8":
        out = {}
        for k, v in weights.items():
            if is_fp8_linear(k):
                q, s = quantize_fp8(v.float(), spec.get("scale_fmt") == "ue8m0")
                out[k] = q
                out[k + "_scale_inv"] = s
                deq[k] = dequantize_fp8(q, s)
            else:
                out[k] = v
                deq[k] = v.float()
        weights = out
        cfgj = json.load(open(os.path.join(d, "config.json")))
        cfgj["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                       "weight_block_size": [BLOCK, BLOCK]}
        if spec.get("scale_fmt"):
            cfgj["quantization_config"]["scale_fmt"] = spec["scale_fmt"]
        json.dump(cfgj, open(os.path.join(d, "config.json"), "w"), indent=2)
    else:
        deq = {k: v.float() for k, v in weights.items()}
    save_file(weights, path, metadata={"format": "pt"})

    # reference model in float32 from exactly the stored values
    tmp = d + ".ref-tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    shutil.copy(os.path.join(d, "config.json"), tmp)
    cj = json.load(open(os.path.join(tmp, "config.json")))
    cj.pop("quantization_config", None)
    json.dump(cj, open(os.path.join(tmp, "config.json"), "w"))
    save_file({k: v for k, v in deq.items() if not k.startswith(f"model.layers.{L}.")},
              os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    ref = cls.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager").eval()
    shutil.rmtree(tmp)

    rng = np.random.default_rng(seed)
    V = config.vocab_size
    T = spec.get("T", globals()["T"])
    tokens = [int(config.bos_token_id)] + [int(x) for x in rng.integers(2, V, T - 1)]
    with torch.no_grad():
        full = ref(torch.tensor([tokens])).logits[0].numpy().astype(np.float32)
        cache = DynamicCache(config=ref.config)
        incr = []
        for t in range(T):
            o = ref(torch.tensor([[tokens[t]]]), past_key_values=cache, use_cache=True,
                    position_ids=torch.tensor([[t]]))
            incr.append(o.logits[0, -1].numpy())
        incr = np.stack(incr).astype(np.float32)
        prompt = tokens[:PROMPT]
        # explicit attention mask: generate() would otherwise treat pad_token_id
        # look-alikes (BOS 0 here) as padding
        g = ref.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=N_GEN, do_sample=False, min_new_tokens=N_GEN,
                         eos_token_id=None, pad_token_id=V - 1)
        greedy = [int(x) for x in g[0, PROMPT:]]
    full.tofile(os.path.join(d, "ref_logits.f32"))
    incr.tofile(os.path.join(d, "ref_incr_logits.f32"))
    meta = {
        "generator": "python3 tools/gen_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "seed": seed, "storage_dtype": spec["dtype"], "tokens": tokens, "vocab_size": V,
        "prompt": prompt, "greedy": greedy,
        "ref_logits": {"file": "ref_logits.f32", "shape": [T, V], "what": "HF fp32 full forward"},
        "ref_incr_logits": {"file": "ref_incr_logits.f32", "shape": [T, V], "what": "HF fp32 one token at a time, DynamicCache"},
        "incr_vs_full_maxdiff": float(np.abs(full - incr).max()),
    }
    if spec["arch"] == "v32":
        meta["index_topk_min_relative_gap"] = check_index_margins(ref, tokens)
        assert meta["index_topk_min_relative_gap"] > INDEX_MARGIN, meta["index_topk_min_relative_gap"]
    if spec["mtp"]:
        assert final_hidden_is_normed(ref, tokens)
        mw = [float("inf")] if spec["arch"] == "v32" else None
        mtp = mtp_reference(config, ref, {k: deq[k] for k in deq}, L, tokens, mw).astype(np.float32)
        if mw:
            meta["mtp_index_topk_min_relative_gap"] = mw[0]
            assert mw[0] > INDEX_MARGIN, mw[0]
        mtp.tofile(os.path.join(d, "ref_mtp_logits.f32"))
        meta["ref_mtp_logits"] = {"file": "ref_mtp_logits.f32", "shape": [T - 1, V],
                                  "what": "MTP module, vLLM semantics without position-0 zeroing"}
    json.dump(meta, open(os.path.join(d, "ref.json"), "w"), indent=1)
    if spec.get("tokenizer"):
        shutil.copy(os.path.join(ROOT, spec["tokenizer"], "tokenizer.json"), d)
    sz = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: {sz / 1e6:.2f} MB, tokens {tokens}, greedy {greedy}, incr-vs-full {meta['incr_vs_full_maxdiff']:.2e}")


def main():
    names = sys.argv[1:] or list(VARIANTS)
    for i, n in enumerate(VARIANTS):
        if n in names:
            build(n, VARIANTS[n], VARIANTS[n].get("seed", 1234 + i))


if __name__ == "__main__":
    main()
