#!/bin/sh
# cli_train_tests.sh - command-line checks for the training commands
# (prepare-data, train, grad, plot) end to end on a tiny model.
#
#   sh tests/cli_train_tests.sh ./deepseek        (from the repository root)
#
# prepare-data tokenizes a text file with the byte tokenizer; train runs a
# few steps of a tiny V3 model (checkpoints, metrics.jsonl, latest link), is
# resumed with --resume to a later step, and the checkpoint is loaded by
# `generate` and `grad`; plot writes a PNG; the BF16 export's logits stay
# close to the checkpoint's; Hugging Face transformers loads the checkpoint and
# computes the same logits (see below: skipped, and said so, without torch).
# Bad input exits non-zero below 128 with a message. Prints each failed check
# and exits 1 if any failed.
set -u
BIN=${1:?usage: sh tests/cli_train_tests.sh path/to/deepseek}
[ -x "$BIN" ] || { echo "cli_train_tests.sh: $BIN is not executable" >&2; exit 2; }
[ -d tests/fixtures/tiny-v3 ] || { echo "cli_train_tests.sh: run from the repository root" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_cli_train.XXXXXX) || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

checks=0
fails=0
skipped=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
ok() { checks=$((checks + 1)); }

expect_fail() {
    name=$1 pat=$2
    shift 2
    checks=$((checks + 1))
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 0 ]; then fail "$name: exit 0, expected an error"; return; fi
    if [ "$rc" -ge 128 ]; then fail "$name: killed by a signal (exit $rc)"; return; fi
    grep -qF -- "$pat" "$T/err" || fail "$name: stderr lacks '$pat': $(head -c 300 "$T/err")"
}

# a small corpus: 40 lines of verse, repeated
i=0
while [ $i -lt 40 ]; do
    echo "Line $i: to be, or not to be, that is the question; whether 'tis nobler in the mind." >>"$T/corpus.txt"
    i=$((i + 1))
done

"$BIN" prepare-data --out "$T/data" --byte-tokenizer --val-fraction 0.2 "$T/corpus.txt" >"$T/out" 2>"$T/err"
if [ $? -ne 0 ]; then fail "prepare-data: $(cat "$T/err")"; else ok; fi
for f in data.json tokenizer.json train_000000.tok val_000000.tok; do
    [ -f "$T/data/$f" ] && ok || fail "prepare-data: no $f"
done
grep -q '"vocab_size":258' "$T/out" && ok || fail "prepare-data: summary $(cat "$T/out")"

cat >"$T/recipe.json" <<EOF
{ "model": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": 12, "kv_lora_rank": 8,
            "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "intermediate_size": 24,
            "moe_intermediate_size": 8, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2},
  "data": "$T/data", "out": "$T/run", "seq_len": 16, "batch_size": 4, "steps": 4, "warmup_steps": 1,
  "eval_every": 2, "eval_tokens": 256, "ckpt_every": 2, "log_every": 1, "peak_gflops": 10 }
EOF
"$BIN" train --config "$T/recipe.json" -t 2 >"$T/out" 2>"$T/err"
if [ $? -ne 0 ]; then fail "train: $(tail -c 400 "$T/err")"; else ok; fi
[ -L "$T/run/latest" ] && [ -f "$T/run/latest/model.safetensors" ] && ok || fail "train: no latest checkpoint"
for f in config.json model.safetensors tokenizer.json optimizer.safetensors trainer_state.json; do
    [ -f "$T/run/ckpt-00000004/$f" ] && ok || fail "train: checkpoint lacks $f"
done
[ "$(grep -c '"loss"' "$T/run/metrics.jsonl")" -eq 4 ] && ok || fail "train: metrics.jsonl has $(grep -c '"loss"' "$T/run/metrics.jsonl") step lines"
grep -q '"val_loss"' "$T/run/metrics.jsonl" && ok || fail "train: no val_loss in metrics"
grep -q '"step":4' "$T/out" && ok || fail "train: summary $(cat "$T/out")"

"$BIN" train --resume "$T/run" --steps 6 -t 2 >"$T/out" 2>"$T/err"
if [ $? -ne 0 ]; then fail "train --resume: $(tail -c 400 "$T/err")"; else ok; fi
grep -q 'resumed at step 4' "$T/err" && ok || fail "train --resume: $(head -c 300 "$T/err")"
[ -f "$T/run/ckpt-00000006/model.safetensors" ] && ok || fail "train --resume: no step-6 checkpoint"

"$BIN" generate -m "$T/run/latest" --prompt-ids 76,105,110 -n 5 >"$T/out" 2>"$T/err"
if [ $? -ne 0 ]; then fail "generate from a checkpoint: $(cat "$T/err")"; else ok; fi
"$BIN" grad -m "$T/run/latest" --tokens 76,105,110,101,32,49 --out "$T/g.safetensors" >"$T/out" 2>"$T/err"
if [ $? -ne 0 ]; then fail "grad on a checkpoint: $(cat "$T/err")"; else ok; fi
grep -q '"loss"' "$T/out" && grep -q '"balance"' "$T/out" && ok || fail "grad: output $(cat "$T/out")"

