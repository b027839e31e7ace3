// Compressed all-reduce: fp16 / bf16 travel through the ring (accumulated in float32 at every
// hop); sparse and quantized payloads are all-gathered and every rank decodes and sums them in
// rank order (so every rank gets the same bits); PowerSGD runs its two small all-reduces.
//
// The steps are written once, as a generator that yields the collectives it needs; one driver
// awaits them (allReduceCompressed), the other blocks on them (allReduceCompressedSync, for
// LayersModel.fit's synchronous optimizer step).
import { type AllReduceAlgorithm, checkOptions, type Communicator, type DeviceBuffer, InvalidArgumentError } from '@braid/collectives';

import { type Compressor, PowerSgdCompressor, reconstruct } from './compressors.js';
import { checkDeviceInput, deviceSteps, isDeviceBuffer } from './device-allreduce.js';
import { ErrorFeedback } from './error-feedback.js';
import { kernels } from './payload.js';

export interface CompressedAllReduceOptions {
  op?: 'sum' | 'avg';
  /**
   * The all-reduce algorithm for fp16 / bf16 on Float32Arrays (default 'ring': the value is
   * rounded to half precision at each hop, accumulated in float32). 'auto' lets ranks on one host
   * use shared memory, which is faster there. DeviceBuffers go by their device's algorithm (NCCL
   * on a GPU, which adds half words in its own order); passing one for them is refused.
   */
  algorithm?: AllReduceAlgorithm;
}

type Collective =
  | { kind: 'allReduce'; buf: Float32Array | Uint16Array; op: 'sum' | 'avg'; dtype?: 'float16' | 'bfloat16'; algorithm?: AllReduceAlgorithm }
  | { kind: 'allGather'; buf: Uint8Array };

function scale(x: Float32Array, factor: number): void {
  for (let i = 0; i < x.length; i++) x[i] = x[i]! * factor;
}

function check(comm: Communicator, x: unknown, compressor: unknown, options: CompressedAllReduceOptions, method: string): 'sum' | 'avg' {
  if (!comm || typeof (comm as Communicator).allGather !== 'function') throw new InvalidArgumentError(`${method}: the first argument must be a Communicator`);
  if (isDeviceBuffer(x)) checkDeviceInput(method, x);
  else if (!(x instanceof Float32Array)) throw new InvalidArgumentError(`${method}: x must be a Float32Array or a float32 DeviceBuffer`);
  if (!compressor || typeof (compressor as Compressor).compress !== 'function') {
    throw new InvalidArgumentError(`${method}: pass a compressor from createCompressor() (or an ErrorFeedback)`);
  }
  checkOptions(method, options, ['op', 'algorithm']);
  if (isDeviceBuffer(x) && options.algorithm !== undefined) {
    throw new InvalidArgumentError(`${method}: 'algorithm' is for Float32Arrays; a DeviceBuffer goes by its device's (NCCL on a GPU)`);
  }
  const op = options.op ?? 'sum';
  if (op !== 'sum' && op !== 'avg') throw new InvalidArgumentError(`${method}: op must be 'sum' or 'avg'; got ${JSON.stringify(op)}`);
  return op;
}

function* steps(size: number, x: Float32Array, compressor: Compressor, op: 'sum' | 'avg', algorithm: AllReduceAlgorithm): Generator<Collective, Float32Array, Uint8Array | undefined> {
  const feedback = compressor instanceof ErrorFeedback ? compressor : undefined;
  const inner = feedback ? feedback.inner : compressor;
  const k = kernels();

  if (inner.name === 'none') {
    if (feedback) feedback.corrected(x); // sizes the residual, which stays zero: nothing is lost
    yield { kind: 'allReduce', buf: x, op };
    return x;
  }

  if (inner.name === 'fp16' || inner.name === 'bf16') {
    const source = feedback ? feedback.corrected(x) : x;
    const wire = new Uint16Array(x.length);
    const bf16 = inner.name === 'bf16';
    k.castToHalf(source, wire, bf16);
    if (feedback) {
      const sent = new Float32Array(x.length);
      k.castFromHalf(wire, sent, bf16, false);
      feedback.remember(source, sent);
    }
    yield { kind: 'allReduce', buf: wire, op, dtype: bf16 ? 'bfloat16' : 'float16', algorithm };
    k.castFromHalf(wire, x, bf16, false);
    return x;
  }

  if (inner instanceof PowerSgdCompressor) {
    if (x.length === 0) return x;
    const source = feedback ? feedback.corrected(x) : x;
    const { rows, cols, r } = inner.dims(x.length);
    const m = inner.matrix(source, rows, cols);
    const pt = new Float32Array(r * rows);
    const qt = new Float32Array(r * cols);
    k.powerP(m, rows, cols, inner.startQ(r, cols), r, pt);
    yield { kind: 'allReduce', buf: pt, op: 'avg' };
    k.orthonormalize(pt, r, rows);
    k.powerQ(m, rows, cols, pt, r, qt);
    yield { kind: 'allReduce', buf: qt, op: 'avg' };
    inner.keepQ(qt);
    // Every rank now holds the same P and Q: the approximation of the ranks' mean.
    reconstruct(pt, qt, r, rows, cols, x, false);
    if (feedback) feedback.remember(source, x);
    if (op === 'sum') scale(x, size);
    return x;
  }

  const { payload } = compressor.compress(x);
  const all = (yield { kind: 'allGather', buf: payload })!;
  const bytes = payload.length;
  x.fill(0);
  for (let r = 0; r < size; r++) inner.decompress(all.subarray(r * bytes, (r + 1) * bytes), x, true);
  if (op === 'avg') scale(x, 1 / size);
  return x;
}

