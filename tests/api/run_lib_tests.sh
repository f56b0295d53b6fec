#!/bin/sh
# run_lib_tests.sh - libdeepseek as a user gets it (`make test-lib`):
#   1. include/deepseek.h compiles alone as C11 and C++11 with -Wall -Wextra -pedantic -Werror
#   2. the API test (static library) and its greedy/seeded text == `deepseek generate`'s
#   3. `make install` into a temporary PREFIX (and a DESTDIR staging): the files,
#      the soname, pkg-config; examples/chat.c built with pkg-config against the
#      installed shared library and run on the bundled model (== the CLI's text)
#   4. the Python bindings' tests (python/tests/test_deepseek_c.py)
# usage: sh tests/api/run_lib_tests.sh ./deepseek BUILD_DIR
set -u
BIN=${1:-./deepseek}
BUILD=${2:-build}
MAKE=${MAKE:-make}
PYTHON=${PYTHON:-python3}
MODEL=models/default
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }

echo "== libdeepseek"
# the static library's dependencies (deepseek.pc's Libs.private): OpenMPI
# included, which src/dist links (the library itself never initializes it)
LIBS="-fopenmp -ljansson -lpcre2-8 -lopenblas -lm -lpthread $(mpicc --showme:link)"
printf '#include "deepseek.h"\nint main(void) { deepseek_error e = { 0, { 0 } }; deepseek_model *m = 0;\n  return deepseek_model_load(&m, "/nonexistent", 0, &e) == 0 || !e.message[0] || !deepseek_version(); }\n' >"$tmp/h.c"
printf '#include <deepseek.h>\n#include <string>\nint main() { deepseek_error e = deepseek_error(); deepseek_model *m = nullptr;\n  int rc = deepseek_model_load(&m, "/nonexistent", nullptr, &e);\n  return rc == DEEPSEEK_OK || std::string(e.message).empty(); }\n' >"$tmp/h.cpp"
if cc -std=c11 -Wall -Wextra -pedantic -Werror -Iinclude -c "$tmp/h.c" -o "$tmp/h.o"; then ok "header as C11 -pedantic"; else bad "header as C11"; fi
if c++ -std=c++11 -Wall -Wextra -pedantic -Werror -Iinclude -c "$tmp/h.cpp" -o "$tmp/hpp.o"; then ok "header as C++11 -pedantic"
else bad "header as C++11"; fi
if c++ -o "$tmp/hpp" "$tmp/hpp.o" "$BUILD/libdeepseek.a" $LIBS && "$tmp/hpp"; then
    ok "C++ program links the static library and gets an error message"; else bad "C++ link/run"; fi
if cc -o "$tmp/hc" "$tmp/h.o" "$BUILD/libdeepseek.a" $LIBS && "$tmp/hc"; then
    ok "C program links the static library and gets an error message"; else bad "C link/run"; fi

if "$BUILD/tests/test_api" "$MODEL" tests/fixtures/tiny-chat "$tmp"; then ok "test_api"; else bad "test_api"; fi
"$BIN" generate -m "$MODEL" --prompt "ROMEO:" -n 24 >"$tmp/cli_greedy.txt" 2>/dev/null
"$BIN" generate -m "$MODEL" --prompt "ROMEO:" -n 24 --temperature 0.8 --top-p 0.9 --seed 7 >"$tmp/cli_seeded.txt" 2>/dev/null
if cmp -s "$tmp/greedy.txt" "$tmp/cli_greedy.txt"; then ok "API greedy text == deepseek generate"; else bad "API greedy text differs from the CLI"; fi
if cmp -s "$tmp/seeded.txt" "$tmp/cli_seeded.txt"; then ok "API seeded text == deepseek generate"; else bad "API seeded text differs from the CLI"; fi

# install: PREFIX, then DESTDIR staging
P="$tmp/prefix"
if $MAKE -s install PREFIX="$P" >"$tmp/install.log" 2>&1; then ok "make install PREFIX=$P"; else cat "$tmp/install.log"; bad "make install"; fi
for f in bin/deepseek lib/libdeepseek.a lib/libdeepseek.so lib/libdeepseek.so.0 include/deepseek.h lib/pkgconfig/deepseek.pc; do
    [ -e "$P/$f" ] || bad "installed $f missing"
