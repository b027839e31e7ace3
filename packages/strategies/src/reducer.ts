// Averages a list of tensors across ranks through fused buckets. The synchronous path serves
// LayersModel.fit (its optimizer step cannot await); the asynchronous one pipelines: bucket i is
// on the wire while bucket i+1 is read out of its tensors.
import type { AllReduceAlgorithm, Communicator } from '@braid/collectives';
import { allReduceCompressed, allReduceCompressedSync, type Compressor } from '@braid/compression';
import { loadAddon } from '@braid/native';
import * as tf from '@tensorflow/tfjs-core';

import { type Bucket, layoutKey, planBuckets } from './buckets.js';
import type { SecureAggregator } from './secure-aggregation.js';

/**
 * 'none', 'fp16' or 'bf16' (half precision on the wire, accumulated in float32 at every hop), or
 * a function choosing a @braid/compression compressor for each gradient tensor, called once per
 * tensor with its shape: compressors keep per-tensor state (ErrorFeedback's residual, PowerSGD's
 * warm start) and PowerSGD wants the tensor's own matrix. Returning undefined sends that tensor
 * uncompressed, in the fused buckets (as PowerSGD does for biases). For example
 * `({ shape }) => shape.length > 1 ? new ErrorFeedback(createCompressor('powersgd', { rank: 4, shape: [shape[0], size / shape[0]] })) : undefined`.
 */
export type Compression = 'none' | 'fp16' | 'bf16' | ((tensor: { shape: number[]; size: number; index: number }) => Compressor | undefined);

export interface ReducerOptions {
  bucketBytes: number;
  compression: Compression;
  algorithm: AllReduceAlgorithm;
  /** Reductions sent uncompressed before the compressor takes over (DGC's warm-up). */
  compressionWarmup: number;
  /** Names the buckets' all-reduces ('<label>/bucket-<i>'), so stall reports say what waits. */
  label?: string;
  /** Secure aggregation: every bucket travels pairwise-masked in fixed point (secure-aggregation.ts). */
  secure?: SecureAggregator;
}

/** `lend: true`: the averages may view the reducer's buffers (see `GradientReducer.scatter`). */
export interface LendOption {
  lend?: boolean;
}

/** What the reducer has done so far, for benchmarks and progress displays. */
export interface CommunicationStats {
  /** Calls of reduce / reduceSync (one per averaged gradient list). */
  reductions: number;
  allReduceCalls: number;
  /** Bytes handed to allReduce (after compression). */
  bytesReduced: number;
  /** Wall time spent inside allReduce calls, waiting for the other ranks included. */
  communicationMs: number;
}

export interface Layout {
  key: string;
  shapes: number[][];
  lengths: number[];
  buckets: Bucket[];
  /** One float32 buffer per bucket, reused step after step (see `writable`). */
  flat: Float32Array[];
  /** The data of the float32 tensors the last lending `scatter` made over each bucket's buffer. */
  lent: object[][];
  /** The float16 / bfloat16 copy that travels when compression is 'fp16' / 'bf16'. */
  wire: Uint16Array[] | null;
  /** With a compression function: the compressor of each bucket (undefined: a plain bucket). */
  compressors: Array<Compressor | undefined> | null;
}

// Bucket buffers live in SharedArrayBuffers: an awaited all-reduce works on such an array in
// place, where an ordinary ArrayBuffer (which JS could detach meanwhile) is copied in and out.
const sharedFloat32 = (length: number) => new Float32Array(new SharedArrayBuffer(length * 4));
const sharedUint16 = (length: number) => new Uint16Array(new SharedArrayBuffer(length * 2));

function newLayout(key: string, tensors: readonly tf.Tensor[], buckets: Bucket[], half: boolean, compressors: Layout['compressors']): Layout {
  return {
    key,
    shapes: tensors.map((t) => t.shape.slice()),
    lengths: tensors.map((t) => t.size),
    buckets,
    flat: buckets.map((b) => sharedFloat32(b.length)),
    lent: buckets.map(() => []),
    wire: half ? buckets.map((b) => sharedUint16(b.length)) : null,
    compressors,
  };
}

export class GradientReducer {
  readonly stats: CommunicationStats = { reductions: 0, allReduceCalls: 0, bytesReduced: 0, communicationMs: 0 };
  private layout: Layout | undefined;
  private denseLayout: Layout | undefined;

  constructor(
    private readonly comm: Communicator,
    readonly options: ReducerOptions,
  ) {}

