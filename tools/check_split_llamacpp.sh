#!/bin/sh
# check_split_llamacpp.sh - split GGUF interoperability with llama.cpp's
# gguf-split, by hand (needs a llama.cpp build with llama-gguf-split):
#
#   sh tools/check_split_llamacpp.sh ./deepseek /path/to/llama-gguf-split
#
# 1. our `convert --split-max-size` parts -> `llama-gguf-split --merge` ->
#    the merged file gives logits identical to our unsplit file;
# 2. our unsplit file -> `llama-gguf-split --split-max-tensors 20` -> we load its
#    parts (from part 1 and part 2) with logits identical to the unsplit file.
set -eu
BIN=${1:?usage: check_split_llamacpp.sh ./deepseek path/to/llama-gguf-split}
SPLIT=${2:?usage: check_split_llamacpp.sh ./deepseek path/to/llama-gguf-split}
T=$(mktemp -d /tmp/ds_split_llama.XXXXXX)
trap 'rm -rf "$T"' EXIT
M=tests/fixtures/tiny-chat
TOK=1,5,17,42,99,3,250,7
"$BIN" convert -m "$M" -o "$T/one.gguf" --type f32 -q
"$BIN" logits -m "$T/one.gguf" --tokens $TOK --out "$T/ref.f32" >/dev/null
"$BIN" convert -m "$M" -o "$T/ours.gguf" --type f32 -q --split-max-size 150K
n=$(ls "$T" | grep -c '^ours-.*-of-')
first=$(ls "$T" | grep '^ours-00001-of-')
echo "ours: $n parts"
"$SPLIT" --merge "$T/$first" "$T/merged.gguf" >"$T/merge.log" 2>&1 || { cat "$T/merge.log"; exit 1; }
"$BIN" logits -m "$T/merged.gguf" --tokens $TOK --out "$T/merged.f32" >/dev/null
cmp "$T/ref.f32" "$T/merged.f32" && echo "ok: llama-gguf-split --merge of our $n parts: identical logits"
"$SPLIT" --split-max-tensors 20 "$T/one.gguf" "$T/theirs" >"$T/split.log" 2>&1 || { cat "$T/split.log"; exit 1; }
n=$(ls "$T" | grep -c '^theirs-.*-of-')
for p in $(ls "$T" | grep '^theirs-0000[12]-of-'); do
    "$BIN" logits -m "$T/$p" --tokens $TOK --out "$T/theirs.f32" >/dev/null
    cmp "$T/ref.f32" "$T/theirs.f32" && echo "ok: llama-gguf-split's $n parts, loaded from $p: identical logits"
done
