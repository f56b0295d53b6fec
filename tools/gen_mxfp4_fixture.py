#!/usr/bin/env python3
"""gen_mxfp4_fixture.py - the reference for ggml's MXFP4 blocks (GGUF type
39, llama.cpp's form of DeepSeek-V4's FP4 experts): random blocks and the
floats the PyPI `gguf` package's NumPy dequantizer (gguf.quants.dequantize)
makes of them, independent of our C code. Nothing here runs at build or test
time; the output is committed.

    python3 tools/gen_mxfp4_fixture.py

Output: tests/fixtures/quant/mxfp4.bin, one record in the format of
tools/gen_quant_fixtures.py (u32 ggml type 39, u32 n_blocks, u32 17, u32 32,
the blocks, their n_blocks x 32 float32 values). The blocks: every code in
every nibble position, random codes with scale bytes 100..150 (weights'
range), and the extreme scales 0, 1 (2^-127, 2^-126: subnormal products) and
251, 252 (the largest whose products stay finite; 6 x 2^126 overflows fp32
in both dequantizers). Scale 255 (NaN) is left out. tests/test_fp4.c compares ds_mxfp4_dequant_ref and the
repacked e2m1 rows with these floats bit for bit.
tested: gguf 0.19.0.
"""
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "quant", "mxfp4.bin")


def main():
    rng = np.random.default_rng(39)
    blocks = []
    for code in range(16):   # every code in the low and the high nibble of every byte
        b = np.zeros(17, np.uint8)
        b[0] = 127
        b[1:] = code | ((15 - code) << 4)
        blocks.append(b)
    for _ in range(48):
        b = rng.integers(0, 256, 17, dtype=np.uint8)
        b[0] = rng.integers(100, 151)
        blocks.append(b)
    for s in (0, 1, 251, 252):
        b = rng.integers(0, 256, 17, dtype=np.uint8)
        b[0] = s
        blocks.append(b)
    raw = np.stack(blocks)
    vals = dequantize(raw.reshape(1, -1), GGMLQuantizationType.MXFP4).astype(np.float32).reshape(-1)
    assert vals.size == 32 * len(blocks) and np.isfinite(vals).all()
    with open(OUT, "wb") as f:
        f.write(struct.pack("<4I", 39, len(blocks), 17, 32))
        f.write(raw.tobytes())
        f.write(vals.tobytes())
    print("wrote", OUT, len(blocks), "blocks")


if __name__ == "__main__":
    main()
