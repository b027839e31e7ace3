// One rank of the JS all-reduce benchmark (started by allreduce.mjs under mpirun): every
// algorithm through the public API, rounds interleaved, median of rounds, nccl-tests columns.
//   node allreduce-worker.mjs --json out.json [--min-bytes 4] [--max-bytes 268435456] [--latency-only] [--spread-rounds]
import { writeFileSync } from 'node:fs';

import { init } from '@braid/collectives';
import { encodeOp, loadAddon } from '@braid/native';

import { commandLine, median } from './common.mjs';

const { args, opt } = commandLine();
const minBytes = Number(opt('--min-bytes', 4));
const maxBytes = Number(opt('--max-bytes', 256 * 2 ** 20));
const secondsPerSize = Number(opt('--seconds-per-size', 0.2));
const rounds = Number(opt('--rounds', 5));
const latencyOnly = args.includes('--latency-only');
// --spread-rounds: each round goes over every size in turn (see below); the default measures one
// size's rounds back to back.
const spreadRounds = args.includes('--spread-rounds');
// 'auto-sync' is 'auto' through allReduceSync (what a tfjs optimizer step inside model.fit uses);
// 'auto-shared' awaits 'auto' on an array over a SharedArrayBuffer, which the engine works on in
// place (an ordinary ArrayBuffer can be detached while an awaited op runs, so above 256 KiB the
// engine works on a copy of it: two memcpys per call);
// 'MPI_Allreduce(C)' is MPI_Allreduce called back to back from C on the engine thread, the
// yardstick, measured in the same rounds as the rest; every other row awaits allReduce once per
// call.
const MPI_C = 'MPI_Allreduce(C)';
const algorithms = latencyOnly ? [] : (opt('--algorithms', `${MPI_C},auto,auto-shared,auto-sync,shm,ring,tree,recursive-doubling,mpi`)).split(',');
const addon = loadAddon();
function mpiFromC(buf, iterations) {
  const us = addon.submit(encodeOp({ comm: 0, kind: 7, dtype: 0, op: 0, iterations }), undefined, buf, undefined, true);
  return maxOver(us / iterations / 1e6);
}
// '<algorithm>-sync': that algorithm through allReduceSync (what the cost model predicts: no
// Promise, no copies).
const callFor = (algorithm, buf) =>
  algorithm === 'auto-sync' ? () => comm.allReduceSync(buf)
    : algorithm.endsWith('-sync') ? () => comm.allReduceSync(buf, { algorithm: algorithm.slice(0, -5) })
    : algorithm === MPI_C ? () => mpiFromC(buf, 1)
    : algorithm === 'auto-shared' ? () => comm.allReduce(buf)
    : () => comm.allReduce(buf, { algorithm });
const arrayFor = (algorithm, count) => (algorithm === 'auto-shared' ? new Float32Array(new SharedArrayBuffer(count * 4)) : new Float32Array(count));

const comm = await init();
const n = comm.size;
const busFactor = n > 1 ? (2 * (n - 1)) / n : 0;
const now = () => Number(process.hrtime.bigint()) / 1e9;
const maxOver = (x) => comm.allReduceSync(new Float64Array([x]), { op: 'max', algorithm: 'mpi' })[0];

async function timeLoop(iters, fn) {
  // Line the ranks up with Braid's own barrier: after an MPI op the next op waits for MPI's
  // traffic to settle on the engine thread (an awaited 32-64 MiB plain-array loop of 3 calls lost
  // a third of its speed to that one hand-off and its copies).
  await comm.barrier();
  const t0 = now();
  for (let i = 0; i < iters; i++) await fn();
  return maxOver((now() - t0) / iters);
}

// V8 compiles the call path after some thousands of calls; until then an awaited call costs several
// times more (30 us instead of 7 at 16 KiB). Warm both paths first, as any training loop is.
{
  const warm = new Float32Array(256);
  for (let i = 0; i < 3000; i++) await comm.allReduce(warm);
  for (let i = 0; i < 3000; i++) comm.allReduceSync(warm);
}

const rows = [];
if (comm.rank === 0) {
  console.log(`# braid JS all-reduce benchmark: ${n} ranks, float32 sum, through @braid/collectives (await per call)`);
  console.log(`#${'algorithm'.padStart(19)} ${'size(B)'.padStart(12)} ${'count'.padStart(10)} ${'type'.padStart(6)} ${'redop'.padStart(6)} ${'time(us)'.padStart(10)} ${'algbw(GB/s)'.padStart(11)} ${'busbw(GB/s)'.padStart(11)} ${'#wrong'.padStart(7)}`);
}
// One size's buffers and each algorithm's iterations per round (from three calls' time).
async function prepare(bytes) {
  const count = bytes / 4;
  const plain = new Float32Array(count);
  const shared = arrayFor('auto-shared', count);
  const buffers = algorithms.map((a) => (a === 'auto-shared' ? shared : plain));
  const iters = [];
  const estimates = [];
  for (const [a, algorithm] of algorithms.entries()) {
    const t0 = now();
    const call = callFor(algorithm, buffers[a]);
    for (let i = 0; i < 3; i++) await call();
    const estimate = maxOver((now() - t0) / 3);
    estimates.push(estimate);
    iters.push(Math.max(3, Math.min(100000, Math.floor(secondsPerSize / rounds / Math.max(estimate, 1e-7)))));
  }
  return { bytes, count, buffers, iters, estimates, times: algorithms.map(() => []) };
}