"$BIN" plot --out "$T/p.png" "$T/run" >"$T/out" 2>"$T/err"
if [ $? -ne 0 ]; then fail "plot: $(cat "$T/err")"; else ok; fi
head -c 8 "$T/p.png" | od -An -c | grep -q 'P   N   G' && ok || fail "plot: not a PNG"

# export to a BF16 Hugging Face folder; generate reads it, logits stay close to F32
"$BIN" train --export "$T/run/latest" --out "$T/exported" --dtype bf16 >"$T/out" 2>"$T/err"
if [ $? -ne 0 ]; then fail "train --export: $(cat "$T/err")"; else ok; fi
grep -q '"BF16"' "$T/exported/model.safetensors" && ok || fail "export: model.safetensors is not BF16"
# the logits of the BF16 export stay within 0.01 of the F32 checkpoint's on a
# line of the corpus: measured 2.82e-3 (|logits| <= 0.35; training is
# deterministic, so it is the same every run). No argmax check: in one row the
# top two logits of this barely trained model are 1.8e-3 apart, less than the
# BF16 rounding moves them.
TOK=76,105,110,101,32,49,58,32,116,111,32,98,101,44,32,111,114
"$BIN" logits -m "$T/run/latest" --tokens $TOK --out "$T/f32.f32" 2>"$T/err" &&
    "$BIN" logits -m "$T/exported" --tokens $TOK --out "$T/bf16.f32" 2>>"$T/err"
if [ $? -ne 0 ]; then fail "logits of the checkpoint / export: $(tail -c 300 "$T/err")"; else
    python3 tests/f32tool.py cmp "$T/bf16.f32" "$T/f32.f32" 258 0.01 --no-argmax >"$T/cmp" 2>&1 && ok ||
        fail "BF16 export: logits far from the F32 checkpoint's: $(cat "$T/cmp")"
fi
"$BIN" generate -m "$T/exported" --prompt "Line" -n 8 --temperature 0 >"$T/out" 2>"$T/err"
if [ $? -ne 0 ]; then fail "generate --prompt on the export: $(cat "$T/err")"; else ok; fi

# Hugging Face transformers loads our checkpoint (every tensor of the main
# model, none missing) and computes the same logits and MTP logits as this
# binary, within 1e-5 (observed 6e-8; both in fp32, and this 6-step model's
# logits are small, |logit| <= 0.35, so 1e-4 would miss errors of ~1e-3
# relative: writing rope_interleave 0 into config.json moves them by 2e-4).
# Needs torch + transformers (~15 s,
# most of it importing torch): `sh tools/setup.sh --with-torch` installs them
# (.ci/run does); in CI (CI=true) or with DS_TEST_HF=1 their absence is a
# failure, otherwise the check is reported as SKIPPED.
PY=${PYTHON:-python3}
if $PY -c 'import torch, transformers, safetensors, numpy' 2>/dev/null; then
    $PY tools/gen_grad_fixtures.py --check-hf "$T/run/latest" --bin "$BIN" --require-mtp --tol 1e-5 \
        --tokens 76,105,110,101,32,49,58,32,116,111 >"$T/out" 2>"$T/err"
    if [ $? -ne 0 ]; then fail "HF transformers vs ours on a checkpoint: $(tail -c 300 "$T/out") $(tail -c 300 "$T/err")"; else ok; fi
elif [ "${DS_TEST_HF:-0}" = 1 ] || [ "${CI:-}" = true ]; then
    fail "HF transformers load check: DS_TEST_HF=1 or CI=true but $PY cannot import torch, transformers, safetensors, numpy"
else
    skipped=$((skipped + 1))
    echo "SKIPPED cli_train_tests.sh: HF transformers load check ($PY lacks torch/transformers: pip install torch transformers safetensors numpy; sh tools/setup.sh --with-torch installs them; DS_TEST_HF=1 makes this a failure)"
fi

expect_fail "train: unknown key" "unknown recipe key" "$BIN" train --config "$T/recipe.json" --no-such-key 3
expect_fail "train: bad data folder" "data.json" "$BIN" train --config "$T/recipe.json" --data "$T/nowhere" --out "$T/run2"
expect_fail "train: resume nothing" "trainer_state.json" "$BIN" train --resume "$T/nowhere"
expect_fail "prepare-data: no tokenizer" "exactly one of" "$BIN" prepare-data --out "$T/d2" "$T/corpus.txt"
expect_fail "grad: token out of range" "out of range" "$BIN" grad -m tests/fixtures/tiny-v3 --tokens 0,9999 --out "$T/g2.safetensors"
expect_fail "plot: missing metrics" "cannot open" "$BIN" plot --out "$T/q.png" "$T/nowhere"

echo "cli_train_tests.sh: $checks checks, $fails failed, $skipped skipped"
[ "$fails" -eq 0 ]
