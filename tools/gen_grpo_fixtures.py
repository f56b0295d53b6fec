#!/usr/bin/env python3
"""
gen_grpo_fixtures.py - PyTorch-autograd references for `deepseek grad --grpo`
(tests/fixtures/grad/<fixture>/grpo_*).

    pip install torch transformers safetensors numpy
    python3 tools/gen_grpo_fixtures.py            # rewrites tests/fixtures/grad/*/grpo_*

For each tiny fixture (tiny-v3, tiny-v2-lite, tiny-v2) the Hugging Face model
is built in float32 from exactly the stored weights (gen_grad_fixtures.load_hf;
the MTP layer takes no part), a batch of S samples (prompt, completion of
random ids) is made, and GRPO's objective is computed with autograd, written
independently of the C side's derivation:

    lp     = log_softmax(logits)[row predicting o_t, o_t]       (one forward per sample, B = 1)
    rho    = exp(lp - old),  r = ref - lp
    term   = torch.minimum(rho*A, torch.clamp(rho, 1-eps, 1+eps)*A) - beta*(exp(r) - r - 1)
    loss   = -(1/S) sum_s mean_t term
    kl     = (1/S) sum_s mean_t (exp(r) - r - 1)

old_logprobs are set from the model's own lp so that rho lands at chosen
values (never within 0.02 of 1 +- eps, so fp32 differences cannot flip a
clip decision); the batch is checked to hold every case: clipped tokens with
A > 0 (rho > 1+eps) and A < 0 (rho < 1-eps), unclipped tokens inside the
range and outside it on the other side, negative and positive advantages.

Files: grpo_batch.json (the batch, as `grad --grpo` reads it),
grpo_grads.safetensors (F32, every stored tensor; zeros for the MTP layer
and e_score_correction_bias) and grpo_ref.json (loss, kl, case counts).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_grad_fixtures import FIX, OUT, collect_grads, dequant, load_hf  # noqa: E402

EPS = 0.2
BETA = 0.1
PROMPT_LENS = [3, 1, 4, 2, 5, 2]
COMPLETION_LENS = [4, 6, 2, 5, 3, 7]
ADVANTAGES = [1.2, -0.7, 0.4, -1.5, 0.9, -0.3]


def logprobs(model, prompt, completion):
    ids = torch.tensor([prompt + completion])
    logits = model(ids).logits[0]                          # (T, V)
    lps = torch.log_softmax(logits.float(), -1)
    P = len(prompt)
    rows = torch.arange(P - 1, P - 1 + len(completion))
    return lps[rows, torch.tensor(completion)]


def build(name, gen):
    d = os.path.join(FIX, name)
    weights = load_file(os.path.join(d, "model.safetensors"))
    cfg0 = json.load(open(os.path.join(d, "config.json")))
    L = cfg0["num_hidden_layers"]
    V = cfg0["vocab_size"]
    deq = dequant(weights, cfg0)
    model, cfg = load_hf(d, deq, L)
    samples = []
    for P, C, A in zip(PROMPT_LENS, COMPLETION_LENS, ADVANTAGES):
        samples.append({"prompt": torch.randint(0, V, (P,), generator=gen).tolist(),
                        "completion": torch.randint(0, V, (C,), generator=gen).tolist(), "advantage": A})
    # old / ref log-probabilities around the model's own
    cases = {"clipped_pos": 0, "clipped_neg": 0, "inside": 0, "outside_unclipped": 0}
    with torch.no_grad():
        for s in samples:
            lp = logprobs(model, s["prompt"], s["completion"]).double()
            rhos = []
            for _ in s["completion"]:
                while True:
                    rho = 0.55 + 0.9 * float(torch.rand((), generator=gen))
                    if abs(rho - (1 - EPS)) > 0.02 and abs(rho - (1 + EPS)) > 0.02:
                        break
                rhos.append(rho)
                A = s["advantage"]
                if A > 0 and rho > 1 + EPS:
                    cases["clipped_pos"] += 1
                elif A < 0 and rho < 1 - EPS:
                    cases["clipped_neg"] += 1
                elif 1 - EPS <= rho <= 1 + EPS:
                    cases["inside"] += 1
                else:
                    cases["outside_unclipped"] += 1
            rho = torch.tensor(rhos, dtype=torch.float64)
            s["old_logprobs"] = [float(x) for x in (lp - torch.log(rho)).float()]
            s["ref_logprobs"] = [float(x) for x in (lp + 0.3 * torch.randn(len(rhos), generator=gen,
                                                                           dtype=torch.float64)).float()]
    assert all(v > 0 for v in cases.values()), cases
    # the objective, with autograd
    model.zero_grad()
    S = len(samples)
    loss = torch.zeros(())
    kl = torch.zeros(())
    for s in samples:
        lp = logprobs(model, s["prompt"], s["completion"])
        old = torch.tensor(s["old_logprobs"])
        ref = torch.tensor(s["ref_logprobs"])
        A = torch.tensor(s["advantage"])
        rho = torch.exp(lp - old)
        r = ref - lp
        k3 = torch.exp(r) - r - 1
        term = torch.minimum(rho * A, torch.clamp(rho, 1 - EPS, 1 + EPS) * A) - BETA * k3
        loss = loss - term.mean() / S
        kl = kl + k3.mean().detach() / S
    loss.backward()
    mtp_prefix = f"model.layers.{L}."
    stored = [k for k in deq if not k.startswith(mtp_prefix)]
    grads = collect_grads(model, cfg, stored, None, None, L)
    for k in deq:
        if k.startswith(mtp_prefix):
            grads[k] = torch.zeros(deq[k].shape, dtype=torch.float32)
    od = os.path.join(OUT, name)
    os.makedirs(od, exist_ok=True)
    batch = {"epsilon": EPS, "beta": BETA, "samples": samples}
    with open(os.path.join(od, "grpo_batch.json"), "w") as f:
        json.dump(batch, f)
    save_file(grads, os.path.join(od, "grpo_grads.safetensors"), metadata={"format": "pt"})
    meta = {
        "generator": "python3 tools/gen_grpo_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "model": f"tests/fixtures/{name}", "loss": float(loss), "kl": float(kl), "cases": cases,
        "max_abs_grad": float(max(v.abs().max() for v in grads.values())),
    }
    json.dump(meta, open(os.path.join(od, "grpo_ref.json"), "w"), indent=1)
    print(f"{name}: loss {float(loss):.6f} kl {float(kl):.6f} cases {cases}, {len(grads)} tensors")


def main():
    gen = torch.Generator().manual_seed(12)
    torch.manual_seed(0)
    for n in sys.argv[1:] or ["tiny-v3", "tiny-v2-lite", "tiny-v2"]:
        build(n, gen)


if __name__ == "__main__":
    main()
