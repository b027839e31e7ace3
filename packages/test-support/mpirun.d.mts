export interface MpiRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** What each rank wrote to <dir>/rank-<r>.json, ordered by rank (missing ranks are skipped). */
  results: Array<Record<string, any>>;
  /** The folder given to the script as its last argument (already removed unless options.dir named it). */
  dir: string;
  ms: number;
}

export interface MpiRunOptions {
  env?: Record<string, string>;
  timeoutMs?: number;
  /** Use this folder instead of a fresh temporary one (which is removed once the ranks' reports are read). */
  dir?: string;
}

/**
 * Starts `mpirun -np <np> node <script> ...args <dir>` (oversubscribed, allowed as root) and
 * collects <dir>/rank-<r>.json from every rank. Kills the job after `timeoutMs`.
 */
export function mpirunScript(np: number, script: string, args: string[], options?: MpiRunOptions): Promise<MpiRun>;

/**
 * Removes the Open MPI folders (/dev/shm/mpirun-test-<pid>-*) of test processes that are gone (killed
 * before their job ended); returns how many. mpirunScript calls it before each job.
 */
export function removeOrphanedOpenMpiFolders(dir?: string): number;

/** Writes `result` to <dir>/rank-<result.rank>.json (each rank its own file: mpirun interleaves long lines). */
export function report(dir: string, result: { rank: number } & Record<string, unknown>): void;

/**
 * Runs `scenarios[name]()` and reports { rank, size, scenario, ok, ms, ...result } (or the error)
 * for this rank, then closes the communicator.
 */
export function runScenario(
  comm: { rank: number; size: number; close(): Promise<void> },
  dir: string,
  name: string,
  scenarios: Record<string, () => Promise<Record<string, unknown>>>,
): Promise<void>;

/** sha256 (16 hex digits) of typed arrays or tensors' data, in order. */
export function digest(values: Iterable<ArrayBufferView | { dataSync(): ArrayBufferView }>): string;

/** A seeded uniform generator in [0, 1) (mulberry32). */
export function seededRandom(seed: number): () => number;

/** This process's environment less what an MPI init here (a world of one) added to it. */
export function inheritedEnv(): Record<string, string>;
