#!/usr/bin/env python3
"""scale_model.py - modelled scaling of expert parallelism over N MPI ranks.

    python3 tools/scale_model.py CONFIG.json [--ranks 4,8,16] [--net 25,100]
                                 [--batch-tokens 4096] [--alpha-us 10] [--mtp]
    python3 tools/scale_model.py --check      (self-test against known counts)

CONFIG.json is a Hugging Face config.json (the keys src/model/config.c reads:
hidden_size, num_hidden_layers, first_k_dense_replace, ...) or a DeepSeek
inference config (dim, n_layers, n_dense_layers, ...; as in
deepseek-ai/DeepSeek-V3 inference/configs/). Everything printed is computed
from the shapes; nothing is measured. Standard library only.

The model (expert parallelism as src/model/moe_exchange.c lays it out):
  * routed experts are split over the ranks in contiguous ranges as evenly as
    possible (E % N ranks hold one more: the memory column is the largest
    share); everything else (embedding, head, attention, dense FFN, shared
    experts, router) is replicated on every rank;
  * a rank runs attention for its own tokens (the "origin"); each MoE layer
    sends every routed row whose expert lives on another rank there (fp32
    row + the 24-byte ds_moe_slot) and gets the fp32 output row back. With
    routing spread uniformly, K*(1-1/N) of a token's K rows are remote. Also
    shown: the floor if rows were sent once per distinct remote rank in bf16
    (expected number of distinct ranks, honouring group-limited routing:
    topk_group of n_group groups, the K experts uniform among those);
  * dispatch and combine are sequential phases, so a token costs
    (out + back) bytes per MoE layer on its rank's link; a b Gb/s link bounds
    the tokens/s of one rank to b/8 / (bytes per token). Latency: one all-to-
    all each way per MoE layer at alpha per message (the floor: messages to
    all peers in flight at once); decode = 1 token per exchange, prefill =
    --batch-tokens per exchange.
"""
import argparse
import itertools
import json
import math
import sys

SLOT_BYTES = 24  # sizeof(ds_moe_slot): int64 token, int32 expert, int32 k, float weight, int32 block (+pad)

# GGUF block types: (bytes per block, values per block)
QT = {"f32": (4, 1), "bf16": (2, 1), "q8_0": (34, 32), "q5_0": (22, 32), "q4_k": (144, 256), "q6_k": (210, 256)}


def qbytes(t, rows, cols):
    b, n = QT[t]
    assert (rows * cols) % n == 0 or n == 1
    return rows * cols * b // n


# ---------------------------------------------------------------- config

OFFICIAL_KEYS = {  # DeepSeek inference config -> HF config.json
    "dim": "hidden_size", "inter_dim": "intermediate_size", "moe_inter_dim": "moe_intermediate_size",
    "n_layers": "num_hidden_layers", "n_dense_layers": "first_k_dense_replace", "n_heads": "num_attention_heads",
    "n_activated_experts": "num_experts_per_tok", "n_expert_groups": "n_group", "n_limited_groups": "topk_group",
}


