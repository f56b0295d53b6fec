#!/bin/sh
# cli_train_tokenizer_tests.sh - CLI checks for `deepseek train-tokenizer`: bad input
# (missing/empty/directory inputs, vocab size too small, bad flags, bad -o) fails cleanly
# with a message; the happy path writes a tokenizer that tokenize/detokenize round-trip,
# with the asked vocab size, BOS/EOS ids, -o file.json, stdin, non-UTF-8 input,
# deterministic output, and prepare-data accepting it.
#
#   sh tests/cli_train_tokenizer_tests.sh ./deepseek          (from the repository root)
#
# Uses ${DS_SHARED:-../shared}/data/tinyshakespeare.txt.
set -u
bin=${1:?usage: cli_train_tokenizer_tests.sh path/to/deepseek}
shared=${DS_SHARED:-../shared}
shakes=$shared/data/tinyshakespeare.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass=0

ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# expect_fail NAME NEEDLE CMD...: exit 1 (not a crash) and stderr contains NEEDLE
expect_fail() {
    name=$1 needle=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ]; then bad "$name: succeeded but should fail"
    elif [ $rc -ge 128 ]; then bad "$name: crashed (exit $rc)"
    elif ! grep -qF -- "$needle" "$tmp/err"; then bad "$name: message lacks '$needle': $(cat "$tmp/err")"
    else ok; fi
}

# expect_ok NAME CMD...: exit 0
expect_ok() {
    name=$1
    shift
    if "$@" >"$tmp/out" 2>"$tmp/err"; then ok; else bad "$name: exit $?: $(cat "$tmp/err")"; fi
}

[ -f "$shakes" ] || { echo "cli_train_tokenizer_tests.sh: $shakes not found" >&2; exit 1; }
head -c 200000 "$shakes" >"$tmp/small.txt"
: >"$tmp/empty.txt"

# --- help and bad input
"$bin" train-tokenizer --help >"$tmp/out" 2>&1 && grep -q "usage: deepseek train-tokenizer" "$tmp/out" && ok ||
    bad "--help"
expect_fail "no vocab size" "--vocab-size is required" "$bin" train-tokenizer "$tmp/small.txt"
expect_fail "no files" "no input files" "$bin" train-tokenizer --vocab-size 500
expect_fail "missing file" "No such file" "$bin" train-tokenizer --vocab-size 500 -o "$tmp/x" "$tmp/nope.txt"
expect_fail "directory input" "is a directory" "$bin" train-tokenizer --vocab-size 500 -o "$tmp/x" "$tmp"
expect_fail "vocab too small" "at least 271" "$bin" train-tokenizer --vocab-size 270 -o "$tmp/x" "$tmp/small.txt"
expect_fail "vocab too small, no specials" "at least 256" \
    "$bin" train-tokenizer --vocab-size 255 --no-default-specials -o "$tmp/x" "$tmp/small.txt"
expect_fail "vocab not a number" "not an integer" "$bin" train-tokenizer --vocab-size 4k "$tmp/small.txt"
expect_fail "empty corpus" "empty corpus" "$bin" train-tokenizer --vocab-size 500 -o "$tmp/x" "$tmp/empty.txt"
expect_fail "bad pre-tokenizer" "not one of deepseek-v3, gpt2" \
    "$bin" train-tokenizer --vocab-size 500 --pre-tokenizer bert "$tmp/small.txt"
expect_fail "unknown option" "unknown option '--vocab'" "$bin" train-tokenizer --vocab 500 "$tmp/small.txt"
expect_fail "empty special" "is empty" "$bin" train-tokenizer --vocab-size 500 --special '' -o "$tmp/x" "$tmp/small.txt"
expect_fail "-o is a file" "not a folder" "$bin" train-tokenizer --vocab-size 500 -o "$tmp/small.txt" "$tmp/small.txt"
expect_fail "-o under a file" "$tmp/small.txt exists and is not a folder" \
    "$bin" train-tokenizer --vocab-size 500 -o "$tmp/small.txt/dir" "$tmp/small.txt"
expect_fail "stdin twice" "more than once" "$bin" train-tokenizer --vocab-size 500 - - </dev/null
[ ! -e "$tmp/x" ] && ok || bad "a failed run left $tmp/x behind"

