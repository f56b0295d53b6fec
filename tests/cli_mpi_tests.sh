#!/bin/sh
# cli_mpi_tests.sh - one model split over N processes with OpenMPI
# (mpirun -np N ./deepseek ...; src/dist/, expert parallelism).
#
#   sh tests/cli_mpi_tests.sh ./deepseek        (from the repository root)
#
# For N = 1, 2 and 3 ranks (3 does not divide 16 or 4 experts) on the tiny
# V3, V2-Lite, V2 and FP8 fixtures and a Q4_K GGUF: `logits` (prefill and
# --incremental, main model and --mtp) is byte-identical to the
# single-process run, and so is `generate`'s output (greedy, seeded,
# --mtp), and a text prompt on the bundled model. `info` shows each rank's
# experts and weight bytes. Faults: ranks on different models refuse to
# start; bad input is reported once; a rank that cannot open the model
# says so; commands not yet distributed refuse (serve on N ranks:
# tests/cli_mpi_server_tests.sh); more ranks than experts
# refuse; a rank killed with kill -9 mid-generation ends the job within
# seconds with a message naming it.
# Prints each failed check and exits 1 if any failed.
set -u
BIN=${1:?usage: sh tests/cli_mpi_tests.sh path/to/deepseek}
FX=tests/fixtures
[ -x "$BIN" ] || { echo "cli_mpi_tests.sh: $BIN is not executable" >&2; exit 2; }
[ -d "$FX/tiny-v3" ] || { echo "cli_mpi_tests.sh: run from the repository root" >&2; exit 2; }
MPI_TEST=cli_mpi_tests.sh . tests/mpi_env.sh   # mpirun present; root and container settings for OpenMPI
T=$(mktemp -d /tmp/ds_cli_mpi.XXXXXX) || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

# more ranks than cores, and no pinning (the ranks share this machine's
# cores; every command runs -t 1: ranks x threads busy threads on 2 cores
# would crawl)
run_np() { n=$1; shift; mpirun --oversubscribe --bind-to none -np "$n" "$@"; }

checks=0
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# same NAME REF CMD...: CMD exits 0 and its stdout is byte-identical to the file REF
same() {
    name=$1 ref=$2
    shift 2
    checks=$((checks + 1))
    "$@" >"$T/out" 2>"$T/err" || { fail "$name: exit $?: $(tail -c 400 "$T/err")"; return; }
    cmp -s "$ref" "$T/out" || fail "$name: output differs from one process: $(head -c 200 "$T/out") vs $(head -c 200 "$ref")"
}

# same_file NAME REF OUT CMD...: CMD exits 0 and writes OUT byte-identical to REF
same_file() {
    name=$1 ref=$2 out=$3
    shift 3
    checks=$((checks + 1))
    rm -f "$out"
    "$@" >"$T/out" 2>"$T/err" || { fail "$name: exit $?: $(tail -c 400 "$T/err")"; return; }
    cmp -s "$ref" "$out" || fail "$name: logits differ from one process"
}

# expect_fail NAME PATTERN CMD...: non-zero exit, PATTERN (fixed string) in
# stdout+stderr; stderr in $T/err
expect_fail() {
    name=$1 pat=$2
    shift 2
    checks=$((checks + 1))
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    [ "$rc" -ne 0 ] || { fail "$name: exit 0, expected an error"; return 1; }
    grep -q -F -e "$pat" "$T/err" "$T/out" || { fail "$name: no '$pat' in: $(head -c 400 "$T/err")"; return 1; }
    return 0
}

