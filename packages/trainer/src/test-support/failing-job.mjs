// A training job that fails on purpose, for the `braid run` failure tests:
//   node failing-job.mjs <kill|timeout> <out-dir>
// kill: rank 1 SIGKILLs itself in the middle of training (step 30). timeout: the last rank stops
// making collective calls at step 30 (alive, but silent); the others get TIMEOUT and exit 4.
// ps-kill / ps-silent: the same for the server (rank 0) of a ParameterServer, at step 10.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { init } from '@braid/collectives';
import { DataParallel, ParameterServer } from '@braid/strategies';
import { tf } from '@braid/test-support/tfjs';

tf.enableProdMode();
const [mode, outDir] = process.argv.slice(2);
const comm = await init({ timeoutMs: 3000 });
writeFileSync(join(outDir, `pid-${comm.rank}`), String(process.pid));
if (mode.startsWith('ps-')) {
  const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [16], units: 4 })] });
  const variables = model.trainableWeights.map((w) => w.read());
  const ps = new ParameterServer(comm, variables, { servers: 1, optimizer: tf.train.sgd(0.01) });
  await ps.init();
  const [x, y] = [tf.randomNormal([8, 16]), tf.randomNormal([8, 4])];
  if (ps.isServer) {
    // The server stops once it has applied step 10 (sync: one apply a step): killed, or alive but silent.
    const serving = ps.serve();
    while (ps.stats.pushes < 10) await new Promise((resolve) => setTimeout(resolve, 1));
    writeFileSync(join(outDir, 'server-stopped-at'), String(Date.now()));
    if (mode === 'ps-kill') process.kill(process.pid, 'SIGKILL');
    // Silent: this thread blocks, so serve() answers no one (the process is alive).
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
    await serving;
  }
  for (let step = 0; step < 1_000; step++) {
    try {
      const { grads, value } = tf.variableGrads(() => tf.losses.meanSquaredError(y, model.apply(x)), variables);
      await ps.push(grads);
      tf.dispose([value, ...Object.values(grads)]);
    } catch (err) {
      writeFileSync(join(outDir, `error-${comm.rank}.json`), JSON.stringify({ code: err.code, message: err.message, at: Date.now() }));
      process.exit(4);
    }
  }
  process.exit(0);
}
const dp = new DataParallel(comm);
const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [16], units: 32, activation: 'relu' }), tf.layers.dense({ units: 4 })] });
const optimizer = dp.wrapOptimizer(tf.train.sgd(0.01));
await dp.broadcastVariables(model);
const x = tf.randomNormal([8, 16]);
const y = tf.randomNormal([8, 4]);
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
