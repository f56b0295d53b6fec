#!/usr/bin/env python3
"""
compare_curves.py - how far one training run's loss curve is from another's
(e.g. `train --precision bf16` vs fp32 on the same recipe and seed, so both
see the same batches): relative difference |b - a| / a of

  - validation cross-entropy at every step both evaluated ("val_loss"),
  - training cross-entropy ("ce"), each run's logged batches averaged over
    windows of WINDOW steps (the logged batches are the same in both runs),

the largest over the curve and at the last common step. DeepSeek-V3's bar
for its FP8 vs BF16 runs: within 0.25 %.

    python3 tools/compare_curves.py runs/curve-fp32 runs/curve-bf16 [--window 100] [--bar 0.0025]

Prints one JSON line; exit status 1 when a difference exceeds --bar.
"""
import argparse
import json
import os
import sys


def load(run):
    path = run if run.endswith(".jsonl") else os.path.join(run, "metrics.jsonl")
    val, ce = {}, {}
    for line in open(path):
        d = json.loads(line)
        if d.get("val_loss") is not None:
            val[d["step"]] = d["val_loss"]
        if "ce" in d:
            ce[d["step"]] = d["ce"]
    return val, ce


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="reference run folder (or metrics.jsonl)")
    ap.add_argument("b", help="compared run")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--bar", type=float, default=0.0025)
    o = ap.parse_args()
    va, ca = load(o.a)
    vb, cb = load(o.b)
    out = {"a": o.a, "b": o.b, "bar": o.bar}
    worst = 0.0
    steps = sorted(set(va) & set(vb))
    if steps:
        rel = {s: abs(vb[s] - va[s]) / va[s] for s in steps}
        out["val"] = {"steps": len(steps), "last_step": steps[-1], "a_last": va[steps[-1]], "b_last": vb[steps[-1]],
                      "rel_last": rel[steps[-1]], "rel_max": max(rel.values()),
                      "rel_max_at": max(rel, key=rel.get),
                      "signed_rel": {s: round((vb[s] - va[s]) / va[s], 5) for s in steps}}
        worst = max(worst, out["val"]["rel_max"])
    common = sorted(set(ca) & set(cb))
    if common:
        wins = {}
        for s in common:
            wins.setdefault((s - 1) // o.window, []).append(s)
        rel = {}
        for w, ss in sorted(wins.items()):
            ma = sum(ca[s] for s in ss) / len(ss)
            mb = sum(cb[s] for s in ss) / len(ss)
            rel[(w + 1) * o.window] = (abs(mb - ma) / ma, ma, mb)
        last = max(rel)
        out["train_ce"] = {"window": o.window, "windows": len(rel), "last_window_end": last, "a_last": rel[last][1],
                           "b_last": rel[last][2], "rel_last": rel[last][0], "rel_max": max(r[0] for r in rel.values()),
                           "rel_max_at": max(rel, key=lambda k: rel[k][0])}
        worst = max(worst, out["train_ce"]["rel_max"])
    out["within_bar"] = worst <= o.bar
    print(json.dumps(out))
    return 0 if worst <= o.bar else 1


if __name__ == "__main__":
    sys.exit(main())
