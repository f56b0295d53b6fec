#!/usr/bin/env python3
"""
gen_v4_mtp_fixtures.py - DeepSeek-V4 checkpoints with their MTP layer
(`mtp.0.*`, the release's names) and reference MTP logits:

  tests/fixtures/tiny-v4-mtp      tiny-v4-official (tiny-v4's weights, release
      names, BF16) plus a third shard with a random `mtp.0.*` block; config:
      num_nextn_predict_layers 1 and the release's `compress_ratios` listing
      L + 1 ratios, the last (the MTP layer's) 4: a CSA layer, so the MTP
      block runs the compressor and the indexer too (V4-Flash / -Pro list 0
      there: sliding, the subset of CSA without compressed entries).
  tests/fixtures/tiny-v4-mtp-fp8  the same on tiny-v4-fp8 (FP8 e4m3 ue8m0
      32x32 blocks, FP4 e2m1 experts), the MTP block quantized the same way
      (its e_proj / h_proj FP8 too, as the release stores them).

transformers has no V4 MTP. The reference follows the semantics of
DeepSeek's own inference code (DeepSeek-V4-Flash inference/model.py,
class MTPBlock(Block); written here from its description, not copied):

    h   = the main model's residual streams after its last layer, before the
          final hyper-connection collapse                      [T, hc, D]
    e   = enorm(embed(next_ids))           (the main model's embedding)
    x   = e_proj(e)[:, None] + h_proj(hnorm(h))                [T, hc, D]
    x   = Block_{L}(x)                      (an ordinary V4 layer: hyper-
          connections, its attention kind from compress_ratios[L], MoE
          routed by score - only layer_id < n_hash_layers hashes)
    logits = head(norm(hc_head_mtp(x)))    (the main model's head; the MTP
          block's own norm and hc_head_fn / base / scale)

Row t pairs h_t with token t+1 and predicts token t+2, at MTP position t
(the official code runs the block at the main model's start_pos). The Block
is transformers 5.x's DeepseekV4DecoderLayer (the same math the main model
is checked with): a one-layer DeepseekV4ForCausalLM holds the MTP layer as
its layer 0, with the MTP norm / hc_head and the shared embedding and head,
and a pre-hook swaps the layer's input streams for x. Positions, masks,
rope and the DynamicCache are then transformers' own.

    python3 tools/gen_v4_mtp_fixtures.py    # after gen_v4_fixtures.py and gen_v4_release_fixtures.py

Each folder gets ref.json (tokens, prompt, greedy of the main model),
ref_logits.f32 / ref_incr_logits.f32 (copied from its source: the main
model is unchanged) and ref_mtp_logits.f32 [T-1, V] (full sequence) and
ref_mtp_incr_logits.f32 [T-1, V] (one MTP row at a time through a cache).
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import DeepseekV4ForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mv4

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_v4_fixtures as g4  # noqa: E402  (index_gap_hook, INDEX_MARGIN)
import gen_v4_release_fixtures as gr  # noqa: E402  (quant_fp8, quant_fp4, FP8_SUFFIXES, FP4_VALUES, BLOCK)

ROOT = g4.ROOT
MTP_KIND = "compressed_sparse_attention"
MTP_RATIO = 4
SEED = int(os.environ.get("SEED_V4_MTP", "7"))


def shards(folder):
    idx = json.load(open(os.path.join(folder, "model.safetensors.index.json")))["weight_map"]
    out = {}
    for f in sorted(set(idx.values())):
        out.update(load_file(os.path.join(folder, f)))
    return out


def random_mtp(main, L, D, hc, gen):
    """mtp.0.*: layer L-1's names and shapes (a CSA + score-routed MoE layer
    in tiny-v4), drawn as gen_v4_fixtures.init_weights draws, plus the MTP
    block's own tensors"""
    out = {}
    pre = f"layers.{L - 1}."
    for n, t in sorted(main.items()):
        if not n.startswith(pre) or n.endswith(".scale") and t.dtype == torch.float8_e8m0fnu:
            continue
        k = n[len(pre):]
        shape = t.shape if t.dtype != torch.int8 else (t.shape[0], t.shape[1] * 2)  # FP4: [out, in/2] packed
        if k.endswith("compressor.ape"):
            v = torch.randn(shape, generator=gen) * 0.5
        elif k.endswith("_fn"):
            v = torch.randn(shape, generator=gen) * 0.05
        elif k.endswith("attn_sink"):
            v = torch.randn(shape, generator=gen)
        elif k.endswith("_base"):
            v = torch.randn(shape, generator=gen) * 0.5
        elif k.endswith("_scale"):
            v = 1.0 + 0.3 * torch.randn(shape, generator=gen)
        elif k == "ffn.gate.bias":
            v = torch.randn(shape, generator=gen) * 0.1
        elif len(shape) >= 2:
            v = torch.randn(shape, generator=gen) / shape[-1] ** 0.5
            if k == "ffn.gate.weight":
                v = v * 3.0
        else:
            v = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        out["mtp.0." + k] = v
    for k in ("e_proj.weight", "h_proj.weight"):
        out["mtp.0." + k] = torch.randn(D, D, generator=gen) / D ** 0.5
    for k in ("enorm.weight", "hnorm.weight", "norm.weight"):
        out["mtp.0." + k] = 1.0 + 0.1 * torch.randn(D, generator=gen)
    out["mtp.0.hc_head_fn"] = torch.randn(hc, hc * D, generator=gen) * 0.05
    out["mtp.0.hc_head_base"] = torch.randn(hc, generator=gen) * 0.5
    out["mtp.0.hc_head_scale"] = 1.0 + 0.3 * torch.randn(1, generator=gen)
    return {n: v.to(torch.bfloat16) for n, v in out.items()}


