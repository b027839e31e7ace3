// A training job that fails on purpose, for the `braid run` failure tests:
//   node failing-job.mjs <kill|timeout> <out-dir>
// kill: rank 1 SIGKILLs itself in the middle of training (step 30). timeout: the last rank stops
// making collective calls at step 30 (alive, but silent); the others get TIMEOUT and exit 4.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { init } from '@braid/collectives';
import { DataParallel } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs';

tf.enableProdMode();
const [mode, outDir] = process.argv.slice(2);
const comm = await init({ timeoutMs: 3000 });
const dp = new DataParallel(comm);
const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [16], units: 32, activation: 'relu' }), tf.layers.dense({ units: 4 })] });
const optimizer = dp.wrapOptimizer(tf.train.sgd(0.01));
await dp.broadcastVariables(model);
const x = tf.randomNormal([8, 16]);
const y = tf.randomNormal([8, 4]);
writeFileSync(join(outDir, `pid-${comm.rank}`), String(process.pid));
for (let step = 0; step < 1_000_000; step++) {
  if (step === 30 && comm.rank === 1 && mode === 'kill') {
    writeFileSync(join(outDir, 'killed-at'), String(Date.now()));
    process.kill(process.pid, 'SIGKILL');
  }
  if (step === 30 && comm.rank === comm.size - 1 && mode === 'timeout') {
    writeFileSync(join(outDir, 'silent-at'), String(Date.now()));
    await new Promise((resolve) => setTimeout(resolve, 60_000));
  }
  try {
    optimizer.minimize(() => tf.losses.meanSquaredError(y, model.apply(x)));
  } catch (err) {
    writeFileSync(join(outDir, `error-${comm.rank}.json`), JSON.stringify({ code: err.code, message: err.message, at: Date.now() }));
    process.exit(4);
  }
}
