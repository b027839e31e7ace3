#!/usr/bin/env bash
# Runs every test: the native kernel, algorithm and engine tests (mpirun at 1-4 ranks), each
# package's vitest suite (single-process and mpirun jobs), the sanitizer builds, the GPU paths on
# the CUDA and NCCL emulation, a short soak and the packages installed from their tarballs.
# Run scripts/setup.sh first.
# Ends with one line adding up what every suite reported.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1
source scripts/ccache-env.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
npm test 2>&1 | tee "$log" || status=$?
# The native code under ASan + UBSan and the engine under TSan (scripts/test-sanitize.sh), and a
# short soak: 20,000 mixed ops at 3 ranks, memory, descriptors, threads and /dev/shm watched.
bash scripts/test-sanitize.sh 2>&1 | tee -a "$log" || status=$?
# The GPU paths (DeviceBuffers through NCCL, allReduceCompressed with the CUDA kernels) at np=1-4
# on the CUDA and NCCL emulation: the addon built over native/test/cuda_emulation.
bash scripts/test-emulated.sh 2>&1 | tee -a "$log" || status=$?
node benchmarks/soak.mjs --np 3 --ops 20000 2>&1 | tee -a "$log" || status=$?
# The packages as a user installs them (npm pack tarballs into a fresh project, both npm modes).
node scripts/test-packages.mjs 2>&1 | tee -a "$log" || status=$?
node scripts/count-tests.mjs "$log"
exit $status
