#!/usr/bin/env python3
"""
gen_v4_gguf_fixtures.py - DeepSeek-V4 (and V3.2) GGUFs written by llama.cpp's own
converter (convert_hf_to_gguf.py, DeepseekV4Model -> architecture
`deepseek4`), for tests/test_gguf_v4.c: it must load in deepseek.c and give
transformers' logits of tests/fixtures/tiny-v4-fp8.

    python3 tools/gen_v4_gguf_fixtures.py --llama /path/to/llama.cpp

llama.cpp's V4 converter reads the release's own folder (its names, its
config keys num_hash_layers / compress_ratios, FP4 experts with e8m0
`.scale`); its FP8 dequantizer assumes 128x128 blocks while tiny-v4-fp8 uses
32x32, so the input folder made here is tiny-v4-fp8 with every FP8 weight
dequantized to BF16 (exact: e4m3 times a power of two fits bf16) and the FP4
experts kept as they are (the converter repacks them to MXFP4 without loss).
The weights are thus the ones transformers ran for tiny-v4-fp8's
ref_logits.f32. The tiny tokenizer has no llama.cpp pre-tokenizer hash, so
the converter's set_vocab is replaced by tokenizer.ggml.model = "none".

Second, a V4 model llama.cpp's deepseek4 graph can run, to check that
deepseek.c's own V4 GGUFs load and compute the same there. llama.cpp
0c1e570 only knows compression ratios 0, 4 and 128 (tiny-v4's heavily
compressed layers use 8) and rotates the indexer's queries and keys by a
Hadamard matrix of at least 64 (tiny-v4's index_head_dim is 16: its graph
fails GGML_ASSERT(ggml_nelements(a) == ne0*ne1) in ggml_reshape_2d). So
v4-llama is tiny-v4's config (gen_v4_fixtures.py) with index_head_dim 64 and
HCA ratio 128, random weights as there. transformers' logits are its reference; `deepseek convert
--type f32` (bit-exact from a BF16 folder) writes the GGUF llama.cpp runs
(tools/llama_logits.c, F32 cache, no flash attention; F32 weights so that
llama.cpp's CPU matmuls do not round activations to BF16). The indexer's
top-k must have clear margins (gen_v4_fixtures.py's check): with 160 tokens
no seed had them (scores tie at 0 after the ReLU), so 64 tokens are used and
the HCA layer never completes a block of 128 (its compressor is loaded and
its ratio checked, not exercised).

Needs: a llama.cpp checkout (tested: 0c1e570) built with cmake (build/bin:
libllama.so), a C compiler, ./deepseek built, torch + transformers +
safetensors + numpy. Only outputs in tests/fixtures/gguf/ are committed:
  tiny-v4-fp8.llama-mxfp4.gguf   (BF16 matrices, MXFP4 experts, F32 vectors)
  tiny-v32.llama-bf16.gguf       DeepseekV32Model (`deepseek32`) of tests/fixtures/tiny-v32, --outtype
                                 bf16 (its MTP layer kept, as that converter does); llama.cpp
                                 0c1e570 cannot run it (its indexer's Hadamard rotation needs
                                 index_head_dim >= 64: GGML_ASSERT(ggml_can_mul_mat(a, b)))
  v4-llama/                      config.json, model.safetensors (BF16), hf_logits.f32 [T, V],
                                 llama_logits.f32 [T, V] (llama.cpp on our F32 GGUF), ref.json
  v32-llama/                     the same for V3.2 (`deepseek32`): tiny-v32's config with
                                 index_head_dim 64, no MTP layer, 24 tokens
"""
import argparse
import json
import os
import hashlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import torch
from safetensors import safe_open
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")
SRC = os.path.join(FIX, "tiny-v4-fp8")
OUT = os.path.join(FIX, "gguf", "tiny-v4-fp8.llama-mxfp4.gguf")
OUT32 = os.path.join(FIX, "gguf", "tiny-v32.llama-bf16.gguf")


