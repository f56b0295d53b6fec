#!/bin/sh
# cli_grpo_tests.sh - command-line checks of the reasoning post-training
# commands: `grad --grpo` (loss and kl against the PyTorch reference of
# tests/fixtures/grad/*/grpo_ref.json; the gradients themselves are compared
# in tests/test_grpo.c) and its bad batch files.
#
#   sh tests/cli_grpo_tests.sh ./deepseek        (from the repository root)
#
# Bad input exits non-zero below 128 with a message naming the field. Prints
# each failed check and exits 1 if any failed.
set -u
BIN=${1:?usage: sh tests/cli_grpo_tests.sh path/to/deepseek}
[ -x "$BIN" ] || { echo "cli_grpo_tests.sh: $BIN is not executable" >&2; exit 2; }
[ -d tests/fixtures/tiny-v3 ] || { echo "cli_grpo_tests.sh: run from the repository root" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_cli_grpo.XXXXXX) || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

checks=0
fails=0
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

# number of a JSON key in a one-line object: jnum KEY FILE
jnum() { sed -n "s/.*\"$1\": *\([-0-9.eE+]*\).*/\1/p" "$2" | head -n 1; }
# |a - b| <= tol * |b|
close() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(a != "" && d <= t * m) }'; }

# ---- grad --grpo against the PyTorch references
for f in tiny-v3 tiny-v2-lite tiny-v2; do
    R=tests/fixtures/grad/$f
    if "$BIN" grad -m tests/fixtures/$f --grpo $R/grpo_batch.json --out "$T/$f.safetensors" >"$T/out" 2>"$T/err"; then ok
    else fail "grad --grpo $f: $(cat "$T/err")"; continue; fi
    tr -d '\n' <$R/grpo_ref.json >"$T/ref"
    for k in loss kl; do
        if close "$(jnum $k "$T/out")" "$(jnum $k "$T/ref")" 1e-4; then ok
        else fail "grad --grpo $f: $k $(jnum $k "$T/out") vs torch $(jnum $k "$T/ref")"; fi
    done
    [ -s "$T/$f.safetensors" ] && ok || fail "grad --grpo $f: no gradient file"
done

# ---- bad batch files
B='"epsilon":0.2,"beta":0.1'
bad() {   # bad NAME PATTERN JSON
    printf '%s' "$3" >"$T/bad.json"
    expect_fail "grad --grpo: $1" "$2" "$BIN" grad -m tests/fixtures/tiny-v3 --grpo "$T/bad.json" --out "$T/bad.safetensors"
}
bad "lengths disagree" "samples[0].old_logprobs: 1 values for 2 completion tokens" \
    "{$B,\"samples\":[{\"prompt\":[1,2],\"completion\":[3,4],\"advantage\":1,\"old_logprobs\":[-1],\"ref_logprobs\":[-1,-2]}]}"
bad "id out of range" "samples[0].completion[1] = 320 is out of range" \
    "{$B,\"samples\":[{\"prompt\":[1,2],\"completion\":[3,320],\"advantage\":1,\"old_logprobs\":[-1,-2],\"ref_logprobs\":[-1,-2]}]}"
bad "empty completion" "samples[1].completion: empty" \
    "{$B,\"samples\":[{\"prompt\":[1],\"completion\":[3],\"advantage\":1,\"old_logprobs\":[-1],\"ref_logprobs\":[-1]},{\"prompt\":[1],\"completion\":[],\"advantage\":1,\"old_logprobs\":[],\"ref_logprobs\":[]}]}"
bad "non-finite" "samples[0].ref_logprobs[0]: not a finite number" \
    "{$B,\"samples\":[{\"prompt\":[1],\"completion\":[3],\"advantage\":1,\"old_logprobs\":[-1],\"ref_logprobs\":[-1e300]}]}"
bad "bad JSON" "invalid JSON" "{$B,\"samples\":[{\"prompt\":[1]"
bad "missing field" "samples[0].advantage: missing" \
    "{$B,\"samples\":[{\"prompt\":[1],\"completion\":[3],\"old_logprobs\":[-1],\"ref_logprobs\":[-1]}]}"
expect_fail "grad --grpo: no such file" "nowhere.json" "$BIN" grad -m tests/fixtures/tiny-v3 --grpo "$T/nowhere.json" --out "$T/x.safetensors"
expect_fail "grad: --tokens and --grpo" "exclude each other" "$BIN" grad -m tests/fixtures/tiny-v3 --tokens 1,2 --grpo "$T/bad.json" --out "$T/x.safetensors"

echo "cli_grpo_tests.sh: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
