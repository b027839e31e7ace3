// A world of one (no mpirun): pruning schedules and masks, pruning through fit with a checkpoint
// resumed, quantized models read back by tfjs, and the distillation loss.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { init } from '@braid/collectives';
import { DataParallel } from '@braid/strategies';
import { checkpointLoader, fit } from '@braid/trainer';
import { scratchDir } from '@braid/test-support/scratch';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { distillationLoss } from './distillation.js';
import { constantSparsity, MagnitudePruning, magnitudeMask, polynomialDecay } from './pruning.js';
import { quantizeModel, quantizeValues, writeModelFolder } from './quantization.js';

tf.enableProdMode();
let comm: Awaited<ReturnType<typeof init>>;
beforeAll(async () => {
  comm = await init();
});
afterAll(async () => {
  await comm.close();
});

// Three classes from 6 features: learnable, deterministic.
function data(rows: number, seed = 0) {
  const x = new Float32Array(rows * 6);
  const labels = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    labels[i] = (i * 7 + seed) % 3;
    for (let d = 0; d < 6; d++) x[i * 6 + d] = (d % 3 === labels[i] ? 1 : -0.5) + Math.sin(i * 12.9898 + d * 78.233 + seed) * 0.6;
  }
  return { x: tf.tensor2d(x, [rows, 6]), y: tf.oneHot(tf.tensor1d(labels, 'int32'), 3).toFloat() };
}

