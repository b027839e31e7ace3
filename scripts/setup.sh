#!/usr/bin/env bash
# Installs what Braid needs on a Debian/Ubuntu machine with Node.js >= 20 and builds everything:
# the system packages (OpenMPI, CMake, a C++ compiler) when missing, the npm dependencies, the
# native addon and the TypeScript packages. Safe to run again.
#   --tfjs-node  also builds @tensorflow/tfjs-node (native TensorFlow, 5-24x the pure-JS backend)
#                from source against the tensorflow-cpu pip wheel's C library (braid setup tfjs-node).
#   --nccl       also fetches NCCL (pip download nvidia-nccl-cu13, about 250 MB) and unpacks its
#                library into ~/.cache/braid/nccl, where @braid/native's loader looks last: the
#                tests then load a real NCCL (its version, entry points and bootstrap), and on a GPU
#                machine the collectives on DeviceBuffers run through it.
set -euo pipefail
cd "$(dirname "$0")/.."

tfjs_node=0
nccl=0
for arg in "$@"; do
  case "$arg" in
    --tfjs-node) tfjs_node=1 ;;
    --nccl) nccl=1 ;;
    *) echo "setup: unknown option $arg (usage: bash scripts/setup.sh [--tfjs-node] [--nccl])" >&2; exit 2 ;;
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
# Rebuilds of unchanged sources from the cache (scripts/ccache-env.sh).
command -v ccache >/dev/null 2>&1 || need+=(ccache)
# The multi-host test bed (scripts/cluster.sh: ip, tc) and the benchmarks' charts (rsvg-convert).
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || need+=(iproute2)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
# tfjs-node's build: pip fetches the TensorFlow wheel, node-gyp runs on python3.
if [ "$tfjs_node" -eq 1 ] || [ "$nccl" -eq 1 ]; then
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
source scripts/ccache-env.sh

# npm ci runs @braid/native's install script, which builds the addon (allowScripts approves it).
npm ci --no-audit --no-fund
npm run build
if [ "$tfjs_node" -eq 1 ]; then
  node packages/trainer/dist/cli.js setup tfjs-node
fi

# NCCL from its pip wheel: only the library (and its license) is kept, unpacked once.
if [ "$nccl" -eq 1 ]; then
  nccl_cache="${XDG_CACHE_HOME:-$HOME/.cache}/braid/nccl"
  unpacked=$(compgen -G "$nccl_cache/*/nvidia/nccl/lib/libnccl.so.2" | head -1 || true)
  if [ -n "$unpacked" ]; then
    echo "setup: NCCL already unpacked: $unpacked"
  else
    download=$(mktemp -d)
    if python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$download" nvidia-nccl-cu13 >"$download/pip.log" 2>&1 &&
      wheel=$(compgen -G "$download/nvidia_nccl_cu13-*.whl" | head -1) && [ -n "$wheel" ]; then
      stem=$(basename "$wheel" .whl)
      mkdir -p "$nccl_cache"
      rm -rf "$nccl_cache/$stem.partial"
      python3 - "$wheel" "$nccl_cache/$stem.partial" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if name.startswith('nvidia/nccl/lib/libnccl.so') or name.endswith('/LICENSE.txt') or name.endswith('/License.txt'):
            wheel.extract(name, sys.argv[2])
PY
      mv "$nccl_cache/$stem.partial" "$nccl_cache/$stem"
      echo "setup: NCCL from $stem in $nccl_cache/$stem"
    else
      echo "setup: could not fetch NCCL (pip download nvidia-nccl-cu13: $(tail -1 "$download/pip.log")); the tests that load a real NCCL will skip, saying so" >&2
    fi
    rm -rf "$download"
  fi
fi
