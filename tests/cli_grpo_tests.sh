#!/bin/sh
# cli_grpo_tests.sh - command-line checks of the reasoning post-training
# commands: `grad --grpo` (loss and kl against the PyTorch reference of
# tests/fixtures/grad/*/grpo_ref.json; the gradients themselves are compared
# in tests/test_grpo.c) and its bad batch files; sft-data -> train --sft ->
# eval -> grpo on the bundled byte-level model, arithmetic and Countdown (a
# few steps each: the commands work end to end, checkpoints resume exactly,
# recipes and task files are checked); the NaN guards of grpo and train
# --sft (debug_nan_step); the bundled reasoner's thinking through chat and
# serve (reasoning_content).
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

# ---- sft-data -> train --sft -> eval -> grpo (tiny runs on the bundled byte-level model)
M=models/default
"$BIN" sft-data --task arithmetic --digits 2 -n 64 --seed 3 --out "$T/pairs.jsonl" 2>"$T/err" && ok || fail "sft-data: $(cat "$T/err")"
[ "$(wc -l <"$T/pairs.jsonl")" -eq 64 ] && ok || fail "sft-data: $(wc -l <"$T/pairs.jsonl") lines, expected 64"
grep -q '"prompt":"What is [0-9]* [-+] [0-9]*?","response":".*</think>\\n<answer>[0-9]*</answer>"}' "$T/pairs.jsonl" && ok \
    || fail "sft-data: unexpected pair $(head -n 1 "$T/pairs.jsonl")"
"$BIN" sft-data --task countdown -n 8 --out "$T/cd.jsonl" 2>"$T/err" && grep -q 'Using the numbers' "$T/cd.jsonl" && ok \
    || fail "sft-data countdown: $(cat "$T/err")"
if "$BIN" train --sft --init-from $M --data "$T/pairs.jsonl" --out "$T/sft" --steps 4 --batch-size 4 --log-every 2 \
        --ckpt-every 2 --threads 2 >"$T/out" 2>"$T/err"; then ok; else fail "train --sft: $(cat "$T/err")"; fi
[ -f "$T/sft/latest/model.safetensors" ] && [ -f "$T/sft/ckpt-00000002/optimizer.bin" ] && ok || fail "train --sft: no checkpoints"
[ "$(wc -l <"$T/sft/metrics.jsonl")" -ge 2 ] && ok || fail "train --sft: metrics.jsonl"
grep -q '"thinking": true' "$T/sft/latest/generation_config.json" && ok ||
    fail "train --sft: the model trained on the thinking prompt does not think by default: $(cat "$T/sft/latest/generation_config.json")"
# exact resume: step 4 from ckpt-2 == step 4 of the whole run
sed -n 's/.*"step":4,"loss":\([0-9.]*\).*/\1/p' "$T/sft/metrics.jsonl" >"$T/l_full"
"$BIN" train --sft --resume "$T/sft/ckpt-00000002" --out "$T/sft2" --threads 2 >"$T/out" 2>"$T/err" || fail "train --sft --resume: $(cat "$T/err")"
sed -n 's/.*"step":4,"loss":\([0-9.]*\).*/\1/p' "$T/sft2/metrics.jsonl" >"$T/l_res"
[ -s "$T/l_full" ] && cmp -s "$T/l_full" "$T/l_res" && ok || fail "train --sft resume: step 4 loss $(cat "$T/l_res") vs $(cat "$T/l_full")"

"$BIN" eval -m "$T/sft/latest" --task arithmetic --digits 2 -n 6 --samples 3 --max-tokens 24 -t 2 >"$T/eval" 2>"$T/err" && ok \
    || fail "eval: $(cat "$T/err")"
head -n 1 "$T/eval" | grep -q '^{"task":"arithmetic","n":6,"samples":3,"seed":1,"pass1":[0-9.]*,"pass_k":[0-9.]*,"maj_k":[0-9.]*,.*"mean_length":[0-9.]*,"format_rate":[0-9.]*' \
    && ok || fail "eval: JSON line $(head -n 1 "$T/eval")"