TOK=3,17,101,5,250,9,44,12,7,199,2
# ------------------------------------------------ logits and generate, N = 1, 2, 3
for m in tiny-v3 tiny-v2-lite tiny-v2 tiny-v3-fp8 gguf/kq.llama-q4_k_m.gguf; do
    M=$FX/$m
    mtp=0
    "$BIN" info -m "$M" | grep -q '^layers.* MTP$' && mtp=1
    # the single-process references
    "$BIN" logits -m "$M" -t 1 --tokens $TOK --out "$T/ref.f32" 2>/dev/null || fail "$m: logits in one process"
    "$BIN" logits -m "$M" -t 1 --tokens $TOK --incremental --out "$T/ref_inc.f32" 2>/dev/null || fail "$m: logits --incremental"
    G="generate -m $M --prompt-ids $TOK -n 10 --ignore-eos -t 1"
    "$BIN" $G >"$T/g_greedy" 2>/dev/null || fail "$m: generate in one process"
    "$BIN" $G --temperature 0.9 --top-k 40 --seed 11 >"$T/g_seed" 2>/dev/null || fail "$m: seeded generate"
    if [ $mtp = 1 ]; then
        "$BIN" logits -m "$M" -t 1 --tokens $TOK --mtp --out "$T/ref_mtp.f32" 2>/dev/null || fail "$m: logits --mtp"
        "$BIN" logits -m "$M" -t 1 --tokens $TOK --mtp --incremental --out "$T/ref_mtp_inc.f32" 2>/dev/null ||
            fail "$m: logits --mtp --incremental"
        "$BIN" $G --mtp >"$T/g_mtp" 2>/dev/null || fail "$m: generate --mtp"
        "$BIN" $G --mtp --temperature 0.9 --seed 5 >"$T/g_mtp_seed" 2>/dev/null || fail "$m: seeded generate --mtp"
    fi
    for n in 1 2 3; do
        same_file "$m N=$n: logits" "$T/ref.f32" "$T/l.f32" run_np $n "$BIN" logits -m "$M" -t 1 --tokens $TOK --out "$T/l.f32"
        same "$m N=$n: generate greedy" "$T/g_greedy" run_np $n "$BIN" $G
        # N = 1 under mpirun is the one-process path: the rest on N = 2, 3 (time)
        [ $n = 1 ] && continue
        same_file "$m N=$n: logits --incremental" "$T/ref_inc.f32" "$T/l.f32" \
            run_np $n "$BIN" logits -m "$M" -t 1 --tokens $TOK --incremental --out "$T/l.f32"
        same "$m N=$n: generate seeded" "$T/g_seed" run_np $n "$BIN" $G --temperature 0.9 --top-k 40 --seed 11
        [ $mtp = 1 ] || continue
        same_file "$m N=$n: logits --mtp" "$T/ref_mtp.f32" "$T/l.f32" \
            run_np $n "$BIN" logits -m "$M" -t 1 --tokens $TOK --mtp --out "$T/l.f32"
        same_file "$m N=$n: logits --mtp --incremental" "$T/ref_mtp_inc.f32" "$T/l.f32" \
            run_np $n "$BIN" logits -m "$M" -t 1 --tokens $TOK --mtp --incremental --out "$T/l.f32"
        same "$m N=$n: generate --mtp" "$T/g_mtp" run_np $n "$BIN" $G --mtp
        same "$m N=$n: generate --mtp seeded" "$T/g_mtp_seed" run_np $n "$BIN" $G --mtp --temperature 0.9 --seed 5
    done
done

# a text prompt on the bundled model, and chat (rank 0 reads the turns)
if [ -f models/default/config.json ]; then
    "$BIN" generate -t 1 --prompt "Once upon a time" -n 24 >"$T/g_text" 2>/dev/null || fail "bundled: generate --prompt"
    same "bundled N=2: generate --prompt" "$T/g_text" run_np 2 "$BIN" generate -t 1 --prompt "Once upon a time" -n 24
    printf 'Hello\nWho are you?\n' | "$BIN" chat -t 1 -n 12 --seed 3 >"$T/chat" 2>&1 || fail "bundled: chat"
    printf 'Hello\nWho are you?\n' >"$T/turns"
    same "bundled N=3: chat" "$T/chat" run_np 3 "$BIN" chat -t 1 -n 12 --seed 3 <"$T/turns"
fi

