#!/bin/sh
# cli_newcomer_tests.sh - the papercuts a newcomer hits first, kept fixed:
#
#   1. set-up: README's first command and .ci/run install through
#      tools/setup.sh (the one package list), never by themselves; the script
#      runs without sudo as root and with it otherwise; every apt package it
#      lists is installed on this machine.
#   2. output folders are made as needed (prepare-data, train, train
#      --export, convert, plot, logits, grad), and a file in the way is an
#      error naming it.
#   3. plot draws training CE against validation CE on an axis that shows
#      the start of the curve (its summary line says what it drew).
#   4. --version / -V: version, commit, compiler, kernels, ISA level; DS_ISA.
#   5. a wrong -m is reported as a model problem, by every command taking -m.
#
#   sh tests/cli_newcomer_tests.sh ./deepseek        (from the repository root)
#
# Prints each failed check and exits 1 if any failed.
set -u
BIN=${1:?usage: sh tests/cli_newcomer_tests.sh path/to/deepseek}
FX=tests/fixtures
[ -x "$BIN" ] || { echo "cli_newcomer_tests.sh: $BIN is not executable" >&2; exit 2; }
[ -f README.md ] && [ -d "$FX/tiny-v3" ] || { echo "cli_newcomer_tests.sh: run from the repository root" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_cli_newcomer.XXXXXX) || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

checks=0
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
ok() { checks=$((checks + 1)); }
check() { # check NAME CONDITION...: runs the condition (a command)
    name=$1
    shift
    if "$@"; then ok; else fail "$name"; fi
}

# expect_fail NAME PATTERN CMD...: non-zero exit below 128, PATTERN (fixed
# string) on stderr.
expect_fail() {
    name=$1 pat=$2
    shift 2
    checks=$((checks + 1))
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    if [ "$rc" -eq 0 ]; then fail "$name: exit 0, expected an error"; return; fi
    if [ "$rc" -ge 128 ]; then fail "$name: killed by a signal (exit $rc)"; return; fi
    grep -qF -- "$pat" "$T/err" || fail "$name: stderr lacks '$pat': $(head -c 300 "$T/err")"
}

# expect_ok NAME CMD...: exit 0; stdout in $T/out, stderr in $T/err.
expect_ok() {
    name=$1
    shift
    checks=$((checks + 1))
    "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    if [ "$rc" -ne 0 ]; then fail "$name: exit $rc: $(head -c 300 "$T/err")"; return 1; fi
    return 0
}

# ------------------------------------------------- 1. one set-up, as root or not

# README's first ```sh block (the set-up command) and its second (the tests)
awk '/^```sh$/ { n++; inb = 1; next } /^```$/ { inb = 0 } inb && n == 1' README.md >"$T/setup_cmd"
awk '/^```sh$/ { n++; inb = 1; next } /^```$/ { inb = 0 } inb && n == 2' README.md >"$T/test_cmd"
check "README's first command is one line" test "$(grep -c . "$T/setup_cmd")" -eq 1
check "README's first command runs tools/setup.sh: $(cat "$T/setup_cmd")" grep -q '^sh tools/setup.sh && ' "$T/setup_cmd"
check "README's first command builds and runs the main job" grep -q '&& make -j && ./deepseek generate ' "$T/setup_cmd"
check "README's first command installs nothing itself (no sudo/apt/pip): $(cat "$T/setup_cmd")" \
    sh -c "! grep -q -e sudo -e apt-get -e 'pip install' '$T/setup_cmd'"
check "README's second command is make test" test "$(cat "$T/test_cmd")" = "make test"
grep -v '^[[:space:]]*#' .ci/run >"$T/ci"
check ".ci/run runs tools/setup.sh" grep -q -E '^sh tools/setup.sh( --with-torch)?$' "$T/ci"
check ".ci/run installs nothing itself (no apt-get/pip)" sh -c "! grep -q -e apt-get -e 'pip install' '$T/ci'"
check ".ci/run runs make test" grep -q '^make test$' "$T/ci"

