#!/usr/bin/env bash
# The GPU check (issue 14), prepared here to run in one go on a machine with a GPU, nvcc, cmake,
# MPI and no network (the `device` tool's machine): builds the native library and its tests with
# the CUDA kernels, runs the kernel tests (the CUDA kernels against their CPU twins, bit for bit)
# and the NCCL communicator's (one rank on the GPU: every op and dtype, broadcast), looks for NCCL
# as the addon would (the loader's own search, which covers pip's nvidia/nccl/lib
# under /opt/*/.venv), and prints one summary. Also runs where there is no GPU: it then says so.
#   bash scripts/gpu-check.sh            (writes its logs to $OUT, or /tmp/braid-gpu-check)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/braid-gpu-check}
mkdir -p "$out"
build=native/build-gpu
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
summary=()
say() { summary+=("$1"); echo "== $1"; }
started=$(date +%s)

gpus=$(nvidia-smi -L 2>/dev/null || true)
if [ -n "$gpus" ]; then say "GPU: $(echo "$gpus" | head -1)"; else say "GPU: none visible (nvidia-smi)"; fi
nvcc_version=$(nvcc --version 2>/dev/null | grep release || true)
say "nvcc: ${nvcc_version:-not found}"

# The library, its tests and the NCCL probe (no Node.js needed: the addon itself is not built here).
if cmake -S native -B "$build" -DCMAKE_BUILD_TYPE=Release -DBRAID_TESTS=ON -DBRAID_TOOLS=OFF >"$out/configure.log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" --target braid_kernels_test braid_device_compress_test braid_nccl_probe braid_nccl_test >"$out/build.log" 2>&1; then
  cmake --build "$build" -j "$(nproc)" --target braid_gpu_kernels_bench braid_calibrate >>"$out/build.log" 2>&1 || true
  cuda=$(grep -o 'braid: CUDA kernels [A-Z]*' "$out/configure.log" | head -1)
  say "build: ok (${cuda:-CUDA kernels: unknown})"
else
  say "build: FAILED (see $out/configure.log and $out/build.log)"
  tail -20 "$out/build.log" 2>/dev/null
fi

if [ -x "$build/Release/braid_kernels_test" ]; then
  "$build/Release/braid_kernels_test" >"$out/kernels.log" 2>&1
  status=$?
  passed=$(grep -c '^ok' "$out/kernels.log")
  failed=$(grep -c '^FAIL' "$out/kernels.log")
  say "kernel tests: exit $status, $passed ok, $failed failed"
  grep -i 'cuda' "$out/kernels.log" | sed 's/^/   /'
  grep '^FAIL' "$out/kernels.log" | sed 's/^/   /'
fi

# allReduceCompressed's device steps with the CUDA kernels (CI runs them on the CUDA emulation).
if [ -x "$build/Release/braid_device_compress_test" ]; then
  timeout 120 "$build/Release/braid_device_compress_test" >"$out/device-compress.log" 2>&1
  status=$?
  say "device compression steps: exit $status, $(grep '^device:' "$out/device-compress.log"), $(tail -1 "$out/device-compress.log")"
  grep '^FAIL' "$out/device-compress.log" | cut -c1-300 | sed 's/^/   /'
fi

if [ -x "$build/Release/braid_nccl_probe" ]; then
  "$build/Release/braid_nccl_probe" >"$out/nccl.log" 2>&1
  say "$(grep '^NCCL:' "$out/nccl.log" | cut -c1-300)"
fi

# The NCCL communicator on the GPU: unique id, non-blocking join, every op and dtype, broadcast.
if [ -x "$build/Release/braid_nccl_test" ]; then
  timeout 300 "$build/Release/braid_nccl_test" >"$out/nccl-test.log" 2>&1
  status=$?
  say "NCCL tests: exit $status, $(tail -1 "$out/nccl-test.log")"
  grep -E '^(FAIL|skip)|us per call' "$out/nccl-test.log" | cut -c1-300 | sed 's/^/   /'
fi

# The Node.js side, where a node binary is here or carried (scripts/gpu-carry.sh): the addon built
# with CUDA, then DeviceBuffers through NCCL (every collective, op and dtype against the exact
# answers; misuse refused), and more ranks than GPUs refused by name.
node_bin=$(command -v node || true)
if [ -z "$node_bin" ] && [ -f .carry/node.xz ]; then
  mkdir -p .carry/bin && xz -dc .carry/node.xz >.carry/bin/node && chmod +x .carry/bin/node
  export PATH="$PWD/.carry/bin:$PATH"
  node_bin=$PWD/.carry/bin/node
