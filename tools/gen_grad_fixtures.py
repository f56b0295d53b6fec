#!/usr/bin/env python3
"""
gen_grad_fixtures.py - PyTorch-autograd references for `deepseek grad`
(tests/fixtures/grad/<fixture>/), and the HF-loading check of checkpoints
written by `deepseek train`.

    pip install torch transformers safetensors numpy
    python3 tools/gen_grad_fixtures.py                 # rewrites tests/fixtures/grad/
    python3 tools/gen_grad_fixtures.py --check-hf DIR [--bin ./deepseek] [--require-mtp] [--tol 1e-4]
        # HF loads a checkpoint (nothing missing), prints logits (and MTP logits) parity, exit 1 above --tol

For each tiny fixture (tiny-v3, tiny-v2-lite, tiny-v2; made by gen_fixtures.py)
the model is built with Hugging Face transformers (DeepseekV3ForCausalLM /
DeepseekV2ForCausalLM) in float32 from exactly the stored weights, and

    ce      = mean over t < T-1 of -log p(tok[t+1] | tok[<=t])        (F.cross_entropy)
    mtp     = mean over t < T-2 of -log p_mtp(tok[t+2])               (V3 only)
              MTP row t: x = eh_proj[enorm(E_mtp tok[t+1]) ; hnorm(h_t)],
              h_t = the main model's final-normed hidden state (with gradient),
              x = DecoderLayer_L(x) (causal, positions 0..T-3),
              logits = shared_head.head(shared_head.norm(x))
              -- the semantics of gen_fixtures.py's MTP reference / `logits --mtp`
    balance = sum over the main MoE layers of sum_i f_i * P_i, from each HF
              router's own outputs (captured by a forward hook):
              f_i = E/(K*T) * #{t : i in topk_indices[t]}  (the actual selection, no grad)
              P_i = mean_t s_{i,t} / sum_j s_{j,t},  s = sigmoid|softmax(router_logits)
    loss    = ce + LAMBDA * mtp + ALPHA * balance

loss.backward() gives the gradient of every stored tensor. transformers 5.x
fuses routed experts into 3-D parameters (experts.gate_up_proj [E, 2F, D],
experts.down_proj [E, D, F]); their gradients are split back to the stored
per-expert names. e_score_correction_bias is a buffer: its gradient is 0.
ALPHA is large (0.1) on purpose, so the balance term's share of the router
gradient is well above the comparison tolerance.

Files: grads.safetensors (F32, every stored tensor's name and shape) and
ref.json (tokens, weights, loss values, versions).
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import DeepseekV2ForCausalLM, DeepseekV3ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")
OUT = os.path.join(FIX, "grad")
LAMBDA = 0.3
ALPHA = 0.1
BLOCK = 128


def dequant(weights, cfg):
    out = {}
    for k, v in weights.items():
        if k.endswith("_scale_inv"):
            continue
        s = weights.get(k + "_scale_inv")
        if s is not None:
            o, i = v.shape
            full = s.repeat_interleave(BLOCK, 0)[:o].repeat_interleave(BLOCK, 1)[:, :i]
            out[k] = v.float() * full
        else:
            out[k] = v.float()
    return out


def load_hf(d, deq, L):
    """HF model in fp32 from exactly the (dequantized) stored weights."""
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg.pop("quantization_config", None)
    tmp = d.rstrip("/") + ".grad-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    json.dump(cfg, open(os.path.join(tmp, "config.json"), "w"))
    save_file({k: v.contiguous() for k, v in deq.items() if not k.startswith(f"model.layers.{L}.")},
              os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    cls = DeepseekV3ForCausalLM if cfg["model_type"] == "deepseek_v3" else DeepseekV2ForCausalLM
    model = cls.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager")
    shutil.rmtree(tmp)
    model.train()  # no dropout in these models; train() only matters for the router asserts of old ports
    return model, cfg


def build_mtp(model, deq, L):
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm
    config = model.config
    p = f"model.layers.{L}."
    E = config.n_routed_experts
    layer = DeepseekV3DecoderLayer(config, L).float()
    sd = {}
    for k, v in deq.items():
        if k.startswith(p) and not any(s in k for s in ("embed_tokens", "enorm", "hnorm", "eh_proj", "shared_head",
                                                        "mlp.experts.")):
            sd[k[len(p):]] = v
    sd["mlp.experts.gate_up_proj"] = torch.stack([torch.cat([deq[p + f"mlp.experts.{e}.gate_proj.weight"],
                                                            deq[p + f"mlp.experts.{e}.up_proj.weight"]], 0)
                                                 for e in range(E)])
    sd["mlp.experts.down_proj"] = torch.stack([deq[p + f"mlp.experts.{e}.down_proj.weight"] for e in range(E)])
    missing, unexpected = layer.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    D = config.hidden_size
    mods = {"layer": layer}
    for n in ("enorm", "hnorm", "shared_head.norm"):
        m = DeepseekV3RMSNorm(D, config.rms_norm_eps)
        m.weight.data = deq[p + n + ".weight"].clone()
        mods[n] = m
    params = {"eh_proj": torch.nn.Parameter(deq[p + "eh_proj.weight"].clone())}
    # own copies of the embedding / head when stored, else the main ones (shared)
    if p + "embed_tokens.weight" in deq:
        params["embed_tokens"] = torch.nn.Parameter(deq[p + "embed_tokens.weight"].clone())
    if p + "shared_head.head.weight" in deq:
        params["shared_head.head"] = torch.nn.Parameter(deq[p + "shared_head.head.weight"].clone())
    return mods, params


def router_hooks(model, L, store):
    hooks = []
    for i, layer in enumerate(model.model.layers[:L]):
        gate = getattr(layer.mlp, "gate", None)
        if gate is None:
            continue

        def hook(mod, inp, out, i=i):
            store.append((i, out[0], out[2]))
        hooks.append(gate.register_forward_hook(hook))
    return hooks


def losses(model, cfg, tokens, mtp_mods, mtp_params, L, lam, alpha):
    T = len(tokens)
    ids = torch.tensor([tokens])
    store = []
    hooks = router_hooks(model, L, store)
    h = model.model(ids).last_hidden_state          # final-normed (B=1, T, D)
    for hk in hooks:
        hk.remove()
    logits = model.lm_head(h)
    ce = F.cross_entropy(logits[0, :-1], ids[0, 1:])
    # balance
    E, K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    bal = torch.zeros(())
    for _, rlog, idx in store:
        s = rlog.sigmoid() if cfg.get("scoring_func", "softmax") == "sigmoid" else rlog.softmax(-1)
        cnt = torch.zeros(E)
        cnt.index_add_(0, idx.reshape(-1), torch.ones(idx.numel()))
        f = cnt * E / (K * T)
        P = (s / s.sum(-1, keepdim=True)).mean(0)
        bal = bal + (f * P).sum()
    mtp = torch.zeros(())
    if mtp_mods is not None and T > 2:
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding
        n = T - 2
        emb_w = mtp_params.get("embed_tokens", model.model.embed_tokens.weight)
        head_w = mtp_params.get("shared_head.head", model.lm_head.weight)
        x = torch.cat([mtp_mods["enorm"](emb_w[ids[0, 1:n + 1]]), mtp_mods["hnorm"](h[0, :n])], -1) @ mtp_params["eh_proj"].T
        x = x[None]
        pos = torch.arange(n)[None]
        cos_sin = DeepseekV3RotaryEmbedding(model.config)(x, pos)
        mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
        y = mtp_mods["layer"](x, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
        if isinstance(y, tuple):
            y = y[0]
        ml = mtp_mods["shared_head.norm"](y[0]) @ head_w.T
        mtp = F.cross_entropy(ml, ids[0, 2:])
    loss = ce + lam * mtp + alpha * bal
    return loss, ce, mtp, bal


def collect_grads(model, cfg, stored_names, mtp_mods, mtp_params, L):
    g = {}
    E = cfg.get("n_routed_experts") or 0
    for name, p in model.named_parameters():
        gr = p.grad if p.grad is not None else torch.zeros_like(p)
        if name.endswith("mlp.experts.gate_up_proj"):
            pre = name[: -len("gate_up_proj")]
            Fw = gr.shape[1] // 2
            for e in range(E):
                g[f"{pre}{e}.gate_proj.weight"] = gr[e, :Fw]
                g[f"{pre}{e}.up_proj.weight"] = gr[e, Fw:]
        elif name.endswith("mlp.experts.down_proj"):
            pre = name[: -len("down_proj")]
            for e in range(E):
                g[f"{pre}{e}.down_proj.weight"] = gr[e]
        else:
            g[name] = gr
    if mtp_mods is not None:
        p = f"model.layers.{L}."
        for name, prm in mtp_mods["layer"].named_parameters():
            gr = prm.grad if prm.grad is not None else torch.zeros_like(prm)
            if name == "mlp.experts.gate_up_proj":
                Fw = gr.shape[1] // 2
                for e in range(E):
                    g[f"{p}mlp.experts.{e}.gate_proj.weight"] = gr[e, :Fw]
                    g[f"{p}mlp.experts.{e}.up_proj.weight"] = gr[e, Fw:]
            elif name == "mlp.experts.down_proj":
                for e in range(E):
                    g[f"{p}mlp.experts.{e}.down_proj.weight"] = gr[e]
            else:
                g[p + name] = gr
        for n in ("enorm", "hnorm", "shared_head.norm"):
            w = mtp_mods[n].weight
            g[p + n + ".weight"] = w.grad if w.grad is not None else torch.zeros_like(w)
        g[p + "eh_proj.weight"] = mtp_params["eh_proj"].grad
        if "embed_tokens" in mtp_params:
            g[p + "embed_tokens.weight"] = mtp_params["embed_tokens"].grad
        if "shared_head.head" in mtp_params:
            g[p + "shared_head.head.weight"] = mtp_params["shared_head.head"].grad
    out = {}
    for n in stored_names:
        if n.endswith("e_score_correction_bias"):
            out[n] = torch.zeros(model.state_dict().get(n, torch.zeros(E)).shape) if n in model.state_dict() else \
                torch.zeros(E)
            continue
        assert n in g, f"no gradient for stored tensor {n}"
        out[n] = g[n].detach().float().contiguous()
    return out


def build(name):
    d = os.path.join(FIX, name)
    weights = load_file(os.path.join(d, "model.safetensors"))
    cfg0 = json.load(open(os.path.join(d, "config.json")))
    L = cfg0["num_hidden_layers"]
    deq = dequant(weights, cfg0)
    model, cfg = load_hf(d, deq, L)
    has_mtp = any(k.startswith(f"model.layers.{L}.") for k in deq)
    mtp_mods, mtp_params = build_mtp(model, deq, L) if has_mtp else (None, None)
    tokens = json.load(open(os.path.join(d, "ref.json")))["tokens"]
    model.zero_grad()
    loss, ce, mtp, bal = losses(model, cfg, tokens, mtp_mods, mtp_params, L, LAMBDA, ALPHA)
    loss.backward()
    stored = [k for k in deq]
    grads = collect_grads(model, cfg, stored, mtp_mods, mtp_params, L)
    od = os.path.join(OUT, name)
    os.makedirs(od, exist_ok=True)
    save_file(grads, os.path.join(od, "grads.safetensors"), metadata={"format": "pt"})
    meta = {
        "generator": "python3 tools/gen_grad_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "model": f"tests/fixtures/{name}", "tokens": tokens, "mtp_weight": LAMBDA, "balance_alpha": ALPHA,
        "loss": float(loss), "ce": float(ce), "mtp": float(mtp), "balance": float(bal),
        "max_abs_grad": float(max(v.abs().max() for v in grads.values())),
    }
    json.dump(meta, open(os.path.join(od, "ref.json"), "w"), indent=1)
    sz = sum(os.path.getsize(os.path.join(od, f)) for f in os.listdir(od))
    print(f"{name}: loss {float(loss):.6f} ce {float(ce):.6f} mtp {float(mtp):.6f} balance {float(bal):.6f}, "
          f"{len(grads)} tensors, {sz / 1e6:.2f} MB")


def mtp_logits(model, mtp_mods, mtp_params, h, ids):
    """MTP logits [T-1, V] (row t: enorm(E tok[t+1]) ; hnorm(h_t) -> layer -> head), `logits --mtp` semantics."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding
    n = ids.shape[1] - 1
    emb_w = mtp_params.get("embed_tokens", model.model.embed_tokens.weight)
    head_w = mtp_params.get("shared_head.head", model.lm_head.weight)
    x = torch.cat([mtp_mods["enorm"](emb_w[ids[0, 1:n + 1]]), mtp_mods["hnorm"](h[0, :n])], -1) @ mtp_params["eh_proj"].T
    x = x[None]
    pos = torch.arange(n)[None]
    cos_sin = DeepseekV3RotaryEmbedding(model.config)(x, pos)
    mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
    y = mtp_mods["layer"](x, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
    if isinstance(y, tuple):
        y = y[0]
    return mtp_mods["shared_head.norm"](y[0]) @ head_w.T


def check_hf(d, tokens, exe):
    """Loads a checkpoint folder with transformers (every stored tensor of the main model loaded, nothing missing),
    prints max |HF - ours| on the logits and, when an MTP layer is stored, on the MTP logits (`logits --mtp`)."""
    import subprocess
    cfg = json.load(open(os.path.join(d, "config.json")))
    L = cfg["num_hidden_layers"]
    cls = DeepseekV3ForCausalLM if cfg["model_type"] == "deepseek_v3" else DeepseekV2ForCausalLM
    model, info = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    mtp_prefix = f"model.layers.{L}."
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v and
                not (k == "unexpected_keys" and all(n.startswith(mtp_prefix) for n in v))}
    ids = torch.tensor([tokens])
    with torch.no_grad():
        h = model.model(ids).last_hidden_state
        ref = model.lm_head(h)[0].numpy()
        deq = dequant(load_file(os.path.join(d, "model.safetensors")), cfg)
        has_mtp = any(k.startswith(mtp_prefix) for k in deq)
        ref_mtp = mtp_logits(model, *build_mtp(model, deq, L), h, ids).numpy() if has_mtp else None

    def ours(*flags):
        out = d.rstrip("/") + ".check-logits.f32"
        subprocess.run([exe, "logits", "-m", d, "--tokens", ",".join(map(str, tokens)), "--out", out, *flags],
                       check=True, stderr=subprocess.DEVNULL)
        v = np.fromfile(out, dtype=np.float32)
        os.remove(out)
        return v
    diff = float(np.abs(ours().reshape(ref.shape) - ref).max())
    res = {"binary": exe, "hf_vs_ours_maxdiff": diff, "tokens": len(tokens), "loading_problems": problems,
           "argmax_equal": bool((ours().reshape(ref.shape).argmax(-1) == ref.argmax(-1)).all())}
    if has_mtp:
        res["mtp_hf_vs_ours_maxdiff"] = float(np.abs(ours("--mtp").reshape(ref_mtp.shape) - ref_mtp).max())
    print(json.dumps(res))
    return max(diff, res.get("mtp_hf_vs_ours_maxdiff", 0.0)) if not problems else float("inf"), has_mtp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--check-hf", metavar="DIR")
    ap.add_argument("--tokens", default="0,5,17,33,2,9,11,40,7,3")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "deepseek"), help="the deepseek binary (--check-hf)")
    ap.add_argument("--require-mtp", action="store_true", help="--check-hf: fail unless an MTP layer is stored")
    ap.add_argument("--tol", type=float, default=1e-4, help="--check-hf: largest allowed max |HF - ours|")
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.check_hf:
        diff, has_mtp = check_hf(a.check_hf, [int(x) for x in a.tokens.split(",")], a.bin)
        sys.exit(0 if diff <= a.tol and (has_mtp or not a.require_mtp) else 1)
    for n in a.names or ["tiny-v3", "tiny-v2-lite", "tiny-v2"]:
        build(n)


if __name__ == "__main__":
    main()
