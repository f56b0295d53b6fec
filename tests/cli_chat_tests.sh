#!/bin/sh
# cli_chat_tests.sh - `deepseek chat`: through a pseudo-terminal (line
# editing prompt, streaming, /commands, Ctrl-C) and scripted from stdin.
# Usage: sh tests/cli_chat_tests.sh ./deepseek
set -u
BIN=${1:-./deepseek}
M=tests/fixtures/tiny-chat
fail=0
ok() { echo "  ok   $1"; }
bad() { echo "  FAIL $1"; fail=$((fail + 1)); }

python3 tests/chat/pty_test.py "$BIN" "$M" && ok "pty session" || bad "pty session"

# scripted: two turns and a command from stdin, deterministic at temperature 0
out1=$(printf 'Hello\n/set max_tokens 5\nHow are you?\n' | "$BIN" chat -m "$M" -n 8 --temperature 0 2>/dev/null)
rc=$?
out2=$(printf 'Hello\n/set max_tokens 5\nHow are you?\n' | "$BIN" chat -m "$M" -n 8 --temperature 0 2>/dev/null)
[ $rc -eq 0 ] && ok "stdin script exits 0" || bad "stdin script exits 0 (rc=$rc)"
[ "$out1" = "$out2" ] && ok "same script, same output" || bad "same script, same output"
lines=$(printf '%s\n' "$out1" | grep -c .)
[ "$lines" -ge 3 ] && ok "two replies and the /set acknowledgement" || bad "expected >= 3 output lines, got $lines"
case "$out1" in *"max_tokens = 5"*) ok "/set from stdin";; *) bad "/set from stdin";; esac

# a different seed at temperature > 0 changes the reply
a=$(echo "Hi" | "$BIN" chat -m "$M" -n 12 --temperature 1 --seed 1 2>/dev/null)
b=$(echo "Hi" | "$BIN" chat -m "$M" -n 12 --temperature 1 --seed 2 2>/dev/null)
c=$(echo "Hi" | "$BIN" chat -m "$M" -n 12 --temperature 1 --seed 1 2>/dev/null)
[ "$a" = "$c" ] && [ "$a" != "$b" ] && ok "seeds" || bad "seeds"

# generate --stop: the text ends right before the stop string, which never appears
full=$("$BIN" generate -m "$M" --prompt "Hello" -n 30 --temperature 0)
stop=$(printf '%s' "$full" | cut -c8-10)
cut=$("$BIN" generate -m "$M" --prompt "Hello" -n 30 --temperature 0 --stop "$stop")
case "$full" in "$cut$stop"*) ok "generate --stop cuts before the stop string";; *) bad "generate --stop ('$stop': '$cut' vs '$full')";; esac

# a DeepSeek-V3.2 folder (sparse attention; its own encoding_dsv32 format) chats and generates
out=$(printf 'Hello\nAgain\n' | "$BIN" chat -m tests/fixtures/tiny-v32 -n 6 --temperature 0 2>/tmp/ds_chat_err); rc=$?
[ $rc -eq 0 ] && [ -n "$out" ] && ok "chat on a V3.2 folder" || bad "chat on a V3.2 folder (rc=$rc): $(cat /tmp/ds_chat_err)"
out=$("$BIN" generate -m tests/fixtures/tiny-v32 --prompt "Hello" -n 20 --temperature 0 --ignore-eos 2>/tmp/ds_chat_err); rc=$?
[ $rc -eq 0 ] && [ -n "$out" ] && ok "generate on a V3.2 folder" || bad "generate on a V3.2 folder (rc=$rc)"

# a DeepSeek-V4 folder (its own encoding_dsv4 format) chats and generates
out=$(printf 'Hello\nAgain\n' | "$BIN" chat -m tests/fixtures/tiny-v4 -n 6 --temperature 0 2>/tmp/ds_chat_err); rc=$?
[ $rc -eq 0 ] && [ -n "$out" ] && ok "chat on a V4 folder" || bad "chat on a V4 folder (rc=$rc): $(cat /tmp/ds_chat_err)"
out=$("$BIN" generate -m tests/fixtures/tiny-v4 --prompt "Hello" -n 20 --temperature 0 --ignore-eos 2>/tmp/ds_chat_err); rc=$?
[ $rc -eq 0 ] && [ -n "$out" ] && ok "generate on a V4 folder" || bad "generate on a V4 folder (rc=$rc)"

