// One rank of a multi-process test: `mpirun -np N node worker.mjs <scenario> <out-dir>`. It runs
// the scenario and writes <out-dir>/rank-<r>.json for the test to check; exactness is checked
// here against values.mjs, the test asserts on what every rank reported.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { init } from '@braid/collectives';

import { DTYPES, expected, fill, FLOAT_DTYPES, OPS, arrayFor, countWrong, sameBytes } from './values.mjs';

const scenario = process.argv[2];
const outDir = process.argv[3];
const started = Date.now();

function digest(arr) {
  return createHash('sha256').update(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength)).digest('hex').slice(0, 16);
}
// Each rank writes its own file: mpirun interleaves long stdout lines of different ranks.
function report(result) {
  writeFileSync(join(outDir, `rank-${result.rank}.json`), JSON.stringify(result));
}
async function capture(fn) {
  const t0 = Date.now();
  try {
    await fn();
    return { code: 'OK', ms: Date.now() - t0 };
  } catch (err) {
    return { code: err.code ?? 'NONE', name: err.name, message: err.message, ms: Date.now() - t0, stack: err.stack };
  }
}

async function matrix(comm) {
  const n = comm.size;
  const answers = new Map();
  const answer = (dtype, op, length) => {
    const key = `${dtype} ${op} ${length}`;
    if (!answers.has(key)) answers.set(key, expected(dtype, op, n, length));
    return answers.get(key);
  };
  const sizes = [0, 1, Math.max(1, n - 1), n + 1, 13, 1009, 65537];
  // Shared memory is there when it is on and every rank runs on one host.
  const shmOff = process.env.BRAID_SHM === 'off' || comm.localSize !== comm.size;
  // The hierarchy is there when the ranks span hosts with several (the same number) on each.
  const hierarchical = process.env.BRAID_SHM !== 'off' && comm.localSize > 1 && comm.localSize < comm.size;
  const algorithms = ['auto', ...(shmOff ? [] : ['shm']), ...(hierarchical ? ['hierarchical'] : []), 'ring', 'tree', 'recursive-doubling', 'direct', 'mpi'];
  const cases = [];
  if (!hierarchical && n > 1) {
    for (const [what, call] of [
      ['allReduce', () => comm.allReduce(new Float32Array(4), { algorithm: 'hierarchical' })],
      ['broadcast', () => comm.broadcast(new Float32Array(4), { algorithm: 'hierarchical' })],
      ['allGather', () => comm.allGather(new Float32Array(4), { algorithm: 'hierarchical' })],
    ]) {
      const refused = await capture(call);
      cases.push({ what: `hierarchical ${what} refused: ${refused.code}`, wrong: refused.code === 'BACKEND_UNAVAILABLE' ? 0 : 1, digest: refused.code });
    }
  }
  if (shmOff && n > 1) {
    // Asking for 'shm' without it fails the same way on every rank, and the ranks stay in step.
    const refused = await capture(() => comm.allReduce(new Float32Array(4), { algorithm: 'shm' }));
    cases.push({ what: `shm refused: ${refused.code}`, wrong: refused.code === 'BACKEND_UNAVAILABLE' ? 0 : 1, digest: refused.code });
  }
  let call = 0;
  for (const algorithm of algorithms)
    for (const dtype of DTYPES)
      for (const op of OPS) {
        if (op === 'avg' && !FLOAT_DTYPES.has(dtype)) continue;
        for (const length of sizes) {
          const buf = fill(dtype, op, comm.rank, length);
          const options = { op, algorithm, ...(dtype.includes('16') ? { dtype } : {}) };
          if (call++ % 2 === 0) comm.allReduceSync(buf, options);
          else if ((await comm.allReduce(buf, options)) !== buf) throw new Error('allReduce must resolve to its buffer');
          cases.push({ what: `allReduce ${algorithm} ${dtype} ${op} ${length}`, wrong: countWrong(buf, answer(dtype, op, length)), digest: digest(buf) });
        }
      }
  // Several MiB through every algorithm.
  const big = (1 << 20) + 5; // 4 MiB of float32, 8 MiB of float64
  for (const algorithm of algorithms)
    for (const [dtype, op] of [['float32', 'sum'], ['float16', 'avg'], ['int32', 'max'], ['float64', 'prod']]) {
      const buf = fill(dtype, op, comm.rank, big);
      await comm.allReduce(buf, { op, algorithm, ...(dtype === 'float16' ? { dtype } : {}) });
      cases.push({ what: `allReduce ${algorithm} ${dtype} ${op} ${big}`, wrong: countWrong(buf, answer(dtype, op, big)), digest: digest(buf) });
    }
  // Random floats: identical bits on every rank for every algorithm, and the sum within float32
  // rounding of the exact one (every rank regenerates the others' values from their seeds).
  const randomFloats = (r) => {
    let seed = 12345 + r;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    return Float32Array.from({ length: 100003 }, rand);
  };
  const exactSum = new Float64Array(100003);
  for (let r = 0; r < n; r++) randomFloats(r).forEach((v, i) => (exactSum[i] += v));
  for (const algorithm of algorithms) {
    const buf = randomFloats(comm.rank);
    await comm.allReduce(buf, { algorithm });
    // n - 1 float32 additions of values in [-1, 1]: each rounds by at most 2^-24 of a sum <= n.
    const tolerance = n * n * 2 ** -24;
    let wrong = 0;
    for (let i = 0; i < buf.length; i++) if (!(Math.abs(buf[i] - exactSum[i]) <= tolerance)) wrong++;
    cases.push({ what: `random float32 ${algorithm}`, wrong, digest: digest(buf) });
  }
  // Many ops in flight at once (a training step's buckets): they run in submission order and
  // each resolves to its own buffer.
  {
    const bufs = Array.from({ length: 8 }, (_, k) => fill('float32', 'sum', comm.rank, 1000 + k * 4099));
    const done = await Promise.all(bufs.map((b, k) => comm.allReduce(b, { name: `bucket${k}`, algorithm: k % 2 ? 'ring' : 'auto' })));
    bufs.forEach((b, k) => {
      cases.push({ what: `in flight #${k}`, wrong: (done[k] === b ? 0 : 1) + countWrong(b, answer('float32', 'sum', b.length)), digest: digest(b) });
    });
  }
  // Broadcast from every root, every dtype, awkward sizes.
  const halfOpts = (dtype) => (dtype === 'float16' || dtype === 'bfloat16' ? { dtype } : {});
  for (let root = 0; root < n; root++)
    for (const algorithm of ['auto', 'tree', 'ring', ...(hierarchical ? ['hierarchical'] : [])])
      for (const dtype of DTYPES)
        for (const length of [0, 1, n + 1, 1009, 65537]) {
          const want = fill(dtype, 'sum', root, length);
          const buf = comm.rank === root ? want.slice() : fill(dtype, 'max', comm.rank + 1, length);
          const opts = { root, algorithm, ...halfOpts(dtype) };
          if ((root + length) % 2) comm.broadcastSync(buf, opts);
          else await comm.broadcast(buf, opts);
          cases.push({ what: `broadcast root ${root} ${algorithm} ${dtype} ${length}`, wrong: countWrong(buf, want), digest: digest(buf) });
        }
  // All-gather: rank order, every dtype.
  for (const algorithm of ['auto', 'ring', ...(hierarchical ? ['hierarchical'] : [])])
  for (const dtype of DTYPES)
    for (const length of [0, 1, Math.max(1, n - 1), n + 1, 13, 1009, 300001]) {
      const mine = fill(dtype, 'sum', comm.rank, length);
      // Alternate the awaited and the blocking form: both must give the same arrays.
      const opts = { algorithm, ...halfOpts(dtype) };
      const all = length % 2 === 0 ? await comm.allGather(mine, opts) : comm.allGatherSync(mine, opts);
      const want = arrayFor(dtype, length * n);
      for (let r = 0; r < n; r++) want.set(fill(dtype, 'sum', r, length), r * length);
      const okType = all.constructor === mine.constructor && all.length === length * n;
      cases.push({ what: `allGather ${algorithm} ${dtype} ${length}`, wrong: okType ? countWrong(all, want) : -1, digest: digest(all) });
    }
  // Reduce-scatter: this rank's block of the full reduction, every dtype and op; the input is left alone.
  for (const dtype of DTYPES)
    for (const op of OPS) {
      if (op === 'avg' && !FLOAT_DTYPES.has(dtype)) continue;
      for (const block of [0, 1, n + 1, 13, 40000]) {
        const length = block * n;
        const buf = fill(dtype, op, comm.rank, length);
        const before = buf.slice();
        const mine = await comm.reduceScatter(buf, { op, ...halfOpts(dtype) });
        const want = answer(dtype, op, length).slice(comm.rank * block, (comm.rank + 1) * block);
        cases.push({
          what: `reduceScatter ${dtype} ${op} block ${block}`,
          wrong: (mine.length === block ? countWrong(mine, want) : -1) + (sameBytes(buf, before) ? 0 : 1000000),
          digest: 'per-rank',
        });
      }
    }
  await comm.barrier();
  // Split: even and odd ranks, ordered by descending rank; odd ranks pass a negative color on the second split.
  const sub = await comm.split(comm.rank % 2, -comm.rank);
  const members = [];
  for (let r = n - 1; r >= 0; r--) if (r % 2 === comm.rank % 2) members.push(r);
  const subSum = new Int32Array([comm.rank, 1]);
  await sub.allReduce(subSum);
  const split = {
    rank: sub.rank,
    size: sub.size,
    wantRank: members.indexOf(comm.rank),
    wantSize: members.length,
    sum: Array.from(subSum),
    wantSum: [members.reduce((a, b) => a + b, 0), members.length],
  };
  const evens = await comm.split(comm.rank % 2 === 0 ? 0 : -1);
  split.evensNull = evens === null;
  if (evens) {
    const b = new Float64Array([1]);
    await evens.allReduce(b);
    split.evensSum = b[0];
    await evens.close();
  }
  await sub.close();
  split.closedRejects = (await capture(() => sub.allReduce(new Float32Array(1)))).code;
  return { cases, split };
}