/**
 * Reduces `x` across all ranks in place through `compressor`; resolves to `x`. `x` may be a
 * float32 DeviceBuffer: then every step runs on its device (device-allreduce.ts).
 */
export async function allReduceCompressed<T extends Float32Array | DeviceBuffer>(comm: Communicator, x: T, compressor: Compressor, options: CompressedAllReduceOptions = {}): Promise<T> {
  const op = check(comm, x, compressor, options, 'allReduceCompressed');
  if (isDeviceBuffer(x)) {
    const plan = deviceSteps(comm, x, compressor, op);
    return (await drive(plan, async (c) => (c.kind === 'allGather' ? comm.allGather(c.buf) : (await comm.allReduce(c.buf, { op: c.op }), undefined)))) as T;
  }
  const plan = steps(comm.size, x as Float32Array, compressor, op, options.algorithm ?? 'ring');
  return (await drive(plan, async (c) => {
    if (c.kind === 'allGather') return (await comm.allGather(c.buf)) as Uint8Array;
    await comm.allReduce(c.buf, c.dtype ? { op: c.op, dtype: c.dtype, algorithm: c.algorithm } : { op: c.op });
    return undefined;
  })) as T;
}

/** allReduceCompressed for callers that cannot await; blocks until done. */
export function allReduceCompressedSync<T extends Float32Array | DeviceBuffer>(comm: Communicator, x: T, compressor: Compressor, options: CompressedAllReduceOptions = {}): T {
  const op = check(comm, x, compressor, options, 'allReduceCompressedSync');
  if (isDeviceBuffer(x)) {
    const plan = deviceSteps(comm, x, compressor, op);
    return driveSync(plan, (c) => (c.kind === 'allGather' ? comm.allGatherSync(c.buf) : (comm.allReduceSync(c.buf, { op: c.op }), undefined))) as T;
  }
  const plan = steps(comm.size, x as Float32Array, compressor, op, options.algorithm ?? 'ring');
  return driveSync(plan, (c) => {
    if (c.kind === 'allGather') return comm.allGatherSync(c.buf) as Uint8Array;
    comm.allReduceSync(c.buf, c.dtype ? { op: c.op, dtype: c.dtype, algorithm: c.algorithm } : { op: c.op });
    return undefined;
  }) as T;
}

// The drivers: each collective a plan yields is run and its result handed back; when one fails,
// the plan is closed (its finally blocks free what it allocated) and the error goes on.
async function drive<C, R, In>(plan: Generator<C, R, In | undefined>, run: (c: C) => Promise<In | undefined>): Promise<R> {
  let step = plan.next();
  while (!step.done) {
    let result: In | undefined;
    try {
      result = await run(step.value);
    } catch (err) {
      plan.return(undefined as R);
      throw err;
    }
    step = plan.next(result);
  }
  return step.value;
}

function driveSync<C, R, In>(plan: Generator<C, R, In | undefined>, run: (c: C) => In | undefined): R {
  let step = plan.next();
  while (!step.done) {
    let result: In | undefined;
    try {
      result = run(step.value);
    } catch (err) {
      plan.return(undefined as R);
      throw err;
    }
    step = plan.next(result);
  }
  return step.value;
}
