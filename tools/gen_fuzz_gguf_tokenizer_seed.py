#!/usr/bin/env python3
"""
gen_fuzz_gguf_tokenizer_seed.py - a small seed for tests/fuzz/fuzz_gguf.c's
tokenizer-metadata path: the GPT-2-style test tokenizer
(tests/fixtures/tokenizer/gpt2/tokenizer.json), cut to its first 700 model
tokens and the merges among them (to stay under the fuzzer's 64 KiB max_len), as
tokenizer.ggml.* keys (llama.cpp's layout: tokens by id, token_type 1 normal /
3 control / 4 user-defined, merges "a b", pre deepseek-v3), no tensors.
Needs the PyPI `gguf` package.  python3 tools/gen_fuzz_gguf_tokenizer_seed.py
"""
import json
import os

import gguf

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
j = json.load(open(os.path.join(ROOT, "tests/fixtures/tokenizer/gpt2/tokenizer.json")))
KEEP = 700
vocab = {s: i for s, i in j["model"]["vocab"].items() if i < KEEP}
types = {i: 1 for i in vocab.values()}
for a in j["added_tokens"]:
    if a["id"] >= KEEP:
        continue
    vocab[a["content"]] = a["id"]
    types[a["id"]] = 3 if a["special"] else 4
n = max(vocab.values()) + 1
toks = [f"[PAD{i}]" for i in range(n)]
tt = [5] * n
for s, i in vocab.items():
    toks[i] = s
    tt[i] = types[i]
merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
merges = [m for m in merges if all(x in vocab for x in m.split(" ")) and m.replace(" ", "") in vocab]
out = os.path.join(ROOT, "tests/fuzz/corpus/fuzz_gguf/gpt2-tokenizer-meta.gguf")
w = gguf.GGUFWriter(out, "deepseek2")
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("deepseek-v3")
w.add_token_list(toks)
w.add_token_types(tt)
w.add_token_merges(merges)
w.add_bos_token_id(vocab.get("<|endoftext|>", 0))
w.add_eos_token_id(vocab.get("<|endoftext|>", 0))
w.add_add_bos_token(False)
w.add_chat_template("{{'<｜User｜>' + m['content']}}")
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", out, os.path.getsize(out))
