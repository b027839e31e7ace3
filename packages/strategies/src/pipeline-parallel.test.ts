// Where a pipeline may cut a model, and what it says when it cannot: no mpirun (the constructor
// reads only the communicator's size and rank, so a stand-in of 2 or 3 ranks checks the splits).
import type { Communicator } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';

import { balancedBoundaries, cutPoints, modelGraph, type PipelineModel, PipelineParallel } from './pipeline-parallel.js';

tf.enableProdMode();

const ranks = (size: number, rank = 0) => ({ size, rank }) as unknown as Communicator;

// input -> d1 -> d2 -> add(d1, d2) -> d3 -> d4 -> add(d3, d4) -> d5: two residual blocks.
// model.layers: [input, d1, d2, add1, d3, d4, add2, d5].
function residual(units = [16, 16, 8, 8, 3]): tf.LayersModel {
  const input = tf.input({ shape: [12], name: 'x' });
  const dense = (n: number, name: string, activation: 'relu' | 'tanh' | 'softmax') => tf.layers.dense({ units: n, activation, name, kernelInitializer: tf.initializers.glorotUniform({ seed: n }) });
  const a = dense(units[0]!, 'd1', 'relu').apply(input) as tf.SymbolicTensor;
  const b = dense(units[1]!, 'd2', 'tanh').apply(a) as tf.SymbolicTensor;
  const c = tf.layers.add({ name: 'add1' }).apply([a, b]) as tf.SymbolicTensor;
  const d = dense(units[2]!, 'd3', 'relu').apply(c) as tf.SymbolicTensor;
  const e = dense(units[3]!, 'd4', 'tanh').apply(d) as tf.SymbolicTensor;
  const f = tf.layers.add({ name: 'add2' }).apply([d, e]) as tf.SymbolicTensor;
  const out = dense(units[4]!, 'd5', 'softmax').apply(f) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

const asPipelineModel = (m: tf.LayersModel) => m as unknown as PipelineModel;
const options = () => ({ optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy' as const });

describe('modelGraph and cutPoints', () => {
  it('a functional model with skip connections is cut only where one tensor made by a layer passes', () => {
    const m = residual();
    const graph = modelGraph(asPipelineModel(m));
    expect(graph.steps.map((s) => s.layer.name)).toEqual(['x', 'd1', 'd2', 'add1', 'd3', 'd4', 'add2', 'd5']);
    // Before d2 only d1's output passes; before add1 both d1's and d2's; before d3 add1's; before
    // d4 d3's; before add2 d3's and d4's; before d5 add2's.
    expect(cutPoints(graph)).toEqual([2, 4, 5, 7]);
    expect(graph.shapes.get(graph.outputId)).toEqual([3]);
  });

  it('a Sequential model is a chain: a stage may begin at any layer but the first', () => {
    const m = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3 }), tf.layers.dense({ units: 3 }), tf.layers.dense({ units: 2 })] });
    expect(cutPoints(modelGraph(asPipelineModel(m)))).toEqual([1, 2]);
  });

  it('balancedBoundaries makes the largest stage as small as the allowed cut points let it be', () => {
    expect(balancedBoundaries([10, 10, 10, 10], 2)).toEqual([2]);
    expect(balancedBoundaries([10, 10, 10, 10], 2, [1, 3])).toEqual([1]); // 10 + 30 or 30 + 10: the earlier
    expect(balancedBoundaries([10, 10, 10, 10], 3, [1, 3])).toEqual([1, 3]);
    expect(balancedBoundaries([1, 1, 1, 1, 100, 1], 3)).toEqual([4, 5]); // 4, 100, 1
    expect(balancedBoundaries([5, 5], 2)).toEqual([1]);
    // The residual model: 12*16+16, 16*16+16, 0, 16*8+8, 8*8+8, 0, 8*3+3 parameters.
    const m = residual();
    const counts = m.layers.map((l) => l.countParams());
    expect(balancedBoundaries(counts, 2, cutPoints(modelGraph(asPipelineModel(m))))).toEqual([4]);
    expect(balancedBoundaries(counts, 3, cutPoints(modelGraph(asPipelineModel(m))))).toEqual([2, 4]);
  });
});

