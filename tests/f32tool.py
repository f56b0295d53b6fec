#!/usr/bin/env python3
"""
f32tool.py - compare `deepseek logits` files (raw little-endian float32,
rows x vocab) for the CLI test scripts; standard library only (no numpy).

    python3 tests/f32tool.py cmp OURS REF V TOL [--no-argmax]
        max |OURS - REF| <= TOL and (unless --no-argmax) the same argmax in
        every row; both files must hold the same number of rows of V values.
        Exit 1 otherwise.
    python3 tests/f32tool.py ce LOGITS V TOKENS_CSV
        prints the mean cross-entropy (nats) of TOKENS[t+1] under row t,
        over rows 0..T-2 (LOGITS holds T rows for the T tokens).
    python3 tests/f32tool.py tokens FILE START N
        prints N byte-tokenizer ids (byte b -> id b, as `prepare-data
        --byte-tokenizer` and models/default number them) of FILE from byte
        offset START, comma-separated.
    python3 tests/f32tool.py heldout BIN TEXT START WINDOWS T [ARGS...]
        held-out cross-entropy the way `train` evaluates it: WINDOWS windows
        of T byte tokens of TEXT from byte START, each overlapping the last by
        one token (stride T-1), each run through `BIN logits ARGS...`; prints
        the mean cross-entropy over the WINDOWS x (T-1) predictions.
"""
import array
import math
import sys


def load(path, V):
    a = array.array("f")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) % (4 * V):
        sys.exit(f"f32tool: {path}: {len(data)} bytes is not a whole number of rows of {V} float32")
    a.frombytes(data)
    if sys.byteorder != "little":
        a.byteswap()
    return [a[i:i + V] for i in range(0, len(a), V)]


def argmax(r):
    return max(range(len(r)), key=r.__getitem__)


def cmp(ours_path, ref_path, V, tol, need_argmax=True):
    ours, ref = load(ours_path, V), load(ref_path, V)
    if len(ours) != len(ref) or not ref:
        print(f"rows: ours {len(ours)}, reference {len(ref)}")
        return 1
    worst, bad_argmax = 0.0, []
    for t, (a, b) in enumerate(zip(ours, ref)):
        for x, y in zip(a, b):
            d = abs(x - y)
            if d != d:
                worst = math.inf  # NaN
            elif d > worst:
                worst = d
        if argmax(a) != argmax(b):
            bad_argmax.append(t)
    big = max(abs(y) for b in ref for y in b)
    print(f"rows {len(ref)}, max |ours - ref| = {worst:.3g} (tolerance {tol:g}; max |ref| {big:.3g}), "
          f"argmax differs in rows {bad_argmax}")
    return 0 if worst <= tol and (not bad_argmax or not need_argmax) else 1


def ce_sum(path, V, tokens):
    rows = load(path, V)
    if len(rows) != len(tokens):
        sys.exit(f"f32tool: {len(rows)} rows for {len(tokens)} tokens")
    tot = 0.0
    for t in range(len(tokens) - 1):
        r = rows[t]
        m = max(r)
        lse = m + math.log(sum(math.exp(x - m) for x in r))
        tot += lse - r[tokens[t + 1]]
    return tot


def ce(path, V, tokens):
    print(f"{ce_sum(path, V, tokens) / (len(tokens) - 1):.6f}")
    return 0


def heldout(binary, text, start, windows, T, args):
    import os
    import subprocess
    import tempfile
    with open(text, "rb") as f:
        f.seek(start)
        data = f.read((T - 1) * windows + 1)
    if len(data) < (T - 1) * windows + 1:
        sys.exit(f"f32tool: {text} is too short for {windows} windows of {T} from byte {start}")
    tot = 0.0
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "l.f32")
        for w in range(windows):
            toks = list(data[w * (T - 1):w * (T - 1) + T])
            p = subprocess.run([binary, "logits", *args, "--tokens", ",".join(map(str, toks)), "--out", out],
                               capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"f32tool: {binary} logits exit {p.returncode}: {p.stderr[-300:]}")
            V = os.path.getsize(out) // (4 * T)
            tot += ce_sum(out, V, toks)
    print(f"{tot / (windows * (T - 1)):.6f}")
    return 0


def main():
    a = sys.argv[1:]
    if len(a) in (5, 6) and a[0] == "cmp" and a[5:] in ([], ["--no-argmax"]):
        return cmp(a[1], a[2], int(a[3]), float(a[4]), a[5:] == [])
    if len(a) == 4 and a[0] == "ce":
        return ce(a[1], int(a[2]), [int(x) for x in a[3].split(",")])
    if len(a) == 4 and a[0] == "tokens":
        with open(a[1], "rb") as f:
            f.seek(int(a[2]))
            data = f.read(int(a[3]))
        print(",".join(str(b) for b in data))
        return 0
    if len(a) >= 6 and a[0] == "heldout":
        return heldout(a[1], a[2], int(a[3]), int(a[4]), int(a[5]), a[6:])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
