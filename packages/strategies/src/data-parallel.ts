import { agreeOnSuccess, type AllReduceAlgorithm, checkOptions, type Communicator, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

import { DifferentialPrivacy, type DifferentialPrivacyOptions } from './differential-privacy.js';
import { DistributedOptimizer } from './distributed-optimizer.js';
import { type CommunicationStats, type Compression, GradientReducer } from './reducer.js';
import { SecureAggregator, type SecureAggregationOptions } from './secure-aggregation.js';

/**
 * Default bucket size. benchmarks/training.mjs sweeps it (np=2, this repository's 2-vCPU VM,
 * a 16 MiB gradient list of 64 tensors): from 64 KiB to 16 MiB buckets the cost is flat within
 * the machine's noise (14-23 ms a step either way; the copies between tensors and buckets cost
 * more than the all-reduce itself), so the default keeps calls few (4 per 16 MiB) while leaving
 * models above 4 MiB several buckets for the asynchronous path to overlap. PyTorch DDP uses
 * 25 MiB, Horovod 128 MiB (fusion threshold).
 */
export const DEFAULT_BUCKET_BYTES = 4 << 20;

export interface DataParallelOptions {
  /** Gradients are fused into buckets of at most this many bytes (default 4 MiB). */
  bucketBytes?: number;
  /**
   * 'fp16' / 'bf16' send half-precision gradients (accumulated in float32 at every hop); a
   * function returning a @braid/compression compressor (one is made per bucket) sends its payloads.
   */
  compression?: Compression;
  /** Average and apply the gradients once every this many local steps (default 1). */
  accumulationSteps?: number;
  /** Local SGD: apply local gradients each step, average the weights every this many steps (default 0: off). */
  localSgdSteps?: number;
  /** The all-reduce algorithm (default 'auto'). */
  algorithm?: AllReduceAlgorithm;
  /**
   * With a compression function: this many gradient reductions go uncompressed first (the
   * warm-up of Lin et al.'s Deep Gradient Compression). Default 0.
   */
  compressionWarmupSteps?: number;
  /**
   * Privacy. `secureAggregation: true` (or its options: fixed-point `scale`, `clip`): no rank,
   * and nobody on the wire or in shared memory, sees another rank's gradients, only their
   * average (pairwise masks, as Bonawitz et al.; secure-aggregation.ts has the threat model).
   * Not with compression.
   *
   * `clipNorm` and `noiseMultiplier` (with `microbatchSize`, `delta`) turn on DP-SGD: `fit` (or
   * `privateGradients` in a custom loop) clips every microbatch's gradient to clipNorm and the
   * averaged gradient carries Gaussian noise of std noiseMultiplier x clipNorm over the global
   * batch (differential-privacy.ts); `fit` reports epsilon each epoch. Both may be combined.
   */
  privacy?: { secureAggregation?: boolean | SecureAggregationOptions } & Partial<DifferentialPrivacyOptions>;
}

export interface PrivateGradients {
  /** The noisy average over the global batch, the same on every rank: apply it with the plain optimizer. */
  grads: tf.NamedTensorMap;
  /** This rank's mean microbatch loss. */
  loss: number;
  /** This rank's microbatches whose gradient norm was above clipNorm. */
  clipped: number;
  microbatches: number;
}

export interface PrivateGradientsOptions {
  /** Default: every trainable variable tfjs knows. */
  variables?: tf.Variable[];
  /**
   * Rows every rank's batch has in a full step (default: this batch's): the noisy sum is divided
   * by the global number of microbatches such a step has, also when a last batch is short.
   */
  expectedRows?: number;
}

/** Something whose weights can be broadcast: a LayersModel, a list of variables, or a map of them. */
export type Broadcastable =
  | { getWeights(): tf.Tensor[]; setWeights(weights: tf.Tensor[]): void }
  | tf.Variable[]
  | Record<string, tf.Variable>;

const COMPRESSIONS: readonly Compression[] = ['none', 'fp16', 'bf16'];
const ALGORITHMS: readonly AllReduceAlgorithm[] = ['auto', 'ring', 'tree', 'recursive-doubling', 'direct', 'mpi', 'shm'];

function positiveInteger(what: string, value: unknown, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new InvalidArgumentError(`DataParallel: ${what} must be an integer >= ${min}; got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * Data-parallel training over a communicator, the way Horovod does it: every rank holds the whole
 * model, trains on its own shard of each global batch, and the gradients are averaged before
 * they are applied, so all ranks keep identical weights.
 */
export class DataParallel {
  readonly bucketBytes: number;
  readonly compression: Compression;
  readonly accumulationSteps: number;
  readonly localSgdSteps: number;
  readonly algorithm: AllReduceAlgorithm;
  private readonly reducer: GradientReducer;
  // Weights (local SGD's averaging) travel in float32, uncompressed, whatever `compression` is.
  private readonly exactReducer: GradientReducer;
  /** DP-SGD's clipping, noise and accountant, when `privacy.clipNorm` is given. */
  readonly differentialPrivacy: DifferentialPrivacy | undefined;

  constructor(
    readonly comm: Communicator,
    options: DataParallelOptions = {},
  ) {
    if (comm === null || typeof comm !== 'object' || typeof (comm as Communicator).allReduceSync !== 'function') {
      throw new InvalidArgumentError('DataParallel: the first argument must be a Communicator (from `await init()`)');
    }
    checkOptions('DataParallel', options, ['bucketBytes', 'compression', 'accumulationSteps', 'localSgdSteps', 'algorithm', 'compressionWarmupSteps', 'privacy']);
    checkOptions('DataParallel: privacy', options.privacy, ['secureAggregation', 'clipNorm', 'noiseMultiplier', 'microbatchSize', 'delta']);
    this.bucketBytes = positiveInteger('bucketBytes', options.bucketBytes, DEFAULT_BUCKET_BYTES, 4);
    this.accumulationSteps = positiveInteger('accumulationSteps', options.accumulationSteps, 1);
    this.localSgdSteps = positiveInteger('localSgdSteps', options.localSgdSteps, 0, 0);
    this.compression = options.compression ?? 'none';
    if (typeof this.compression === 'function') {
      const choose = this.compression;
      // Checked on each call: a function that returns something else fails at the first step.
      this.compression = (tensor) => {
        const c = choose(tensor);
        if (c !== undefined && (!c || typeof c.compress !== 'function' || typeof c.decompress !== 'function')) {
          throw new InvalidArgumentError(
            `DataParallel: the compression function returned ${JSON.stringify(c)} for a tensor of shape [${tensor.shape}]; return a compressor (e.g. createCompressor('topk', { ratio: 0.01 })) or undefined`,
          );
        }
        return c;
      };
    } else if (!COMPRESSIONS.includes(this.compression)) {
      throw new InvalidArgumentError(
        `DataParallel: compression must be one of ${COMPRESSIONS.map((c) => `'${c}'`).join(', ')}, or a function returning a @braid/compression compressor; got ${JSON.stringify(options.compression)}`,
      );
    }
    this.algorithm = options.algorithm ?? 'auto';
    if (!ALGORITHMS.includes(this.algorithm)) {
      throw new InvalidArgumentError(`DataParallel: algorithm must be one of ${ALGORITHMS.map((a) => `'${a}'`).join(', ')}; got ${JSON.stringify(options.algorithm)}`);
    }
    if (this.localSgdSteps > 0 && this.accumulationSteps > 1) {
      throw new InvalidArgumentError('DataParallel: choose either accumulationSteps or localSgdSteps, not both');
    }
    const compressionWarmup = positiveInteger('compressionWarmupSteps', options.compressionWarmupSteps, 0, 0);
    const secureOption = options.privacy?.secureAggregation;
    let secure: SecureAggregator | undefined;
    if (secureOption !== undefined && secureOption !== false) {
      if (this.compression !== 'none') throw new InvalidArgumentError('DataParallel: privacy.secureAggregation sends fixed-point masked gradients; it cannot be combined with compression');
      if (this.localSgdSteps > 0) throw new InvalidArgumentError('DataParallel: privacy.secureAggregation protects gradients; local SGD averages weights instead: choose one');
      secure = new SecureAggregator(comm, secureOption === true ? {} : secureOption);
    }
    const privacy = options.privacy;
    if (privacy && (privacy.clipNorm !== undefined || privacy.noiseMultiplier !== undefined || privacy.microbatchSize !== undefined || privacy.delta !== undefined)) {
      if (this.localSgdSteps > 0) throw new InvalidArgumentError('DataParallel: differential privacy noises gradients; local SGD averages weights instead: choose one');
      if (this.accumulationSteps > 1) {
        throw new InvalidArgumentError('DataParallel: differential privacy with accumulationSteps is not supported; raise the batch size instead (the noise is per step)');
      }
      const { secureAggregation: _, ...dpOptions } = privacy;
      this.differentialPrivacy = new DifferentialPrivacy(comm, dpOptions as DifferentialPrivacyOptions);
    }
    this.reducer = new GradientReducer(comm, { bucketBytes: this.bucketBytes, compression: this.compression, algorithm: this.algorithm, compressionWarmup, secure });
    this.exactReducer = new GradientReducer(comm, { bucketBytes: this.bucketBytes, compression: 'none', algorithm: this.algorithm, compressionWarmup: 0, label: 'weights' });
  }

  get rank(): number {
    return this.comm.rank;
  }

  get size(): number {
    return this.comm.size;
  }

  /** Communication counters of every gradient averaging done through this strategy. */
  get stats(): Readonly<CommunicationStats> {
    return this.reducer.stats;
  }

  /**
   * Wraps a tfjs optimizer: its step averages the gradients across ranks first. Pass the result to
   * `model.compile`, or call `minimize` / `minimizeAsync` on it in a custom loop.
   */
  wrapOptimizer(optimizer: tf.Optimizer): DistributedOptimizer {
    if (optimizer instanceof DistributedOptimizer) {
      throw new InvalidArgumentError('wrapOptimizer: this optimizer is already distributed; wrap the plain tfjs optimizer once');
    }
    if (optimizer === null || typeof optimizer !== 'object' || typeof (optimizer as tf.Optimizer).applyGradients !== 'function') {
      throw new InvalidArgumentError('wrapOptimizer: pass a tfjs optimizer, e.g. tf.train.adam(1e-3)');
    }
    return new DistributedOptimizer(
      optimizer,
      this.reducer,
      { accumulationSteps: this.accumulationSteps, localSgdSteps: this.localSgdSteps },
      this.exactReducer,
    );
  }

  /** The average over ranks of each tensor (new tensors; blocks). */
  averageTensorsSync(tensors: tf.Tensor[]): tf.Tensor[] {
    return this.reducer.reduceSync(tensors);
  }

  /** The average over ranks of each tensor (new tensors), bucket i on the wire while bucket i+1 is read. */
  averageTensors(tensors: tf.Tensor[]): Promise<tf.Tensor[]> {
    return this.reducer.reduce(tensors);
  }

  /** Averages a gradient map (from `optimizer.computeGradients` or `tf.variableGrads`) across ranks. */
  async averageGradients(grads: tf.NamedTensorMap): Promise<tf.NamedTensorMap> {
    const names = Object.keys(grads);
    const averaged = await this.reducer.reduce(names.map((n) => grads[n]!));
    return Object.fromEntries(names.map((n, i) => [n, averaged[i]!]));
  }

  /**
   * DP-SGD's gradients for a custom loop: `loss(x, y)` is called on every microbatch of this
   * rank's batch (rows along the first axis), each microbatch's gradient is clipped, the sums
   * get their noise and are averaged over all ranks. Apply the result with the plain tfjs
   * optimizer (not a wrapped one: the gradients are averaged already). Needs `privacy.clipNorm`.
   */
  async privateGradients(
    loss: (x: tf.Tensor | tf.Tensor[], y: tf.Tensor | tf.Tensor[]) => tf.Scalar,
    x: tf.Tensor | tf.Tensor[],
    y: tf.Tensor | tf.Tensor[],
    options: PrivateGradientsOptions = {},
  ): Promise<PrivateGradients> {
    const { variables, shares, sum } = this.privateShares(loss, x, y, options);
    const averaged = await this.reducer.reduce(shares).finally(() => tf.dispose(shares));
    return { grads: Object.fromEntries(variables.map((v, i) => [v.name, averaged[i]!])), loss: sum.loss, clipped: sum.clipped, microbatches: sum.microbatches };
  }

  /** privateGradients for callers that cannot await. */
  privateGradientsSync(
    loss: (x: tf.Tensor | tf.Tensor[], y: tf.Tensor | tf.Tensor[]) => tf.Scalar,
    x: tf.Tensor | tf.Tensor[],
    y: tf.Tensor | tf.Tensor[],
    options: PrivateGradientsOptions = {},
  ): PrivateGradients {
    const { variables, shares, sum } = this.privateShares(loss, x, y, options);
    let averaged: tf.Tensor[];
    try {
      averaged = this.reducer.reduceSync(shares);
    } finally {
      tf.dispose(shares);
    }
    return { grads: Object.fromEntries(variables.map((v, i) => [v.name, averaged[i]!])), loss: sum.loss, clipped: sum.clipped, microbatches: sum.microbatches };
  }

  private privateShares(
    loss: (x: tf.Tensor | tf.Tensor[], y: tf.Tensor | tf.Tensor[]) => tf.Scalar,
    x: tf.Tensor | tf.Tensor[],
    y: tf.Tensor | tf.Tensor[],
    options: PrivateGradientsOptions,
  ) {
    checkOptions('privateGradients', options, ['variables', 'expectedRows']);
    const dp = this.differentialPrivacy;
    if (!dp) throw new InvalidArgumentError('privateGradients: create the DataParallel with privacy: { clipNorm, noiseMultiplier } first');
    if (typeof loss !== 'function') throw new InvalidArgumentError('privateGradients: loss must be a function (x, y) => tf.Scalar');
    const rows = rowCount('x', x);
    if (rowCount('y', y) !== rows) throw new InvalidArgumentError(`privateGradients: x has ${rows} rows but y has ${rowCount('y', y)}`);
    const variables = options.variables ?? Object.values(tf.engine().registeredVariables).filter((v) => v.trainable);
    const expectedRows = options.expectedRows ?? rows;
    if (!Number.isInteger(expectedRows) || expectedRows < 1) throw new InvalidArgumentError(`privateGradients: expectedRows must be an integer >= 1; got ${JSON.stringify(options.expectedRows)}`);
    const slice = (t: tf.Tensor | tf.Tensor[], begin: number, end: number) =>
      Array.isArray(t) ? t.map((part) => tf.slice(part, begin, end - begin)) : tf.slice(t, begin, end - begin);
    const sum = dp.clippedGradientSum((begin, end) => loss(slice(x, begin, end), slice(y, begin, end)), rows, variables);
    try {
      const shares = dp.noisyShare(sum.sums, Math.ceil(expectedRows / dp.microbatchSize));
      return { variables, shares, sum };
    } finally {
      tf.dispose(sum.sums);
    }
  }

  /**
   * Every rank takes `root`'s weights (a LayersModel, variables, or a DistributedOptimizer /
   * tfjs optimizer's state). Call it before training so all ranks start from the same point.
   */
  async broadcastVariables(target: Broadcastable | tf.Optimizer, root = 0): Promise<void> {
    if (!Number.isInteger(root) || root < 0 || root >= this.comm.size) {
      throw new InvalidArgumentError(`broadcastVariables: root must be a rank in [0, ${this.comm.size - 1}]; got ${JSON.stringify(root)}`);
    }
    if (target instanceof tf.Optimizer) return this.broadcastOptimizer(target, root);
    if (Array.isArray(target) || isVariableMap(target)) {
      const variables = Array.isArray(target) ? target : Object.values(target);
      const values = await this.broadcastTensors(variables, root);
      variables.forEach((v, i) => v.assign(values[i]!));
      tf.dispose(values);
      return;
    }
    if (target && typeof (target as { getWeights?: unknown }).getWeights === 'function') {
      const model = target as { getWeights(): tf.Tensor[]; setWeights(w: tf.Tensor[]): void };
      const values = await this.broadcastTensors(model.getWeights(), root);
      model.setWeights(values);
      tf.dispose(values);
      return;
    }
    throw new InvalidArgumentError('broadcastVariables: pass a LayersModel, an array or map of tf.Variable, or an optimizer');
  }

  /** Averages numeric metrics (loss, accuracy, ...) over ranks; keys must be the same on every rank. */
  async averageMetrics(logs: Record<string, number>): Promise<Record<string, number>> {
    const keys = Object.keys(logs).filter((k) => typeof logs[k] === 'number').sort();
    const values = Float64Array.from(keys, (k) => logs[k]!);
    if (values.length > 0) await this.comm.allReduce(values, { op: 'avg' });
    return Object.fromEntries(keys.map((k, i) => [k, values[i]!]));
  }

  /** averageMetrics for callers that cannot await. */
  averageMetricsSync(logs: Record<string, number>): Record<string, number> {
    const keys = Object.keys(logs).filter((k) => typeof logs[k] === 'number').sort();
    const values = Float64Array.from(keys, (k) => logs[k]!);
    if (values.length > 0) this.comm.allReduceSync(values, { op: 'avg' });
    return Object.fromEntries(keys.map((k, i) => [k, values[i]!]));
  }

  private async broadcastTensors(tensors: tf.Tensor[], root: number): Promise<tf.Tensor[]> {
    // Agree on the shapes first so a rank with another model fails clearly instead of mis-reading.
    const shapes = JSON.stringify(tensors.map((t) => [t.dtype, t.shape]));
    const mine = new TextEncoder().encode(shapes);
    const theirs = await this.broadcastBytes(mine, root);
    // A rank whose model differs fails here; all ranks learn it before any value moves.
    await agreeOnSuccess(this.comm, 'broadcastVariables', () => {
      if (new TextDecoder().decode(theirs) !== shapes) {
        throw new InvalidArgumentError(`broadcastVariables: rank ${this.comm.rank}'s variables differ from rank ${root}'s (dtypes and shapes: ${shapes} vs ${new TextDecoder().decode(theirs)}); build the same model on every rank`);
      }
      const unsupported = tensors.find((t) => t.dtype !== 'int32' && t.dtype !== 'float32');
      if (unsupported) throw new InvalidArgumentError(`broadcastVariables: ${unsupported.dtype} variables are not supported (float32 and int32 are)`);
    });
    const out: tf.Tensor[] = [];
    for (const t of tensors) {
      const values = t.dtype === 'int32' ? Int32Array.from(t.dataSync() as Int32Array) : Float32Array.from(t.dataSync() as Float32Array);
      await this.comm.broadcast(values, { root });
      out.push(tf.tensor(values, t.shape, t.dtype));
    }
    return out;
  }

  private async broadcastOptimizer(optimizer: tf.Optimizer, root: number): Promise<void> {
    const isRoot = this.comm.rank === root;
    // Encoding can fail on the root alone, decoding on the others alone: agree after each.
    const payload = await agreeOnSuccess(this.comm, 'broadcastVariables (optimizer state)', async () => {
      if (!isRoot) return new Uint8Array(0);
      const weights = await optimizer.getWeights();
      const { data, specs } = await tf.io.encodeWeights(weights);
      const header = new TextEncoder().encode(JSON.stringify(specs));
      const bytes = new Uint8Array(data instanceof ArrayBuffer ? data : tf.io.concatenateArrayBuffers(data));
      const packed = new Uint8Array(4 + header.length + bytes.length);
      new DataView(packed.buffer).setUint32(0, header.length, true);
      packed.set(header, 4);
      packed.set(bytes, 4 + header.length);
      return packed;
    });
    const received = await this.broadcastBytes(payload, root);
    await agreeOnSuccess(this.comm, 'broadcastVariables (optimizer state)', async () => {
      if (isRoot) return;
      const headerLength = new DataView(received.buffer, received.byteOffset).getUint32(0, true);
      const specs = JSON.parse(new TextDecoder().decode(received.subarray(4, 4 + headerLength)));
      const data = received.slice(4 + headerLength).buffer;
      const named = tf.io.decodeWeights(data, specs);
      const list = specs.map((s: { name: string }) => ({ name: s.name, tensor: named[s.name]! }));
      await optimizer.setWeights(list);
    });
  }

  /** Root's bytes on every rank (the length travels first). */
  async broadcastBytes(bytes: Uint8Array, root: number): Promise<Uint8Array> {
    const length = new Float64Array([bytes.length]);
    await this.comm.broadcast(length, { root });
    const out = this.comm.rank === root ? bytes : new Uint8Array(length[0]!);
    await this.comm.broadcast(out, { root });
    return out;
  }
}

function rowCount(what: string, t: tf.Tensor | tf.Tensor[]): number {
  const first = Array.isArray(t) ? t[0] : t;
  if (!(first instanceof tf.Tensor) || first.rank === 0) throw new InvalidArgumentError(`privateGradients: ${what} must be a tensor (or a list of tensors) with rows along the first axis`);
  return first.shape[0]!;
}

function isVariableMap(value: unknown): value is Record<string, tf.Variable> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const values = Object.values(value as object);
  return values.length > 0 && values.every((v) => v instanceof tf.Variable);
}
