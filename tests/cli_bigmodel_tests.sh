#!/bin/sh
# cli_bigmodel_tests.sh - a GGUF larger than the memory the process may use
# still runs (issue 17 item 4): the loader skips the in-RAM repacked copy of
# the quantized weights when it would not fit (src/model/repack_model.c,
# src/core/memlimit.c) and the kernels read the file's layout through the
# mapping, so the resident set is bounded by the page cache.
#
#   sh tests/cli_bigmodel_tests.sh ./deepseek        (from the repository root)
#
# A random 4-layer V3-style model written as Q4_K (184 MiB) runs in a memory
# cgroup limited to 40 MiB (v1 memory.limit_in_bytes + memsw, or v2
# memory.max + swap.max), with its file dropped from the page cache first so
# every page it reads is charged to the cgroup: `generate` finishes with the
# same 16 tokens as an unconstrained run of the same kernels (DS_REPACK=0),
# `info` says the copy was skipped, and forcing the copy (DS_REPACK=1) under
# the same limit is killed — so the limit is real and the test can fail.
# Needs root and a writable memory cgroup; without them the checks are
# SKIPPED (DS_TEST_CGROUP=1 makes that a failure).
set -u
BIN=${1:?usage: sh tests/cli_bigmodel_tests.sh path/to/deepseek}
[ -x "$BIN" ] || { echo "cli_bigmodel_tests.sh: $BIN is not executable" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_cli_big.XXXXXX) || exit 2
CG=""
cleanup() {
    if [ -n "$CG" ] && [ -d "$CG" ]; then
        # move ourselves out if needed, then remove the group
        rmdir "$CG" 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

checks=0 fails=0 skipped=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
ok() { checks=$((checks + 1)); }
skip_all() {
    if [ "${DS_TEST_CGROUP:-0}" = 1 ]; then
        echo "FAIL cli_bigmodel_tests.sh: DS_TEST_CGROUP=1 but $1"; exit 1
    fi
    echo "SKIPPED cli_bigmodel_tests.sh: larger-than-memory run ($1; DS_TEST_CGROUP=1 makes this a failure)"
    echo "cli_bigmodel_tests.sh: 0 checks, 0 failed, 1 skipped"
    exit 0
}

LIMIT=$((40 << 20))
# a memory cgroup we may create: v1 (memory controller mounted on its own) or v2
if [ "$(id -u)" != 0 ]; then skip_all "not root: cannot make a memory cgroup"; fi
if [ -w /sys/fs/cgroup/memory ] && [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
    CG=/sys/fs/cgroup/memory/ds_bigmodel_$$
    mkdir "$CG" 2>/dev/null || skip_all "cannot create $CG"
    echo "$LIMIT" >"$CG/memory.limit_in_bytes" || skip_all "cannot set $CG/memory.limit_in_bytes"
    [ -f "$CG/memory.memsw.limit_in_bytes" ] && echo "$LIMIT" >"$CG/memory.memsw.limit_in_bytes" 2>/dev/null
elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
    CG=/sys/fs/cgroup/ds_bigmodel_$$
    mkdir "$CG" 2>/dev/null || skip_all "cannot create $CG"
    echo "$LIMIT" >"$CG/memory.max" || skip_all "cannot set $CG/memory.max"
    [ -f "$CG/memory.swap.max" ] && echo 0 >"$CG/memory.swap.max" 2>/dev/null
else
    skip_all "no writable memory cgroup (v1 /sys/fs/cgroup/memory or v2 with the memory controller delegated)"
fi

# incg CMD...: runs CMD inside the limited cgroup
incg() { sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" "$@"; }
# uncache FILE: drops FILE from the page cache (so the cgroup is charged for what it reads)
uncache() { dd if="$1" iflag=nocache count=0 2>/dev/null; }

cat >"$T/config.json" <<'EOF'
{"architectures":["DeepseekV3ForCausalLM"],"model_type":"deepseek_v3","vocab_size":8192,"hidden_size":1024,
 "intermediate_size":2816,"moe_intermediate_size":512,"num_hidden_layers":4,"num_attention_heads":8,
 "num_key_value_heads":8,"q_lora_rank":256,"kv_lora_rank":128,"qk_nope_head_dim":64,"qk_rope_head_dim":32,
 "v_head_dim":64,"first_k_dense_replace":1,"n_routed_experts":64,"n_shared_experts":1,"num_experts_per_tok":4,
 "n_group":4,"topk_group":2,"topk_method":"noaux_tc","scoring_func":"sigmoid","norm_topk_prob":true,
 "routed_scaling_factor":2.5,"num_nextn_predict_layers":0,"bos_token_id":0,"eos_token_id":1,
 "max_position_embeddings":4096,"rms_norm_eps":1e-6,"rope_theta":10000,"hidden_act":"silu","tie_word_embeddings":false}
EOF
M=$T/big.gguf
"$BIN" convert --random "$T/config.json" -o "$M" --type q4_k -q >"$T/out" 2>"$T/err" ||
    { echo "FAIL cli_bigmodel_tests.sh: convert --random: $(cat "$T/err")"; exit 1; }
size=$(wc -c <"$M")
[ "$size" -ge $((4 * LIMIT)) ] || fail "the model ($size bytes) is not 4x the limit ($LIMIT)"

GEN="generate -m $M --prompt-ids 5,6,7,8 -n 16 --ignore-eos -t 2"
DS_REPACK=0 "$BIN" $GEN >"$T/ref" 2>"$T/err" || fail "unconstrained generate: $(cat "$T/err")"
ok

uncache "$M"
incg "$BIN" info -m "$M" >"$T/info" 2>"$T/err"
rc=$?
ok
if [ $rc -ne 0 ]; then fail "info in $LIMIT bytes: exit $rc: $(tail -c 300 "$T/err")"
else grep -q "used from the mapping, not repacked" "$T/info" || fail "info does not say the copy was skipped: $(cat "$T/info")"; fi

uncache "$M"
incg "$BIN" $GEN >"$T/out" 2>"$T/err"
rc=$?
ok
if [ $rc -ne 0 ]; then fail "generate in a $LIMIT-byte cgroup: exit $rc: $(tail -c 300 "$T/err")"
elif ! cmp -s "$T/ref" "$T/out"; then fail "generate in the cgroup: $(cat "$T/out") vs unconstrained $(cat "$T/ref")"; fi

# the limit bites: the in-RAM copy (~180 MiB) cannot be made in it
uncache "$M"
DS_REPACK=1 incg "$BIN" $GEN >"$T/out" 2>"$T/err"
rc=$?
ok
[ $rc -ne 0 ] || fail "DS_REPACK=1 in a $LIMIT-byte cgroup succeeded: the limit does not hold, the test proves nothing"

echo "cli_bigmodel_tests.sh: $checks checks, $fails failed, $skipped skipped"
[ "$fails" -eq 0 ]
