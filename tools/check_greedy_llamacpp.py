#!/usr/bin/env python3
"""check_greedy_llamacpp.py - greedy-token agreement of `deepseek generate`
with llama.cpp on the same GGUF files (issue 17 item 5). Not in the default
test suite: it needs a llama.cpp build.

    python3 tools/check_greedy_llamacpp.py [--llama /work/vendor/llama.cpp] \
        [--steps 64] [--gap 0.05] [--threads 2] FILE.gguf...

For each file: the prompt is tokenized by `deepseek tokenize` (the file's
own tokenizer metadata), `deepseek generate --prompt-ids ... --ignore-eos`
gives our N greedy tokens, and llama.cpp (tools/llama_logits.c, compiled
here against the llama.cpp build) computes its logits over prompt + our
tokens in one pass (teacher forcing: while the tokens agree this is
exactly llama.cpp's own greedy run). Step i agrees when llama.cpp's argmax
at that position is our token i.

Near-tie rule: a step where llama.cpp's top-2 logit gap is below --gap
times the standard deviation of that row's logits (relative: the random
test models have logits of very different scales) is a near tie, where two
correct implementations that round differently may pick either token; it
is reported, not compared. The default 0.15 is 3 sigma of a top-2 gap's
noise measured on the V2-Lite-shaped random files: the logits of two
correct implementations differ there by ~0.035 std per logit (printed as
"logit noise"; our own x8 and one-row kernels, which differ only in the
order of float sums, differ as much: the random router's near-ties amplify
any rounding). Because llama.cpp is fed our tokens, the steps
after a near tie are still compared (on our prefix). Any other step where
llama.cpp's argmax is not our token is a failure (exit 1).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), r.stderr[-2000:]))
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--llama", default="/work/vendor/llama.cpp", help="llama.cpp source folder with build/bin")
    ap.add_argument("--deepseek", default=os.path.join(HERE, "..", "deepseek"))
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--gap", type=float, default=0.15, help="near tie: top-2 gap < GAP x std of the row's logits")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default="First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="greedy_")
    tool = os.path.join(tmp, "llama_logits")
    L = a.llama
    run(["cc", "-O2", "-o", tool, os.path.join(HERE, "llama_logits.c"), "-I%s/include" % L, "-I%s/ggml/include" % L,
         "-L%s/build/bin" % L, "-lllama", "-lggml", "-lggml-base", "-Wl,-rpath,%s/build/bin" % L])
    bad = 0
    for f in a.files:
        ids = [int(x) for x in run([a.deepseek, "tokenize", "-m", f, "--text", a.prompt]).strip().strip("[]").split(",")]
        out = run([a.deepseek, "generate", "-m", f, "--prompt-ids", ",".join(map(str, ids)), "-n", str(a.steps),
                   "--ignore-eos", "-t", str(a.threads)])
        gen = [int(x) for x in out.replace("\n", "").split(",") if x.strip()]
        if len(gen) != a.steps:
            sys.exit("%s: expected %d tokens, got %d" % (f, a.steps, len(gen)))
        seq = ids + gen[:-1]
        lf = os.path.join(tmp, "l.f32")
        run([tool, f, ",".join(map(str, seq)), lf, "--threads", str(a.threads)])
        lg = np.fromfile(lf, dtype=np.float32).reshape(len(seq), -1)
        of = os.path.join(tmp, "o.f32")
        run([a.deepseek, "logits", "-m", f, "--tokens", ",".join(map(str, seq)), "--out", of, "-t", str(a.threads)])
        ours = np.fromfile(of, dtype=np.float32).reshape(len(seq), -1)[len(ids) - 1:]
        ref = lg[len(ids) - 1:]
        noise = float(np.median((ours - ref).std(axis=1) / ref.std(axis=1)))
        agree, ties, tie_diff, miss = 0, [], 0, []
        for i in range(a.steps):
            row = lg[len(ids) - 1 + i]
            top = np.argsort(row)[-2:][::-1]
            gap = float(row[top[0]] - row[top[1]])
            rel = gap / float(row.std())
            if rel < a.gap:
                ties.append(i)
                tie_diff += top[0] != gen[i]
            elif top[0] != gen[i]:
                miss.append("step %d: ours %d, llama.cpp %d (gap %.3f std)" % (i, gen[i], top[0], rel))
            else:
                agree += 1
        bad += len(miss) > 0
        print("%s: %d/%d steps outside near ties, all %s llama.cpp's greedy token; %d near ties (steps %s), "
              "%d of them picked differently; logit noise rms(ours - llama.cpp) = %.3f std (median over steps)%s" % (
                  os.path.basename(f), agree + len(miss), a.steps,
                                                    "equal to" if not miss else "NOT equal to", len(ties),
                                                    ",".join(map(str, ties)) or "-", tie_diff, noise,
                                                    "; MISMATCH " + "; ".join(miss) if miss else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
