// Compressed all-reduce: fp16 / bf16 travel through the ring (accumulated in float32 at every
// hop); sparse and quantized payloads are all-gathered and every rank decodes and sums them in
// rank order (so every rank gets the same bits); PowerSGD runs its two small all-reduces.
import { type Communicator, InvalidArgumentError } from '@braid/collectives';

import { type Compressor, PowerSgdCompressor, reconstruct } from './compressors.js';
import { ErrorFeedback } from './error-feedback.js';
import { kernels } from './payload.js';

export interface CompressedAllReduceOptions {
  op?: 'sum' | 'avg';
}

function scale(x: Float32Array, factor: number): void {
  for (let i = 0; i < x.length; i++) x[i] = x[i]! * factor;
}

/** Reduces `x` across all ranks in place through `compressor`; resolves to `x`. */
export async function allReduceCompressed(comm: Communicator, x: Float32Array, compressor: Compressor, options: CompressedAllReduceOptions = {}): Promise<Float32Array> {
  if (!comm || typeof comm.allGather !== 'function') throw new InvalidArgumentError('allReduceCompressed: the first argument must be a Communicator');
  if (!(x instanceof Float32Array)) throw new InvalidArgumentError('allReduceCompressed: x must be a Float32Array');
  if (!compressor || typeof compressor.compress !== 'function') throw new InvalidArgumentError('allReduceCompressed: pass a compressor from createCompressor() (or an ErrorFeedback)');
  const op = options.op ?? 'sum';
  if (op !== 'sum' && op !== 'avg') throw new InvalidArgumentError(`allReduceCompressed: op must be 'sum' or 'avg'; got ${JSON.stringify(op)}`);
  const feedback = compressor instanceof ErrorFeedback ? compressor : undefined;
  const inner = feedback ? feedback.inner : compressor;
  const k = kernels();

  if (inner.name === 'none') {
    if (feedback) feedback.corrected(x); // keeps the residual (all zeros) sized; nothing is lost
    await comm.allReduce(x, { op });
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
    await comm.allReduce(wire, { op, dtype: bf16 ? 'bfloat16' : 'float16' });
    k.castFromHalf(wire, x, bf16, false);
    return x;
  }

  if (inner instanceof PowerSgdCompressor) {
    const source = feedback ? feedback.corrected(x) : x;
    const { rows, cols, r } = inner.dims(x.length);
    if (x.length === 0) return x;
    const m = inner.matrix(source, rows, cols);
    const pt = new Float32Array(r * rows);
    const qt = new Float32Array(r * cols);
    k.powerP(m, rows, cols, inner.startQ(r, cols), r, pt);
    await comm.allReduce(pt, { op: 'avg' });
    k.orthonormalize(pt, r, rows);
    k.powerQ(m, rows, cols, pt, r, qt);
    await comm.allReduce(qt, { op: 'avg' });
    inner.keepQ(qt);
    // Every rank now holds the same P and Q: the approximation of the ranks' mean.
    reconstruct(pt, qt, r, rows, cols, x, false);
    if (feedback) feedback.remember(source, x);
    if (op === 'sum') scale(x, comm.size);
    return x;
  }

  const { payload } = compressor.compress(x);
  const all = (await comm.allGather(payload)) as Uint8Array;
  const bytes = payload.length;
  x.fill(0);
  for (let r = 0; r < comm.size; r++) inner.decompress(all.subarray(r * bytes, (r + 1) * bytes), x, true);
  if (op === 'avg') scale(x, 1 / comm.size);
  return x;
}
