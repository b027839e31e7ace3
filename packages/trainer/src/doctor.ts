// `braid doctor`: what this machine has for Braid, and how to get what it lacks.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { tfjsNodeStatus } from './tfjs-node-setup.js';

export interface Check {
  name: string;
  status: 'ok' | 'missing' | 'optional';
  detail: string;
  fix?: string;
}

function run(program: string, args: string[]): string | undefined {
  try {
    return execFileSync(program, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch {
    return undefined;
  }
}

function which(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, program))) return join(dir, program);
  }
  return undefined;
}

/** Where libnccl.so.2 would be found by dlopen, or by a user setting LD_LIBRARY_PATH. */
export function findNccl(): string | undefined {
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':'),
    '/usr/lib/x86_64-linux-gnu',
    '/usr/lib/aarch64-linux-gnu',
    '/usr/local/lib',
    '/usr/local/cuda/lib64',
    '/usr/lib64',
  ].filter(Boolean);
  for (const dir of dirs) if (existsSync(join(dir, 'libnccl.so.2'))) return join(dir, 'libnccl.so.2');
  const cache = run('ldconfig', ['-p']);
  const line = cache?.split('\n').find((l) => l.includes('libnccl.so.2'));
  if (line) return line.split('=>').pop()!.trim();
  // pip's nvidia-nccl wheels (what PyTorch installs): .../site-packages/nvidia/nccl/lib.
  for (const root of ['/usr/lib/python3/dist-packages', '/usr/local/lib']) {
    if (!existsSync(root)) continue;
    for (const entry of readdirSync(root)) {
      const candidate = join(root, entry, 'site-packages', 'nvidia', 'nccl', 'lib', 'libnccl.so.2');
      if (existsSync(candidate)) return candidate;
    }
  }
  return undefined;
}

