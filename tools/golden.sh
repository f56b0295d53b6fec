#!/bin/sh
# golden.sh - records what users see from a build, so a refactoring can show
# that nothing changed bit for bit.
#
#   sh tools/golden.sh record DIR [BIN]    write outputs of BIN (default ./deepseek) into DIR
#   sh tools/golden.sh compare DIR [BIN]   record into a temp folder and compare with DIR
#
# Recorded: logits (prefill, incremental, MTP) of every fixture model and the
# bundled default; greedy, seeded and MTP generations; a short training run's
# logged losses; one gradient file; the bytes of a converted GGUF; server
# responses to fixed-seed requests (ids and timestamps removed).
# Needs ../shared (or DS_SHARED) for tinyshakespeare.
set -u
mode=${1:-}
dir=${2:-}
BIN=${3:-./deepseek}
case "$mode" in record|compare) ;; *) echo "usage: $0 record|compare DIR [BIN]" >&2; exit 2 ;; esac
[ -n "$dir" ] || { echo "usage: $0 record|compare DIR [BIN]" >&2; exit 2; }
shared=${DS_SHARED:-../shared}

if [ "$mode" = compare ]; then
    tmp=$(mktemp -d)
    sh "$0" record "$tmp" "$BIN" || { echo "golden: record failed"; exit 1; }
    if diff -r "$dir" "$tmp" >/dev/null; then
        echo "golden: $(ls "$dir" | wc -l) outputs bit-identical to $dir"
        rm -rf "$tmp"
        exit 0
    fi
    echo "golden: outputs differ from $dir (new ones in $tmp):"
    diff -rq "$dir" "$tmp"
    exit 1
fi

mkdir -p "$dir" || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
err=0
run() { # name, command...: stdout -> DIR/name; a failure is recorded too
    name=$1; shift
    "$@" >"$dir/$name" 2>"$work/err" || { echo "rc=$?" >>"$dir/$name"; }
}

TOK=0,5,17,3,9,31,2,44,8,12,19,7,25,1,30,6
models="tests/fixtures/tiny-v2 tests/fixtures/tiny-v2-lite tests/fixtures/tiny-v3 tests/fixtures/tiny-v3-fp8
tests/fixtures/tiny-chat models/default tests/fixtures/gguf/kq.llama-q4_k_m.gguf
tests/fixtures/gguf/tiny-v2-lite.llama-f16.gguf tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf"
for m in $models; do
    n=$(echo "$m" | tr '/' '_')
    "$BIN" logits -m "$m" --tokens $TOK --out "$dir/logits.$n" 2>/dev/null || echo fail >"$dir/logits.$n"
    "$BIN" logits -m "$m" --tokens $TOK --incremental --out "$dir/logits-incr.$n" 2>/dev/null || echo fail >"$dir/logits-incr.$n"
    "$BIN" logits -m "$m" --tokens $TOK --mtp --out "$dir/logits-mtp.$n" 2>/dev/null || echo none >"$dir/logits-mtp.$n"
    run "greedy.$n" "$BIN" generate -m "$m" --prompt-ids $TOK -n 24 --temperature 0 --ignore-eos
    run "seeded.$n" "$BIN" generate -m "$m" --prompt-ids $TOK -n 24 --temperature 0.9 --top-p 0.9 --top-k 40 \
        --repeat-penalty 1.1 --seed 7 --ignore-eos
    run "mtp.$n" "$BIN" generate -m "$m" --prompt-ids $TOK -n 24 --temperature 0 --mtp --ignore-eos
    run "q8kv.$n" "$BIN" generate -m "$m" --prompt-ids $TOK -n 16 --temperature 0 --kv-type q8 --ignore-eos
done
run text.default "$BIN" generate --prompt "ROMEO:" -n 60 --temperature 0.8 --seed 3
run chat.tiny "$BIN" chat -m tests/fixtures/tiny-chat --temperature 0.7 --seed 5 -n 20 <<EOF
Hello there
And again
EOF

# gradient of one sequence and a converted file
"$BIN" grad -m tests/fixtures/tiny-v3 --tokens $TOK --out "$dir/grad.tiny-v3.safetensors" >"$dir/grad.loss" 2>/dev/null
"$BIN" convert -m tests/fixtures/tiny-v3 -o "$dir/convert.q8_0.gguf" --type q8_0 >/dev/null 2>&1
"$BIN" convert -m tests/fixtures/tiny-v3 -o "$dir/convert.q4_k.gguf" --type q4_k >/dev/null 2>&1

# a short training run: logged losses (timing fields dropped)
head -c 200000 "$shared/data/tinyshakespeare.txt" >"$work/corpus.txt"
"$BIN" prepare-data --out "$work/data" --byte-tokenizer "$work/corpus.txt" >/dev/null 2>&1
cat >"$work/recipe.json" <<EOF
{ "model": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "q_lora_rank": 16, "kv_lora_rank": 16,
            "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "intermediate_size": 48, "first_k_dense_replace": 1,
            "moe_intermediate_size": 16, "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
            "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true, "num_nextn_predict_layers": 1},
  "data": "$work/data", "out": "$work/run", "seq_len": 32, "batch_size": 4, "steps": 12, "warmup_steps": 2,
  "eval_every": 6, "eval_tokens": 512, "ckpt_every": 6, "log_every": 1, "balance_alpha": 0.001, "mtp_weight": 0.3,
  "seed": 11, "threads": 2, "peak_gflops": 10 }
EOF
"$BIN" train --config "$work/recipe.json" >/dev/null 2>&1
python3 - "$work/run/metrics.jsonl" >"$dir/train.losses" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print({k: v for k, v in sorted(r.items()) if k not in ("tok_s", "time_s", "cpu_s", "matmul_gflops", "matmul_frac", "mfu", "eta_s")})
EOF

    sha256sum <"$work/run/latest/model.safetensors" >"$dir/train.final_weights.sha256"

# the server: fixed-seed requests, volatile fields removed
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve -m tests/fixtures/tiny-chat --port "$port" -np 3 --cache-ram 0 >"$work/serve.log" 2>&1 &
spid=$!
python3 - "$port" >"$dir/server.responses" <<'EOF'
import json, sys, time, urllib.request
port = sys.argv[1]
base = f"http://127.0.0.1:{port}"
for _ in range(200):
    try:
        if urllib.request.urlopen(base + "/health").status == 200: break
    except Exception: pass
    time.sleep(0.05)
def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try: return json.loads(urllib.request.urlopen(req).read())
    except urllib.error.HTTPError as e: return {"http": e.code, "body": json.loads(e.read())}
def clean(x):
    if isinstance(x, dict): return {k: clean(v) for k, v in x.items() if k not in ("id", "created", "system_fingerprint")}
    if isinstance(x, list): return [clean(v) for v in x]
    return x
reqs = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20, "seed": 1, "temperature": 0.8}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "temperature": 0, "logprobs": True, "top_logprobs": 3}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "JSON please"}], "max_tokens": 30, "seed": 2, "response_format": {"type": "json_object"}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Two"}], "max_tokens": 12, "seed": 3, "n": 2, "stop": ["e"]}),
    ("/v1/completions", {"prompt": "Once upon", "max_tokens": 16, "seed": 4, "temperature": 0.9, "top_p": 0.8, "logprobs": 2}),
    ("/v1/completions", {"prompt": "def f(", "suffix": "return x", "max_tokens": 10, "temperature": 0}),
]
for path, body in reqs:
    print(json.dumps(clean(post(path, body)), sort_keys=True))
EOF
kill $spid 2>/dev/null; wait $spid 2>/dev/null
exit 0