def release_folder(dst):
    cfg = json.load(open(os.path.join(SRC, "config.json")))
    ratio = {"sliding_attention": 0, "compressed_sparse_attention": cfg["compress_rates"]["compressed_sparse_attention"],
             "heavily_compressed_attention": cfg["compress_rates"]["heavily_compressed_attention"]}
    cfg["compress_ratios"] = [ratio[t] for t in cfg["layer_types"]]
    cfg["num_hash_layers"] = sum(1 for t in cfg["mlp_layer_types"] if t == "hash_moe")
    cmp = cfg["rope_parameters"]["compress"]
    cfg["rope_scaling"] = {"type": "yarn", "factor": cmp["factor"], "beta_fast": cmp["beta_fast"],
                           "beta_slow": cmp["beta_slow"],
                           "original_max_position_embeddings": cmp["original_max_position_embeddings"]}
    cfg["rope_theta"] = cfg["rope_parameters"]["main"]["rope_theta"]
    for k in ("quantization_config", "rope_parameters", "layer_types", "mlp_layer_types", "compress_rates"):
        cfg.pop(k, None)
    bi = cfg.get("quantization_config", {}).get("weight_block_size", [32, 32])
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=1)
    shutil.copy(os.path.join(SRC, "tokenizer.json"), dst)
    tensors = {}
    for f in sorted(os.listdir(SRC)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(SRC, f), "pt") as g:
                for k in g.keys():
                    tensors[k] = g.get_tensor(k)
    out = {}
    for k, t in tensors.items():
        if k.endswith(".scale") and tensors[k[:-6] + ".weight"].dtype == torch.float8_e4m3fn:
            continue
        if t.dtype == torch.float8_e4m3fn:
            s = tensors[k[:-7] + ".scale"].float()
            s = s.repeat_interleave(bi[0], 0)[: t.shape[0]].repeat_interleave(bi[1], 1)[:, : t.shape[1]]
            w = t.float() * s
            b = w.to(torch.bfloat16)
            assert torch.equal(b.float(), w), k
            out[k] = b
        else:
            out[k] = t
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})


def run_convert(llama, src, dst, outtype=None):
    sys.path.insert(0, os.path.join(llama, "gguf-py"))
    sys.path.insert(0, llama)
    import convert_hf_to_gguf as conv  # noqa: E402
    from conversion import deepseek  # noqa: E402

    def no_vocab(self):
        self.gguf_writer.add_tokenizer_model("none")
        self.gguf_writer.add_vocab_size(self.hparams["vocab_size"])

    deepseek.DeepseekV4Model.set_vocab = no_vocab
    deepseek.DeepseekV32Model.set_vocab = no_vocab
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", src, "--outfile", dst] + (["--outtype", outtype] if outtype else [])
    try:
        conv.main()
    finally:
        sys.argv = argv


LL = os.path.join(FIX, "gguf", "v4-llama")


def fnv1a64(path):
    """FNV-1a 64 of a file: tests/test_gguf_v4.c checks that `deepseek convert`
    still writes the exact file llama.cpp ran."""
    h = 0xcbf29ce484222325
    for b in open(path, "rb").read():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"
LL_T = 64
LL_SEED = 1