# start_serve LOG ARGS...: `deepseek serve --port 0 ARGS` in the background (the kernel picks a free
# port: a port chosen here could be taken by then, even by one of our own curl connections' ephemeral
# ports); sets spid and port; returns 0 once /health answers, 1 if it never does
start_serve() {
    log=$1; shift
    "$BIN" serve "$@" --port 0 >"$log" 2>&1 &
    spid=$!
    port=
    for i in $(seq 1 150); do
        port=$(sed -n 's|.*listening on http://[^:]*:\([0-9]*\)/.*|\1|p' "$log" 2>/dev/null | head -1)
        [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
        kill -0 $spid 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# serve on the V3.2 and V4 folders: two concurrent chat requests (batched decode over sparse /
# compressed attention) give the same text as one alone at temperature 0
serve_check() {  # fixture label
    if start_serve /tmp/ds_$1_serve.log -m tests/fixtures/$1 -c 256; then
        alone=$(req "Hello there")
        req "A longer question about many things" >/tmp/ds_$1_b &
        both=$(req "Hello there")
        wait $!
        [ -n "$alone" ] && [ "$alone" = "$both" ] && ok "serve on a $2 folder (batched = alone)" ||
            bad "serve on a $2 folder: '$alone' vs '$both'"
        # a reply longer than V4's 64 spare ring rows: the same prompt again cannot reuse that slot's
        # prefix (its rings moved past it) and is computed afresh: the same text
        long1=$(req "Hello there" 90) && long2=$(req "Hello there" 90)
        [ -n "$long1" ] && [ "$long1" = "$long2" ] && ok "serve on a $2 folder (long reply, then the same prompt)" ||
            bad "serve on a $2 folder, long replies differ: '$long1' vs '$long2'"
    else
        bad "serve on a $2 folder did not come up: $(tail -3 /tmp/ds_$1_serve.log)"
    fi
    kill $spid 2>/dev/null; wait $spid 2>/dev/null
}
req() { curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "{\"messages\":[{\"role\":\"user\",\"content\":\"$1\"}],\"max_tokens\":${2:-12},\"temperature\":0}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])'; }
serve_check tiny-v32 V3.2
serve_check tiny-v4 V4
# one slot (-np 1), a prompt longer than a prefill chunk (1,564 tokens, chunks of 512) and a reply
# past the rings: the same request again cannot reuse the slot, which is emptied and refilled in
# chunks whose later ones read the rings — their bounds must have been reset with the slot
# (this was a 500, "the V4 cache no longer holds the rows position 512 reads")
if start_serve /tmp/ds_v4_np1_serve.log -m tests/fixtures/tiny-v4 -c 4096 -np 1; then
    lp=$(python3 -c "print('one two three four five ' * 130)")
    long3=$(req "$lp" 200) && long4=$(req "$lp" 200)
    [ -n "$long3" ] && [ "$long3" = "$long4" ] && ok "serve -np 1 on a V4 folder (long prompt and reply, then the same)" ||
        bad "serve -np 1 on a V4 folder, long prompt: '$long3' vs '$long4' ($(tail -2 /tmp/ds_v4_np1_serve.log))"
else
    bad "serve -np 1 on a V4 folder did not come up: $(tail -3 /tmp/ds_v4_np1_serve.log)"
fi
kill $spid 2>/dev/null; wait $spid 2>/dev/null

# serve with the V3.2 and V4 formats: DSML tool calls -> tool_calls, reasoning, request fields
# (forced output on the tiny V3.2 model; V4's format by --chat-format)
dsml_check() {  # format
    if start_serve /tmp/ds_dsml_serve.log -m tests/fixtures/tiny-v32 --chat-format $1 -c 4096 --test-hooks; then
        python3 tests/chat/dsml_serve_test.py $port $1 || fail=$((fail + 1))
    else
        bad "serve --chat-format $1 did not come up: $(tail -3 /tmp/ds_dsml_serve.log)"
    fi
    kill $spid 2>/dev/null; wait $spid 2>/dev/null
}
dsml_check v4
dsml_check v3.2

# errors: no tokenizer, bad flags
echo hi | "$BIN" chat -m tests/fixtures/tiny-v3 >/dev/null 2>/tmp/ds_chat_err; rc=$?
[ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q tokenizer /tmp/ds_chat_err && ok "model without tokenizer: clear error" || bad "model without tokenizer (rc=$rc)"
echo hi | "$BIN" chat -m "$M" --format klingon >/dev/null 2>&1; rc=$?
[ $rc -ne 0 ] && [ $rc -lt 128 ] && ok "unknown --format rejected" || bad "unknown --format (rc=$rc)"
"$BIN" chat --help >/dev/null 2>&1 && ok "--help" || bad "--help"

[ $fail -eq 0 ] && echo "cli_chat_tests: all passed" || echo "cli_chat_tests: $fail failed"
exit $fail
