/** Folder holding the addon and the native test and benchmark programs. */
export declare const buildDir: string;

export interface StartOptions {
  timeoutMs?: number;
  stallWarningMs?: number;
  stallShutdownMs?: number;
  negotiate?: boolean;
  sharedMemory?: boolean;
  segmentBytes?: number;
  timeline?: string;
  /** 'auto' (TCP between hosts), 'tcp' or 'mpi'. */
  transport?: string;
  /** NCCL_SOCKET_IFNAME-style interface list for the TCP transport. */
  socketInterfaces?: string;
  /** Connections per pair of ranks (1-8). */
  socketStreams?: number;
  /** The cost profile this rank read (rank 0's is used by every rank). */
  profile?: ProfileNumbers;
  /** Why this rank could not read its profile (fails every rank if it is rank 0's). */
  profileError?: string;
}

/** A cost profile's numbers (what `braid calibrate` measures; see native/src/algorithms/cost_model.h). */
export interface ProfileNumbers {
  /** One pair alone, between hosts and within one. */
  networkAlphaUs: number;
  networkBetaUsPerByte: number;
  localAlphaUs: number;
  localBetaUsPerByte: number;
  /**
   * The algorithms' exchanges with every rank at once, on the placement calibrated
   * (calibratedHosts x calibratedPerHost; 0: not measured): a ring step, all crossing to the next
   * host, all within their host.
   */
  ringStepAlphaUs: number;
  ringStepBetaUsPerByte: number;
  crossAllAlphaUs: number;
  crossAllBetaUsPerByte: number;
  localAllAlphaUs: number;
  localAllBetaUsPerByte: number;
  shmBarrierUs: number;
  shmCopyUsPerByte: number;
  gammaUsPerByte: number;
  opUs: number;
  /** The share (0-1) of the shorter phase a pipelined hierarchical all-reduce hides. */
  overlap: number;
  calibratedHosts: number;
  calibratedPerHost: number;
  /** The loaded links' measured [bytes, microseconds] (from the profile's `measured`), interpolated. */
  ringStepCurve?: Array<[number, number]>;
  crossAllCurve?: Array<[number, number]>;
  localAllCurve?: Array<[number, number]>;
  /** The staged NCCL all-reduce of host arrays, whole-op times (where calibrate found GPUs and NCCL). */
  ncclStagedCurve?: Array<[number, number]>;
  /** Every rank to every other at once (the direct all-reduce's exchange, the agreement's over TCP). */
  allPeersCurve?: Array<[number, number]>;
}

export interface WorldInfo {
  rank: number;
  size: number;
  localRank: number;
  localSize: number;
  threadLevel: number;
  mpiLibrary: string;
  negotiate: boolean;
  sharedMemory: boolean;
  /** Whether the world communicator has a shared-memory region (shared memory on, all ranks on one host). */
  commSharedMemory: boolean;
  /** What the world's point-to-point data goes over. */
  transport: 'tcp' | 'mpi';
}

/** One op, as numbers (see @braid/collectives' codes.ts). */
export interface OpSpec {
  comm: number;
  kind: number;
  dtype?: number;
  op?: number;
  algorithm?: number;
  root?: number;
  name?: string;
  color?: number;
  key?: number;
  /** kind 7 (benchmarks): how many MPI_Allreduce calls to make back to back from C. */
  iterations?: number;
  /** kinds 8 and 9 (send, recv): the other rank (-1 for recv: any). */
  peer?: number;
  /** kinds 8 and 9: the message's tag, 0-32767. */
  tag?: number;
}

/** What a recv resolves to. */
export interface RecvResult {
  source: number;
  tag: number;
  /** Elements received (of the buffer's dtype). */
  length: number;
}

/** The numeric fields of `spec` as Addon.submit takes them; the array is reused by the next call. */
export function encodeOp(spec: OpSpec): Int32Array;

export interface SplitResult {
  comm: number;
  rank: number;
  size: number;
  transport: 'tcp' | 'mpi';
  /** Whether the new communicator has a shared-memory region. */
  sharedMemory: boolean;
}

/**
 * Secure aggregation's masking fused into a shared-memory all-reduce (submit's last argument):
 * the input is the masked int32 vector (n + 1 words), the output the n float32 values, masked
 * chunk by chunk on the way in and unmasked into the output on the way out.
 */
export interface SecureMaskParams {
  scale: number;
  /** 0: no clipping. */
  clip: number;
  limit: number;
  /** 16 bytes a peer, in rank order. */
  keys: Uint8Array;
  /** +1 where this rank is the lower of the pair, -1 where the higher. */
  signs: Int8Array;
  call: number;
  /** What the int32 sum is divided by: the scale, or scale x size for an average. */
  divisor: number;
}