async function mismatch(comm) {
  const odd = comm.rank === comm.size - 1;  // the last rank disagrees
  const kinds = {
    length: () => comm.allReduce(new Float32Array(odd ? 5 : 4)),
    dtype: () => comm.allReduce(odd ? new Float64Array(4) : new Float32Array(4)),
    op: () => comm.allReduce(new Float32Array(4), { op: odd ? 'max' : 'sum' }),
    algorithm: () => comm.allReduce(new Float32Array(4), { algorithm: odd ? 'ring' : 'tree' }),
    root: () => comm.broadcast(new Float32Array(4), { root: odd ? 1 : 0 }),
    name: () => comm.allReduce(new Float32Array(4), { name: odd ? 'layer2/bias' : 'layer1/kernel' }),
    operation: () => (odd ? comm.broadcast(new Float32Array(4)) : comm.allReduce(new Float32Array(4))),
    sync: async () => comm.allReduceSync(new Int32Array(odd ? 2 : 3)),
    // Over TCP a small 'auto' all-reduce sends its buffer with its descriptor (the direct
    // all-reduce); a large one does not, and a direct one of another length sends other bytes:
    // the ranks read off what the others sent and stay in step.
    carried: () => comm.allReduce(new Float32Array(odd ? 1 << 18 : 4)),
    directLength: () => comm.allReduce(new Float32Array(odd ? 6 : 4), { algorithm: 'direct' }),
  };
  const results = {};
  for (const [kind, fn] of Object.entries(kinds)) {
    results[kind] = await capture(fn);
    delete results[kind].stack;
    // The communicator is still in step afterwards.
    const check = new Int32Array([1]);
    await comm.allReduce(check);
    results[kind].after = check[0];
  }
  return results;
}

