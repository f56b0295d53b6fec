#!/usr/bin/env python3
"""
gen_gguf_refs.py - F32 references for the quantized-GGUF accuracy tests in
tests/test_gguf.c (`gguf_llamacpp_*`, `gguf_ours_f32_in_llamacpp`).

    python3 tools/gen_gguf_refs.py [--llama-logits build/llama_logits]

Needs: numpy and the PyPI `gguf` package (gguf-py; tested 0.19.0), a built
./deepseek. With --llama-logits (tools/llama_logits.c compiled against a
llama.cpp build, see that file; tested: llama.cpp 0c1e570, the one vendored by
llama-cpp-python 0.3.36, built CPU-only) it also writes llama.cpp's logits
for F32 GGUFs that deepseek.c writes. Nothing here runs at build or run time.

Outputs (tests/fixtures/gguf/, tokens from ref.json):
  <q>.exact_logits.f32   for q = tiny-v3.llama-q8_0, kq.llama-q4_k_m: the exact
                         forward of that quantized file: every tensor
                         dequantized to F32 by gguf-py (gguf.quants.dequantize,
                         independent of our dequantizers), written as an F32
                         GGUF and run through `./deepseek logits` (F32 path).
                         With --llama-logits the same dequantized file also
                         goes through llama.cpp and the largest difference is
                         printed (measured 2.4e-6 and 2.0e-6): both F32
                         forwards agree, so this is the reference against which
                         both implementations' quantized paths are measured.
  <fx>.ours-f32[-legacy].llama_logits.f32
                         (--llama-logits only) llama.cpp's logits for
                         `deepseek convert -m tests/fixtures/<fx> --type f32
                         --no-mtp [--legacy-kv-b]`, fx = tiny-v3, tiny-v2-lite.
                         Not tiny-v2: llama.cpp scores expert groups by the sum
                         of their top-2 (V3's rule) also for V2's
                         group_limited_greedy (HF: the group's max), so one of
                         the 14 rows differs by 0.013 there (ours follow HF).
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGUFValueType, GGMLQuantizationType
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "gguf")
DEEPSEEK = os.path.join(ROOT, "deepseek")


def field_value(f):
    vt = f.types[0]
    if vt == GGUFValueType.ARRAY:
        if f.types[1] == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode() for i in f.data], f.types[1]
        return [f.parts[i][0].item() for i in f.data], f.types[1]
    if vt == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode(), None
    return f.parts[f.data[0]][0].item(), None


def dequantize_gguf(src, dst):
    """src with every tensor dequantized to F32 by gguf-py, metadata unchanged."""
    r = GGUFReader(src)
    arch, _ = field_value(r.fields["general.architecture"])
    w = GGUFWriter(dst, arch)
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        val, sub = field_value(f)
        w.add_key_value(f.name, val, f.types[0], sub_type=sub)
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]
        if t.tensor_type == GGMLQuantizationType.F32:
            a = np.asarray(t.data, dtype=np.float32)
        else:
            a = dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape(shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def our_logits(model, tokens, out):
    subprocess.run([DEEPSEEK, "logits", "-m", model, "--tokens", ",".join(map(str, tokens)), "--out", out, "-t", "1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def llama_logits(tool, model, tokens, out):
    subprocess.run([tool, model, ",".join(map(str, tokens)), out, "--f32-cache", "--no-fa"], check=True,
                   stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-logits", help="tools/llama_logits.c built against llama.cpp")
    ap.add_argument("--rev", default="0c1e570", help="llama.cpp commit the tool was built from (recorded in ref.json)")
    args = ap.parse_args()
    ref_path = os.path.join(OUT, "ref.json")
    ref = json.load(open(ref_path))
    tokens = ref["tokens"]
    made = {}
    with tempfile.TemporaryDirectory() as tmp:
        for base in ["tiny-v3.llama-q8_0", "kq.llama-q4_k_m"]:
            f32 = os.path.join(tmp, base + ".f32.gguf")
            dequantize_gguf(os.path.join(OUT, base + ".gguf"), f32)
            out = os.path.join(OUT, base + ".exact_logits.f32")
            our_logits(f32, tokens, out)
            made[base + ".exact_logits.f32"] = "deepseek.c F32 logits of " + base + ".gguf dequantized by gguf-py"
            if args.llama_logits:
                ll = os.path.join(tmp, "ll.f32")
                llama_logits(args.llama_logits, f32, tokens, ll)
                d = np.abs(np.fromfile(ll, np.float32) - np.fromfile(out, np.float32)).max()
                print(f"{base}: dequantized by gguf-py, llama.cpp vs deepseek.c F32 logits max |d| {d:.3g}")
        if args.llama_logits:
            for fx in ["tiny-v3", "tiny-v2-lite"]:
                for legacy in [False, True]:
                    name = fx + ".ours-f32" + ("-legacy" if legacy else "")
                    g = os.path.join(tmp, name + ".gguf")
                    subprocess.run([DEEPSEEK, "convert", "-m", os.path.join(FIX, fx), "-o", g, "--type", "f32", "--no-mtp"]
                                   + (["--legacy-kv-b"] if legacy else []), check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    out = os.path.join(OUT, name + ".llama_logits.f32")
                    llama_logits(args.llama_logits, g, tokens, out)
                    made[name + ".llama_logits.f32"] = (f"llama.cpp {args.rev} logits of `deepseek convert -m "
                                                        f"tests/fixtures/{fx} --type f32 --no-mtp"
                                                        + (" --legacy-kv-b" if legacy else "") + "`")
    ref.setdefault("refs", {}).update(made)
    ref["refs_made_by"] = "tools/gen_gguf_refs.py"
    if args.llama_logits:
        ref["refs_llama_cpp"] = args.rev
    json.dump(ref, open(ref_path, "w"), indent=1)
    for n in sorted(made):
        print(f"{os.path.getsize(os.path.join(OUT, n)):>9}  tests/fixtures/gguf/{n}")


if __name__ == "__main__":
    main()