# --- happy path: folder output
expect_ok "train 1000" "$bin" train-tokenizer --vocab-size 1000 -o "$tmp/tok" "$tmp/small.txt"
if [ -f "$tmp/tok/tokenizer.json" ] && [ -f "$tmp/tok/tokenizer_config.json" ]; then ok; else bad "files not written"; fi
grep -q '"vocab_size":1000' "$tmp/out" && ok || bad "summary: $(cat "$tmp/out")"
grep -q '"chat_template"' "$tmp/tok/tokenizer_config.json" && ok || bad "no chat_template in tokenizer_config.json"
text=$(printf 'First Citizen: Before we proceed any further, hear me speak. Caf\303\251 1234567 <think>')
ids=$("$bin" tokenize -m "$tmp/tok" --text "$text")
back=$("$bin" detokenize -m "$tmp/tok" --ids "$ids")
[ "$back" = "$text" ] && ok || bad "round trip: '$back'"
# specials: BOS 0, EOS 1, <｜User｜> 2, parsed from text
got=$("$bin" tokenize -m "$tmp/tok" --text '<｜begin▁of▁sentence｜><｜User｜>hi<｜end▁of▁sentence｜>')
case "$got" in "[0,2,"*",1]") ok ;; *) bad "special ids: $got" ;; esac
# max id = 999
max=$("$bin" tokenize -m "$tmp/tok" --file "$tmp/small.txt" | tr -d '[]' | tr ',' '\n' | sort -n | tail -1)
[ "$max" -le 999 ] && [ "$max" -ge 900 ] && ok || bad "max id $max for vocab 1000"

# deterministic: same input, same bytes (also with the GPT-2 pre-tokenizer and --per-line)
expect_ok "train again" "$bin" train-tokenizer --vocab-size 1000 -q -o "$tmp/tok2" "$tmp/small.txt"
cmp -s "$tmp/tok/tokenizer.json" "$tmp/tok2/tokenizer.json" && ok || bad "not deterministic"
expect_ok "gpt2 per-line" "$bin" train-tokenizer --vocab-size 600 --pre-tokenizer gpt2 --per-line -q \
    -o "$tmp/g.json" "$tmp/small.txt"
[ -f "$tmp/g.json" ] && [ ! -e "$tmp/tokenizer_config.json" ] && ok || bad "-o file.json"
grep -q '"use_regex":true' "$tmp/g.json" && ok || bad "gpt2 pre-tokenizer not written"

# stdin, non-UTF-8 bytes, extra specials, several files
printf 'abc \377\376 caf\303 \000 xyz\n' >"$tmp/bin.txt"
head -c 50000 "$shakes" | "$bin" train-tokenizer --vocab-size 400 --special '<|extra|>' -q -o "$tmp/t3" - "$tmp/bin.txt" \
    >"$tmp/out" 2>"$tmp/err" && ok || bad "stdin + binary: $(cat "$tmp/err")"
got=$("$bin" tokenize -m "$tmp/t3" --text 'a<|extra|>b')
case "$got" in *",15,"*) ok ;; *) bad "--special id: $got" ;; esac
ids=$("$bin" tokenize -m "$tmp/t3" --file "$tmp/bin.txt")
"$bin" detokenize -m "$tmp/t3" --raw --ids "$ids" >"$tmp/back.txt" && cmp -s "$tmp/bin.txt" "$tmp/back.txt" && ok ||
    bad "non-UTF-8 round trip"

# vocab larger than the corpus allows: a smaller vocabulary and a note
expect_ok "tiny corpus" "$bin" train-tokenizer --vocab-size 5000 -q -o "$tmp/t4" "$tmp/bin.txt"
grep -q "fewer than asked" "$tmp/err" && ok || bad "no note for a short vocabulary: $(cat "$tmp/err")"

# prepare-data takes the result
expect_ok "prepare-data" "$bin" prepare-data --tokenizer "$tmp/tok" --out "$tmp/data" "$tmp/small.txt"
grep -q '"vocab_size": 1000' "$tmp/data/data.json" && ok || bad "prepare-data vocab: $(grep vocab "$tmp/data/data.json")"

echo "cli_train_tokenizer_tests: $pass passed, $fails failed"
[ "$fails" -eq 0 ]
