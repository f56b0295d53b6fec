#!/usr/bin/env python3
"""gen_fuzz_gguf_header_seeds.py - header-only fuzz seeds for the V3.2 / V4 GGUF metadata.

Writes tests/fuzz/corpus/fuzz_gguf/{v4,v32}-header-only.gguf: the `deepseek4` and
`deepseek32` metadata of the llama.cpp-written fixtures in tests/fixtures/gguf/ (every key
but the tokenizer's), no tensors. A whole fixture is over fuzz_gguf's 64 KiB max_len;
these ~2 KiB files bring the fuzzer to gguf_config_v4 / the deepseek32 keys in
src/model/model_gguf.c (ds_model_gguf_config), which the deepseek2 seeds never reach.

    python3 tools/gen_fuzz_gguf_header_seeds.py        (from the repository root; needs `gguf`)
"""
import gguf

FLOATS = (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64)


def header_only(src, dst, arch):
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch)
    for f in r.fields.values():
        k = f.name
        if k.startswith("GGUF.") or k == "general.architecture" or k.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.STRING:
            w.add_string(k, bytes(f.parts[f.data[0]]).decode())
        elif t == gguf.GGUFValueType.ARRAY:
            vals = [f.parts[i].tolist()[0] for i in f.data]
            w.add_array(k, [float(v) if f.types[1] in FLOATS else int(v) for v in vals])
        else:
            w.add_key_value(k, f.parts[f.data[0]].tolist()[0], t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    header_only("tests/fixtures/gguf/tiny-v4-fp8.llama-mxfp4.gguf", "tests/fuzz/corpus/fuzz_gguf/v4-header-only.gguf",
                "deepseek4")
    header_only("tests/fixtures/gguf/tiny-v32.llama-bf16.gguf", "tests/fuzz/corpus/fuzz_gguf/v32-header-only.gguf",
                "deepseek32")