  layoutFor(tensors: readonly tf.Tensor[]): Layout {
    const lengths = tensors.map((t) => t.size);
    const key = layoutKey(lengths);
    const warmingUp = typeof this.options.compression === 'function' && this.stats.reductions < this.options.compressionWarmup;
    if (warmingUp) {
      // Dense buckets until the warm-up is over; the compressors are made afterwards.
      if (this.denseLayout?.key !== key) {
        this.denseLayout = newLayout(key, tensors, planBuckets(lengths, this.options.bucketBytes), false, null);
      }
      return this.denseLayout;
    }
    if (this.layout?.key === key) return this.layout;
    const compression = this.options.compression;
    const half = compression === 'fp16' || compression === 'bf16';
    let buckets: Bucket[];
    let compressors: Array<Compressor | undefined> | null = null;
    if (typeof compression === 'function') {
      // Compressed tensors travel one by one; the others are fused as usual.
      const chosen = tensors.map((t, index) => compression({ shape: t.shape.slice(), size: t.size, index }));
      const plain = lengths.map((_, i) => i).filter((i) => chosen[i] === undefined);
      buckets = planBuckets(plain.map((i) => lengths[i]!), this.options.bucketBytes).map((b) => ({
        length: b.length,
        slots: b.slots.map((slot) => ({ ...slot, tensor: plain[slot.tensor]! })),
      }));
      compressors = buckets.map(() => undefined);
      chosen.forEach((c, i) => {
        if (c === undefined) return;
        buckets.push({ length: lengths[i]!, slots: [{ tensor: i, offset: 0, length: lengths[i]! }] });
        compressors!.push(c);
      });
    } else {
      buckets = planBuckets(lengths, this.options.bucketBytes, half ? 2 : 4);
    }
    this.layout = newLayout(key, tensors, buckets, half, compressors);
    return this.layout;
  }

  /** Copies the tensors' values into the layout's bucket buffers. */
  gatherSync(layout: Layout, tensors: readonly tf.Tensor[]): void {
    layout.buckets.forEach((bucket, b) => {
      const flat = this.writable(layout, b);
      for (const slot of bucket.slots) flat.set(tensors[slot.tensor]!.dataSync() as Float32Array, slot.offset);
    });
  }

  reduceBucketsSync(layout: Layout): void {
    for (let b = 0; b < layout.buckets.length; b++) {
      const started = performance.now();
      const flat = layout.flat[b]!;
      const wire = layout.wire?.[b];
      const compressor = layout.compressors?.[b];
      if (compressor) {
        allReduceCompressedSync(this.comm, flat, compressor, { op: 'avg' });
        this.stats.allReduceCalls++;
        this.stats.bytesReduced += compressor.payloadBytes(flat.length);
        this.stats.communicationMs += performance.now() - started;
        continue;
      }
      if (this.options.secure) {
        this.options.secure.allReduceSync(flat, { op: 'avg', name: this.bucketName(b) });
        this.count(flat, started); // the int32 vector has one element more: the overflow count
        continue;
      }
      if (wire) {
        const dtype = this.wireDtype();
        const casts = loadAddon().compress;
        casts.castToHalf(flat, wire, dtype === 'bfloat16');
        this.comm.allReduceSync(wire, { op: 'avg', dtype, algorithm: this.options.algorithm, name: this.bucketName(b) });
        casts.castFromHalf(wire, flat, dtype === 'bfloat16', false);
      } else {
        this.comm.allReduceSync(flat, { op: 'avg', algorithm: this.options.algorithm, name: this.bucketName(b) });
      }
      this.count(wire ?? flat, started);
    }
  }

  /**
   * New tensors (the caller owns them) holding the bucket buffers' values, in the original shapes.
   * With `lend`, float32 tensors are made over the buffers themselves, not over copies (a copy
   * and an allocation of every gradient each step: about 0.1 ms of a 4.3 ms tfjs-node step of
   * the demo's MLP), and `writable` gives a bucket a new buffer before a later step would
   * overwrite one that such a tensor still uses. Only for callers that dispose the tensors
   * without reading them out: an array from `dataSync()` can view the buffer, and outlives them.
   */
  scatter(layout: Layout, dtypes?: readonly tf.DataType[], { lend = false }: LendOption = {}): tf.Tensor[] {
    const out: tf.Tensor[] = new Array(layout.lengths.length);
    layout.buckets.forEach((bucket, b) => {
      const flat = layout.flat[b]!;
      for (const slot of bucket.slots) {
        const dtype = dtypes?.[slot.tensor] ?? 'float32';
        const view = flat.subarray(slot.offset, slot.offset + slot.length);
        if (lend && dtype === 'float32') {
          const tensor = tf.tensor(view, layout.shapes[slot.tensor]);
          layout.lent[b]!.push(tensor.dataId);
          out[slot.tensor] = tensor;
        } else {
          // A copy: the next step overwrites the buffer while these tensors may live on (other
          // dtypes are converted, which copies).
          out[slot.tensor] = tf.tensor(dtype === 'float32' ? view.slice() : view, layout.shapes[slot.tensor], dtype);
        }
      }
    });
    return out;
  }

