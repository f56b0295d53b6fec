#!/usr/bin/env python3
"""
bench_train_torch.py - the PyTorch reference trainer for the training
benchmark: the same DeepSeek-V3 model (Hugging Face transformers
DeepseekV3ForCausalLM + an MTP module as in tools/gen_grad_fixtures.py), the
same losses (ce + mtp_weight * mtp + balance_alpha * balance), AdamW
(0.9, 0.95, decoupled weight decay on matrices only), gradient clipping, the
aux-loss-free bias update, the same batch shape and token shards, on CPU with
the same number of threads. Prints one JSON line with tokens/s (median over
the timed steps).

    python3 tools/bench_train_torch.py --recipe tools/bench_train.json --threads 2 --steps 8
    (tools/bench_train.sh runs this and `deepseek train` alternately)

--experts eager|grouped_mm|batched_mm picks transformers' MoE kernel
(default: the fastest of them, measured first over 2 steps each);
--attn sdpa|sdpa_padv|eager the attention kernel (default sdpa). This model's
value heads (32) are narrower than its query/key heads (48), so stock SDPA
takes PyTorch's math path on CPU; sdpa_padv zero-pads V to 48 (what
transformers does for flash_attention_2) so SDPA can use its fused CPU
flash kernel, and drops the padding from the output (same result);
--adam fused|foreach|loop picks torch.optim.AdamW's implementation
(default fused, its fastest on CPU).
--precision bf16 runs the forward and the losses under
torch.autocast("cpu", dtype=torch.bfloat16) (PyTorch's mixed precision:
matmuls in bf16 through oneDNN, with AMX or AVX512-BF16 kernels where the
CPU has them; fp32 weights, gradients and AdamW state), the counterpart of
`deepseek train --precision bf16`; default fp32.
The timed loop is what a user would write: no profiler, no anomaly
detection, gradients set to None, the bias update under no_grad.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_shard(path):
    with open(path, "rb") as f:
        h = f.read(64)
        assert h[:8] == b"DSTOKENS"
        bpt = int.from_bytes(h[12:16], "little")
        n = int.from_bytes(h[16:24], "little")
        return np.frombuffer(f.read(n * bpt), dtype=np.uint16 if bpt == 2 else np.uint32).astype(np.int64)


def sdpa_padv(module, query, key, value, attention_mask, **kw):
    """SDPA with V zero-padded to the query/key head width (fused CPU kernel), padding dropped again."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    dv = value.shape[-1]
    if dv < query.shape[-1]:
        value = F.pad(value, (0, query.shape[-1] - dv))
    out, w = sdpa_attention_forward(module, query, key, value, attention_mask, **kw)
    return out[..., :dv], w


