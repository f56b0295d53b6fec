#!/bin/sh
# cli_mpi_train_tests.sh - `train` and `grad` on N processes with OpenMPI
# (mpirun -np N ./deepseek train|grad ...; src/train/dp.c: data parallel,
# ZeRO-1 AdamW shards, one fixed gradient summation order).
#
#   sh tests/cli_mpi_train_tests.sh ./deepseek      (from the repository root)
#
# On a small V3 model (5 chunks of 16384 parameters, so 2 and 3 ranks each
# own a real shard): train with N = 2 and 3 ranks (and 1 rank x 2 threads)
# writes metrics.jsonl (timings aside), model.safetensors and
# optimizer.safetensors byte-identical to 1 rank x 1 thread, the progress
# line once (the same with units of 3 sequences); a checkpoint saved by 2 ranks resumes on 1 and one saved by 1
# resumes on 3 to the identical final files; SIGINT to rank 0 stops every
# rank at one step and saves; `grad` of 3 sequences is
# byte-identical on 1, 2, 3 ranks; a global batch that does not split over
# the ranks and ranks starting from different parameters are refused (once),
# a rank that cannot read the data names itself;
# kill -9 of rank 1 mid-training ends the job within seconds naming rank 1,
# and resuming from its last checkpoint ends on the uninterrupted run's bits
# (data parallel and --expert-parallel).
# --expert-parallel (each rank holds only its routed experts): train on 2
# and 3 ranks byte-identical to 1 rank (also with experts that leave
# alignment gaps), the per-rank held floats = replicated + own experts, its
# checkpoints equal 1 rank's, resume 2 -> 3 ranks and 2 -> 1.
# The expert exchange of expert-parallel training (src/train/ep.c) runs on
# 2 and 3 ranks through build/tests/run_tests train_ep_mpi_transport.
# Prints each failed check and exits 1 if any failed.
set -u
BIN=${1:?usage: sh tests/cli_mpi_train_tests.sh path/to/deepseek}
[ -x "$BIN" ] || { echo "cli_mpi_train_tests.sh: $BIN is not executable" >&2; exit 2; }
[ -d tests/fixtures/tiny-v3 ] || { echo "cli_mpi_train_tests.sh: run from the repository root" >&2; exit 2; }
MPI_TEST=cli_mpi_train_tests.sh . tests/mpi_env.sh   # mpirun present; root and container settings for OpenMPI
T=$(mktemp -d /tmp/ds_cli_mpitrain.XXXXXX) || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

# as in cli_mpi_tests.sh: oversubscribed, unpinned, -t 1
run_np() { n=$1; shift; if [ "$n" = 1 ]; then "$@"; else mpirun --oversubscribe --bind-to none -np "$n" "$@"; fi; }

checks=0
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# metrics.jsonl without the timing fields (time_s, tok_s, mfu, matmul_*, cpu_s)
strip_metrics() {
    sed -e 's/"tok_s":[^,]*,//; s/"mfu":[^,]*,//; s/"matmul_gflops":[^,]*,//; s/"matmul_frac":[^,]*,//; s/"time_s":[^,]*,//; s/"cpu_s":[0-9.e+-]*,\{0,1\}//' "$1"
}

# same_run NAME REF_DIR DIR: final checkpoint files and metrics identical
same_run() {
    checks=$((checks + 1))
    for f in model.safetensors optimizer.safetensors; do
        cmp -s "$2/latest/$f" "$3/latest/$f" || { fail "$1: $f differs from 1 rank x 1 thread"; return; }
    done
    strip_metrics "$2/metrics.jsonl" >"$T/m_ref"
    strip_metrics "$3/metrics.jsonl" >"$T/m_out"
    cmp -s "$T/m_ref" "$T/m_out" || fail "$1: metrics.jsonl differs: $(diff "$T/m_ref" "$T/m_out" | head -c 400)"
}

# the expert exchange of expert-parallel training (src/train/ep.c) over the
# real transport: tests/test_ep.c's train_ep_mpi_transport on 2 and 3 ranks
RT=build/tests/run_tests
for n in 2 3; do
    checks=$((checks + 1))
    if [ ! -x "$RT" ]; then fail "expert exchange: $RT not built (make build/tests/run_tests)"; break; fi
    run_np $n "$RT" train_ep_mpi_transport >"$T/ep_out" 2>&1 || fail "expert exchange on $n ranks: $(grep -v '^ok' "$T/ep_out" | head -c 400)"
    [ "$(grep -c '^ok   train_ep_mpi_transport' "$T/ep_out")" = "$n" ] || fail "expert exchange on $n ranks: not every rank passed: $(head -c 400 "$T/ep_out")"