if expect_ok "setup.sh --print" sh tools/setup.sh --print; then
    apt=$(sed -n 's/^apt: //p' "$T/out")
    pip=$(sed -n 's/^pip: //p' "$T/out")
    check "setup.sh lists apt packages" test -n "$apt"
    check "setup.sh lists pip packages" test -n "$pip"
    for p in build-essential libjansson-dev libopenblas-dev libmicrohttpd-dev chromium; do
        case " $apt " in *" $p "*) ok ;; *) fail "setup.sh's apt list lacks $p" ;; esac
    done
    for p in openai selenium huggingface_hub; do
        case " $pip " in *" $p "*) ok ;; *) fail "setup.sh's pip list lacks $p" ;; esac
    done
    # the list is what this machine has (dpkg systems): a package added to the
    # list but not installed here is caught before a test mysteriously fails
    if command -v dpkg-query >/dev/null 2>&1; then
        for p in $apt; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && ok ||
                fail "setup.sh lists $p but it is not installed here (run: sh tools/setup.sh)"
        done
    fi
fi
# as root: no sudo (a minimal Debian has none); as a user: sudo
if expect_ok "setup.sh --dry-run as root" env DS_SETUP_UID=0 sh tools/setup.sh --dry-run; then
    check "as root, no sudo: $(head -c 200 "$T/out")" sh -c "! grep -q sudo '$T/out'"
    check "as root, apt-get install the list" grep -q "^env DEBIAN_FRONTEND=noninteractive apt-get install -y $apt\$" "$T/out"
    check "as root, pip install the list" grep -q "^python3 -m pip install --break-system-packages $pip\$" "$T/out"
fi
if expect_ok "setup.sh --dry-run as a user" env DS_SETUP_UID=1000 sh tools/setup.sh --dry-run; then
    check "as a user, every command through sudo" test "$(grep -vc '^sudo ' "$T/out")" -eq 0
fi

# ------------------------------------------------- 2. output folders are made

i=0
while [ $i -lt 30 ]; do
    echo "Line $i: to be, or not to be, that is the question; whether 'tis nobler in the mind." >>"$T/corpus.txt"
    i=$((i + 1))
done
: >"$T/afile"
if expect_ok "prepare-data --out in missing folders" "$BIN" prepare-data --out "$T/new/data/x" --byte-tokenizer "$T/corpus.txt"; then
    check "prepare-data made the folders and wrote data.json" test -f "$T/new/data/x/data.json"
fi
expect_fail "prepare-data --out under a file" "$T/afile exists and is not a folder" \
    "$BIN" prepare-data --out "$T/afile/x" --byte-tokenizer "$T/corpus.txt"

cat >"$T/recipe.json" <<EOF
{ "model": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": 12, "kv_lora_rank": 8,
            "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "intermediate_size": 24,
            "moe_intermediate_size": 8, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2},
  "data": "$T/new/data/x", "out": "$T/runs/deep/run", "seq_len": 16, "batch_size": 2, "steps": 2, "warmup_steps": 1,
  "eval_every": 2, "eval_tokens": 64, "ckpt_every": 2, "log_every": 1, "peak_gflops": 10 }
EOF
if expect_ok "train: recipe out in missing folders" "$BIN" train --config "$T/recipe.json" -t 1; then
    check "train made the folders and a checkpoint" test -f "$T/runs/deep/run/latest/model.safetensors"
    expect_ok "train --export --out in missing folders" \
        "$BIN" train --export "$T/runs/deep/run/latest" --out "$T/exp/a/b" --dtype bf16 &&
        check "export wrote the model" test -f "$T/exp/a/b/model.safetensors"
    expect_fail "train --export --out under a file" "$T/afile exists and is not a folder" \
        "$BIN" train --export "$T/runs/deep/run/latest" --out "$T/afile/b"
    sed "s#\"out\": \"[^\"]*\"#\"out\": \"$T/afile/run\"#" "$T/recipe.json" >"$T/recipe2.json"
    expect_fail "train: recipe out under a file" "$T/afile exists and is not a folder" \
        "$BIN" train --config "$T/recipe2.json" -t 1
