// The distributed training loop: each rank trains the same model on its shard of every epoch,
// the strategy averages the gradients, and rank 0 reports progress and writes checkpoints.
import { join } from 'node:path';

import { agreeOnSuccess, checkOptions, type Communicator, init, InvalidArgumentError } from '@braid/collectives';
import { DataParallel, DistributedOptimizer, ParameterServer, PipelineParallel } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs-core';

import { CHECKPOINT_VERSION, checkpointName, restoreCheckpoint, type TrainerState, unpackCheckpoint, writeCheckpoint } from './checkpoint.js';
import { readNewestCheckpoint } from './commits.js';
import { joinElasticRun, reportStep, resizeAgreed, stopForResize, underElasticLauncher } from './elastic-worker.js';
import { batchAwareLossOf } from './model-parts.js';
import { fitParameterServer } from './fit-parameter-server.js';
import { fitPipeline } from './fit-pipeline.js';
import { checkPrivateTraining, privateTrainStep } from './private-step.js';
import { EarlyStopping } from './early-stopping.js';
import { Progress, type ProgressMode, resolveProgressMode } from './progress.js';
import type { ServerCheckpointState } from './server-checkpoint.js';
import type { PipelineState } from './stage-checkpoint.js';
import { epochBatches, validationRows } from './sharding.js';

/** The parts of a tfjs LayersModel the trainer uses (any tfjs flavour: tfjs, tfjs-node, tfjs-node-gpu). */
export interface TrainableModel {
  trainOnBatch(x: tf.Tensor | tf.Tensor[], y: tf.Tensor | tf.Tensor[]): Promise<number | number[]>;
  evaluate(x: tf.Tensor | tf.Tensor[], y: tf.Tensor | tf.Tensor[], args?: { batchSize?: number }): tf.Scalar | tf.Scalar[];
  getWeights(): tf.Tensor[];
  setWeights(weights: tf.Tensor[]): void;
  save(handler: tf.io.IOHandler, config?: { includeOptimizer?: boolean }): Promise<tf.io.SaveResult>;
  readonly metricsNames: string[];
  optimizer: tf.Optimizer;
  stopTraining?: boolean;
}

export interface Dataset {
  /** Inputs, rows along the first axis (or a list of tensors for multi-input models). */
  x: tf.Tensor | tf.Tensor[];
  /** Targets, the same number of rows. */
  y: tf.Tensor | tf.Tensor[];
}

export interface StepInfo {
  epoch: number;
  batch: number;
  globalStep: number;
  /** The rows of the data set this rank trained in the step (indices along the first axis). */
  rows: ArrayLike<number>;
}

export interface TrainerCallbacks {
  /**
   * Before the first step. Resumed from a checkpoint taken on another number of ranks,
   * `resumedSize` is that number (`size` is this run's): the place to rescale the learning rate
   * for the new global batch (e.g. by size / resumedSize, as Horovod Elastic users do).
   */
  onTrainBegin?: (info: { resumedFrom?: string; epoch: number; globalStep: number; size: number; resumedSize?: number }) => void | Promise<void>;
  onEpochBegin?: (epoch: number) => void | Promise<void>;
  /** This rank's own step results (not averaged: averaging every step would cost a collective). */
  onBatchEnd?: (step: StepInfo, logs: Record<string, number>) => void | Promise<void>;
  /** The epoch's metrics averaged over all ranks (identical on every rank). */
  onEpochEnd?: (epoch: number, logs: Record<string, number>) => void | Promise<void>;
  /** After each checkpoint, on every rank: its folder, and where training stood (DataParallel's TrainerState, or a pipeline's or a parameter server's state). */
  onCheckpoint?: (folder: string, state: TrainerState | PipelineState | ServerCheckpointState) => void | Promise<void>;
  onTrainEnd?: (result: FitResult) => void | Promise<void>;
}

export interface EarlyStoppingOptions {
  /** Metric to watch (default 'val_loss' with validation data, else 'loss'). */
  monitor?: string;
  /** Epochs without improvement before stopping (default 0, as in Keras). */
  patience?: number;
  /** Smallest change that counts as an improvement (default 0). */
  minDelta?: number;
  /** 'min', 'max', or 'auto' (default: 'max' for accuracy-like metrics, else 'min'). */
  mode?: 'min' | 'max' | 'auto';
  /** Put back the best epoch's weights when stopping (default false). */
  restoreBestWeights?: boolean;
}

