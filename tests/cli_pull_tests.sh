#!/bin/sh
# cli_pull_tests.sh - `deepseek pull` against a mock hub (tests/pull/mock_hub.py
# on 127.0.0.1): the cache layout, -m ORG/NAME, resume after a cut transfer
# (Range), SHA-256 check of LFS files, a private repository with HF_TOKEN (never
# sent to the redirect target, a CDN on a second host), a server that ignores
# Range, 401 without a token / --token, 404, a slow server (live progress), a
# stalled transfer (low-speed timeout), two concurrent pulls of one repository,
# --exclude, --gguf, `deepseek list` / `deepseek rm`, a cache written by
# huggingface_hub itself read by -m ORG/NAME, HF_HUB_OFFLINE=1.
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
mkdir -p "$tmp/gguf" "$tmp/gguf-split"
cp tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf tests/fixtures/gguf/tiny-v2-lite.llama-f16.gguf "$tmp/gguf/"
echo "# a GGUF repository" >"$tmp/gguf/README.md"
cp tests/fixtures/gguf/split/*.gguf tests/fixtures/gguf/tiny-v2-lite.llama-f16.gguf "$tmp/gguf-split/"
python3 tests/pull/mock_hub.py "$tmp/port" "test/tiny=$tmp/tiny" "test/private=tests/fixtures/tiny-chat:private" \
    "test/gguf=$tmp/gguf" "test/gguf-split=$tmp/gguf-split" &
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
    { grep "test/private" "$tmp/err7" | grep "401" | grep "HF_TOKEN" | grep -q -- "--token" &&
      ok "private repo: 401 names the repo, HF_TOKEN and --token" || { cat "$tmp/err7"; bad "401 message"; }; }
HF_TOKEN=hf_test_token "$BIN" pull test/private >/dev/null 2>"$tmp/err8" && ok "private repo with HF_TOKEN (not sent to the CDN)" ||
    { cat "$tmp/err8"; bad "private repo with token"; }
HF_TOKEN=wrong "$BIN" pull test/private >/dev/null 2>"$tmp/err9" && bad "a wrong token accepted" ||
    { grep -q "token given was refused" "$tmp/err9" && ok "a wrong token: 401 says it was refused" || { cat "$tmp/err9"; bad "wrong token"; }; }
HF_HOME="$tmp/hf-tok" "$BIN" pull test/private --token hf_test_token >/dev/null 2>"$tmp/err10" &&
    [ -f "$tmp/hf-tok/hub/models--test--private/refs/main" ] && ok "--token TOKEN" || { cat "$tmp/err10"; bad "--token"; }
# the redirect went to a second host (another address and port): the token went to
# the hub only, never to the CDN
python3 - "$EP" <<'PY' && ok "redirect to a second host (CDN): token not forwarded" || bad "second-host redirect"
import json, sys, urllib.request
hub = sys.argv[1].split("//")[1]
log = json.load(urllib.request.urlopen(sys.argv[1] + "/_log"))
cdn = [e for e in log if e["path"].startswith("/cdn/test/private/")]
res = [e for e in log if e["path"].startswith("/test/private/resolve/")]
assert cdn and res, log
assert all(e["server"] != hub and e["auth"] is None for e in cdn), cdn
assert any(e["server"] == hub and e["auth"] == "Bearer hf_test_token" for e in res), res
PY

# 404: an absent repository, an absent revision
"$BIN" pull test/absent >/dev/null 2>"$tmp/err11" && bad "absent repo pulled" ||
    { grep "test/absent" "$tmp/err11" | grep -q "no such repository" && ok "404 repo: clear error" || { cat "$tmp/err11"; bad "404 message"; }; }
"$BIN" pull test/tiny@nope >/dev/null 2>"$tmp/err12" && bad "absent revision pulled" ||
    { grep -q "revision 'nope'" "$tmp/err12" && ok "404 revision: clear error" || { cat "$tmp/err12"; bad "404 revision"; }; }

# a slow server: the live progress line keeps moving (forced on a non-terminal)
fault "slow=model.safetensors"
HF_HOME="$tmp/hf4" DEEPSEEK_PULL_PROGRESS=1 "$BIN" pull test/tiny >/dev/null 2>"$tmp/err13" || { cat "$tmp/err13"; bad "slow pull"; }
n=$(tr '\r' '\n' <"$tmp/err13" | grep '^model.safetensors .*\[' | sed 's/.*\] *//' | sort -u | wc -l)
[ "$n" -ge 4 ] && ok "slow server: progress line updated ($n distinct states)" || { cat "$tmp/err13"; bad "progress on a slow server ($n)"; }
cmp -s "$tmp/hf4/hub/models--test--tiny/blobs/$sha" models/default/model.safetensors && ok "slow server: file intact" || bad "slow file"
# a stalled transfer: fails with a clear error after the low-speed time, keeps the part, resumes
fault "stall=model.safetensors"
t0=$(date +%s)
if HF_HOME="$tmp/hf5" DEEPSEEK_PULL_LOW_SPEED_TIME=2 timeout 25 "$BIN" pull test/tiny >/dev/null 2>"$tmp/err14"; then bad "stalled transfer succeeded"
else
    t=$(( $(date +%s) - t0 ))
    grep -q "stalled" "$tmp/err14" && grep -q "run pull again" "$tmp/err14" && [ "$t" -lt 15 ] &&
        ls "$tmp"/hf5/hub/models--test--tiny/blobs/*.incomplete >/dev/null 2>&1 && ok "stalled transfer times out (${t}s), clear error" ||
        { cat "$tmp/err14"; bad "stall (${t}s)"; }
fi
HF_HOME="$tmp/hf5" "$BIN" pull test/tiny >/dev/null 2>&1 && cmp -s "$tmp/hf5/hub/models--test--tiny/blobs/$sha" models/default/model.safetensors &&
    ok "pull after a stall completes" || bad "pull after a stall"

# two pulls of one repository at once: one correct cache (the second waits on the blob's lock)
fault "slow=model.safetensors"
HF_HOME="$tmp/hf6" "$BIN" pull test/tiny >"$tmp/outA" 2>"$tmp/errA" & pa=$!
sleep 0.5
HF_HOME="$tmp/hf6" "$BIN" pull test/tiny >"$tmp/outB" 2>"$tmp/errB" & pb=$!
wait $pa; ra=$?; wait $pb; rb=$?
R6="$tmp/hf6/hub/models--test--tiny"
if [ $ra = 0 ] && [ $rb = 0 ] && [ "$(cat "$tmp/outA")" = "$(cat "$tmp/outB")" ] &&
   cmp -s "$R6/blobs/$sha" models/default/model.safetensors && [ "$(ls -A "$R6/blobs" | wc -l)" = 5 ] &&
   ! ls "$R6"/blobs/*.incomplete >/dev/null 2>&1 && ! ls "$R6"/snapshots/*/*.tmp* >/dev/null 2>&1 &&
   cmp -s "$(cat "$tmp/outA")/model.safetensors" models/default/model.safetensors; then
    cat "$tmp/errA" "$tmp/errB" | grep -q "another download of this file" && ok "concurrent pulls: one correct cache, the second waited" ||
        { cat "$tmp/errA" "$tmp/errB"; bad "concurrent pulls did not overlap"; }
