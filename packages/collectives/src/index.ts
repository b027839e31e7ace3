import { loadAddon, type StartOptions } from '@braid/native';

import { hostname } from 'node:os';

import { Communicator, processFailures } from './communicator.js';
import { requestDevice } from './device.js';
import { AbortedError, BackendUnavailableError, fromNative, InvalidArgumentError } from './errors.js';
import { readProfile } from './profile.js';
import { checkOptions } from './validate.js';

export { ANY_SOURCE, Communicator, MAX_TAG } from './communicator.js';
export { Device, DeviceBuffer, type DeviceArray } from './device.js';
export { BRAID_VERSION, PROFILE_FIELDS, PROFILE_FORMAT, PROFILE_VERSION, readProfile } from './profile.js';
export type { Profile, ProfileNumbers } from './profile.js';
export type { AllReduceOptions, BroadcastOptions, GatherOptions, RecvOptions, RecvResult, ReduceScatterOptions, SendOptions, SendRecvOptions } from './communicator.js';
export type { AllGatherAlgorithm, AllReduceAlgorithm, BroadcastAlgorithm, DType, ReduceOp } from './codes.js';
export {
  AbortedError,
  BackendUnavailableError,
  BraidError,
  type BraidErrorCode,
  CorruptPayloadError,
  InvalidArgumentError,
  MismatchError,
  TimeoutError,
} from './errors.js';
export type { CollectiveBuffer } from './validate.js';
export { checkOptions } from './validate.js';
export { agreeOnSuccess } from './agree.js';

export interface InitOptions {
  /** An op not finished by then fails with TIMEOUT on the ranks that made it. Default 120000, or BRAID_TIMEOUT_MS. */
  timeoutMs?: number;
  /**
   * After this long, a waiting rank prints which ranks have not submitted which op (by name), or,
   * while data moves, which rank and host it has stopped hearing from. Default 30000, or
   * BRAID_STALL_WARNING_MS.
   */
  stallWarningMs?: number;
  /**
   * When a rank has not submitted an op for this long, the waiting ranks end the whole job
   * (MPI_Abort) with a message naming it, as Horovod's stall shutdown does. Default 0 (never), or
   * BRAID_STALL_SHUTDOWN_MS. Shorter than timeoutMs to matter.
   */
  stallShutdownMs?: number;
  /** Write a Chrome trace of every op to this file (world rank 0). Default: BRAID_TIMELINE. */
  timeline?: string;
  /**
   * Check before each op that all ranks submitted the same one (default true; BRAID_NEGOTIATION=off
   * turns it off). Without it a disagreement is not reported and can hang or corrupt: keep it on
   * except to measure its cost.
   */
  negotiate?: boolean;
  /**
   * Use shared memory among ranks on one host, for the agreement step and the 'shm' all-reduce
   * (default true; BRAID_SHM=off turns it off and everything goes through MPI).
   */
  sharedMemory?: boolean;
  /**
   * What data between ranks on different hosts goes over (default BRAID_TRANSPORT, else 'auto'):
   * 'auto' is Braid's own TCP transport between hosts and MPI on one host; 'tcp' uses TCP even on
   * one host (loopback); 'mpi' sends everything through MPI. BRAID_SOCKET_IFNAME picks the
   * interface (as NCCL_SOCKET_IFNAME: "eth0", "=eth0", "^docker") and BRAID_SOCKET_NSTREAMS the
   * connections per pair of ranks (1-8, default 1).
   */
  transport?: 'auto' | 'tcp' | 'mpi';
  /**
   * A cost profile from `braid calibrate` (default BRAID_PROFILE): `auto` then picks the
   * algorithm its model predicts fastest. Rank 0's profile is every rank's; a profile rank 0
   * cannot read fails init on every rank.
   */
  profile?: string;
  /**
   * The GPU this rank's DeviceBuffers live on (comm.device), by index among the visible ones;
   * default: the rank's local rank, one rank a GPU.
   */
  device?: number;
}

let world: Communicator | undefined;
let ended = false;

function envInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new InvalidArgumentError(`${name} must be a positive integer (milliseconds); got ${JSON.stringify(raw)}`);
  }
  return value;
}