function mlp(units = 16, seed = 1) {
  const m = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [6], units, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
  m.compile({ optimizer: tf.train.sgd(0.2), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  return m;
}

const zerosOf = (t: tf.Tensor) => Array.from(t.dataSync()).filter((v) => v === 0).length;

describe('pruning schedules', () => {
  it('constant sparsity: updates at beginStep and every frequency steps after, until endStep', () => {
    const s = constantSparsity(0.5, { beginStep: 10, endStep: 30, frequency: 10 });
    expect([9, 10, 11, 20, 30, 40].map((t) => s.sparsityAt(t))).toEqual([undefined, 0.5, undefined, 0.5, 0.5, undefined]);
    expect([0, 9, 10, 55].map((t) => s.lastSparsityBefore(t))).toEqual([0, 0, 0.5, 0.5]);
  });

  it('polynomial decay follows s_f + (s_i - s_f)(1 - p)^3 and always updates at endStep', () => {
    const s = polynomialDecay({ initialSparsity: 0.1, finalSparsity: 0.9, beginStep: 0, endStep: 100, frequency: 30 });
    const at = (t: number) => 0.9 + (0.1 - 0.9) * (1 - t / 100) ** 3;
    expect(s.sparsityAt(0)).toBeCloseTo(0.1, 12);
    expect(s.sparsityAt(30)).toBeCloseTo(at(30), 12);
    expect(s.sparsityAt(31)).toBeUndefined();
    expect(s.sparsityAt(100)).toBeCloseTo(0.9, 12); // not a multiple of 30, still an update
    expect(s.sparsityAt(120)).toBeUndefined();
    expect(s.lastSparsityBefore(45)).toBeCloseTo(at(30), 12);
    expect(s.lastSparsityBefore(500)).toBe(0.9);
  });

  it('refuses bad settings, naming them', () => {
    expect(() => constantSparsity(1)).toThrow('pruning: targetSparsity must be in [0, 1); got 1');
    expect(() => polynomialDecay({ finalSparsity: 0.9 } as never)).toThrow('polynomialDecay needs endStep');
    expect(() => polynomialDecay({ finalSparsity: 0.9, endStep: 5, beginStep: 10 })).toThrow('pruning: endStep (5) must be >= beginStep (10)');
    expect(() => constantSparsity(0.5, { frequncy: 3 } as never)).toThrow(/did you mean 'frequency'/);
    expect(() => new MagnitudePruning(mlp(), constantSparsity(0.5), { prune: () => false })).toThrow(/MagnitudePruning: no weight to prune \(the model's are dense_Dense\d+\/kernel/);
  });
});

describe('magnitude masks', () => {
  it('zero exactly round(sparsity x size) entries, the smallest |w|, ties by position', () => {
    const w = tf.tensor1d([0.5, -0.1, 0.1, 2, -3, 0.1, 0]);
    const { mask } = magnitudeMask(w, 0.5); // round(3.5) = 4: 0, then the three 0.1s
    expect(Array.from(mask.dataSync())).toEqual([1, 0, 0, 1, 1, 0, 0]);
    const { mask: fewer } = magnitudeMask(w, 0.3); // round(2.1) = 2: 0, then -0.1 (first of the ties)
    expect(Array.from(fewer.dataSync())).toEqual([1, 0, 1, 1, 1, 1, 0]);
  });
});

describe('pruning through fit', () => {
  it('reaches the schedule\'s sparsity in every kernel, leaves biases, keeps pruned weights at zero while the rest train; a resumed run ends bitwise where an uninterrupted one does', async () => {
    const train = data(96);
    // 96 rows, batch 8: 12 steps an epoch; 0 -> 0.75 over steps 0-24, masks every 4 steps.
    const schedule = () => polynomialDecay({ finalSparsity: 0.75, beginStep: 0, endStep: 24, frequency: 4 });
    const whole = mlp();
    const pruning = new MagnitudePruning(whole, schedule());
    const history: number[] = [];
    const result = await fit(whole, train, {
      epochs: 4,
      batchSize: 8,
      strategy: new DataParallel(comm),
      progress: 'none',
      callbacks: [pruning.callbacks(), { onBatchEnd: () => void history.push(zerosOf(whole.weights[0]!.read())) }],
    });
    expect(result.history.loss!.at(-1)).toBeLessThan(result.history.loss![0]!);
    const summary = pruning.summary();
    expect(summary.map((s) => s.name)).toEqual([whole.weights[0]!.name, whole.weights[2]!.name]);
    expect(summary.map((s) => s.zeros)).toEqual([Math.round(0.75 * 96), Math.round(0.75 * 48)]);
    expect(zerosOf(whole.weights[1]!.read())).toBeLessThan(4); // a bias: not pruned
    // Zeros never go down once pruned (steps after 24 keep exactly 72).
    history.forEach((z, i) => i > 0 && expect(z).toBeGreaterThanOrEqual(history[i - 1]!));
    expect(history.slice(24)).toEqual(Array(24).fill(72));

    // The same run in two parts, through a checkpoint after epoch 1 (mid-schedule).
    const dir = scratchDir('braid-prune-');
    const first = mlp();
    await fit(first, train, { epochs: 1, batchSize: 8, strategy: new DataParallel(comm), progress: 'none', checkpointDir: dir, callbacks: new MagnitudePruning(first, schedule()).callbacks() });
    const second = mlp();
    const resumed = new MagnitudePruning(second, schedule());
    const again = await fit(second, train, { epochs: 4, batchSize: 8, strategy: new DataParallel(comm), progress: 'none', checkpointDir: dir, callbacks: resumed.callbacks() });
    expect(again.resumedFrom).toBeDefined();
    second.getWeights().forEach((w, i) => expect(Array.from(w.dataSync())).toEqual(Array.from(whole.getWeights()[i]!.dataSync())));

    // strip: the zeros stay, masks stop (training on makes pruned weights move again).
    const stripped = resumed.strip();
    expect(stripped.map((s) => s.zeros)).toEqual([72, 36]);
    resumed.step(100);
    expect(zerosOf(second.weights[0]!.read())).toBe(72);
  });
});

describe('quantization', () => {
  it('codes every value within half a step, 0 exactly, over the range widened to hold 0', () => {
    const values = Float32Array.from([0.3, 1.2, 0, 0.7, 0.25]);
    for (const dtype of ['uint8', 'uint16'] as const) {
      const { codes, scale, min } = quantizeValues(values, dtype);
      expect(min).toBeLessThanOrEqual(0);
      values.forEach((v, i) => expect(Math.abs(codes[i]! * scale + min - v)).toBeLessThanOrEqual(scale / 2 + 1e-12));
      expect(codes[2]! * scale + min).toBe(0);
      expect(Math.max(...codes)).toBe(dtype === 'uint8' ? 255 : 65535);
    }
  });

  it('writes uint8 and uint16 weights in tfjs\'s model.json format; tf.loadLayersModel reads them back to the dequantized values', async () => {
    const model = mlp();
    await fit(model, data(96), { epochs: 2, batchSize: 8, strategy: new DataParallel(comm), progress: 'none' });
    // Some pruned zeros too: they must stay zeros.
    new MagnitudePruning(model, constantSparsity(0.5)).step(0);
    const original = model.getWeights().map((w) => Float32Array.from(w.dataSync()));
    const x = data(30, 5).x;
    const expected = (model.predict(x) as tf.Tensor).dataSync();
    for (const dtype of ['uint8', 'uint16'] as const) {
      const q = await quantizeModel(model, { dtype });
      const floats = original.reduce((n, w) => n + w.length, 0);
      expect(q.originalBytes).toBe(floats * 4);
      expect(q.bytes).toBe(floats * (dtype === 'uint8' ? 1 : 2));
      expect(q.ratio).toBe(dtype === 'uint8' ? 4 : 2);
      const folder = scratchDir(`braid-quantized-${dtype}-`);
      writeModelFolder(q.artifacts, folder);
      const manifest = JSON.parse(readFileSync(join(folder, 'model.json'), 'utf8')).weightsManifest[0].weights;
      expect(manifest.every((w: { quantization?: { dtype: string } }) => w.quantization?.dtype === dtype)).toBe(true);
      const loaded = await tf.loadLayersModel(checkpointLoader(folder));
      loaded.getWeights().forEach((w, i) => {
        const spec = manifest[i];
        const values = w.dataSync();
        values.forEach((v, k) => {
          const o = original[i]![k]!;
          expect(Math.abs(v - o)).toBeLessThanOrEqual(spec.quantization.scale / 2 + 1e-7);
          if (o === 0) expect(v).toBe(0);
        });
      });
      const got = (loaded.predict(x) as tf.Tensor).dataSync();
      const worst = Math.max(...Array.from(got, (v, i) => Math.abs(v - expected[i]!)));
      expect(worst).toBeLessThan(dtype === 'uint8' ? 0.05 : 1e-3);
    }
    await expect(quantizeModel(model, { dtype: 'int8' } as never)).rejects.toThrow("quantizeModel: dtype must be 'uint8' or 'uint16'; got \"int8\"");
  });
});

describe('distillation', () => {
  it('is alpha x cross-entropy + (1 - alpha) T^2 KL(teacher_T || student_T), per example; labels only without a prepared batch', () => {
    const teacher = { predict: () => tf.tensor2d([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]) };
    const loss = distillationLoss({ teacher, temperature: 2, alpha: 0.25 });
    const yTrue = tf.tensor2d([[1, 0, 0], [0, 1, 0]]);
    const yPred = tf.tensor2d([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]]);
    const soften = (p: number[], t: number) => {
      const z = p.map((v) => Math.exp(Math.log(v) / t));
      const s = z.reduce((a, b) => a + b, 0);
      return z.map((v) => v / s);
    };
    const expected = [0, 1].map((row) => {
      const p = yPred.arraySync() as number[][];
      const q = (teacher.predict() as tf.Tensor).arraySync() as number[][];
      const label = row === 0 ? 0 : 1;
      const hard = -Math.log(p[row]![label]!);
      const pt = soften(q[row]!, 2);
      const ps = soften(p[row]!, 2);
      const kl = pt.reduce((s, v, k) => s + v * Math.log(v / ps[k]!), 0);
      return { hard, total: 0.25 * hard + 0.75 * 4 * kl };
    });
    const labelsOnly = loss(yTrue, yPred).dataSync();
    expected.forEach((e, i) => expect(labelsOnly[i]).toBeCloseTo(e.hard, 5));
    loss.prepareBatch(tf.zeros([2, 6]));
    const distilled = loss(yTrue, yPred).dataSync();
    expected.forEach((e, i) => expect(distilled[i]).toBeCloseTo(e.total, 5));
    expect(() => loss(tf.zeros([3, 3]), tf.ones([3, 3]).div(3))).toThrow('distillationLoss: the prepared batch has 2 rows but the loss got 3');
    loss.releaseBatch();
    expect(loss.stats).toEqual({ distilled: 1, labelsOnly: 1 });
    expect(() => distillationLoss({} as never)).toThrow('distillationLoss: teacher must be a trained model');
    expect(() => distillationLoss({ teacher, temperature: 0 })).toThrow('temperature must be a positive number; got 0');
    expect(() => distillationLoss({ teacher, alpha: 2 })).toThrow('alpha must be in [0, 1]; got 2');
  });

  it('trains through fit: the teacher runs on every training batch, validation takes the labels alone, and the student learns', async () => {
    const train = data(96);
    const teacher = mlp(32, 7);
    await fit(teacher, train, { epochs: 6, batchSize: 8, strategy: new DataParallel(comm), progress: 'none' });
    const student = tf.sequential({ layers: [tf.layers.dense({ inputShape: [6], units: 4, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }), tf.layers.dense({ units: 3, activation: 'softmax' })] });
    const loss = distillationLoss({ teacher, temperature: 3, alpha: 0.2 });
    student.compile({ optimizer: tf.train.sgd(0.2), loss, metrics: ['accuracy'] });
    const result = await fit(student, train, { epochs: 6, batchSize: 8, strategy: new DataParallel(comm), progress: 'none', validationData: data(30, 9), validationBatchSize: 30 });
    expect(loss.stats.distilled).toBe(6 * 12);
    expect(loss.stats.labelsOnly).toBe(6); // one validation batch per epoch
    expect(result.history.loss!.at(-1)).toBeLessThan(result.history.loss![0]!);
    expect(result.history.val_acc!.at(-1)).toBeGreaterThan(0.6);
  });
});
