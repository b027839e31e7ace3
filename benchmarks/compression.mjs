#!/usr/bin/env node
// The compression benchmark: every native kernel beside memcpy (GB/s of float32 input, same
// process), top-k beside numpy.argpartition on the same 16M floats, and compressed all-reduce of
// a 64 MiB gradient at np=2 beside the uncompressed one (time and bytes on the wire).
// With --accuracy, also the MNIST demo's final test accuracy with each compressor beside none.
// Writes results/compression.json.   node benchmarks/compression.mjs [--quick] [--accuracy]
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { buildDir } from '@braid/native';

const here = dirname(fileURLToPath(import.meta.url));
const quick = process.argv.includes('--quick');
const resultsDir = join(here, 'results');
mkdirSync(resultsDir, { recursive: true });

const kernelsJson = join(resultsDir, 'compression-kernels.json');
const k = spawnSync(join(buildDir, 'braid_compress_bench'), ['--reps', quick ? '3' : '7', '--json', kernelsJson], { stdio: 'inherit' });
if (k.status !== 0) process.exit(1);
const kernels = JSON.parse(readFileSync(kernelsJson, 'utf8'));

// numpy.argpartition on as many values of the same distribution (|x| first, as top-k by
// magnitude needs), on the same machine, right after.
const numpyScript = `
import json, time
import numpy as np
n = ${kernels.elements}
# The same distribution as the native benchmark's input: uniform in [-1, 1).
x = np.random.default_rng(1).uniform(-1.0, 1.0, n).astype(np.float32)
out = {}
for frac in (0.01, 0.001):
    k = int(n * frac)
    ts = []
    for r in range(${quick ? 3 : 7}):
        t = time.perf_counter()
        np.argpartition(np.abs(x), n - k)[n - k:]
        ts.append(time.perf_counter() - t)
    ts.sort()
    out[str(frac)] = ts[len(ts) // 2] * 1000
print(json.dumps(out))
`;
const py = spawnSync('python3', ['-c', numpyScript], { encoding: 'utf8' });
let numpy = null;
if (py.status === 0) numpy = JSON.parse(py.stdout.trim().split('\n').pop());
else console.log(`numpy not available (${(py.stderr || '').split('\n').filter(Boolean).pop()}); skipping the argpartition comparison`);

const allreduceJson = join(resultsDir, 'compression-allreduce.json');
const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };
const ar = spawnSync('mpirun', ['-np', '2', process.execPath, join(here, 'compression-worker.mjs'), allreduceJson, quick ? '3' : '5'], { stdio: 'inherit', env });
if (ar.status !== 0) process.exit(1);
const allreduce = JSON.parse(readFileSync(allreduceJson, 'utf8'));

const topk = (label) => kernels.rows.find((r) => r.kernel === label).ms;
const summary = {
  kernels,
  topkVsNumpy: numpy && {
    '1%': { braidMs: topk('top-k 1%'), numpyMs: numpy['0.01'], speedup: numpy['0.01'] / topk('top-k 1%') },
    '0.1%': { braidMs: topk('top-k 0.1%'), numpyMs: numpy['0.001'], speedup: numpy['0.001'] / topk('top-k 0.1%') },
  },
  allreduce,
};
if (summary.topkVsNumpy) {
  for (const [frac, r] of Object.entries(summary.topkVsNumpy)) console.log(`top-k ${frac} of 16M floats: Braid ${r.braidMs.toFixed(1)} ms, numpy.argpartition ${r.numpyMs.toFixed(1)} ms: ${r.speedup.toFixed(1)}x`);
}
const base = allreduce.rows[0];
console.log(`\ncompressed all-reduce of ${allreduce.elements} float32 (64 MiB), np=${allreduce.size}, median of ${allreduce.rounds}:`);
console.log(`${'compressor'.padEnd(26)} ${'ms'.padStart(9)} ${'x time'.padStart(8)} ${'wire MiB'.padStart(9)} ${'x bytes'.padStart(8)}`);
for (const r of allreduce.rows) {
  console.log(`${r.name.padEnd(26)} ${r.ms.toFixed(1).padStart(9)} ${(r.ms / base.ms).toFixed(2).padStart(8)} ${(r.wireBytes / 2 ** 20).toFixed(2).padStart(9)} ${(r.wireBytes / base.wireBytes).toFixed(4).padStart(8)}`);
}
if (process.argv.includes('--accuracy')) {
  // The demo is seeded (weights, data order, compressor streams): each figure is reproducible.
  const braid = join(dirname(here), 'packages', 'trainer', 'dist', 'cli.js');
  const demo = join(dirname(here), 'examples', 'mnist', 'mlp.mjs');
  summary.accuracy = {};
  for (const compression of ['none', 'fp16', 'bf16', 'topk', 'powersgd', 'randomk', 'qsgd', 'int8', 'sign']) {
    const out = join(resultsDir, `compression-accuracy-${compression}.json`);
    const r = spawnSync(process.execPath, [braid, 'run', '-np', '2', demo, '--compression', compression, '--json', out], { env: { ...process.env, BRAID_PROGRESS: 'none' }, stdio: 'inherit' });
    if (r.status !== 0) process.exit(1);
    const result = JSON.parse(readFileSync(out, 'utf8'));
    summary.accuracy[compression] = { accuracy: result.accuracy, samplesPerSecond: result.samplesPerSecond };
  }
  const base = summary.accuracy.none.accuracy;
  console.log('\nMNIST demo (MLP, 2 ranks, 5 epochs), final test accuracy:');
  for (const [name, r] of Object.entries(summary.accuracy)) {
    const note = name === 'none' ? '' : ` (${((r.accuracy - base) * 100).toFixed(2)} points)`;
    const setup = { topk: 'top-k 1% + EF', powersgd: 'PowerSGD rank 4 + EF', randomk: 'random-k 1% + EF', qsgd: 'QSGD s=127 + EF', int8: 'int8 + EF', sign: 'sign + EF' }[name] ?? name;
    console.log(`  ${setup.padEnd(22)} ${r.accuracy.toFixed(4)}${note}`);
  }
}
writeFileSync(join(resultsDir, 'compression.json'), JSON.stringify(summary, null, 1));
console.log(`wrote ${join(resultsDir, 'compression.json')}`);
