import { encodeOp, type Addon, type NativeBuffer, type OpSpec, type SecureMaskParams, type SplitResult } from '@braid/native';

import {
  ALGORITHM_CODES,
  type AllGatherAlgorithm,
  type AllReduceAlgorithm,
  type BroadcastAlgorithm,
  type DType,
  DTYPE_CODES,
  OP_KIND,
  REDUCE_OP_CODES,
  type ReduceOp,
} from './codes.js';
import { type Device, DeviceBuffer, openDevice, requestedDevice } from './device.js';
import { AbortedError, fromNative, InvalidArgumentError } from './errors.js';
import {
  checkInt32,
  checkName,
  checkOptions,
  checkRank,
  type CollectiveBuffer,
  resolveAllGatherAlgorithm,
  resolveAllReduceAlgorithm,
  resolveBroadcastAlgorithm,
  resolveDeviceAlgorithm,
  resolveDeviceDType,
  resolveDType,
  resolveReduceOp,
} from './validate.js';

export interface AllReduceOptions {
  /** How to combine the ranks' values; default 'sum'. 'avg' for floating dtypes only. */
  op?: ReduceOp;
  /** Default 'auto': picked by size and rank count from measured crossovers. */
  algorithm?: AllReduceAlgorithm;
  /** Needed for float16 / bfloat16 (in a Uint16Array); otherwise taken from the array type. */
  dtype?: DType;
  /** Checked against the other ranks' name for the same call; default: the call's order. */
  name?: string;
}
export interface BroadcastOptions {
  /** The rank whose buffer everyone receives; default 0. */
  root?: number;
  algorithm?: BroadcastAlgorithm;
  dtype?: DType;
  name?: string;
}
export interface GatherOptions {
  /** Default 'auto' (hierarchical when the ranks span hosts with several on each, else ring). */
  algorithm?: AllGatherAlgorithm;
  dtype?: DType;
  name?: string;
}
export interface ReduceScatterOptions {
  op?: ReduceOp;
  dtype?: DType;
  name?: string;
}

/** recv's source for a message from any rank. */
export const ANY_SOURCE = -1;
/** The largest message tag (what every MPI library supports). */
export const MAX_TAG = 32767;

export interface SendOptions {
  /** Matches the receiver's tag; default 0. 0 to MAX_TAG. */
  tag?: number;
  /** Needed for float16 / bfloat16 (in a Uint16Array); otherwise taken from the array type. */
  dtype?: DType;
}
export interface RecvOptions {
  /** Only a message with this tag is taken; default 0. */
  tag?: number;
  dtype?: DType;
}
export interface RecvResult {
  /** The rank that sent the message (useful with ANY_SOURCE). */
  source: number;
  tag: number;
  /** Elements received, at most the buffer's length; the rest of the buffer is left as it was. */
  length: number;
}
export interface SendRecvOptions {
  sendTag?: number;
  recvTag?: number;
  dtype?: DType;
}

/** The first collective failure of this process (TIMEOUT or ABORTED), for the exit report. */
export const processFailures: { first?: string } = {};

function remember(err: unknown): unknown {
  const e = err as { code?: string; message?: string };
  if (!processFailures.first && (e?.code === 'TIMEOUT' || e?.code === 'ABORTED')) processFailures.first = `${e.code}: ${e.message}`;
  return err;
}

function checkTag(method: string, tag: unknown): number {
  if (tag === undefined) return 0;
  if (typeof tag !== 'number' || !Number.isInteger(tag) || tag < 0 || tag > MAX_TAG) {
    throw new InvalidArgumentError(`${method}: tag must be an integer from 0 to ${MAX_TAG}; got ${JSON.stringify(tag)}`);
  }
  return tag;
}

function newLike<T extends CollectiveBuffer>(buf: T, length: number): T {
  const ctor = buf.constructor as new (length: number) => T;
  return new ctor(length);
}

// What the addon takes for a buffer: the array itself, or a DeviceBuffer's memory.
function toNative(method: string, buf: CollectiveBuffer | DeviceBuffer): NativeBuffer {
  return buf instanceof DeviceBuffer ? buf.memoryFor(method) : buf;
}

/**
 * A group of ranks that run collectives together: the world from init(), or a part of it from
 * split(). Every rank of a communicator must make the same calls in the same order.
 */
