// One rank of the elastic tests: the MNIST MLP (the demo's model and optimizer) trained by fit
// under `braid run --elastic`, logging the rows each step trained so that the test can check
// that every row of every epoch was trained once across the runs.
//   braid run --elastic ... elastic-mnist.mjs <checkpointDir> <outDir>
// Environment: EPOCHS (default 3), COMMIT_EVERY (default 20), EVERY_HOST=1 (a copy of each
// commit on every host).
import { appendFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

import { init } from '@braid/collectives';
import { DataParallel, scaleLearningRate } from '@braid/strategies';
import { tf } from '@braid/test-support/tfjs';

import { loadMnist } from '../../../../examples/mnist/data.mjs';
import { fit } from '../../dist/index.js';

const [checkpointDir, outDir] = process.argv.slice(2);
const attempt = process.env.BRAID_ELASTIC ?? '0';
tf.enableProdMode();
const comm = await init();
const dp = new DataParallel(comm);
const { train, test } = loadMnist(tf);
const model = tf.sequential({
  layers: [
    tf.layers.dense({ inputShape: [784], units: 128, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
    tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
  ],
});
// The learning rate follows this run's world size (the linear scaling rule): a run restarted on
// fewer or more ranks gets its own, and the momentum carried over in the commit.
model.compile({ optimizer: dp.wrapOptimizer(tf.train.momentum(scaleLearningRate(0.02, comm.size), 0.9)), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
const rowsLog = join(outDir, `rows-a${attempt}-r${comm.rank}.log`);
const result = await fit(model, train, {
  epochs: Number(process.env.EPOCHS ?? 3),
  batchSize: 32,
  strategy: dp,
  seed: 1,
  validationData: test,
  checkpointDir,
  checkpointOnEveryHost: process.env.EVERY_HOST === '1',
  commitEvery: Number(process.env.COMMIT_EVERY ?? 20),
  progress: 'lines',
  callbacks: {
    onTrainBegin: (info) => {
      if (comm.rank === 0) writeFileSync(join(outDir, `begin-a${attempt}.json`), JSON.stringify({ ...info, host: hostname(), at: Date.now() }));
    },
    onBatchEnd: (s) => appendFileSync(rowsLog, `${s.epoch} ${s.globalStep} ${Array.from(s.rows).join(',')}\n`),
  },
});
if (comm.rank === 0) {
  writeFileSync(join(outDir, 'result.json'), JSON.stringify({ attempt: Number(attempt), size: comm.size, accuracy: result.history.val_acc.at(-1), globalStep: result.globalStep, history: result.history }));
}
await comm.close();
