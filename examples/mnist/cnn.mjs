// The classic Horovod / tf.distribute example network on MNIST: conv32-pool-conv64-pool-dense64-
// dense10, trained data-parallel. Slow on the pure-JS backend (@tensorflow/tfjs): its convolution
// gradients are plain loops, about 3 samples/s over 2 ranks on our 2-vCPU CI machine, so an epoch
// of 8,500 digits takes the better part of an hour. With @tensorflow/tfjs-node installed, import
// it instead of @tensorflow/tfjs and it runs many times faster.
//
//   braid run -np 2 examples/mnist/cnn.mjs [--epochs 2] [--batch 32] [--train-rows 8500] [--test-rows 1500]
import { parseArgs } from 'node:util';

import { init } from '@braid/collectives';
import { DataParallel, scaleLearningRate } from '@braid/strategies';
import { fit } from '@braid/trainer';
import * as tf from '@tensorflow/tfjs';

import { loadMnist, subset } from './data.mjs';

const { values: args } = parseArgs({
  options: {
    epochs: { type: 'string', default: '2' },
    batch: { type: 'string', default: '32' },
    'train-rows': { type: 'string' },
    'test-rows': { type: 'string' },
  },
});

tf.enableProdMode();
const comm = await init();
const dp = new DataParallel(comm);
const { train, test } = loadMnist(tf, { images: true });
const trainSet = subset(tf, train, Number(args['train-rows'] ?? 0));
const testSet = subset(tf, test, Number(args['test-rows'] ?? 0));
const rows = trainSet.x.shape[0];

const model = tf.sequential({
  layers: [
    tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 32, kernelSize: 3, activation: 'relu' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.conv2d({ filters: 64, kernelSize: 3, activation: 'relu' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 64, activation: 'relu' }),
    tf.layers.dense({ units: 10, activation: 'softmax' }),
  ],
});
model.compile({ optimizer: dp.wrapOptimizer(tf.train.adam(scaleLearningRate(1e-3, comm.size))), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
if (comm.rank === 0) console.log(`MNIST CNN: ${comm.size} rank(s), ${rows} training digits, ${model.countParams()} parameters`);
const result = await fit(model, trainSet, { epochs: Number(args.epochs), batchSize: Number(args.batch), strategy: dp, validationData: testSet });
if (comm.rank === 0) console.log(`test accuracy: ${result.history.val_acc.at(-1).toFixed(4)}`);
await comm.close();
