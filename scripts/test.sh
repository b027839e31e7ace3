#!/usr/bin/env bash
# Runs every test: the native kernel and algorithm tests (mpirun at 1-4 ranks) and each
# package's vitest suite (single-process and mpirun jobs). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1
npm test