export type NativeBuffer = ArrayBufferView | DeviceMemory;

/** A DeviceBuffer's memory: opaque, made by deviceAlloc. */
export interface DeviceMemory {
  readonly __braidDeviceMemory: never;
}

/** This process's device, as deviceOpen found it. */
export interface DeviceInfo {
  kind: 'cuda' | 'host' | 'none';
  index: number;
  /** GPUs visible to the process. */
  count: number;
  /** Why there is no device (kind 'none'). */
  error?: string;
}

/** Where NCCL was found (loaded at run time), or why it was not. */
export interface NcclStatus {
  available: boolean;
  /** "2.30.7" when available. */
  version?: string;
  versionCode?: number;
  path?: string;
  /** Why no library is usable: what was searched, and why each one found was refused. */
  error?: string;
  searched: string[];
}

export interface Addon {
  start(options: StartOptions): WorldInfo;
  /** `fields` from encodeOp(spec); `name` is spec.name. */
  submit(fields: Int32Array, name: string | undefined, input: NativeBuffer | undefined, output: NativeBuffer | undefined, sync: true, mask?: SecureMaskParams): SplitResult | number | null | undefined;
  submit(fields: Int32Array, name: string | undefined, input: NativeBuffer | undefined, output: NativeBuffer | undefined, sync: false, mask?: SecureMaskParams): Promise<SplitResult | null | undefined>;
  info(): { isa: string; cuda: { compiled: boolean; devices: number }; mpi: { library: string; standard: string }; nccl: NcclStatus };
  /**
   * Looks for NCCL as the process would (or in `candidates`: paths, or a bare soname for the
   * dynamic loader's search), without keeping the result: for tests and `braid doctor`.
   */
  ncclProbe(candidates?: string[]): NcclStatus;
  /**
   * Opens this process's device once (later calls return the same): GPU `requested` (>= 0) or
   * the local rank's; BRAID_DEVICE=host stands host memory in for it.
   */
  deviceOpen(localRank: number, requested: number): DeviceInfo;
  deviceAlloc(bytes: number): DeviceMemory;
  /** Frees it now; refused while an op uses it; a no-op the second time. */
  deviceFree(memory: DeviceMemory): void;
  /** Upload (toDevice) or download `array`'s bytes at `byteOffset` of the memory; synchronous. */
  deviceCopy(memory: DeviceMemory, array: ArrayBufferView, byteOffset: number, toDevice: boolean): void;
  /**
   * allReduceCompressed on DeviceBuffers (@braid/compression): writes x's payload (header: its
   * first 28 bytes) into `payload`; with a residual, error feedback (x += residual first).
   */
  deviceEncode(header: Uint8Array, x: DeviceMemory, n: number, residual: DeviceMemory | null, payload: DeviceMemory, payloadBytes: number): void;
  /** Checks the `ranks` gathered payloads against `header` and writes their sum, times factor, into out. */
  deviceDecodeSum(header: Uint8Array, gathered: DeviceMemory, ranks: number, payloadBytes: number, out: DeviceMemory, n: number, factor: number): void;
  /** x -> half words (with error feedback through `residual`), or back with fromWire. */
  deviceCastHalf(x: DeviceMemory, n: number, wire: DeviceMemory, bfloat16: boolean, fromWire: boolean, residual: DeviceMemory | null): void;
  /** PowerSGD's products on the device: 'p' (m, qt -> pt), 'q' (m, pt -> qt), 'reconstruct' (pt, qt -> the first n of out). */
  devicePower(step: 'p' | 'q' | 'reconstruct', a: DeviceMemory, rows: number, cols: number, r: number, b: DeviceMemory, out: DeviceMemory, n?: number): void;
  /** float32 element-wise steps and byte copies on device memory. */
  deviceElementwise(op: 'add' | 'subtract', a: DeviceMemory, b: DeviceMemory, out: DeviceMemory, n: number): void;
  deviceElementwise(op: 'scale', out: DeviceMemory, n: number, factor: number): void;
  deviceElementwise(op: 'copy', to: DeviceMemory, from: DeviceMemory, bytes: number): void;
  deviceElementwise(op: 'zero', memory: DeviceMemory, bytes: number): void;
  /**
   * Ends the engine and finalizes MPI; false if that did not finish within the bound. Given an
   * exit code (the process 'exit' hook), a finalization that cannot finish ends the process.
   */
  shutdown(exitCode?: number): boolean;
  /** The cost model's numbers when no profile gives them. */
  costDefaults(): ProfileNumbers;
  /** The cost model's all-reduce time in microseconds (`braid plan`); no MPI involved. */
  predict(query: {
    algorithm: 'ring' | 'recursive-doubling' | 'tree' | 'shm' | 'hierarchical' | 'direct' | 'nccl';
    ranks: number;
    hosts: number;
    perHost: number;
    sharedMemory?: boolean;
    hierarchy?: boolean;
    /** Ranks on several hosts over Braid's TCP transport: the direct all-reduce carries the agreement. */
    directCarriesAgreement?: boolean;
    /** Every rank has its GPU and NCCL ('nccl': the staged all-reduce of host arrays, measured times only). */
    ncclReady?: boolean;
    overlapped?: boolean;
    bytes: number;
    profile?: ProfileNumbers;
  }): number;
  /** The compression kernels (synchronous, on the caller's thread; arguments checked by @braid/compression). */
  compress: CompressKernels;
}