# ------------------------------------------------ the per-rank split
checks=$((checks + 1))
if run_np 3 "$BIN" info -m "$FX/tiny-v3" >"$T/info" 2>"$T/err"; then
    grep -q '^ranks  *3 processes' "$T/info" || fail "info N=3: no 'ranks 3 processes' line: $(cat "$T/info")"
    grep -q '^  rank 0  *experts \[0, 5) (5 of 16), weights held [0-9.]* MiB, resident [0-9.]* MiB$' "$T/info" ||
        fail "info N=3: rank 0 does not own experts [0, 5)"
    grep -q '^  rank 1  *experts \[5, 10) (5 of 16)' "$T/info" || fail "info N=3: rank 1 does not own [5, 10)"
    grep -q '^  rank 2  *experts \[10, 16) (6 of 16)' "$T/info" || fail "info N=3: rank 2 does not own [10, 16)"
    # each rank holds only its experts: 6 experts weigh more than 5, and less than all
    w0=$(sed -n 's/^  rank 0 .*weights held \([0-9.]*\) MiB.*/\1/p' "$T/info")
    w2=$(sed -n 's/^  rank 2 .*weights held \([0-9.]*\) MiB.*/\1/p' "$T/info")
    awk -v a="$w0" -v b="$w2" 'BEGIN { exit !(a > 0 && b > a) }' || fail "info N=3: rank 2 ($w2 MiB) should hold more than rank 0 ($w0 MiB)"
else
    fail "info N=3: exit $?: $(head -c 300 "$T/err")"
fi
checks=$((checks + 1))
run_np 1 "$BIN" info -m "$FX/tiny-v3" >"$T/info" 2>&1 && ! grep -q '^ranks' "$T/info" || fail "info N=1: a split printed or failed"

# bench on 2 ranks reports the communication: with the all-gather every rank
# sends its rows to the other and receives the other's, so rank 0 moves all
# K rows of a token: K x D x 4 = 4 x 64 x 4 = 1024 bytes per token and MoE
# layer on tiny-v3 whatever the routing, plus the per-step agreement (8 bytes
# each way per forward, over 2 MoE layers: +8 per decoded token, +0.25 per
# token of a 32-token prefill)
checks=$((checks + 1))
if run_np 2 "$BIN" bench -m "$FX/tiny-v3" -p 32 -n 8 -r 2 -t 1 --no-bw >"$T/bench" 2>"$T/err"; then
    grep -q '^communication on 2 ranks' "$T/bench" || fail "bench N=2: no communication report: $(cat "$T/bench")"
    grep -Eq '^\|       1 \| pp32 +\| +1024 \| +[0-9.]+% \| +[0-9.]+% \|$' "$T/bench" ||
        fail "bench N=2: pp32 should move 1024 bytes/token/layer: $(grep pp32 "$T/bench")"
    grep -Eq '^\|       1 \| tg8 +\| +1032 \| +[0-9.]+% \| +[0-9.]+% \|$' "$T/bench" ||
        fail "bench N=2: tg8 should move 1032 bytes/token/layer: $(grep tg8 "$T/bench")"
else
    fail "bench N=2: exit $?: $(head -c 300 "$T/err")"
fi
run_np 1 "$BIN" bench -m "$FX/tiny-v3" -p 8 -n 2 -r 1 -t 1 --no-bw >"$T/bench" 2>&1 && ! grep -q '^communication' "$T/bench" ||
    fail "bench N=1: a communication report printed or failed"
# bench --expert-servers (serve's exchange): rank 0 reports its bytes and share (routing decides the bytes)
checks=$((checks + 1))
if run_np 2 "$BIN" bench -m "$FX/tiny-v3" -p 16 -n 4 -r 1 -t 1 --no-bw --expert-servers >"$T/bench" 2>"$T/err"; then
    grep -q '^communication on 2 ranks (expert servers' "$T/bench" || fail "bench --expert-servers: no report: $(cat "$T/bench")"
    grep -Eq '^\|       1 \| tg4 +\| +[1-9][0-9]* \| +[0-9.]+% \| +- \|$' "$T/bench" ||
        fail "bench --expert-servers: no tg4 communication row: $(cat "$T/bench")"
