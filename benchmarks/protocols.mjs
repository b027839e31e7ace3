#!/usr/bin/env node
// Braid beside two published all-reduce benchmark protocols on this host (np=2 by default):
// OSU's osu_allreduce and nccl-tests' all_reduce_perf, each written out in C over MPI_Allreduce
// (braid_protocol_allreduce) and run the same way through @braid/collectives, awaited and
// synchronous, in fresh processes. The three runs take turns --repeat times (the VM's speed drifts
// within minutes) and each figure is the median of its runs. Prints each size's mean time per
// call and the ratio MPI / Braid (above 1: Braid faster); writes results/<protocol>.json.
//   node benchmarks/protocols.mjs [--protocol osu|nccl-tests|both] [--np 2] [--repeat 3]
//                                 [--min-bytes B] [--max-bytes 67108864]
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { buildDir } from '@braid/native';

import { commandLine } from './common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { args, opt } = commandLine();
const np = opt('--np', '2');
const repeat = Number(opt('--repeat', '3'));
const maxBytes = opt('--max-bytes', String(64 * 2 ** 20));
const which = opt('--protocol', 'both');
const protocols = which === 'both' ? ['osu', 'nccl-tests'] : [which];
if (!protocols.every((p) => p === 'osu' || p === 'nccl-tests') || !(repeat >= 1)) {
  console.error('usage: protocols.mjs [--protocol osu|nccl-tests|both] [--np N] [--repeat R>=1] [--min-bytes B] [--max-bytes B]');
  process.exit(2);
}
const resultsDir = join(here, 'results');
mkdirSync(resultsDir, { recursive: true });
const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };

function run(protocol, label, argv, minBytes) {
  const out = join(resultsDir, `${protocol}-${label}.json`);
  const full = ['-np', np, ...(Number(np) > 2 ? ['--oversubscribe'] : []), ...argv,
    '--protocol', protocol, '--min-bytes', minBytes, '--max-bytes', maxBytes, '--json', out];
  console.log(`$ mpirun ${full.join(' ')}`);
  const r = spawnSync('mpirun', full, { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (r.status !== 0) {
    console.error(`benchmark failed: mpirun exited with ${r.status ?? r.signal}`);
    process.exit(1);
  }
  return JSON.parse(readFileSync(out, 'utf8')).results;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

for (const protocol of protocols) {
  // nccl-tests' users start at a few bytes too; its 5 warm-up calls go to the smallest and largest.
  const minBytes = opt('--min-bytes', protocol === 'osu' ? '4' : '8');
  const runs = { mpi: [], await: [], sync: [] };
  for (let i = 0; i < repeat; i++) {
    runs.mpi.push(run(protocol, 'mpi', [join(buildDir, 'braid_protocol_allreduce')], minBytes));
    runs.await.push(run(protocol, 'braid-await', [process.execPath, join(here, 'protocol-worker.mjs')], minBytes));
    runs.sync.push(run(protocol, 'braid-sync', [process.execPath, join(here, 'protocol-worker.mjs'), '--sync'], minBytes));
  }
  const rows = runs.mpi[0].map((o, i) => {
    const of = (kind) => runs[kind].map((r) => r[i].avgUs);
    const mpiUs = median(of('mpi'));
    const awaitUs = median(of('await'));
    const syncUs = median(of('sync'));
    // Ratios per run too: the three runs of one turn are minutes apart at most.
    const perRun = of('mpi').map((m, k) => ({ await: m / of('await')[k], sync: m / of('sync')[k] }));
    return { bytes: o.bytes, mpiUs, awaitUs, syncUs, awaitRatio: mpiUs / awaitUs, syncRatio: mpiUs / syncUs, perRun };
  });
  const title = protocol === 'osu' ? "OSU osu_allreduce's protocol" : "nccl-tests' all_reduce_perf protocol (-w 5 -n 20, in place)";
  console.log(`\n# ${title}, np=${np}, float32 sum, median of ${repeat} runs: mean time per call (us) and MPI / Braid`);
  console.log(`${'size(B)'.padStart(10)} ${'MPI'.padStart(10)} ${'Braid await'.padStart(12)} ${'ratio'.padStart(6)} ${'Braid sync'.padStart(11)} ${'ratio'.padStart(6)}  per run (await|sync)`);
  for (const r of rows) {
    const each = r.perRun.map((p) => `${p.await.toFixed(2)}|${p.sync.toFixed(2)}`).join(' ');
    console.log(`${String(r.bytes).padStart(10)} ${r.mpiUs.toFixed(2).padStart(10)} ${r.awaitUs.toFixed(2).padStart(12)} ${r.awaitRatio.toFixed(2).padStart(6)} ${r.syncUs.toFixed(2).padStart(11)} ${r.syncRatio.toFixed(2).padStart(6)}  ${each}`);
  }
  writeFileSync(join(resultsDir, `${protocol}.json`), JSON.stringify({ np: Number(np), protocol, repeat, rows }, null, 1));
}