def dequant(tensors):
    """release tensors (FP8 + .scale, FP4 I8 + .scale, others) -> float32, scales dropped"""
    out = {}
    for n, t in tensors.items():
        if n.endswith(".scale") and t.dtype == torch.float8_e8m0fnu:
            continue
        s = tensors.get(n[: -len(".weight")] + ".scale") if n.endswith(".weight") else None
        if s is None or s.dtype != torch.float8_e8m0fnu:
            out[n] = t.float()
        elif t.dtype == torch.float8_e4m3fn:
            R, C = t.shape
            sf = s.float().repeat_interleave(gr.BLOCK, 0)[:R].repeat_interleave(gr.BLOCK, 1)[:, :C]
            out[n] = t.float() * sf
        else:
            assert t.dtype == torch.int8, (n, t.dtype)
            u = t.view(torch.uint8).long()
            idx = torch.stack([u & 15, u >> 4], -1).reshape(t.shape[0], -1)
            out[n] = gr.FP4_VALUES[idx] * s.float().repeat_interleave(gr.FP4_GROUP, 1)
    return out


def quantize(mtp):
    """the release's formats for the MTP block: FP8 where a layer has it plus e_proj / h_proj, FP4 experts"""
    q = {}
    for n, t in mtp.items():
        stem = n[: -len(".weight")] if n.endswith(".weight") else None
        if stem and (n.endswith(gr.FP8_SUFFIXES) or n.endswith(("e_proj.weight", "h_proj.weight"))):
            w, s, _ = gr.quant_fp8(t.float())
            q[n], q[stem + ".scale"] = w, s
        elif stem and gr.is_expert(n):
            w, s, _ = gr.quant_fp4(t.float())
            q[n], q[stem + ".scale"] = w, s
        else:
            q[n] = t
    return q


def hf_name(official, L):
    """release name of the main model -> transformers' saved name (tiny-v4's)"""
    top = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "hc_head_fn": "model.hc_head.hc_fn", "hc_head_base": "model.hc_head.hc_base",
           "hc_head_scale": "model.hc_head.hc_scale", "head.weight": "head.weight"}
    if official in top:
        return top[official]
    n = "model." + official
    if n.endswith(".attn.kv_norm.weight"):
        n = n[: -len(".attn.kv_norm.weight")] + ".attn.norm.weight"
    return n


def load_hf(folder, cfg, tensors):
    """writes transformers-named tensors + cfg into folder and loads it (fp32, eager)"""
    os.makedirs(folder, exist_ok=True)
    save_file({n: t.contiguous() for n, t in tensors.items()}, os.path.join(folder, "model.safetensors"),
              metadata={"format": "pt"})
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"), indent=2)
    m, info = DeepseekV4ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                    output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return m.eval()


def rms(x, w, eps):
    x = x.float()
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * w.float()