fi
napi_include=""
for dir in .carry/include /usr/include/node; do
  if [ -f "$dir/node_api.h" ]; then napi_include=$(cd "$dir" && pwd); break; fi
done
if [ -z "$node_bin" ] || [ -z "$napi_include" ] || [ ! -d packages/collectives/dist ]; then
  say "DeviceBuffers: not run (needs node, the Node-API headers and packages/collectives/dist: see scripts/gpu-carry.sh)"
elif cmake -S native -B "$build" -DCMAKE_JS_VERSION=gpu-check -DCMAKE_JS_INC="$napi_include" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/$build/Release" >>"$out/configure.log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" --target braid_native >>"$out/build.log" 2>&1; then
  export BRAID_NATIVE_DIR=$PWD/$build/Release
  rm -rf "$out/device" && mkdir -p "$out/device"
  timeout 300 mpirun -np 1 node packages/collectives/src/test-support/device-worker.mjs device "$out/device" >"$out/device.log" 2>&1
  status=$?
  if [ ! -f "$out/device/rank-0.json" ]; then
    say "DeviceBuffers, np=1: exit $status, $(grep -m1 -E '^[A-Za-z]*Error' "$out/device.log" | cut -c1-240)"
  else
  say "DeviceBuffers, np=1: exit $status, $(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1] + "/rank-0.json", "utf8"));
    const wrong = r.cases.filter((c) => c.wrong !== 0);
    const refused = Object.entries(r.refusals).filter(([k, v]) => k !== "afterInFlight" && !v.startsWith("INVALID_ARGUMENT"));
    console.log(`device ${r.kind} ${r.index}, ${r.cases.length} cases, ${wrong.length} wrong${wrong.length ? " (" + wrong.slice(0, 3).map((c) => c.what).join("; ") + ")" : ""}, refusals ${refused.length ? "WRONG: " + refused.map(([k]) => k).join(", ") : "ok"}, after in-flight ${r.refusals.afterInFlight}`);
  ' "$out/device" 2>&1 | tail -1)"
  fi
  # allReduceCompressed on DeviceBuffers: the CUDA kernels make and sum the payloads, NCCL gathers
  # them; every step against the Float32Array path (packages/compression/src/device.test.ts).
  if [ -d packages/compression/dist ]; then
    rm -rf "$out/compressed" && mkdir -p "$out/compressed"
    timeout 300 mpirun -np 1 node packages/compression/src/test-support/device-worker.mjs "$out/compressed" >"$out/compressed.log" 2>&1
    status=$?
    if [ ! -f "$out/compressed/rank-0.json" ]; then
      say "compressed all-reduce on DeviceBuffers, np=1: exit $status, $(grep -m1 -E '^[A-Za-z]*Error' "$out/compressed.log" | cut -c1-240)"
    else
      say "compressed all-reduce on DeviceBuffers, np=1: exit $status, $(node -e '
        const r = JSON.parse(require("fs").readFileSync(process.argv[1] + "/rank-0.json", "utf8"));
        const wrong = r.cases.filter((c) => c.wrong !== 0);
        const bytes = Object.entries(r.payloads).map(([k, p]) => `${k} ${p.sameBytes ? "same bytes" : p.decodes}`).join(", ");
        console.log(`device ${r.kind}, ${r.cases.length} cases, ${wrong.length} wrong${wrong.length ? " (" + wrong.slice(0, 4).map((c) => c.label).join("; ") + ")" : ""}; payloads: ${bytes}; corrupt: ${r.corrupt.flipped.slice(0, 40)}`);
      ' "$out/compressed" 2>&1 | tail -1)"
    fi
  else
    say "compressed all-reduce on DeviceBuffers: not run (carry packages/compression/dist: see scripts/gpu-carry.sh)"
  fi
  # Two ranks, one GPU: the second is refused by name (NCCL takes one rank a GPU).
  gpus_seen=$(nvidia-smi -L 2>/dev/null | wc -l)
  if [ "$gpus_seen" -eq 1 ]; then
    timeout 120 mpirun -np 2 node --input-type=module -e "
      import { init } from '@braid/collectives';
      const comm = await init();
      const d = comm.device;
      console.log('rank ' + comm.rank + ': ' + d.kind + (d.reason ? ' (' + d.reason + ')' : ''));
      await comm.close();" >"$out/two-ranks.log" 2>&1
    say "two ranks on one GPU: $(grep -o 'rank 1: .*' "$out/two-ranks.log" | cut -c1-220)"
  fi