else
    fail "bench --expert-servers N=2: exit $?: $(head -c 300 "$T/err")"
fi
checks=$((checks + 1))
run_np 2 "$BIN" generate -m "$FX/tiny-v3" --prompt-ids 1,2 -n 2 --verbose >"$T/out" 2>"$T/err" &&
    grep -q '^  rank 1  *experts \[8, 16) (8 of 16)' "$T/err" || fail "generate --verbose N=2: no per-rank split: $(cat "$T/err")"

# ------------------------------------------------ faults
expect_fail "different models on the ranks" "rank 1 opened a different model than rank 0" \
    mpirun --oversubscribe --bind-to none -np 1 "$BIN" logits -m "$FX/tiny-v3" --tokens 1,2 --out "$T/x.f32" : \
    -np 1 "$BIN" logits -m "$FX/tiny-v2" --tokens 1,2 --out "$T/x.f32"
if expect_fail "bad token, N=3" "token id 99999 at position 1" \
    run_np 3 "$BIN" logits -m "$FX/tiny-v3" --tokens 1,99999 --out "$T/x.f32"; then
    [ "$(grep -c 'token id 99999' "$T/err")" = 1 ] || fail "bad token, N=3: the error is not printed once: $(cat "$T/err")"
fi
expect_fail "a rank without the model" "deepseek logits (rank 1 of 2): model '$T/none' does not exist" \
    mpirun --oversubscribe --bind-to none -np 1 "$BIN" logits -m "$FX/tiny-v3" --tokens 1,2 --out "$T/x.f32" : \
    -np 1 "$BIN" logits -m "$T/none" --tokens 1,2 --out "$T/x.f32"
expect_fail "prepare-data on 2 ranks" "runs as one process for now" run_np 2 "$BIN" prepare-data --help
expect_fail "more ranks than experts" "5 processes for 4 routed experts" \
    run_np 5 "$BIN" logits -m "$FX/gguf/kq.llama-q4_k_m.gguf" --tokens 1,2 --out "$T/x.f32"

# kill -9 of rank 1 while generating: the job ends within seconds, naming it
checks=$((checks + 1))
mpirun --oversubscribe --bind-to none -np 2 "$BIN" generate -m "$FX/tiny-v3" --prompt-ids 1,2,3 -n 100000000 \
    --ignore-eos -t 1 >"$T/kout" 2>"$T/kerr" &
MP=$!
victim=""
i=0
while [ $i -lt 100 ] && [ -z "$victim" ]; do   # up to 10 s: rank 1 running, tokens coming out
    sleep 0.1
    i=$((i + 1))
    [ -s "$T/kout" ] || continue
    for d in /proc/[0-9]*; do
        [ "$(cut -d' ' -f4 "$d/stat" 2>/dev/null)" = "$MP" ] || continue
        tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=${d#/proc/}
    done
done
if [ -z "$victim" ]; then
    fail "kill -9: rank 1 of a generating job not found"
    kill "$MP" 2>/dev/null
else
    kill -9 "$victim"
    i=0
    while [ $i -lt 150 ] && kill -0 "$MP" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$MP" 2>/dev/null; then
        fail "kill -9: the job still runs 15 s after rank 1 was killed"
        kill "$MP" 2>/dev/null
    else
        wait "$MP"
        rc=$?
        [ "$rc" -ne 0 ] || fail "kill -9: the job exited 0"
        grep -q 'process rank 1 .*exited on signal 9' "$T/kerr" || fail "kill -9: no message naming rank 1: $(head -c 400 "$T/kerr")"
    fi
fi
wait 2>/dev/null

if [ "$fails" -gt 0 ]; then
    echo "cli_mpi_tests.sh: $fails of $checks checks failed"
    exit 1
fi
echo "cli_mpi_tests.sh: $checks checks passed"
