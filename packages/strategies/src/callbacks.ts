// Callbacks for `model.fit` users, in the shape tfjs accepts (plain objects become CustomCallbacks).
// tfjs does not hand the model to plain-object callbacks, so the ones that need it take it here.
import { checkOptions, InvalidArgumentError } from '@braid/collectives';
import type * as tf from '@tensorflow/tfjs-core';

import type { Broadcastable, DataParallel } from './data-parallel.js';
import { linearWarmup } from './schedules.js';

type Logs = Record<string, number>;

export interface FitCallback {
  onTrainBegin?: (logs?: Logs) => void | Promise<void>;
  onTrainEnd?: (logs?: Logs) => void | Promise<void>;
  onEpochBegin?: (epoch: number, logs?: Logs) => void | Promise<void>;
  onEpochEnd?: (epoch: number, logs?: Logs) => void | Promise<void>;
  onBatchBegin?: (batch: number, logs?: Logs) => void | Promise<void>;
  onBatchEnd?: (batch: number, logs?: Logs) => void | Promise<void>;
}

/** Broadcasts the model's weights (and the optimizer's state, when given) from `root` as training begins. */
export function broadcastOnTrainBegin(dp: DataParallel, model: Broadcastable, options: { root?: number; optimizer?: tf.Optimizer } = {}): FitCallback {
  checkOptions('broadcastOnTrainBegin', options, ['root', 'optimizer']);
  return {
    onTrainBegin: async () => {
      await dp.broadcastVariables(model, options.root ?? 0);
      if (options.optimizer) await dp.broadcastVariables(options.optimizer, options.root ?? 0);
    },
  };
}

/** Replaces each epoch's metrics (loss, acc, val_loss, ...) by their average over ranks, in place. */
export function averageMetricsOnEpochEnd(dp: DataParallel): FitCallback {
  return {
    onEpochEnd: async (_epoch, logs) => {
      if (!logs) return;
      Object.assign(logs, await dp.averageMetrics(logs));
    },
  };
}

export interface WarmupCallbackOptions {
  /** The rate after warm-up; default: the optimizer's rate when training begins (already scaled). */
  targetLr?: number;
  /** Warm-up length in epochs (default 5, as in Goyal et al.). */
  warmupEpochs?: number;
  /** Batches per epoch; with it the rate rises every batch, without it every epoch. */
  stepsPerEpoch?: number;
}

/** Linear learning-rate warm-up from targetLr / size to targetLr (Goyal et al.; Horovod's LearningRateWarmupCallback). */
export function learningRateWarmup(dp: DataParallel, optimizer: { learningRate: number }, options: WarmupCallbackOptions = {}): FitCallback {
  checkOptions('learningRateWarmup', options, ['targetLr', 'warmupEpochs', 'stepsPerEpoch', 'optimizer']);
  const warmupEpochs = options.warmupEpochs ?? 5;
  if (!(warmupEpochs >= 0)) throw new InvalidArgumentError(`learningRateWarmup: warmupEpochs must be >= 0; got ${warmupEpochs}`);
  const perEpoch = options.stepsPerEpoch;
  if (perEpoch !== undefined && !(Number.isInteger(perEpoch) && perEpoch > 0)) {
    throw new InvalidArgumentError(`learningRateWarmup: stepsPerEpoch must be a positive integer; got ${perEpoch}`);
  }
  let schedule: ((step: number) => number) | undefined;
  let epoch = 0;
  const granularity = perEpoch ?? 1;
  const set = (step: number) => {
    optimizer.learningRate = schedule!(step);
  };
  return {
    onTrainBegin: () => {
      const targetLr = options.targetLr ?? optimizer.learningRate;
      schedule = linearWarmup({ targetLr, size: dp.size, warmupSteps: Math.round(warmupEpochs * granularity) });
      set(0);
    },
    onEpochBegin: (e) => {
      epoch = e;
      set(epoch * granularity);
    },
    onBatchBegin: (batch) => {
      if (perEpoch !== undefined) set(epoch * perEpoch + batch);
    },
  };
}

/** All three, in the order they must run: broadcast, warm-up (if asked), metric averaging. */
export function dataParallelCallbacks(
  dp: DataParallel,
  model: Broadcastable,
  options: { root?: number; warmup?: WarmupCallbackOptions & { optimizer: { learningRate: number } } } = {},
): FitCallback[] {
  checkOptions('dataParallelCallbacks', options, ['root', 'warmup']);
  const list = [broadcastOnTrainBegin(dp, model, { root: options.root })];
  if (options.warmup) list.push(learningRateWarmup(dp, options.warmup.optimizer, options.warmup));
  list.push(averageMetricsOnEpochEnd(dp));
  return list;
}
