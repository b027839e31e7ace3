// The classic Horovod / tf.distribute example network on MNIST: conv32-pool-conv64-pool-dense64-
// dense10, trained data-parallel. On native TensorFlow (tfjs-node, built by `braid setup
// tfjs-node`; the default when it loads) an epoch of the 8,500 digits takes seconds. On the
// pure-JS backend (--backend cpu) its convolution gradients are plain loops, about 3 samples/s
// over 2 ranks on our 2-vCPU CI machine: an epoch takes the better part of an hour.
//
//   braid run -np 2 examples/mnist/cnn.mjs [--epochs 8] [--batch 32] [--train-rows 8500] [--test-rows 1500] [--backend auto|node|cpu] [--json out.json]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { init } from '@braid/collectives';
import { DataParallel, scaleLearningRate } from '@braid/strategies';
import { fit, selectBackend } from '@braid/trainer';
import * as tf from '@tensorflow/tfjs';

import { loadMnist, subset } from './data.mjs';

const { values: args } = parseArgs({
  options: {
    epochs: { type: 'string', default: '8' },
    batch: { type: 'string', default: '32' },
    'train-rows': { type: 'string' },
    'test-rows': { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    lr: { type: 'string', default: '0.001' },
    json: { type: 'string' },
  },
});

const backend = await selectBackend({ backend: args.backend });

tf.enableProdMode();
const comm = await init();
const dp = new DataParallel(comm);
const { train, test } = loadMnist(tf, { images: true });
const trainSet = subset(tf, train, Number(args['train-rows'] ?? 0));
const testSet = subset(tf, test, Number(args['test-rows'] ?? 0));
const rows = trainSet.x.shape[0];

const model = tf.sequential({
  layers: [
    // Seeded initial weights (rank 0's are broadcast anyway). The dropout layers (as in Keras's
    // MNIST CNN) draw unseeded masks: a seeded tfjs dropout repeats one mask every step.
    tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 32, kernelSize: 3, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.conv2d({ filters: 64, kernelSize: 3, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.flatten(),
    tf.layers.dropout({ rate: 0.25 }),
    tf.layers.dense({ units: 64, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }),
    tf.layers.dropout({ rate: 0.5 }),
    tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }),
  ],
});
model.compile({ optimizer: dp.wrapOptimizer(tf.train.adam(scaleLearningRate(Number(args.lr), comm.size))), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
if (comm.rank === 0) console.log(`MNIST CNN: ${comm.size} rank(s), ${rows} training digits, ${model.countParams()} parameters, backend ${backend.backend}${backend.fallback ? ` (${backend.fallback})` : ''}`);
const result = await fit(model, trainSet, { epochs: Number(args.epochs), batchSize: Number(args.batch), strategy: dp, validationData: testSet });
const accuracy = result.history.val_acc.at(-1);
if (comm.rank === 0) {
  console.log(`${result.samplesPerSecond.toFixed(0)} samples/s over ${comm.size} rank(s); ${(100 * result.communicationShare).toFixed(1)}% of the time in all-reduce`);
  console.log(`test accuracy: ${accuracy.toFixed(4)}`);
  if (args.json) writeFileSync(args.json, JSON.stringify({ size: comm.size, backend: backend.backend, accuracy, ...result }, null, 1));
}
await comm.close();
