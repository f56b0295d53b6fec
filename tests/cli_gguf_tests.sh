#!/bin/sh
# cli_gguf_tests.sh - command-line checks for GGUF tokenizer metadata and
# split GGUF files (the README's "GGUF files" section).
#
#   sh tests/cli_gguf_tests.sh ./deepseek        (from the repository root)
#
# tests/fixtures/tiny-chat (V3 architecture, its own tokenizer.json) is
# converted to a GGUF that carries the tokenizer; in a folder with no
# tokenizer.json, generate/tokenize/chat use the file's metadata and give the
# folder's output; the tokenizer precedence (--tokenizer > tokenizer.json
# beside > metadata) and its error message; convert --split-max-size writes
# parts that load from any part with the same output; a missing part is an
# error naming it; convert writes K-quants/IQ4 types that info names and
# generate runs, and refuses the IQ1/IQ2/IQ3 types it only reads; a DeepSeek-V4
# folder (FP8 + FP4) converts to llama.cpp's deepseek4 layout (MXFP4 experts),
# with info and greedy output as the folder's, and a V3.2 one to deepseek32.
# Prints each failed check and
# exits 1 if any failed.
set -u
BIN=${1:?usage: sh tests/cli_gguf_tests.sh path/to/deepseek}
FX=tests/fixtures
[ -x "$BIN" ] || { echo "cli_gguf_tests.sh: $BIN is not executable" >&2; exit 2; }
[ -d "$FX/tiny-chat" ] || { echo "cli_gguf_tests.sh: run from the repository root" >&2; exit 2; }
T=$(mktemp -d /tmp/ds_cli_gguf.XXXXXX) || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

checks=0
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

expect_fail() {
    name=$1 pat=$2
    shift 2
    checks=$((checks + 1))
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 0 ]; then fail "$name: exit 0, expected an error"; return; fi
    if [ "$rc" -ge 128 ]; then fail "$name: killed by signal $((rc - 128)) (exit $rc)"; return; fi
    if ! grep -q -F -e "$pat" "$T/err"; then fail "$name: stderr does not mention '$pat': $(head -c 400 "$T/err")"; fi
}

expect_ok() {
    name=$1
    shift
    checks=$((checks + 1))
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -ne 0 ]; then fail "$name: exit $rc: $(head -c 400 "$T/err")"; return 1; fi
    return 0
}

# same NAME FILE_A FILE_B
same() {
    checks=$((checks + 1))
    cmp -s "$2" "$3" || fail "$1: '$(head -c 200 "$2")' vs '$(head -c 200 "$3")'"
}

M=$FX/tiny-chat
P="The quick brown fox <｜User｜>hello 12345"
mkdir -p "$T/g" "$T/s"
# V3.2 (sparse attention): llama.cpp's deepseek32 layout; greedy output as the folder's
expect_ok "convert a V3.2 folder" "$BIN" convert -m "$FX/tiny-v32" -o "$T/g/v32.gguf" --type f32 -q
"$BIN" generate -m "$FX/tiny-v32" --prompt-ids 0,5,17,42 -n 8 -t 1 >"$T/g32_dir" 2>/dev/null
"$BIN" generate -m "$T/g/v32.gguf" --prompt-ids 0,5,17,42 -n 8 -t 1 >"$T/g32_gguf" 2>/dev/null
checks=$((checks + 1))
[ -s "$T/g32_dir" ] && cmp -s "$T/g32_dir" "$T/g32_gguf" || fail "V3.2 greedy output: F32 GGUF differs from the folder (or none)"
expect_ok "convert tiny-chat to f32 GGUF" "$BIN" convert -m "$M" -o "$T/g/chat.gguf" --type f32 -q

# the folder's results
expect_ok "tokenize (folder)" "$BIN" tokenize -m "$M" --text "$P" && cp "$T/out" "$T/tok.ref"
expect_ok "generate (folder)" "$BIN" generate -m "$M" --prompt "$P" -n 8 -t 1 && cp "$T/out" "$T/gen.ref"
printf 'hello\n' >"$T/in"
expect_ok "chat (folder)" sh -c "'$BIN' chat -m '$M' -n 6 -t 1 --temperature 0 <'$T/in'" && cp "$T/out" "$T/chat.ref"

# the GGUF alone (no tokenizer.json beside it): its metadata
expect_ok "tokenize (GGUF metadata)" "$BIN" tokenize -m "$T/g/chat.gguf" --text "$P" && same "tokenize ids" "$T/out" "$T/tok.ref"
expect_ok "generate (GGUF metadata)" "$BIN" generate -m "$T/g/chat.gguf" --prompt "$P" -n 8 -t 1 && same "generate text" "$T/out" "$T/gen.ref"
expect_ok "chat (GGUF metadata)" sh -c "'$BIN' chat -m '$T/g/chat.gguf' -n 6 -t 1 --temperature 0 <'$T/in'" && same "chat reply" "$T/out" "$T/chat.ref"
expect_ok "detokenize (GGUF metadata)" "$BIN" detokenize -m "$T/g/chat.gguf" --ids "$(tr -d '[]' <"$T/tok.ref")" &&
    { checks=$((checks + 1)); [ "$(cat "$T/out")" = "$P" ] || fail "detokenize: '$(cat "$T/out")'"; }

