#!/bin/sh
# cli_train_bf16_tests.sh - command-line checks for `train --precision`:
# a bad value and (with DS_ISA=avx2) a CPU level without AVX512-BF16 are
# refused with a message naming the value / the missing flag; on a CPU with
# AVX512-BF16 a tiny bf16 run trains (finite losses within 2 % of the fp32
# run's on the same batches), records "precision": "bf16" in its checkpoint
# and resumes in bf16 bit for bit (else reported as skipped, naming the flag).
#
#   sh tests/cli_train_bf16_tests.sh ./deepseek        (from the repository root)
set -u
BIN=${1:?usage: sh tests/cli_train_bf16_tests.sh path/to/deepseek}
[ -x "$BIN" ] || { echo "cli_train_bf16_tests.sh: $BIN is not executable" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_cli_bf16.XXXXXX) || exit 2
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
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 0 ]; then fail "$name: exit 0, expected an error"; return; fi
    if [ "$rc" -ge 128 ]; then fail "$name: killed by a signal (exit $rc)"; return; fi
    grep -qF -- "$pat" "$T/err" || fail "$name: stderr lacks '$pat': $(head -c 300 "$T/err")"
}

i=0
while [ $i -lt 40 ]; do
    echo "Line $i: to be, or not to be, that is the question; whether 'tis nobler in the mind." >>"$T/corpus.txt"
    i=$((i + 1))
done
"$BIN" prepare-data --out "$T/data" --byte-tokenizer --val-fraction 0.2 "$T/corpus.txt" >/dev/null 2>"$T/err" \
    || { echo "cli_train_bf16_tests.sh: prepare-data failed: $(cat "$T/err")"; exit 1; }
cat >"$T/recipe.json" <<EOF2
{ "model": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": 32, "kv_lora_rank": 24,
            "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "intermediate_size": 72,
            "moe_intermediate_size": 24, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2},
  "data": "$T/data", "seq_len": 40, "batch_size": 4, "steps": 6, "warmup_steps": 1, "lr": 0.003,
  "eval_every": 3, "eval_tokens": 256, "ckpt_every": 3, "log_every": 1, "peak_gflops": 10, "seed": 5 }
EOF2

expect_fail "train: bad precision" "'precision' must be \"fp32\" or \"bf16\"" \
    "$BIN" train --config "$T/recipe.json" --out "$T/bad" --precision fp16
expect_fail "train: bf16 at DS_ISA=avx2" "avx512_bf16" \
    env DS_ISA=avx2 "$BIN" train --config "$T/recipe.json" --out "$T/avx2" --precision bf16
grep -qF "DS_ISA=avx2" "$T/err" && ok || fail "train: bf16 refusal does not show the ISA: $(head -c 300 "$T/err")"

"$BIN" train --config "$T/recipe.json" --out "$T/fp32" -t 2 >/dev/null 2>"$T/err" || fail "train fp32: $(tail -c 300 "$T/err")"
"$BIN" train --config "$T/recipe.json" --out "$T/bf16" -t 2 --precision bf16 >/dev/null 2>"$T/err"
if [ $? -ne 0 ] && grep -qF "avx512_bf16" "$T/err"; then
    skipped=$((skipped + 1))
    echo "SKIPPED cli_train_bf16_tests.sh: bf16 training runs (this CPU or DS_ISA lacks avx512_bf16: $(head -c 200 "$T/err"))"
else
    ok
    grep -qF "(bf16 GEMMs)" "$T/err" && ok || fail "train bf16: banner lacks '(bf16 GEMMs)': $(head -c 400 "$T/err")"
    # without peak_gflops the MFU's peak is the measured fp32 one doubled (vdpbf16ps), and says so
    sed 's/"peak_gflops": 10, //' "$T/recipe.json" >"$T/recipe-nopeak.json"
    "$BIN" train --config "$T/recipe-nopeak.json" --out "$T/bf16peak" -t 1 --steps 1 --precision bf16 >/dev/null 2>"$T/err" \
        || fail "train bf16 (measured peak): $(tail -c 300 "$T/err")"
    grep -qF "(measured fp32 x 2 for vdpbf16ps)" "$T/err" && ok \
        || fail "train bf16: banner does not say the peak is doubled: $(head -c 400 "$T/err")"
    grep -q '"precision": *"bf16"' "$T/bf16/latest/trainer_state.json" && ok || fail "train bf16: checkpoint recipe lacks precision bf16"
    # same batches: per-step CE within 2 % of fp32's, all finite, and not identical (bf16 ran)
    python3 - "$T/fp32/metrics.jsonl" "$T/bf16/metrics.jsonl" >"$T/cmp" 2>&1 <<'EOF2'
import json, math, sys
a = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
b = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l]
assert len(a) == len(b) == 6, (len(a), len(b))
rel = [abs(y["ce"] - x["ce"]) / x["ce"] for x, y in zip(a, b)]
assert all(math.isfinite(y["loss"]) for y in b), "non-finite bf16 loss"
assert max(rel) <= 0.02, f"bf16 vs fp32 CE differ by {max(rel):.4f}"
assert max(rel) > 0, "bf16 losses equal fp32's bit for bit: bf16 did not run"
print("max rel", max(rel))
EOF2
    [ $? -eq 0 ] && ok || fail "train bf16 vs fp32: $(cat "$T/cmp")"
    # resume from step 3 in bf16 (the checkpoint's recipe): the same losses as the straight run
    "$BIN" train --resume "$T/bf16/ckpt-00000003" --out "$T/bf16r" -t 1 >/dev/null 2>"$T/err" \
        || fail "train bf16 resume: $(tail -c 300 "$T/err")"
    s1=$(grep '"step":6,"loss"' "$T/bf16/metrics.jsonl" | grep -o '"loss":[^,]*')
    s2=$(grep '"step":6,"loss"' "$T/bf16r/metrics.jsonl" | grep -o '"loss":[^,]*')
    [ -n "$s1" ] && [ "$s1" = "$s2" ] && ok || fail "train bf16 resume: step 6 $s2, straight run $s1"
fi

echo "cli_train_bf16_tests.sh: $checks checks, $fails failed, $skipped skipped"
[ "$fails" -eq 0 ]
