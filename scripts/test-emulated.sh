#!/usr/bin/env bash
# Issue 14's GPU paths on the CUDA and NCCL emulation (native/test/cuda_emulation), for machines
# without a GPU: the addon built over it (native/build-emulated, BRAID_CUDA_EMULATION_ADDON=ON;
# NCCL's entry points are exported by the addon itself, so BRAID_NCCL_LIB names it), four emulated
# GPUs, then the DeviceBuffer tests of @braid/collectives and @braid/compression, whose GPU cases
# (every collective through NCCL, allReduceCompressed with the CUDA kernels) run at np=1-4.
# The native emulated programs run with the other native tests (native/scripts/native-tests.mjs).
# Run scripts/setup.sh first.
set -euo pipefail
if [ "$(uname -m)" != x86_64 ]; then
  echo "skip: the CUDA emulation is built on x86-64 only"
  exit 0
fi
source "$(dirname "$0")/native-variant.sh"

echo "== building the addon over the CUDA and NCCL emulation (native/build-emulated)"
native_variant build-emulated --target braid_native --CDBRAID_CUDA_EMULATION_ADDON=ON --CDBRAID_CUDA=OFF --CDBRAID_TOOLS=OFF
export BRAID_NATIVE_DIR="$PWD/native/build-emulated/Release"
export BRAID_NCCL_LIB="$BRAID_NATIVE_DIR/braid_native.node"
export BRAID_CUDA_EMULATION_DEVICES=4

echo "== DeviceBuffers through NCCL on the emulation"
(cd packages/collectives && npx vitest run src/device.test.ts)
(cd packages/compression && npx vitest run src/device.test.ts)
echo "emulated GPU paths: done"
