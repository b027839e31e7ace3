#!/usr/bin/env bash
# Installs what Braid needs on a Debian/Ubuntu machine with Node.js >= 20 and builds everything:
# the system packages (OpenMPI, CMake, a C++ compiler) when missing, the npm dependencies, the
# native addon and the TypeScript packages. Safe to run again.
#   --tfjs-node  also builds @tensorflow/tfjs-node (native TensorFlow, 5-24x the pure-JS backend)
#                from source against the tensorflow-cpu pip wheel's C library (braid setup tfjs-node).
set -euo pipefail
cd "$(dirname "$0")/.."

tfjs_node=0
for arg in "$@"; do
  case "$arg" in
    --tfjs-node) tfjs_node=1 ;;
    *) echo "setup: unknown option $arg (usage: bash scripts/setup.sh [--tfjs-node])" >&2; exit 2 ;;
  esac
done

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
# tfjs-node's build: pip fetches the TensorFlow wheel, node-gyp runs on python3.
if [ "$tfjs_node" -eq 1 ]; then
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
fi
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
if [ "$tfjs_node" -eq 1 ]; then
  node packages/trainer/dist/cli.js setup tfjs-node
fi
