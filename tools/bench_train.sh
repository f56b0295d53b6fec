#!/bin/sh
# bench_train.sh - training throughput of `deepseek train` vs the PyTorch
# reference trainer (tools/bench_train_torch.py) on the same tiny
# DeepSeek-V3 model (the bundled default model's architecture: MLA, 1 dense +
# 3 MoE layers with 16 routed experts top-2 + 1 shared, MTP), the same batch
# (the recipe's 16 x 256 tokens), the same losses and optimizer, the same thread count.
#
#   sh tools/bench_train.sh [THREADS] [REPEATS]       (defaults 2, 3)
#
# Runs the two alternately REPEATS times (the machine may be shared: medians
# are reported, the ratio within each round (ours, then PyTorch right after:
# both see about the same machine) and its median, and under "best" the
# fastest step of each, since interference only ever slows a run)
# and prints one JSON line: the machine (CPU, ISA level and flags, kernels), tokens/s of each, the
# ratio, our MFU against the fp32 peak measured at start (best of 16
# 1024^3 sgemms on THREADS threads) and the GFLOP/s reached inside the
# linear-layer matmuls. Needs data: ./deepseek prepare-data --out
# data/shakespeare --byte-tokenizer ../shared/data/tinyshakespeare.txt
#
# Before every run it waits (up to IDLE_WAIT seconds, default 900) until
# the machine has been idle for a second (other processes under 10% of
# it), and the summary reports the 1-minute load average seen before each
# run. PyTorch's side: EXPERTS (default grouped_mm), ATTN (default
# sdpa_padv) and ADAM (default fused) pick its kernels; see
# bench_train_torch.py --help (its fastest ones on this machine).
# "speedup_cpu_time_median_of_rounds" compares process CPU seconds per step
# (ours: "cpu_s" of metrics.jsonl; PyTorch: time.process_time()): at 1
# thread the fairer measure when the machine is loaded (wall time then
# mostly measures the other jobs); with more threads it also counts spinning.
# PRECISION=bf16 runs both in mixed precision: `deepseek train --precision
# bf16` (needs AVX512-BF16) vs PyTorch under bf16 autocast; default fp32.
set -eu
TH=${1:-2}
REP=${2:-3}
BIN=${BIN:-./deepseek}
DATA=${DATA:-data/shakespeare}
[ -f "$DATA/data.json" ] || { echo "bench_train.sh: no data in $DATA (see the header)" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_bench_train.XXXXXX)
trap 'rm -rf "$T"' EXIT
RECIPE=models/default/recipe.json
# the machine, as `deepseek --version` reports it: CPU, ISA level and flags, kernels
machine=$("$BIN" --version | sed -n 's/^cpu: *//p; s/^kernels: *//p' | paste -sd'|' -)
ours=""
torch=""
loads=""
# busy share of the machine over one second, from /proc/stat (Linux)
busy() {
    python3 -c "
import time
def s():
    v = [int(x) for x in open('/proc/stat').readline().split()[1:]]
    return sum(v), v[3] + v[4]
t0, i0 = s(); time.sleep(1); t1, i1 = s()
print(1 - (i1 - i0) / max(1, t1 - t0))"
}
wait_idle() {
    w=0
    while [ "$(busy | python3 -c 'import sys; print(int(float(sys.stdin.read()) > 0.10))')" = 1 ]; do
        [ $w -ge "${IDLE_WAIT:-900}" ] && { echo "bench_train.sh: machine still busy after ${w}s, measuring anyway" >&2; break; }
        sleep 4; w=$((w + 5))   # + the 1 s sample
    done
    loads="$loads$(cut -d' ' -f1 /proc/loadavg) "
}
i=0
while [ $i -lt "$REP" ]; do
    wait_idle
    "$BIN" train --config "$RECIPE" --data "$DATA" --out "$T/run$i" --steps 12 --warmup-steps 2 --eval-every 0 \
        --ckpt-every 0 --log-every 1 --threads "$TH" --precision "${PRECISION:-fp32}" >"$T/ours$i.json" 2>"$T/ours$i.err"
    # tokens/s per step after the first (which includes the first step's allocations): the
    # median, as the PyTorch side reports the median step after its warmup step
    o=$(python3 -c "import json,statistics as st;l=[json.loads(x) for x in open('$T/run$i/metrics.jsonl') if '\"loss\"' in x];w=l[1:];m=lambda k:st.median(x[k] for x in w);print(m('tok_s'), m('mfu'), m('matmul_gflops'), json.load(open('$T/ours$i.json'))['peak_gflops'], max(x['tok_s'] for x in w), m('cpu_s'))")
    ours="$ours$o;"
    wait_idle
    t=$(python3 tools/bench_train_torch.py --recipe "$RECIPE" --data "$DATA" --threads "$TH" --steps 8 --warmup 1 \
        --experts "${EXPERTS:-grouped_mm}" --attn "${ATTN:-sdpa_padv}" --adam "${ADAM:-fused}" --precision "${PRECISION:-fp32}" 2>>"$T/torch.err")
    torch="$torch$(echo "$t" | python3 -c 'import json,sys;d=json.load(sys.stdin);print(d["tok_s"], d["tok_s_best"], d["cpu_s_median"])');"
    echo "rep $i: ours $o | torch $(echo "$t" | tail -c 200)" >&2
    i=$((i + 1))