export interface FitOptions {
  epochs?: number;
  /** Rows per step on each rank (the global batch is batchSize x ranks). Default 32. */
  batchSize?: number;
  /**
   * Default: a DataParallel over the world communicator. A PipelineParallel trains its stages
   * (each rank its own; the model's other layers were freed when it was made), every pipeline on
   * its own rows, each stage checkpointing its own part; early stopping and elastic commits are
   * DataParallel's only for now. A ParameterServer: its servers serve, its workers train on their
   * share of the rows, each server checkpointing its shard; every rank holds the servers' weights
   * at the end.
   */
  strategy?: DataParallel | PipelineParallel | ParameterServer;
  /** Seed of the per-epoch shuffle, shared by all ranks (default 0). */
  seed?: number;
  shuffle?: boolean;
  dropRemainder?: boolean;
  validationData?: Dataset;
  /** Batch size of the validation pass (default: batchSize). */
  validationBatchSize?: number;
  callbacks?: TrainerCallbacks | TrainerCallbacks[];
  earlyStopping?: EarlyStoppingOptions;
  /** Folder for checkpoints (rank 0 writes; every rank resumes from it). */
  checkpointDir?: string;
  /** How often to checkpoint (default: every epoch). */
  checkpointEvery?: { steps?: number; epochs?: number };
  /**
   * Also checkpoint every this many global steps (a commit): under `braid run --elastic`, a
   * restart goes on from the last commit, and a request to grow the job waits for the next one,
   * so this bounds the steps a lost host costs. Default: only checkpointEvery's cadence.
   */
  commitEvery?: number;
  /** Checkpoints kept (default 2). */
  keepCheckpoints?: number;
  /**
   * Write every checkpoint on every host (by each host's first rank) instead of on rank 0's alone:
   * for hosts that do not share checkpointDir, so that losing a host loses no checkpoint and a
   * job restarted without it resumes on any of the others. Default false (leave it off where
   * checkpointDir is one shared folder).
   */
  checkpointOnEveryHost?: boolean;
  /** Resume from the newest checkpoint in checkpointDir when there is one (default true). */
  resume?: boolean;
  /** 'auto': a bar on a terminal, one line per epoch in a log (default). Only rank 0 prints. */
  progress?: ProgressMode;
  /** Where rank 0's progress goes (default process.stdout). */
  write?: (text: string) => void;
}

export interface FitResult {
  /**
   * Per-epoch metrics averaged over ranks: loss, metrics, val_* with validation data, and under
   * DP-SGD (the strategy's privacy.clipNorm) `epsilon`, the privacy spent so far at privacy.delta.
   */
  history: Record<string, number[]>;
  epochs: number[];
  globalStep: number;
  stoppedEarly: boolean;
  resumedFrom?: string;
  /** Global samples per second over the steps this call ran. */
  samplesPerSecond: number;
  /** Share of step time spent in gradient all-reduces on this rank. */
  communicationShare: number;
}

function integer(what: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new InvalidArgumentError(`fit: ${what} must be an integer >= ${min}; got ${JSON.stringify(value)}`);
  }
  return value;
}

function rowsOf(what: string, t: tf.Tensor | tf.Tensor[]): number {
  const list = Array.isArray(t) ? t : [t];
  if (list.length === 0 || list.some((x) => !(x instanceof tf.Tensor) || x.rank < 1)) {
    throw new InvalidArgumentError(`fit: ${what} must be a tensor (or a list of tensors) with rows along the first axis`);
  }
  const rows = list[0]!.shape[0]!;
  if (list.some((x) => x.shape[0] !== rows)) throw new InvalidArgumentError(`fit: the tensors of ${what} have different numbers of rows`);
  return rows;
}

function take(t: tf.Tensor | tf.Tensor[], indices: tf.Tensor1D): tf.Tensor | tf.Tensor[] {
  return Array.isArray(t) ? t.map((x) => tf.gather(x, indices)) : tf.gather(t, indices);
}

function asList(out: number | number[] | tf.Scalar | tf.Scalar[]): number[] {
  const list = Array.isArray(out) ? out : [out];
  return list.map((v) => (typeof v === 'number' ? v : v.dataSync()[0]!));
}

/** All ranks agree on a number or every rank gets the same INVALID_ARGUMENT. */
async function agree(comm: Communicator, what: string, value: number, advice: string): Promise<void> {
  const spread = new Float64Array([value, -value]);
  await comm.allReduce(spread, { op: 'max' });
  if (spread[0] !== value || -spread[1]! !== value) {
    throw new InvalidArgumentError(`fit: ${what} differs between ranks (from ${-spread[1]!} to ${spread[0]}); ${advice}`);
  }
}