done

i=0
while [ $i -lt 40 ]; do
    echo "Line $i: to be, or not to be, that is the question; whether 'tis nobler in the mind." >>"$T/corpus.txt"
    i=$((i + 1))
done
"$BIN" prepare-data --out "$T/data" --byte-tokenizer --val-fraction 0.2 "$T/corpus.txt" >/dev/null 2>"$T/err" ||
    { echo "FAIL prepare-data: $(cat "$T/err")"; exit 1; }
# batch 6: splits over 1, 2 and 3 ranks; hidden 64: 69508 parameters, 5 chunks
cat >"$T/recipe.json" <<EOF
{ "model": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": 12, "kv_lora_rank": 8,
            "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "intermediate_size": 24,
            "moe_intermediate_size": 8, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2},
  "data": "$T/data", "out": "$T/run", "seq_len": 16, "batch_size": 3, "grad_accum": 2, "steps": 4, "warmup_steps": 1,
  "eval_every": 2, "eval_tokens": 256, "ckpt_every": 2, "log_every": 1, "peak_gflops": 10 }
EOF

# ---- train: N = 1 x 1 thread (reference), 1 x 2 threads, 2 and 3 ranks
"$BIN" train --config "$T/recipe.json" --out "$T/r11" -t 1 >"$T/out" 2>"$T/err" ||
    { echo "FAIL train (1 rank): $(tail -c 400 "$T/err")"; exit 1; }
for nt in "1 2" "2 1" "3 1"; do
    set -- $nt
    checks=$((checks + 1))
    if ! run_np "$1" "$BIN" train --config "$T/recipe.json" --out "$T/r$1$2" -t "$2" >"$T/out" 2>"$T/err"; then
        fail "train $1 ranks x $2 threads: $(tail -c 400 "$T/err")"
        continue
    fi
    same_run "train $1 ranks x $2 threads" "$T/r11" "$T/r$1$2"
    if [ "$1" -gt 1 ]; then
        checks=$((checks + 1))
        n=$(grep -c 'step 4/4' "$T/err")
        [ "$n" = 1 ] || fail "train $1 ranks: the progress line for step 4 printed $n times"
        grep -q "on $1 ranks x 1 threads" "$T/err" || fail "train $1 ranks: header lacks the rank count: $(head -c 300 "$T/err")"
    fi
done

# ---- expert parallel (--expert-parallel): each rank holds only its routed
# experts; train on 2 and 3 ranks (4 experts: 2+2, 1+1+2) byte-identical to
# 1 rank, and the per-rank lines show replicated part + own experts only
for n in 2 3; do
    checks=$((checks + 1))
    if mpirun --oversubscribe --bind-to none -np "$n" "$BIN" train --config "$T/recipe.json" --out "$T/ep$n" -t 1 \
        --expert-parallel >"$T/out" 2>"$T/ep_err$n"; then
        same_run "expert-parallel train on $n ranks" "$T/r11" "$T/ep$n"
    else fail "expert-parallel train on $n ranks: $(tail -c 400 "$T/ep_err$n")"; fi