def load_config(path):
    with open(path) as f:
        j = json.load(f)
    official = "dim" in j and "hidden_size" not in j
    if official:
        c = {OFFICIAL_KEYS.get(k, k): v for k, v in j.items()}
        # OFFICIAL model.py: the gate bias exists iff dim == 7168 (V3); q_lora_rank 0 = none
        c["topk_method"] = "noaux_tc" if c["hidden_size"] == 7168 else "greedy"
        if not c.get("q_lora_rank"):
            c["q_lora_rank"] = None
        c.setdefault("num_nextn_predict_layers", 0)
        if j.get("dtype") == "fp8":
            c["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    else:
        c = dict(j)
    d = {
        "V": c["vocab_size"], "H": c["hidden_size"], "I": c["intermediate_size"],
        "Im": c.get("moe_intermediate_size", 0), "L": c["num_hidden_layers"],
        "k_dense": c.get("first_k_dense_replace", 0), "freq": c.get("moe_layer_freq", 1),
        "nh": c["num_attention_heads"], "rq": c.get("q_lora_rank") or 0, "rkv": c["kv_lora_rank"],
        "dn": c["qk_nope_head_dim"], "dr": c["qk_rope_head_dim"], "dv": c["v_head_dim"],
        "E": c.get("n_routed_experts") or 0, "Es": c.get("n_shared_experts") or 0,
        "K": c.get("num_experts_per_tok") or 0, "n_group": c.get("n_group") or 1,
        "topk_group": c.get("topk_group") or 1, "topk_method": c.get("topk_method", "greedy"),
        "tied": bool(c.get("tie_word_embeddings", False)), "mtp": c.get("num_nextn_predict_layers") or 0,
        "fp8": (c.get("quantization_config") or {}).get("quant_method") == "fp8",
    }
    if d["topk_method"] == "greedy":
        d["n_group"] = d["topk_group"] = 1
    return d


def is_moe(c, i):
    return c["E"] > 0 and i >= c["k_dense"] and i % c["freq"] == 0


# ---------------------------------------------------------------- tensors

def layer_tensors(c, i, mtp=False):
    """(name, rows, cols, kind) for layer i; kind: 'mat' (a Linear), 'norm',
    'router', 'bias', 'expert' (one routed expert's matrix, per expert).
    Shapes as the HF checkpoint stores them ([out, in])."""
    H, nh, dq = c["H"], c["nh"], c["dn"] + c["dr"]
    t = [("attn_norm", 1, H, "norm"), ("ffn_norm", 1, H, "norm")]
    if c["rq"]:
        t += [("q_a", c["rq"], H, "mat"), ("q_a_norm", 1, c["rq"], "norm"), ("q_b", nh * dq, c["rq"], "mat")]
    else:
        t += [("q", nh * dq, H, "mat")]
    t += [("kv_a", c["rkv"] + c["dr"], H, "mat"), ("kv_a_norm", 1, c["rkv"], "norm"),
          ("kv_b", nh * (c["dn"] + c["dv"]), c["rkv"], "kv_b"), ("o", H, nh * c["dv"], "mat")]
    if is_moe(c, i):
        Im, E = c["Im"], c["E"]
        t += [("gate_inp", E, H, "router")]
        if c["topk_method"] == "noaux_tc":
            t += [("exp_probs_b", 1, E, "bias")]
        if c["Es"]:
            S = c["Es"] * Im
            t += [("shexp_gate", S, H, "mat"), ("shexp_up", S, H, "mat"), ("shexp_down", H, S, "down")]
        t += [("exp_gate", Im, H, "expert"), ("exp_up", Im, H, "expert"), ("exp_down", H, Im, "expert_down")]
    else:
        t += [("ffn_gate", c["I"], H, "mat"), ("ffn_up", c["I"], H, "mat"), ("ffn_down", H, c["I"], "down")]
    if mtp:  # enorm, hnorm, eh_proj, shared_head.norm (embed/head copies: shared, not counted)
        t += [("enorm", 1, H, "norm"), ("hnorm", 1, H, "norm"), ("eh_proj", H, 2 * H, "mat"),
              ("shared_head_norm", 1, H, "norm")]
    return t


def all_layers(c, with_mtp):
    out = [(i, layer_tensors(c, i)) for i in range(c["L"])]
    if with_mtp:
        out += [(c["L"] + j, layer_tensors(c, c["L"] + j, mtp=True)) for j in range(c["mtp"])]
    return out


def params(c):
    """Parameter counts (main model; MTP separately)."""
    H, V = c["H"], c["V"]
    emb = V * H
    head = 0 if c["tied"] else V * H
    rep = exp = act = 0
    for i, ts in all_layers(c, False):
        for _, r, k, kind in ts:
            n = r * k
            if kind.startswith("expert"):
                exp += n * c["E"]
                act += n * c["K"]
            else:
                rep += n
                act += n
    rep += emb + head + H  # + final norm
    act += emb + head + H
    mtp_unique = 0
    for i, ts in all_layers(c, True)[c["L"]:]:
        mtp_unique += sum(r * k * (c["E"] if kind.startswith("expert") else 1) for _, r, k, kind in ts)
    return {"total": rep + exp, "replicated": rep, "routed": exp, "active": act,
            "active_one_of_embed_head": act - emb, "embed": emb, "head": head,
            "mtp_unique": mtp_unique, "stored_with_mtp": rep + exp + mtp_unique + c["mtp"] * (emb + V * H)}


# ---------------------------------------------------------------- bytes per format

def use_more_bits(i, n):  # llama.cpp llama-quant.cpp
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def k_type(t, cols):  # llama.cpp's fallback when a row is not a multiple of 256
    if t in ("q4_k", "q6_k") and cols % 256:
        return {"q4_k": "q5_0", "q6_k": "q8_0"}[t]
    return t


def tensor_bytes(c, fmt, i, name, r, k, kind):
    """Bytes of one tensor (per expert for the expert kinds)."""
    if fmt == "fp8":  # the V3 checkpoint: FP8 Linears + fp32 128x128 block scales; embed/head/router bf16,
        # gate bias fp32, norms bf16 (assumed; fp32 would add < 2 MB)
        if kind in ("mat", "kv_b", "down", "expert", "expert_down"):
            if name == "eh_proj":
                return 2 * r * k  # BF16 in the V3.2 header dump (spec 6.1)
            return r * k + 4 * math.ceil(r / 128) * math.ceil(k / 128)
        return {"norm": 2, "router": 2, "bias": 4}[kind] * r * k
    # GGUF Q4_K as `deepseek convert --type q4_k` writes it: every Linear Q4_K (Q5_0 where the row
    # is not a multiple of 256), kv_b split into attn_k_b (rows of qk_nope_head_dim) and attn_v_b;
    # norms, router and its bias F32. fmt 'q4_k_m': also ffn_down Q6_K in llama.cpp's
    # use_more_bits layers (Q4_K_M).
    if kind in ("norm", "router", "bias"):
        return 4 * r * k
    if kind == "kv_b":  # attn_k_b: per head (rkv, dn) with rows of dn; attn_v_b: per head (dv, rkv)
        nh, dn, dv, rkv = c["nh"], c["dn"], c["dv"], c["rkv"]
        return nh * (qbytes(k_type("q4_k", dn), rkv, dn) + qbytes(k_type("q4_k", rkv), dv, rkv))
    t = "q4_k"
    if fmt == "q4_k_m" and kind in ("down", "expert_down") and use_more_bits(i, c["L"]):
        t = "q6_k"
    return qbytes(k_type(t, k), r, k)


def model_bytes(c, fmt, with_mtp):
    """(replicated bytes, bytes of one routed expert summed over MoE layers)."""
    H, V = c["H"], c["V"]
    if fmt == "fp8":
        rep = 2 * V * H * (1 if c["tied"] else 2) + 2 * H
    else:
        rep = qbytes(k_type("q4_k", H), V, H) + 4 * H
        if not c["tied"]:
            rep += qbytes(k_type("q6_k", H), V, H)
    per_expert = 0
    for i, ts in all_layers(c, with_mtp):
        for name, r, k, kind in ts:
            b = tensor_bytes(c, fmt, i, name, r, k, kind)
            if kind.startswith("expert"):
                per_expert += b
            else:
                rep += b
    return rep, per_expert


def expert_split(E, N):
    base, extra = divmod(E, N)
    sizes = [base + (1 if q < extra else 0) for q in range(N)]
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    return sizes, bounds


# ---------------------------------------------------------------- wire

def expected_distinct_ranks(c, N):
    """Expected number of distinct ranks among a token's K experts: groups of
    E/n_group contiguous experts, topk_group groups chosen uniformly, the K
    experts a uniform K-subset of the chosen groups' experts."""
    E, K, G, TG = c["E"], c["K"], c["n_group"], c["topk_group"]
    _, bounds = expert_split(E, N)
    gs = E // G
    total = 0.0
    subsets = list(itertools.combinations(range(G), TG))
    for S in subsets:
        cand = set()
        for g in S:
            cand.update(range(g * gs, (g + 1) * gs))
        n = len(cand)
        for q in range(N):
            cq = sum(1 for e in cand if bounds[q] <= e < bounds[q + 1])
            total += 1 - math.comb(n - cq, K) / math.comb(n, K)
    return total / len(subsets)


def moe_layers(c):
    return sum(1 for i in range(c["L"]) if is_moe(c, i))


def wire(c, N):
    """Per token per MoE layer on the origin rank's link (dispatch + combine)."""
    H, K = c["H"], c["K"]
    rows = K * (1 - 1 / N)
    fp32 = rows * (4 * H + SLOT_BYTES) + rows * 4 * H
    ranks = expected_distinct_ranks(c, N) * (1 - 1 / N)
    bf16 = ranks * 2 * H * 2
    return {"rows": rows, "ranks": ranks, "fp32": fp32, "bf16": bf16}


# ---------------------------------------------------------------- output

def gib(b):
    return b / 2**30


def fmt_rate(x):
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}"


