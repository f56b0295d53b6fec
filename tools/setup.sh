#!/bin/sh
# setup.sh - installs everything deepseek.c needs to build and to pass
# `make test` on Debian 12. The one list of packages: README's set-up command
# and .ci/run both run this script (tests/cli_newcomer_tests.sh checks that
# neither installs anything by itself). Add a package here and both get it.
#
#   sh tools/setup.sh             install (as root, or as a user with sudo)
#   sh tools/setup.sh --print     print the lists: "apt: ..." and "pip: ..."
#   sh tools/setup.sh --dry-run   print the commands it would run
#   sh tools/setup.sh --with-torch  also torch, transformers, safetensors, numpy
#                                 (the Hugging Face load check of training
#                                 checkpoints; PyPI's torch is ~2.8 GB; .ci/run
#                                 uses it)
#
# Runs the commands as they are when root (a minimal Debian has no sudo),
# with sudo otherwise.
set -eu

# compilers (clang with its OpenMP runtime, libomp-dev: the fuzzers and the ThreadSanitizer
# check link with -fopenmp), pkg-config, the libraries we link (jansson, PCRE2, OpenBLAS, libedit, libcurl,
# libmicrohttpd, OpenMPI and its mpirun), the web chat's browser libraries, and for the
# server and web-chat tests pip, Chromium and its driver
APT_PACKAGES="build-essential clang libclang-rt-14-dev libomp-dev pkg-config
    libjansson-dev libpcre2-dev libopenblas-dev libedit-dev libmicrohttpd-dev libcurl4-openssl-dev
    openmpi-bin libopenmpi-dev
    libjs-marked libjs-highlight.js libjs-katex
    python3-pip chromium chromium-driver"
# the official openai client and selenium (server and web-chat tests), huggingface_hub
# (tests/cli_pull_tests.sh: its own cache read by -m ORG/NAME), gguf (llama.cpp's gguf-py:
# its dequantizers check the bytes our quantizers write, tests/test_quant_ext.c)
PIP_PACKAGES="openai selenium huggingface_hub gguf"
# with --with-torch: Hugging Face transformers on PyTorch (tests/cli_train_tests.sh)
PIP_TORCH="torch transformers safetensors numpy"

APT_PACKAGES=$(echo $APT_PACKAGES)   # one line, single spaces

run=""
print=0
for a in "$@"; do
    case "$a" in
        --print) print=1 ;;
        --dry-run) run="echo" ;;
        --with-torch) PIP_PACKAGES="$PIP_PACKAGES $PIP_TORCH" ;;
        *) echo "usage: sh tools/setup.sh [--print | --dry-run] [--with-torch]" >&2; exit 2 ;;
    esac
done
if [ $print = 1 ]; then echo "apt: $APT_PACKAGES"; echo "pip: $PIP_PACKAGES"; exit 0; fi

# DS_SETUP_UID: for tests of the non-root branch only
if [ "${DS_SETUP_UID:-$(id -u)}" = 0 ]; then
    SUDO=""
elif [ -n "$run" ] || command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "tools/setup.sh: installing packages needs root: run it as root, or install sudo" >&2
    exit 1
fi

$run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
$run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $APT_PACKAGES
# Debian 12's pip needs --break-system-packages for the system Python (older
# pips do not know the flag)
if [ -n "$run" ]; then
    $run $SUDO python3 -m pip install --break-system-packages $PIP_PACKAGES
else
    $SUDO python3 -m pip install --break-system-packages $PIP_PACKAGES ||
        $SUDO python3 -m pip install $PIP_PACKAGES
fi