grep -q 'pass@3' "$T/eval" && grep -q 'maj@3' "$T/eval" && ok || fail "eval: table $(cat "$T/eval")"
printf '{"prompt": "What is 2 + 3?", "answer": "5"}\n{"prompt": "Make 10 from 2, 5", "numbers": [2, 5], "target": 10}\n' >"$T/user.jsonl"
"$BIN" eval -m "$T/sft/latest" --task "$T/user.jsonl" --max-tokens 8 >"$T/eval" 2>"$T/err" && grep -q '"n":2,' "$T/eval" && ok \
    || fail "eval FILE.jsonl: $(cat "$T/err") $(head -n 1 "$T/eval")"
printf '{"prompt": "x"}\n' >"$T/bad.jsonl"
expect_fail "eval: bad task file" "bad.jsonl:1: missing required field 'answer'" "$BIN" eval -m "$T/sft/latest" --task "$T/bad.jsonl"
expect_fail "eval: no task" "--task is required" "$BIN" eval -m "$T/sft/latest"

# grpo: 2 steps with a checkpoint after each; resuming at step 1 repeats step 2 exactly
G="--init-from $T/sft/latest --digits 2 --prompts-per-step 2 --group-size 4 --max-new 24 --mu 2 --lr 1e-4 --beta 0.04 --threads 2"
if "$BIN" grpo $G --out "$T/grpo" --steps 2 --ckpt-every 1 >"$T/out" 2>"$T/err"; then ok; else fail "grpo: $(cat "$T/err")"; fi
[ "$(wc -l <"$T/grpo/metrics.jsonl")" -eq 2 ] && ok || fail "grpo: metrics.jsonl has $(wc -l <"$T/grpo/metrics.jsonl") lines"
for k in reward reward_accuracy reward_format accuracy length kl clip_frac rollout_tok_s t_rollout t_score t_update; do
    grep -q "\"$k\":" "$T/grpo/metrics.jsonl" || fail "grpo: metrics.jsonl lacks $k"
done
ok
grep -q 'step     2/2 | reward' "$T/err" && ok || fail "grpo: progress line $(tail -n 2 "$T/err")"
"$BIN" grpo --resume "$T/grpo/ckpt-00000001" --out "$T/grpo2" >"$T/out" 2>"$T/err" || fail "grpo --resume: $(cat "$T/err")"
strip() { sed 's/"rollout_tok_s.*//' "$1"; }
tail -n 1 "$T/grpo/metrics.jsonl" | strip /dev/stdin >"$T/m_full"
tail -n 1 "$T/grpo2/metrics.jsonl" | strip /dev/stdin >"$T/m_res"
grep -q '"step":2' "$T/m_full" && cmp -s "$T/m_full" "$T/m_res" && ok || fail "grpo resume: $(cat "$T/m_res") vs $(cat "$T/m_full")"
# NaN guards: a gradient poisoned at step 1 (debug_nan_step) is reported and its update skipped,
# so the weights after step 2 are those after step 1; with max_nan_skips 0 the run stops
if "$BIN" grpo $G --out "$T/gnan" --steps 2 --ckpt-every 1 --debug-nan-step 1 >"$T/out" 2>"$T/err"; then ok
else fail "grpo --debug-nan-step: $(cat "$T/err")"; fi
grep -q 'step 1: non-finite loss or gradient, update skipped' "$T/err" && ok || fail "grpo NaN guard: no skip message: $(cat "$T/err")"
tail -n 1 "$T/gnan/metrics.jsonl" | grep -q '"step":2,.*"skipped":true' && ok || fail "grpo NaN guard: step 2 not marked skipped"
head -n 1 "$T/gnan/metrics.jsonl" | grep -q '"skipped"' && fail "grpo NaN guard: step 1 marked skipped" || ok
cmp -s "$T/gnan/ckpt-00000001/model.safetensors" "$T/gnan/ckpt-00000002/model.safetensors" && ok \
    || fail "grpo NaN guard: the skipped step changed the weights"
