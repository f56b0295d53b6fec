#!/usr/bin/env python3
"""gen_quant_fixtures.py - references for the ggml quant types deepseek.c
reads, from the PyPI `gguf` package's NumPy dequantizers (gguf.quants.
dequantize) and, optionally, llama.cpp's own quantizers: independent of our
C code. Nothing here runs at build or test time; the outputs are committed.

    python3 tools/gen_quant_fixtures.py [--ggml path/to/libggml-base.so]

Outputs (tests/fixtures/quant/):
  dequant.bin      per type, 8 blocks of random bytes with the fp16 scale
                   fields replaced by random finite values of a realistic
                   size (no NaN/Inf), plus, for the types gguf can quantize
                   (Q4_1, Q5_1), 4 blocks of its quantizer's output; with the
                   floats gguf dequantizes them to
  weights.f32      8 x 2048 "real-looking" weights: Student-t (5 degrees of
                   freedom) x 0.02, float32 row-major
  ref_rms.json     relative RMS error sqrt(Σ(x - dq(q(x)))² / Σx²) on weights.f32
                   of gguf-py's quantizers (Q4_1, Q5_1) and, with --ggml, of
                   llama.cpp's (ggml_quantize_chunk, no importance matrix;
                   an all-ones one for the types that require one)
  llama_blocks.bin (--ggml) row 0 of weights.f32 quantized by llama.cpp to
                   each type, with the floats gguf dequantizes them to: real
                   quantizer output (the i-quants especially) for the check
tested: llama.cpp 0c1e570 (vendored by llama-cpp-python 0.3.36), gguf 0.19.0.

Block file format (little-endian), records until EOF:
    u32 ggml type id, u32 n_blocks, u32 block_bytes, u32 values_per_block,
    n_blocks * block_bytes raw bytes, n_blocks * values_per_block float32
tests/test_quant_ext.c compares our dequantizer with these floats bit for
bit, and our quantizers' RMS error with ref_rms.json.
"""
import argparse
import ctypes
import json
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf import quants

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DIR = os.path.join(ROOT, "tests", "fixtures", "quant")
OUT = os.path.join(DIR, "dequant.bin")
WRITABLE = [T.Q4_1, T.Q5_1, T.Q2_K, T.Q3_K, T.Q5_K, T.IQ4_NL, T.IQ4_XS]
ALL = [T.Q4_1, T.Q5_1, T.Q2_K, T.Q3_K, T.Q5_K, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S,
       T.IQ1_S, T.IQ1_M, T.IQ4_NL, T.IQ4_XS]

# byte offsets of the fp16 fields of each block
F16_AT = {
    T.Q4_1: [0, 2], T.Q5_1: [0, 2], T.Q2_K: [80, 82], T.Q3_K: [108], T.Q5_K: [0, 2],
    T.IQ2_XXS: [0], T.IQ2_XS: [0], T.IQ2_S: [0], T.IQ3_XXS: [0], T.IQ3_S: [0],
    T.IQ1_S: [0], T.IQ1_M: [], T.IQ4_NL: [0], T.IQ4_XS: [0],
}
# the new types gguf can quantize (the others: random blocks only)
QUANTIZABLE = [T.Q4_1, T.Q5_1]


def rand_f16(rng, n):
    """finite fp16 values around 1e-3 .. 1e-1, either sign (dmin/m too)"""
    v = rng.uniform(1e-3, 0.1, n) * rng.choice([-1.0, 1.0], n)
    return v.astype(np.float16)


def random_blocks(t, rng, n):
    bs, ts = GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, (n, ts), dtype=np.uint8)
    for off in F16_AT[t]:
        raw[:, off:off + 2] = rand_f16(rng, n).view(np.uint8).reshape(n, 2)
    if t == T.IQ1_M:
        # the fp16 d lives in the top nibbles of the 4 u16 scale words (bytes 48..55)
        d = rand_f16(rng, n).view(np.uint16)
        sc = raw[:, 48:56].copy().view(np.uint16).reshape(n, 4)
        for k in range(4):
            sc[:, k] = (sc[:, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
        raw[:, 48:56] = sc.view(np.uint8).reshape(n, 8)
    return raw


def record(t, blocks):
    bs, ts = GGML_QUANT_SIZES[t]
    y = quants.dequantize(blocks, t).astype(np.float32).reshape(len(blocks), bs)
    assert np.isfinite(y).all(), t.name
    return struct.pack("<4I", int(t), len(blocks), ts, bs) + blocks.tobytes() + y.tobytes()


def rel_rms(x, y):
    return float(np.sqrt(((x - y) ** 2).sum() / (x ** 2).sum()))


def ggml_quantize(lib, t, x):
    bs, ts = GGML_QUANT_SIZES[t]
    rows, n = x.shape
    out = np.zeros(rows * (n // bs) * ts, np.uint8)
    lib.ggml_quantize_init(int(t))
    im = np.ones(n, np.float32)
    need = lib.ggml_quantize_requires_imatrix(int(t))
    got = lib.ggml_quantize_chunk(int(t), x.ctypes.data, out.ctypes.data, 0, rows, n, im.ctypes.data if need else None)
    assert got == out.size, (t.name, got, out.size)
    return out.reshape(rows * (n // bs), ts), bool(need)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ggml", help="llama.cpp's libggml-base.so (for its quantizers)")
    args = ap.parse_args()
    rng = np.random.default_rng(1234)
    recs = []
    for t in F16_AT:
        bs, ts = GGML_QUANT_SIZES[t]
        blocks = random_blocks(t, rng, 8)
        if t in QUANTIZABLE:
            x = rng.standard_normal(4 * bs).astype(np.float32) * 0.05
            blocks = np.concatenate([blocks, quants.quantize(x.reshape(4, bs), t).reshape(4, ts)])
        recs.append(record(t, blocks))
        print("%-8s %2d random blocks" % (t.name, len(blocks)))
    os.makedirs(DIR, exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(b"".join(recs))

    w = (np.random.default_rng(99).standard_t(5, (8, 2048)) * 0.02).astype(np.float32)
    w.tofile(os.path.join(DIR, "weights.f32"))
    ref = {"data": "weights.f32: 8 x 2048 Student-t(5) x 0.02 (numpy default_rng(99))",
           "metric": "sqrt(sum((x - dq(q(x)))^2) / sum(x^2))", "gguf-py": {}}
    for t in QUANTIZABLE:
        y = quants.dequantize(quants.quantize(w, t), t)
        ref["gguf-py"][t.name] = round(rel_rms(w, y), 5)
    if args.ggml:
        lib = ctypes.CDLL(args.ggml)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        ref["llama.cpp"] = {}
        ref["llama.cpp_needs_imatrix"] = []
        lrecs = []
        for t in ALL + [T.Q4_K, T.Q6_K]:
            blocks, need = ggml_quantize(lib, t, w)
            y = quants.dequantize(blocks, t).reshape(w.shape)
            ref["llama.cpp"][t.name] = round(rel_rms(w, y), 5)
            if need:
                ref["llama.cpp_needs_imatrix"].append(t.name)
            if t in ALL:
                bs, _ = GGML_QUANT_SIZES[t]
                lrecs.append(record(t, blocks[: 2048 // bs]))
        with open(os.path.join(DIR, "llama_blocks.bin"), "wb") as f:
            f.write(b"".join(lrecs))
    with open(os.path.join(DIR, "ref_rms.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(json.dumps(ref, indent=1))
    for n in sorted(os.listdir(DIR)):
        print("%-18s %7d bytes" % (n, os.path.getsize(os.path.join(DIR, n))))


if __name__ == "__main__":
    main()
