#!/usr/bin/env node
// Braid beside OSU's osu_allreduce protocol at np=2 on this host: the protocol in C over
// MPI_Allreduce (braid_osu_allreduce), and the same protocol through @braid/collectives, awaited
// and synchronous, in fresh processes one after the other. Prints each size's mean latency and
// the ratio OSU / Braid (above 1: Braid faster); writes results/osu.json.
//   node benchmarks/osu.mjs [--np 2] [--max-bytes 67108864]
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { buildDir } from '@braid/native';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const np = opt('--np', '2');
const maxBytes = opt('--max-bytes', String(64 * 2 ** 20));
const resultsDir = join(here, 'results');
mkdirSync(resultsDir, { recursive: true });
const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };
function run(label, argv) {
  const out = join(resultsDir, `osu-${label}.json`);
  const full = ['-np', np, ...(Number(np) > 2 ? ['--oversubscribe'] : []), ...argv, '--max-bytes', maxBytes, '--json', out];
  console.log(`$ mpirun ${full.join(' ')}`);
  const r = spawnSync('mpirun', full, { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (r.status !== 0) {
    console.error(`benchmark failed: mpirun exited with ${r.status ?? r.signal}`);
    process.exit(1);
  }
  return JSON.parse(readFileSync(out, 'utf8')).results;
}
const osu = run('mpi', [join(buildDir, 'braid_osu_allreduce')]);
const awaited = run('braid-await', [process.execPath, join(here, 'osu-worker.mjs')]);
const blocking = run('braid-sync', [process.execPath, join(here, 'osu-worker.mjs'), '--sync']);
console.log(`\n# OSU osu_allreduce protocol, np=${np}, float32 sum: mean latency (us) and OSU / Braid`);
console.log(`${'size(B)'.padStart(10)} ${'MPI'.padStart(10)} ${'Braid await'.padStart(12)} ${'ratio'.padStart(6)} ${'Braid sync'.padStart(11)} ${'ratio'.padStart(6)}`);
const rows = osu.map((o, i) => ({ bytes: o.bytes, mpiUs: o.avgUs, awaitUs: awaited[i].avgUs, syncUs: blocking[i].avgUs }));
for (const r of rows) {
  console.log(`${String(r.bytes).padStart(10)} ${r.mpiUs.toFixed(2).padStart(10)} ${r.awaitUs.toFixed(2).padStart(12)} ${(r.mpiUs / r.awaitUs).toFixed(2).padStart(6)} ${r.syncUs.toFixed(2).padStart(11)} ${(r.mpiUs / r.syncUs).toFixed(2).padStart(6)}`);
}
writeFileSync(join(resultsDir, 'osu.json'), JSON.stringify({ np: Number(np), rows }, null, 1));