# precedence: a tokenizer.json beside the file wins (a broken one is an error naming it) ...
printf '{broken' >"$T/g/tokenizer.json"
expect_fail "tokenizer.json beside the GGUF is used first" "the tokenizer.json beside $T/g/chat.gguf" \
    "$BIN" generate -m "$T/g/chat.gguf" --prompt hi -n 1
# ... and --tokenizer wins over both
expect_ok "--tokenizer over the one beside" "$BIN" tokenize -m "$T/g/chat.gguf" --tokenizer "$M" --text "$P" &&
    same "--tokenizer ids" "$T/out" "$T/tok.ref"
expect_ok "--tokenizer a .gguf" "$BIN" generate -m "$T/g/chat.gguf" --tokenizer "$T/g/chat.gguf" --prompt "$P" -n 8 -t 1 &&
    same "--tokenizer GGUF text" "$T/out" "$T/gen.ref"
rm -f "$T/g/tokenizer.json"
expect_fail "--tokenizer missing" "--tokenizer $T/nope" "$BIN" generate -m "$T/g/chat.gguf" --tokenizer "$T/nope" --prompt hi
# a GGUF without a tokenizer: the message lists what was tried
expect_fail "no tokenizer anywhere" "tried --tokenizer (not given), $FX/gguf/tokenizer.json (not found), the GGUF metadata" \
    "$BIN" generate -m "$FX/gguf/tiny-v3.llama-q8_0.gguf" --prompt hi

# a chat template that is none of the DeepSeek formats: chat says so and uses V3
mkdir -p "$T/tk"
cp "$M/tokenizer.json" "$T/tk/"
printf '{"add_bos_token": true, "bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>", "chat_template": "{%% for m in messages %%}{{ m.content }}{%% endfor %%}"}' \
    >"$T/tk/tokenizer_config.json"
expect_ok "convert --tokenizer DIR" "$BIN" convert -m "$M" -o "$T/g2/odd.gguf" --type f32 -q --tokenizer "$T/tk"
expect_ok "chat with an unknown template" sh -c "'$BIN' chat -m '$T/g2/odd.gguf' -n 2 -t 1 --temperature 0 <'$T/in'" &&
    { checks=$((checks + 1)); grep -q "not a DeepSeek V3, R1, V3.1 or V2 template" "$T/err" || fail "unknown template: no message: $(head -c 300 "$T/err")"; }

# split files
expect_ok "convert --split-max-size" "$BIN" convert -m "$M" -o "$T/s/chat.gguf" --type f32 -q --split-max-size 150K
n=$(ls "$T/s" | grep -c -e '-of-')
checks=$((checks + 1))
[ "$n" -ge 3 ] || fail "--split-max-size 150K: $n parts, expected >= 3: $(ls "$T/s")"
last=$(printf '%05d' "$n")
for k in 00001 00002 "$last"; do
    expect_ok "generate from part $k" "$BIN" generate -m "$T/s/chat-$k-of-$last.gguf" --prompt "$P" -n 8 -t 1 &&
        same "split part $k text" "$T/out" "$T/gen.ref"
done
expect_ok "info on a split file" "$BIN" info -m "$T/s/chat-00002-of-$last.gguf"
mv "$T/s/chat-$last-of-$last.gguf" "$T/s/away"
expect_fail "a missing part" "part $n of $n, '$T/s/chat-$last-of-$last.gguf', is missing" \
    "$BIN" generate -m "$T/s/chat-00001-of-$last.gguf" --prompt-ids 1,2 -n 1
expect_fail "--split-max-size bad" "not a size" "$BIN" convert -m "$M" -o "$T/x.gguf" --split-max-size 12Q

# quant types (the kq fixture: 256-wide rows, so the K-quants apply)
KQ=$FX/gguf/kq.llama-q4_k_m.gguf
expect_ok "convert --type q2_k --experts iq4_xs" "$BIN" convert -m "$KQ" -o "$T/kq2.gguf" --type q2_k --experts iq4_xs -q
expect_ok "info shows the types" "$BIN" info -m "$T/kq2.gguf" &&
    { checks=$((checks + 1)); grep -q "Q2_K .*IQ4_XS\|IQ4_XS .*Q2_K" "$T/out" || fail "info types: $(grep weights "$T/out")"; }
