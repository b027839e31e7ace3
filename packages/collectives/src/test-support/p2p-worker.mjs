// One rank of a point-to-point test: `mpirun -np N node p2p-worker.mjs <scenario> <out-dir>`.
// Each rank writes <out-dir>/rank-<r>.json; exactness is checked here, the test asserts on it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { ANY_SOURCE, init } from '@braid/collectives';

const [scenario, outDir] = process.argv.slice(2);

async function capture(fn) {
  const t0 = Date.now();
  try {
    const value = await fn();
    return { code: 'OK', value, ms: Date.now() - t0 };
  } catch (err) {
    return { code: err.code ?? 'NONE', message: err.message, ms: Date.now() - t0 };
  }
}

// A value that says who sent it, to whom, with which tag and in which order.
const stamp = (from, to, tag, seq, i) => from * 1e6 + to * 1e4 + tag * 100 + seq + i * 1e-3;

const scenarios = {
  async messages(comm) {
    const { rank, size } = comm;
    const next = (rank + 1) % size;
    const prev = (rank - 1 + size) % size;
    const wrong = [];
    const expect = (what, ok) => ok === true || wrong.push(ok === false ? what : `${what}: ${ok}`);

    // A shift along the ring with sendRecv.
    const out = Float64Array.from({ length: 5 }, (_, i) => stamp(rank, next, 1, 0, i));
    const into = new Float64Array(5);
    const shifted = await comm.sendRecv(out, next, into, prev, { sendTag: 1, recvTag: 1 });
    expect('ring shift result', shifted.source === prev && shifted.tag === 1 && shifted.length === 5);
    expect('ring shift values', into.every((v, i) => v === stamp(prev, rank, 1, 0, i)));

    // Order per (source, tag): 12 messages on tag 5 and 12 on tag 6 sent without waiting; the
    // receiver takes tag 6 first, then tag 5, each in the order sent.
    const sends = [];
    for (let seq = 0; seq < 12; seq++) {
      for (const tag of [5, 6]) sends.push(comm.send(Float64Array.from({ length: 3 }, (_, i) => stamp(rank, next, tag, seq, i)), next, { tag }));
    }
    const received = {};
    for (const tag of [6, 5]) {
      received[tag] = [];
      for (let seq = 0; seq < 12; seq++) {
        const buf = new Float64Array(3);
        await comm.recv(buf, prev, { tag });
        received[tag].push(buf[0]);
      }
    }
    await Promise.all(sends);
    for (const tag of [5, 6]) expect(`order on tag ${tag}`, received[tag].every((v, seq) => v === stamp(prev, rank, tag, seq, 0)));

    // Large (16 MiB, MPI's rendezvous protocol) and zero-length messages, and a short one into a
    // longer buffer, whose tail stays as it was.
    const big = new Float32Array(4 << 20).map((_, i) => (i % 1000) + rank);
    const bigIn = new Float32Array(4 << 20);
    await Promise.all([comm.send(big, next, { tag: 7 }), comm.recv(bigIn, prev, { tag: 7 })]);
    expect('16 MiB message', bigIn.every((v, i) => v === (i % 1000) + prev));
    const emptyIn = new Float32Array(4).fill(-1);
    const [, empty] = await Promise.all([comm.send(new Float32Array(0), next, { tag: 8 }), comm.recv(emptyIn, prev, { tag: 8 })]);
    expect('zero-length message', empty.length === 0 && emptyIn.every((v) => v === -1));
    const shortIn = new Int32Array(10).fill(-1);
    const [, short] = await Promise.all([comm.send(Int32Array.of(rank, 2, 3), next, { tag: 9 }), comm.recv(shortIn, prev, { tag: 9 })]);
    expect('short message', short.length === 3 && shortIn[0] === prev && shortIn[2] === 3 && shortIn[3] === -1 && shortIn[9] === -1);

    // Other dtypes: uint8, float16 (a Uint16Array named by dtype), BigInt64.
    const halfIn = new Uint16Array(4);
    await Promise.all([comm.send(Uint16Array.of(0x3c00, 0x4000, rank, 7), next, { tag: 10, dtype: 'float16' }), comm.recv(halfIn, prev, { tag: 10, dtype: 'float16' })]);
    expect('float16 message', halfIn[0] === 0x3c00 && halfIn[2] === prev);
    const bytesIn = new Uint8Array(3);
    await Promise.all([comm.send(Uint8Array.of(255, rank, 1), next, { tag: 11 }), comm.recv(bytesIn, prev, { tag: 11 })]);
    expect('uint8 message', bytesIn[0] === 255 && bytesIn[1] === prev);

    // ANY_SOURCE: every other rank sends its rank to rank 0.
    let sources = [];
    if (rank === 0) {
      for (let k = 1; k < size; k++) {
        const buf = new Int32Array(1);
        const r = await comm.recv(buf, ANY_SOURCE, { tag: 12 });
        expect('any-source payload', buf[0] === r.source * 10);
        sources.push(r.source);
      }
      sources.sort((a, b) => a - b);
    } else {
      await comm.send(Int32Array.of(rank * 10), 0, { tag: 12 });
    }

    // Synchronous variants, rank 0 to rank 1.
    if (rank === 0) comm.sendSync(Float64Array.of(42), 1, { tag: 13 });
    if (rank === 1) {
      const buf = new Float64Array(1);
      const r = comm.recvSync(buf, 0, { tag: 13 });
      expect('sync message', buf[0] === 42 && r.source === 0 && r.length === 1);
    }

    // Many in flight at once in both directions.
    const many = 64;
    const inbox = Array.from({ length: many }, () => new Float64Array(2));
    await Promise.all([
      ...inbox.map((buf) => comm.recv(buf, prev, { tag: 14 })),
      ...Array.from({ length: many }, (_, seq) => comm.send(Float64Array.of(stamp(rank, next, 14, seq, 0), seq), next, { tag: 14 })),
    ]);
    expect('64 in flight, in order', inbox.every((buf, seq) => buf[0] === stamp(prev, rank, 14, seq, 0) && buf[1] === seq) || JSON.stringify(inbox.map((b) => b[1])));

    // A message longer than the receive buffer fails on both sides; the next message goes through.
    const tooLong = await Promise.all([
      capture(() => comm.send(new Float32Array(8), next, { tag: 15 })),
      capture(() => comm.recv(new Float32Array(4), prev, { tag: 15 })),
    ]);
    const after = new Float32Array(1);
    await Promise.all([comm.send(Float32Array.of(rank), next, { tag: 15 }), comm.recv(after, prev, { tag: 15 })]);
    expect('after a refused message', after[0] === prev);

    // A message in flight while collectives run: neither waits for the other.
    const pending = rank === 0 ? comm.send(Float64Array.of(7), size - 1, { tag: 16 }) : undefined;
    const sum = await comm.allReduce(Float64Array.of(rank));
    let late = -1;
    if (rank === size - 1) {
      const buf = new Float64Array(1);
      await comm.recv(buf, 0, { tag: 16 });
      late = buf[0];
    }
    await pending;
    await comm.barrier();
    return { wrong, sources, tooLong: tooLong.map(({ code, message }) => ({ code, message })), sum: sum[0], late };
  },

  async deadlines(comm) {
    const { rank } = comm;
    const result = {};
    if (rank === 0) {
      // Rank 1 never sends on tag 3, nobody sends on tag 4: each receive times out, and the
      // communicator stays usable (nothing was posted).
      result.recv = await capture(() => comm.recv(new Float32Array(4), 1, { tag: 3 }));
      result.recvAny = await capture(() => comm.recv(new Float32Array(4), ANY_SOURCE, { tag: 4 }));
      result.stillUsable = await capture(() => comm.sendRecv(Float32Array.of(1), 1, new Float32Array(1), 1, { sendTag: 20, recvTag: 21 }));
      // Rank 1 never receives on tag 5: the send times out, and the communicator is out of step.
      result.send = await capture(() => comm.send(new Float32Array(4), 1, { tag: 5 }));
      result.after = await capture(() => comm.send(new Float32Array(4), 1, { tag: 6 }));
    } else if (rank === 1) {
      // After rank 0's two receives have timed out (1.5 s each), within its send's deadline.
      await new Promise((resolve) => setTimeout(resolve, 3300));
      const buf = new Float32Array(1);
      await comm.recv(buf, 0, { tag: 20 });
      await comm.send(buf, 0, { tag: 21 });
    }
    return result;
  },

  async refused(comm) {
    const errors = [];
    const expectError = async (fn) => {
      try {
        await fn();
        errors.push('no error');
      } catch (err) {
        errors.push(`${err.code}: ${err.message}`);
      }
    };
    await expectError(() => comm.send(new Float32Array(1), comm.size, { tag: 0 }));
    await expectError(() => comm.recv(new Float32Array(1), -2));
    await expectError(() => comm.send(new Float32Array(1), 0, { tag: 40000 }));
    await expectError(() => comm.send(new Float32Array(1), 0, { tga: 1 }));
    await expectError(() => comm.recv([1, 2], 0));
    await expectError(() => comm.sendSync(new Float32Array(1), -1));
    return { errors };
  },
};

const comm = await init(scenario === 'deadlines' ? { timeoutMs: 1500 } : {});
let result;
try {
  result = await scenarios[scenario](comm);
} catch (err) {
  result = { crashed: `${err.code}: ${err.message}\n${err.stack}` };
}
writeFileSync(join(outDir, `rank-${comm.rank}.json`), JSON.stringify({ rank: comm.rank, size: comm.size, ...result }));
await comm.close();
