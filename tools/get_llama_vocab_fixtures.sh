#!/bin/sh
# get_llama_vocab_fixtures.sh - tests/fixtures/gguf/llama-vocab/: llama.cpp's own
# tokenizer test files for the DeepSeek LLM and DeepSeek Coder tokenizers
# (models/ggml-vocab-deepseek-{llm,coder}.gguf: tokenizer metadata only, written
# by llama.cpp's convert_hf_to_gguf_update.py; .inp: texts separated by
# "\n__ggml_vocab_test__\n"; .out: the HF tokenizer's ids of each, one line per
# text), for tests/test_tokenizer.c (tokenizer_gguf_llamacpp_llm_coder).
#
#   sh tools/get_llama_vocab_fixtures.sh /path/to/llama.cpp
#
# Copied from the llama.cpp tree vendored in the PyPI sdist llama_cpp_python-0.3.36.
set -eu
L=${1:?usage: get_llama_vocab_fixtures.sh /path/to/llama.cpp}
cd "$(dirname "$0")/.."
D=tests/fixtures/gguf/llama-vocab
mkdir -p "$D"
for n in deepseek-llm deepseek-coder; do
    for x in gguf gguf.inp gguf.out; do cp "$L/models/ggml-vocab-$n.$x" "$D/"; done
done
ls -l "$D"
