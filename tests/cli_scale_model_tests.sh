#!/bin/sh
# cli_scale_model_tests.sh - tools/scale_model.py, the modelled scaling table:
#
#   1. its self-test (--check): parameter counts of DeepSeek-V3 (671.03 B,
#      37.55 B active, 684.5 B stored with MTP) and V2-Lite (15.71 B, 2.66 B
#      active; 2.45 B with the head but not the embedding, published 2.4 B),
#      the same counts from the official and the Hugging Face V3 config, the
#      V2-Lite Q4_K size README measured (8.85 GiB), expert splits, the
#      expected number of distinct ranks under group-limited routing;
#   2. it reads any config.json (V2-Lite official keys, the tiny fixtures'
#      HF keys) and rejects a missing one;
#   3. README's "Scaling out (modelled)" table is the script's output for
#      the command line printed above it (not typed in).
#
#   sh tests/cli_scale_model_tests.sh ./deepseek       (from the repository root;
#                                                       the binary is not used)
set -u
[ -f README.md ] && [ -f tools/scale_model.py ] || { echo "cli_scale_model_tests.sh: run from the repository root" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_cli_scale.XXXXXX) || exit 2
trap 'rm -rf "$T"' EXIT
checks=0
fails=0
check() { # check NAME CMD...
    name=$1
    shift
    if "$@" >"$T/out" 2>&1; then checks=$((checks + 1)); else fails=$((fails + 1)); echo "FAIL $name"; cat "$T/out"; fi
}

check "self-test" python3 tools/scale_model.py --check
check "V2-Lite official config" python3 tools/scale_model.py tools/data/deepseek-v2-lite-config_16B.json --ranks 2,3,4
for fx in tiny-v3 tiny-v2 tiny-v2-lite tiny-v3-fp8; do
    check "fixture $fx config.json" python3 tools/scale_model.py tests/fixtures/$fx/config.json --ranks 2,3
done
check "missing config fails" sh -c '! python3 tools/scale_model.py "$1/none.json"' sh "$T"

# README: the line after the begin marker is the command (in backticks), then
# the script's output up to the end marker.
sed -n '/<!-- scale_model.py: begin -->/,/<!-- scale_model.py: end -->/p' README.md | sed '1d;$d' >"$T/readme"
cmd=$(sed -n '1s/^`\(.*\)`$/\1/p' "$T/readme")
case "$cmd" in
python3\ tools/scale_model.py\ *)
    sed '1,2d' "$T/readme" >"$T/want"
    # shellcheck disable=SC2086
    check "README table = output of: $cmd" sh -c '$1 >"$2/got" && cmp "$2/got" "$2/want"' sh "$cmd" "$T" ;;
*) fails=$((fails + 1)); echo "FAIL README has no scale_model.py block (got command '$cmd')" ;;
esac

if [ "$fails" -ne 0 ]; then
    echo "cli_scale_model_tests.sh: $fails of $((checks + fails)) checks failed"
    exit 1
fi
echo "cli_scale_model_tests.sh: $checks checks passed"
