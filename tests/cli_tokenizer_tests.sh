#!/bin/sh
# cli_tokenizer_tests.sh - CLI checks for `deepseek tokenize` / `deepseek detokenize`:
# exact ids on known text, --no-special, --file/stdin, round trips, --help, and bad
# input (missing files, bad JSON, bad ids, bad flags) failing cleanly with a message.
#
#   sh tests/cli_tokenizer_tests.sh ./deepseek          (from the repository root)
#
# Uses ${DS_SHARED:-../shared}/tokenizers/deepseek-v3 and tests/fixtures/tokenizer.
set -u
bin=${1:?usage: cli_tokenizer_tests.sh path/to/deepseek}
shared=${DS_SHARED:-../shared}
V3=$shared/tokenizers/deepseek-v3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass=0

ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# expect_out NAME EXPECTED CMD...: exit 0 and stdout == EXPECTED
expect_out() {
    name=$1 want=$2
    shift 2
    got=$("$@" 2>"$tmp/err")
    rc=$?
    if [ $rc -ne 0 ]; then bad "$name: exit $rc: $(cat "$tmp/err")"
    elif [ "$got" != "$want" ]; then bad "$name: got '$got', want '$want'"
    else ok; fi
}

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

[ -f "$V3/tokenizer.json" ] || { echo "cli_tokenizer_tests.sh: $V3/tokenizer.json not found" >&2; exit 1; }

# --- tokenize: exact ids (as HF Tokenizer.from_file(...).encode(text).ids)
expect_out "tokenize specials" "[19923,2058,223,128803,19346,1]" \
    "$bin" tokenize -m "$V3" --text 'Hello world <｜User｜> hi<｜end▁of▁sentence｜>'
expect_out "tokenize via tokenizer.json path" "[19923,2058,223,128803,19346,1]" \
    "$bin" tokenize -m "$V3/tokenizer.json" --text 'Hello world <｜User｜> hi<｜end▁of▁sentence｜>'
expect_out "tokenize empty" "[]" "$bin" tokenize -m "$V3" --text ''
lit=$("$bin" tokenize -m "$V3" --no-special --text 'Hello world <｜User｜> hi<｜end▁of▁sentence｜>')
case "$lit" in
    *128803*|*",1]"|*",1,"*) bad "--no-special still produced special ids: $lit" ;;
    "[19923,2058,"*) ok ;;
    *) bad "--no-special: unexpected ids $lit" ;;
esac
expect_out "--no-special decodes back" 'Hello world <｜User｜> hi<｜end▁of▁sentence｜>' \
    "$bin" detokenize -m "$V3" --ids "$lit"

text='Multi-line text:
中文、日本語、한국어 😀👍🏽 12345.678   spaces	tab'
printf '%s' "$text" >"$tmp/in.txt"
ids=$("$bin" tokenize -m "$V3" --text "$text")
expect_out "tokenize --file" "$ids" "$bin" tokenize -m "$V3" --file "$tmp/in.txt"
expect_out "tokenize --file -" "$ids" sh -c "\"\$0\" tokenize -m \"\$1\" --file - < \"\$2\"" "$bin" "$V3" "$tmp/in.txt"
expect_out "round trip" "$text" "$bin" detokenize -m "$V3" --ids "$ids"

# --- detokenize
expect_out "detokenize" "Hello world" "$bin" detokenize -m "$V3" --ids 19923,2058
expect_out "detokenize --skip-special" "Hello" "$bin" detokenize -m "$V3" --ids 0,19923,1 --skip-special
expect_out "detokenize keeps special" "<｜begin▁of▁sentence｜>Hello" "$bin" detokenize -m "$V3" --ids 0,19923
# the first byte of a 3-byte character alone: U+FFFD, or the raw byte with --raw
byte=$("$bin" tokenize -m "$V3" --no-special --text "$(printf '\344')" 2>/dev/null | tr -d '[]')
expect_out "detokenize partial char" "$(printf '\357\277\275')" "$bin" detokenize -m "$V3" --ids "$byte"
"$bin" detokenize -m "$V3" --ids "$byte" --raw >"$tmp/raw" 2>/dev/null
if [ "$(od -An -tx1 "$tmp/raw" | tr -d ' \n')" = "e4" ]; then ok; else bad "--raw: $(od -An -tx1 "$tmp/raw")"; fi

# --- other tokenizer.json styles (fixtures)
"$bin" tokenize -m tests/fixtures/tokenizer/llama3 --text 'hello' >"$tmp/out" 2>"$tmp/err" || bad "llama3 fixture: $(cat "$tmp/err")"
case "$(cat "$tmp/out")" in "[0,"*) ok ;; *) bad "llama3 fixture should start with BOS 0: $(cat "$tmp/out")" ;; esac

# --- help
"$bin" tokenize --help >"$tmp/out" 2>&1 && grep -q "usage: deepseek tokenize" "$tmp/out" && ok || bad "tokenize --help"
"$bin" detokenize --help >"$tmp/out" 2>&1 && grep -q "usage: deepseek detokenize" "$tmp/out" && ok || bad "detokenize --help"

# --- bad input: clear message, exit 1, no crash
printf '{"model": ' >"$tmp/bad.json"
printf '{"model":{"type":"Unigram","vocab":[]}}' >"$tmp/unsup.json"
expect_fail "missing model dir" "/nonexistent/model" "$bin" tokenize -m /nonexistent/model --text hi
expect_fail "dir without tokenizer.json" "tokenizer.json" "$bin" tokenize -m "$tmp" --text hi
expect_fail "bad JSON" "invalid JSON" "$bin" tokenize -m "$tmp/bad.json" --text hi
expect_fail "unsupported model" "Unigram" "$bin" tokenize -m "$tmp/unsup.json" --text hi
expect_fail "no text" "--text or --file" "$bin" tokenize -m "$V3"
expect_fail "text and file" "--text or --file" "$bin" tokenize -m "$V3" --text a --file "$tmp/in.txt"
expect_fail "missing --file" "/nonexistent/file.txt" "$bin" tokenize -m "$V3" --file /nonexistent/file.txt
expect_fail "unknown flag" "--bogus" "$bin" tokenize -m "$V3" --text a --bogus
expect_fail "flag without value" "--text" "$bin" tokenize -m "$V3" --text
expect_fail "id out of range" "out of range" "$bin" detokenize -m "$V3" --ids 5,128815
expect_fail "id far out of range" "out of range" "$bin" detokenize -m "$V3" --ids 99999999999
expect_fail "negative id" "out of range" "$bin" detokenize -m "$V3" --ids 1,-3
expect_fail "garbage ids" "--ids" "$bin" detokenize -m "$V3" --ids 1,abc
expect_fail "empty ids" "--ids" "$bin" detokenize -m "$V3" --ids ''
expect_fail "unclosed bracket" "--ids" "$bin" detokenize -m "$V3" --ids '[1,2'
expect_fail "missing --ids" "--ids" "$bin" detokenize -m "$V3"
expect_fail "detokenize bad flag" "--nope" "$bin" detokenize -m "$V3" --ids 1 --nope

echo "cli_tokenizer_tests: $pass passed, $fails failed"
[ $fails -eq 0 ]
