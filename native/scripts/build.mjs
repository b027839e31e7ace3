#!/usr/bin/env node
// Builds the addon from source with cmake-js, after checking for what it needs, so that a missing
// compiler, CMake or MPI is a one-line message saying what to install instead of a CMake trace.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(import.meta.url);

function has(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}

const missing = [];
if (!has('cmake')) missing.push('CMake >= 3.18 (Debian/Ubuntu: apt-get install -y cmake)');
if (!has('c++') && !has('g++') && !has('clang++')) missing.push('a C++17 compiler (Debian/Ubuntu: apt-get install -y g++)');
if (!has('make') && !has('ninja')) missing.push('make or ninja (Debian/Ubuntu: apt-get install -y make)');
const mpiHeader = ['/usr/include/mpi.h', '/usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h', '/usr/lib/aarch64-linux-gnu/openmpi/include/mpi.h',
  '/usr/include/openmpi-x86_64/mpi.h', '/usr/local/include/mpi.h', '/opt/homebrew/include/mpi.h'];
if (!has('mpicc', ['--showme:version']) && !has('mpicc', ['-show']) && !mpiHeader.some(existsSync)) {
  missing.push('MPI (Debian/Ubuntu: apt-get install -y libopenmpi-dev openmpi-bin)');
}
if (missing.length > 0) {
  console.error(`@braid/native: cannot build the addon; install:\n  - ${missing.join('\n  - ')}\nthen run: npm rebuild @braid/native`);
  process.exit(1);
}

// A user's install (npm's install step) builds the addon and the two programs the braid command
// runs; the native tests and other benchmarks only on request (BRAID_TESTS=1), the CUDA kernels
// where a GPU driver is present (or BRAID_CUDA=1). A build from a clone (npm run build) builds
// everything it can. BRAID_TESTS=0/1 and BRAID_CUDA=0/1 win either way.
const userInstall = process.argv.includes('--install');
const gpuDriver = existsSync('/proc/driver/nvidia/version');
const flag = (name, fallback) => (process.env[name] === '1' ? true : process.env[name] === '0' ? false : fallback);
const cuda = flag('BRAID_CUDA', userInstall ? gpuDriver : true);
const tests = flag('BRAID_TESTS', userInstall ? false : existsSync(join(here, 'test')));
const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
// Configure, then build: `cmake-js compile` only builds once a build folder exists, so a second
// build with other options (npm install's, then a clone's npm run build) would keep the first's.
const options = ['--directory', here, '--out', 'build', `--CDBRAID_CUDA=${cuda ? 'ON' : 'OFF'}`, `--CDBRAID_TESTS=${tests ? 'ON' : 'OFF'}`];
console.error(
  `@braid/native: building the addon${tests ? ', the native tests' : ''}${cuda ? ', the CUDA kernels (where nvcc is found)' : ''} and the programs of braid bench/calibrate with CMake ` +
    `(${tests || cuda ? 'a minute or two' : 'about 20 s'} on 2 cores; BRAID_TESTS=1 adds the native tests, BRAID_CUDA=1 the CUDA kernels)`,
);
const parallel = process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? String(Math.max(1, (await import('node:os')).availableParallelism()));
for (const step of ['configure', 'build']) {
  const r = spawnSync(process.execPath, [cmakeJs, step, ...options], {
    cwd: here,
    stdio: 'inherit',
    env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: parallel },
  });
  if (r.status !== 0) {
    console.error('@braid/native: the build failed (see above). It needs CMake >= 3.18, a C++17 compiler and MPI (Debian/Ubuntu: apt-get install -y cmake g++ libopenmpi-dev openmpi-bin).');
    process.exit(r.status ?? 1);
  }
}
