// Checkpoints of a pipeline (fit under PipelineParallel): each stage writes its own part, its
// layers' weights and its optimizer's state (stage-<s>.json + stage-<s>.bin, tfjs's weight
// encoding), into one folder per checkpoint; state.json (where training stands) is written last,
// by rank 0, and the folder renamed into place (ckpt-<step>, as DataParallel's checkpoints, with
// the same `latest` pointer). Every stage must see checkpointDir: one host, or a shared folder.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { agreeOnSuccess, type Communicator, InvalidArgumentError } from '@braid/collectives';
import type { PipelineParallel } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs-core';

import type { EarlyStoppingState } from './early-stopping.js';
import { checkpointName, encodeWithOptimizer, latestCheckpoint, publishCheckpoint, restoreOptimizerGroup } from './checkpoint.js';

export const PIPELINE_CHECKPOINT_VERSION = 1;

/** Where a pipeline's training stands (state.json). */
export interface PipelineState {
  version: number;
  kind: 'pipeline';
  stages: number;
  replicas: number;
  epoch: number;
  batchInEpoch: number;
  /** The epoch's losses summed so far (its mean loss goes on from them). */
  lossSum: number;
  globalStep: number;
  seed: number;
  batchSize: number;
  history: Record<string, number[]>;
  earlyStopping?: EarlyStoppingState;
}

/**
 * Runs `work` on every rank of every pipeline and agrees on the outcome: first within each
 * pipeline, then among each stage's replicas, so a failure anywhere stops every rank together.
 */
export async function agreeInPipelines<T>(pipeline: PipelineParallel, what: string, work: () => T | Promise<T>): Promise<T> {
  let result: T | undefined;
  let failure: unknown;
  let failed = false;
  try {
    result = await agreeOnSuccess(pipeline.comm, what, work);
  } catch (err) {
    failure = err;
    failed = true;
  }
  const replicas: Communicator | undefined = pipeline.replicaComm;
  if (replicas) {
    await agreeOnSuccess(replicas, what, () => {
      if (failed) throw failure;
    });
  } else if (failed) {
    throw failure;
  }
  return result as T;
}

async function encodeStage(pipeline: PipelineParallel): Promise<{ json: string; bin: Uint8Array }> {
  const weights = pipeline.stageWeights();
  const named = weights.map((tensor, i) => ({ name: `stage${pipeline.stage}/weight${i}`, tensor }));
  const { specs, bin } = await encodeWithOptimizer(named, pipeline.optimizer);
  tf.dispose(weights);
  return { json: JSON.stringify({ stage: pipeline.stage, weights: specs }), bin };
}

/** Writes this pipeline's checkpoint at `state.globalStep` (replica 0's stages write; rank 0 finishes it). */
export async function writePipelineCheckpoint(dir: string, pipeline: PipelineParallel, state: PipelineState, keep: number): Promise<string> {
  const name = checkpointName(state.globalStep);
  const staging = join(dir, `.staging-${name}`);
  const writer = pipeline.replicaIndex === 0;
  const first = writer && pipeline.stage === 0;
  await agreeInPipelines(pipeline, 'fit: starting a pipeline checkpoint', () => {
    if (!first) return;
    mkdirSync(dir, { recursive: true });
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(staging);
  });
  await agreeInPipelines(pipeline, 'fit: writing a stage checkpoint', async () => {
    if (!writer) return;
    const { json, bin } = await encodeStage(pipeline);
    writeFileSync(join(staging, `stage-${pipeline.stage}.json`), json);
    writeFileSync(join(staging, `stage-${pipeline.stage}.bin`), bin);
  });
  await agreeInPipelines(pipeline, 'fit: finishing a pipeline checkpoint', () => {
    if (!first) return;
    for (let s = 0; s < pipeline.stages; s++) {
      if (!existsSync(join(staging, `stage-${s}.bin`))) throw new Error(`stage ${s}'s part is missing from ${staging}: every stage must see checkpointDir (one host, or a shared folder)`);
    }
    writeFileSync(join(staging, 'state.json'), JSON.stringify(state, null, 1));
    publishCheckpoint(dir, staging, name, keep);
  });
  return join(dir, name);
}

/**
 * The newest pipeline checkpoint in `dir` put into this stage (its weights and optimizer state),
 * or undefined where there is none; every rank reads its own stage's part.
 */
export async function restorePipelineCheckpoint(dir: string, pipeline: PipelineParallel): Promise<{ state: PipelineState; folder: string } | undefined> {
  return agreeInPipelines(pipeline, 'fit: restoring a pipeline checkpoint', async () => {
    const folder = latestCheckpoint(dir);
    if (!folder) return undefined;
    const state = JSON.parse(readFileSync(join(folder, 'state.json'), 'utf8')) as PipelineState;
    if (state.kind !== 'pipeline') {
      throw new InvalidArgumentError(`fit: ${folder} is a DataParallel checkpoint; a pipeline resumes only from its own (use another checkpointDir)`);
    }
    if (state.version !== PIPELINE_CHECKPOINT_VERSION) throw new InvalidArgumentError(`fit: ${folder} has format version ${state.version}; this trainer reads ${PIPELINE_CHECKPOINT_VERSION}`);
    if (state.stages !== pipeline.stages) {
      throw new InvalidArgumentError(`fit: ${folder} holds ${state.stages} stages; this pipeline has ${pipeline.stages} (split the model as it was, or use another checkpointDir)`);
    }
    const manifest = JSON.parse(readFileSync(join(folder, `stage-${pipeline.stage}.json`), 'utf8')) as { weights: tf.io.WeightsManifestEntry[] };
    const bin = readFileSync(join(folder, `stage-${pipeline.stage}.bin`));
    const named = tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength), manifest.weights);
    try {
      pipeline.setStageWeights(manifest.weights.filter((s) => s.group !== 'optimizer').map((s) => named[s.name]!));
      await restoreOptimizerGroup(pipeline.optimizer, manifest.weights, named);
    } finally {
      tf.dispose(Object.values(named));
    }
    return { state, folder };
  });
}
