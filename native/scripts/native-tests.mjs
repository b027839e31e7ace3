#!/usr/bin/env node
// Runs the native test programs: the kernel, device-compression and NCCL tests in one process (the
// first two also against the CUDA emulation), the algorithm tests under
// mpirun at 1, 2, 3 and 4 ranks (oversubscribed: CI machines have 2 cores), the engine test at
// 1-3. BRAID_NATIVE_DIR runs another build's programs (the sanitizer builds).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildDir as defaultBuildDir } from '../lib/index.js';

const buildDir = process.env.BRAID_NATIVE_DIR || defaultBuildDir;

const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1' };
let failed = 0;
function run(cmd, args, extraEnv = {}) {
  // The CUDA emulation's programs are built on x86-64 only (its fibers switch stacks in x86-64 code).
  if (cmd.includes('emulat') && !existsSync(cmd)) {
    console.log(`skip ${cmd}: the CUDA emulation is built on x86-64 only`);
    return;
  }
  console.log(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', env: { ...env, ...extraEnv }, timeout: 300_000 });
  if (r.status !== 0) {
    failed++;
    console.error(`FAILED (exit ${r.status ?? r.signal}): ${cmd} ${args.join(' ')}`);
  }
}
run(join(buildDir, 'braid_kernels_test'), []);
// The CUDA sources compiled for the CPU (test/cuda_emulation): the emulation's own checks, then the
// kernel test's GPU cases on it.
run(join(buildDir, 'braid_cuda_emulation_test'), []);
run(join(buildDir, 'braid_kernels_test_emulated'), []);
// allReduceCompressed's device steps: on a GPU or the host stand-in, and on the emulated CUDA.
run(join(buildDir, 'braid_device_compress_test'), []);
run(join(buildDir, 'braid_device_compress_test_emulated'), []);
// NCCL's communicator: a unique id and joining without a GPU where NCCL is found, the collectives
// on a GPU; skipped, saying why, where either is missing.
run(join(buildDir, 'braid_nccl_test'), []);
// The same communicator on the CUDA and NCCL emulation: every collective, the staged all-reduce
// over its chunks, a peer that never joins. Its copies through pinned memory on 2 helper
// threads, as on a machine of 8 cores or more (none by default on fewer).
run(join(buildDir, 'braid_nccl_test_emulated'), [], { BRAID_COPY_HELPERS: '2' });
for (const np of [1, 2, 3, 4]) run('mpirun', ['-np', String(np), '--oversubscribe', join(buildDir, 'braid_algorithms_test')]);
// The same algorithms over Braid's TCP transport (loopback here; between hosts in the engine).
for (const np of [2, 3, 4]) run('mpirun', ['-np', String(np), '--oversubscribe', join(buildDir, 'braid_algorithms_test'), 'tcp']);
for (const np of [1, 2, 3]) run('mpirun', ['-np', String(np), '--oversubscribe', join(buildDir, 'braid_engine_test')]);
process.exit(failed === 0 ? 0 : 1);