async function timeout(comm, sync = false) {
  // The last rank skips one call; the others must get TIMEOUT naming it, then ABORTED. A
  // synchronous call waits on the JS thread itself (Engine::runInline), an awaited one is handed
  // to the engine thread when the peer does not come.
  const skipper = comm.rank === comm.size - 1;
  await comm.barrier();
  if (skipper) {
    await new Promise((r) => setTimeout(r, 4000));
    return { skipped: true };
  }
  const grads = new Float32Array(8);
  const first = await capture(async () => (sync ? comm.allReduceSync(grads, { name: 'grads' }) : comm.allReduce(grads, { name: 'grads' })));
  const second = await capture(() => comm.allReduce(new Float32Array(8)));
  delete first.stack;
  delete second.stack;
  return { first, second };
}

async function timeline(comm) {
  const buf = new Float32Array(1 << 20);
  for (let i = 0; i < 3; i++) await comm.allReduce(buf, { algorithm: 'ring', name: `bucket${i}` });
  comm.allReduceSync(new Float32Array(16));
  await comm.broadcast(new Float32Array(10));
  await comm.barrier();
  return {};
}

// Small shared-memory ops run on the JS thread (Engine::runInline): synchronous ones always once
// no MPI traffic is pending, awaited ones when the peers arrive within the budget, else handed to
// the engine thread mid-barrier. Interleaved here with ops that go through MPI and with ops in
// flight, with a late rank each round so that the others hand over; every result is exact.
async function inlineOps(comm) {
  const n = comm.size;
  const r = comm.rank;
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const triangle = (n * (n - 1)) / 2;
  const wrong = [];
  const digests = [];
  const check = (what, arr, expectAt) => {
    for (let i = 0; i < arr.length; i++) {
      if (arr[i] !== expectAt(i)) {
        wrong.push(`${what}[${i}] = ${arr[i]}, expected ${expectAt(i)}`);
        break;
      }
    }
    digests.push(digest(arr));
  };
  for (let round = 0; round < 24; round++) {
    const a = new Float32Array(1000 + round).map((_, i) => r + (i % 5));
    comm.allReduceSync(a);
    check(`sync ${round}`, a, (i) => triangle + n * (i % 5));
    const b = new Int32Array(17 + round).map((_, i) => r * i);
    if (round % n === r) await sleep(3);  // late: the others hand their try over to the engine
    const pb = comm.allReduce(b, { op: 'max' });
    const big = new Float64Array(70_000).map((_, i) => r + i);
    const pbig = comm.allReduce(big, { algorithm: 'ring' });
    const c = new Float32Array(64).fill(r + 1);
    comm.allReduceSync(c, { op: 'min' });  // behind the ring in the queue: the engine runs it
    const [gotB, gotBig] = await Promise.all([pb, pbig]);
    check(`async ${round}`, gotB, (i) => (n - 1) * i);
    check(`ring ${round}`, gotBig, (i) => triangle + n * i);
    check(`queued sync ${round}`, c, () => 1);
    const d = new Uint16Array(300).map((_, i) => (i % 3) * 0x3c00);  // float16 0 or 1
    const pd = comm.allReduce(d, { dtype: 'float16', op: 'max' });
    await comm.barrier();
    check(`half ${round}`, await pd, (i) => (i % 3) * 0x3c00);
  }
  return { wrong, digest: digest(new TextEncoder().encode(digests.join(','))) };
}

