#!/usr/bin/env python3
"""
gen_gguf_fixtures.py - GGUF files written by llama.cpp's own tools, for
tests/test_gguf.c (`gguf_llamacpp_*`): files written by llama.cpp must load
in deepseek.c with matching logits.

    python3 tools/gen_gguf_fixtures.py --llama /path/to/llama.cpp

Needs: a llama.cpp checkout (tested: ggml-org/llama.cpp 82bb48500) built with
cmake (build/bin/llama-quantize, build/bin/libllama.so), a C compiler, and
torch + transformers + numpy + safetensors (convert_hf_to_gguf.py imports
torch; its gguf-py is used from the checkout). Nothing here runs at build or
run time; only the outputs in tests/fixtures/gguf/ are committed.

Outputs (tests/fixtures/gguf/):
  tiny-v2-lite.llama-f16.gguf   convert_hf_to_gguf.py --outtype f16 of tests/fixtures/tiny-v2-lite
                                (its HF reference logits are tests/fixtures/tiny-v2-lite/ref_logits.f32)
  tiny-v3.llama-q8_0.gguf       convert_hf_to_gguf.py --outtype q8_0 of tests/fixtures/tiny-v3
                                (llama.cpp's converter drops the MTP layer: skip_mtp)
  kq.llama-q4_k_m.gguf          a V3-style random model with 256-wide rows (so K-quants apply),
                                converted to F32 by convert_hf_to_gguf.py, then
                                `llama-quantize ... Q4_K_M` (Q4_K, Q6_K, Q5_0/Q8_0 fallbacks)
  *.llama_logits.f32            llama.cpp's logits for ref tokens (tools/llama_logits.c,
                                F32 KV cache, flash attention off), [T, V] float32 (not for
                                tiny-v2-lite: llama.cpp cannot load its own converter's output for a
                                3-layer model without q LoRA, see ref.json "notes")
  kq.hf_logits.f32              transformers' float32 logits of the unquantized kq model
  ref.json                      tokens and provenance

The tiny fixtures have no tokenizer, so the converter's set_vocab is replaced
by tokenizer.ggml.model = "none" (llama.cpp then uses vocab_size dummy tokens).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "gguf")
TOKENS = [0, 5, 17, 42, 99, 3, 250, 7, 1, 64, 128, 33, 200, 11]


def run_convert(llama, src, dst, outtype):
    """convert_hf_to_gguf.py in-process, with the vocab replaced by 'none'."""
    sys.path.insert(0, os.path.join(llama, "gguf-py"))
    sys.path.insert(0, llama)
    import convert_hf_to_gguf as conv  # noqa: E402
    from conversion import deepseek  # noqa: E402

    def no_vocab(self):
        self.gguf_writer.add_tokenizer_model("none")
        self.gguf_writer.add_vocab_size(self.hparams["vocab_size"])

    deepseek.DeepseekV2Model.set_vocab = no_vocab
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", src, "--outfile", dst, "--outtype", outtype]
    try:
        conv.main()
    finally:
        sys.argv = argv


def llama_logits(tool, gguf, out):
    subprocess.run([tool, gguf, ",".join(map(str, TOKENS)), out, "--f32-cache", "--no-fa"], check=True)


def build_kq(tmp):
    """A V3-style model whose rows are multiples of 256 (K-quants apply)."""
    sys.path.insert(0, HERE)
    import gen_fixtures as gf  # noqa: E402
    from transformers import DeepseekV3ForCausalLM

    cfg = gf.base_v3(
        vocab_size=256, hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=256,
        kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
        num_nextn_predict_layers=0)
    config = gf.make_config("v3", cfg)
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    model = DeepseekV3ForCausalLM(config).float().eval()
    gf.init_weights(model, gen)
    d = os.path.join(tmp, "kq")
    model.save_pretrained(d, safe_serialization=True)
    with torch.no_grad():
        logits = model(torch.tensor([TOKENS])).logits[0].float().numpy()
    return d, logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama", required=True, help="llama.cpp checkout with a cmake build in build/")
    ap.add_argument("--rev", default=None, help="llama.cpp commit to record (default: git rev-parse in --llama)")
    args = ap.parse_args()
    llama = os.path.abspath(args.llama)
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tool = os.path.join(tmp, "llama_logits")
        inc = [f"-I{llama}/include", f"-I{llama}/ggml/include"]
        lib = [f"-L{llama}/build/bin", "-lllama", "-lggml", "-lggml-base", f"-Wl,-rpath,{llama}/build/bin"]
        subprocess.run(["cc", "-O2", "-o", tool, os.path.join(HERE, "llama_logits.c")] + inc + lib, check=True)

        made = {}
        f = os.path.join(OUT, "tiny-v2-lite.llama-f16.gguf")
        run_convert(llama, os.path.join(FIX, "tiny-v2-lite"), f, "f16")
        made["tiny-v2-lite.llama-f16.gguf"] = "convert_hf_to_gguf.py --outtype f16 tests/fixtures/tiny-v2-lite"
        f = os.path.join(OUT, "tiny-v3.llama-q8_0.gguf")
        run_convert(llama, os.path.join(FIX, "tiny-v3"), f, "q8_0")
        made["tiny-v3.llama-q8_0.gguf"] = "convert_hf_to_gguf.py --outtype q8_0 tests/fixtures/tiny-v3"

        kq_dir, hf = build_kq(tmp)
        f32 = os.path.join(tmp, "kq-f32.gguf")
        run_convert(llama, kq_dir, f32, "f32")
        f = os.path.join(OUT, "kq.llama-q4_k_m.gguf")
        subprocess.run([os.path.join(llama, "build", "bin", "llama-quantize"), f32, f, "Q4_K_M"], check=True,
                       stdout=subprocess.DEVNULL)
        made["kq.llama-q4_k_m.gguf"] = "random V3-style model (tools/gen_gguf_fixtures.py build_kq) -> " \
                                       "convert_hf_to_gguf.py --outtype f32 -> llama-quantize Q4_K_M"
        hf.astype(np.float32).tofile(os.path.join(OUT, "kq.hf_logits.f32"))
        notes = {}
        for name in made:
            base = name[: -len(".gguf")]
            if name.startswith("tiny-v2-lite"):
                # llama.cpp only takes the no-q-LoRA path for 26/27-layer files and its converter omits
                # attention.q_lora_rank when there is none, so it cannot load its own 3-layer output
                # ("key not found: deepseek2.attention.q_lora_rank"); deepseek.c's writer stores 0.
                notes[name] = "not loadable by llama.cpp itself (missing q_lora_rank); checked against HF logits"
                continue
            llama_logits(tool, os.path.join(OUT, name), os.path.join(OUT, base + ".llama_logits.f32"))
        rev = subprocess.run(["git", "-C", llama, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        json.dump({"tokens": TOKENS, "files": made, "notes": notes, "llama_cpp": args.rev or rev.stdout.strip() or "unknown",
                   "made_by": "tools/gen_gguf_fixtures.py"}, open(os.path.join(OUT, "ref.json"), "w"), indent=1)
    for n in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, n)):>9}  tests/fixtures/gguf/{n}")


if __name__ == "__main__":
    main()
