#!/usr/bin/env python3
"""gen_quant_fixtures.py - block-by-block dequantization references for the
ggml quant types deepseek.c reads, from the PyPI `gguf` package's NumPy
dequantizers (gguf.quants.dequantize), independent of our C code.

    python3 tools/gen_quant_fixtures.py      (writes tests/fixtures/quant/dequant.bin)

Per type, 8 blocks: random bytes with the fp16 scale fields replaced by
random finite values of a realistic size (so no NaN/Inf), plus, for the
types gguf can quantize (Q4_1, Q5_1), 4 blocks of its quantizer's output.

File format (little-endian), records until EOF:
    u32 ggml type id, u32 n_blocks, u32 block_bytes, u32 values_per_block,
    n_blocks * block_bytes raw bytes, n_blocks * values_per_block float32
tests/test_quant.c (quant_ext_dequant_vs_gguf) compares our dequantizer
with these floats bit for bit.
"""
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf import quants

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "quant", "dequant.bin")

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


def main():
    rng = np.random.default_rng(1234)
    recs = []
    for t in F16_AT:
        bs, ts = GGML_QUANT_SIZES[t]
        blocks = random_blocks(t, rng, 8)
        if t in QUANTIZABLE:
            x = rng.standard_normal(4 * bs).astype(np.float32) * 0.05
            blocks = np.concatenate([blocks, quants.quantize(x.reshape(4, bs), t).reshape(4, ts)])
        y = quants.dequantize(blocks, t).astype(np.float32).reshape(len(blocks), bs)
        assert np.isfinite(y).all(), t.name
        recs.append(struct.pack("<4I", int(t), len(blocks), ts, bs) + blocks.tobytes() + y.tobytes())
        print("%-8s %2d blocks  max |x| %.4g" % (t.name, len(blocks), float(np.abs(y).max())))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(b"".join(recs))
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