fi

M=$FX/tiny-v3
expect_ok "logits --out in missing folders" "$BIN" logits -m "$M" --tokens 1,2 --out "$T/l/o/g.f32" &&
    check "logits wrote the file" test -s "$T/l/o/g.f32"
expect_ok "grad --out in missing folders" "$BIN" grad -m "$M" --tokens 1,2,3,4 --out "$T/g/r/a.safetensors" &&
    check "grad wrote the file" test -s "$T/g/r/a.safetensors"
expect_fail "grad --out under a file" "$T/afile exists and is not a folder" \
    "$BIN" grad -m "$M" --tokens 1,2,3,4 --out "$T/afile/a.safetensors"
expect_ok "convert -o in missing folders" "$BIN" convert -m "$M" -o "$T/c/o/n.gguf" --type f16 -q &&
    check "convert wrote the file" test -s "$T/c/o/n.gguf"
expect_fail "convert -o under a file" "$T/afile exists and is not a folder" "$BIN" convert -m "$M" -o "$T/afile/n.gguf" -q
expect_ok "plot --out in missing folders" "$BIN" plot --out "$T/p/l/o.png" models/default/metrics.jsonl &&
    check "plot wrote the file" test -s "$T/p/l/o.png"
expect_fail "plot --out under a file" "$T/afile exists and is not a folder" \
    "$BIN" plot --out "$T/afile/o.png" models/default/metrics.jsonl
expect_ok "train-tokenizer -o in missing folders" "$BIN" train-tokenizer --vocab-size 300 -o "$T/tk/a/b" "$T/corpus.txt" &&
    check "train-tokenizer wrote the file" test -s "$T/tk/a/b/tokenizer.json"

# ------------------------------------------------- 3. the training chart

# models/default/metrics.jsonl: training CE 5.03 at step 10, validation 5.61
# at step 0, both ending near 1.3-1.45
if expect_ok "plot the default model's metrics" "$BIN" plot --out "$T/t.png" MoE=models/default/metrics.jsonl \
    dense=models/default/metrics-dense.jsonl; then
    check "plot draws training CE: $(cat "$T/err")" grep -q 'training ce (240 points)' "$T/err"
    check "plot draws validation CE: $(cat "$T/err")" grep -q 'validation val_loss (26 points)' "$T/err"
    axis=$(sed -n 's/.*y axis log \([0-9.]*\)\.\.\([0-9.]*\),.*/\1 \2/p' "$T/err")
    check "plot: log axis: $(cat "$T/err")" test -n "$axis"
    # the whole curve is on the axis: from below the last training CE (1.25)
    # to above the first validation value (5.61)
    check "plot: axis $axis covers 1.25..5.61" awk -v a="$axis" 'BEGIN { split(a, r, " "); exit !(r[1] < 1.25 && r[2] > 5.61) }'
fi
expect_ok "plot --total-loss" "$BIN" plot --total-loss --out "$T/t2.png" models/default/metrics.jsonl &&
    check "plot --total-loss says so: $(cat "$T/err")" grep -q 'and total loss dashed' "$T/err"
expect_ok "plot --linear" "$BIN" plot --linear --out "$T/t3.png" models/default/metrics.jsonl &&
    check "plot --linear: $(cat "$T/err")" grep -q 'y axis linear' "$T/err"
# a metrics file without "ce" (older runs): the total loss, and the summary says so
printf '{"step":0,"val_loss":5.5}\n{"step":10,"loss":6.0}\n{"step":20,"loss":4.0,"val_loss":4.5}\n' >"$T/old.jsonl"
expect_ok "plot an old metrics file" "$BIN" plot --out "$T/t4.png" "$T/old.jsonl" &&
    check "plot of old metrics says total: $(cat "$T/err")" grep -q 'training loss (total' "$T/err"

# ------------------------------------------------- 4. --version

