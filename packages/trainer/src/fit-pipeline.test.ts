// fit under a PipelineParallel strategy in a world of one (no mpirun: one stage): it trains, and
// what only DataParallel offers yet is refused by name. The multi-stage runs are in mpi.test.ts.
import { init } from '@braid/collectives';
import { PipelineParallel } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { fit } from './fit.js';

tf.enableProdMode();
let comm: Awaited<ReturnType<typeof init>>;
beforeAll(async () => {
  comm = await init();
});
afterAll(async () => {
  await comm.close();
});

function data(rows: number) {
  const x = tf.tensor2d(Array.from({ length: rows * 4 }, (_, i) => Math.sin(i * 1.7)), [rows, 4]);
  const labels = Array.from({ length: rows }, (_, i) => (Math.sin(i * 1.7) > 0 ? 1 : 0));
  return { x, y: tf.oneHot(tf.tensor1d(labels, 'int32'), 2).toFloat() };
}

function model() {
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [4], units: 8, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
      tf.layers.dense({ units: 2, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    ],
  });
}

describe('fit with a PipelineParallel strategy (one stage)', () => {
  it('trains, and refuses what only DataParallel offers yet by name', async () => {
    const m = model();
    const pipe = new PipelineParallel(comm, m, { optimizer: tf.train.sgd(0.3), loss: 'categoricalCrossentropy' });
    const rows = data(40);
    const result = await fit(m, rows, { strategy: pipe, epochs: 2, batchSize: 8, progress: 'none' });
    expect(result.globalStep).toBe(10);
    expect(result.history.loss[1]).toBeLessThan(result.history.loss[0]!);
    for (const [name, value] of [['commitEvery', 5], ['checkpointOnEveryHost', true]] as const) {
      await expect(fit(m, rows, { strategy: pipe, [name]: value })).rejects.toThrow(
        `fit: ${name} is not supported with a PipelineParallel strategy yet (it is with DataParallel); leave it out`,
      );
    }
    await expect(fit(m, { x: [rows.x], y: rows.y }, { strategy: pipe })).rejects.toThrow('fit: with a PipelineParallel strategy, data.x must be one tensor with rows along the first axis');
  });
});
