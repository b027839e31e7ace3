// fit's training step under DP-SGD (DataParallel's privacy.clipNorm): model.trainOnBatch averages
// the batch's gradient before any hook sees it, so the step runs the model microbatch by
// microbatch itself (its compiled loss, regularizers included, in training mode), clips, noises
// and averages through DataParallel.privateGradients, and applies with the wrapped optimizer's
// inner one. The metrics come from the same forward passes.
import { InvalidArgumentError } from '@braid/collectives';
import { type DataParallel, DistributedOptimizer } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs-core';

import type { TrainableModel } from './fit.js';
import { batchAwareLossOf, compiledParts } from './model-parts.js';

/** Refuses, before the first step, what DP-SGD cannot train. */
export function checkPrivateTraining(model: TrainableModel, batchSize: number, microbatchSize: number): void {
  const { parts, compiled } = compiledParts(model);
  if (typeof parts.apply !== 'function' || !Array.isArray(parts.trainableWeights) || !Array.isArray(compiled.lossFunctions)) {
    throw new InvalidArgumentError('fit: differential privacy needs a compiled tfjs LayersModel (it runs the model and its loss per microbatch)');
  }
  if ((compiled.outputs?.length ?? 1) !== 1 || compiled.lossFunctions.length !== 1) {
    throw new InvalidArgumentError(`fit: differential privacy trains models with one output; this one has ${compiled.outputs?.length}`);
  }
  // Batch statistics mix the examples of a batch: no per-example bound then (Opacus refuses it too).
  const batchNorm = parts.layers?.find((l) => l.getClassName() === 'BatchNormalization');
  if (batchNorm) {
    throw new InvalidArgumentError(`fit: differential privacy cannot bound one example's influence through BatchNormalization (layer '${batchNorm.name}'); use layerNormalization instead`);
  }
  if (batchSize % microbatchSize !== 0) {
    throw new InvalidArgumentError(`fit: batchSize (${batchSize}) must be a multiple of privacy.microbatchSize (${microbatchSize})`);
  }
}

/** One DP-SGD step on this rank's batch; returns [loss, ...metrics] as trainOnBatch does. */
export async function privateTrainStep(model: TrainableModel, strategy: DataParallel, x: tf.Tensor | tf.Tensor[], y: tf.Tensor | tf.Tensor[], batchSize: number): Promise<number[]> {
  const { parts, compiled } = compiledParts(model);
  const lossFunction = compiled.lossFunctions![0]!;
  const variables = parts.trainableWeights.map((w) => w.read());
  const predictions: tf.Tensor[] = [];
  // A distillation loss gets each microbatch's inputs (the teacher's targets for those rows).
  const batchAware = batchAwareLossOf(model);
  const loss = (xm: tf.Tensor | tf.Tensor[], ym: tf.Tensor | tf.Tensor[]): tf.Scalar => {
    batchAware?.prepareBatch(xm);
    const prediction = parts.apply(xm, { training: true }) as tf.Tensor;
    predictions.push(tf.keep(prediction));
    let total = tf.mean(lossFunction(ym as tf.Tensor, prediction)) as tf.Scalar;
    for (const penalty of compiled.calculateLosses?.() ?? []) total = tf.add(total, penalty);
    return total;
  };
  try {
    const step = await strategy.privateGradients(loss, x, y, { variables, expectedRows: batchSize });
    const optimizer = model.optimizer instanceof DistributedOptimizer ? model.optimizer.inner : model.optimizer;
    try {
      optimizer.applyGradients(step.grads);
    } finally {
      tf.dispose(Object.values(step.grads));
    }
    const metrics = tf.tidy(() => {
      const all = predictions.length === 1 ? predictions[0]! : tf.concat(predictions);
      return (compiled.metricsTensors ?? []).map(([metric]) => tf.mean(metric(y as tf.Tensor, all)).dataSync()[0]!);
    });
    return [step.loss, ...metrics];
  } finally {
    batchAware?.releaseBatch();
    tf.dispose(predictions);
  }
}