def build_llama_model(llama, tmp):
    sys.path.insert(0, HERE)
    import gen_v4_fixtures as g4  # noqa: E402
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    cfg = dict(g4.CFG)
    cfg["index_head_dim"] = 64
    cfg["compress_rates"] = {"compressed_sparse_attention": 4, "heavily_compressed_attention": 128}
    seed = LL_SEED
    while True:   # a seed whose indexer top-k has clear margins (as gen_v4_fixtures.py)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        config = DeepseekV4Config(**cfg)
        config.architectures = ["DeepseekV4ForCausalLM"]
        model = DeepseekV4ForCausalLM(config).float().eval()
        g4.init_weights(model, gen)
        if os.path.isdir(LL):
            shutil.rmtree(LL)
        model.to(torch.bfloat16).save_pretrained(LL, safe_serialization=True)
        for f in os.listdir(LL):
            if f not in ("config.json", "model.safetensors"):
                os.remove(os.path.join(LL, f))
        ref = DeepseekV4ForCausalLM.from_pretrained(LL, dtype=torch.float32, attn_implementation="eager").eval()
        rng = np.random.default_rng(seed)
        tokens = [int(config.bos_token_id)] + [int(x) for x in rng.integers(2, config.vocab_size, LL_T - 1)]
        worst = [float("inf")]
        g4.mod_topk[0] = config.index_topk
        hooks = [m.register_forward_hook(g4.index_gap_hook(worst, 4))
                 for m in ref.modules() if isinstance(m, g4.mv4.DeepseekV4IndexerScorer)]
        with torch.no_grad():
            hf = ref(torch.tensor([tokens]), use_cache=False).logits[0].numpy().astype(np.float32)
        for h in hooks:
            h.remove()
        if worst[0] > g4.INDEX_MARGIN:
            break
        print(f"seed {seed}: index top-k margin {worst[0]:.2e}, trying the next seed")
        seed += 1
        assert seed < LL_SEED + 60, "no seed with clear index margins"
    hf.tofile(os.path.join(LL, "hf_logits.f32"))

    gguf = os.path.join(tmp, "v4-llama-f32.gguf")
    subprocess.run([os.path.join(HERE, "..", "deepseek"), "convert", "-q", "-m", LL, "-o", gguf, "--type", "f32"],
                   check=True)
    tool = os.path.join(tmp, "llama_logits")
    subprocess.run(["cc", "-O2", "-o", tool, os.path.join(HERE, "llama_logits.c"), f"-I{llama}/include",
                    f"-I{llama}/ggml/include", f"-L{llama}/build/bin", "-lllama", "-lggml", "-lggml-base",
                    f"-Wl,-rpath,{llama}/build/bin"], check=True)
    subprocess.run([tool, gguf, ",".join(map(str, tokens)), os.path.join(LL, "llama_logits.f32"), "--f32-cache",
                    "--no-fa"], check=True)
    rev = subprocess.run(["git", "-C", llama, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    json.dump({"generator": "python3 tools/gen_v4_gguf_fixtures.py", "tokens": tokens, "seed": seed, "index_topk_min_relative_gap": worst[0],
               "what": "tiny-v4's config with index_head_dim 64 and HCA ratio 128 (what llama.cpp's deepseek4 graph "
                       "runs); hf_logits: transformers fp32; llama_logits: llama.cpp on `deepseek convert --type f32` "
                       "of this folder (sha256 below), F32 cache, no flash attention",
               "gguf_sha256": hashlib.sha256(open(gguf, "rb").read()).hexdigest(), "gguf_fnv1a64": fnv1a64(gguf),
               "llama_cpp": rev.stdout.strip() or "unknown",
               "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__}},
              open(os.path.join(LL, "ref.json"), "w"), indent=1)


LL32 = os.path.join(FIX, "gguf", "v32-llama")


def build_v32_llama_model(llama, tmp):
    """tiny-v32's config (gen_fixtures.py) with index_head_dim 64, no MTP layer,
    built and checked (index margins) by gen_fixtures.build; llama.cpp's logits
    of `deepseek convert --type f32` of it."""
    sys.path.insert(0, HERE)
    import gen_fixtures as gf  # noqa: E402

    gf.ROOT = tmp
    spec = dict(gf.VARIANTS["tiny-v32"])
    spec.update(mtp=False, tokenizer=None)
    spec["cfg"] = gf.base_v3(vocab_size=576, index_topk=8, index_n_heads=8, index_head_dim=64)
    for seed in range(spec["seed"], spec["seed"] + 20):   # gen_fixtures.build refuses near-tie index top-k
        try:
            gf.build("v32-llama", spec, seed)
            break
        except AssertionError as ex:
            print(f"seed {seed}: {ex}, trying the next seed")
    src = os.path.join(tmp, "v32-llama")
    if os.path.isdir(LL32):
        shutil.rmtree(LL32)
    os.makedirs(LL32)
    for f in ("config.json", "model.safetensors", "ref_logits.f32"):
        shutil.copy(os.path.join(src, f), os.path.join(LL32, "hf_logits.f32" if f == "ref_logits.f32" else f))
    ref = json.load(open(os.path.join(src, "ref.json")))
    gguf = os.path.join(tmp, "v32-llama-f32.gguf")
    subprocess.run([os.path.join(HERE, "..", "deepseek"), "convert", "-q", "-m", LL32, "-o", gguf, "--type", "f32"],
                   check=True)
    tool = os.path.join(tmp, "llama_logits")
    subprocess.run([tool, gguf, ",".join(map(str, ref["tokens"])), os.path.join(LL32, "llama_logits.f32"),
                    "--f32-cache", "--no-fa"], check=True)
    rev = subprocess.run(["git", "-C", llama, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    json.dump({"generator": "python3 tools/gen_v4_gguf_fixtures.py", "tokens": ref["tokens"], "seed": ref["seed"],
               "index_topk_min_relative_gap": ref["index_topk_min_relative_gap"],
               "what": "tiny-v32's config with index_head_dim 64 (llama.cpp's indexer needs >= 64), no MTP; "
                       "hf_logits: transformers fp32; llama_logits: llama.cpp on `deepseek convert --type f32` of "
                       "this folder (sha256 below), F32 cache, no flash attention",
               "gguf_sha256": hashlib.sha256(open(gguf, "rb").read()).hexdigest(), "gguf_fnv1a64": fnv1a64(gguf),
               "llama_cpp": rev.stdout.strip() or "unknown", "versions": ref["versions"]},
              open(os.path.join(LL32, "ref.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama", default="/work/vendor/llama.cpp")
    ap.add_argument("--keep", help="also keep the release-style input folder here")
    a = ap.parse_args()
    llama = os.path.abspath(a.llama)
    with tempfile.TemporaryDirectory() as tmp:
        d = a.keep or os.path.join(tmp, "tiny-v4-release")
        os.makedirs(d, exist_ok=True)
        release_folder(d)
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        run_convert(llama, d, OUT)
        print("wrote", OUT)
        run_convert(llama, os.path.join(FIX, "tiny-v32"), OUT32, "bf16")
        print("wrote", OUT32)
        build_llama_model(llama, tmp)
        print("wrote", LL)
        build_v32_llama_model(llama, tmp)
        print("wrote", LL32)


if __name__ == "__main__":
    main()
