// Buffers on the GPU (issue 14): comm.device.alloc(dtype, length) gives a DeviceBuffer, and every
// collective takes one, run by NCCL on the device (the addon's engine/nccl_ops.cc). With
// BRAID_DEVICE=host the same API stands on host memory, run by the host algorithms: for tests and
// development on machines without a GPU.
import type { Addon, DeviceInfo, DeviceMemory } from '@braid/native';

import { type DType, DTYPE_CODES } from './codes.js';
import { BackendUnavailableError, fromNative, InvalidArgumentError } from './errors.js';

const BYTES: Record<DType, number> = { float32: 4, float64: 8, int32: 4, int64: 8, uint8: 1, int8: 1, float16: 2, bfloat16: 2 };
const ARRAY_OF: Record<DType, new (length: number) => DeviceArray> = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  int8: Int8Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
};

/** The host arrays a DeviceBuffer's values come from and go to (float16 / bfloat16 in a Uint16Array). */
export type DeviceArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Uint16Array;

function native<T>(call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw fromNative(err);
  }
}

/** `length` values of `dtype` in device memory. Free it with free() (or let it be collected). */
export class DeviceBuffer {
  readonly dtype: DType;
  readonly length: number;
  readonly byteLength: number;
  /** Where it lives: 'cuda' (a GPU) or 'host' (BRAID_DEVICE=host). */
  readonly kind: 'cuda' | 'host';
  readonly #addon: Addon;
  readonly #memory: DeviceMemory;
  #freed = false;

  /** @internal Use comm.device.alloc(). */
  constructor(addon: Addon, memory: DeviceMemory, dtype: DType, length: number, kind: 'cuda' | 'host') {
    this.#addon = addon;
    this.#memory = memory;
    this.dtype = dtype;
    this.length = length;
    this.byteLength = length * BYTES[dtype];
    this.kind = kind;
  }

  /** True once free() was called. */
  get freed(): boolean {
    return this.#freed;
  }

  /** @internal The memory, for the addon's ops. */
  memoryFor(method: string): DeviceMemory {
    if (this.#freed) throw new InvalidArgumentError(`${method}: the DeviceBuffer was freed; allocate a new one with comm.device.alloc()`);
    return this.#memory;
  }

  /** Copies `values` into the buffer from element `offset` (default 0); returns the buffer. */
  upload(values: DeviceArray, offset = 0): this {
    this.#checkArray('upload', values, offset);
    native(() => this.#addon.deviceCopy(this.memoryFor('upload'), values, offset * BYTES[this.dtype], true));
    return this;
  }

  /**
   * Copies the buffer's values from element `offset` into `into` (default: a new array of the
   * rest of the buffer) and returns it.
   */
  download<T extends DeviceArray>(into?: T, offset = 0): T {
    const target = (into ?? new ARRAY_OF[this.dtype](this.length - checkOffset('download', offset, this.length))) as T;
    this.#checkArray('download', target, offset);
    native(() => this.#addon.deviceCopy(this.memoryFor('download'), target, offset * BYTES[this.dtype], false));
    return target;
  }

  /** Releases the device memory now; using the buffer afterwards is an error. A second call does nothing. */
  free(): void {
    if (this.#freed) return;
    native(() => this.#addon.deviceFree(this.#memory));
    this.#freed = true;
  }

  #checkArray(method: string, values: unknown, offset: number): void {
    const want = ARRAY_OF[this.dtype];
    if (!(values instanceof want)) {
      const got = ArrayBuffer.isView(values) ? values.constructor.name : typeof values;
      throw new InvalidArgumentError(`${method}: a ${this.dtype} DeviceBuffer takes a ${want.name}; got ${got}`);
    }
    checkOffset(method, offset, this.length);
    if (offset + values.length > this.length) {
      throw new InvalidArgumentError(
        `${method}: ${values.length} values from element ${offset} run past the DeviceBuffer's ${this.length}; pass a shorter array or a smaller offset`,
      );
    }
  }
}

function checkOffset(method: string, offset: unknown, length: number): number {
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0 || offset > length) {
    throw new InvalidArgumentError(`${method}: offset must be an integer from 0 to ${length}; got ${JSON.stringify(offset)}`);
  }
  return offset;
}

/** This process's device: a GPU (one rank a GPU, by local rank) or host memory standing in for one. */
export class Device {
  /** 'cuda': a GPU; 'host': BRAID_DEVICE=host; 'none': no device (`reason` says why). */
  readonly kind: 'cuda' | 'host' | 'none';
  /** The GPU's index among the visible ones (CUDA_VISIBLE_DEVICES applies); -1 without one. */
  readonly index: number;
  /** Why there is no device, when kind is 'none'. */
  readonly reason: string | undefined;
  readonly #addon: Addon;

  /** @internal Use comm.device. */
  constructor(addon: Addon, info: DeviceInfo) {
    this.#addon = addon;
    this.kind = info.kind;
    this.index = info.kind === 'none' ? -1 : info.index;
    this.reason = info.error;
  }

  get available(): boolean {
    return this.kind !== 'none';
  }

  /** A new DeviceBuffer of `length` values of `dtype` (contents undefined until uploaded). */
  alloc(dtype: DType, length: number): DeviceBuffer {
    if (typeof dtype !== 'string' || !(dtype in DTYPE_CODES)) {
      throw new InvalidArgumentError(`alloc: unknown dtype ${JSON.stringify(dtype)}; use one of ${Object.keys(DTYPE_CODES).join(', ')}`);
    }
    if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0) {
      throw new InvalidArgumentError(`alloc: length must be a whole number of values, 0 or more; got ${JSON.stringify(length)}`);
    }
    if (this.kind === 'none') throw new BackendUnavailableError(`alloc: no device: ${this.reason}`);
    const memory = native(() => this.#addon.deviceAlloc(length * BYTES[dtype]));
    return new DeviceBuffer(this.#addon, memory, dtype, length, this.kind);
  }
}

let opened: Device | undefined;
let requested: number | undefined;

/** @internal init's `device` option: the GPU to open instead of the local rank's. */
export function requestDevice(index: number | undefined): void {
  requested = index;
}

/** @internal */
export function requestedDevice(): number | undefined {
  return requested;
}

/** @internal The process's device, opened on first use (one for every communicator). */
export function openDevice(addon: Addon, localRank: number, requested: number | undefined): Device {
  opened ??= new Device(addon, native(() => addon.deviceOpen(localRank, requested ?? -1)));
  return opened;
}
