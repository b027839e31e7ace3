#!/usr/bin/env node
// The soak: many mixed collectives (random sizes, dtypes, algorithms, sync and awaited, several
// in flight) on N ranks, checking every result, and what the processes hold as they go: resident
// memory, file descriptors, threads and /dev/shm regions. Fails (exit 1) when memory grows 5 MiB
// or more after the first 10,000 ops (half of a shorter run), or when descriptors, threads or regions grow at all.
//   node benchmarks/soak.mjs [--np 3] [--ops 100000] [--json out.json] [--v8-default]
// Every rank draws the same op sequence from one seed; each rank's values differ.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { commandLine } from './common.mjs';

const { args, opt } = commandLine();
const ops = Number(opt('--ops', 100_000));
const np = Number(opt('--np', 3));
const MiB = 2 ** 20;

if (!args.includes('--worker')) {
  const out = opt('--json', undefined);
  // V8 grows its young generation (semi-spaces) under a high allocation rate, once, by about
  // 10 MiB somewhere in the first tens of thousands of ops here: that is the JavaScript heap's
  // sizing, not memory Braid holds (measured: flat with a fixed semi-space). The soak fixes it at
  // 1 MiB so that what it measures is ours; --v8-default measures with V8's defaults.
  const semiSpace = args.includes('--v8-default') ? [] : ['--max-semi-space-size=1'];
  const r = spawnSync(
    'mpirun',
    ['-np', String(np), '--oversubscribe', process.execPath, '--expose-gc', ...semiSpace, fileURLToPath(import.meta.url), '--worker', '--ops', String(ops), ...(out ? ['--json', out] : [])],
    { stdio: 'inherit', env: { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' } },
  );
  process.exit(r.status ?? 1);
}

const { init } = await import('@braid/collectives');
const { seededRandom } = await import('@braid/test-support/mpirun');
const comm = await init();
const { rank, size } = comm;

function sample() {
  globalThis.gc?.();
  const status = readFileSync('/proc/self/status', 'utf8');
  const memory = process.memoryUsage();
  const kib = (field) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)[1]) * 1024;
  return {
    rss: memory.rss,
    anon: kib('RssAnon'),
    shmem: kib('RssShmem'),
    heapTotal: memory.heapTotal,
    external: memory.external,
    fds: readdirSync('/proc/self/fd').length,
    threads: Number(/Threads:\s+(\d+)/.exec(status)[1]),
    // Regions this rank created ("braid-<pid>-<n>"): other jobs on the machine come and go.
    shm: readdirSync('/dev/shm').filter((f) => f.startsWith(`braid-${process.pid}-`)).length,
  };
}

// One seeded stream for the op sequence, the same on every rank.
const random = seededRandom(20261130);
const pick = (list) => list[Math.floor(random() * list.length)];

// Integer-valued data, so every dtype and algorithm has one exact answer.
const TYPES = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array, uint8: Uint8Array, int8: Int8Array,
};
const ALGORITHMS = ['auto', 'ring', 'tree', 'recursive-doubling', 'mpi', 'shm'];
const value = (dtype, x) => (dtype === 'int64' ? BigInt(x) : x);

let wrong = 0;
const check = (what, got, want) => {
  if (got !== want && wrong++ < 5) console.error(`rank ${rank}: ${what}: got ${got}, expected ${want}`);
};

function nextOp() {
  const kind = pick(['allReduce', 'allReduce', 'allReduce', 'broadcast', 'allGather', 'reduceScatter', 'barrier']);
  const dtype = pick(Object.keys(TYPES));
  // Mostly small, now and then up to 256 KiB: a training step's mix.
  const bytes = random() < 0.9 ? Math.floor(random() * 4096) : Math.floor(random() * 256 * 1024);
  const length = Math.max(0, Math.floor(bytes / TYPES[dtype].BYTES_PER_ELEMENT / size) * size);
  const sync = random() < 0.3 && kind !== 'barrier';
  return { kind, dtype, length, sync, algorithm: pick(ALGORITHMS), root: Math.floor(random() * size), op: pick(['sum', 'max']) };
}

