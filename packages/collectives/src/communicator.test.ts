// The single-process world (plain `node`, no mpirun) and argument checking.
import { describe, expect, it } from 'vitest';

import {
  AbortedError,
  BackendUnavailableError,
  BraidError,
  buildInfo,
  init,
  InvalidArgumentError,
} from './index.js';

describe('a world of one', async () => {
  const comm = await init();

  it('has rank 0 of 1 and is the same communicator on a second init()', async () => {
    expect([comm.rank, comm.size, comm.localRank, comm.localSize]).toEqual([0, 1, 0, 1]);
    expect(await init()).toBe(comm);
  });

  it('runs every op with the identity result', async () => {
    const f = new Float32Array([1.5, -2, 3]);
    expect(await comm.allReduce(f, { op: 'avg' })).toBe(f);
    expect(Array.from(f)).toEqual([1.5, -2, 3]);
    expect(Array.from(comm.allReduceSync(new Int32Array([4, 5]), { op: 'prod' }))).toEqual([4, 5]);
    expect(Array.from(await comm.broadcast(new BigInt64Array([7n])))).toEqual([7n]);
    const gathered = await comm.allGather(new Int8Array([1, -2]));
    expect(gathered).toBeInstanceOf(Int8Array);
    expect(Array.from(gathered)).toEqual([1, -2]);
    const gatheredSync = comm.allGatherSync(new Uint16Array([7]), { dtype: 'bfloat16' });
    expect(gatheredSync).toBeInstanceOf(Uint16Array);
    expect(Array.from(gatheredSync)).toEqual([7]);
    const block = await comm.reduceScatter(new Float64Array([1, 2]));
    expect(Array.from(block)).toEqual([1, 2]);
    await comm.barrier();
    const h = new Uint16Array([0x3c00]);
    await comm.allReduce(h, { dtype: 'float16', op: 'avg' });
    expect(h[0]).toBe(0x3c00);
  });

  it('reads views at an offset and arrays over a SharedArrayBuffer', async () => {
    const view = new Float32Array(new ArrayBuffer(64), 8, 4).fill(3);
    expect(Array.from(await comm.allReduce(view, { op: 'avg' }))).toEqual([3, 3, 3, 3]);
    const shared = new Int32Array(new SharedArrayBuffer(16)).fill(2);
    expect(Array.from(await comm.allReduce(shared))).toEqual([2, 2, 2, 2]);
  });

  it('handles zero-length buffers', async () => {
    expect((await comm.allReduce(new Float32Array(0))).length).toBe(0);
    expect((await comm.allGather(new Float32Array(0))).length).toBe(0);
    expect((await comm.reduceScatter(new Uint8Array(0))).length).toBe(0);
  });

  it('splits into sub-communicators, and a negative color gets none', async () => {
    const sub = await comm.split(3);
    expect(sub).not.toBeNull();
    expect([sub!.rank, sub!.size]).toEqual([0, 1]);
    expect(Array.from(await sub!.allReduce(new Float32Array([2])))).toEqual([2]);
    await sub!.close();
    await expect(sub!.allReduce(new Float32Array(1))).rejects.toBeInstanceOf(AbortedError);
    expect(await comm.split(-1)).toBeNull();
  });

  it('refuses bad arguments with INVALID_ARGUMENT before sending anything', async () => {
    const cases: Array<[() => unknown, RegExp]> = [
      [() => comm.allReduceSync([1, 2] as any), /must be a Float32Array.*got an Array/],
      [() => comm.allReduceSync(new Uint32Array(2) as any), /Uint32Array is not supported/],
      [() => comm.allReduceSync(new Uint16Array(2)), /Uint16Array carries float16 or bfloat16/],
      [() => comm.allReduceSync(new Float32Array(2), { dtype: 'float16' }), /does not fit a Float32Array/],
      [() => comm.allReduceSync(new Float32Array(2), { dtype: 'complex' as any }), /unknown dtype "complex"/],
      [() => comm.allReduceSync(new Float32Array(2), { op: 'xor' as any }), /unknown op "xor"/],
      [() => comm.allReduceSync(new Int32Array(2), { op: 'avg' }), /'avg' needs a floating-point dtype \(got 'int32'\)/],
      [() => comm.allReduceSync(new Float32Array(2), { algorithm: 'butterfly' as any }), /unknown algorithm "butterfly"/],
      [() => comm.allReduceSync(new Float32Array(2), 'sum' as any), /options must be an object/],
      [() => comm.allReduceSync(new Float32Array(2), { name: 5 as any }), /name must be a string/],
      [() => comm.broadcastSync(new Float32Array(2), { root: 1 }), /root must be an integer rank from 0 to 0/],
      [() => comm.broadcastSync(new Float32Array(2), { root: 0.5 }), /root must be an integer rank/],
      [() => comm.broadcastSync(new Float32Array(2), { algorithm: 'mpi' as any }), /broadcast takes 'auto', 'tree'/],
    ];
    for (const [call, message] of cases) {
      let caught: unknown;
      try {
        call();
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(InvalidArgumentError);
      expect((caught as BraidError).code).toBe('INVALID_ARGUMENT');
      expect((caught as Error).message).toMatch(message);
    }
    await expect(comm.allReduce(new Int8Array(2), { op: 'avg' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(comm.allGather('x' as any)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(comm.split(1.5)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(() => comm.allReduceSync(new Float32Array(2), { algorithm: 'nccl' as any })).toThrow(BackendUnavailableError);
  });

  it('refuses a buffer that is in flight or detached', async () => {
    const buf = new Float32Array(1024);
    const first = comm.allReduce(buf);
    await expect(comm.allReduce(buf)).rejects.toThrow(/already in use by a collective that has not completed/);
    // An overlapping view of the same memory is refused too.
    await expect(comm.allReduce(new Float32Array(buf.buffer, 64, 4))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(() => comm.allReduceSync(buf)).toThrow(/already in use/);
    await first;
    await comm.allReduce(buf); // free again once completed
    const detached = new Float32Array(8);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    expect(() => comm.allReduceSync(detached)).toThrow(/detached/);
  });

  it('gives native failures the caller\'s stack', async () => {
    const sub = await comm.split(0);
    await sub!.close();
    const err = await sub!.barrier().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortedError);
    expect((err as Error).stack).toContain('communicator.test.ts');
  });

  it('reports the build', () => {
    const info = buildInfo();
    expect(['generic', 'avx2', 'avx512']).toContain(info.isa);
    expect(typeof info.cuda.compiled).toBe('boolean');
  });

  it('closes the world for good', async () => {
    await comm.close();
    await expect(comm.allReduce(new Float32Array(1))).rejects.toBeInstanceOf(AbortedError);
    await expect(init()).rejects.toThrow(/cannot be started twice/);
  });
});

describe('unknown options are refused, naming the key and the nearest known one', async () => {
  const comm = await init();
  const f = () => new Float32Array(4);
  it.each([
    ['allReduce', () => comm.allReduce(f(), { algoritm: 'ring' } as never), /allReduce: unknown option 'algoritm'; did you mean 'algorithm'\?/],
    ['allReduceSync', () => comm.allReduceSync(f(), { Op: 'sum' } as never), /allReduceSync: unknown option 'Op'; did you mean 'op'\?/],
    ['broadcast', () => comm.broadcast(f(), { rot: 0 } as never), /broadcast: unknown option 'rot'; did you mean 'root'\?/],
    ['broadcastSync', () => comm.broadcastSync(f(), { dtyp: 'float32' } as never), /did you mean 'dtype'\?/],
    ['allGather', () => comm.allGather(f(), { nmae: 'x' } as never), /allGather: unknown option 'nmae'; did you mean 'name'\?/],
    ['allGatherSync', () => comm.allGatherSync(f(), { op: 'sum' } as never), /allGatherSync: unknown option 'op' \(known options: algorithm, dtype, name\)/],
    ['reduceScatter', () => comm.reduceScatter(f(), { algorithm: 'ring' } as never), /reduceScatter: unknown option 'algorithm'/],
    ['barrier', () => comm.barrier({ timeout: 5 } as never), /barrier: unknown option 'timeout'/],
    ['init', () => init({ timeoutMS: 5 } as never), /init: unknown option 'timeoutMS'; did you mean 'timeoutMs'\?/],
  ])('%s', async (_, call, message) => {
    let error: unknown;
    try {
      await call();
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as Error).message).toMatch(message);
  });
});