done
python3 - "$ours" "$torch" "$TH" "$loads" "$t" "$machine" <<'EOF'
import json, statistics, sys
ours = [list(map(float, x.split())) for x in sys.argv[1].split(";") if x]
loads = [float(x) for x in sys.argv[4].split()]
cfg = json.loads(sys.argv[5])
torch = [list(map(float, x.split())) for x in sys.argv[2].split(";") if x]
o = statistics.median(x[0] for x in ours)
t = statistics.median(x[0] for x in torch)
ob, tb = max(x[4] for x in ours), max(x[1] for x in torch)
print(json.dumps({"threads": int(sys.argv[3]), "ours_tok_s": round(o), "pytorch_tok_s": round(t), "speedup": round(o / t, 2),
                  "best": {"ours_tok_s": round(ob), "pytorch_tok_s": round(tb), "speedup": round(ob / tb, 2)},
                  "speedup_per_round": [round(a[0] / b[0], 2) for a, b in zip(ours, torch)],
                  "speedup_median_of_rounds": round(statistics.median(a[0] / b[0] for a, b in zip(ours, torch)), 2),
                  "cpu_s_per_step": {"ours": [round(x[5], 3) for x in ours], "pytorch": [round(x[2], 3) for x in torch]},
                  "speedup_cpu_time_median_of_rounds": round(statistics.median(b[2] / a[5] for a, b in zip(ours, torch)), 2),
                  "ours_mfu": round(statistics.median(x[1] for x in ours), 3),
                  "ours_matmul_gflops": round(statistics.median(x[2] for x in ours), 1),
                  "peak_gflops": round(statistics.median(x[3] for x in ours), 1),
                  "matmul_share_of_peak": round(statistics.median(x[2] / x[3] for x in ours), 3),
                  "runs": {"ours_tok_s": [round(x[0]) for x in ours], "pytorch_tok_s": [round(x[0]) for x in torch]},
                  "range": {"ours_tok_s": [round(min(x[0] for x in ours)), round(max(x[0] for x in ours))],
                            "pytorch_tok_s": [round(min(x[0] for x in torch)), round(max(x[0] for x in torch))]},
                  "pytorch": {k: cfg.get(k) for k in ("torch", "experts", "attn", "adam", "precision")},
                  "load_avg_before_runs": loads,
                  "machine": dict(zip(("cpu", "kernels"), sys.argv[6].split("|")))}))
EOF
