// Model compression on the demo (issue 16's targets), every model trained data-parallel on the
// ranks `braid run` starts and scored on the MNIST test digits:
//   - pruning: the trained demo MLP fine-tuned while pruned to 90% sparsity (polynomial decay):
//     accuracy against the dense model's (target: within 1 point), weights' gzip size;
//   - quantization: the dense model's weights as uint8 and uint16 in tfjs's model.json format,
//     read back by tf.loadLayersModel (target, uint8: 4x smaller, within 0.5 point);
//   - distillation: a half-width student (64 hidden units) distilled from the demo MLP (trained
//     --teacher-epochs, default 20: a teacher that knows more than the student can learn alone in
//     --epochs) against the same student (same initial weights, same batches) trained alone,
//     several seeds (target: the distilled student beats the lone one).
//   node benchmarks/model-compression.mjs [--np 2] [--epochs 5] [--prune-epochs 3] [--seeds 1,2,3]
//        [--teacher-epochs 20] [--temperature 4] [--alpha 0.1] [--json out.json]
import { writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

import { commandLine, runUnderBraid } from './common.mjs';

const { opt } = commandLine();
runUnderBraid(import.meta.url, opt);

const { init } = await import('@braid/collectives');
const { DataParallel, scaleLearningRate } = await import('@braid/strategies');
const { fit } = await import('@braid/trainer');
const { distillationLoss, MagnitudePruning, polynomialDecay, quantizeModel } = await import('@braid/model-compression');
const tf = await import('@tensorflow/tfjs');
const { loadMnist } = await import('../examples/mnist/data.mjs');

tf.enableProdMode();
const comm = await init();
const epochs = Number(opt('--epochs', '5'));
const pruneEpochs = Number(opt('--prune-epochs', '3'));
const seeds = opt('--seeds', '1,2,3').split(',').map(Number);
const temperature = Number(opt('--temperature', '4'));
const alpha = Number(opt('--alpha', '0.1'));
const teacherEpochs = Number(opt('--teacher-epochs', '20'));
const batchSize = 32;
const { train, test } = loadMnist(tf);
const log = (text) => comm.rank === 0 && console.log(text);

function mlp(units, seed, strategy, loss = 'categoricalCrossentropy') {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [784], units, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
  // The demo's optimizer: momentum 0.9, the linear scaling rule.
  model.compile({ optimizer: strategy.wrapOptimizer(tf.train.momentum(scaleLearningRate(0.02, comm.size), 0.9)), loss, metrics: ['accuracy'] });
  return model;
}

const accuracy = (model) => tf.tidy(() => tf.metrics.categoricalAccuracy(test.y, model.predict(test.x)).mean().dataSync()[0]);
const train_ = (model, strategy, more = {}) => fit(model, train, { epochs, batchSize, strategy, seed: 1, progress: 'none', ...more });
const stepsPerEpoch = Math.ceil(Math.ceil(train.x.shape[0] / comm.size) / batchSize);
const weightBytes = async (model) => {
  let bytes;
  await model.save(tf.io.withSaveHandler(async (a) => ((bytes = new Uint8Array(a.weightData)), { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } })));
  return bytes;
};

// The demo MLP, dense.
const started = performance.now();
const denseStrategy = new DataParallel(comm);
const dense = mlp(128, 1, denseStrategy);
await train_(dense, denseStrategy);
const denseAccuracy = accuracy(dense);
const denseWeights = await weightBytes(dense);
log(`dense demo MLP (${epochs} epochs, ${comm.size} ranks): test accuracy ${denseAccuracy.toFixed(4)}`);

