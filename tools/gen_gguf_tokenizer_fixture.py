#!/usr/bin/env python3
"""
gen_gguf_tokenizer_fixture.py - the tokenizer metadata of a GGUF written by
llama.cpp's own convert_hf_to_gguf.py, for tests/test_tokenizer.c
(`tokenizer_gguf_llamacpp_*`): the ids deepseek.c gets from it must equal the
HF tokenizer.json's on the tokenizer corpus.

    python3 tools/gen_gguf_tokenizer_fixture.py --llama /path/to/llama.cpp \
        [--tokenizer /work/shared/tokenizers/deepseek-v3]

--llama: a llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/;
no build needed). Tested with the tree vendored in the PyPI sdist
llama_cpp_python-0.3.36 (vendor/llama.cpp). Needs torch, transformers, numpy.

Steps: a tiny random DeepSeek-V3 model (transformers DeepseekV3ForCausalLM,
hidden 16, 1 layer, vocab 129280 so the real V3 tokenizer fits) is saved with
the V3 tokenizer.json + tokenizer_config.json; convert_hf_to_gguf.py --outtype
f16 converts it (its set_vocab -> _set_vocab_gpt2: tokenizer.ggml.model gpt2,
pre deepseek-v3 by its hash check, tokens/token_type/merges, BOS/EOS,
add_bos/add_eos, chat template); then every key/value of that file is copied
by gguf-py into a GGUF with no tensors (the 129280-row embedding would make
the fixture too big; the tokenizer reader needs only the metadata).

Output: tests/fixtures/gguf/v3-tokenizer.llama-meta.gguf (~4 MB).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf", "v3-tokenizer.llama-meta.gguf")


def tiny_model(d, tok_dir):
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    cfg = DeepseekV3Config(
        vocab_size=129280, hidden_size=16, intermediate_size=32, moe_intermediate_size=16,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=16,
        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=4,
        n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1,
        bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    torch.manual_seed(1)
    DeepseekV3ForCausalLM(cfg).to(torch.float16).save_pretrained(d, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), d)


def strip_tensors(src, dst, gguf):
    r = gguf.GGUFReader(src)
    arch = str(bytes(r.fields["general.architecture"].parts[-1]), "utf-8")
    w = gguf.GGUFWriter(dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(name, f.contents(), vt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama", required=True)
    ap.add_argument("--tokenizer", default="/work/shared/tokenizers/deepseek-v3")
    a = ap.parse_args()
    llama = os.path.abspath(a.llama)
    sys.path.insert(0, os.path.join(llama, "gguf-py"))
    import gguf  # noqa: E402  (llama.cpp's own gguf-py)

    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "tiny-v3-tok")
        tiny_model(d, a.tokenizer)
        full = os.path.join(tmp, "full.gguf")
        env = dict(os.environ, PYTHONPATH=os.path.join(llama, "gguf-py"))
        subprocess.run([sys.executable, os.path.join(llama, "convert_hf_to_gguf.py"), d, "--outfile", full,
                        "--outtype", "f16"], check=True, env=env)
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        strip_tensors(full, OUT, gguf)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
