#!/bin/sh
# gen_gguf_split_fixture.sh - tests/fixtures/gguf/split/: llama.cpp's
# `llama-gguf-split --split-max-tensors 16` of tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf,
# for tests/test_gguf.c (gguf_split_llamacpp): its parts must load as the
# unsplit file, from any part.
#
#   sh tools/gen_gguf_split_fixture.sh /path/to/llama-gguf-split
#
# Tested with llama-gguf-split built from the llama.cpp tree vendored in the
# PyPI sdist llama_cpp_python-0.3.36 (cmake --build build --target llama-gguf-split).
set -eu
SPLIT=${1:?usage: gen_gguf_split_fixture.sh path/to/llama-gguf-split}
cd "$(dirname "$0")/.."
rm -rf tests/fixtures/gguf/split
mkdir -p tests/fixtures/gguf/split
"$SPLIT" --split-max-tensors 16 tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf tests/fixtures/gguf/split/tiny-v3.llama-q8_0 >/dev/null
ls -l tests/fixtures/gguf/split