export async function fit(model: TrainableModel, data: Dataset, options: FitOptions = {}): Promise<FitResult> {
  checkOptions('fit', options, [
    'epochs', 'batchSize', 'strategy', 'seed', 'shuffle', 'dropRemainder', 'validationData', 'validationBatchSize', 'callbacks',
    'earlyStopping', 'checkpointDir', 'checkpointEvery', 'commitEvery', 'keepCheckpoints', 'checkpointOnEveryHost', 'resume', 'progress', 'write',
  ]);
  checkOptions('fit: earlyStopping', options.earlyStopping, ['monitor', 'patience', 'minDelta', 'mode', 'restoreBestWeights']);
  checkOptions('fit: checkpointEvery', options.checkpointEvery, ['steps', 'epochs']);
  const progressModes: ProgressMode[] = ['auto', 'bar', 'lines', 'none'];
  if (options.progress !== undefined && !progressModes.includes(options.progress)) {
    throw new InvalidArgumentError(`fit: progress must be one of ${progressModes.map((m) => `'${m}'`).join(', ')}; got ${JSON.stringify(options.progress)}`);
  }
  if (!data || typeof data !== 'object') throw new InvalidArgumentError('fit: data must be { x, y } with tensors');
  if (options.strategy instanceof PipelineParallel || options.strategy instanceof ParameterServer) {
    const everySteps = integer('checkpointEvery.steps', options.checkpointEvery?.steps, 0, 1);
    const settings = {
      epochs: integer('epochs', options.epochs, 1, 1),
      batchSize: integer('batchSize', options.batchSize, 32, 1),
      seed: integer('seed', options.seed, 0, 0),
      keep: integer('keepCheckpoints', options.keepCheckpoints, 2, 1),
      everySteps,
      everyEpochs: integer('checkpointEvery.epochs', options.checkpointEvery?.epochs, everySteps > 0 ? 0 : 1, 1),
    };
    if (options.strategy instanceof ParameterServer) return fitParameterServer(model, data, options, options.strategy, settings);
    return fitPipeline(data, options, options.strategy, settings);
  }
  if (!model || typeof model.trainOnBatch !== 'function') throw new InvalidArgumentError('fit: model must be a compiled tfjs LayersModel');
  if (!model.optimizer) {
    throw new InvalidArgumentError('fit: compile the model first, e.g. model.compile({ optimizer: dp.wrapOptimizer(tf.train.adam(1e-3)), loss, metrics })');
  }
  if (!data || typeof data !== 'object') throw new InvalidArgumentError('fit: data must be { x, y } with tensors');
  const epochs = integer('epochs', options.epochs, 1, 1);
  const batchSize = integer('batchSize', options.batchSize, 32, 1);
  const seed = integer('seed', options.seed, 0, 0);
  const keep = integer('keepCheckpoints', options.keepCheckpoints, 2, 1);
  const everySteps = integer('checkpointEvery.steps', options.checkpointEvery?.steps, 0, 1);
  const everyEpochs = integer('checkpointEvery.epochs', options.checkpointEvery?.epochs, everySteps > 0 ? 0 : 1, 1);
  const commitEvery = integer('commitEvery', options.commitEvery, 0, 1);
  const elastic = underElasticLauncher();
  if (elastic && !options.checkpointDir) {
    throw new InvalidArgumentError(
      'fit: under braid run --elastic, give checkpointDir: a restarted job goes on from the last commit there (a folder every host reads, or checkpointOnEveryHost: true)',
    );
  }
  const stepCheckpointDue = (step: number) => (everySteps > 0 && step % everySteps === 0) || (commitEvery > 0 && step % commitEvery === 0);
  const rows = rowsOf('data.x', data.x);
  if (rowsOf('data.y', data.y) !== rows) throw new InvalidArgumentError(`fit: data.x has ${rows} rows but data.y has ${rowsOf('data.y', data.y)}`);
  const validationRowsTotal = options.validationData ? rowsOf('validationData.x', options.validationData.x) : 0;
  if (options.validationData && rowsOf('validationData.y', options.validationData.y) !== validationRowsTotal) {
    throw new InvalidArgumentError('fit: validationData.x and validationData.y have different numbers of rows');
  }
  const strategy = options.strategy ?? new DataParallel(await init());
  if (!(strategy instanceof DataParallel)) throw new InvalidArgumentError('fit: strategy must be a DataParallel, a PipelineParallel or a ParameterServer');
  const comm = strategy.comm;
  const { rank, size } = comm;
  if (!(model.optimizer instanceof DistributedOptimizer)) model.optimizer = strategy.wrapOptimizer(model.optimizer);
  const callbacks = options.callbacks === undefined ? [] : Array.isArray(options.callbacks) ? options.callbacks : [options.callbacks];
  const progress = new Progress(resolveProgressMode(options.progress ?? 'auto', rank), epochs, batchSize * size, options.write);

  await agree(comm, 'the number of training rows', rows, 'give every rank the whole data set (fit shards it)');
  await agree(comm, 'batchSize', batchSize, 'pass the same batchSize on every rank (it is per rank)');
  await agree(comm, 'seed', seed, 'pass the same seed on every rank');
  if (rows === 0) throw new InvalidArgumentError('fit: there are no training rows');
  // DP-SGD (the strategy's privacy.clipNorm): each step samples a share q of the rows.
  const privacy = strategy.differentialPrivacy;
  if (privacy) checkPrivateTraining(model, batchSize, privacy.microbatchSize);
  const samplingRate = Math.min(1, (batchSize * size) / rows);
  // A distillation loss runs the teacher on each rank's own rows of every batch.
  const batchAwareLoss = batchAwareLossOf(model);

  // Resume, or start every rank from rank 0's weights.
  let state: TrainerState = { version: CHECKPOINT_VERSION, epoch: 0, batchInEpoch: 0, globalStep: 0, seed, size, batchSize, epochSums: [], history: {} };
  let resumedFrom: string | undefined;
  if (options.checkpointDir && options.resume !== false) {
    // Rank 0 reads (or, with a copy on every host, the rank holding the newest); a read error
    // there (or a restore error anywhere) stops every rank at once.
    const { packed, folder } = await readNewestCheckpoint(strategy, options.checkpointDir, options.checkpointOnEveryHost === true, 'fit');
    if (packed.length > 0) {
      const checkpoint = await agreeOnSuccess(comm, 'fit: restoring the checkpoint', async () => {
        const loaded = unpackCheckpoint(packed);
        if (loaded.state.version !== CHECKPOINT_VERSION) {
          throw new InvalidArgumentError(`fit: the checkpoint has format version ${loaded.state.version}; this trainer reads ${CHECKPOINT_VERSION}`);
        }
        await restoreCheckpoint(model, loaded);
        return loaded;
      });
      state = { ...checkpoint.state, seed };
      // The steps before the checkpoint spent privacy too.
      if (privacy) privacy.steps = Math.max(privacy.steps, state.globalStep);
      resumedFrom = folder || join(options.checkpointDir, checkpointName(checkpoint.state.globalStep));
      if (checkpoint.state.size !== size || checkpoint.state.batchSize !== batchSize || checkpoint.state.seed !== seed) {
        progress.message(
          `resuming with ${size} ranks x ${batchSize} rows, seed ${seed}; the checkpoint was taken with ${checkpoint.state.size} x ${checkpoint.state.batchSize}, seed ${checkpoint.state.seed}: the epoch goes on with the rows not trained yet, dealt among these ranks (every row once), but not bit for bit as it would have`,
        );
      }
      progress.message(`resumed from ${folder || 'checkpoint'} at epoch ${state.epoch + 1}, step ${state.globalStep}`);
      if (state.epoch >= epochs) {
        progress.message(
          `nothing to train: the checkpoint in ${options.checkpointDir} is from a finished run (${state.epoch} of ${epochs} epochs done); to train again from the start, remove that folder or pass resume: false`,
        );
      }
    }
  }
  if (!resumedFrom) await strategy.broadcastVariables(model, 0);
  if (elastic) {
    joinElasticRun();
    reportStep(comm, state.globalStep, 'resumed');
  }

  const names = model.metricsNames;
  const early = options.earlyStopping ? new EarlyStopping(options.earlyStopping, options.validationData !== undefined, state.earlyStopping) : undefined;
  let stoppedEarly = false;

  const resumedSize = resumedFrom && state.size !== size ? state.size : undefined;
  for (const cb of callbacks) await cb.onTrainBegin?.({ resumedFrom, epoch: state.epoch, globalStep: state.globalStep, size, ...(resumedSize ? { resumedSize } : {}) });
  const commBefore = strategy.stats.communicationMs;
  const started = performance.now();
  let stepsRun = 0;

  // `last`: the checkpoint after the last epoch (training is over: no stop to grow there).
  const checkpoint = async (epoch: number, batchInEpoch: number, mySums: Record<string, number>, summedBatches: number, position: number, last = false) => {
    if (!options.checkpointDir) return;
    // Every rank's running sums go into the checkpoint (rank 0 writes it).
    let epochSums: Array<Record<string, number>> = [];
    if (batchInEpoch > 0) {
      const mine = Float64Array.from(names, (n) => mySums[n] ?? 0);
      const all = (await comm.allGather(mine)) as Float64Array;
      epochSums = Array.from({ length: size }, (_, r) => Object.fromEntries(names.map((n, i) => [n, all[r * names.length + i]!])));
    }
    const snapshot: TrainerState = {
      version: CHECKPOINT_VERSION,
      epoch,
      batchInEpoch,
      position,
      summedBatches,
      globalStep: state.globalStep,
      seed,
      size,
      batchSize,
      epochSums,
      history: state.history,
      earlyStopping: early?.state,
    };
    // A write error on rank 0 (a full disk, no permission) stops every rank together.
    const checkpointDir = options.checkpointDir;
    await agreeOnSuccess(comm, 'fit: writing a checkpoint', async () => {
      if (options.checkpointOnEveryHost ? comm.localRank !== 0 : rank !== 0) return;
      const folder = await writeCheckpoint(checkpointDir, model, snapshot, keep);
      for (const cb of callbacks) await cb.onCheckpoint?.(folder, snapshot);
    });
    if (elastic) {
      reportStep(comm, state.globalStep, 'commit');
      if (!last && (await resizeAgreed(comm))) stopForResize(comm, state.globalStep);
    }
  };

  try {
    for (let epoch = state.epoch; epoch < epochs && !stoppedEarly; epoch++) {
      // A resumed epoch goes on from the rows trained before the checkpoint: as dealt from the
      // epoch's start when the ranks and batch size are the checkpoint's (the same batches an
      // uninterrupted run trains), else dealt anew among these ranks from that position, so that
      // every row of the epoch is trained once across the runs (an elastic restart).
      const resumed = epoch === state.epoch;
      const position = state.position ?? state.batchInEpoch * state.batchSize * state.size;
      const asDealt = !resumed || (state.size === size && state.batchSize === batchSize && position === state.batchInEpoch * batchSize * size);
      const epochStart = asDealt || position >= rows ? 0 : position;
      const batches = epochBatches({ rows, rank, size, batchSize, seed, epoch, shuffle: options.shuffle ?? true, dropRemainder: options.dropRemainder, startPosition: epochStart });
      const firstBatch = resumed && asDealt ? state.batchInEpoch : 0;
      const sums: Record<string, number> = resumed ? resumedSums(state.epochSums, rank, size) : {};
      let summedBatches = resumed ? (state.summedBatches ?? state.batchInEpoch) : 0;
      for (const cb of callbacks) await cb.onEpochBegin?.(epoch);
      progress.epochBegin();
      let last: Record<string, number> = {};
      for (let b = firstBatch; b < batches.length; b++) {
        const indices = tf.tensor1d(batches[b]!, 'int32');
        const xb = take(data.x, indices);
        const yb = take(data.y, indices);
        let out: number[];
        try {
          if (privacy) out = await privateTrainStep(model, strategy, xb, yb, batchSize);
          else {
            batchAwareLoss?.prepareBatch(xb);
            out = asList(await model.trainOnBatch(xb, yb));
          }
        } finally {
          if (!privacy) batchAwareLoss?.releaseBatch();
          tf.dispose([indices, ...(Array.isArray(xb) ? xb : [xb]), ...(Array.isArray(yb) ? yb : [yb])]);
        }
        last = Object.fromEntries(names.map((n, i) => [n, out[i]!]));
        for (const n of names) sums[n] = (sums[n] ?? 0) + last[n]!;
        summedBatches++;
        state.globalStep++;
        stepsRun++;
        progress.step(epoch, b + 1, batches.length, last, firstBatch);
        if (elastic) reportStep(comm, state.globalStep);
        for (const cb of callbacks) await cb.onBatchEnd?.({ epoch, batch: b, globalStep: state.globalStep, rows: batches[b]! }, last);
        // A step checkpoint that falls on an epoch's last batch is taken after the epoch's metrics.
        if (stepCheckpointDue(state.globalStep) && b + 1 < batches.length) {
          await checkpoint(epoch, b + 1, sums, summedBatches, epochStart + (b + 1) * batchSize * size);
        }
      }
      const local = Object.fromEntries(names.map((n) => [n, summedBatches > 0 ? (sums[n] ?? 0) / summedBatches : 0]));
      const logs = await strategy.averageMetrics(local);
      if (options.validationData) Object.assign(logs, await validate(model, comm, options.validationData, options.validationBatchSize ?? batchSize));
      if (privacy) logs.epsilon = privacy.epsilon(samplingRate).epsilon;
      const ordered: Record<string, number> = {};
      for (const n of names) ordered[n] = logs[n]!;
      for (const [k, v] of Object.entries(logs)) if (!(k in ordered)) ordered[k] = v;
      for (const [k, v] of Object.entries(ordered)) (state.history[k] ??= []).push(v);
      for (const cb of callbacks) await cb.onEpochEnd?.(epoch, ordered);
      progress.epochEnd(epoch, batches.length, ordered, firstBatch);

      if (early?.observe(ordered, () => model.getWeights().map((w) => w.clone()))) stoppedEarly = true;
      // A callback may have set model.stopTraining on one rank only: stop together or not at all.
      const stop = new Float64Array([model.stopTraining || stoppedEarly ? 1 : 0]);
      await comm.allReduce(stop, { op: 'max' });
      if (stop[0] === 1) stoppedEarly = true;
      state.epoch = epoch + 1;
      state.batchInEpoch = 0;
      state.epochSums = [];
      state.position = 0;
      state.summedBatches = 0;
      const finished = epoch + 1 === epochs || stoppedEarly;
      const due = (everyEpochs > 0 && (epoch + 1) % everyEpochs === 0) || stepCheckpointDue(state.globalStep) || finished;
      if (due) await checkpoint(epoch + 1, 0, {}, 0, 0, finished);
    }
    if (stoppedEarly && early?.bestWeightsKept) model.setWeights(early.bestWeightsKept);
  } finally {
    early?.dispose();
  }
  const seconds = (performance.now() - started) / 1000;
  const result: FitResult = {
    history: state.history,
    epochs: Array.from({ length: state.history[names[0]!]?.length ?? 0 }, (_, i) => i),
    globalStep: state.globalStep,
    stoppedEarly,
    resumedFrom,
    samplesPerSecond: seconds > 0 ? (stepsRun * batchSize * size) / seconds : 0,
    communicationShare: seconds > 0 ? (strategy.stats.communicationMs - commBefore) / 1000 / seconds : 0,
  };
  for (const cb of callbacks) await cb.onTrainEnd?.(result);
  return result;
}

