#!/bin/sh
# cli_mpi_server_tests.sh - `deepseek serve` on several OpenMPI ranks
# (mpirun -np N ./deepseek serve ...: rank 0 serves HTTP and runs the
# forward with every cache, ranks > 0 are its expert servers; see
# src/model/moe_exchange.c):
#
#   tests/server/test_mpi.py       responses byte-identical on 1, 2 and 3
#                                  ranks; kill -9 of a worker or of rank 0
#                                  (busy or idle) ends the job within
#                                  seconds naming the rank; startup errors
#                                  printed once
#   the whole server suite         tests/cli_server_tests.sh (openai client,
#                                  raw HTTP, concurrency, web chat) against
#                                  2-rank servers (DS_SERVE_RANKS=2, see
#                                  tests/server/common.py)
#
#   sh tests/cli_mpi_server_tests.sh ./deepseek   (from the repository root)
set -u
BIN=${1:?usage: sh tests/cli_mpi_server_tests.sh path/to/deepseek}
[ -x "$BIN" ] || { echo "cli_mpi_server_tests.sh: $BIN is not executable" >&2; exit 2; }
[ -d tests/fixtures/tiny-chat ] || { echo "cli_mpi_server_tests.sh: run from the repository root" >&2; exit 2; }
MPI_TEST=cli_mpi_server_tests.sh . tests/mpi_env.sh   # mpirun present; root and container settings for OpenMPI
PY=${PYTHON:-python3}
t0=$(date +%s)
fails=0
timeout 300 $PY tests/server/test_mpi.py "$BIN" || { echo "FAIL tests/server/test_mpi.py"; fails=$((fails + 1)); }
DS_SERVE_RANKS=2 sh tests/cli_server_tests.sh "$BIN" || { echo "FAIL tests/cli_server_tests.sh on 2 ranks"; fails=$((fails + 1)); }
echo "cli_mpi_server_tests.sh: $(( $(date +%s) - t0 )) s, $fails part(s) failed"
[ "$fails" -eq 0 ]