export class Communicator {
  /** This process's rank in the communicator, 0 .. size-1. */
  readonly rank: number;
  /** How many ranks the communicator has. */
  readonly size: number;
  /** This process's rank among the world's ranks on the same host. */
  readonly localRank: number;
  /** How many of the world's ranks run on this host. */
  readonly localSize: number;
  /**
   * What the point-to-point algorithms' data goes over: 'tcp' (Braid's own sockets, when the
   * ranks span hosts) or 'mpi'. Shared memory serves ranks on one host besides ('shm').
   */
  readonly transport: 'tcp' | 'mpi';
  /**
   * Whether the ranks share a memory region for their data (shared memory on, all ranks on one
   * host): the 'shm' all-reduce runs only then.
   */
  readonly sharedMemory: boolean;
  readonly #addon: Addon;
  readonly #id: number;
  readonly #onClose?: () => void;
  // Shared by the world and every communicator split from it: once the world is closed, MPI is
  // finalized and no communicator can run anything.
  readonly #lifetime: { worldClosed: boolean };
  #closed = false;

  /** @internal Use init() or split(). */
  constructor(
    addon: Addon,
    id: number,
    shape: { rank: number; size: number; localRank: number; localSize: number; transport?: 'tcp' | 'mpi'; sharedMemory?: boolean },
    onClose?: () => void,
    lifetime: { worldClosed: boolean } = { worldClosed: false },
  ) {
    this.#lifetime = lifetime;
    this.#addon = addon;
    this.#id = id;
    this.rank = shape.rank;
    this.size = shape.size;
    this.localRank = shape.localRank;
    this.localSize = shape.localSize;
    this.transport = shape.transport ?? 'mpi';
    this.sharedMemory = shape.sharedMemory ?? false;
    this.#onClose = onClose;
  }

  /** True once close() was called on it, or on the world it was split from. */
  get closed(): boolean {
    return this.#closed || this.#lifetime.worldClosed;
  }

  /**
   * This process's device (the GPU of this rank's local rank, or init's `device`; host memory
   * with BRAID_DEVICE=host): alloc(dtype, length) gives DeviceBuffers, which every collective
   * takes and runs with NCCL. The same for every communicator of the process.
   */
  get device(): Device {
    return openDevice(this.#addon, this.localRank, requestedDevice());
  }

  /** Reduces `buf` across all ranks, in place; resolves to `buf`. */
  async allReduce<T extends CollectiveBuffer | DeviceBuffer>(buf: T, options?: AllReduceOptions): Promise<T> {
    await this.#run(this.#allReduceSpec('allReduce', buf, options), toNative('allReduce', buf), undefined);
    return buf;
  }

  /**
   * allReduce for callers that cannot await (an optimizer step inside tfjs' model.fit): blocks
   * the JS thread until the reduction is done and returns `buf`.
   */
  allReduceSync<T extends CollectiveBuffer | DeviceBuffer>(buf: T, options?: AllReduceOptions): T {
    const spec = this.#allReduceSpec('allReduceSync', buf, options);
    this.#runSync(spec, toNative('allReduceSync', buf), undefined);
    return buf;
  }

  /**
   * @internal Secure aggregation's fused op (@braid/strategies' SecureAggregator): sums `masked`
   * (n + 1 int32 words) over shared memory, masking each chunk from `values` (n float32) on the
   * way in and unmasking the sum into `values` on the way out. Only where `sharedMemory` is true
   * or the communicator has one rank; the caller has checked its arguments.
   */
  maskedAllReduce(masked: Int32Array, values: Float32Array, mask: SecureMaskParams, sync: boolean, name?: string): Promise<unknown> | unknown {
    const spec: OpSpec = {
      comm: this.#id,
      kind: OP_KIND.allReduce,
      dtype: DTYPE_CODES.int32,
      op: REDUCE_OP_CODES.sum,
      algorithm: ALGORITHM_CODES.shm,
      name: checkName('allReduce', name),
    };
    this.#checkOpen();
    if (sync) {
      try {
        return this.#addon.submit(encodeOp(spec), spec.name, masked, values, true, mask);
      } catch (err) {
        throw remember(fromNative(err));
      }
    }
    // A refusal thrown at once (a buffer in use, say) rejects like a failure later: both as BraidErrors.
    return (async () => {
      try {
        return await this.#addon.submit(encodeOp(spec), spec.name, masked, values, false, mask);
      } catch (err) {
        throw remember(fromNative(err));
      }
    })();
  }

  /** Copies root's `buf` into every rank's `buf`; resolves to `buf`. */
  async broadcast<T extends CollectiveBuffer | DeviceBuffer>(buf: T, options?: BroadcastOptions): Promise<T> {
    await this.#run(this.#broadcastSpec('broadcast', buf, options), toNative('broadcast', buf), undefined);
    return buf;
  }

  /** broadcast that blocks the JS thread until done. */
  broadcastSync<T extends CollectiveBuffer | DeviceBuffer>(buf: T, options?: BroadcastOptions): T {
    this.#runSync(this.#broadcastSpec('broadcastSync', buf, options), toNative('broadcastSync', buf), undefined);
    return buf;
  }

  /**
   * Resolves to a new array of size x buf.length: every rank's `buf`, in rank order (a new
   * DeviceBuffer for a DeviceBuffer).
   */
  async allGather<T extends CollectiveBuffer | DeviceBuffer>(buf: T, options?: GatherOptions): Promise<T> {
    const { spec, out } = this.#allGatherSpec('allGather', buf, options);
    await this.#withOutput(out, () => this.#run(spec, toNative('allGather', buf), toNative('allGather', out)));
    return out;
  }

  /** allGather for callers that cannot await (a compressed gradient inside LayersModel.fit). */
  allGatherSync<T extends CollectiveBuffer | DeviceBuffer>(buf: T, options?: GatherOptions): T {
    const { spec, out } = this.#allGatherSpec('allGatherSync', buf, options);
    try {
      this.#runSync(spec, toNative('allGatherSync', buf), toNative('allGatherSync', out));
    } catch (err) {
      if (out instanceof DeviceBuffer) out.free();
      throw err;
    }
    return out;
  }

  // Frees a DeviceBuffer made for an op's result when the op fails (nobody else holds it).
  async #withOutput(out: CollectiveBuffer | DeviceBuffer, run: () => Promise<unknown>): Promise<void> {
    try {
      await run();
    } catch (err) {
      if (out instanceof DeviceBuffer) out.free();
      throw err;
    }
  }

