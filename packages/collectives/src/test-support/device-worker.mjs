// One rank of the DeviceBuffer tests: `mpirun -np N node device-worker.mjs device|stall <out-dir>`,
// with BRAID_DEVICE=host (host memory standing in for the GPU, the host algorithms) or on a GPU
// (NCCL). Every collective on DeviceBuffers against the exact answers of values.mjs, the refusals,
// and a digest of every result so the test can check that every rank got the same bits.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { init } from '@braid/collectives';

import { DTYPES, expected, fill, FLOAT_DTYPES, OPS, countWrong } from './values.mjs';

const outDir = process.argv[3];
const digest = (arr) => createHash('sha256').update(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength)).digest('hex').slice(0, 16);
const codeOf = async (fn) => {
  try {
    await fn();
    return 'OK';
  } catch (err) {
    return `${err.code}: ${err.message}`;
  }
};

// `stall`: one rank's NCCL never completes (BRAID_NCCL_EMULATION_STALL_RANK on the NCCL emulation);
// what every rank's DeviceBuffer op, the next one and a host op then do.
if (process.argv[2] === 'stall') {
  const comm = await init({ timeoutMs: 2000 });
  const d = comm.device.alloc('float32', 1000).upload(new Float32Array(1000).fill(1));
  const started = Date.now();
  const first = await codeOf(() => comm.allReduce(d));
  const seconds = (Date.now() - started) / 1000;
  const next = await codeOf(() => comm.allReduce(d));
  const host = await codeOf(async () => {
    const got = comm.allReduceSync(Float32Array.of(comm.rank + 1));
    if (got[0] !== (comm.size * (comm.size + 1)) / 2) throw new Error(`host all-reduce gave ${got[0]}`);
  });
  writeFileSync(join(outDir, `rank-${comm.rank}.json`), JSON.stringify({ rank: comm.rank, first, seconds, next, host }));
  await comm.close();
  process.exit(0);
}

const comm = await init();
const n = comm.size;
const device = comm.device;
const cases = [];
const lengths = [0, 1, n + 1, 1009, 65537];
let call = 0;
for (const dtype of DTYPES) {
  for (const op of OPS) {
    if (op === 'avg' && !FLOAT_DTYPES.has(dtype)) continue;
    for (const length of lengths) {
      const d = device.alloc(dtype, length).upload(fill(dtype, op, comm.rank, length));
      if (call++ % 2 === 0) comm.allReduceSync(d, { op });
      else if ((await comm.allReduce(d, { op })) !== d) throw new Error('allReduce must resolve to its DeviceBuffer');
      const got = d.download();
      cases.push({ what: `allReduce ${dtype} ${op} ${length}`, wrong: countWrong(got, expected(dtype, op, n, length)), digest: digest(got) });
      d.free();
    }
  }
  // Broadcast from the last rank, all-gather, reduce-scatter (sum).
  const length = 1009;
  const b = device.alloc(dtype, length).upload(fill(dtype, 'sum', comm.rank, length));
  await comm.broadcast(b, { root: n - 1 });
  const bGot = b.download();
  cases.push({ what: `broadcast ${dtype}`, wrong: countWrong(bGot, fill(dtype, 'sum', n - 1, length)), digest: digest(bGot) });
  const gathered = await comm.allGather(b);
  const gGot = gathered.download();
  const gWant = fill(dtype, 'sum', n - 1, length * n);
  for (let r = 0; r < n; r++) gWant.set(fill(dtype, 'sum', n - 1, length), r * length);
  cases.push({ what: `allGather ${dtype} (${gathered.length})`, wrong: countWrong(gGot, gWant) + (gathered.length === n * length ? 0 : 1), digest: digest(gGot) });
  gathered.free();
  b.free();
  const s = device.alloc(dtype, 12 * n).upload(fill(dtype, 'sum', comm.rank, 12 * n));
  const scattered = await comm.reduceScatter(s);
  const sGot = scattered.download();
  const sWant = expected(dtype, 'sum', n, 12 * n).subarray(12 * comm.rank, 12 * (comm.rank + 1));
  cases.push({ what: `reduceScatter ${dtype}`, wrong: countWrong(sGot, sWant), digest: 'per-rank' });
  s.free();
  scattered.free();
}

// Host arrays through NCCL, staged through pinned memory (all-reduce): on a GPU the exact sum, in
// several 4 MiB chunks and a short last one; without one, BACKEND_UNAVAILABLE on every rank and
// the communicator still usable.
const stagedLength = (9 << 20) / 4 + 3;
const staged = fill('float32', 'sum', comm.rank, stagedLength);
const stagedResult = await codeOf(() => comm.allReduce(staged, { algorithm: 'nccl' }));
const stagedWrong = stagedResult === 'OK' ? countWrong(staged, expected('float32', 'sum', n, stagedLength)) : -1;
const after = Float32Array.of(comm.rank);
await comm.allReduce(after);
const stagedCase = { result: stagedResult, wrong: stagedWrong, after: after[0] === (n * (n - 1)) / 2 };

// Refusals: all checked before anything is sent, so the ranks stay in step.
const refusals = {};
const f = device.alloc('float32', 8);
refusals.uploadType = await codeOf(() => f.upload(new Int32Array(8)));
refusals.uploadPastEnd = await codeOf(() => f.upload(new Float32Array(4), 6));
refusals.algorithm = await codeOf(() => comm.allReduce(f, { algorithm: 'ring' }));
refusals.dtype = await codeOf(() => comm.allReduce(f, { dtype: 'float64' }));
refusals.allocDtype = await codeOf(() => device.alloc('complex64', 4));
refusals.allocLength = await codeOf(() => device.alloc('float32', -1));
f.free();
f.free(); // a second free does nothing
refusals.afterFree = await codeOf(() => comm.allReduce(f));
refusals.downloadAfterFree = await codeOf(() => f.download());
// A buffer an op in flight uses cannot be freed, downloaded or uploaded until the op is awaited.
const big = device.alloc('float32', 1 << 20).upload(new Float32Array(1 << 20).fill(1));
const pending = comm.allReduce(big);
refusals.freeInFlight = await codeOf(() => big.free());
refusals.downloadInFlight = await codeOf(() => big.download());
await pending;
const bigGot = big.download();
refusals.afterInFlight = bigGot.every((v) => v === n) ? 'OK' : 'wrong';
big.free();

writeFileSync(
  join(outDir, `rank-${comm.rank}.json`),
  JSON.stringify({ rank: comm.rank, localRank: comm.localRank, kind: device.kind, index: device.index, cases, refusals, staged: stagedCase }),
);
await comm.close();