// Awaited all-reduces of 2 MiB on ordinary arrays over TCP: the first goes to the engine thread
// (with copies); once ops that size have been quick, they run on the caller's thread; a late
// rank makes the others hand over mid-agreement. Every result exact.
async function largeAwaited(comm) {
  const n = comm.size;
  const r = comm.rank;
  const wrong = [];
  const digests = [];
  const triangle = (n * (n - 1)) / 2;
  for (let round = 0; round < 8; round++) {
    const a = new Float32Array(512 * 1024).map((_, i) => r + (i % 7) + round);
    await comm.barrier();  // arrive together (building the array takes each rank its own time)
    if (round === 5 && r === n - 1) await new Promise((done) => setTimeout(done, 30));
    await comm.allReduce(a);
    for (let i = 0; i < a.length; i++) {
      if (a[i] !== triangle + n * ((i % 7) + round)) {
        wrong.push(`round ${round} [${i}] = ${a[i]}`);
        break;
      }
    }
    digests.push(digest(a));
  }
  return { wrong, digest: digest(new TextEncoder().encode(digests.join(','))) };
}

// A communicator of one (the world at np=1, or a split of one rank) sends nothing: its ops run on
// the JS thread, but for 'mpi' and awaited ones over a SharedArrayBuffer above 256 KiB (which go
// to the engine thread, as on any communicator). Every result is the input, exactly.
async function alone(comm) {
  const one = comm.size === 1 ? comm : await comm.split(comm.rank);
  const wrong = [];
  const same = (what, got, want) => {
    if (got.length !== want.length || got.some((v, i) => !Object.is(v, want[i]))) wrong.push(`${what}: ${got.slice(0, 4)} for ${want.slice(0, 4)}`);
  };
  for (let round = 0; round < 4; round++) {
    // At np>1 an op of the world through shared memory: no MPI traffic is left pending after it.
    if (comm.size > 1) await comm.allReduce(new Float32Array(8));
    const values = new Float32Array(1000).map((_, i) => i / 7 + round);
    const a = values.slice();
    one.allReduceSync(a, { op: 'avg', name: `sync avg ${round}` });
    same('sync avg', a, values);
    const big = new Float64Array(100_000).map((_, i) => i * 1.5 - round);
    const bigWant = big.slice();
    await one.allReduce(big, { name: `awaited 800 KB ${round}` });
    same('awaited 800 KB', big, bigWant);
    const shared = new Int32Array(new SharedArrayBuffer(4096 * 4)).map((_, i) => i - 2000 + round);
    const sharedWant = shared.slice();
    await one.allReduce(shared, { op: 'max', name: `shared 16 KiB ${round}` });
    same('shared 16 KiB', shared, sharedWant);
    const bytes = new Uint8Array(333).map((_, i) => (i * 31 + round) & 255);
    const bytesWant = bytes.slice();
    await one.broadcast(bytes, { name: `broadcast ${round}` });
    same('broadcast', bytes, bytesWant);
    same('allGather', await one.allGather(values, { name: `allGather ${round}` }), values);
    same('reduceScatter', await one.reduceScatter(values.slice(), { name: `reduceScatter ${round}` }), values);
    await one.barrier({ name: `barrier ${round}` });
    const viaMpi = values.slice();
    await one.allReduce(viaMpi, { algorithm: 'mpi', name: `mpi ${round}` });
    same('mpi', viaMpi, values);
    const sharedBig = new Float32Array(new SharedArrayBuffer(512 * 1024)).fill(round + 0.5);
    await one.allReduce(sharedBig, { name: `shared 512 KiB ${round}` });
    same('shared 512 KiB', sharedBig, new Float32Array(128 * 1024).fill(round + 0.5));
  }
  if (one !== comm) await one.close();
  return { wrong };
}