expect_ok "generate from Q2_K/IQ4_XS" "$BIN" generate -m "$T/kq2.gguf" --prompt-ids 1,2,3 -n 4 -t 1
expect_fail "convert --type iq2_xxs is refused" "IQ2_XXS is read but not written" \
    "$BIN" convert -m "$KQ" -o "$T/kq3.gguf" --type iq2_xxs
expect_fail "convert --type q8_1 is unknown" "unknown type 'q8_1'" "$BIN" convert -m "$KQ" -o "$T/kq3.gguf" --type q8_1

# DeepSeek-V4 (llama.cpp's deepseek4 layout): convert's default keeps FP4 experts as MXFP4 and takes
# FP8 matrices to Q8_0; --kl reports; info prints what it prints for the folder; generate runs
V4F=$FX/tiny-v4-fp8
expect_ok "convert V4 (FP8 + FP4)" "$BIN" convert -m "$V4F" -o "$T/v4.gguf" -q --kl
checks=$((checks + 1))
grep -q "KL mean" "$T/out" || fail "convert V4 --kl: $(head -c 300 "$T/out")"
expect_ok "info on the V4 GGUF" "$BIN" info -m "$T/v4.gguf" &&
    { checks=$((checks + 1)); grep -q "deepseek4.*Q8_0.*MXFP4" "$T/out" || fail "V4 info types: $(grep weights "$T/out")"; }
grep -v "^model\|^weights\|^memory\|^ " "$T/out" >"$T/info_gguf"
expect_ok "info on the V4 folder" "$BIN" info -m "$V4F"
grep -v "^model\|^weights\|^memory\|^ " "$T/out" >"$T/info_dir"
checks=$((checks + 1))
diff "$T/info_dir" "$T/info_gguf" >"$T/info_diff" || fail "V4 info: folder vs GGUF differ: $(head -c 400 "$T/info_diff")"
expect_ok "generate from the V4 GGUF" "$BIN" generate -m "$T/v4.gguf" --prompt-ids 0,419,2,70,76,113 -n 6 -t 1
expect_ok "convert V4 --type bf16" "$BIN" convert -m "$V4F" -o "$T/v4b.gguf" -q --type bf16
"$BIN" generate -m "$V4F" --prompt-ids 0,419,2,70,76,113 -n 12 -t 1 --temp 0 >"$T/g_dir" 2>/dev/null
"$BIN" generate -m "$T/v4b.gguf" --prompt-ids 0,419,2,70,76,113 -n 12 -t 1 --temp 0 >"$T/g_gguf" 2>/dev/null
checks=$((checks + 1))
[ -s "$T/g_dir" ] && cmp -s "$T/g_dir" "$T/g_gguf" || fail "V4 greedy output: BF16+MXFP4 GGUF differs from the folder (or none)"
expect_fail "--experts mxfp4 needs FP4 experts" "no MXFP4 quantizer" \
    "$BIN" convert -m "$FX/tiny-v4" -o "$T/v4m.gguf" --experts mxfp4
expect_fail "mxfp4 is for experts only" "routed experts only" "$BIN" convert -m "$V4F" -o "$T/v4m.gguf" --type mxfp4
# a V4 folder with an MTP layer: llama.cpp's deepseek4 layout has no names for it -> an error naming --no-mtp;
# with --no-mtp the file is written and gives the folder's greedy tokens (the main model is unchanged)
expect_fail "V4 MTP has no GGUF names" "pass --no-mtp" "$BIN" convert -m "$FX/tiny-v4-mtp" -o "$T/v4mtp.gguf"
[ ! -e "$T/v4mtp.gguf" ] || fail "V4 MTP refusal left a file behind"
"$BIN" convert -m "$FX/tiny-v4-mtp" -o "$T/v4mtp.gguf" --no-mtp --type bf16 -q >/dev/null 2>"$T/err" || fail "V4 --no-mtp convert: $(tail -c 300 "$T/err")"
"$BIN" generate -m "$FX/tiny-v4-mtp" --prompt-ids 0,419,2,70,76,113 -n 8 -t 1 --temp 0 >"$T/g_mdir" 2>/dev/null
"$BIN" generate -m "$T/v4mtp.gguf" --prompt-ids 0,419,2,70,76,113 -n 8 -t 1 --temp 0 >"$T/g_mgguf" 2>/dev/null
checks=$((checks + 1))
[ -s "$T/g_mdir" ] && cmp -s "$T/g_mdir" "$T/g_mgguf" || fail "V4 --no-mtp GGUF: greedy output differs from the folder's"

if [ "$fails" -gt 0 ]; then
    echo "cli_gguf_tests.sh: $fails of $checks checks failed"
    exit 1
fi
echo "cli_gguf_tests.sh: $checks checks passed"