describe('PipelineParallel on a functional model', () => {
  it('each stage holds its run of layers (the InputLayer stays out of them) and the tensors at its ends', () => {
    const first = new PipelineParallel(ranks(3, 0), asPipelineModel(residual()), { ...options(), boundaries: [4, 7] });
    expect(first.ranges).toEqual([[0, 4], [4, 7], [7, 8]]);
    expect(first.layers.map((l) => l.name)).toEqual(['d1', 'd2', 'add1']);
    const middle = new PipelineParallel(ranks(3, 1), asPipelineModel(residual()), { ...options(), boundaries: [4, 7] });
    expect(middle.layers.map((l) => l.name)).toEqual(['d3', 'd4', 'add2']);
  });

  it('a boundary inside a residual block names the tensors that pass it and the places that work', () => {
    expect(() => new PipelineParallel(ranks(2), asPipelineModel(residual()), { ...options(), boundaries: [3] })).toThrow(
      "PipelineParallel: a stage cannot begin at layer 3 ('add1'): the outputs of 'd1', 'd2' pass that point, and stages are cut where one tensor made by a layer does; cut at one of 2, 4, 5, 7",
    );
    expect(() => new PipelineParallel(ranks(2), asPipelineModel(residual()), { ...options(), boundaries: [1] })).toThrow(
      "PipelineParallel: a stage cannot begin at layer 1 ('d1'): the outputs of the model's input pass that point",
    );
  });

  it('more stages than cut points, several inputs, and shared layers are refused by name', () => {
    expect(() => new PipelineParallel(ranks(6), asPipelineModel(residual()), options())).toThrow(
      'PipelineParallel: 6 stages need 5 places to cut the model where one tensor passes from a stage to the next; it has 4 (before layers 2, 4, 5, 7)',
    );
    const a = tf.input({ shape: [3] });
    const b = tf.input({ shape: [3] });
    const two = tf.model({ inputs: [a, b], outputs: tf.layers.dense({ units: 1 }).apply(tf.layers.concatenate().apply([a, b]) as tf.SymbolicTensor) as tf.SymbolicTensor });
    expect(() => new PipelineParallel(ranks(2), asPipelineModel(two), options())).toThrow('PipelineParallel: the model has 2 inputs and 1 outputs; a pipeline takes models with one of each');
    const input = tf.input({ shape: [4] });
    const shared = tf.layers.dense({ units: 4, name: 'shared' });
    const twice = tf.model({ inputs: input, outputs: shared.apply(shared.apply(input)) as tf.SymbolicTensor });
    expect(() => new PipelineParallel(ranks(2), asPipelineModel(twice), options())).toThrow("PipelineParallel: layer 'shared' is applied 2 times (a shared layer); a pipeline stage owns each layer once");
  });

  it('in a world of one, the whole functional model is one stage and trains as the model does', async () => {
    const { init } = await import('@braid/collectives');
    const comm = await init();
    try {
      const reference = residual();
      const pipe = new PipelineParallel(comm, asPipelineModel(residual()), { ...options(), microBatches: 2 });
      const x = tf.randomNormal([8, 12], 0, 1, 'float32', 3);
      const y = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2, 0, 1], 'int32'), 3).toFloat();
      const loss = await pipe.trainStep(x, y);
      const plain = tf.train.sgd(0.1);
      const cost = plain.minimize(() => tf.mean(tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(reference.apply(x) as tf.Tensor, 1e-7, 1 - 1e-7))), -1))) as tf.Scalar, true)!;
      expect(Math.abs(loss - cost.dataSync()[0]!)).toBeLessThan(1e-6);
      const mine = pipe.layers.flatMap((l) => l.getWeights());
      const theirs = reference.layers.flatMap((l) => l.getWeights());
      expect(mine.length).toBe(theirs.length);
      mine.forEach((w, i) => expect(tf.max(tf.abs(tf.sub(w, theirs[i]!))).dataSync()[0]).toBeLessThan(1e-6));
    } finally {
      await comm.close();
    }
  });
});
