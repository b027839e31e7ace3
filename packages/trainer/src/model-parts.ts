// The members of a compiled tfjs LayersModel that fit reads beyond its TrainableModel interface
// (public in tfjs-layers): the compiled loss and metrics, for the DP-SGD step and distillation.
import * as tf from '@tensorflow/tfjs-core';

import type { TrainableModel } from './fit.js';

type LossOrMetric = (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor;

/** The LayersModel members fit reads (public in tfjs-layers, if not in TrainableModel). */
export interface LayersModelParts {
  apply(inputs: tf.Tensor | tf.Tensor[], kwargs?: { training?: boolean }): tf.Tensor | tf.Tensor[];
  trainableWeights: Array<{ read(): tf.Variable }>;
  lossFunctions?: LossOrMetric[];
  metricsTensors?: Array<[LossOrMetric, number]>;
  outputs?: unknown[];
  layers?: Array<{ getClassName(): string; name: string }>;
  calculateLosses?: () => tf.Scalar[];
  /** A Sequential compiles an inner LayersModel, which holds the loss and metrics. */
  model?: LayersModelParts;
}

export function compiledParts(model: TrainableModel): { parts: LayersModelParts; compiled: LayersModelParts } {
  const parts = model as unknown as LayersModelParts;
  return { parts, compiled: parts.model && !parts.lossFunctions ? parts.model : parts };
}

/** A loss that wants each training batch's inputs first (@braid/model-compression's distillationLoss). */
export interface BatchAwareLoss {
  prepareBatch(x: tf.Tensor | tf.Tensor[]): void;
  releaseBatch(): void;
}

const BATCH_AWARE_LOSS = Symbol.for('braid.batchAwareLoss');

export function batchAwareLossOf(model: TrainableModel): BatchAwareLoss | undefined {
  const loss = compiledParts(model).compiled.lossFunctions?.[0] as unknown as (Record<symbol, unknown> & BatchAwareLoss) | undefined;
  return loss && loss[BATCH_AWARE_LOSS] === true ? loss : undefined;
}
