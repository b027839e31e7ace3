#!/usr/bin/env bash
# Runs every test: the native kernel, algorithm and engine tests (mpirun at 1-4 ranks), each
# package's vitest suite (single-process and mpirun jobs), the sanitizer builds, the GPU paths on
# the CUDA and NCCL emulation, a short soak and the packages installed from their tarballs.
# Run scripts/setup.sh first.
#
# Two lanes run at once. Measured alone, the suites kept the machine's cores only about 65% busy:
# many tests wait on purpose (deadlines, a link held down, a rank gone silent), and every mpirun
# job spends a moment starting its ranks. The lanes share nothing on disk (each test makes its own
# folders, test beds and ports) and each job checks only what it made. Lane A's output streams;
# lane B's is printed when it ends. BRAID_TEST_LANES=1 runs them one after the other.
# Ends with one line adding up what every suite reported.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1
source scripts/ccache-env.sh
log_a=$(mktemp)
log_b=$(mktemp)
trap 'rm -f "$log_a" "$log_b" "${log_c:-}"' EXIT

# Everything the lanes load, built once before they start (cached by turbo: quick after setup).
npx turbo run build --output-logs=errors-only

# One suite: a heading, the command, how long it took and the CPU time its processes used (the
# lanes share the cores, so the CPU time says what a suite costs the run).
suite() {
  local name=$1 dir=$2 started=$SECONDS status=0 cpu
  shift 2
  echo "== $name"
  cpu=$(mktemp)
  (
    cd "$dir"
    code=0
    "$@" || code=$?
    times >"$cpu"
    exit $code
  ) || status=$?
  echo "== $name: $((SECONDS - started)) s, $(awk 'END { cpu = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); cpu += t[1] * 60 + t[2] } printf "%.0f", cpu }' "$cpu") CPU-s"
  rm -f "$cpu"
  return $status
}

# The trainer's files on the test bed of hosts, run in lane B: they mostly wait (a host lost, a
# deadline), and in lane A they made it end a minute after lane B.
trainer_host_files=(src/hosts.test.ts src/elastic-hosts.test.ts)

# The native tests and the collectives, compression, strategies and trainer suites (but for the
# trainer's files on hosts).
lane_a() {
  local status=0
  suite '@braid/native' native node scripts/native-tests.mjs || status=$?
  suite '@braid/collectives' packages/collectives npx vitest run || status=$?
  suite '@braid/compression' packages/compression npx vitest run || status=$?
  suite '@braid/strategies' packages/strategies npx vitest run || status=$?
  suite '@braid/trainer' packages/trainer npx vitest run "${trainer_host_files[@]/#/--exclude=}" || status=$?
  return $status
}

# The trainer across hosts, the examples, model compression, the sanitizers, the soak and the
# packages.
lane_b() {
  local status=0
  suite '@braid/trainer across hosts' packages/trainer npx vitest run "${trainer_host_files[@]}" || status=$?
  suite '@braid/examples' examples npx vitest run || status=$?
  suite '@braid/model-compression' packages/model-compression npx vitest run || status=$?
  # The native code under ASan + UBSan and the engine under TSan.
  suite 'sanitizers' . bash scripts/test-sanitize.sh || status=$?
  # A short soak: 20,000 mixed ops at 3 ranks, memory, descriptors, threads and /dev/shm watched.
  suite 'soak' . node benchmarks/soak.mjs --np 3 --ops 20000 || status=$?
  # The packages as a user installs them (npm pack tarballs into a fresh project, both npm modes).
  suite 'packages' . node scripts/test-packages.mjs || status=$?
  return $status
}

status=0
if [ "${BRAID_TEST_LANES:-2}" = 1 ]; then
  lane_a 2>&1 | tee "$log_a" || status=$?
  lane_b 2>&1 | tee "$log_b" || status=$?
else
  lane_b >"$log_b" 2>&1 &
  lane_b_pid=$!
  lane_a 2>&1 | tee "$log_a" || status=$?
  wait "$lane_b_pid" || status=$?
  echo "== lane B (run beside lane A: the trainer across hosts, examples, model compression, sanitizers, soak, packages)"
  cat "$log_b"
fi
# The GPU paths (DeviceBuffers through NCCL, allReduceCompressed with the CUDA kernels) at np=1-4
# on the CUDA and NCCL emulation (the addon built over native/test/cuda_emulation), after both
# lanes: beside them its emulated NCCL collectives hung now and then until their deadline, every
# rank waiting on a shared-memory segment that had gone (one cause, Braid's stale-region sweep
# taking names that were not its own, is fixed). One more hang was seen, once in 180 runs, a minute
# after that fix; none came back in 400 later runs beside the trainer's suites, traced with
# BRAID_NCCL_EMULATION_TRACE. That hang may have met a process still running the old addon. The
# suite stays here until that is sure.
log_c=$(mktemp)
suite 'CUDA emulation' . bash scripts/test-emulated.sh 2>&1 | tee "$log_c" || status=$?
node scripts/count-tests.mjs "$log_a" "$log_b" "$log_c"
exit $status