else
  say "DeviceBuffers: the addon did not build with CUDA (see $out/build.log)"
fi

# PyTorch, the GPU kernels' peer, where the machine has it.
torch_python=""
for python in /opt/torch/.venv/bin/python3 python3; do
  if command -v "$python" >/dev/null 2>&1 && "$python" -c 'import torch' >/dev/null 2>&1; then
    say "PyTorch: $("$python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' 2>&1 | tail -1)"
    torch_python=$python
    break
  fi
done

# The benchmarks (issue 14's targets): casts against a device copy, top-k 1% against torch.topk,
# the staged host all-reduce against the copy bound. Each prints one JSON line.
if [ -x "$build/Release/braid_gpu_kernels_bench" ]; then
  timeout 240 "$build/Release/braid_gpu_kernels_bench" >"$out/kernels-bench.json" 2>"$out/kernels-bench.log"
  say "GPU kernels: $(head -c 600 "$out/kernels-bench.json")"
fi
if [ -n "$torch_python" ]; then
  timeout 240 "$torch_python" benchmarks/gpu_peers.py >"$out/torch-peers.json" 2>"$out/torch-peers.log"
  say "PyTorch peers: $(head -c 600 "$out/torch-peers.json")"
fi
if [ -s "$out/kernels-bench.json" ] && [ -s "$out/torch-peers.json" ] && command -v node >/dev/null 2>&1; then
  say "ratios: $(node -e '
    const fs = require("fs");
    const b = JSON.parse(fs.readFileSync(process.argv[1], "utf8")), t = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
    if (!b.gpu || !t.gpu) { console.log("no GPU"); process.exit(0); }
    const topk = b.topk.map((r) => { const p = t.topk.find((q) => q.floats === r.floats); return `top-k ${r.floats}: ${p ? (r.elementsPerS / p.elementsPerS).toFixed(2) : "?"}x torch.topk`; });
    console.log([`fp16 cast ${b.fp16VsCopy.toFixed(2)}x and bf16 ${b.bf16VsCopy.toFixed(2)}x a device copy (target >= 0.9; torch fp16 ${(t.fp16GBps / t.copyGBps).toFixed(2)}x by the same measure)`, ...topk].join("; "));
  ' "$out/kernels-bench.json" "$out/torch-peers.json" 2>&1 | tail -1)"
fi
if [ -n "${BRAID_NATIVE_DIR:-}" ]; then
  timeout 120 node benchmarks/gpu-staged.mjs >"$out/staged.json" 2>"$out/staged.log"
  say "staged host all-reduce: $(head -c 400 "$out/staged.json") (target: ratio >= 0.8)"
  # The same with the copies through pinned memory on the engine thread alone, side by side.
  BRAID_COPY_HELPERS=0 timeout 120 node benchmarks/gpu-staged.mjs >"$out/staged-one-thread.json" 2>"$out/staged-one-thread.log"
  say "staged host all-reduce, copies on one thread (BRAID_COPY_HELPERS=0): $(head -c 400 "$out/staged-one-thread.json")"
  if [ -d packages/compression/dist ]; then
    timeout 180 node benchmarks/gpu-compressed.mjs >"$out/compressed-bench.json" 2>"$out/compressed-bench.log"
    say "compressed all-reduce, DeviceBuffer vs Float32Array (16M floats, one rank): $(head -c 500 "$out/compressed-bench.json")"
  fi
fi
# braid calibrate's staged NCCL measurement (what `auto` would go by for host arrays), one rank.
if [ -x "$build/Release/braid_calibrate" ]; then
  timeout 120 mpirun -np 1 "$build/Release/braid_calibrate" --out "$out/profile.json" --braid-version gpu-check --seconds 0.5 >/dev/null 2>"$out/calibrate.log"
  say "calibrate, staged NCCL all-reduce (np=1): $(node -e 'console.log(JSON.stringify(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).measured.ncclStaged))' "$out/profile.json" 2>&1 | head -c 400)"
fi

echo
echo "GPU check summary ($(($(date +%s) - started)) s):"
printf '  %s\n' "${summary[@]}"