for v in --version -V; do
    if expect_ok "$v" "$BIN" "$v"; then
        check "$v: version line" grep -q '^deepseek.c [0-9]' "$T/out"
        check "$v: compiler" grep -q '^compiler:  [a-z]' "$T/out"
        check "$v: kernels" grep -qE '^kernels:   (avx512vnni|avx512|avx2|generic) ' "$T/out"
        commit=$(sed -n 's/^commit:    //p' "$T/out")
        # built by `make` in this checkout: its HEAD (maybe -dirty); outside git: unknown
        if head=$(git rev-parse --short=12 HEAD 2>/dev/null) && [ -z "$(git rev-parse --show-prefix)" ]; then
            case "$commit" in "$head"*) ok ;; *) fail "$v: commit '$commit', HEAD is $head (a binary from before the last commit? make rebuilds it)" ;; esac
        else
            check "$v: commit unknown outside git" test "$commit" = unknown
        fi
    fi
done
check "--help mentions --version" sh -c "'$BIN' --help | grep -q -- --version"
# the ISA level (src/core/cpu.h): printed, lowered by DS_ISA, a bad DS_ISA refused
if expect_ok "--version" "$BIN" --version; then
    check "--version: cpu line names the isa level" grep -qE '^cpu: .*isa (generic|avx2|avx512|avx512vnni|amx) \(cpu:' "$T/out"
fi
if expect_ok "DS_ISA=generic --version" env DS_ISA=generic "$BIN" --version; then
    check "DS_ISA=generic: isa generic" grep -q 'isa generic (cpu:.*DS_ISA=generic)' "$T/out"
    check "DS_ISA=generic: generic kernels" grep -q '^kernels:   generic' "$T/out"
fi
expect_fail "DS_ISA=bogus refused" "DS_ISA=bogus is not an ISA level" env DS_ISA=bogus "$BIN" info -m "$FX/tiny-v3"

# ------------------------------------------------- 5. a wrong -m

mkdir -p "$T/notamodel" "$T/noweights"
cp "$M/config.json" "$T/noweights/"
echo hi >"$T/file.txt"
for c in generate chat info logits serve bench grad convert; do
    case $c in
        generate) args="--prompt hi" ;;
        logits) args="--tokens 1 --out $T/x.f32" ;;
        grad) args="--tokens 1,2 --out $T/x.safetensors" ;;
        convert) args="-o $T/x.gguf" ;;
        serve) args="--port 0" ;;
        bench) args="-p 1 -n 1 --no-bw" ;;
        *) args="" ;;
    esac
    # shellcheck disable=SC2086
    expect_fail "$c -m a missing path" "model '$T/nope' does not exist" "$BIN" $c -m "$T/nope" $args
    # shellcheck disable=SC2086
    expect_fail "$c -m a folder without config.json" "model '$T/notamodel' is not a model folder: it has no config.json" \
        "$BIN" $c -m "$T/notamodel" $args
    # shellcheck disable=SC2086
    expect_fail "$c -m a folder without weights" "model '$T/noweights' has a config.json but no weights" \
        "$BIN" $c -m "$T/noweights" $args
    # shellcheck disable=SC2086
    expect_fail "$c -m a file that is not .gguf" "model '$T/file.txt' is a file but not a .gguf file" \
        "$BIN" $c -m "$T/file.txt" $args
done
expect_fail "generate -m a missing .gguf" "model '$T/m.gguf' does not exist" "$BIN" generate -m "$T/m.gguf" --prompt hi
expect_fail "info with DEEPSEEK_MODEL a missing path" "model '$T/nope' does not exist (from DEEPSEEK_MODEL" \
    env DEEPSEEK_MODEL="$T/nope" "$BIN" info
# then what is missing inside a real model folder: the tokenizer
expect_fail "generate --prompt on a model without tokenizer.json" "tokenizer" "$BIN" generate -m "$M" --prompt hi

if [ "$fails" -ne 0 ]; then
    echo "cli_newcomer_tests.sh: $fails of $checks checks failed"
    exit 1
fi
echo "cli_newcomer_tests.sh: $checks checks passed"