done
# held floats: every rank's replicated part equals the 2-rank data-parallel
# run's; rank q holds its experts' floats only (gate + up + down, 3·F·D =
# 1536 per expert and MoE layer, 2 MoE layers: 3072 per expert)
checks=$((checks + 1))
held() { sed -n "s/.*rank $2: experts \[\([0-9]*\), \([0-9]*\)).*(floats: \([0-9]*\) params, \([0-9]*\) replicated.*/\1 \2 \3 \4/p" "$1"; }
set -- $(held "$T/ep_err3" 0); set -- "$@" $(held "$T/ep_err3" 2)
full=$(sed -n "s/.*rank 0: experts \[0, 4) of 4.*(floats: \([0-9]*\) params.*/\1/p" "$T/err")
if [ $# -ne 8 ]; then fail "expert parallel: no per-rank held lines: $(grep -i 'rank 0' "$T/ep_err3" | head -c 300)"
elif [ "$1 $2" != "0 1" ] || [ "$5 $6" != "2 4" ]; then fail "expert parallel on 3 ranks: experts $1..$2 and $5..$6 (want 0..1, 2..4)"
elif [ "$3" -ne $(($4 + 3072)) ] || [ "$7" -ne $(($8 + 2 * 3072)) ] || [ "$4" != "$8" ]; then
    fail "expert parallel on 3 ranks: held floats rank 0 $3 (replicated $4), rank 2 $7 (replicated $8): want replicated + 3072 per own expert"
fi

# ---- units of 3 sequences (--unit-seqs 3: 2 units per step): 2 ranks as 1; 3 ranks refused
"$BIN" train --config "$T/recipe.json" --out "$T/u11" -t 1 --unit-seqs 3 >"$T/out" 2>"$T/err" ||
    fail "train --unit-seqs 3 (1 rank): $(tail -c 400 "$T/err")"
checks=$((checks + 1))
if run_np 2 "$BIN" train --config "$T/recipe.json" --out "$T/u21" -t 1 --unit-seqs 3 >"$T/out" 2>"$T/err"; then
    same_run "train --unit-seqs 3 on 2 ranks" "$T/u11" "$T/u21"
else fail "train --unit-seqs 3 on 2 ranks: $(tail -c 400 "$T/err")"; fi
checks=$((checks + 1))
run_np 3 "$BIN" train --config "$T/recipe.json" --out "$T/u31" -t 1 --unit-seqs 3 >"$T/out" 2>"$T/err" &&
    fail "--unit-seqs 3 on 3 ranks: exit 0"
grep -q "2 units of unit_seqs 3) does not split evenly over 3 ranks" "$T/err" || fail "--unit-seqs 3 on 3 ranks: $(head -c 300 "$T/err")"
checks=$((checks + 1))
"$BIN" train --config "$T/recipe.json" --out "$T/u4" -t 1 --unit-seqs 4 >"$T/out" 2>"$T/err" && fail "--unit-seqs 4 of 6: exit 0"
grep -q "is not a multiple of unit_seqs 4" "$T/err" || fail "--unit-seqs 4 of 6: $(head -c 300 "$T/err")"

# ---- resume across N: saved by 2 ranks -> 1 rank; saved by 1 rank -> 3 ranks
checks=$((checks + 1))
if "$BIN" train --resume "$T/r21/ckpt-00000002" --out "$T/res21" -t 1 >"$T/out" 2>"$T/err"; then
    for f in model.safetensors optimizer.safetensors; do
        cmp -s "$T/r11/latest/$f" "$T/res21/latest/$f" || fail "resume 2 -> 1 rank: $f differs from the uninterrupted run"
    done
else fail "resume 2 -> 1 rank: $(tail -c 400 "$T/err")"; fi
checks=$((checks + 1))
if run_np 3 "$BIN" train --resume "$T/r11/ckpt-00000002" --out "$T/res13" -t 1 >"$T/out" 2>"$T/err"; then
    for f in model.safetensors optimizer.safetensors; do
        cmp -s "$T/r11/latest/$f" "$T/res13/latest/$f" || fail "resume 1 -> 3 ranks: $f differs from the uninterrupted run"
    done
else fail "resume 1 -> 3 ranks: $(tail -c 400 "$T/err")"; fi

# ---- expert parallel with experts of 3·5·24 floats (8 mod 16: leaving one
# out shifts the next unless the layout pads, tmodel.h): 3 ranks as 1
sed 's/"hidden_size": 64/"hidden_size": 24/; s/"moe_intermediate_size": 8/"moe_intermediate_size": 5/' "$T/recipe.json" >"$T/r24.json"
"$BIN" train --config "$T/r24.json" --out "$T/o24" -t 1 >"$T/out" 2>"$T/err" || fail "train hidden 24 (1 rank): $(tail -c 400 "$T/err")"
checks=$((checks + 1))
if run_np 3 "$BIN" train --config "$T/r24.json" --out "$T/o24e3" -t 1 --expert-parallel >"$T/out" 2>"$T/err"; then
    same_run "expert-parallel train on 3 ranks, hidden 24" "$T/o24" "$T/o24e3"
else fail "expert-parallel train on 3 ranks, hidden 24: $(tail -c 400 "$T/err")"; fi

# ---- expert parallel resume across N: saved by 2 EP ranks (same files as 1 rank) -> 3 EP ranks; -> 1 rank
checks=$((checks + 1))
if run_np 3 "$BIN" train --resume "$T/ep2/ckpt-00000002" --out "$T/epres23" -t 1 --expert-parallel >"$T/out" 2>"$T/err"; then
    for f in model.safetensors optimizer.safetensors; do
        cmp -s "$T/r11/latest/$f" "$T/epres23/latest/$f" || fail "expert-parallel resume 2 -> 3 ranks: $f differs from the uninterrupted run"
    done
else fail "expert-parallel resume 2 -> 3 ranks: $(tail -c 400 "$T/err")"; fi
checks=$((checks + 1))
cmp -s "$T/r11/ckpt-00000002/optimizer.safetensors" "$T/ep3/ckpt-00000002/optimizer.safetensors" ||
    fail "expert-parallel checkpoint at step 2 (3 ranks): optimizer.safetensors differs from 1 rank's"

# ---- grad: 3 sequences on 1, 2, 3 ranks, byte-identical
TOK="1,5,9,13,200,7,7,40;3,3,100,2,9,250,6,1;17,18,19,20,21,22,23,24"
"$BIN" grad -m "$T/r11/latest" --tokens "$TOK" --out "$T/g1.safetensors" -t 1 >"$T/gout1" 2>"$T/err" ||
    fail "grad 1 rank: $(tail -c 400 "$T/err")"
for n in 2 3; do
    checks=$((checks + 1))
    if run_np "$n" "$BIN" grad -m "$T/r11/latest" --tokens "$TOK" --out "$T/g$n.safetensors" -t 1 >"$T/gout$n" 2>"$T/err"; then
        cmp -s "$T/g1.safetensors" "$T/g$n.safetensors" || fail "grad $n ranks: gradients differ from 1 rank"
        cmp -s "$T/gout1" "$T/gout$n" || fail "grad $n ranks: losses differ: $(cat "$T/gout$n") vs $(cat "$T/gout1")"
    else fail "grad $n ranks: $(tail -c 400 "$T/err")"; fi
done
checks=$((checks + 1))
"$BIN" grad -m "$T/r11/latest" --tokens "1,2,3;4,5" --out "$T/gx.safetensors" >"$T/out" 2>"$T/err" &&
    fail "grad: sequences of different lengths accepted"
grep -q "all must be the same length" "$T/err" || fail "grad: unequal lengths: $(head -c 300 "$T/err")"

# ---- refusals, printed once
checks=$((checks + 1))
run_np 4 "$BIN" train --config "$T/recipe.json" --out "$T/r4" -t 1 >"$T/out" 2>"$T/err" && fail "4 ranks, 6 sequences: exit 0"
n=$(grep -c "does not split evenly over 4 ranks" "$T/err")
[ "$n" = 1 ] || fail "4 ranks, 6 sequences: the error printed $n times: $(head -c 400 "$T/err")"
checks=$((checks + 1))
mpirun --oversubscribe --bind-to none -np 1 "$BIN" train --config "$T/recipe.json" --out "$T/rs" -t 1 : \
    -np 1 "$BIN" train --config "$T/recipe.json" --out "$T/rs" -t 1 --seed 99 >"$T/out" 2>"$T/err" &&
    fail "different seeds per rank: exit 0"
grep -q "rank 1 starts from different parameters" "$T/err" || fail "different seeds per rank: $(head -c 400 "$T/err")"

checks=$((checks + 1))
mpirun --oversubscribe --bind-to none -np 1 "$BIN" train --config "$T/recipe.json" --out "$T/rd" -t 1 : \
    -np 1 "$BIN" train --config "$T/recipe.json" --out "$T/rd" -t 1 --data "$T/nodata" >"$T/out" 2>"$T/err" &&
    fail "a rank without the data: exit 0"
grep -q "rank 1 of 2: could not start training" "$T/err" && grep -q "(rank 1 of 2): $T/nodata/data.json" "$T/err" ||
    fail "a rank without the data: $(head -c 400 "$T/err")"

# ---- SIGINT to rank 0 (Ctrl-C in its terminal): every rank stops at the same step, rank 0 saves
checks=$((checks + 1))
mpirun --oversubscribe --bind-to none -np 2 "$BIN" train --config "$T/recipe.json" --out "$T/int" -t 1 --steps 1000000 \
    --eval-every 0 --ckpt-every 0 --log-every 1 >"$T/iout" 2>"$T/ierr" &
MP=$!
r0=""
i=0
while [ $i -lt 200 ] && [ -z "$r0" ]; do   # up to 20 s: rank 0 past its first steps
    sleep 0.1
    i=$((i + 1))
    [ -s "$T/int/metrics.jsonl" ] || continue
    for d in /proc/[0-9]*; do
        [ "$(cut -d' ' -f4 "$d/stat" 2>/dev/null)" = "$MP" ] || continue
        tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=0' && r0=${d#/proc/}
    done
done
if [ -z "$r0" ]; then
    fail "SIGINT: rank 0 of a training job not found: $(tail -c 300 "$T/ierr")"
    kill "$MP" 2>/dev/null
else
    kill -INT "$r0"
    i=0
    while [ $i -lt 150 ] && kill -0 "$MP" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$MP" 2>/dev/null; then
        fail "SIGINT: the job still runs 15 s after rank 0 was interrupted"
        kill "$MP" 2>/dev/null
    else
        wait "$MP" || fail "SIGINT: exit $?: $(tail -c 300 "$T/ierr")"
        grep -q "interrupted at step" "$T/ierr" && grep -q '"checkpoint":' "$T/iout" && [ -e "$T/int/latest/model.safetensors" ] ||
            fail "SIGINT: no save: $(tail -c 300 "$T/ierr")"
    fi
fi

# ---- kill -9 of rank 1 mid-training: the job ends naming it; resume ends on the same bits
KILL="--steps 100 --eval-every 0 --ckpt-every 10 --log-every 10"
"$BIN" train --config "$T/recipe.json" --out "$T/kref" -t 1 $KILL >"$T/out" 2>"$T/err" ||
    fail "kill -9 reference run: $(tail -c 400 "$T/err")"
# kill_rank1 NAME FLAGS: a 2-rank run (FLAGS added) loses rank 1 to kill -9 after a checkpoint
kill_rank1() {
    checks=$((checks + 1))
    # (--debug-step-delay: 40 ms after each step, ~4 s in all, so the kill lands mid-run even when the
    # machine is slow to show us the checkpoint; the tiny model's 100 steps alone take well under a second)
    mpirun --oversubscribe --bind-to none -np 2 "$BIN" train --config "$T/recipe.json" --out "$T/kill$1" -t 1 $KILL $2 \
        --debug-step-delay 40 >"$T/kout" 2>"$T/kerr" &
    MP=$!
    victim=""
    i=0
    while [ $i -lt 200 ] && [ -z "$victim" ]; do   # up to 20 s: a checkpoint written, rank 1 running
        sleep 0.1
        i=$((i + 1))
        [ -e "$T/kill$1/latest" ] || continue
        for d in /proc/[0-9]*; do
            [ "$(cut -d' ' -f4 "$d/stat" 2>/dev/null)" = "$MP" ] || continue
            tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=${d#/proc/}
        done
    done
    if [ -z "$victim" ]; then
        fail "$1 kill -9: no checkpoint or no rank 1 of the training job: $(tail -c 300 "$T/kerr")"
        kill "$MP" 2>/dev/null
    else
        kill -9 "$victim"
        i=0
        while [ $i -lt 150 ] && kill -0 "$MP" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
        if kill -0 "$MP" 2>/dev/null; then
            fail "$1 kill -9: the job still runs 15 s after rank 1 was killed"
            kill "$MP" 2>/dev/null
        else
            wait "$MP"
            rc=$?
            [ "$rc" -ne 0 ] || fail "$1 kill -9: the job exited 0 (it finished before the kill? $(tail -c 200 "$T/kerr"))"
            grep -q 'process rank 1 .*exited on signal 9' "$T/kerr" || fail "$1 kill -9: no message naming rank 1: $(head -c 400 "$T/kerr")"
            checks=$((checks + 1))
            if "$BIN" train --resume "$T/kill$1" -t 1 >"$T/out" 2>"$T/err"; then
                grep -q '"step":100' "$T/out" || fail "$1 kill -9 resume: did not reach step 100: $(cat "$T/out")"
                for f in model.safetensors optimizer.safetensors; do
                    cmp -s "$T/kref/latest/$f" "$T/kill$1/latest/$f" || fail "$1 kill -9 resume: $f differs from the uninterrupted run"
                done
            else fail "$1 kill -9 resume: $(tail -c 400 "$T/err")"; fi
        fi
    fi
}
kill_rank1 dp ""
kill_rank1 ep --expert-parallel
wait 2>/dev/null

if [ "$fails" -gt 0 ]; then
    echo "cli_mpi_train_tests.sh: $fails of $checks checks failed"
    exit 1
fi
echo "cli_mpi_train_tests.sh: $checks checks passed"