def report(path, ranks, nets, batch, alpha_us, with_mtp, out=sys.stdout):
    c = load_config(path)
    p = params(c)
    Lm = moe_layers(c)
    w = lambda s: print(s, file=out)
    w(f"Model: {path}: {p['total'] / 1e9:.2f} B parameters ({p['replicated'] / 1e9:.2f} B replicated, "
      f"{p['routed'] / 1e9:.2f} B in {c['E']} routed experts x {Lm} MoE layers), "
      f"{p['active'] / 1e9:.2f} B active per token ({p['active_one_of_embed_head'] / 1e9:.2f} B counting the "
      f"head but not the embedding)" + (f"; MTP module {p['mtp_unique'] / 1e9:.2f} B more, "
                                         f"{p['stored_with_mtp'] / 1e9:.1f} B as stored" if c["mtp"] else "") + ".")
    w("")
    w("| format | ranks | experts/rank | replicated GiB | experts GiB | **GiB per rank** |")
    w("|---|---:|---:|---:|---:|---:|")
    for fmt, label in (("fp8", "FP8 (block scales)"), ("q4_k", "Q4_K (GGUF)")):
        rep, per_e = model_bytes(c, fmt, with_mtp)
        w(f"| {label} | 1 | {c['E']} | {gib(rep):.1f} | {gib(per_e * c['E']):.1f} | {gib(rep + per_e * c['E']):.1f} |")
        for N in ranks:
            m = expert_split(c["E"], N)[0][0]
            w(f"| {label} | {N} | {m} | {gib(rep):.1f} | {gib(per_e * m):.1f} | **{gib(rep + per_e * m):.1f}** |")
    rep, per_e = model_bytes(c, "q4_k_m", with_mtp)
    kv = 576 if (c["rkv"], c["dr"]) == (512, 64) else c["rkv"] + c["dr"]
    w("")
    w(f"Weights only{' (MTP layer included)' if with_mtp else ' (MTP layer excluded)'}; llama.cpp's Q4_K_M mix "
      f"(ffn_down Q6_K in its use_more_bits layers) would be {gib(rep + per_e * c['E']):.1f} GiB in one process. "
      f"KV cache per token ({kv} latent values x {c['L']} layers): fp32 {kv * 4 * c['L'] / 1024:.1f} KiB, "
      f"Q8 {(kv + kv // 32 * 4) * c['L'] / 1024:.1f} KiB, FP8 {(kv + kv // 64 * 4) * c['L'] / 1024:.1f} KiB, "
      f"held by the rank that owns the sequence.")
    w("")
    a = alpha_us * 1e-6
    head = "| ranks | remote rows | remote ranks | bytes/token (fp32 rows) | bf16, once per rank |"
    sep = "|---:|---:|---:|---:|---:|"
    for b in nets:
        head += f" {b} Gb/s decode | {b} Gb/s prefill |"
        sep += "---:|---:|"
    w(head)
    w(sep)
    for N in ranks:
        x = wire(c, N)
        B = x["fp32"] * Lm
        row = f"| {N} | {x['rows']:.2f} | {x['ranks']:.2f} | {B / 1e6:.1f} MB | {x['bf16'] * Lm / 1e6:.1f} MB |"
        for b in nets:
            bw = b * 1e9 / 8
            dec = 1 / (Lm * (2 * a + x["fp32"] / bw))
            pre = batch / (Lm * (2 * a + batch * x["fp32"] / bw))
            row += f" {fmt_rate(dec)} | {fmt_rate(pre)} |"
        w(row)
    w("")
    w(f"Per token and MoE layer: rows sent to other ranks, distinct other ranks; bytes per token = dispatch + "
      f"combine over the {Lm} MoE layers, the same in decode and prefill. Columns per link: tokens/s bound on "
      f"one rank's own tokens, decode = 1 token per exchange, prefill = {batch} (bandwidth-bound: "
      f"link / bytes per token), both with {alpha_us:g} us per all-to-all each way: decode's latency "
      f"floor is {2 * alpha_us:g} us per MoE layer = {2 * a * Lm * 1e3:.2f} ms per token "
      f"(<= {fmt_rate(1 / (2 * a * Lm))} tokens/s; {2 * alpha_us:g}(N-1) us per layer if the N-1 messages "
      f"go one after another).")


