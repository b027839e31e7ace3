#!/usr/bin/env node
// The all-reduce benchmark: native (C++ over the MPI transport, beside MPI_Allreduce) and JS
// (through @braid/collectives), run one after the other in one invocation, then the ratios the
// targets are stated in. Writes benchmarks/results/allreduce.json.
//   node benchmarks/allreduce.mjs [--np 2] [--max-bytes 268435456] [--repeat 3] [--quick]
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { buildDir } from '@braid/native';

import { commandLine, median } from './common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { args, opt } = commandLine();
const np = Number(opt('--np', 2));
const quick = args.includes('--quick');
const maxBytes = opt('--max-bytes', quick ? String(16 * 2 ** 20) : String(256 * 2 ** 20));
const seconds = quick ? '0.05' : '0.1';
const resultsDir = join(here, 'results');
mkdirSync(resultsDir, { recursive: true });

const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };
function mpirun(extraEnv, cmd) {
  const exported = Object.keys(extraEnv).flatMap((k) => ['-x', k]);
  const full = ['-np', String(np), ...(np > 2 ? ['--oversubscribe'] : []), ...exported, ...cmd];
  console.log(`\n$ mpirun ${full.join(' ')}`);
  const r = spawnSync('mpirun', full, { stdio: 'inherit', env: { ...env, ...extraEnv } });
  if (r.status !== 0) {
    console.error(`benchmark failed: mpirun exited with ${r.status ?? r.signal}`);
    process.exit(1);
  }
}

// The machine's speed drifts between runs, so native and JS runs alternate `repeat` times and
// each figure is the median over the repeats.
const repeat = Number(opt('--repeat', quick ? 1 : 3));
const runs = { native: [], js: [], jsOff: [] };
for (let i = 0; i < repeat; i++) {
  const nativeJson = join(resultsDir, `allreduce-native-${i}.json`);
  const jsJson = join(resultsDir, `allreduce-js-${i}.json`);
  const jsOffJson = join(resultsDir, `allreduce-js-no-negotiation-${i}.json`);
  mpirun({}, [join(buildDir, 'braid_allreduce_bench'), '--max-bytes', maxBytes, '--seconds-per-size', seconds, '--json', nativeJson]);
  mpirun({}, [process.execPath, join(here, 'allreduce-worker.mjs'), '--max-bytes', maxBytes, '--seconds-per-size', seconds, '--json', jsJson]);
  mpirun({ BRAID_NEGOTIATION: 'off' }, [process.execPath, join(here, 'allreduce-worker.mjs'), '--latency-only', '--json', jsOffJson]);
  runs.native.push(JSON.parse(readFileSync(nativeJson, 'utf8')));
  runs.js.push(JSON.parse(readFileSync(jsJson, 'utf8')));
  runs.jsOff.push(JSON.parse(readFileSync(jsOffJson, 'utf8')));
}
function merge(list) {
  const busFactor = np > 1 ? (2 * (np - 1)) / np : 0;
  const results = list[0].results.map((row, i) => {
    const timeUs = median(list.map((run) => run.results[i].timeUs));
    const algbw = row.bytes / (timeUs * 1e-6) / 1e9;
    return { ...row, timeUs, algbw, busbw: algbw * busFactor, wrong: Math.max(...list.map((run) => run.results[i].wrong)), repeats: list.length };
  });
  const latency = list[0].latency
    ? {
        bytes: 4096,
        mpiFromCUs: median(list.map((r) => r.latency.mpiFromCUs)),
        syncUs: median(list.map((r) => r.latency.syncUs)),
        asyncUs: median(list.map((r) => r.latency.asyncUs)),
      }
    : undefined;
  return { ...list[0], results, latency };
}
const native = merge(runs.native);
const js = merge(runs.js);
const jsOff = merge(runs.jsOff);
const find = (rows, algorithm, bytes) => rows.find((r) => r.algorithm === algorithm && r.bytes === bytes);

