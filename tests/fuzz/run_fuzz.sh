#!/bin/sh
# run_fuzz.sh - builds the libFuzzer targets (make fuzz) and runs each
# tests/fuzz/fuzz_*.c target for SECONDS (default 60), for CI.
#
#   tests/fuzz/run_fuzz.sh [SECONDS] [TARGET...]     (from the repository root)
#
# Seeds come from tests/fuzz/corpus/<target>/ (read only); inputs the fuzzer
# finds go to build/fuzz/corpus-<target>/, so the committed seeds stay small.
# A dictionary tests/fuzz/<target>.dict is used when present. A crash, leak,
# sanitizer report or timeout leaves build/fuzz/<kind>-<target>-<hash> and
# makes the script exit non-zero after the other targets ran.
set -u
secs=${1:-60}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/../.." || exit 2
make -s fuzz >/dev/null || { echo "run_fuzz.sh: make fuzz failed" >&2; exit 2; }
targets=$*
[ -n "$targets" ] || targets=$(for f in tests/fuzz/fuzz_*.c; do basename "$f" .c; done)
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
fail=0
for t in $targets; do
    bin=build/fuzz/$t
    [ -x "$bin" ] || { echo "run_fuzz.sh: no fuzzer $bin" >&2; fail=1; continue; }
    work=build/fuzz/corpus-$t
    mkdir -p "$work"
    seeds=tests/fuzz/corpus/$t
    [ -d "$seeds" ] || seeds=
    dict=
    [ -f "tests/fuzz/$t.dict" ] && dict=-dict=tests/fuzz/$t.dict
    log=build/fuzz/$t.log
    echo "== $t: ${secs}s (log $log)"
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="build/fuzz/" $dict "$work" $seeds >"$log" 2>&1
    rc=$?
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ +DONE' "$log" | tr '\n' ' '
    echo
    if [ $rc -ne 0 ]; then
        echo "FAIL $t (exit $rc):" >&2
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -20 >&2
        fail=1
    fi
done
exit $fail
