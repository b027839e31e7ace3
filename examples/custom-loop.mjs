// A custom training loop (no model.fit): each rank draws its own shard of every epoch, computes
// gradients, and `minimizeAsync` averages them across ranks without blocking the event loop
// (bucket i is on the wire while bucket i+1 is read out of its tensors) before Adam applies them.
//
//   braid run -np 2 examples/custom-loop.mjs [--epochs 3] [--batch 64]
import { parseArgs } from 'node:util';

import { init } from '@braid/collectives';
import { DataParallel } from '@braid/strategies';
import { epochBatches } from '@braid/trainer';
import * as tf from '@tensorflow/tfjs';

import { loadMnist } from './mnist/data.mjs';

const { values: args } = parseArgs({ options: { epochs: { type: 'string', default: '3' }, batch: { type: 'string', default: '64' } } });
tf.enableProdMode();
const comm = await init();
const dp = new DataParallel(comm, { bucketBytes: 64 << 10 }); // small buckets: several in flight per step
const { train, test } = loadMnist(tf);

// A model as plain variables: y = softmax(relu(x W1 + b1) W2 + b2).
const w1 = tf.variable(tf.randomNormal([784, 64], 0, 0.05));
const b1 = tf.variable(tf.zeros([64]));
const w2 = tf.variable(tf.randomNormal([64, 10], 0, 0.05));
const b2 = tf.variable(tf.zeros([10]));
const variables = [w1, b1, w2, b2];
const predict = (x) => tf.tidy(() => x.matMul(w1).add(b1).relu().matMul(w2).add(b2));

await dp.broadcastVariables(variables); // every rank starts from rank 0's weights
const optimizer = dp.wrapOptimizer(tf.train.adam(1e-3 * comm.size));
const batchSize = Number(args.batch);

for (let epoch = 0; epoch < Number(args.epochs); epoch++) {
  const batches = epochBatches({ rows: train.x.shape[0], rank: comm.rank, size: comm.size, batchSize, seed: 7, epoch, shuffle: true });
  let lossSum = 0;
  for (const rows of batches) {
    const idx = tf.tensor1d(rows, 'int32');
    const x = tf.gather(train.x, idx);
    const y = tf.gather(train.y, idx);
    const loss = await optimizer.minimizeAsync(() => tf.losses.softmaxCrossEntropy(y, predict(x)), true, variables);
    lossSum += (await loss.data())[0];
    tf.dispose([idx, x, y, loss]);
  }
  const { loss } = await dp.averageMetrics({ loss: lossSum / batches.length });
  const accuracy = tf.tidy(() => predict(test.x).argMax(1).equal(test.y.argMax(1)).mean().dataSync()[0]);
  if (comm.rank === 0) console.log(`epoch ${epoch + 1}: loss ${loss.toFixed(4)}, test accuracy ${accuracy.toFixed(4)}, ${dp.stats.allReduceCalls} all-reduce calls so far`);
}
await comm.close();