function run(spec) {
  const { kind, dtype, length, sync, algorithm, root, op } = spec;
  const Type = TYPES[dtype];
  const buf = new Type(length).fill(value(dtype, rank + 1));
  // uint8 / int8 sums stay small enough: at most 1 + 2 + ... + size.
  const sum = (size * (size + 1)) / 2;
  if (kind === 'allReduce') {
    const options = { op, algorithm };
    const done = () => length && (check(`allReduce ${dtype} ${algorithm}`, buf[length - 1], value(dtype, op === 'sum' ? sum : size)), 0);
    if (sync) return (comm.allReduceSync(buf, options), done());
    return comm.allReduce(buf, options).then(done);
  }
  if (kind === 'broadcast') {
    const done = () => length && check(`broadcast ${dtype}`, buf[0], value(dtype, root + 1));
    if (sync) return (comm.broadcastSync(buf, { root }), done());
    return comm.broadcast(buf, { root }).then(done);
  }
  if (kind === 'allGather') {
    const done = (all) => length && check(`allGather ${dtype}`, all[all.length - 1], value(dtype, size));
    if (sync) return done(comm.allGatherSync(buf));
    return comm.allGather(buf).then(done);
  }
  if (kind === 'reduceScatter') return comm.reduceScatter(buf, { op: 'sum' }).then((mine) => mine.length && check(`reduceScatter ${dtype}`, mine[0], value(dtype, sum)));
  return comm.barrier();
}

// The measure: growth after the first 10,000 ops (half the ops in a shorter run).
const warmup = Math.min(10_000, Math.floor(ops / 2));
const samples = [];
const started = performance.now();
let inFlight = [];
for (let i = 0; i < ops; i++) {
  if (i === warmup) {
    await Promise.all(inFlight);
    inFlight = [];
    samples.push({ op: i, ...sample() });
  }
  const pending = run(nextOp());
  if (pending && typeof pending.then === 'function') inFlight.push(pending);
  // Up to four awaited ops in flight, as a step's buckets are.
  if (inFlight.length >= 1 + Math.floor(random() * 4)) {
    await Promise.all(inFlight);
    inFlight = [];
  }
  if (i > warmup && i % Math.floor(ops / 10) === 0) {
    await Promise.all(inFlight);
    inFlight = [];
    samples.push({ op: i, ...sample() });
  }
}
await Promise.all(inFlight);
samples.push({ op: ops, ...sample() });
const seconds = (performance.now() - started) / 1000;

const first = samples[0];
const last = samples[samples.length - 1];
const growth = {
  rssMiB: (last.rss - first.rss) / MiB,
  maxRssMiB: (Math.max(...samples.map((s) => s.rss)) - first.rss) / MiB,
  fds: last.fds - first.fds,
  threads: last.threads - first.threads,
  shm: last.shm - first.shm,
};
const all = await comm.allGather(new Float64Array([growth.rssMiB, growth.maxRssMiB, growth.fds, growth.threads, growth.shm, wrong]));
if (rank === 0) {
  console.log(`soak: ${ops} ops on ${size} ranks in ${seconds.toFixed(1)} s (${Math.round(ops / seconds)} ops/s)`);
  console.log(`rank  rss after op ${first.op} (MiB)  growth to end (MiB)  max growth (MiB)  fds  threads  /dev/shm  wrong`);
  for (let r = 0; r < size; r++) {
    const [rss, maxRss, fds, threads, shm, bad] = all.subarray(r * 6, r * 6 + 6);
    console.log(`${String(r).padStart(4)}  ${(r === 0 ? first.rss / MiB : NaN).toFixed(1).padStart(24)}  ${rss.toFixed(2).padStart(19)}  ${maxRss.toFixed(2).padStart(16)}  ${String(fds).padStart(3)}  ${String(threads).padStart(7)}  ${String(shm).padStart(8)}  ${String(bad).padStart(5)}`);
  }
  const out = opt('--json', undefined);
  if (out) writeFileSync(out, JSON.stringify({ ops, size, seconds, samples, perRank: Array.from({ length: size }, (_, r) => Array.from(all.subarray(r * 6, r * 6 + 6))) }, null, 1));
}
let failed = false;
for (let r = 0; r < size; r++) {
  const [rss, , fds, threads, shm, bad] = all.subarray(r * 6, r * 6 + 6);
  if (rss >= 5 || fds > 0 || threads > 0 || shm > 0 || bad > 0) failed = true;
}
if (rank === 0) {
  if (failed) console.log('soak: FAILED (memory grew 5 MiB or more, descriptors, threads or regions grew, or a result was wrong)');
  console.log(`soak np=${size}: ${failed ? 0 : 1} passed, ${failed ? 1 : 0} failed, 0 skipped`);
}
await comm.close();
process.exit(failed ? 1 : 0);