def mtp_reference(main_off, mtp_f32, cfg, tokens, tmp, main_ref):
    """(full [T-1, V], incremental [T-1, V], the smallest index top-k margin);
    main_ref: the source folder's reference logits, which the main model here
    must reproduce (the names and the dequantization are right)"""
    L, D, hc, eps = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["hc_mult"], cfg["rms_norm_eps"]
    main_cfg = {k: v for k, v in cfg.items() if k not in ("compress_ratios", "quantization_config")}
    main_cfg["num_nextn_predict_layers"] = 0
    main = load_hf(os.path.join(tmp, "main"), main_cfg, {hf_name(n, L): t for n, t in main_off.items()})
    # the main model's streams after its last layer (the hc_head's input)
    cap = {}
    hk = main.model.hc_head.register_forward_pre_hook(lambda mod, args: cap.__setitem__("h", args[0].detach()))
    ids = torch.tensor([tokens])
    with torch.no_grad():
        lg = main(ids, use_cache=False).logits[0].numpy()
    hk.remove()
    err = float(np.abs(lg - main_ref.reshape(lg.shape)).max())
    assert err < 1e-5, f"the main model does not reproduce its reference logits: max diff {err:.2e}"
    h = cap["h"][:, :-1]                                          # [1, T-1, hc, D]: rows 0 .. T-2
    nxt = ids[:, 1:]                                              # tokens 1 .. T-1
    # the MTP block as a one-layer model: its layer 0, norm, hc_head; the shared embedding and head
    one = dict(main_cfg, num_hidden_layers=1, layer_types=[MTP_KIND], mlp_layer_types=["moe"])
    t1 = {"model.embed_tokens.weight": main_off["embed.weight"], "head.weight": main_off["head.weight"],
          "model.norm.weight": mtp_f32["mtp.0.norm.weight"], "model.hc_head.hc_fn": mtp_f32["mtp.0.hc_head_fn"],
          "model.hc_head.hc_base": mtp_f32["mtp.0.hc_head_base"],
          "model.hc_head.hc_scale": mtp_f32["mtp.0.hc_head_scale"]}
    own = ("e_proj.weight", "h_proj.weight", "enorm.weight", "hnorm.weight", "norm.weight", "hc_head_fn",
           "hc_head_base", "hc_head_scale")
    for n, t in mtp_f32.items():
        k = n[len("mtp.0."):]
        if k not in own:
            t1[hf_name("layers.0." + k, 1)] = t
    blk = load_hf(os.path.join(tmp, "mtp"), one, t1)
    with torch.no_grad():
        e = rms(blk.model.embed_tokens(nxt), mtp_f32["mtp.0.enorm.weight"], eps)
        x = (e @ mtp_f32["mtp.0.e_proj.weight"].float().T).unsqueeze(2) + \
            rms(h, mtp_f32["mtp.0.hnorm.weight"], eps) @ mtp_f32["mtp.0.h_proj.weight"].float().T
    feed = {}

    def swap(mod, args, kwargs):
        return (feed["x"],) + tuple(args[1:]), kwargs

    hk = blk.model.layers[0].register_forward_pre_hook(swap, with_kwargs=True)
    worst = [float("inf")]
    g4.mod_topk[0] = cfg["index_topk"]
    gh = [m.register_forward_hook(g4.index_gap_hook(worst, MTP_RATIO))
          for m in blk.modules() if isinstance(m, mv4.DeepseekV4IndexerScorer)]
    n = nxt.shape[1]
    with torch.no_grad():
        feed["x"] = x
        full = blk(nxt, use_cache=False, position_ids=torch.arange(n)[None]).logits[0].numpy().astype(np.float32)
        for g in gh:
            g.remove()
        cache = DynamicCache(config=blk.config)
        incr = []
        for t in range(n):
            feed["x"] = x[:, t:t + 1]
            o = blk(nxt[:, t:t + 1], cache=cache, use_cache=True, position_ids=torch.tensor([[t]]))
            incr.append(o.logits[0, -1].numpy())
        incr = np.stack(incr).astype(np.float32)
    hk.remove()
    return full, incr, worst[0]