/** This rank's running sums from a checkpoint; with another number of ranks, their mean. */
function resumedSums(saved: Array<Record<string, number>>, rank: number, size: number): Record<string, number> {
  if (saved.length === 0) return {};
  if (saved.length === size) return { ...saved[rank]! };
  const out: Record<string, number> = {};
  for (const sums of saved) for (const [k, v] of Object.entries(sums)) out[k] = (out[k] ?? 0) + v / saved.length;
  return out;
}

/** Exact metrics over all validation rows: each rank evaluates its disjoint share; sums are reduced. */
async function validate(model: TrainableModel, comm: Communicator, data: Dataset, batchSize: number): Promise<Record<string, number>> {
  const total = rowsOf('validationData.x', data.x);
  const mine = validationRows(total, comm.rank, comm.size);
  const names = model.metricsNames;
  const sums = new Float64Array(names.length + 1);
  if (mine.length > 0) {
    const indices = tf.tensor1d(mine, 'int32');
    const x = take(data.x, indices);
    const y = take(data.y, indices);
    try {
      const scalars = model.evaluate(x, y, { batchSize });
      const values = asList(scalars);
      tf.dispose(scalars);
      values.forEach((v, i) => (sums[i] = v * mine.length));
    } finally {
      tf.dispose([indices, ...(Array.isArray(x) ? x : [x]), ...(Array.isArray(y) ? y : [y])]);
    }
    sums[names.length] = mine.length;
  }
  await comm.allReduce(sums, { op: 'sum' });
  return Object.fromEntries(names.map((n, i) => [`val_${n}`, sums[i]! / sums[names.length]!]));
}