  /**
   * Bucket b's buffer, to be overwritten. Tensors from the last `scatter` view it; when the
   * caller disposed them (DistributedOptimizer does, right after applying them) the buffer is
   * reused, but where any of their data is still alive (kept, cloned, or not yet disposed) the
   * buffer stays theirs and the bucket gets a new one, so no tensor's values ever change.
   */
  private writable(layout: Layout, b: number): Float32Array {
    const lent = layout.lent[b]!;
    if (lent.length > 0) {
      // tfjs's engine tracks every live tensor's data here; a tfjs without it gets a new buffer.
      const alive: WeakMap<object, unknown> | undefined = tf.engine().state?.tensorInfo;
      if (!alive || lent.some((dataId) => alive.has(dataId))) layout.flat[b] = sharedFloat32(layout.buckets[b]!.length);
      lent.length = 0;
    }
    return layout.flat[b]!;
  }

  /** The average of `tensors` over all ranks, as new tensors; blocks until every bucket is reduced. */
  reduceSync(tensors: readonly tf.Tensor[], lending: LendOption = {}): tf.Tensor[] {
    const layout = this.layoutFor(tensors);
    this.gatherSync(layout, tensors);
    this.reduceBucketsSync(layout);
    this.stats.reductions++;
    return this.scatter(layout, tensors.map((t) => t.dtype), lending);
  }

  /** The average of `tensors` over all ranks; bucket i is reduced while bucket i+1 is read out. */
  async reduce(tensors: readonly tf.Tensor[], lending: LendOption = {}): Promise<tf.Tensor[]> {
    const layout = this.layoutFor(tensors);
    const dtypes = tensors.map((t) => t.dtype);
    const inFlight: Array<Promise<unknown>> = [];
    const started = performance.now();
    try {
      for (let b = 0; b < layout.buckets.length; b++) {
        const bucket = layout.buckets[b]!;
        const values = await Promise.all(bucket.slots.map((slot) => tensors[slot.tensor]!.data()));
        const flat = this.writable(layout, b);
        bucket.slots.forEach((slot, i) => flat.set(values[i] as Float32Array, slot.offset));
        const wire = layout.wire?.[b];
        const compressor = layout.compressors?.[b];
        if (compressor) {
          inFlight.push(allReduceCompressed(this.comm, flat, compressor, { op: 'avg' }));
          this.stats.allReduceCalls++;
          this.stats.bytesReduced += compressor.payloadBytes(flat.length);
          continue;
        }
        if (this.options.secure) {
          inFlight.push(this.options.secure.allReduce(flat, { op: 'avg', name: this.bucketName(b) }));
        } else if (wire) {
          const dtype = this.wireDtype();
          const casts = loadAddon().compress;
          casts.castToHalf(flat, wire, dtype === 'bfloat16');
          inFlight.push(
            this.comm.allReduce(wire, { op: 'avg', dtype, algorithm: this.options.algorithm, name: this.bucketName(b) }).then(() => casts.castFromHalf(wire, flat, dtype === 'bfloat16', false)),
          );
        } else {
          inFlight.push(this.comm.allReduce(flat, { op: 'avg', algorithm: this.options.algorithm, name: this.bucketName(b) }));
        }
        this.stats.allReduceCalls++;
        this.stats.bytesReduced += (wire ?? flat).byteLength;
      }
    } finally {
      // Never leave a bucket in flight behind a failure: its buffer is reused by the next call.
      const settled = await Promise.allSettled(inFlight);
      this.stats.communicationMs += performance.now() - started;
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
    }
    this.stats.reductions++;
    return this.scatter(layout, dtypes, lending);
  }

  private bucketName(b: number): string {
    return `${this.options.label ?? 'gradients'}/bucket-${b}`;
  }

  private wireDtype(): 'float16' | 'bfloat16' {
    return this.options.compression === 'bf16' ? 'bfloat16' : 'float16';
  }

  private count(buffer: ArrayBufferView, started: number): void {
    this.stats.allReduceCalls++;
    this.stats.bytesReduced += buffer.byteLength;
    this.stats.communicationMs += performance.now() - started;
  }
}