export async function diagnose(cwd = process.cwd()): Promise<Check[]> {
  const checks: Check[] = [];
  const [major] = process.versions.node.split('.').map(Number);
  checks.push(
    major! >= 20
      ? { name: 'Node.js', status: 'ok', detail: process.version }
      : { name: 'Node.js', status: 'missing', detail: `${process.version} is too old`, fix: 'install Node.js 20 or newer' },
  );

  const mpirun = which('mpirun');
  const mpirunVersion = mpirun ? run('mpirun', ['--version'])?.split('\n')[0]?.trim() : undefined;
  checks.push(
    mpirun
      ? { name: 'mpirun', status: 'ok', detail: `${mpirunVersion ?? 'version unknown'} (${mpirun})` }
      : { name: 'mpirun', status: 'missing', detail: 'not on PATH', fix: 'Debian/Ubuntu: sudo apt-get install -y openmpi-bin libopenmpi-dev' },
  );

  let addonInfo: { isa: string; cuda: { compiled: boolean; devices: number }; mpi: { library: string; standard: string }; nccl?: { available: boolean; version?: string; path?: string; error?: string } } | undefined;
  let device: { kind: 'cuda' | 'host' | 'none'; index: number; count: number; error?: string } | undefined;
  try {
    const native = await import('@braid/native');
    addonInfo = native.loadAddon().info();
    // What comm.device would open for local rank 0 (the first GPU, or BRAID_DEVICE=host).
    device = native.loadAddon().deviceOpen(0, -1);
    checks.push({ name: 'MPI library', status: 'ok', detail: `${addonInfo.mpi.library} (MPI ${addonInfo.mpi.standard})` });
    checks.push({ name: '@braid/native', status: 'ok', detail: `built, reduction kernels: ${addonInfo.isa}` });
  } catch (err) {
    // Either the build tools are missing, or they are there and the build never ran (npm 11
    // skips an install script it was not told to allow, or it was installed --ignore-scripts).
    const tools: Array<[string, boolean]> = [
      ['cmake', which('cmake') !== undefined],
      ['g++', which('g++') !== undefined || which('c++') !== undefined || which('clang++') !== undefined],
      ['make', which('make') !== undefined || which('ninja') !== undefined],
      ['libopenmpi-dev', which('mpicc') !== undefined],
    ];
    const lacking = tools.filter(([, found]) => !found).map(([name]) => name);
    checks.push({
      name: '@braid/native',
      status: 'missing',
      detail: lacking.length > 0 ? (err as Error).message.split('\n')[0]! : 'the addon is not built (its install script did not run)',
      fix:
        lacking.length > 0
          ? `install what the build needs (sudo apt-get install -y ${lacking.join(' ')}${mpirun ? '' : ' openmpi-bin'}), then \`npm rebuild @braid/native\``
          : 'run `npm install-scripts approve @braid/native && npm rebuild @braid/native` (npm 11 runs only the install scripts a project approves)',
    });
  }

  const nvcc = which('nvcc') ?? (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : undefined);
  const nvccVersion = nvcc ? run(nvcc, ['--version'])?.split('\n').find((l) => l.includes('release'))?.trim() : undefined;
  const gpus = run('nvidia-smi', ['-L'])?.trim().split('\n').filter(Boolean) ?? [];
  const cudaDetail = [
    addonInfo ? `CUDA kernels ${addonInfo.cuda.compiled ? 'compiled in' : 'not compiled (no nvcc at build time)'}` : undefined,
    nvcc ? `nvcc: ${nvccVersion ?? nvcc}` : 'nvcc not found',
    gpus.length > 0 ? `${gpus.length} GPU(s): ${gpus.join('; ')}` : 'no GPU visible (nvidia-smi)',
  ]
    .filter(Boolean)
    .join(', ');
  checks.push({
    name: 'CUDA',
    status: addonInfo?.cuda.compiled && gpus.length > 0 ? 'ok' : 'optional',
    detail: cudaDetail,
    fix: gpus.length > 0 && !addonInfo?.cuda.compiled ? 'install the CUDA toolkit (nvcc) and run `npm rebuild @braid/native`' : undefined,
  });

  // The addon's own loader (what collectives would use: version checked, entry points resolved);
  // without the addon, a look for the file.
  const ncclStatus = addonInfo?.nccl;
  const ncclFile = ncclStatus ? undefined : findNccl();
  const ncclFix = 'install NCCL 2.14 or later (NVIDIA\'s libnccl2 package, or `pip install nvidia-nccl-cu13`), or set BRAID_NCCL_LIB to its libnccl.so.2';
  checks.push(
    ncclStatus?.available
      ? { name: 'NCCL', status: 'ok', detail: `${ncclStatus.version} (${ncclStatus.path}), loaded at run time` }
      : ncclFile
        ? { name: 'NCCL', status: 'ok', detail: ncclFile }
        : {
            name: 'NCCL',
            status: 'optional',
            detail: `${ncclStatus?.error?.split('. Searched:')[0]?.replace('NCCL is not available: ', '') ?? 'libnccl.so.2 not found'} (only needed for GPU collectives)`,
            fix: ncclFix,
          },
  );
  if (device) {
    const where =
      device.kind === 'cuda'
        ? `GPU ${device.index} of ${device.count} for local rank 0 (one rank a GPU); collectives on them run by NCCL${ncclStatus?.available ? '' : ', which is missing'}; allReduceCompressed on them runs the CUDA compression kernels on that GPU (Float32Arrays: the CPU's, ${addonInfo?.isa ?? 'unknown ISA'})`
        : device.kind === 'host'
          ? `host memory standing in for a GPU (BRAID_DEVICE=host): collectives on them run by the host algorithms, allReduceCompressed by the CPU kernels (${addonInfo?.isa ?? 'unknown ISA'})`
          : `none: ${device.error}`;
    checks.push({ name: 'DeviceBuffers', status: device.kind === 'cuda' && ncclStatus?.available ? 'ok' : 'optional', detail: where });
  }

  const require = createRequire(join(cwd, 'package.json'));
  const tfjs = (() => {
    try {
      return require('@tensorflow/tfjs/package.json').version as string;
    } catch {
      return undefined;
    }
  })();
  const natives = tfjsNodeStatus(cwd);
  const working = natives.find((n) => n.check.ok);
  if (working && working.check.ok) {
    const origin = working.build ? `libtensorflow from ${working.build.source} (${working.build.libtensorflow})` : 'libtensorflow from its own install';
    checks.push({ name: 'TensorFlow.js', status: 'ok', detail: `${working.name} ${working.version}: '${working.check.backend}' backend, TensorFlow ${working.check.tensorflow}, ${origin}${tfjs ? `; @tensorflow/tfjs ${tfjs}` : ''}` });
  } else if (natives.length > 0) {
    const broken = natives[0]!;
    checks.push({
      name: 'TensorFlow.js',
      status: tfjs ? 'optional' : 'missing',
      detail: `${broken.name} ${broken.version} does not load (${broken.check.ok ? '' : broken.check.error})${tfjs ? `; training falls back to @tensorflow/tfjs ${tfjs} (pure JS, 5-24x slower)` : ''}`,
      fix: `braid setup tfjs-node${broken.name.endsWith('-gpu') ? ' --gpu' : ''} (builds it against the TensorFlow wheel's C library)`,
    });
  } else if (tfjs) {
    checks.push({
      name: 'TensorFlow.js',
      status: 'ok',
      detail: `@tensorflow/tfjs ${tfjs} (pure-JS CPU backend)`,
      fix: 'for native TensorFlow (5-24x faster): braid setup tfjs-node',
    });
  } else {
    checks.push({
      name: 'TensorFlow.js',
      status: 'optional',
      detail: `none found from ${cwd} (needed by @braid/strategies and @braid/trainer)`,
      fix: 'npm install @tensorflow/tfjs (pure JS), then optionally braid setup tfjs-node (native TensorFlow, built from the TensorFlow wheel)',
    });
  }

  if (process.getuid?.() === 0 && process.env.OMPI_ALLOW_RUN_AS_ROOT !== '1') {
    checks.push({
      name: 'root',
      status: 'optional',
      detail: 'running as root: `braid run` allows it; a plain mpirun needs two variables',
      fix: 'export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1',
    });
  }
  return checks;
}

export function formatChecks(checks: Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  const lines = checks.map((c) => {
    const tag = c.status === 'ok' ? 'ok     ' : c.status === 'missing' ? 'MISSING' : 'note   ';
    const fix = c.fix ? `\n  ${' '.repeat(width + 8)}fix: ${c.fix}` : '';
    return `${tag} ${c.name.padEnd(width)}  ${c.detail}${fix}`;
  });
  const missing = checks.filter((c) => c.status === 'missing').length;
  lines.push(missing === 0 ? 'Braid can run here.' : `${missing} required part(s) missing: see the fixes above.`);
  return lines.join('\n');
}
