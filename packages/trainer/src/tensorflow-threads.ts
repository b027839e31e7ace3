// TensorFlow's thread pools for a rank. TensorFlow sizes them once, from TF_NUM_INTRAOP_THREADS
// and TF_NUM_INTEROP_THREADS, when tfjs-node is first loaded; N ranks on a host each taking every
// core would oversubscribe it N times over. This module imports nothing heavy: `braid run` loads
// it before the script (node --import), so the share holds even for a script that imports
// tfjs-node first thing.
import { availableParallelism } from 'node:os';

export interface ThreadOptions {
  /** TensorFlow's intra-op threads (default: the host's cores / ranks on this host, at least 1). */
  intraOpThreads?: number;
  /** TensorFlow's inter-op threads (default: as intra-op). */
  interOpThreads?: number;
}

/** Ranks on this host, from the launcher's environment (Open MPI, MPICH / Hydra, Slurm); 1 outside a job. */
export function localRanks(env: NodeJS.ProcessEnv = process.env): number {
  for (const name of ['OMPI_COMM_WORLD_LOCAL_SIZE', 'MPI_LOCALNRANKS', 'SLURM_NTASKS_PER_NODE']) {
    const n = Number(env[name]);
    if (Number.isInteger(n) && n > 0) return n;
  }
  return 1;
}

/** TensorFlow's thread counts for this rank: explicit options, then the environment's, then the core share. */
export function tensorflowThreads(options: ThreadOptions = {}, env: NodeJS.ProcessEnv = process.env, cores = availableParallelism()): { intraOp: number; interOp: number } {
  for (const [key, value] of Object.entries({ intraOpThreads: options.intraOpThreads, interOpThreads: options.interOpThreads })) {
    if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
      throw new RangeError(`${key} must be a positive integer; got ${String(value)}`);
    }
  }
  const share = Math.max(1, Math.floor(cores / localRanks(env)));
  const fromEnv = (name: string) => {
    const n = Number(env[name]);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  };
  const intraOp = options.intraOpThreads ?? fromEnv('TF_NUM_INTRAOP_THREADS') ?? share;
  const interOp = options.interOpThreads ?? fromEnv('TF_NUM_INTEROP_THREADS') ?? intraOp;
  return { intraOp, interOp };
}

/** Sets the thread counts (and quiets TensorFlow's start-up notices) for a tfjs-node not yet loaded. */
export function applyTensorflowThreads(threads = tensorflowThreads(), env: NodeJS.ProcessEnv = process.env): void {
  env.TF_NUM_INTRAOP_THREADS = String(threads.intraOp);
  env.TF_NUM_INTEROP_THREADS = String(threads.interOp);
  // The oneDNN and CPU-feature notices, once per rank, would bury the job's own output.
  env.TF_CPP_MIN_LOG_LEVEL ??= '2';
}