else cat "$tmp/errA" "$tmp/errB"; ls -la "$R6/blobs"; bad "concurrent pulls ($ra $rb)"; fi

# --exclude
HF_HOME="$tmp/hf7" "$BIN" pull test/tiny --exclude '*.json' >"$tmp/out15" 2>"$tmp/err15" &&
    [ -e "$(cat "$tmp/out15")/model.safetensors" ] && [ ! -e "$(cat "$tmp/out15")/config.json" ] &&
    [ ! -e "$(cat "$tmp/out15")/sub/extra.json" ] && ok "--exclude GLOB" || { cat "$tmp/err15"; bad "--exclude"; }

# --gguf FILE: that file only; -m ORG/NAME is then that file
gwant=$("$BIN" generate -m tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf --prompt-ids 1,2,3 -n 8 2>&1)
HF_HOME="$tmp/hf8" "$BIN" pull test/gguf --gguf tiny-v3.llama-q8_0.gguf >"$tmp/out16" 2>"$tmp/err16" &&
    [ "$(ls "$(cat "$tmp/out16")")" = "tiny-v3.llama-q8_0.gguf" ] && ok "--gguf FILE: only that file" || { cat "$tmp/err16"; bad "--gguf"; }
got=$(HF_HOME="$tmp/hf8" "$BIN" generate -m test/gguf --prompt-ids 1,2,3 -n 8 2>&1)
[ "$got" = "$gwant" ] && ok "-m ORG/NAME after --gguf is the .gguf" || { echo "$got"; bad "-m after --gguf"; }
HF_HOME="$tmp/hf9" "$BIN" pull test/gguf-split --gguf tiny-v3.llama-q8_0-00001-of-00004.gguf >"$tmp/out17" 2>"$tmp/err17" &&
    [ "$(ls "$(cat "$tmp/out17")" | wc -l)" = 4 ] &&
    [ "$(HF_HOME="$tmp/hf9" "$BIN" generate -m test/gguf-split --prompt-ids 1,2,3 -n 8 2>&1)" = "$gwant" ] &&
    ok "--gguf first split part: all 4 parts, -m ORG/NAME works" || { cat "$tmp/err17"; bad "--gguf split"; }
