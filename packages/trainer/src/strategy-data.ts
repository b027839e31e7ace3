// What fit under a PipelineParallel or a ParameterServer checks first: the options it does not
// offer there yet (refused by name, not ignored), one tensor each for x and y, and every rank
// holding the same rows, batch size and seed (each deals the rows from them).
import { type Communicator, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

import type { Dataset, FitOptions } from './fit.js';

export interface StrategyData {
  x: tf.Tensor;
  y: tf.Tensor;
  rows: number;
  validation?: { x: tf.Tensor; y: tf.Tensor };
}

/** Refuses `unsupported` options; returns the data as single tensors; agrees on rows, batch size and seed over `comm`. */
export async function strategyData(
  strategy: string,
  comm: Communicator,
  data: Dataset,
  options: FitOptions,
  unsupported: Array<keyof FitOptions>,
  settings: { batchSize: number; seed: number },
  advice = 'leave it out',
): Promise<StrategyData> {
  for (const name of unsupported) {
    // Left out, or a switch left off (false), is what these strategies do anyway.
    if (options[name] !== undefined && options[name] !== false) throw new InvalidArgumentError(`fit: ${name} is not supported with a ${strategy} strategy yet (it is with DataParallel); ${advice}`);
  }
  const single = (what: string, t: tf.Tensor | tf.Tensor[]): tf.Tensor => {
    if (Array.isArray(t) || !(t instanceof tf.Tensor) || t.rank < 1) {
      throw new InvalidArgumentError(`fit: with a ${strategy} strategy, ${what} must be one tensor with rows along the first axis`);
    }
    return t;
  };
  const x = single('data.x', data.x);
  const y = single('data.y', data.y);
  const rows = x.shape[0]!;
  if (y.shape[0] !== rows) throw new InvalidArgumentError(`fit: data.x has ${rows} rows but data.y has ${y.shape[0]}`);
  if (rows === 0) throw new InvalidArgumentError('fit: there are no training rows');
  const validation = options.validationData && { x: single('validationData.x', options.validationData.x), y: single('validationData.y', options.validationData.y) };
  if (validation && validation.x.shape[0] !== validation.y.shape[0]) throw new InvalidArgumentError('fit: validationData.x and validationData.y have different numbers of rows');
  const { batchSize, seed } = settings;
  const check = Float64Array.of(rows, -rows, batchSize, -batchSize, seed, -seed);
  await comm.allReduce(check, { op: 'max' });
  if (check[0] !== -check[1]! || check[2] !== -check[3]! || check[4] !== -check[5]!) {
    throw new InvalidArgumentError('fit: the ranks were given different numbers of rows, batch sizes or seeds; pass the same data and options on every rank');
  }
  return { x, y, rows, validation };
}