function positive(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > 0x7fffffff) {
    throw new InvalidArgumentError(`init: ${name} must be a positive integer number of milliseconds; got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * Starts Braid (and MPI) in this process and resolves to the world communicator. Under
 * `mpirun -np N` (or `braid run`) the world has N ranks; a plain `node script.js` is a world of
 * one. Calling it again resolves to the same communicator.
 */
export async function init(options: InitOptions = {}): Promise<Communicator> {
  checkOptions('init', options, ['timeoutMs', 'stallWarningMs', 'stallShutdownMs', 'timeline', 'negotiate', 'sharedMemory', 'transport', 'profile', 'device']);
  if (options.device !== undefined && (typeof options.device !== 'number' || !Number.isInteger(options.device) || options.device < 0)) {
    throw new InvalidArgumentError(`init: device must be a GPU index, 0 or more; got ${JSON.stringify(options.device)}`);
  }
  if (world && !world.closed) return world;
  requestDevice(options.device);
  if (ended) {
    throw new AbortedError('the world communicator was closed and MPI cannot be started twice in one process');
  }
  const negotiation = process.env.BRAID_NEGOTIATION;
  if (negotiation !== undefined && negotiation !== '' && negotiation !== 'on' && negotiation !== 'off') {
    throw new InvalidArgumentError(`BRAID_NEGOTIATION must be 'on' or 'off'; got ${JSON.stringify(negotiation)}`);
  }
  const shm = process.env.BRAID_SHM;
  if (shm !== undefined && shm !== '' && shm !== 'on' && shm !== 'off') {
    throw new InvalidArgumentError(`BRAID_SHM must be 'on' or 'off'; got ${JSON.stringify(shm)}`);
  }
  const transports = ['auto', 'tcp', 'mpi'];
  if (options.transport !== undefined && !transports.includes(options.transport)) {
    throw new InvalidArgumentError(`init: transport must be 'auto', 'tcp' or 'mpi'; got ${JSON.stringify(options.transport)}`);
  }
  const transportEnv = process.env.BRAID_TRANSPORT;
  if (transportEnv !== undefined && transportEnv !== '' && !transports.includes(transportEnv)) {
    throw new InvalidArgumentError(`BRAID_TRANSPORT must be 'auto', 'tcp' or 'mpi'; got ${JSON.stringify(transportEnv)}`);
  }
  const streamsEnv = process.env.BRAID_SOCKET_NSTREAMS;
  let socketStreams = 1;
  if (streamsEnv !== undefined && streamsEnv !== '') {
    socketStreams = Number(streamsEnv);
    if (!Number.isInteger(socketStreams) || socketStreams < 1 || socketStreams > 8) {
      throw new InvalidArgumentError(`BRAID_SOCKET_NSTREAMS must be an integer from 1 to 8; got ${JSON.stringify(streamsEnv)}`);
    }
  }
  const start: StartOptions = {
    timeoutMs: positive('timeoutMs', options.timeoutMs) ?? envInt('BRAID_TIMEOUT_MS') ?? 120_000,
    stallWarningMs: positive('stallWarningMs', options.stallWarningMs) ?? envInt('BRAID_STALL_WARNING_MS') ?? 30_000,
    stallShutdownMs: positive('stallShutdownMs', options.stallShutdownMs) ?? envInt('BRAID_STALL_SHUTDOWN_MS') ?? 0,
    negotiate: options.negotiate ?? negotiation !== 'off',
    sharedMemory: options.sharedMemory ?? shm !== 'off',
    transport: options.transport ?? (transportEnv || 'auto'),
    socketInterfaces: process.env.BRAID_SOCKET_IFNAME ?? '',
    socketStreams,
  };
  const profilePath = options.profile ?? process.env.BRAID_PROFILE;
  if (options.profile !== undefined && typeof options.profile !== 'string') {
    throw new InvalidArgumentError(`init: profile must be the path of a file from braid calibrate; got ${JSON.stringify(options.profile)}`);
  }
  if (profilePath) {
    // Only rank 0's counts, and the rank is not known before MPI starts: the engine shares rank
    // 0's outcome, so a bad profile fails every rank alike.
    try {
      start.profile = readProfile(profilePath).numbers;
    } catch (err) {
      start.profileError = (err as Error).message;
    }
  }
  const timeline = options.timeline ?? process.env.BRAID_TIMELINE;
  if (timeline) start.timeline = timeline;

  let addon;
  try {
    addon = loadAddon();
  } catch (err) {
    throw new BackendUnavailableError((err as Error).message, { cause: err });
  }
  let info;
  try {
    info = addon.start(start);
  } catch (err) {
    throw fromNative(err);
  }
  // MPI must be finalized before the process ends, or mpirun counts the rank as failed: on
  // process.exit() and on a natural end alike ('exit' runs for both), whether or not the script
  // closed the world. It waits for the engine (bounded: a peer that stopped answering cannot
  // keep the process alive; it then ends with the exit code, or 1).
  process.once('exit', (code) => {
    const status = typeof code === 'number' ? code : 0;
    // One line that `braid run` (or a person reading mpirun's output) can pin on a rank and host.
    if (status !== 0) {
      const why = processFailures.first ? `: ${processFailures.first.split('\n')[0]}` : '';
      process.stderr.write(`braid: rank ${info.rank} on host ${hostname()} exits with code ${status}${why}\n`);
    }
    addon.shutdown(status);
  });
  world = new Communicator(addon, 0, { ...info, sharedMemory: info.commSharedMemory }, () => {
    ended = true;
  });
  return world;
}

/**
 * What this build and machine offer: the reduction kernels in use, CUDA, the MPI library the addon
 * is linked with, and NCCL (loaded at run time: where it was found, or why not).
 */
export function buildInfo(): ReturnType<ReturnType<typeof loadAddon>['info']> {
  try {
    return loadAddon().info();
  } catch (err) {
    throw new BackendUnavailableError((err as Error).message, { cause: err });
  }
}
