// The ranks' side of `braid run --elastic` (issue 11). The launcher reads what the ranks tell it
// from mpirun's stderr, in lines of their own that it does not pass on:
//
//   braid-elastic ready                 this rank can stop at a commit when asked (handler set)
//   braid-elastic step N                rank 0's global step (at most every STEP_EVERY_MS)
//   braid-elastic commit N              rank 0: a commit at global step N is on disk
//   braid-elastic resumed N             rank 0: this run goes on from the commit at step N
//   braid-elastic resize N              rank 0: every rank stops after the commit at step N
//
// and asks the job to stop at its next commit (new hosts are there) with SIGUSR2, which mpirun
// forwards to every rank. A rank may get it a moment before or after the others: at each commit
// the ranks agree (one all-reduce) whether any rank got it, and all stop there together, exiting
// 0 after MPI is finalized; the launcher then starts the job again, larger.
import type { Communicator } from '@braid/collectives';

/** Set (to the run's attempt number, 1 on the first) by `braid run --elastic` in every rank's environment. */
export const ELASTIC_ENV = 'BRAID_ELASTIC';
export const ELASTIC_MARK = 'braid-elastic';
/** The signal that asks for a stop at the next commit (SIGUSR1 is Node's inspector's). */
export const RESIZE_SIGNAL = 'SIGUSR2';
const STEP_EVERY_MS = 100;

export type ElasticMark =
  | { kind: 'ready' }
  | { kind: 'step' | 'commit' | 'resumed' | 'resize'; step: number };

/** The mark on one line of mpirun's stderr, or undefined when the line is not one. */
export function parseElasticMark(line: string): ElasticMark | undefined {
  const m = new RegExp(`^${ELASTIC_MARK} (ready|step|commit|resumed|resize)(?: (\\d+))?$`).exec(line.trim());
  if (!m) return undefined;
  if (m[1] === 'ready') return { kind: 'ready' };
  if (m[2] === undefined) return undefined;
  return { kind: m[1] as 'step', step: Number(m[2]) };
}

/** Whether this process runs under `braid run --elastic`. */
export function underElasticLauncher(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env[ELASTIC_ENV]);
}

let resizeAsked = false;
let listening = false;
let lastStepMark = 0;

function mark(text: string): void {
  process.stderr.write(`${ELASTIC_MARK} ${text}\n`);
}

/**
 * Under the elastic launcher: listens for its request to stop at the next commit and tells it
 * this rank can (called by fit and ElasticState before the first step). Elsewhere: nothing.
 */
export function joinElasticRun(): void {
  if (!underElasticLauncher() || listening) return;
  listening = true;
  process.on(RESIZE_SIGNAL, () => {
    resizeAsked = true;
  });
  mark('ready');
}

/** Rank 0 tells the launcher where training is (throttled; `force` for every commit-related step). */
export function reportStep(comm: Communicator, step: number, kind: 'step' | 'commit' | 'resumed' = 'step'): void {
  if (!listening || comm.rank !== 0) return;
  const now = Date.now();
  if (kind === 'step' && now - lastStepMark < STEP_EVERY_MS) return;
  lastStepMark = now;
  mark(`${kind} ${step}`);
}

/**
 * At a commit (every rank, the commit on disk): whether the launcher asked any rank to stop here.
 * All ranks get the same answer (an all-reduce of the flags). Outside an elastic run: false, no
 * collective.
 */
export async function resizeAgreed(comm: Communicator): Promise<boolean> {
  if (!listening) return false;
  const flag = new Float64Array([resizeAsked ? 1 : 0]);
  await comm.allReduce(flag, { op: 'max' });
  return flag[0] === 1;
}

/** Ends this rank for the launcher's restart: rank 0 says so, MPI is finalized on exit, status 0. */
export function stopForResize(comm: Communicator, step: number): never {
  if (comm.rank === 0) mark(`resize ${step}`);
  process.exit(0);
}

/** For tests: forget what this process was told. */
export function resetElasticWorkerForTests(): void {
  resizeAsked = false;
  listening = false;
  lastStepMark = 0;
}
