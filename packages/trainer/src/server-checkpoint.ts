// Checkpoints of fit under a ParameterServer: the weights live on the servers, so each server
// writes its own shard and its optimizer's state (shard-<j>.json + shard-<j>.bin, tfjs's weight
// encoding); state.json (where the workers stand) is written last, by rank 0, and the folder
// renamed into place (ckpt-<step> with the `latest` pointer, as DataParallel's). The workers pause
// at the same step (ParameterServer.pause) and every rank, servers from inside serve(), takes
// part. Every server must see checkpointDir: one host, or a shared folder.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { agreeOnSuccess, type Communicator, InvalidArgumentError } from '@braid/collectives';
import type { ParameterServer } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs-core';

import type { EarlyStoppingState } from './early-stopping.js';
import { checkpointName, encodeWithOptimizer, latestCheckpoint, publishCheckpoint, restoreOptimizerGroup } from './checkpoint.js';

export const SERVER_CHECKPOINT_VERSION = 1;

/** Where the workers stand (state.json). */
export interface ServerCheckpointState {
  version: number;
  kind: 'parameter-server';
  servers: number;
  workers: number;
  mode: 'sync' | 'async';
  /** The model's size in values (the shards end to end). */
  values: number;
  epoch: number;
  batchInEpoch: number;
  /** Steps each worker has taken. */
  globalStep: number;
  seed: number;
  batchSize: number;
  /** Each worker's sums of the epoch's step metrics so far (index = worker), so a resumed epoch reports the same means. */
  sums: number[][];
  history: Record<string, number[]>;
  earlyStopping?: EarlyStoppingState;
}

/** `value` (JSON) from rank `root` to every rank of `comm`. */
export async function broadcastJson<T>(comm: Communicator, root: number, value: T | undefined): Promise<T> {
  const bytes = new TextEncoder().encode(comm.rank === root ? JSON.stringify(value) : '');
  const length = Float64Array.of(bytes.length);
  await comm.broadcast(length, { root });
  const buffer = new Uint8Array(length[0]!);
  if (comm.rank === root) buffer.set(bytes);
  await comm.broadcast(buffer, { root });
  return JSON.parse(new TextDecoder().decode(buffer)) as T;
}

/**
 * Writes the checkpoint at the workers' step: every rank calls it (servers from serve's onPause,
 * workers after pause()); the first worker passes the state, the others undefined.
 */
export async function writeServerCheckpoint(
  dir: string,
  ps: ParameterServer,
  state: ServerCheckpointState | undefined,
  keep: number,
): Promise<{ folder: string; state: ServerCheckpointState }> {
  const comm = ps.comm;
  const shared = await broadcastJson(comm, ps.servers, state);
  const name = checkpointName(shared.globalStep);
  const staging = join(dir, `.staging-${name}`);
  await agreeOnSuccess(comm, 'fit: starting a parameter-server checkpoint', () => {
    if (comm.rank !== 0) return;
    mkdirSync(dir, { recursive: true });
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(staging);
  });
  await agreeOnSuccess(comm, 'fit: writing a server shard', async () => {
    if (!ps.isServer) return;
    const shard = tf.tensor1d(ps.shardValues());
    const { specs, bin } = await encodeWithOptimizer([{ name: `shard${ps.index}`, tensor: shard }], ps.optimizer);
    shard.dispose();
    const [begin, end] = ps.shardRange;
    writeFileSync(join(staging, `shard-${ps.index}.json`), JSON.stringify({ server: ps.index, begin, end, weights: specs }));
    writeFileSync(join(staging, `shard-${ps.index}.bin`), bin);
  });
  await agreeOnSuccess(comm, 'fit: finishing a parameter-server checkpoint', () => {
    if (comm.rank !== 0) return;
    for (let j = 0; j < ps.servers; j++) {
      if (!existsSync(join(staging, `shard-${j}.bin`))) throw new Error(`server ${j}'s shard is missing from ${staging}: every server must see checkpointDir (one host, or a shared folder)`);
    }
    writeFileSync(join(staging, 'state.json'), JSON.stringify(shared, null, 1));
    publishCheckpoint(dir, staging, name, keep);
  });
  return { folder: join(dir, name), state: shared };
}