done
if readelf -d "$P/lib/libdeepseek.so" | grep -q 'SONAME.*libdeepseek\.so\.0\]'; then ok "soname libdeepseek.so.0"; else bad "soname"; fi
if nm -D --defined-only "$P/lib/libdeepseek.so" | awk '{print $3}' | grep -v '^deepseek_' | grep -q .; then
    bad "the shared library exports more than deepseek_*"; else ok "only deepseek_* exported"; fi
$MAKE -s install PREFIX=/usr DESTDIR="$tmp/stage" >"$tmp/install2.log" 2>&1 &&
    [ -f "$tmp/stage/usr/lib/libdeepseek.so.0" ] && grep -q '^prefix=/usr$' "$tmp/stage/usr/lib/pkgconfig/deepseek.pc" &&
    ok "make install DESTDIR=... PREFIX=/usr" || bad "DESTDIR install"

export PKG_CONFIG_PATH="$P/lib/pkgconfig"
if [ "$(pkg-config --modversion deepseek)" = "$(grep -o 'VERSION_MAJOR [0-9]*' include/deepseek.h | cut -d' ' -f2).$(grep -o 'VERSION_MINOR [0-9]*' include/deepseek.h | cut -d' ' -f2).$(grep -o 'VERSION_PATCH [0-9]*' include/deepseek.h | cut -d' ' -f2)" ]; then
    ok "pkg-config --modversion matches the header"; else bad "pkg-config version"; fi
# shellcheck disable=SC2046
if cc -Wall -Wextra -pedantic -Werror examples/chat.c $(pkg-config --cflags --libs deepseek) -o "$tmp/chat"; then
    ok "examples/chat.c built with pkg-config"; else bad "examples/chat.c build"; fi
if LD_LIBRARY_PATH="$P/lib" "$tmp/chat" "$MODEL" "ROMEO:" >"$tmp/ex.txt" 2>"$tmp/ex.err"; then ok "example runs"; else cat "$tmp/ex.err"; bad "example run"; fi
if LD_LIBRARY_PATH="$P/lib" ldd "$tmp/chat" | grep -q "$P/lib/libdeepseek.so.0"; then ok "example uses the installed shared library"; else bad "example's library"; fi
"$BIN" generate -m "$MODEL" --prompt "ROMEO:" -n 48 --temperature 0.8 --top-p 0.95 --seed 42 >"$tmp/cli_ex.txt" 2>/dev/null
if cmp -s "$tmp/ex.txt" "$tmp/cli_ex.txt"; then ok "example's text == deepseek generate"; else bad "example's text differs from the CLI"; fi

echo "== Python bindings"
# pip install ./python (into a folder: the system stays untouched; offline: the
# system's setuptools), which builds libdeepseek and ships it in the package
if "$PYTHON" -m pip install -q --no-build-isolation --no-deps --target "$tmp/site" ./python >"$tmp/pip.log" 2>&1 &&
    [ -f "$tmp/site/deepseek_c/libdeepseek.so.0" ]; then ok "pip install ./python (ships libdeepseek.so.0)"
else cat "$tmp/pip.log"; bad "pip install ./python"; fi
rm -rf python/build python/*.egg-info
if DEEPSEEK_BIN="$BIN" PYTHONPATH="$tmp/site" "$PYTHON" python/tests/test_deepseek_c.py; then
    ok "python bindings (pip-installed package)"; else bad "python bindings"; fi
# the same package against the installed library (make install), found by $DEEPSEEK_LIB
if DEEPSEEK_LIB="$P/lib/libdeepseek.so.0" PYTHONPATH=python "$PYTHON" -c '
import deepseek_c, sys
assert deepseek_c._lib._name.endswith("prefix/lib/libdeepseek.so.0"), deepseek_c._lib._name
sys.exit(deepseek_c.Model("models/default").generate("ROMEO:", max_tokens=8) == "")'; then
    ok "python bindings on the installed library"; else bad "python bindings on the installed library"; fi

[ $fail = 0 ] && echo "libdeepseek: all checks passed"
exit $fail
