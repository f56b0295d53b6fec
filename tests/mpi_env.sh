# mpi_env.sh - sourced (`MPI_TEST=NAME . tests/mpi_env.sh`) by the tests/cli_mpi_*.sh
# scripts: fails the calling script (MPI_TEST) when OpenMPI's mpirun is missing,
# and sets what OpenMPI needs here:
# - CI runs as root, which OpenMPI refuses unless told; users need not set these
# - containers often forbid the cross-process memory copy OpenMPI's
#   shared-memory transport tries first (it then prints warnings); plain
#   copies are enough here
command -v mpirun >/dev/null 2>&1 || {
    echo "FAIL ${MPI_TEST:-an MPI test}: no mpirun (OpenMPI): run sh tools/setup.sh (openmpi-bin)"; exit 1; }
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
