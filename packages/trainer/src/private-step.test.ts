// fit under DP-SGD in a world of one (no mpirun): the per-microbatch step computes the gradients
// trainOnBatch would (with nothing clipped and no noise), epsilon is reported per epoch, and what
// DP-SGD cannot train is refused before the first step.
import { init } from '@braid/collectives';
import { computeEpsilon, DataParallel } from '@braid/strategies';
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

function model(layers: tf.layers.Layer[] = []) {
  const m = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [4], units: 8, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }), kernelRegularizer: tf.regularizers.l2({ l2: 0.01 }) }),
      ...layers,
      tf.layers.dense({ units: 2, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    ],
  });
  m.compile({ optimizer: tf.train.sgd(0.3), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  return m;
}

const weightsOf = (m: tf.LayersModel) => m.getWeights().map((w) => Array.from(w.dataSync()));

describe('fit with differential privacy', () => {
  it.each([1, 4, 8])('microbatches of %i with nothing clipped and no noise train as plain fit does (regularizer included), epsilon Infinity', async (microbatchSize) => {
    const train = data(64);
    const plain = model();
    const plainResult = await fit(plain, train, { epochs: 2, batchSize: 8, strategy: new DataParallel(comm), progress: 'none' });
    const privateModel = model();
    const strategy = new DataParallel(comm, { privacy: { clipNorm: 1e9, noiseMultiplier: 0, microbatchSize } });
    const result = await fit(privateModel, train, { epochs: 2, batchSize: 8, strategy, progress: 'none' });
    const a = weightsOf(plain).flat();
    const b = weightsOf(privateModel).flat();
    // The sum of per-microbatch gradients over the microbatch count: the batch gradient to rounding.
    a.forEach((v, i) => expect(b[i]).toBeCloseTo(v, 5));
    result.history.loss!.forEach((v, i) => expect(v).toBeCloseTo(plainResult.history.loss![i]!, 5));
    result.history.acc!.forEach((v, i) => expect(v).toBeCloseTo(plainResult.history.acc![i]!, 6));
    expect(result.history.epsilon).toEqual([Infinity, Infinity]);
    expect(strategy.differentialPrivacy!.steps).toBe(16);
  });

  it('reports epsilon after every epoch as the RDP accountant counts the steps so far', async () => {
    const strategy = new DataParallel(comm, { privacy: { clipNorm: 1, noiseMultiplier: 1.1, delta: 1e-3 } });
    const result = await fit(model(), data(40), { epochs: 3, batchSize: 8, strategy, progress: 'none' });
    const q = 8 / 40;
    expect(result.history.epsilon).toEqual([5, 10, 15].map((steps) => computeEpsilon({ samplingRate: q, noiseMultiplier: 1.1, steps, delta: 1e-3 }).epsilon));
    expect(result.history.epsilon![0]).toBeLessThan(result.history.epsilon![2]!);
  });

  it('refuses what it cannot bound or combine, naming the fix', async () => {
    const train = data(16);
    const dp = (privacy: object, more: object = {}) => new DataParallel(comm, { privacy, ...more });
    await expect(fit(model([tf.layers.batchNormalization()]), train, { strategy: dp({ clipNorm: 1, noiseMultiplier: 1 }) })).rejects.toThrow(
      /differential privacy cannot bound one example's influence through BatchNormalization \(layer 'batch_normalization\w*'\); use layerNormalization instead/,
    );
    await expect(fit(model(), train, { batchSize: 6, strategy: dp({ clipNorm: 1, noiseMultiplier: 1, microbatchSize: 4 }) })).rejects.toThrow(
      'fit: batchSize (6) must be a multiple of privacy.microbatchSize (4)',
    );
    const input = tf.input({ shape: [4] });
    const twoOutputs = tf.model({ inputs: input, outputs: [tf.layers.dense({ units: 2 }).apply(input) as tf.SymbolicTensor, tf.layers.dense({ units: 1 }).apply(input) as tf.SymbolicTensor] });
    twoOutputs.compile({ optimizer: 'sgd', loss: ['meanSquaredError', 'meanSquaredError'] });
    await expect(fit(twoOutputs, { x: train.x, y: [train.y, tf.zeros([16, 1])] }, { strategy: dp({ clipNorm: 1, noiseMultiplier: 1 }) })).rejects.toThrow(
      'fit: differential privacy trains models with one output; this one has 2',
    );
    expect(() => dp({ clipNorm: 1 })).toThrow('DataParallel: differential privacy needs both privacy.clipNorm (e.g. 1) and privacy.noiseMultiplier');
    expect(() => dp({ clipNorm: -1, noiseMultiplier: 1 })).toThrow('DataParallel: privacy.clipNorm must be a positive number; got -1');
    expect(() => dp({ clipNorm: 1, noiseMultiplier: -0.5 })).toThrow('DataParallel: privacy.noiseMultiplier must be a number >= 0; got -0.5');
    expect(() => dp({ clipNorm: 1, noiseMultiplier: 1, microbatchSize: 0 })).toThrow('privacy.microbatchSize must be an integer >= 1; got 0');
    expect(() => dp({ clipNorm: 1, noiseMultiplier: 1, delta: 1 })).toThrow('privacy.delta must be in (0, 1)');
    expect(() => dp({ clipNorm: 1, noiseMultiplier: 1, clipnorm: 2 })).toThrow(/unknown option 'clipnorm'; did you mean 'clipNorm'\?/);
    expect(() => dp({ clipNorm: 1, noiseMultiplier: 1 }, { accumulationSteps: 2 })).toThrow('differential privacy with accumulationSteps is not supported');
    expect(() => dp({ clipNorm: 1, noiseMultiplier: 1 }, { localSgdSteps: 2 })).toThrow('local SGD averages weights instead');
    await expect(new DataParallel(comm).privateGradients(() => tf.scalar(0), train.x, train.y)).rejects.toThrow('privateGradients: create the DataParallel with privacy: { clipNorm, noiseMultiplier } first');
  });
});