def build(name, src_name, quant, seed):
    src = os.path.join(ROOT, src_name)
    d = os.path.join(ROOT, name)
    tmp = os.path.join(ROOT, "." + name + "-tmp")
    for p in (d, tmp):
        if os.path.isdir(p):
            shutil.rmtree(p)
    os.makedirs(d)
    cfg = json.load(open(os.path.join(src, "config.json")))
    L, D, hc = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["hc_mult"]
    assert cfg["layer_types"][L - 1] == MTP_KIND and cfg["mlp_layer_types"][L - 1] == "moe"
    main_q = shards(src)
    gen = torch.Generator().manual_seed(seed)
    mtp = random_mtp(main_q, L, D, hc, gen)
    if quant:
        mtp = quantize(mtp)
    main_f32 = {n: t for n, t in dequant(main_q).items()
                if not (n.endswith(".ffn.gate.bias") and cfg["mlp_layer_types"][int(n.split(".")[1])] == "hash_moe")}
    src_ref = json.load(open(os.path.join(src, "ref.json")))
    tokens = src_ref["tokens"]
    main_ref = np.fromfile(os.path.join(src, "ref_logits.f32"), dtype=np.float32)
    full, incr, gap = mtp_reference(main_f32, dequant(mtp), cfg, tokens, tmp, main_ref)
    shutil.rmtree(tmp)
    if gap <= g4.INDEX_MARGIN:
        print(f"{name} seed {seed}: MTP index top-k margin {gap:.2e}, trying the next seed")
        shutil.rmtree(d)
        return False
    # the folder: the source's shards as they are, the MTP block in a third file
    idx = json.load(open(os.path.join(src, "model.safetensors.index.json")))
    for f in sorted(set(idx["weight_map"].values())):
        shutil.copy(os.path.join(src, f), d)
    save_file({n: t.contiguous() for n, t in mtp.items()}, os.path.join(d, "mtp.safetensors"), metadata={"format": "pt"})
    for n in mtp:
        idx["weight_map"][n] = "mtp.safetensors"
    idx["metadata"]["total_size"] += sum(t.numel() * t.element_size() for t in mtp.values())
    json.dump(idx, open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=1)
    # the release's config form: compress_ratios over L + 1 layers (the last the MTP block's)
    rates = cfg["compress_rates"]
    ratio = {"sliding_attention": 0, "compressed_sparse_attention": rates["compressed_sparse_attention"],
             "heavily_compressed_attention": rates["heavily_compressed_attention"]}
    out_cfg = {k: v for k, v in cfg.items() if k != "layer_types"}
    out_cfg["compress_ratios"] = [ratio[k] for k in cfg["layer_types"]] + [MTP_RATIO]
    out_cfg["num_nextn_predict_layers"] = 1
    json.dump(out_cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "generation_config.json", "ref_logits.f32", "ref_incr_logits.f32"):
        shutil.copy(os.path.join(src, f), d)
    full.tofile(os.path.join(d, "ref_mtp_logits.f32"))
    incr.tofile(os.path.join(d, "ref_mtp_incr_logits.f32"))
    meta = {k: src_ref[k] for k in ("tokens", "vocab_size", "prompt", "greedy")}
    meta.update({
        "generator": "python3 tools/gen_v4_mtp_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "what": f"{src_name} plus a random MTP block (mtp.0.*, {'FP8/FP4 as the release' if quant else 'BF16'}, "
                f"a CSA layer); the main model's references are {src_name}'s",
        "mtp_seed": seed,
        "ref_mtp_logits": {"file": "ref_mtp_logits.f32", "shape": [len(tokens) - 1, cfg["vocab_size"]],
                           "what": "MTP rows (h_t, token t+1) -> token t+2, full sequence, fp32"},
        "ref_mtp_incr_logits": {"file": "ref_mtp_incr_logits.f32", "shape": [len(tokens) - 1, cfg["vocab_size"]],
                                "what": "the same, one MTP row at a time (DynamicCache)"},
        "mtp_incr_vs_full_maxdiff": float(np.abs(full - incr).max()),
        "mtp_index_topk_min_relative_gap": gap,
    })
    json.dump(meta, open(os.path.join(d, "ref.json"), "w"), indent=1)
    sz = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: {len(mtp)} MTP tensors, {sz / 1e6:.2f} MB, incr-vs-full {meta['mtp_incr_vs_full_maxdiff']:.2e}, "
          f"index gap {gap:.2e}, seed {seed}")
    return True


def main():
    for name, src, quant in (("tiny-v4-mtp", "tiny-v4-official", False), ("tiny-v4-mtp-fp8", "tiny-v4-fp8", True)):
        seed = SEED
        while not build(name, src, quant, seed):
            seed += 1
            assert seed < SEED + 40, "no seed with clear index margins"


if __name__ == "__main__":
    main()