console.log(`\n# Summary, np=${np}, medians of ${repeat} run(s): JS 'auto' against MPI_Allreduce called from C in the same rounds of the same run`);
console.log(`#${'size(B)'.padStart(12)} ${'JS auto busbw'.padStart(14)} ${'MPI busbw'.padStart(10)} ${'ratio'.padStart(7)} ${'shared ratio'.padStart(13)} ${'sync ratio'.padStart(11)} ${'JS mpi busbw'.padStart(13)}   fastest native algorithm`);
const ratios = [];
const sharedRatios = [];
const syncRatios = [];
for (const row of js.results.filter((r) => r.algorithm === 'auto')) {
  const mpi = find(js.results, 'MPI_Allreduce(C)', row.bytes);
  const candidates = native.results.filter((r) => r.bytes === row.bytes);
  const fastest = candidates.reduce((a, b) => (b.timeUs < a.timeUs ? b : a));
  const ratio = row.busbw / mpi.busbw;
  const sync = find(js.results, 'auto-sync', row.bytes);
  const syncRatio = sync ? sync.busbw / mpi.busbw : NaN;
  const shared = find(js.results, 'auto-shared', row.bytes);
  const sharedRatio = shared ? shared.busbw / mpi.busbw : NaN;
  if (row.bytes >= 65536) {
    ratios.push({ bytes: row.bytes, ratio });
    sharedRatios.push({ bytes: row.bytes, ratio: sharedRatio });
    syncRatios.push({ bytes: row.bytes, ratio: syncRatio });
  }
  const viaEngine = find(js.results, 'mpi', row.bytes);
  console.log(` ${String(row.bytes).padStart(12)} ${row.busbw.toFixed(3).padStart(14)} ${mpi.busbw.toFixed(3).padStart(10)} ${ratio.toFixed(2).padStart(7)} ${sharedRatio.toFixed(2).padStart(13)} ${syncRatio.toFixed(2).padStart(11)} ${(viaEngine ? viaEngine.busbw.toFixed(3) : '-').padStart(13)}   ${fastest.algorithm}`);
}
const summary = {
  np,
  repeats: repeat,
  busbwRatioFrom64KiB: ratios,
  minBusbwRatioFrom64KiB: ratios.length ? Math.min(...ratios.map((r) => r.ratio)) : null,
  sharedBusbwRatioFrom64KiB: sharedRatios,
  minSharedBusbwRatioFrom64KiB: sharedRatios.length ? Math.min(...sharedRatios.map((r) => r.ratio)) : null,
  syncBusbwRatioFrom64KiB: syncRatios,
  minSyncBusbwRatioFrom64KiB: syncRatios.length ? Math.min(...syncRatios.map((r) => r.ratio)) : null,
  latency4KiB: {
    mpiAllreduceFromCUs: js.latency.mpiFromCUs,
    syncUs: js.latency.syncUs,
    asyncUs: js.latency.asyncUs,
    syncWithoutNegotiationUs: jsOff.latency.syncUs,
    asyncWithoutNegotiationUs: jsOff.latency.asyncUs,
    syncRatio: js.latency.syncUs / js.latency.mpiFromCUs,
    negotiationCostUs: js.latency.syncUs - jsOff.latency.syncUs,
  },
};
const l = summary.latency4KiB;
console.log(`\n# 4 KiB latency: MPI_Allreduce from C ${l.mpiAllreduceFromCUs.toFixed(2)} us; JS sync ${l.syncUs.toFixed(2)} us (${l.syncRatio.toFixed(2)}x), async ${l.asyncUs.toFixed(2)} us`);
console.log(`# negotiation: sync ${l.syncUs.toFixed(2)} us with, ${l.syncWithoutNegotiationUs.toFixed(2)} us without (${l.negotiationCostUs.toFixed(2)} us per op)`);
if (summary.minBusbwRatioFrom64KiB !== null) {
  console.log(`# JS auto busbw / MPI busbw from 64 KiB up: min ${summary.minBusbwRatioFrom64KiB.toFixed(2)} awaiting each call, ${summary.minSharedBusbwRatioFrom64KiB.toFixed(2)} awaiting over a SharedArrayBuffer, ${summary.minSyncBusbwRatioFrom64KiB.toFixed(2)} through allReduceSync`);
}
writeFileSync(join(resultsDir, 'allreduce.json'), JSON.stringify({ summary, native, js, jsWithoutNegotiation: jsOff }, null, 1));
console.log(`# figures: ${join(resultsDir, 'allreduce.json')}`);
