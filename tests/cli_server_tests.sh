#!/bin/sh
# cli_server_tests.sh - end-to-end tests of `deepseek serve` (run by
# `make test` with the binary as $1; from the repository root):
#
#   tests/server/test_openai_client.py   the official openai client: chat,
#                                        streaming, usage, errors, tools,
#                                        JSON mode, logprobs, FIM, cache
#   tests/server/test_http.py            raw HTTP: malformed input, limits,
#                                        auth, CORS, loading/overload 503
#   tests/server/test_concurrency.py     batched == alone, disconnects free
#                                        the slot, keep-alive comments
#   tests/server/test_webui.py           the web chat in headless Chromium
#
# Missing dependencies (python3 modules openai/selenium, chromium,
# chromedriver) are failures, not skips: .ci/run and the README install them.
# Server flags used only here: --test-hooks, --test-load-delay.
set -u
BIN=${1:?usage: sh tests/cli_server_tests.sh path/to/deepseek}
[ -x "$BIN" ] || { echo "cli_server_tests.sh: $BIN is not executable" >&2; exit 2; }
[ -d tests/fixtures/tiny-chat ] || { echo "cli_server_tests.sh: run from the repository root" >&2; exit 2; }
PY=${PYTHON:-python3}
fails=0
missing=$($PY - <<'EOF'
import importlib.util, shutil
need = [m for m in ("openai", "selenium") if importlib.util.find_spec(m) is None]
need += [b for b in ("chromium", "chromedriver") if shutil.which(b) is None]
print(" ".join(need))
EOF
)
if [ -n "$missing" ]; then
    echo "FAIL cli_server_tests.sh: missing $missing (see README: pip install openai selenium; apt-get install chromium chromium-driver)"
    exit 1
fi
t0=$(date +%s)
for t in test_openai_client test_http test_concurrency test_webui; do
    if ! timeout 300 $PY "tests/server/$t.py" "$BIN"; then
        echo "FAIL tests/server/$t.py"
        fails=$((fails + 1))
    fi
done
echo "cli_server_tests.sh: $(( $(date +%s) - t0 )) s, $fails script(s) failed"
[ "$fails" -eq 0 ]
