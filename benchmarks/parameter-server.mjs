// The parameter server (issue 15) against DataParallel when one worker is 2x slower: the demo MLP
// on MNIST, 2 workers each training on its half of the rows (worker 1 sleeps as long as its step
// took, every step), in one job of 3 ranks: DataParallel over the 2 workers (rank 0 idle), then a
// sync parameter server (rank 0 serving), then an async one. Samples/s over both workers, and the
// test accuracy of the weights at the end. Also push+pull of the whole model against an
// all-reduce of the same size among the workers.
//   node benchmarks/parameter-server.mjs [--epochs 3] [--staleness 4] [--json out.json]
import { writeFileSync } from 'node:fs';

import { commandLine, median, runUnderBraid } from './common.mjs';

const { opt } = commandLine();
runUnderBraid(import.meta.url, (name, fallback) => (name === '--np' ? '3' : opt(name, fallback)));

const { init } = await import('@braid/collectives');
const { DataParallel, ParameterServer } = await import('@braid/strategies');
const tf = await import('@tensorflow/tfjs');
const { permutation } = await import('@braid/trainer');
const { loadMnist } = await import('../examples/mnist/data.mjs');

tf.enableProdMode();
const comm = await init();
if (comm.size !== 3) throw new Error('run with 3 ranks: 1 server, 2 workers');
const epochs = Number(opt('--epochs', '3'));
const staleness = Number(opt('--staleness', '4'));
const batch = 32;
const { train, test } = loadMnist(tf);
const isWorker = comm.rank > 0;
const worker = comm.rank - 1;
const workers = await comm.split(isWorker ? 0 : -1);

const build = () => {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [784], units: 128, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
      tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    ],
  });
  return { model, variables: model.trainableWeights.map((w) => w.read()) };
};
const accuracy = (model) => tf.tidy(() => tf.metrics.categoricalAccuracy(test.y, model.predict(test.x)).mean().dataSync()[0]);
const loss = (model, x, y) => () => tf.mean(tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(model.apply(x), 1e-7, 1))), -1)));
// This worker's rows: every other one of a seeded shuffle (the digits come sorted by class).
const rows = train.x.shape[0];
const mine = Array.from(permutation(rows, 7)).filter((_, i) => i % 2 === worker);
const stepsPerEpoch = Math.floor(Math.floor(rows / 2) / batch); // the same on every rank (rank 0 has no rows)

// One training step's gradients on this worker's batch b; worker 1 then sleeps as long as it took.
async function gradients(model, variables, b) {
  const t0 = performance.now();
  const indices = tf.tensor1d(mine.slice((b % stepsPerEpoch) * batch, (b % stepsPerEpoch + 1) * batch), 'int32');
  const [x, y] = [tf.gather(train.x, indices), tf.gather(train.y, indices)];
  const { value, grads } = tf.variableGrads(loss(model, x, y), variables);
  tf.dispose([indices, x, y, value]);
  if (worker === 1) await new Promise((resolve) => setTimeout(resolve, performance.now() - t0));
  return grads;
}

const results = {};
const steps = epochs * stepsPerEpoch;

// DataParallel over the two workers: each step waits for the slow one.
{
  const { model, variables } = build();
  const optimizer = tf.train.momentum(0.04, 0.9);
  let seconds = 0;
  if (isWorker) {
    const dp = new DataParallel(workers);
    await dp.broadcastVariables(variables);
    const t0 = performance.now();
    for (let b = 0; b < steps; b++) {
      const grads = await gradients(model, variables, b);
      const averaged = await dp.averageGradients(grads);
      optimizer.applyGradients(averaged);
      tf.dispose([...Object.values(grads), ...Object.values(averaged)]);
    }
    seconds = (performance.now() - t0) / 1000;
  }
  const times = await comm.allGather(Float64Array.of(seconds, comm.rank === 1 ? accuracy(model) : 0));
  results.dataParallel = { samplesPerSecond: (2 * steps * batch) / Math.max(times[2], times[4]), accuracy: times[3] };
}

