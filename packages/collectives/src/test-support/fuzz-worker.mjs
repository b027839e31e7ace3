// API fuzzing, one rank: `node fuzz-worker.mjs <seed> <calls> <out-dir>` (alone, or under mpirun:
// every rank draws the same calls from the seed, so valid ones match). Thousands of random
// argument combinations (wrong types, negative, huge and fractional sizes, overlapping views,
// shared and resizable buffers, detached buffers, closed communicators, closes with ops in
// flight). Each call must succeed or fail with INVALID_ARGUMENT or ABORTED (BACKEND_UNAVAILABLE
// for an algorithm this build lacks) whose message names what is wrong; the process must not crash or hang. Writes <out-dir>/rank-<r>.json.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { init } from '@braid/collectives';
import { seededRandom } from '@braid/test-support/mpirun';

const [seedText, callsText, outDir] = process.argv.slice(2);
const comm = await init({ timeoutMs: 20_000 });
const random = seededRandom(Number(seedText));
const pick = (list) => list[Math.floor(random() * list.length)];

const lengths = () => pick([0, 1, 2, 3, 7, 64, 1000, -1, 1.5, 2 ** 33, NaN]);
const TYPED = [Float32Array, Float64Array, Int32Array, BigInt64Array, Uint8Array, Int8Array, Uint16Array, Int16Array, Uint32Array, Uint8ClampedArray, BigUint64Array];
function makeBuffer() {
  const n = lengths();
  const safe = Number.isInteger(n) && n >= 0 && n < 1e6 ? n : 5;
  switch (Math.floor(random() * 14)) {
    case 0: return null;
    case 1: return undefined;
    case 2: return pick([3, 'buffer', {}, [], [1, 2], true, Symbol('x'), () => 0, 10n]);
    case 3: return new DataView(new ArrayBuffer(safe * 4));
    case 4: return new ArrayBuffer(safe * 4);
    case 5: return new (pick(TYPED))(new SharedArrayBuffer(safe * 8));
    case 6: return new Float32Array(new ArrayBuffer(safe * 4, { maxByteLength: safe * 8 + 8 }));
    case 7: {
      const a = new Float32Array(safe);
      structuredClone(a.buffer, { transfer: [a.buffer] });  // detached
      return a;
    }
    case 8: return Buffer.alloc(safe);
    case 9: return new Float32Array(new ArrayBuffer(safe * 4 + 3), 3 - (3 % 4), 0);  // empty view at an offset
    default: return new (pick(TYPED))(safe);
  }
}
function makeOptions() {
  switch (Math.floor(random() * 8)) {
    case 0: return undefined;
    case 1: return pick([null, 5, 'sum', [], true]);
    case 2: return { [pick(['opp', 'algoritm', 'rooot', 'dtyp', 'nam', 'timeout'])]: 1 };
    default: {
      const o = {};
      if (random() < 0.5) o.op = pick(['sum', 'prod', 'min', 'max', 'avg', 'mean', 3, null]);
      if (random() < 0.4) o.algorithm = pick(['auto', 'ring', 'tree', 'recursive-doubling', 'mpi', 'shm', 'nccl', '', 7]);
      if (random() < 0.3) o.dtype = pick(['float32', 'float16', 'bfloat16', 'int64', 'complex', 1]);
      if (random() < 0.3) o.root = pick([0, 1, -1, 0.5, 2 ** 31, NaN, '0', comm.size]);
      if (random() < 0.2) o.name = pick(['w', '', 'x'.repeat(300), 5, null]);
      return o;
    }
  }
}

// What a message must mention: the argument (or the communicator's state) it is about.
const NAMES_ARGUMENT = /buffer|option|root|dtype|\bop\b|algorithm|name|color|key|communicator|closed|length|TypedArray|output|array|in use|detached|resiz/i;
// BACKEND_UNAVAILABLE: an algorithm this machine lacks ('nccl' without a GPU), named in the message.
const outcomes = { ok: 0, INVALID_ARGUMENT: 0, ABORTED: 0, BACKEND_UNAVAILABLE: 0 };
const bad = [];
function record(what, err) {
  if (!err) {
    outcomes.ok++;
    return;
  }
  const code = err.code;
  if (code === 'INVALID_ARGUMENT' || code === 'ABORTED' || code === 'BACKEND_UNAVAILABLE') {
    outcomes[code]++;
    if (!NAMES_ARGUMENT.test(err.message)) bad.push({ what, code, message: err.message });
  } else if (bad.length < 20) {
    bad.push({ what, code: code ?? err.name, message: String(err.message ?? err) });
  }
}

let sub = await comm.split(0);
const calls = Number(callsText);
for (let i = 0; i < calls; i++) {
  const method = pick(['allReduce', 'allReduceSync', 'broadcast', 'broadcastSync', 'allGather', 'allGatherSync', 'reduceScatter', 'barrier', 'overlap', 'closeSub', 'split', 'splitArgs', 'doubleClose']);
  const target = random() < 0.7 ? comm : sub;
  const what = `${i} ${method}`;
  try {
    if (method === 'overlap') {
      // A large awaited op over a SharedArrayBuffer goes to the engine thread and holds its
      // buffer: an overlapping view must be refused at once, the first op completes.
      const big = new Float32Array(new SharedArrayBuffer(4 << 17));
      const first = target.allReduce(big);
      let second;
      try {
        await target.allReduce(big.subarray(100, 200));
      } catch (err) {
        second = err;
      }
      await first.catch(() => {});
      record(`${what} (overlapping view)`, second ?? Object.assign(new Error('an overlapping view was accepted'), { code: 'ACCEPTED' }));
      continue;
    }
    if (method === 'closeSub') {
      // Ops in flight, then close: they finish, later ones are ABORTED.
      const inFlight = [sub.allReduce(new Float64Array(3)), sub.barrier()].map((p) => p.catch((e) => e));
      await sub.close();
      for (const e of await Promise.all(inFlight)) if (e instanceof Error) record(`${what} (in flight)`, e);
      continue;
    }
    if (method === 'splitArgs') {
      // Colors and keys of every kind: only integers are taken (all ranks pass the same, so a
      // valid split gives a communicator of everyone, closed at once).
      const made = await target.split(pick([0, 3, -1, 1.5, NaN, 2 ** 31, -(2 ** 40), '1', null]), pick([undefined, 0, -5, 0.5, Infinity, 'k']));
      if (made) await made.close();
      record(what);
      continue;
    }
    if (method === 'doubleClose') {
      // Two closes at once, with an op in flight: both settle, the op completes or is ABORTED.
      const extra = await comm.split(0);
      const op = extra.allReduce(new Int32Array(5)).catch((e) => e);
      await Promise.all([extra.close(), extra.close()]);
      const outcome = await op;
      if (outcome instanceof Error) record(`${what} (op)`, outcome);
      record(`${what} (after)`, await extra.barrier().then(() => Object.assign(new Error('a closed communicator ran an op'), { code: 'ACCEPTED' }), (e) => e));
      continue;
    }
    if (method === 'split') {
      if (!sub.closed) await sub.close();
      sub = await comm.split(0);
      continue;
    }
    const buf = makeBuffer();
    const options = makeOptions();
    const result = target[method](buf, options);
    if (result && typeof result.then === 'function') await result;
    record(what);
  } catch (err) {
    record(what, err);
  }
}
// Still in step: one more exact op.
const check = await comm.allReduce(new Float64Array([1]));
writeFileSync(join(outDir, `rank-${comm.rank}.json`), JSON.stringify({ rank: comm.rank, outcomes, bad, check: check[0] }));
await comm.close();