cmp -s "$T/gnan/ckpt-00000001/model.safetensors" "$T/grpo/ckpt-00000001/model.safetensors" && ok \
    || fail "grpo NaN guard: step 1 differs from the unpoisoned run"
expect_fail "grpo: NaN guard stops" "step 0: 1 non-finite steps in a row; stopping" \
    "$BIN" grpo $G --out "$T/gnan0" --steps 2 --debug-nan-step 0 --max-nan-skips 0
S="--init-from $T/sft/latest --data $T/pairs.jsonl --batch-size 4 --threads 2"
if "$BIN" train --sft $S --out "$T/snan" --steps 2 --ckpt-every 1 --debug-nan-step 1 >"$T/out" 2>"$T/err"; then ok
else fail "train --sft --debug-nan-step: $(cat "$T/err")"; fi
grep -q 'step 1: non-finite loss or gradient, update skipped' "$T/err" && ok || fail "sft NaN guard: no skip message: $(cat "$T/err")"
cmp -s "$T/snan/ckpt-00000001/model.safetensors" "$T/snan/ckpt-00000002/model.safetensors" && ok \
    || fail "sft NaN guard: the skipped step changed the weights"
cmp -s "$T/snan/ckpt-00000001/model.safetensors" "$T/sft/latest/model.safetensors" && fail "sft NaN guard: step 1 did not train" || ok
expect_fail "train --sft: NaN guard stops" "step 0: 1 non-finite steps in a row; stopping" \
    "$BIN" train --sft $S --out "$T/snan0" --steps 2 --debug-nan-step 0 --max-nan-skips 0

# Countdown end to end: sft-data -> train --sft -> grpo -> eval, a few steps each
"$BIN" sft-data --task countdown -n 32 --seed 5 --out "$T/cd32.jsonl" 2>"$T/err" && [ "$(wc -l <"$T/cd32.jsonl")" -eq 32 ] && ok \
    || fail "sft-data countdown -n 32: $(cat "$T/err")"
if "$BIN" train --sft --init-from $M --data "$T/cd32.jsonl" --out "$T/cdsft" --steps 2 --batch-size 4 --threads 2 \
        >"$T/out" 2>"$T/err"; then ok; else fail "train --sft countdown: $(cat "$T/err")"; fi
if "$BIN" grpo --init-from "$T/cdsft/latest" --task countdown --out "$T/cdgrpo" --steps 2 --prompts-per-step 2 --group-size 4 \
        --max-new 32 --lr 1e-4 --threads 2 --eval-every 1 --eval-n 4 >"$T/out" 2>"$T/err"; then ok
else fail "grpo countdown: $(cat "$T/err")"; fi
[ "$(wc -l <"$T/cdgrpo/metrics.jsonl" 2>/dev/null)" = 2 ] && grep -q '"eval_pass1":' "$T/cdgrpo/metrics.jsonl" && ok \
    || fail "grpo countdown: metrics $(cat "$T/cdgrpo/metrics.jsonl" 2>/dev/null)"
grep -q 'task countdown' "$T/err" && ok || fail "grpo countdown: banner $(head -n 1 "$T/err")"
"$BIN" eval -m "$T/cdgrpo/latest" --task countdown -n 4 --max-tokens 32 -t 2 >"$T/eval" 2>"$T/err" \
    && head -n 1 "$T/eval" | grep -q '^{"task":"countdown","n":4,' && ok || fail "eval countdown: $(cat "$T/err") $(head -n 1 "$T/eval")"
"$BIN" plot --out "$T/grpo.png" "$T/grpo" >"$T/out" 2>"$T/err" && [ -s "$T/grpo.png" ] && grep -q 'GRPO reward' "$T/err" && ok \
    || fail "plot of a grpo run: $(cat "$T/err")"