async function timeRound(size) {
  for (let a = 0; a < algorithms.length; a++) {
    const buf = size.buffers[a];
    // Back from another size's buffers: one call untimed, where a call is short enough for the
    // caches to matter.
    if (spreadRounds && size.estimates[a] < 0.01) await callFor(algorithms[a], buf)();
    size.times[a].push(algorithms[a] === MPI_C ? mpiFromC(buf, size.iters[a]) : await timeLoop(size.iters[a], callFor(algorithms[a], buf)));
  }
}

async function report(size) {
  const { bytes, count, times, iters } = size;
  for (let a = 0; a < algorithms.length; a++) {
    const perCall = median(times[a]);
    const check = arrayFor(algorithms[a], count);
    for (let i = 0; i < count; i++) check[i] = comm.rank + (i % 7);
    await callFor(algorithms[a], check)();
    let wrong = 0;
    for (let i = 0; i < count; i++) if (check[i] !== (n * (n - 1)) / 2 + n * (i % 7)) wrong++;
    wrong = comm.allReduceSync(new Float64Array([wrong]), { algorithm: 'mpi' })[0];
    const algbw = bytes / perCall / 1e9;
    const row = { algorithm: algorithms[a], bytes, count, type: 'float32', redop: 'sum', timeUs: perCall * 1e6, algbw, busbw: algbw * busFactor, wrong, iterations: iters[a], rounds };
    rows.push(row);
    if (comm.rank === 0)
      console.log(` ${row.algorithm.padStart(19)} ${String(bytes).padStart(12)} ${String(count).padStart(10)} ${'float'.padStart(6)} ${'sum'.padStart(6)} ${row.timeUs.toFixed(2).padStart(10)} ${algbw.toFixed(3).padStart(11)} ${row.busbw.toFixed(3).padStart(11)} ${String(wrong).padStart(7)}`);
  }
}

const sizesToRun = [];
for (let bytes = minBytes; bytes <= maxBytes && algorithms.length; bytes *= 2) sizesToRun.push(bytes);
if (spreadRounds) {
  // Every size's buffers at once, and each round goes over all sizes: a size's rounds lie seconds
  // apart, so a slow stretch of the machine (on the test bed an exchange runs at half speed for
  // 0.2-2 s at a time) lands in one or two of them instead of all.
  const sizes = [];
  for (const bytes of sizesToRun) sizes.push(await prepare(bytes));
  for (let r = 0; r < rounds; r++) for (const size of sizes) await timeRound(size);
  for (const size of sizes) await report(size);
} else {
  for (const bytes of sizesToRun) {
    const size = await prepare(bytes);
    for (let r = 0; r < rounds; r++) await timeRound(size);
    await report(size);
  }
}

// 4 KiB latency through the synchronous path (what a tfjs optimizer step inside model.fit uses)
// and through the Promise path.
const small = new Float32Array(1024);
for (let i = 0; i < 2000; i++) comm.allReduceSync(small);
const syncTimes = [];
const asyncTimes = [];
const mpiTimes = [];
for (let r = 0; r < rounds; r++) {
  mpiTimes.push(mpiFromC(small, 5000));
  syncTimes.push(await timeLoop(5000, () => comm.allReduceSync(small)));
  asyncTimes.push(await timeLoop(5000, () => comm.allReduce(small)));
}
const latency = { bytes: 4096, mpiFromCUs: median(mpiTimes) * 1e6, syncUs: median(syncTimes) * 1e6, asyncUs: median(asyncTimes) * 1e6 };
if (comm.rank === 0) {
  console.log(`# 4 KiB all-reduce latency (auto, negotiation ${process.env.BRAID_NEGOTIATION === 'off' ? 'off' : 'on'}): sync ${latency.syncUs.toFixed(2)} us, async ${latency.asyncUs.toFixed(2)} us; MPI_Allreduce from C ${latency.mpiFromCUs.toFixed(2)} us`);
  const out = opt('--json');
  if (out) writeFileSync(out, JSON.stringify({ ranks: n, negotiation: process.env.BRAID_NEGOTIATION !== 'off', results: rows, latency }, null, 1));
}
await comm.close();