function decodeShard(folder: string, server: number): { manifest: { begin: number; end: number; weights: tf.io.WeightsManifestEntry[] }; named: tf.NamedTensorMap } {
  const manifest = JSON.parse(readFileSync(join(folder, `shard-${server}.json`), 'utf8')) as { begin: number; end: number; weights: tf.io.WeightsManifestEntry[] };
  const bin = readFileSync(join(folder, `shard-${server}.bin`));
  const named = tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength), manifest.weights);
  return { manifest, named };
}

/**
 * The newest checkpoint in `dir` put into the servers (each its shard and optimizer state), or
 * undefined where there is none. Every rank calls it; the workers get the weights at the next
 * pull (pullAll).
 */
export async function restoreServerCheckpoint(dir: string, ps: ParameterServer): Promise<{ state: ServerCheckpointState; folder: string } | undefined> {
  return agreeOnSuccess(ps.comm, 'fit: restoring a parameter-server checkpoint', async () => {
    const folder = latestCheckpoint(dir);
    if (!folder) return undefined;
    const state = JSON.parse(readFileSync(join(folder, 'state.json'), 'utf8')) as ServerCheckpointState;
    if (state.kind !== 'parameter-server') {
      throw new InvalidArgumentError(`fit: ${folder} is a ${state.kind ?? 'DataParallel'} checkpoint; a parameter server resumes only from its own (use another checkpointDir)`);
    }
    if (state.version !== SERVER_CHECKPOINT_VERSION) throw new InvalidArgumentError(`fit: ${folder} has format version ${state.version}; this trainer reads ${SERVER_CHECKPOINT_VERSION}`);
    if (state.values !== ps.totalSize) throw new InvalidArgumentError(`fit: ${folder} holds a model of ${state.values} values; this one has ${ps.totalSize} (build the same model, or use another checkpointDir)`);
    if (state.servers !== ps.servers || state.workers !== ps.workers) {
      throw new InvalidArgumentError(
        `fit: ${folder} was taken with ${state.servers} server(s) and ${state.workers} worker(s); this job has ${ps.servers} and ${ps.workers} (each server's shard and each worker's rows depend on them: start as before, or use another checkpointDir)`,
      );
    }
    if (!ps.isServer) return { state, folder };
    const { manifest, named } = decodeShard(folder, ps.index);
    try {
      const [begin, end] = ps.shardRange;
      if (manifest.begin !== begin || manifest.end !== end) throw new InvalidArgumentError(`fit: ${folder}'s shard ${ps.index} covers values ${manifest.begin}..${manifest.end}; this server's covers ${begin}..${end}`);
      ps.setShard(named[`shard${ps.index}`]!.dataSync() as Float32Array);
      await restoreOptimizerGroup(ps.optimizer, manifest.weights, named);
    } finally {
      tf.dispose(Object.values(named));
    }
    return { state, folder };
  });
}

/** The whole model's weights (flat, the variables' values end to end) from a parameter-server checkpoint folder. */
export function assembleServerCheckpoint(folder: string): Float32Array {
  const state = JSON.parse(readFileSync(join(folder, 'state.json'), 'utf8')) as ServerCheckpointState;
  if (state.kind !== 'parameter-server') throw new InvalidArgumentError(`${folder} is not a parameter-server checkpoint`);
  const flat = new Float32Array(state.values);
  for (let j = 0; j < state.servers; j++) {
    const { manifest, named } = decodeShard(folder, j);
    flat.set(named[`shard${j}`]!.dataSync() as Float32Array, manifest.begin);
    tf.dispose(Object.values(named));
  }
  return flat;
}
