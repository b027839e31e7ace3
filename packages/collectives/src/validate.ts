// Argument checks, with messages that say what to pass instead. Everything here runs before
// anything reaches the addon, so a bad call sends nothing.
import {
  ALGORITHM_CODES,
  type AllGatherAlgorithm,
  type AllReduceAlgorithm,
  type BroadcastAlgorithm,
  type DType,
  DTYPE_CODES,
  REDUCE_OP_CODES,
  type ReduceOp,
} from './codes.js';
import { InvalidArgumentError } from './errors.js';

/** The arrays Braid accepts. float16 and bfloat16 travel in a Uint16Array with `dtype` given. */
export type CollectiveBuffer =
  | Float32Array
  | Float64Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Int8Array
  | Uint16Array;

const ARRAY_DTYPE = new Map<Function, DType>([
  [Float32Array, 'float32'],
  [Float64Array, 'float64'],
  [Int32Array, 'int32'],
  [BigInt64Array, 'int64'],
  [Uint8Array, 'uint8'],
  [Int8Array, 'int8'],
]);
const SUPPORTED = 'Float32Array, Float64Array, Int32Array, BigInt64Array, Uint8Array, Int8Array, or a Uint16Array with dtype "float16" or "bfloat16"';
const ALL_REDUCE_ALGORITHMS = "'auto', 'shm', 'ring', 'tree', 'recursive-doubling', 'direct', 'hierarchical', 'mpi' or 'nccl'";

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (ArrayBuffer.isView(value)) return value.constructor.name;
  if (Array.isArray(value)) return 'an Array';
  return typeof value;
}

/** The dtype of `buf`: from its array type, or `given` where the array type allows it. */
export function resolveDType(method: string, buf: unknown, given?: unknown): DType {
  if (!ArrayBuffer.isView(buf) || buf instanceof DataView) {
    throw new InvalidArgumentError(`${method}: the buffer must be a ${SUPPORTED}; got ${describe(buf)}`);
  }
  const ctor = buf.constructor;
  if (given !== undefined && !(typeof given === 'string' && given in DTYPE_CODES)) {
    throw new InvalidArgumentError(
      `${method}: unknown dtype ${JSON.stringify(given)}; use one of ${Object.keys(DTYPE_CODES).join(', ')}`,
    );
  }
  if (ctor === Uint16Array) {
    if (given === 'float16' || given === 'bfloat16') return given;
    throw new InvalidArgumentError(
      `${method}: a Uint16Array carries float16 or bfloat16 values; pass { dtype: 'float16' } or { dtype: 'bfloat16' }`,
    );
  }
  const natural = ARRAY_DTYPE.get(ctor);
  if (natural === undefined) {
    throw new InvalidArgumentError(`${method}: ${ctor.name} is not supported; use a ${SUPPORTED}`);
  }
  if (given !== undefined && given !== natural) {
    throw new InvalidArgumentError(
      `${method}: dtype '${String(given)}' does not fit a ${ctor.name} (its dtype is '${natural}'); drop the dtype option or pass a matching array`,
    );
  }
  return natural;
}

export function resolveReduceOp(method: string, op: unknown, dtype: DType): ReduceOp {
  const value = op ?? 'sum';
  if (typeof value !== 'string' || !(value in REDUCE_OP_CODES)) {
    throw new InvalidArgumentError(`${method}: unknown op ${JSON.stringify(value)}; use 'sum', 'prod', 'min', 'max' or 'avg'`);
  }
  if (value === 'avg' && !(dtype === 'float32' || dtype === 'float64' || dtype === 'float16' || dtype === 'bfloat16')) {
    throw new InvalidArgumentError(
      `${method}: 'avg' needs a floating-point dtype (got '${dtype}'); reduce with 'sum' and divide by comm.size yourself`,
    );
  }
  return value as ReduceOp;
}

