// fit() under a PipelineParallel strategy: every rank of a pipeline takes the same batch (the
// first stage reads x, the last y), pipelines side by side (the strategy's replicas) take their
// own rows, and each step is the strategy's trainStep. The loss is the pipeline's (the mean over
// the replicas); validation runs the pipeline's forward on each pipeline's share of the rows.
// Checkpoints: each stage its own part (stage-checkpoint.ts); a run resumes from the newest.
import { InvalidArgumentError } from '@braid/collectives';
import type { PipelineParallel } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs-core';

import type { Dataset, FitOptions, FitResult } from './fit.js';
import { EarlyStopping } from './early-stopping.js';
import { Progress, resolveProgressMode } from './progress.js';
import { epochBatches, validationRows } from './sharding.js';
import { strategyData } from './strategy-data.js';
import { PIPELINE_CHECKPOINT_VERSION, type PipelineState, restorePipelineCheckpoint, writePipelineCheckpoint } from './stage-checkpoint.js';

// What fit offers under DataParallel that a pipeline does not have yet.
const UNSUPPORTED: Array<keyof FitOptions> = ['commitEvery', 'checkpointOnEveryHost'];

export async function fitPipeline(
  data: Dataset,
  options: FitOptions,
  pipeline: PipelineParallel,
  settings: { epochs: number; batchSize: number; seed: number; keep: number; everySteps: number; everyEpochs: number },
): Promise<FitResult> {
  const { epochs, batchSize, seed, keep, everySteps, everyEpochs } = settings;
  // Every rank of every pipeline must deal the same rows: the stages' messages carry them.
  const { x, y, rows, validation } = await strategyData('PipelineParallel', pipeline.comm, data, options, UNSUPPORTED, settings);

  const callbacks = options.callbacks === undefined ? [] : Array.isArray(options.callbacks) ? options.callbacks : [options.callbacks];
  const { replicaIndex, replicaCount } = pipeline;
  // One rank prints: the first stage of the first pipeline.
  const printer = pipeline.stage === 0 && replicaIndex === 0 ? 0 : 1;
  const progress = new Progress(resolveProgressMode(options.progress ?? 'auto', printer), epochs, batchSize * replicaCount, options.write);
  let state: PipelineState = {
    version: PIPELINE_CHECKPOINT_VERSION,
    kind: 'pipeline',
    stages: pipeline.stages,
    replicas: replicaCount,
    epoch: 0,
    batchInEpoch: 0,
    lossSum: 0,
    globalStep: 0,
    seed,
    batchSize,
    history: {},
  };
  let resumedFrom: string | undefined;
  const dir = options.checkpointDir;
  if (dir && options.resume !== false) {
    const restored = await restorePipelineCheckpoint(dir, pipeline);
    if (restored) {
      if (restored.state.replicas !== replicaCount || restored.state.batchSize !== batchSize || restored.state.seed !== seed) {
        throw new InvalidArgumentError(
          `fit: ${restored.folder} was taken with ${restored.state.replicas} pipeline(s), batchSize ${restored.state.batchSize}, seed ${restored.state.seed}; a pipeline resumes with the same (or use another checkpointDir)`,
        );
      }
      state = restored.state;
      resumedFrom = restored.folder;
      progress.message(`resumed from ${resumedFrom} at epoch ${state.epoch + 1}, step ${state.globalStep}`);
    }
  }
  const history = state.history;
  // Every rank sees the same history (the losses broadcast, validation summed), so every rank
  // decides alike; the decision is agreed on all the same. Best weights: each stage its own.
  const metrics = ['loss', ...(validation ? ['val_loss', ...(validation.y.rank === 2 && validation.y.shape[1]! > 1 ? ['val_acc'] : [])] : [])];
  const early = options.earlyStopping ? new EarlyStopping(options.earlyStopping, validation !== undefined, state.earlyStopping, metrics) : undefined;
  let stoppedEarly = false;
  const checkpoint = async () => {
    if (!dir) return;
    const snapshot = { ...state, history, ...(early ? { earlyStopping: early.state } : {}) };
    const folder = await writePipelineCheckpoint(dir, pipeline, snapshot, keep);
    for (const cb of callbacks) await cb.onCheckpoint?.(folder, snapshot);
  };
  const waitingBefore = pipeline.stats.waitingMs;
  const started = performance.now();
  let globalStep = state.globalStep;
  let stepsRun = 0;
  for (const cb of callbacks) await cb.onTrainBegin?.({ resumedFrom, epoch: state.epoch, globalStep, size: replicaCount });
  for (let epoch = state.epoch; epoch < epochs; epoch++) {
    const batches = epochBatches({ rows, rank: replicaIndex, size: replicaCount, batchSize, seed, epoch, shuffle: options.shuffle ?? true, dropRemainder: options.dropRemainder });
    const firstBatch = epoch === state.epoch ? state.batchInEpoch : 0;
    let lossSum = epoch === state.epoch ? state.lossSum : 0;
    for (const cb of callbacks) await cb.onEpochBegin?.(epoch);
    progress.epochBegin();
    for (let b = firstBatch; b < batches.length; b++) {
      const indices = tf.tensor1d(batches[b]!, 'int32');
      const xb = tf.gather(x, indices);
      const yb = tf.gather(y, indices);
      let loss: number;
      try {
        loss = await pipeline.trainStep(xb, yb);
      } finally {
        tf.dispose([indices, xb, yb]);
      }
      lossSum += loss;
      globalStep++;
      stepsRun++;
      progress.step(epoch, b + 1, batches.length, { loss }, firstBatch);
      for (const cb of callbacks) await cb.onBatchEnd?.({ epoch, batch: b, globalStep, rows: batches[b]! }, { loss });
      // A step checkpoint on an epoch's last batch is taken after the epoch's metrics.
      if (everySteps > 0 && globalStep % everySteps === 0 && b + 1 < batches.length) {
        state = { ...state, epoch, batchInEpoch: b + 1, lossSum, globalStep };
        await checkpoint();
      }
    }
    const logs: Record<string, number> = { loss: batches.length > 0 ? lossSum / batches.length : 0 };
    if (validation) Object.assign(logs, await validate(pipeline, validation, options.validationBatchSize ?? batchSize));
    for (const [k, v] of Object.entries(logs)) (history[k] ??= []).push(v);
    for (const cb of callbacks) await cb.onEpochEnd?.(epoch, logs);
    progress.epochEnd(epoch, batches.length, logs, firstBatch);
    if (early) {
      const stop = Float64Array.of(early.observe(logs, () => pipeline.stageWeights()) ? 1 : 0);
      await pipeline.comm.allReduce(stop, { op: 'max' });
      await pipeline.sumOverReplicas(stop);
      stoppedEarly = stop[0]! > 0;
    }
    state = { ...state, epoch: epoch + 1, batchInEpoch: 0, lossSum: 0, globalStep };
    const finished = epoch + 1 === epochs || stoppedEarly;
    if (finished || (everyEpochs > 0 && (epoch + 1) % everyEpochs === 0) || (everySteps > 0 && globalStep % everySteps === 0)) await checkpoint();
    if (stoppedEarly) break;
  }
  if (stoppedEarly && early?.bestWeightsKept) pipeline.setStageWeights(early.bestWeightsKept);
  early?.dispose();
  if (resumedFrom && state.epoch >= epochs && stepsRun === 0) {
    progress.message(`nothing to train: the checkpoint in ${dir} is from a finished run (${state.epoch} of ${epochs} epochs done); to train again from the start, remove that folder or pass resume: false`);
  }
  const seconds = (performance.now() - started) / 1000;
  const result: FitResult = {
    history,
    epochs: Array.from({ length: history.loss?.length ?? 0 }, (_, i) => i),
    globalStep,
    stoppedEarly,
    resumedFrom,
    samplesPerSecond: seconds > 0 ? (stepsRun * batchSize * replicaCount) / seconds : 0,
    // A pipeline's communication: the time its stage waited for activations and gradients.
    communicationShare: seconds > 0 ? (pipeline.stats.waitingMs - waitingBefore) / 1000 / seconds : 0,
  };
  for (const cb of callbacks) await cb.onTrainEnd?.(result);
  return result;
}

/** val_loss (and val_acc for one-hot targets) over all the validation rows, the pipelines sharing them. */
async function validate(pipeline: PipelineParallel, data: { x: tf.Tensor; y: tf.Tensor }, batchSize: number): Promise<Record<string, number>> {
  const mine = validationRows(data.x.shape[0]!, pipeline.replicaIndex, pipeline.replicaCount);
  const sums = new Float64Array(3);
  if (mine.length > 0) {
    const indices = tf.tensor1d(mine, 'int32');
    const [x, y] = [tf.gather(data.x, indices), tf.gather(data.y, indices)];
    try {
      const { lossSum, correct, rows } = await pipeline.evaluate(x, y, batchSize);
      sums.set([lossSum, correct, rows]);
    } finally {
      tf.dispose([indices, x, y]);
    }
  }
  await pipeline.sumOverReplicas(sums);
  const oneHot = data.y.rank === 2 && data.y.shape[1]! > 1;
  return { val_loss: sums[0]! / sums[2]!, ...(oneHot ? { val_acc: sums[1]! / sums[2]! } : {}) };
}
