/** Folder holding the addon and the native test and benchmark programs. */
export declare const buildDir: string;

export interface StartOptions {
  timeoutMs?: number;
  stallWarningMs?: number;
  negotiate?: boolean;
  sharedMemory?: boolean;
  segmentBytes?: number;
  timeline?: string;
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
}

export interface SplitResult {
  comm: number;
  rank: number;
  size: number;
}

export type NativeBuffer = ArrayBufferView;

export interface Addon {
  start(options: StartOptions): WorldInfo;
  submit(spec: OpSpec, input: NativeBuffer | undefined, output: NativeBuffer | undefined, sync: true): SplitResult | number | null | undefined;
  submit(spec: OpSpec, input: NativeBuffer | undefined, output: NativeBuffer | undefined, sync: false): Promise<SplitResult | null | undefined>;
  info(): { isa: string; cuda: { compiled: boolean; devices: number }; mpi: { library: string; standard: string } };
  shutdown(): void;
}

/** The addon; throws an Error with code 'BACKEND_UNAVAILABLE' saying how to build it. */
export declare function loadAddon(): Addon;