export function resolveAllReduceAlgorithm(method: string, algorithm: unknown): AllReduceAlgorithm {
  const value = algorithm ?? 'auto';
  if (typeof value === 'string' && value in ALGORITHM_CODES) return value as AllReduceAlgorithm;
  throw new InvalidArgumentError(
    `${method}: unknown algorithm ${JSON.stringify(value)}; use ${ALL_REDUCE_ALGORITHMS}`,
  );
}

/**
 * The algorithm code for an op on DeviceBuffers: NCCL on a GPU, the host algorithms' 'auto'
 * where host memory stands in for one (BRAID_DEVICE=host).
 */
export function resolveDeviceAlgorithm(method: string, kind: 'cuda' | 'host', algorithm: unknown): number {
  if (algorithm !== undefined && algorithm !== 'auto' && algorithm !== 'nccl') {
    throw new InvalidArgumentError(`${method}: a DeviceBuffer goes by NCCL: algorithm 'auto' or 'nccl'; got ${JSON.stringify(algorithm)}`);
  }
  return kind === 'cuda' ? ALGORITHM_CODES.nccl : ALGORITHM_CODES.auto;
}

/** A DeviceBuffer's dtype, checked against a `dtype` option if one is given. */
export function resolveDeviceDType(method: string, dtype: DType, given: unknown): DType {
  if (given !== undefined && given !== dtype) {
    throw new InvalidArgumentError(`${method}: dtype ${JSON.stringify(given)} does not fit a ${dtype} DeviceBuffer; drop the dtype option`);
  }
  return dtype;
}

export function resolveBroadcastAlgorithm(method: string, algorithm: unknown): BroadcastAlgorithm {
  const value = algorithm ?? 'auto';
  if (value === 'auto' || value === 'tree' || value === 'ring' || value === 'hierarchical') return value;
  throw new InvalidArgumentError(
    `${method}: unknown algorithm ${JSON.stringify(value)}; broadcast takes 'auto', 'tree' (binomial), 'ring' (pipelined chain) or 'hierarchical' (across hosts, then shared memory)`,
  );
}

export function resolveAllGatherAlgorithm(method: string, algorithm: unknown): AllGatherAlgorithm {
  const value = algorithm ?? 'auto';
  if (value === 'auto' || value === 'ring' || value === 'hierarchical') return value;
  throw new InvalidArgumentError(
    `${method}: unknown algorithm ${JSON.stringify(value)}; allGather takes 'auto', 'ring' or 'hierarchical' (across hosts, then shared memory)`,
  );
}

export function checkRank(method: string, what: string, value: unknown, size: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= size) {
    throw new InvalidArgumentError(
      `${method}: ${what} must be an integer rank from 0 to ${size - 1} (the communicator has ${size} rank${size === 1 ? '' : 's'}); got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

export function checkName(method: string, name: unknown): string {
  if (name === undefined) return '';
  if (typeof name !== 'string') throw new InvalidArgumentError(`${method}: name must be a string; got ${describe(name)}`);
  return name;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/** The known name closest to `name` (case ignored), if it is close enough to be a misspelling. */
export function nearestName(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

/**
 * `options` as a plain object, refusing keys that are not in `known` with INVALID_ARGUMENT naming
 * the key and the nearest known one: a misspelt option would otherwise be silently ignored.
 */
export function checkOptions(method: string, options: unknown, known?: readonly string[]): Record<string, unknown> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new InvalidArgumentError(`${method}: options must be an object; got ${describe(options)}`);
  }
  if (known) {
    for (const key of Object.keys(options)) {
      if (known.includes(key)) continue;
      const near = nearestName(key, known);
      throw new InvalidArgumentError(
        `${method}: unknown option '${key}'${near ? `; did you mean '${near}'?` : ''} (known options: ${known.join(', ')})`,
      );
    }
  }
  return options as Record<string, unknown>;
}

export function checkInt32(method: string, what: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > 0x7fffffff) {
    throw new InvalidArgumentError(`${method}: ${what} must be an integer from ${min} to 2147483647; got ${JSON.stringify(value)}`);
  }
  return value;
}
