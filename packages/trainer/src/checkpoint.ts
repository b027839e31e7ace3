// Checkpoints in the layout tfjs-node's `file://` loader reads (model.json + weights.bin, the
// optimizer's weights in the same manifest with group 'optimizer', as tfjs's own
// `save(..., {includeOptimizer: true})` writes them) plus state.json for the trainer. Rank 0
// writes; each checkpoint is written into a temporary folder and renamed into place, and the
// `latest` pointer is replaced the same way, so a run killed at any moment leaves either the old
// checkpoint or the new one, never half of one.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants as bufferConstants } from 'node:buffer';

import { InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

import type { EarlyStoppingState } from './early-stopping.js';

export const CHECKPOINT_VERSION = 1;

/** The largest buffer this Node.js can make (4 GiB on Node 20); tests lower it. */
let maxBufferBytes = bufferConstants.MAX_LENGTH;
export function setMaxBufferBytesForTests(bytes: number): void {
  maxBufferBytes = bytes;
}

/** What the trainer needs, besides weights, to pick up exactly where it stopped. */
export interface TrainerState {
  version: number;
  /** Epoch being trained when the checkpoint was taken (0-based). */
  epoch: number;
  /** Batches of that epoch already done (since `position` when the epoch was resumed on another number of ranks). */
  batchInEpoch: number;
  /**
   * Rows of the epoch's order trained so far, by all ranks together (sharding.ts); absent in
   * checkpoints that predate it: batchInEpoch x batchSize x size.
   */
  position?: number;
  /** The batches per rank the epoch's sums cover (default batchInEpoch). */
  summedBatches?: number;
  /** Optimizer steps done since the start of training. */
  globalStep: number;
  seed: number;
  size: number;
  batchSize: number;
  /**
   * Each rank's sums of the epoch's per-step metrics so far (index = rank), so that a resumed
   * epoch reports the same averages as an uninterrupted one.
   */
  epochSums: Array<Record<string, number>>;
  history: Record<string, number[]>;
  earlyStopping?: EarlyStoppingState;
}

interface SaveableModel {
  save(handler: tf.io.IOHandler, config?: { includeOptimizer?: boolean }): Promise<tf.io.SaveResult>;
  optimizer?: tf.Optimizer;
}

interface Artifacts {
  modelJson: Record<string, unknown>;
  weights: Uint8Array;
}

function concat(data: ArrayBuffer | ArrayBuffer[]): ArrayBuffer {
  return Array.isArray(data) ? tf.io.concatenateArrayBuffers(data) : data;
}

/** Named tensors, then an optimizer's state (manifest group 'optimizer'), in tfjs's weight encoding: one part of a sharded checkpoint. */
export async function encodeWithOptimizer(named: Array<{ name: string; tensor: tf.Tensor }>, optimizer: tf.Optimizer): Promise<{ specs: tf.io.WeightsManifestEntry[]; bin: Uint8Array }> {
  const model = await tf.io.encodeWeights(named, 'model');
  const state = await tf.io.encodeWeights(await optimizer.getWeights(), 'optimizer');
  return { specs: [...model.specs, ...state.specs], bin: new Uint8Array(tf.io.concatenateArrayBuffers([model.data, state.data])) };
}

/** Puts the 'optimizer' group of decoded weights back into `optimizer` (nothing when the part has none). */
export async function restoreOptimizerGroup(optimizer: tf.Optimizer, specs: tf.io.WeightsManifestEntry[], named: tf.NamedTensorMap): Promise<void> {
  const group = specs.filter((s) => s.group === 'optimizer');
  if (group.length === 0) return;
  await optimizer.setWeights(group.map((s) => ({ name: s.name, tensor: named[s.name]! })));
  rebuildAdamPowers(optimizer);
}

/** Adds the optimizer's state to saved artifacts, in the manifest group 'optimizer' (as tfjs's includeOptimizer does). */
export async function appendOptimizerWeights(artifacts: tf.io.ModelArtifacts, optimizer: tf.Optimizer): Promise<void> {
  const { data, specs } = await tf.io.encodeWeights(await optimizer.getWeights(), 'optimizer');
  artifacts.weightSpecs = [...(artifacts.weightSpecs ?? []), ...specs];
  artifacts.weightData = tf.io.concatenateArrayBuffers([concat(artifacts.weightData ?? new ArrayBuffer(0)), concat(data)]);
}

/** The model (and its optimizer's state) as model.json + weights.bin contents. */
export async function serializeModel(model: SaveableModel): Promise<Artifacts> {
  let captured: tf.io.ModelArtifacts | undefined;
  const handler: tf.io.IOHandler = {
    save: async (artifacts) => {
      captured = artifacts;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    },
  };
  try {
    await model.save(handler, { includeOptimizer: true });
  } catch {
    // Models with a custom loss or metric cannot write a training config; keep the optimizer's
    // weights anyway, in the manifest, where the trainer reads them back.
    await model.save(handler);
    if (model.optimizer && captured) await appendOptimizerWeights(captured, model.optimizer);
  }
  if (!captured) throw new Error('checkpoint: the model saved nothing');
  const { modelTopology, format, generatedBy, convertedBy, trainingConfig, userDefinedMetadata } = captured;
  const modelJson: Record<string, unknown> = {
    modelTopology,
    format,
    generatedBy,
    convertedBy: convertedBy ?? null,
    weightsManifest: [{ paths: ['weights.bin'], weights: captured.weightSpecs ?? [] }],
  };
  if (trainingConfig) modelJson.trainingConfig = trainingConfig;
  if (userDefinedMetadata) modelJson.userDefinedMetadata = userDefinedMetadata;
  return { modelJson, weights: new Uint8Array(concat(captured.weightData ?? new ArrayBuffer(0))) };
}

/** The folder name of the checkpoint at this global step. */
export function checkpointName(globalStep: number): string {
  return `ckpt-${String(globalStep).padStart(9, '0')}`;
}

/** Writes a checkpoint atomically and keeps the newest `keep`; returns its folder. */
export async function writeCheckpoint(dir: string, model: SaveableModel, state: TrainerState, keep: number): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const { modelJson, weights } = await serializeModel(model);
  const name = checkpointName(state.globalStep);
  const staging = join(dir, `.staging-${name}-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging);
  writeFileSync(join(staging, 'model.json'), JSON.stringify(modelJson));
  writeFileSync(join(staging, 'weights.bin'), weights);
  writeFileSync(join(staging, 'state.json'), JSON.stringify(state, null, 1));
  return publishCheckpoint(dir, staging, name, keep);
}

/**
 * A complete staging folder renamed into place as checkpoint `name`, the `latest` pointer moved
 * to it (atomically, by rename), and all but the newest `keep` checkpoints removed; returns its folder.
 */
export function publishCheckpoint(dir: string, staging: string, name: string, keep: number): string {
  const final = join(dir, name);
  rmSync(final, { recursive: true, force: true });
  renameSync(staging, final);
  writeFileSync(join(dir, '.latest.tmp'), name);
  renameSync(join(dir, '.latest.tmp'), join(dir, 'latest'));
  const all = readdirSync(dir).filter((f) => /^ckpt-\d{9}$/.test(f)).sort();
  for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(join(dir, old), { recursive: true, force: true });
  return final;
}

/** The newest complete checkpoint folder in `dir`, or undefined. */
export function latestCheckpoint(dir: string): string | undefined {
  const pointer = join(dir, 'latest');
  if (!existsSync(pointer)) return undefined;
  const name = readFileSync(pointer, 'utf8').trim();
  const folder = join(dir, name);
  if (!/^ckpt-\d{9}$/.test(name) || !existsSync(join(folder, 'state.json'))) {
    throw new InvalidArgumentError(`checkpoint: ${pointer} names ${JSON.stringify(name)}, which is not a complete checkpoint; remove ${dir} to start over`);
  }
  return folder;
}

// The packed form's header: the three files' lengths as 64-bit integers (32 bits would wrap
// silently above 4 GiB).
const PACK_HEADER_BYTES = 24;

/** The packed header for parts of these lengths (exported for tests). */
export function packHeader(lengths: readonly number[]): Uint8Array {
  const header = new Uint8Array(PACK_HEADER_BYTES);
  const view = new DataView(header.buffer);
  lengths.forEach((n, i) => view.setBigUint64(i * 8, BigInt(n), true));
  return header;
}

/** A checkpoint's three files packed into one buffer (rank 0 reads, every rank gets it by broadcast). */
export function packCheckpoint(folder: string): Uint8Array {
  const parts = ['model.json', 'weights.bin', 'state.json'].map((f) => readFileSync(join(folder, f)));
  const total = PACK_HEADER_BYTES + parts.reduce((n, p) => n + p.length, 0);
  if (total > maxBufferBytes) {
    throw new InvalidArgumentError(
      `checkpoint: ${folder} holds ${total} bytes, more than one buffer can hold in this Node.js (${maxBufferBytes}); it cannot be resumed from`,
    );
  }
  const out = new Uint8Array(total);
  out.set(packHeader(parts.map((p) => p.length)));
  let offset = PACK_HEADER_BYTES;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

export interface LoadedCheckpoint {
  modelJson: { weightsManifest: Array<{ weights: tf.io.WeightsManifestEntry[] }> } & Record<string, unknown>;
  weights: ArrayBuffer;
  state: TrainerState;
}

export function unpackCheckpoint(bytes: Uint8Array): LoadedCheckpoint {
  if (bytes.length < PACK_HEADER_BYTES) throw new InvalidArgumentError('checkpoint: the packed checkpoint is truncated');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lengths = [0, 1, 2].map((i) => Number(view.getBigUint64(i * 8, true)));
  if (PACK_HEADER_BYTES + lengths[0]! + lengths[1]! + lengths[2]! !== bytes.length) {
    throw new InvalidArgumentError('checkpoint: the packed checkpoint is truncated or its lengths do not add up');
  }
  const text = new TextDecoder();
  const modelStart = PACK_HEADER_BYTES;
  const weightsStart = modelStart + lengths[0]!;
  const stateStart = weightsStart + lengths[1]!;
  return {
    modelJson: JSON.parse(text.decode(bytes.subarray(modelStart, weightsStart))),
    weights: bytes.slice(weightsStart, stateStart).buffer,
    state: JSON.parse(text.decode(bytes.subarray(stateStart))),
  };
}

interface RestorableModel {
  getWeights(): tf.Tensor[];
  setWeights(weights: tf.Tensor[]): void;
  optimizer?: tf.Optimizer;
}

/** Puts a checkpoint's weights into the model and its optimizer's state into the optimizer. */
export async function restoreCheckpoint(model: RestorableModel, checkpoint: LoadedCheckpoint): Promise<void> {
  const specs = checkpoint.modelJson.weightsManifest.flatMap((group) => group.weights);
  const named = tf.io.decodeWeights(checkpoint.weights, specs);
  const modelSpecs = specs.filter((s) => s.group !== 'optimizer');
  const optimizerSpecs = specs.filter((s) => s.group === 'optimizer');
  const current = model.getWeights();
  if (current.length !== modelSpecs.length || current.some((w, i) => w.shape.join('x') !== modelSpecs[i]!.shape.join('x'))) {
    tf.dispose(Object.values(named));
    throw new InvalidArgumentError(
      `checkpoint: its weights (${modelSpecs.map((s) => `[${s.shape}]`).join(' ')}) do not fit this model ` +
        `(${current.map((w) => `[${w.shape}]`).join(' ')}); resume with the model that was trained, or use another checkpointDir`,
    );
  }
  model.setWeights(modelSpecs.map((s) => named[s.name]!));
  if (optimizerSpecs.length > 0 && model.optimizer) {
    await model.optimizer.setWeights(optimizerSpecs.map((s) => ({ name: s.name, tensor: named[s.name]! })));
    rebuildAdamPowers(model.optimizer);
  }
  tf.dispose(Object.values(named));
}

/**
 * tfjs's Adam restores its bias-correction powers as pow(beta, t + 1), where training built them
 * by t + 1 float32 multiplications: the last bits differ (seen at 4 ranks, Adam resumed from
 * step 5), and a resumed run drifts from one that was not interrupted. Rebuild them the way
 * training does: float32 products, one per step (Math.fround rounds each as the backends do).
 */
export function rebuildAdamPowers(optimizer: tf.Optimizer): void {
  const adam = ((optimizer as unknown as { inner?: tf.Optimizer }).inner ?? optimizer) as unknown as {
    accBeta1?: unknown;
    accBeta2?: unknown;
    beta1?: unknown;
    beta2?: unknown;
    iterations: number;
  };
  if (!(adam.accBeta1 instanceof tf.Variable) || !(adam.accBeta2 instanceof tf.Variable)) return;
  if (typeof adam.beta1 !== 'number' || typeof adam.beta2 !== 'number') return;
  const beta1 = Math.fround(adam.beta1);
  const beta2 = Math.fround(adam.beta2);
  let power1 = beta1;
  let power2 = beta2;
  for (let step = 0; step < adam.iterations; step++) {
    power1 = Math.fround(power1 * beta1);
    power2 = Math.fround(power2 * beta2);
  }
  const values = tf.tensor([power1, power2]);
  const [p1, p2] = tf.unstack(values);
  adam.accBeta1.assign(p1 as tf.Scalar);
  adam.accBeta2.assign(p2 as tf.Scalar);
  tf.dispose([values, p1!, p2!]);
}

/** An IOHandler that loads a checkpoint folder, for `tf.loadLayersModel(checkpointLoader(dir))` without tfjs-node. */
export function checkpointLoader(folder: string): tf.io.IOHandler {
  return {
    load: async () => {
      const modelJson = JSON.parse(readFileSync(join(folder, 'model.json'), 'utf8'));
      const weights = readFileSync(join(folder, 'weights.bin'));
      return {
        modelTopology: modelJson.modelTopology,
        format: modelJson.format,
        generatedBy: modelJson.generatedBy,
        convertedBy: modelJson.convertedBy,
        trainingConfig: modelJson.trainingConfig,
        weightSpecs: modelJson.weightsManifest.flatMap((g: { weights: tf.io.WeightsManifestEntry[] }) => g.weights),
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      };
    },
  };
}