// The hierarchical all-reduce at a 32 KiB and a 1 MiB message (16 and 512 KiB slices among the
// hosts), sum of rank + 1: every element exact. Which network step ran is in the timeline.
async function hierarchyNetwork(comm) {
  const want = (comm.size * (comm.size + 1)) / 2;
  const wrong = [];
  for (const count of [8192, 262144]) {
    const a = new Float32Array(count).fill(comm.rank + 1);
    await comm.allReduce(a, { algorithm: 'hierarchical', name: `hierarchical ${count}` });
    const bad = a.findIndex((v) => v !== want);
    if (bad >= 0) wrong.push(`${count}: [${bad}] = ${a[bad]}, not ${want}`);
  }
  return { wrong };
}

// The hierarchical all-reduce alone, every dtype and op at sizes that leave blocks uneven and
// take several half-slot rounds, and 4 MiB of float32 six times (the local phases try both store
// kinds on their first ops of a size): exact, with a digest per case for the test to compare.
async function hierarchicalOnly(comm) {
  const n = comm.size;
  const cases = [];
  for (const dtype of DTYPES)
    for (const op of OPS) {
      if (op === 'avg' && !FLOAT_DTYPES.has(dtype)) continue;
      for (const length of [1, n + 1, 1009, 65537, 300007]) {
        const buf = fill(dtype, op, comm.rank, length);
        comm.allReduceSync(buf, { op, algorithm: 'hierarchical', ...(dtype.includes('16') ? { dtype } : {}) });
        cases.push({ what: `hierarchical ${dtype} ${op} ${length}`, wrong: countWrong(buf, expected(dtype, op, n, length)), digest: digest(buf) });
      }
    }
  const big = 1 << 20;
  const want = expected('float32', 'sum', n, big);
  for (let i = 0; i < 6; i++) {
    const buf = fill('float32', 'sum', comm.rank, big);
    comm.allReduceSync(buf, { algorithm: 'hierarchical' });
    cases.push({ what: `hierarchical float32 sum ${big} #${i}`, wrong: countWrong(buf, want), digest: digest(buf) });
  }
  return { cases };
}

const comm = await init(scenario.startsWith('timeout') ? { timeoutMs: 1500, stallWarningMs: 500 } : {});
const scenarios = { matrix, mismatch, timeout, 'timeout-sync': (c) => timeout(c, true), timeline, inline: inlineOps, 'large-awaited': largeAwaited, alone, 'hierarchy-network': hierarchyNetwork, hierarchical: hierarchicalOnly };
const result = await scenarios[scenario](comm);
report({ rank: comm.rank, size: comm.size, localRank: comm.localRank, localSize: comm.localSize, transport: comm.transport, ms: Date.now() - started, ...result });
if (!scenario.startsWith('timeout')) await comm.close();
