// One rank of a reliability test: `mpirun -np N node reliability-worker.mjs <scenario> <out-dir>`.
// Each scenario reports what it saw in <out-dir>/rank-<r>.json and ends the process the way the
// scenario is about (process.exit, falling off the end, ...); the test checks mpirun's exit code.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { encodeOp, loadAddon } from '@braid/native';
import { init } from '@braid/collectives';

const [scenario, outDir] = process.argv.slice(2);
const worldRank = Number(process.env.OMPI_COMM_WORLD_RANK ?? 0);

function report(result) {
  writeFileSync(join(outDir, `rank-${worldRank}.json`), JSON.stringify({ rank: worldRank, scenario, ...result }));
}
async function capture(fn) {
  const t0 = Date.now();
  try {
    const value = await fn();
    return { code: 'OK', ms: Date.now() - t0, value };
  } catch (err) {
    return { code: err.code ?? 'NONE', name: err.name, message: err.message, ms: Date.now() - t0 };
  }
}
async function waitForFile(path, ms) {
  const giveUpAt = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > giveUpAt) throw new Error(`${path} did not appear within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
const withTimeout = (promise, ms) =>
  Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve('never settled'), ms).unref())]);

const scenarios = {
  // The usual end of a Node script.
  async 'close-then-exit'() {
    const comm = await init();
    const buf = await comm.allReduce(new Float32Array(8).fill(comm.rank + 1));
    await comm.close();
    report({ sum: buf[0] });
    process.exit(0);
  },
  async 'exit-without-close'() {
    const comm = await init();
    const buf = await comm.allReduce(new Float32Array(8).fill(comm.rank + 1));
    report({ sum: buf[0] });
    process.exit(0);
  },
  async 'end-without-close'() {
    const comm = await init();
    const buf = comm.allReduceSync(new Float32Array(8).fill(comm.rank + 1));
    report({ sum: buf[0] });
  },
  // An op submitted on a split communicator after the world closed must settle (ABORTED), and
  // the process must still end.
  async 'split-after-world-close'() {
    const comm = await init();
    const sub = await comm.split(0);
    const subId = 1;  // the first communicator split from the world
    await comm.close();
    const viaApi = await capture(() => sub.allReduce(new Float32Array(4)));
    // Straight into the addon, past the TypeScript check: the engine itself must refuse it.
    const addon = loadAddon();
    const raw = await capture(() => withTimeout(addon.submit(encodeOp({ comm: subId, kind: 0 }), undefined, new Float32Array(4), undefined, false), 5000));
    const rawSync = await capture(() => addon.submit(encodeOp({ comm: subId, kind: 0 }), undefined, new Float32Array(4), undefined, true));
    report({ viaApi, raw, rawSync });
  },
  // Rank 0 cannot write the timeline: every rank fails to start, alike, and a retry fails again
  // instead of returning a communicator with no engine.
  async 'timeline-unwritable'() {
    const first = await capture(() => init({ timeline: outDir }));  // a directory: fopen fails
    const second = await capture(() => withTimeout(init(), 5000));
    report({ first, second });
  },
  // BRAID_SOCKET_IFNAME naming no interface: the TCP transport cannot start, and every rank says
  // so alike, naming the setting and the interfaces the host has.
  async 'tcp-bad-interface'() {
    const first = await capture(() => withTimeout(init(), 30000));
    report({ first });
  },
  // With a cost profile: auto chooses by the model; small and large all-reduces stay exact.
  async profiled() {
    const comm = await init();
    const sums = [];
    for (const n of [4, 100000, 1 << 20]) {
      const buf = new Float32Array(n).fill(comm.rank + 1);
      await comm.allReduce(buf);
      sums.push(buf[n - 1]);
    }
    report({ sums });
  },
  // An awaited op's buffer detached or shrunk while the engine works on it, each way JS has:
  // the op settles with INVALID_ARGUMENT on that rank (the engine worked on a copy, so nothing
  // wrote into freed memory), the other ranks get the exact result, and the next op runs.
  async detach() {
    const comm = await init();
    const n = 1 << 20;  // 4 MiB: one that goes to the engine thread only with copies
    const ways = {
      structuredClone: (a) => structuredClone(a.buffer, { transfer: [a.buffer] }),
      postMessage: (a) => {
        const { port1, port2 } = new MessageChannel();
        port1.postMessage(a.buffer, [a.buffer]);
        port1.close();
        port2.close();
      },
      resize: (a) => a.buffer.resize(64),
      wasmGrow: (a, memory) => memory.grow(1),
    };
    const results = {};
    for (const [way, detach] of Object.entries(ways)) {
      let memory;
      let buf;
      if (way === 'resize') buf = new Float32Array(new ArrayBuffer(n * 4, { maxByteLength: n * 8 }));
      else if (way === 'wasmGrow') {
        memory = new WebAssembly.Memory({ initial: (n * 4) / 65536 });
        buf = new Float32Array(memory.buffer);
      } else buf = new Float32Array(n);
      buf.fill(comm.rank + 1);
      // The others come only once rank 0 has detached (a file in the shared out-dir says so), so
      // that rank 0's try on its own thread hands the op to the engine (with its copies) instead
      // of finishing it before the detach. A timer here was not enough: on a loaded machine rank
      // 0 came to the op more than 30 ms after rank 1 and finished it inline.
      const detachedMark = join(outDir, `detached-${way}`);
      if (comm.rank !== 0) await waitForFile(detachedMark, 30_000);
      const pending = comm.allReduce(buf, { name: way });
      if (comm.rank === 0) {
        detach(buf, memory);
        writeFileSync(detachedMark, '');
      }
      const outcome = await capture(() => pending);
      results[way] = { code: outcome.code, message: outcome.message, first: comm.rank === 0 ? null : buf[0], last: comm.rank === 0 ? null : buf[n - 1] };
    }
    // Over a SharedArrayBuffer no copy is needed, and the result lands in place.
    const shared = new Float32Array(new SharedArrayBuffer(n * 4)).fill(comm.rank + 1);
    await comm.allReduce(shared);
    const next = await comm.allReduce(new Float32Array(4).fill(1));
    report({ results, shared: [shared[0], shared[n - 1]], next: next[0] });
    await comm.close();
  },

  // Data that stops moving mid-collective: the last rank comes 6 s late to a ring all-reduce
  // (no agreement step, so the others are already exchanging data). The others print a stall
  // warning naming the op and the peer, then time out, and agree on who does not answer.
  async 'data-stall'() {
    const comm = await init({ timeoutMs: 2500, stallWarningMs: 500 });
    await comm.barrier();
    if (comm.rank === comm.size - 1) await new Promise((resolve) => setTimeout(resolve, 6000));
    const outcome = await capture(() => comm.allReduce(new Float32Array(1 << 16), { algorithm: 'ring', name: 'weights' }));
    report({ outcome });
  },

  // Horovod's stall shutdown: the last rank never submits 'bucket-7'; after stallShutdownMs the
  // waiting ranks end the whole job with a message naming the rank, its host and the op.
  async 'stall-shutdown'() {
    const comm = await init({ timeoutMs: 60_000, stallWarningMs: 500, stallShutdownMs: 2000 });
    await comm.allReduce(new Float32Array(4), { name: 'bucket-6' });
    report({ started: Date.now() });
    if (comm.rank === comm.size - 1) await new Promise((resolve) => setTimeout(resolve, 60_000));
    // Two buckets in flight: the report names the stalled one and the one queued behind it.
    await Promise.all([comm.allReduce(new Float32Array(4), { name: 'bucket-7' }), comm.allReduce(new Float32Array(4), { name: 'bucket-8' })]);
  },

  // std::bad_alloc in the middle of an all-reduce on rank 1 (BRAID_TEST_FAULT): that rank's
  // communicator is marked broken (ABORTED, and ABORTED again after), the others time out.
  async 'bad-alloc'() {
    const comm = await init({ timeoutMs: 2000 });
    const ok = await capture(() => comm.allReduce(new Float32Array(1000).fill(1), { algorithm: 'ring' }));
    const failed = await capture(() => comm.allReduce(new Float32Array(1000).fill(1), { algorithm: 'ring' }));
    const after = await capture(() => comm.allReduce(new Float32Array(10).fill(1), { algorithm: 'ring' }));
    report({ ok, failed, after });
  },
};

await scenarios[scenario]();
