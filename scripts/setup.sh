#!/usr/bin/env bash
# Installs what Braid needs on a Debian/Ubuntu machine with Node.js >= 20 and builds everything:
# the system packages (OpenMPI, CMake, a C++ compiler) when missing, the npm dependencies, the
# native addon and the TypeScript packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
[ -e /usr/include/x86_64-linux-gnu/openmpi/include/mpi.h ] || [ -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] ||
  [ -e /usr/include/aarch64-linux-gnu/openmpi/include/mpi.h ] || [ -e /usr/lib/aarch64-linux-gnu/openmpi/include/mpi.h ] ||
  command -v mpicc >/dev/null 2>&1 || need+=(libopenmpi-dev)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# The multi-host test bed (scripts/cluster.sh: ip, tc) and the benchmarks' charts (rsvg-convert).
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || need+=(iproute2)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

node -e 'const [major] = process.versions.node.split(".").map(Number); if (major < 20) { console.error(`setup: Node.js >= 20 is needed (found ${process.version})`); process.exit(1); }'

# Open MPI refuses to start as root unless told; containers and CI run as root.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1

# npm ci runs @braid/native's install script, which builds the addon (allowScripts approves it).
npm ci --no-audit --no-fund
npm run build