"$BIN" grpo --bench-rollouts --init-from "$T/sft/latest" --digits 2 --prompts-per-step 2 --group-size 4 --max-new 16 \
    --threads 2 >"$T/out" 2>"$T/err" && grep -q '"same_tokens":true' "$T/out" && ok || fail "grpo --bench-rollouts: $(cat "$T/out" "$T/err")"
# the bundled reasoner recipes parse (one short step each, paths overridden)
"$BIN" train --sft --config models/reasoner/recipe-sft.json --data "$T/pairs.jsonl" --out "$T/rsft" --steps 1 --batch-size 2 \
    >"$T/out" 2>"$T/err" && ok || fail "models/reasoner/recipe-sft.json: $(cat "$T/err")"
"$BIN" grpo --config models/reasoner/recipe-grpo.json --init-from "$T/sft/latest" --out "$T/rgrpo" --steps 1 \
    --prompts-per-step 1 --group-size 2 --max-new 8 --eval-every 0 >"$T/out" 2>"$T/err" && ok \
    || fail "models/reasoner/recipe-grpo.json: $(cat "$T/err")"
expect_fail "grpo: unknown key" "unknown option or recipe key '--no-such'" "$BIN" grpo $G --no-such 1
expect_fail "grpo: bad norm" "norm: seq, token or const" "$BIN" grpo $G --norm mean
expect_fail "grpo: group of one" "group_size >= 2" "$BIN" grpo $G --group-size 1
expect_fail "grpo: no init" "init_from" "$BIN" grpo --steps 1
printf '{"steps": 1, "bogus": 2}' >"$T/r.json"
expect_fail "grpo: unknown recipe key in file" "unknown recipe key 'bogus'" "$BIN" grpo --config "$T/r.json"
expect_fail "train --sft: no data" "data" "$BIN" train --sft --init-from $M

# the bundled reasoner: chat shows its reasoning apart from the answer (thinking is the model's
# default: its generation_config.json says "thinking": true), serve returns it as
# reasoning_content (greedy, so the same every run); --no-think turns the default off
R=${DS_REASONER:-models/reasoner}
printf 'What is 12 + 34?\n' | "$BIN" chat -m "$R" --no-think --temperature 0 -n 8 >"$T/chat" 2>"$T/err"
if grep -q 'thinking\]' "$T/chat"; then fail "chat -m $R --no-think still thinks: $(head -c 300 "$T/chat")"; else ok; fi
printf 'What is 12 + 34?\n' | "$BIN" chat -m "$R" --temperature 0 -n 96 >"$T/chat" 2>"$T/err"
if grep -q '^\[thinking\]' "$T/chat" && grep -q '^\[/thinking\]' "$T/chat" && grep -q '<answer>[0-9]*</answer>' "$T/chat" \
    && sed -n '/^\[thinking\]/,/^\[\/thinking\]/p' "$T/chat" | grep -q 'write'; then ok
else fail "chat -m $R: $(cat "$T/chat" "$T/err" | head -c 400)"; fi
"$BIN" serve -m "$R" --port 0 >"$T/srv.out" 2>"$T/srv.err" &
SP=$!
port=
i=0
while [ $i -lt 150 ]; do
    port=$(sed -n 's|.*listening on http://[^:]*:\([0-9]*\)/.*|\1|p' "$T/srv.err" 2>/dev/null)   # the file may not exist yet
    [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.2
    i=$((i + 1))
done
curl -s "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"messages":[{"role":"user","content":"What is 12 + 34?"}],"max_tokens":96,"temperature":0}' >"$T/resp" 2>&1
kill $SP 2>/dev/null
wait $SP 2>/dev/null
if python3 - "$T/resp" <<'PYEOF'
import json, re, sys
m = json.load(open(sys.argv[1]))["choices"][0]["message"]
sys.exit(0 if "write" in (m.get("reasoning_content") or "") and re.search(r"<answer>\d+</answer>", m["content"]) else 1)
PYEOF
then ok; else fail "serve -m $R: no reasoning_content: $(head -c 400 "$T/resp")"; fi

echo "cli_grpo_tests.sh: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