def build(cfgd, experts, attn, init_std, seed):
    from transformers import AttentionInterface, DeepseekV3Config, DeepseekV3ForCausalLM
    AttentionInterface.register("sdpa_padv", sdpa_padv)
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm
    torch.manual_seed(seed)
    cfg = DeepseekV3Config(**cfgd)
    cfg._attn_implementation = attn
    cfg._experts_implementation = experts
    model = DeepseekV3ForCausalLM(cfg).float()
    model.config._experts_implementation = experts
    L, D = cfg.num_hidden_layers, cfg.hidden_size
    mtp = torch.nn.ModuleDict({
        "layer": DeepseekV3DecoderLayer(cfg, L),
        "enorm": DeepseekV3RMSNorm(D, cfg.rms_norm_eps), "hnorm": DeepseekV3RMSNorm(D, cfg.rms_norm_eps),
        "head_norm": DeepseekV3RMSNorm(D, cfg.rms_norm_eps),
        "eh_proj": torch.nn.Linear(2 * D, D, bias=False),
    }) if cfgd.get("num_nextn_predict_layers", 0) else None
    with torch.no_grad():
        for mod in [model] + ([mtp] if mtp is not None else []):
            for n, p in mod.named_parameters():
                if p.dim() == 1:
                    p.fill_(1.0)
                else:
                    p.normal_(0, init_std)
    return model, mtp, cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--experts", default="auto")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "sdpa_padv", "eager"])
    ap.add_argument("--adam", default="fused", choices=["fused", "foreach", "loop"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    r = json.load(open(a.recipe))
    data = a.data or r["data"]
    meta = json.load(open(os.path.join(data, "data.json")))
    toks = np.concatenate([load_shard(os.path.join(data, s)) for s in meta["train"]])
    B, T = r.get("batch_size", 16), r.get("seq_len", 256)
    lam, alpha = r.get("mtp_weight", 0.3), r.get("balance_alpha", 1e-4)
    gamma = r.get("bias_update_speed", 1e-3)
    cfgd = dict(vocab_size=meta["vocab_size"], hidden_act="silu", attention_bias=False, tie_word_embeddings=False,
                rms_norm_eps=1e-6, rope_theta=10000.0, rope_interleave=True, max_position_embeddings=4096,
                topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=1.0,
                n_group=1, topk_group=1, first_k_dense_replace=1, num_nextn_predict_layers=1, rope_scaling=None)
    cfgd.update(r["model"])
    cfgd["num_key_value_heads"] = cfgd["num_attention_heads"]
    E, K = cfgd["n_routed_experts"], cfgd["num_experts_per_tok"]
    rng = np.random.default_rng(0)

    def batch():
        starts = rng.integers(0, len(toks) - T, B)
        return torch.from_numpy(np.stack([toks[s:s + T] for s in starts]))

    def run(experts, steps, warmup):
        model, mtp, cfg = build(cfgd, experts, a.attn, r.get("init_std", 0.02), 0)
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding
        rot = DeepseekV3RotaryEmbedding(cfg)
        params = list(model.parameters()) + (list(mtp.parameters()) if mtp is not None else [])
        decay = [p for p in params if p.dim() >= 2]
        nodecay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.get("weight_decay", 0.1)},
                                 {"params": nodecay, "weight_decay": 0.0}], lr=r.get("lr", 1e-3),
                                betas=(r.get("beta1", 0.9), r.get("beta2", 0.95)), eps=r.get("eps", 1e-8),
                                fused=a.adam == "fused", foreach=a.adam == "foreach")
        L = cfg.num_hidden_layers
        gates = [l.mlp.gate for l in model.model.layers[:L] if hasattr(l.mlp, "gate")]
        all_gates = gates + ([mtp["layer"].mlp.gate] if mtp is not None and hasattr(mtp["layer"].mlp, "gate") else [])
        store = []
        for g in gates:
            g.register_forward_hook(lambda mod, i, o: store.append((o[0], o[2])))
        loads = {}
        for g in all_gates:
            g.register_forward_hook(lambda mod, i, o, g=g: loads.__setitem__(g, torch.bincount(o[2].reshape(-1), minlength=E)))
        times, cpus = [], []
        n = T - 2
        pos = torch.arange(n)[None].expand(B, n)
        # the MTP block's causal mask: SDPA kernels get none (is_causal, as in the main layers), eager an explicit one
        mask = None if a.attn.startswith("sdpa") else torch.full((n, n), float("-inf")).triu(1)[None, None]
        for step in range(warmup + steps):
            ids = batch()
            t0, c0 = time.perf_counter(), time.process_time()
            store.clear()
            opt.zero_grad(set_to_none=True)
            ac = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")
            ac.__enter__()
            h = model.model(ids).last_hidden_state
            logits = model.lm_head(h)
            ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            bal = torch.zeros(())
            for rlog, idx in store:
                s = rlog.sigmoid().view(B, T, E)
                cnt = torch.zeros(B, E).scatter_add_(1, idx.view(B, T * K), torch.ones(B, T * K))
                f = cnt * E / (K * T)
                P = (s / s.sum(-1, keepdim=True)).mean(1)
                bal = bal + (f * P).sum(-1).mean()
            loss = ce + alpha * bal
            if mtp is not None:
                x = torch.cat([mtp["enorm"](model.model.embed_tokens(ids[:, 1:n + 1])), mtp["hnorm"](h[:, :n])], -1)
                x = mtp["eh_proj"](x)
                y = mtp["layer"](x, attention_mask=mask, position_ids=pos, position_embeddings=rot(x, pos))
                if isinstance(y, tuple):
                    y = y[0]
                ml = model.lm_head(mtp["head_norm"](y))
                loss = loss + lam * F.cross_entropy(ml.reshape(-1, ml.shape[-1]), ids[:, 2:].reshape(-1))
            ac.__exit__(None, None, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, r.get("grad_clip", 1.0))
            opt.step()
            with torch.no_grad():
                for g in all_gates:
                    ld = loads[g].float()
                    g.e_score_correction_bias += gamma * torch.sign(ld.mean() - ld)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if step >= warmup:
                times.append(dt)
                cpus.append(dc)
        return statistics.median(times), float(loss.detach()), min(times), statistics.median(cpus)

    impls = [a.experts] if a.experts != "auto" else ["eager", "grouped_mm", "batched_mm"]
    best = None
    if len(impls) > 1:
        trial = {}
        for im in impls:
            try:
                trial[im] = run(im, 2, 1)[0]
            except Exception as ex:  # an implementation the CPU build lacks
                print(f"experts={im}: {type(ex).__name__}: {ex}", file=sys.stderr)
        best = min(trial, key=trial.get)
        print(f"experts implementations (s/step, 2 steps): {json.dumps(trial)}; using {best}", file=sys.stderr)
    else:
        best = impls[0]
    med, loss, best_step, cpu = run(best, a.steps, a.warmup)
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "threads": a.threads, "experts": best,
                      "attn": a.attn, "adam": a.adam, "precision": a.precision, "batch": B, "seq_len": T, "step_s_median": med, "tok_s": B * T / med,
                      "tok_s_best": B * T / best_step, "cpu_s_median": cpu,
                      "last_loss": loss}))


if __name__ == "__main__":
    main()