// Pruning: from the dense weights, fine-tuned while pruned to 90% (reached at 70% of the fine-tuning).
const pruneStrategy = new DataParallel(comm);
const pruned = mlp(128, 1, pruneStrategy);
pruned.setWeights(dense.getWeights());
const pruneSteps = pruneEpochs * stepsPerEpoch;
const pruning = new MagnitudePruning(pruned, polynomialDecay({ finalSparsity: 0.9, beginStep: 0, endStep: Math.round(0.7 * pruneSteps), frequency: 10 }), { comm });
await fit(pruned, train, { epochs: pruneEpochs, batchSize, strategy: pruneStrategy, seed: 2, progress: 'none', callbacks: pruning.callbacks() });
const summary = pruning.strip();
const prunedAccuracy = accuracy(pruned);
const prunedWeights = await weightBytes(pruned);
const kernelSparsity = summary.reduce((z, s) => z + s.zeros, 0) / summary.reduce((n, s) => n + s.size, 0);
const gzipDense = gzipSync(denseWeights).length;
const gzipPruned = gzipSync(prunedWeights).length;
log(`pruned to ${(100 * kernelSparsity).toFixed(1)}% of kernel weights (${pruneEpochs} epochs of fine-tuning): test accuracy ${prunedAccuracy.toFixed(4)} (${(100 * (prunedAccuracy - denseAccuracy)).toFixed(2)} points); weights gzipped ${gzipDense} -> ${gzipPruned} bytes (${(gzipDense / gzipPruned).toFixed(2)}x)`);

// Quantization of the dense model.
const quantized = {};
for (const dtype of ['uint8', 'uint16']) {
  const q = await quantizeModel(dense, { dtype });
  const loaded = await tf.loadLayersModel(tf.io.fromMemory(q.artifacts));
  const acc = accuracy(loaded);
  quantized[dtype] = { bytes: q.bytes, originalBytes: q.originalBytes, ratio: q.ratio, accuracy: acc, drop: denseAccuracy - acc, maxError: q.maxError };
  log(`${dtype} weights: ${q.originalBytes} -> ${q.bytes} bytes (${q.ratio.toFixed(2)}x), test accuracy ${acc.toFixed(4)} (${(100 * (acc - denseAccuracy)).toFixed(2)} points), max weight error ${q.maxError.toExponential(2)}`);
}

// Distillation: the half-width student alone and distilled from the demo MLP trained longer, seed by seed.
let teacher = dense;
if (teacherEpochs !== epochs) {
  const teacherStrategy = new DataParallel(comm);
  teacher = mlp(128, 1, teacherStrategy);
  await train_(teacher, teacherStrategy, { epochs: teacherEpochs });
}
const teacherAccuracy = accuracy(teacher);
log(`teacher: the demo MLP after ${teacherEpochs} epochs, test accuracy ${teacherAccuracy.toFixed(4)}`);
const students = [];
for (const seed of seeds) {
  const aloneStrategy = new DataParallel(comm);
  const alone = mlp(64, 100 + seed, aloneStrategy);
  await train_(alone, aloneStrategy);
  const distilledStrategy = new DataParallel(comm);
  const loss = distillationLoss({ teacher, temperature, alpha });
  const distilled = mlp(64, 100 + seed, distilledStrategy, loss);
  await train_(distilled, distilledStrategy);
  students.push({ seed, alone: accuracy(alone), distilled: accuracy(distilled), distilledBatches: loss.stats.distilled });
  log(`student (64 units) seed ${seed}: alone ${students.at(-1).alone.toFixed(4)}, distilled ${students.at(-1).distilled.toFixed(4)}`);
}
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const aloneMean = mean(students.map((s) => s.alone));
const distilledMean = mean(students.map((s) => s.distilled));
log(`students over ${seeds.length} seeds: alone ${aloneMean.toFixed(4)}, distilled ${distilledMean.toFixed(4)} (T ${temperature}, alpha ${alpha}); distilled ahead in ${students.filter((s) => s.distilled > s.alone).length} of ${seeds.length}`);
log(`(${((performance.now() - started) / 1000).toFixed(0)} s)`);

const jsonPath = opt('--json', undefined);
if (comm.rank === 0 && jsonPath) {
  writeFileSync(jsonPath, JSON.stringify({ ranks: comm.size, epochs, denseAccuracy, pruning: { kernelSparsity, accuracy: prunedAccuracy, gzipDense, gzipPruned }, quantized, distillation: { teacherEpochs, teacherAccuracy, temperature, alpha, students, aloneMean, distilledMean } }, null, 1));
}
await comm.close();