def check():
    """Known values: spec section 10.2 and the published counts."""
    import os
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    fails = 0

    def ok(name, cond):
        nonlocal fails
        if not cond:
            fails += 1
            print("FAIL", name)

    v3 = params(load_config(os.path.join(d, "deepseek-v3-config.json")))
    ok("V3 total 671,026,419,200", v3["total"] == 671_026_419_200)
    ok("V3 active 37.55B", round(v3["active"] / 1e7) == 3755)
    ok("V3 active, head not embedding ~36.7B (published 37B)", abs(v3["active_one_of_embed_head"] / 1e9 - 36.7) < 0.1)
    ok("V3 MTP 11.61B unique", round(v3["mtp_unique"] / 1e7) == 1161)
    ok("V3 stored with MTP 684.5B (685B)", round(v3["stored_with_mtp"] / 1e8) == 6845)
    v3o = params(load_config(os.path.join(d, "deepseek-v3-config_671B.json")))
    ok("V3 official config == HF config", (v3o["total"], v3o["active"]) == (v3["total"], v3["active"]))
    lite = params(load_config(os.path.join(d, "deepseek-v2-lite-config_16B.json")))
    ok("V2-Lite total 15,706,484,224", lite["total"] == 15_706_484_224)
    ok("V2-Lite active ~2.4B (head not embedding)", round(lite["active_one_of_embed_head"] / 1e8) in (24, 25))
    ok("V2-Lite active 2.66B", round(lite["active"] / 1e7) == 266)
    c2 = load_config(os.path.join(d, "deepseek-v2-lite-config_16B.json"))
    rep, per_e = model_bytes(c2, "q4_k", False)
    ok("V2-Lite Q4_K 8.85 GiB (README: convert --random v2-lite --type q4_k)", round((rep + 64 * per_e) / 2**30, 2) == 8.85)
    c = load_config(os.path.join(d, "deepseek-v3-config.json"))
    # FP8 bytes: one expert = 3 * 2048*7168 + 3 * 16*56*4 scale bytes per layer
    rep, per_e = model_bytes(c, "fp8", False)
    ok("V3 FP8 expert bytes", per_e == 58 * (3 * 2048 * 7168 + 3 * 16 * 56 * 4))
    ok("V3 expert split 256/16", expert_split(256, 16)[0] == [16] * 16)
    ok("split 64/5 largest 13", expert_split(64, 5)[0][0] == 13 and sum(expert_split(64, 5)[0]) == 64)
    # 8 ranks = the 8 groups; 4 groups chosen, 8 experts among their 128: P(group hit) = 1 - C(96,8)/C(128,8)
    ok("V3 distinct ranks N=8", abs(expected_distinct_ranks(c, 8) - 4 * (1 - math.comb(96, 8) / math.comb(128, 8))) < 1e-12)
    ok("V3 remote rows N=4", wire(c, 4)["rows"] == 6.0)
    print(f"scale_model.py --check: {'FAIL' if fails else 'ok'} ({fails} failed)")
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?")
    ap.add_argument("--ranks", default="4,8,16")
    ap.add_argument("--net", default="25,100", help="link speeds in Gb/s")
    ap.add_argument("--batch-tokens", type=int, default=4096, help="tokens per exchange in prefill")
    ap.add_argument("--alpha-us", type=float, default=10.0, help="latency per all-to-all message")
    ap.add_argument("--mtp", action="store_true", help="count the MTP layer's weights")
    ap.add_argument("--check", action="store_true", help="self-test against known parameter counts")
    o = ap.parse_args()
    if o.check:
        return check()
    if not o.config:
        ap.error("CONFIG.json is required (or --check)")
    report(o.config, [int(x) for x in o.ranks.split(",")], [float(x) if "." in x else int(x) for x in o.net.split(",")],
           o.batch_tokens, o.alpha_us, o.mtp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
