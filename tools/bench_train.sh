#!/bin/sh
# bench_train.sh - training throughput of `deepseek train` vs the PyTorch
# reference trainer (tools/bench_train_torch.py) on the same tiny
# DeepSeek-V3 model (the bundled default model's architecture: MLA, 1 dense +
# 3 MoE layers with 16 routed experts top-2 + 1 shared, MTP), the same batch
# (32 x 128 tokens), the same losses and optimizer, the same thread count.
#
#   sh tools/bench_train.sh [THREADS] [REPEATS]       (defaults 2, 3)
#
# Runs the two alternately REPEATS times (the machine may be shared: medians
# are reported, and under "best" the fastest window / step of each, since
# interference only ever slows a run) and prints one JSON line: tokens/s of each, the
# ratio, our MFU against the fp32 peak measured at start (best of 16
# 1024^3 sgemms on THREADS threads) and the GFLOP/s reached inside the
# linear-layer matmuls. Needs data: ./deepseek prepare-data --out
# data/shakespeare --byte-tokenizer ../shared/data/tinyshakespeare.txt
set -eu
TH=${1:-2}
REP=${2:-3}
BIN=${BIN:-./deepseek}
DATA=${DATA:-data/shakespeare}
[ -f "$DATA/data.json" ] || { echo "bench_train.sh: no data in $DATA (see the header)" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_bench_train.XXXXXX)
trap 'rm -rf "$T"' EXIT
RECIPE=models/default/recipe.json
ours=""
torch=""
i=0
while [ $i -lt "$REP" ]; do
    "$BIN" train --config "$RECIPE" --data "$DATA" --out "$T/run$i" --steps 12 --warmup-steps 2 --eval-every 0 \
        --ckpt-every 0 --log-every 4 --threads "$TH" >"$T/ours$i.json" 2>"$T/ours$i.err"
    # tokens/s of the 4-step windows after the first (which includes the first step's allocations)
    o=$(python3 -c "import json;l=[json.loads(x) for x in open('$T/run$i/metrics.jsonl') if '\"loss\"' in x];w=l[1:];print(sum(x['tok_s'] for x in w)/len(w), sum(x['mfu'] for x in w)/len(w), sum(x['matmul_gflops'] for x in w)/len(w), json.load(open('$T/ours$i.json'))['peak_gflops'], max(x['tok_s'] for x in w))")
    ours="$ours$o;"
    t=$(python3 tools/bench_train_torch.py --recipe "$RECIPE" --data "$DATA" --threads "$TH" --steps 8 --warmup 1 \
        --experts "${EXPERTS:-grouped_mm}" 2>>"$T/torch.err")
    torch="$torch$(echo "$t" | python3 -c 'import json,sys;d=json.load(sys.stdin);print(d["tok_s"], d["tok_s_best"])');"
    echo "rep $i: ours $o | torch $(echo "$t" | tail -c 200)" >&2
    i=$((i + 1))
done
python3 - "$ours" "$torch" "$TH" <<'EOF'
import json, statistics, sys
ours = [list(map(float, x.split())) for x in sys.argv[1].split(";") if x]
torch = [list(map(float, x.split())) for x in sys.argv[2].split(";") if x]
o = statistics.median(x[0] for x in ours)
t = statistics.median(x[0] for x in torch)
ob, tb = max(x[4] for x in ours), max(x[1] for x in torch)
print(json.dumps({"threads": int(sys.argv[3]), "ours_tok_s": round(o), "pytorch_tok_s": round(t), "speedup": round(o / t, 2),
                  "best": {"ours_tok_s": round(ob), "pytorch_tok_s": round(tb), "speedup": round(ob / tb, 2)},
                  "ours_mfu": round(statistics.median(x[1] for x in ours), 3),
                  "ours_matmul_gflops": round(statistics.median(x[2] for x in ours), 1),
                  "peak_gflops": round(statistics.median(x[3] for x in ours), 1),
                  "matmul_share_of_peak": round(statistics.median(x[2] / x[3] for x in ours), 3),
                  "runs": {"ours_tok_s": [round(x[0]) for x in ours], "pytorch_tok_s": [round(x[0]) for x in torch]}}))
EOF
