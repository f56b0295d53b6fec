#!/bin/sh
# cli_pull_tests.sh - `deepseek pull` against a mock hub (tests/pull/mock_hub.py
# on 127.0.0.1): the cache layout, -m ORG/NAME, resume after a cut transfer
# (Range), SHA-256 check of LFS files, a private repository with HF_TOKEN (never
# sent to the redirect target), a server that ignores Range, HF_HUB_OFFLINE=1.
# usage: sh tests/cli_pull_tests.sh ./deepseek
set -u
BIN=${1:-./deepseek}
case "$BIN" in /*) ;; *) BIN="$(pwd)/$BIN" ;; esac
"$BIN" pull --help >/dev/null 2>&1 || { echo "pull: not built into $BIN"; exit 1; }
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail=0
ok() { echo "ok   pull: $1"; }
bad() { echo "FAIL pull: $1"; fail=1; }

mkdir -p "$tmp/tiny"
cp models/default/config.json models/default/model.safetensors models/default/tokenizer.json \
   models/default/generation_config.json "$tmp/tiny/"
mkdir -p "$tmp/tiny/sub" && echo '{"note": "nested file"}' >"$tmp/tiny/sub/extra.json"
python3 tests/pull/mock_hub.py "$tmp/port" "test/tiny=$tmp/tiny" "test/private=tests/fixtures/tiny-chat:private" &
pid=$!
for i in $(seq 1 100); do [ -f "$tmp/port" ] && break; sleep 0.1; done
[ -f "$tmp/port" ] || { echo "FAIL pull: mock hub did not start"; exit 1; }
EP="http://127.0.0.1:$(cat "$tmp/port")"
export HF_ENDPOINT="$EP" HF_HOME="$tmp/hf"
unset HF_TOKEN HF_HUB_CACHE HF_HUB_OFFLINE 2>/dev/null || true
fault() { python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1]).read()" "$EP/_fault?$1"; }
R="$tmp/hf/hub/models--test--tiny"

# a transfer cut in the middle, then resumed with a Range request
fault "cut=model.safetensors"
if "$BIN" pull test/tiny >"$tmp/out1" 2>"$tmp/err1"; then bad "a cut transfer reported success"
elif grep -q "run pull again" "$tmp/err1" && ls "$R"/blobs/*.incomplete >/dev/null 2>&1; then ok "cut transfer fails, keeps .incomplete"
else cat "$tmp/err1"; bad "cut transfer"; fi
if "$BIN" pull test/tiny >"$tmp/out2" 2>"$tmp/err2"; then ok "second pull completes"; else cat "$tmp/err2"; bad "resume"; fi
python3 - "$EP" <<'PY' && ok "resumed with a Range request" || bad "no Range request on resume"
import json, sys, urllib.request
log = json.load(urllib.request.urlopen(sys.argv[1] + "/_log"))
assert any(e["path"].endswith("/model.safetensors") and e["path"].startswith("/cdn/") and e["range"] for e in log), log
PY
commit=$(cat "$R/refs/main" 2>/dev/null)
snap="$R/snapshots/$commit"
[ "$(cat "$tmp/out2")" = "$snap" ] && ok "prints the snapshot folder" || bad "printed '$(cat "$tmp/out2")', want $snap"
[ -L "$snap/model.safetensors" ] && case "$(readlink "$snap/model.safetensors")" in ../../blobs/*) true ;; *) false ;; esac &&
    [ "$(readlink "$snap/sub/extra.json" | cut -c1-15)" = "../../../blobs/" ] && ok "HF cache layout (refs/main, relative blob links)" ||
    bad "cache layout"
cmp -s "$snap/model.safetensors" models/default/model.safetensors && cmp -s "$snap/sub/extra.json" "$tmp/tiny/sub/extra.json" &&
    ok "files identical" || bad "files differ"
sha=$(sha256sum models/default/model.safetensors | cut -d' ' -f1)
[ -f "$R/blobs/$sha" ] && ok "LFS blob named by its SHA-256" || bad "blob name"

# -m ORG/NAME from the cache == the folder
want=$("$BIN" generate -m models/default --prompt "ROMEO:" -n 16 2>&1)
got=$("$BIN" generate -m test/tiny --prompt "ROMEO:" -n 16 2>&1)
[ "$got" = "$want" ] && ok "-m test/tiny generates as -m models/default" || { echo "$got"; bad "-m ORG/NAME"; }
got=$("$BIN" generate -m "test/tiny@$commit" --prompt "ROMEO:" -n 16 2>&1)
[ "$got" = "$want" ] && ok "-m ORG/NAME@COMMIT" || bad "-m ORG/NAME@COMMIT"
"$BIN" generate -m test/absent --prompt x -n 1 >/dev/null 2>"$tmp/err3" && bad "absent repo accepted" ||
    { grep -q "deepseek pull test/absent" "$tmp/err3" && ok "absent repo: says to pull it" || { cat "$tmp/err3"; bad "absent message"; }; }

# a second pull downloads nothing
"$BIN" pull test/tiny 2>"$tmp/err4" >/dev/null && grep -q " 0 downloaded" "$tmp/err4" && ok "cached: nothing downloaded" ||
    { cat "$tmp/err4"; bad "re-pull"; }

# a corrupted download fails the SHA-256 check and leaves no blob; a retry works
export HF_HOME="$tmp/hf2"
fault "corrupt=model.safetensors"
if "$BIN" pull test/tiny >/dev/null 2>"$tmp/err5"; then bad "corrupt download accepted"
elif grep -q "SHA-256" "$tmp/err5" && [ ! -e "$tmp/hf2/hub/models--test--tiny/blobs/$sha" ]; then ok "SHA-256 mismatch rejected"
else cat "$tmp/err5"; bad "corrupt download"; fi
"$BIN" pull test/tiny >/dev/null 2>&1 && ok "retry after a bad hash" || bad "retry after a bad hash"

# a server that ignores Range: the partial file is restarted correctly
export HF_HOME="$tmp/hf3"
fault "cut=model.safetensors"
"$BIN" pull test/tiny >/dev/null 2>&1
fault "norange=1"
"$BIN" pull test/tiny >/dev/null 2>"$tmp/err6" && cmp -s "$tmp/hf3/hub/models--test--tiny/blobs/$sha" models/default/model.safetensors &&
    ok "resume when the server ignores Range" || { cat "$tmp/err6"; bad "norange resume"; }
fault "norange=0"

# private repository: HF_TOKEN needed, sent to the hub but not to the redirect target
"$BIN" pull test/private >/dev/null 2>"$tmp/err7" && bad "private repo without a token" ||
    { grep -q "HF_TOKEN" "$tmp/err7" && ok "private repo: 401 names HF_TOKEN" || { cat "$tmp/err7"; bad "401 message"; }; }
HF_TOKEN=hf_test_token "$BIN" pull test/private >/dev/null 2>"$tmp/err8" && ok "private repo with HF_TOKEN (not sent to the CDN)" ||
    { cat "$tmp/err8"; bad "private repo with token"; }

# offline: the cache answers, the network is not touched
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
export HF_HOME="$tmp/hf"
out=$(HF_HUB_OFFLINE=1 "$BIN" pull test/tiny 2>&1) && [ "$out" = "$snap" ] && ok "HF_HUB_OFFLINE=1: cached snapshot" ||
    { echo "$out"; bad "offline cached"; }
HF_HUB_OFFLINE=1 "$BIN" pull test/other >/dev/null 2>&1 && bad "offline uncached accepted" || ok "HF_HUB_OFFLINE=1: uncached repo fails"
"$BIN" pull "not a repo" >/dev/null 2>&1 && bad "bad spec accepted" || ok "bad spec rejected"
exit $fail
