#!/usr/bin/env python3
"""gen_big_mxfp4_gguf.py - a V4 GGUF with many MXFP4 experts, for measuring
the memory of loading MXFP4 experts (README, "V4 as GGUF"): llama.cpp's
fixture tests/fixtures/gguf/tiny-v4-fp8.llama-mxfp4.gguf with its expert
count multiplied (random MXFP4 blocks with scales 2^-8..2^4, a random router,
zero router bias); every other tensor and key as in the fixture. Not a
fixture (it is large); a manual measurement:

  python3 tools/gen_big_mxfp4_gguf.py OUT.gguf [MULT=2048]
  /usr/bin/time -f %M ./deepseek info -m OUT.gguf
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

SRC = "tests/fixtures/gguf/tiny-v4-fp8.llama-mxfp4.gguf"


def main():
    out, mult = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2048
    r = GGUFReader(SRC)
    arch = r.fields["general.architecture"].contents()
    E = int(r.fields[arch + ".expert_count"].contents())
    E2 = E * mult
    w = GGUFWriter(out, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        v = f.contents()
        if name == arch + ".expert_count":
            v = E2
        sub = f.types[1] if f.types[0] == GGUFValueType.ARRAY and len(f.types) > 1 else None
        w.add_key_value(name, v, f.types[0], sub)
    rng = np.random.default_rng(1)
    for t in r.tensors:
        shape = [int(x) for x in t.shape]   # ggml ne order
        ty = t.tensor_type
        if ty == GGMLQuantizationType.MXFP4:
            ne0, ne1 = shape[0], shape[1]
            blocks = rng.integers(0, 256, size=(E2, ne1, ne0 // 32, 17), dtype=np.uint8)
            blocks[..., 0] = rng.integers(119, 132, size=(E2, ne1, ne0 // 32), dtype=np.uint8)
            w.add_tensor(t.name, blocks.reshape(E2, ne1, ne0 // 32 * 17), raw_shape=[E2, ne1, ne0 // 32 * 17], raw_dtype=ty)
        elif t.name.endswith("ffn_gate_inp.weight"):
            a = (rng.standard_normal((E2, shape[0])) * 0.05).astype(np.float32)
            b = (a.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
            w.add_tensor(t.name, b, raw_shape=list(b.shape), raw_dtype=GGMLQuantizationType.BF16)
        elif t.name.endswith("exp_probs_b.bias"):
            w.add_tensor(t.name, np.zeros(E2, dtype=np.float32))
        else:
            b = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
            ns = list(reversed(shape))
            ns[-1] = b.size // int(np.prod(ns[:-1], dtype=np.int64))   # bytes per row
            w.add_tensor(t.name, b.reshape(ns), raw_shape=ns, raw_dtype=ty)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