  #allGatherSpec<T extends CollectiveBuffer | DeviceBuffer>(method: string, buf: T, options: GatherOptions | undefined): { spec: OpSpec; out: T } {
    const o = checkOptions(method, options, ['algorithm', 'dtype', 'name']);
    if (buf instanceof DeviceBuffer) {
      const dtype = resolveDeviceDType(method, buf.dtype, o.dtype);
      const algorithm = resolveDeviceAlgorithm(method, buf.kind, o.algorithm);
      buf.memoryFor(method); // a freed buffer is refused before its output is allocated
      const out = this.device.alloc(dtype, buf.length * this.size) as T;
      return { spec: { comm: this.#id, kind: OP_KIND.allGather, dtype: DTYPE_CODES[dtype], algorithm, name: checkName(method, o.name) }, out };
    }
    const dtype = resolveDType(method, buf, o.dtype);
    const algorithm = resolveAllGatherAlgorithm(method, o.algorithm);
    const out = newLike(buf, buf.length * this.size) as T;
    return {
      spec: { comm: this.#id, kind: OP_KIND.allGather, dtype: DTYPE_CODES[dtype], algorithm: ALGORITHM_CODES[algorithm], name: checkName(method, o.name) },
      out,
    };
  }

  /**
   * Reduces `buf` across ranks and resolves to this rank's block of the result: a new array of
   * buf.length / size elements (block `rank`). `buf` is left as it was.
   */
  async reduceScatter<T extends CollectiveBuffer | DeviceBuffer>(buf: T, options?: ReduceScatterOptions): Promise<T> {
    const o = checkOptions('reduceScatter', options, ['op', 'dtype', 'name']);
    const onDevice = buf instanceof DeviceBuffer;
    const dtype = onDevice ? resolveDeviceDType('reduceScatter', buf.dtype, o.dtype) : resolveDType('reduceScatter', buf, o.dtype);
    const op = resolveReduceOp('reduceScatter', o.op, dtype);
    if (buf.length % this.size !== 0) {
      throw new InvalidArgumentError(
        `reduceScatter: the buffer's length (${buf.length}) must divide by the communicator size (${this.size}); pad it to ${Math.ceil(buf.length / this.size) * this.size}`,
      );
    }
    if (onDevice) buf.memoryFor('reduceScatter'); // refused before the output is allocated
    const out = (onDevice ? this.device.alloc(dtype, buf.length / this.size) : newLike(buf, buf.length / this.size)) as T;
    const spec: OpSpec = {
      comm: this.#id,
      kind: OP_KIND.reduceScatter,
      dtype: DTYPE_CODES[dtype],
      op: REDUCE_OP_CODES[op],
      ...(onDevice ? { algorithm: resolveDeviceAlgorithm('reduceScatter', buf.kind, undefined) } : {}),
      name: checkName('reduceScatter', o.name),
    };
    await this.#withOutput(out, () => this.#run(spec, toNative('reduceScatter', buf), toNative('reduceScatter', out)));
    return out;
  }

  /**
   * Sends `buf` to rank `dest` (not collective: only `dest` takes part). Resolves once `dest`'s
   * recv has taken the message, so `buf` may be reused then; fails with INVALID_ARGUMENT, on
   * both ranks, when the receiver's buffer is too short, and with TIMEOUT when no matching recv
   * takes it within the timeout. Messages from one rank with one tag arrive in the order sent.
   */
  async send<T extends CollectiveBuffer>(buf: T, dest: number, options?: SendOptions): Promise<void> {
    await this.#run(this.#sendSpec('send', buf, dest, options), buf, undefined);
  }

  /** send for callers that cannot await; blocks until the receiver has taken the message. */
  sendSync<T extends CollectiveBuffer>(buf: T, dest: number, options?: SendOptions): void {
    this.#runSync(this.#sendSpec('sendSync', buf, dest, options), buf, undefined);
  }

  /**
   * Receives one message with the tag from rank `source` (or ANY_SOURCE) into `buf`: resolves to
   * its source, tag and length in elements. A message longer than `buf` fails with
   * INVALID_ARGUMENT here and at the sender (nothing is truncated); a shorter one fills the front.
   */
  async recv<T extends CollectiveBuffer>(buf: T, source: number, options?: RecvOptions): Promise<RecvResult> {
    return (await this.#run(this.#recvSpec('recv', buf, source, options), undefined, buf)) as unknown as RecvResult;
  }

  /** recv for callers that cannot await. */
  recvSync<T extends CollectiveBuffer>(buf: T, source: number, options?: RecvOptions): RecvResult {
    return this.#runSync(this.#recvSpec('recvSync', buf, source, options), undefined, buf) as RecvResult;
  }

  /** A send to `dest` and a receive from `source` at once (a shift along a ring, an exchange with a partner). */
  async sendRecv<T extends CollectiveBuffer, U extends CollectiveBuffer>(
    sendBuf: T,
    dest: number,
    recvBuf: U,
    source: number,
    options?: SendRecvOptions,
  ): Promise<RecvResult> {
    const o: SendRecvOptions = checkOptions('sendRecv', options, ['sendTag', 'recvTag', 'dtype']);
    const sendSpec = this.#sendSpec('sendRecv', sendBuf, dest, { tag: o.sendTag, dtype: o.dtype });
    const recvSpec = this.#recvSpec('sendRecv', recvBuf, source, { tag: o.recvTag, dtype: o.dtype });
    const [, received] = await Promise.all([this.#run(sendSpec, sendBuf, undefined), this.#run(recvSpec, undefined, recvBuf)]);
    return received as unknown as RecvResult;
  }

  #sendSpec(method: string, buf: CollectiveBuffer, dest: number, options: SendOptions | undefined): OpSpec {
    const o = checkOptions(method, options, ['tag', 'dtype']);
    const dtype = resolveDType(method, buf, o.dtype);
    return { comm: this.#id, kind: OP_KIND.send, dtype: DTYPE_CODES[dtype], peer: checkRank(method, 'dest', dest, this.size), tag: checkTag(method, o.tag) };
  }

  #recvSpec(method: string, buf: CollectiveBuffer, source: number, options: RecvOptions | undefined): OpSpec {
    const o = checkOptions(method, options, ['tag', 'dtype']);
    const dtype = resolveDType(method, buf, o.dtype);
    const peer = source === ANY_SOURCE ? ANY_SOURCE : checkRank(method, 'source (or ANY_SOURCE)', source, this.size);
    return { comm: this.#id, kind: OP_KIND.recv, dtype: DTYPE_CODES[dtype], peer, tag: checkTag(method, o.tag) };
  }

  /** Resolves once every rank has called barrier(). */
  async barrier(options?: { name?: string }): Promise<void> {
    const o = checkOptions('barrier', options, ['name']);
    await this.#run({ comm: this.#id, kind: OP_KIND.barrier, name: checkName('barrier', o.name) }, undefined, undefined);
  }

  /**
   * Splits this communicator: ranks passing the same `color` form a new communicator, ordered by
   * `key` (default: this rank), then by rank. A rank passing a negative color gets null.
   * Every rank of this communicator must call it.
   */
  async split(color: number, key: number = this.rank): Promise<Communicator | null> {
    const c = color < 0 && Number.isInteger(color) ? -1 : checkInt32('split', 'color', color, 0);
    const k = checkInt32('split', 'key', key, -0x80000000);
    const result = (await this.#run({ comm: this.#id, kind: OP_KIND.split, color: c, key: k }, undefined, undefined)) as
      | SplitResult
      | null;
    if (result == null) return null;
    return new Communicator(
      this.#addon,
      result.comm,
      { rank: result.rank, size: result.size, localRank: this.localRank, localSize: this.localSize, transport: result.transport, sharedMemory: result.sharedMemory },
      undefined,
      this.#lifetime,
    );
  }

  /**
   * Releases the communicator; later calls on it fail with ABORTED. Closing the world ends MPI
   * for this process (it cannot be initialised again).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.#closed = true;
    if (this.#id === 0) this.#lifetime.worldClosed = true;
    try {
      // Closing the world resolves once MPI is finalized: the script may exit right after.
      await this.#run({ comm: this.#id, kind: OP_KIND.close }, undefined, undefined, true);
    } finally {
      this.#onClose?.();
    }
  }

  #allReduceSpec(method: string, buf: CollectiveBuffer | DeviceBuffer, options: AllReduceOptions | undefined): OpSpec {
    const o = checkOptions(method, options, ['op', 'algorithm', 'dtype', 'name']);
    const onDevice = buf instanceof DeviceBuffer;
    const dtype = onDevice ? resolveDeviceDType(method, buf.dtype, o.dtype) : resolveDType(method, buf, o.dtype);
    const op = resolveReduceOp(method, o.op, dtype);
    let algorithm: number;
    if (onDevice) {
      algorithm = resolveDeviceAlgorithm(method, buf.kind, o.algorithm);
    } else {
      const a = resolveAllReduceAlgorithm(method, o.algorithm);
      // NCCL on host arrays, staged through pinned memory: on the GPU comm.device opens (every
      // rank submits it; where one cannot run it, NCCL's set-up fails every rank alike).
      if (a === 'nccl') void this.device;
      algorithm = ALGORITHM_CODES[a];
    }
    return {
      comm: this.#id,
      kind: OP_KIND.allReduce,
      dtype: DTYPE_CODES[dtype],
      op: REDUCE_OP_CODES[op],
      algorithm,
      name: checkName(method, o.name),
    };
  }

  #broadcastSpec(method: string, buf: CollectiveBuffer | DeviceBuffer, options: BroadcastOptions | undefined): OpSpec {
    const o = checkOptions(method, options, ['root', 'algorithm', 'dtype', 'name']);
    const onDevice = buf instanceof DeviceBuffer;
    const dtype = onDevice ? resolveDeviceDType(method, buf.dtype, o.dtype) : resolveDType(method, buf, o.dtype);
    const root = checkRank(method, 'root', o.root ?? 0, this.size);
    let algorithm: number;
    if (onDevice) {
      algorithm = resolveDeviceAlgorithm(method, buf.kind, o.algorithm);
    } else {
      const a = resolveBroadcastAlgorithm(method, o.algorithm);
      algorithm = a === 'tree' ? ALGORITHM_CODES.tree : ALGORITHM_CODES[a];
    }
    return { comm: this.#id, kind: OP_KIND.broadcast, dtype: DTYPE_CODES[dtype], root, algorithm, name: checkName(method, o.name) };
  }

  #checkOpen(closing = false): void {
    if (closing) return;
    if (this.#lifetime.worldClosed && this.#id !== 0) {
      throw new AbortedError('the world communicator was closed (MPI is finalized), so this communicator split from it can run nothing more');
    }
    if (this.#closed || this.#lifetime.worldClosed) {
      throw new AbortedError('this communicator is closed; create a new one with init() or split()');
    }
  }

  // Errors are made here, after the await, so that V8's async stack trace runs through the
  // public method to the caller's line at no cost per call (a captured stack cost ~3 us).
  async #run(spec: OpSpec, input: NativeBuffer | undefined, output: NativeBuffer | undefined, closing = false) {
    this.#checkOpen(closing);
    try {
      return await this.#addon.submit(encodeOp(spec), spec.name, input, output, false);
    } catch (err) {
      throw remember(fromNative(err));
    }
  }

  #runSync(spec: OpSpec, input: NativeBuffer | undefined, output: NativeBuffer | undefined): unknown {
    this.#checkOpen();
    try {
      return this.#addon.submit(encodeOp(spec), spec.name, input, output, true);
    } catch (err) {
      throw remember(fromNative(err));
    }
  }
}