// Parameter servers: rank 0 serves.
for (const [mode, bound] of [['sync'], ['async', staleness], ['async', Infinity]]) {
  const { model, variables } = build();
  const ps = new ParameterServer(comm, variables, { servers: 1, optimizer: tf.train.momentum(0.04, 0.9), mode, staleness: bound });
  await ps.init();
  let seconds = 0;
  let samples = 0;
  if (ps.isServer) {
    await ps.serve();
  } else {
    const t0 = performance.now();
    for (let b = 0; b < steps; b++) {
      const grads = await gradients(model, variables, b);
      await ps.push(grads);
      tf.dispose(Object.values(grads));
      samples += batch;
    }
    seconds = (performance.now() - t0) / 1000;
    await ps.finish();
  }
  await ps.pullAll();
  const times = await comm.allGather(Float64Array.of(seconds, samples));
  // Both workers' samples over the time until the last one finished.
  results[bound === undefined ? mode : `${mode}-${bound}`] = { samplesPerSecond: (times[3] + times[5]) / Math.max(times[2], times[4]), fastWorkerSamplesPerSecond: times[3] / times[2], accuracy: accuracy(model), maxLead: ps.stats.maxLead };
}

// Moving the model: one sync push + pull (no compute) against an all-reduce among the workers.
{
  const { variables } = build();
  const ps = new ParameterServer(comm, variables, { servers: 1, optimizer: tf.train.sgd(0) });
  await ps.init();
  const zeros = variables.map((v) => tf.zerosLike(v));
  const pushTimes = [];
  if (ps.isServer) await ps.serve();
  else {
    for (let i = 0; i < 23; i++) {
      const t0 = performance.now();
      await ps.push(zeros);
      if (i >= 3) pushTimes.push(performance.now() - t0);
    }
    await ps.finish();
  }
  const reduceTimes = [];
  if (isWorker) {
    const flat = new Float32Array(variables.reduce((n, v) => n + v.size, 0));
    for (let i = 0; i < 23; i++) {
      const t0 = performance.now();
      await workers.allReduce(flat);
      if (i >= 3) reduceTimes.push(performance.now() - t0);
    }
  }
  const got = await comm.allGather(Float64Array.of(pushTimes.length ? median(pushTimes) : 0, reduceTimes.length ? median(reduceTimes) : 0));
  results.transfer = { floats: variables.reduce((n, v) => n + v.size, 0), pushPullMs: got[2], allReduceMs: got[3] };
  tf.dispose(zeros);
}

if (comm.rank === 0) {
  const accuracyOf = (r) => r.accuracy.toFixed(4);
  console.log(`MNIST MLP, 2 workers (worker 1 2x slower), ${epochs} epochs of each worker's half, batch ${batch}`);
  console.log(`DataParallel:            ${results.dataParallel.samplesPerSecond.toFixed(0)} samples/s, test accuracy ${accuracyOf(results.dataParallel)}`);
  console.log(`parameter server, sync:  ${results.sync.samplesPerSecond.toFixed(0)} samples/s, test accuracy ${accuracyOf(results.sync)}`);
  for (const bound of [staleness, Infinity]) {
    const r = results[`async-${bound}`];
    console.log(`parameter server, async (staleness ${bound === Infinity ? 'unbounded' : bound}): ${r.samplesPerSecond.toFixed(0)} samples/s (fast worker ${r.fastWorkerSamplesPerSecond.toFixed(0)}), test accuracy ${accuracyOf(r)}, largest lead ${r.maxLead}`);
  }
  console.log(`moving ${results.transfer.floats} floats: push + pull ${results.transfer.pushPullMs.toFixed(2)} ms, all-reduce among the workers ${results.transfer.allReduceMs.toFixed(2)} ms (medians of 20)`);
  const json = opt('--json', undefined);
  if (json) writeFileSync(json, JSON.stringify(results, null, 1));
}
await workers?.close();
await comm.close();