# the whole GGUF repository (two models): -m ORG/NAME does not pick one silently; the file path works
HF_HOME="$tmp/hf10" "$BIN" pull test/gguf >"$tmp/out25" 2>/dev/null &&
    ! HF_HOME="$tmp/hf10" "$BIN" generate -m test/gguf --prompt-ids 1,2,3 -n 8 >/dev/null 2>&1 &&
    [ "$(HF_HOME="$tmp/hf10" "$BIN" generate -m "$(cat "$tmp/out25")/tiny-v3.llama-q8_0.gguf" --prompt-ids 1,2,3 -n 8 2>&1)" = "$gwant" ] &&
    ok "two GGUF models in a snapshot: -m ORG/NAME refused, -m SNAPSHOT/FILE.gguf works" || bad "GGUF repo with two models"
HF_HOME="$tmp/hf9" "$BIN" pull test/gguf --gguf nope.gguf >/dev/null 2>"$tmp/err18" && bad "--gguf absent file accepted" ||
    { grep -q "no file 'nope.gguf'" "$tmp/err18" && ok "--gguf absent file: clear error" || { cat "$tmp/err18"; bad "--gguf absent"; }; }

# list and rm
HF_HOME="$tmp/hf6" "$BIN" list >"$tmp/out19" 2>"$tmp/err19" &&
    grep -q "^test/tiny  *7\.9 MB  *main=$(echo "$commit" | cut -c1-12) " "$tmp/out19" && ok "list: repo, size, refs" ||
    { cat "$tmp/out19" "$tmp/err19"; bad "list"; }
HF_HOME="$tmp/hf9" "$BIN" list >"$tmp/out20" 2>/dev/null && [ "$(wc -l <"$tmp/out20")" = 2 ] &&
    grep -q "^test/gguf " "$tmp/out20" && grep -q "^test/gguf-split " "$tmp/out20" && ok "list: two models" || { cat "$tmp/out20"; bad "list two"; }
HF_HOME="$tmp/hf9" "$BIN" rm test/gguf-split 2>"$tmp/err21" && [ ! -e "$tmp/hf9/hub/models--test--gguf-split" ] &&
    [ -z "$(ls -A "$tmp/hf9/hub" | grep -v '^\.locks$' | grep -v '^models--test--gguf$')" ] &&
    HF_HOME="$tmp/hf9" "$BIN" list 2>/dev/null | grep -q "^test/gguf " && ok "rm ORG/NAME removes that one only" ||
    { cat "$tmp/err21"; ls -A "$tmp/hf9/hub"; bad "rm"; }
HF_HOME="$tmp/hf9" "$BIN" rm test/gguf-split >/dev/null 2>"$tmp/err22" && bad "rm of an absent model succeeded" ||
    { grep -q "test/gguf-split is not in the cache" "$tmp/err22" && ok "rm absent: clear error" || { cat "$tmp/err22"; bad "rm absent"; }; }
HF_HOME="$tmp/nothing" "$BIN" list >"$tmp/out23" 2>&1 && grep -q "no models cached" "$tmp/out23" && ok "list: empty cache" || bad "list empty"

# a cache written by huggingface_hub itself: -m ORG/NAME reads it
if python3 -c "import huggingface_hub" 2>/dev/null; then
    if HF_ENDPOINT="$EP" HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 python3 -c "
import sys, huggingface_hub as h
print(h.snapshot_download('test/tiny', cache_dir=sys.argv[1]))" "$tmp/hfpy" >"$tmp/out24" 2>"$tmp/err24"; then
        got=$(HF_HUB_CACHE="$tmp/hfpy" "$BIN" generate -m test/tiny --prompt "ROMEO:" -n 16 2>&1)
        [ "$got" = "$want" ] && [ "$(tail -1 "$tmp/out24")" = "$tmp/hfpy/models--test--tiny/snapshots/$commit" ] &&
            ok "huggingface_hub's cache: -m test/tiny generates as our pull" || { echo "$got"; cat "$tmp/out24"; bad "huggingface_hub cache"; }
        got=$(HF_HUB_CACHE="$tmp/hfpy" "$BIN" pull test/tiny 2>&1 >/dev/null)
        echo "$got" | grep -q " 0 downloaded" && ok "pull over huggingface_hub's cache downloads nothing" || { echo "$got"; bad "pull over hf cache"; }
    else cat "$tmp/err24"; bad "huggingface_hub.snapshot_download against the mock hub"; fi
else bad "huggingface_hub is not installed (it is in tools/setup.sh's pip list: sh tools/setup.sh)"; fi

# offline: the cache answers, the network is not touched
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
export HF_HOME="$tmp/hf"
out=$(HF_HUB_OFFLINE=1 "$BIN" pull test/tiny 2>&1) && [ "$out" = "$snap" ] && ok "HF_HUB_OFFLINE=1: cached snapshot" ||
    { echo "$out"; bad "offline cached"; }
HF_HUB_OFFLINE=1 "$BIN" pull test/other >/dev/null 2>&1 && bad "offline uncached accepted" || ok "HF_HUB_OFFLINE=1: uncached repo fails"
"$BIN" pull "not a repo" >/dev/null 2>&1 && bad "bad spec accepted" || ok "bad spec rejected"
exit $fail
