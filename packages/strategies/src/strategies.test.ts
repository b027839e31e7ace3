// A world of one (no mpirun): argument checks, bucket planning, and the
// distributed optimizer inside LayersModel.fit giving exactly what the plain optimizer gives.
import { init, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { planBuckets } from './buckets.js';
import { DataParallel } from './data-parallel.js';
import { DistributedOptimizer } from './distributed-optimizer.js';
import { linearWarmup, scaleLearningRate } from './schedules.js';
import { dataParallelCallbacks, learningRateWarmup } from './callbacks.js';

tf.enableProdMode();
let comm: Awaited<ReturnType<typeof init>>;
beforeAll(async () => {
  comm = await init();
});
afterAll(async () => {
  await comm.close();
});

describe('planBuckets', () => {
  it('packs consecutive tensors up to the byte limit; a big tensor gets its own bucket', () => {
    const plan = planBuckets([10, 20, 30, 100, 5, 5], 160);
    expect(plan.map((b) => b.slots.map((s) => s.tensor))).toEqual([[0, 1], [2], [3], [4, 5]]);
    expect(plan.map((b) => b.length)).toEqual([30, 30, 100, 10]);
    expect(plan[0]!.slots.map((s) => s.offset)).toEqual([0, 10]);
    expect(planBuckets([], 64)).toEqual([]);
    expect(planBuckets([1, 1, 1], 1 << 20)).toHaveLength(1);
  });
});

describe('DataParallel in a world of one', () => {
  it('refuses bad options with messages that say what to pass', () => {
    expect(() => new DataParallel({} as never)).toThrow(/Communicator/);
    expect(() => new DataParallel(comm, { bucketBytes: 0 })).toThrow(InvalidArgumentError);
    expect(() => new DataParallel(comm, { compression: 'zip' as never })).toThrow(/'none', 'fp16', 'bf16', or a function returning/);
    const odd = new DataParallel(comm, { compression: (() => 42) as never });
    expect(() => odd.averageTensorsSync([tf.zeros([2])])).toThrow(/returned 42 for a tensor of shape \[2\]; return a compressor/);
    expect(() => new DataParallel(comm, { algorithm: 'fast' as never })).toThrow(/algorithm/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: true }, compression: 'fp16' })).toThrow(/cannot be combined with compression/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: true }, localSgdSteps: 4 })).toThrow(/local SGD averages weights instead/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: { scale: 0 } } })).toThrow(/scale must be a positive number; got 0/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: { clip: -1 } } })).toThrow(/clip must be a positive number; got -1/);
    expect(() => new DataParallel(comm, { privacy: { dp: true } as never })).toThrow(/privacy/);
    expect(() => new DataParallel(comm, { accumulationSteps: 1.5 })).toThrow(/accumulationSteps/);
    expect(() => new DataParallel(comm, { accumulationSteps: 2, localSgdSteps: 2 })).toThrow(/either/);
    const dp = new DataParallel(comm);
    expect(() => dp.wrapOptimizer({} as never)).toThrow(/tf.train.adam/);
    const wrapped = dp.wrapOptimizer(tf.train.sgd(0.1));
    expect(wrapped).toBeInstanceOf(DistributedOptimizer);
    expect(tf.train.sgd(0.1)).not.toBeInstanceOf(DistributedOptimizer);
    expect(() => dp.wrapOptimizer(wrapped)).toThrow(/already distributed/);
    return expect(dp.broadcastVariables([], 1)).rejects.toThrow(/root must be a rank in \[0, 0\]/);
  });

  it('model.fit with the wrapped optimizer gives exactly the plain optimizer\'s weights', async () => {
    const build = () =>
      tf.sequential({ layers: [tf.layers.dense({ inputShape: [6], units: 8, activation: 'tanh' }), tf.layers.dense({ units: 1 })] });
    const x = tf.randomNormal([64, 6], 0, 1, 'float32', 3);
    const y = tf.randomNormal([64, 1], 0, 1, 'float32', 4);
    const a = build();
    const b = build();
    b.setWeights(a.getWeights());
    const dp = new DataParallel(comm, { bucketBytes: 64 });
    const wrapped = dp.wrapOptimizer(tf.train.adam(0.01));
    a.compile({ optimizer: wrapped, loss: 'meanSquaredError' });
    b.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
    await a.fit(x, y, { epochs: 2, batchSize: 16, shuffle: false, verbose: 0 });
    await b.fit(x, y, { epochs: 2, batchSize: 16, shuffle: false, verbose: 0 });
    a.getWeights().forEach((w, i) => expect(Array.from(w.dataSync())).toEqual(Array.from(b.getWeights()[i]!.dataSync())));
    expect(wrapped.iterations).toBe(8);
    expect(wrapped.getClassName()).toBe('Adam');
    expect(dp.stats.reductions).toBe(8);
    expect(dp.stats.allReduceCalls).toBeGreaterThan(8); // 64-byte buckets split the 6x8 kernel's step
    wrapped.learningRate = 0.5;
    expect(wrapped.learningRate).toBe(0.5);
  });
});

describe('learning-rate helpers', () => {
  it('scale by the number of ranks and warm up linearly', () => {
    expect(scaleLearningRate(0.01, 4)).toBeCloseTo(0.04, 15);
    expect(() => scaleLearningRate(-1, 2)).toThrow(/positive/);
    const lr = linearWarmup({ targetLr: 0.4, size: 4, warmupSteps: 10 });
    expect(lr(0)).toBeCloseTo(0.1, 15);
    expect(lr(5)).toBeCloseTo(0.25, 15);
    expect(lr(10)).toBe(0.4);
    expect(lr(1000)).toBe(0.4);
    expect(linearWarmup({ targetLr: 0.4, size: 4, warmupSteps: 0 })(0)).toBe(0.4);
  });
});

describe('unknown options are refused, naming the key and the nearest known one', () => {
  it('in DataParallel, linearWarmup and the callbacks', async () => {
    const comm = await init();
    expect(() => new DataParallel(comm, { bucketbytes: 1024 } as never)).toThrow(/DataParallel: unknown option 'bucketbytes'; did you mean 'bucketBytes'\?/);
    expect(() => new DataParallel(comm, { privacyy: true } as never)).toThrow(InvalidArgumentError);
    expect(() => new DataParallel(comm, { compresion: 'fp16' } as never)).toThrow(/did you mean 'compression'\?/);
    expect(() => linearWarmup({ targetLr: 1, size: 2, warmupSteps: 3, warmupStep: 1 } as never)).toThrow(/linearWarmup: unknown option 'warmupStep'; did you mean 'warmupSteps'\?/);
    const dp = new DataParallel(comm);
    expect(() => learningRateWarmup(dp, { learningRate: 1 }, { warmupEpoch: 2 } as never)).toThrow(/did you mean 'warmupEpochs'\?/);
    expect(() => dataParallelCallbacks(dp, [], { roots: 0 } as never)).toThrow(/dataParallelCallbacks: unknown option 'roots'; did you mean 'root'\?/);
  });
});