export interface CompressKernels {
  /** The vector ISA the kernels run with: 'avx512', 'avx2' or 'generic'. */
  isa: string;
  castToHalf(input: Float32Array, output: Uint16Array, bfloat16: boolean): void;
  /** Whether secureMask and secureUnmask can run here (x86 with AES-NI and AVX2). */
  secureMaskAvailable: boolean;
  /**
   * Secure aggregation's masking (SecureAggregator): `out` (values.length + 1 elements) gets the
   * values in fixed point (floor(v x scale + 0.5), clipped to +-clip first unless clip is 0; beyond
   * +-limit or NaN: counted, stored as +-limit), the count as its last element, then each peer's
   * AES-256-CTR keystream (32-byte key each in `keys`; counter block: `call` big-endian, then the
   * block index big-endian) added (sign +1) or subtracted (-1) mod 2^32. Returns the count.
   */
  secureMask(values: Float32Array, out: Int32Array, scale: number, clip: number, limit: number, keys: Uint8Array, signs: Int8Array, call: number): number;
  /**
   * Words [from, to) of what secureMask writes, into `out` (to - from elements): the masked
   * all-reduce's chunks. `beyondBefore`: values beyond the range in words before `from` (the count
   * word, written when the range reaches it, holds them all). Returns the count among these.
   */
  secureMaskRange(values: Float32Array, out: Int32Array, scale: number, clip: number, limit: number, keys: Uint8Array, signs: Int8Array, call: number, from: number, to: number, beyondBefore: number): number;
  /** values[i] = sum[i] / divisor, divided in double and rounded to float32 (as JavaScript does). */
  secureUnmask(sum: Int32Array, values: Float32Array, divisor: number): void;
  castFromHalf(input: Uint16Array, output: Float32Array, bfloat16: boolean, accumulate: boolean): void;
  sumSquares(x: Float32Array): number;
  sumAbs(x: Float32Array): number;
  int8Encode(x: Float32Array, blockSize: number, scales: Float32Array, codes: Int8Array): void;
  int8Decode(codes: Int8Array, scales: Float32Array, blockSize: number, output: Float32Array, accumulate: boolean): void;
  signEncode(x: Float32Array, bits: Uint8Array): void;
  signDecode(bits: Uint8Array, scale: number, output: Float32Array, accumulate: boolean): void;
  qsgdEncode(x: Float32Array, norm: number, levels: number, seedA: number, seedB: number, codes: Int8Array | Int16Array): void;
  qsgdDecode(codes: Int8Array | Int16Array, norm: number, levels: number, output: Float32Array, accumulate: boolean): void;
  topk(x: Float32Array, k: number, indices: Uint32Array, values: Float32Array): void;
  randomk(n: number, k: number, seedA: number, seedB: number, indices: Uint32Array): void;
  gather(x: Float32Array, indices: Uint32Array, values: Float32Array): void;
  /** false when an index is out of range or the indices do not ascend. */
  scatter(indices: Uint32Array, values: Float32Array, output: Float32Array, accumulate: boolean): boolean;
  subtract(a: Float32Array, b: Float32Array, output: Float32Array): void;
  add(a: Float32Array, b: Float32Array, output: Float32Array): void;
  checksum(bytes: Uint8Array): number;
  powerP(m: Float32Array, rows: number, cols: number, qt: Float32Array, rank: number, pt: Float32Array): void;
  powerQ(m: Float32Array, rows: number, cols: number, pt: Float32Array, rank: number, qt: Float32Array): void;
  orthonormalize(pt: Float32Array, rank: number, rows: number): void;
  powerReconstruct(pt: Float32Array, qt: Float32Array, rank: number, rows: number, cols: number, output: Float32Array, accumulate: boolean): void;
}

/** The addon; throws an Error with code 'BACKEND_UNAVAILABLE' saying how to build it. */
export declare function loadAddon(): Addon;
