// One rank of the training benchmark (started by training.mjs through `braid run`).
//   --mode train:   the MNIST MLP of the demo, `--steps` timed steps after `--warmup`, batch `--batch`
//                   per rank; step time, time inside the gradient all-reduce, and the cost of the
//                   same all-reduce alone (after a barrier, so no waiting for a slower rank).
//   --mode paired:  np=2; rank 0 alone, both ranks apart (no communication), apart in lockstep and
//                   data-parallel, taking turns within one job.
//   --mode buckets: averaging a 16 MiB gradient list (64 tensors of 256 KiB) with each bucket size.
//   --mode overlap: the gradients of an MLP (--hidden widths) averaged with the blocking path
//                   (read every bucket, then reduce) and the asynchronous one (bucket i on the wire
//                   while bucket i+1 is read out of tfjs), beside reading alone and reducing alone:
//                   the share of the communication the asynchronous path hides.
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { init } from '@braid/collectives';
import { DataParallel } from '@braid/strategies';
import { epochBatches, selectBackend } from '@braid/trainer';
import * as tf from '@tensorflow/tfjs';

import { loadMnist } from '../examples/mnist/data.mjs';
import { median } from './common.mjs';

const { values: args } = parseArgs({
  options: {
    mode: { type: 'string', default: 'train' },
    steps: { type: 'string', default: '200' },
    warmup: { type: 'string', default: '20' },
    batch: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '6' },
    json: { type: 'string' },
    backend: { type: 'string', default: 'cpu' },
    hidden: { type: 'string', default: '2048,512' },
    'bucket-bytes': { type: 'string', default: String(1 << 20) },
    // Processes that share no communicator (the two-process ceiling) start their timed steps
    // together: each leaves a file in this folder after its warm-up and waits for `--group`.
    'start-together': { type: 'string' },
    group: { type: 'string', default: '2' },
  },
});
// TensorFlow's threads: the share of the cores braid run gives each rank (TF_NUM_* for the
// independent processes, which training.mjs starts without MPI).
const backend = await selectBackend({ backend: args.backend });
tf.enableProdMode();
const comm = await init();

function mlp() {
  return tf.sequential({
    layers: [tf.layers.dense({ inputShape: [784], units: 128, activation: 'relu' }), tf.layers.dense({ units: 10, activation: 'softmax' })],
  });
}

function batchList(data, batchSize, count, size, rank) {
  const batches = [];
  for (let epoch = 0; batches.length < count; epoch++) {
    batches.push(...epochBatches({ rows: data.x.shape[0], rank, size, batchSize, seed: 1, epoch, shuffle: true, dropRemainder: true }));
  }
  return batches;
}

async function step(model, data, indices) {
  const idx = tf.tensor1d(indices, 'int32');
  const x = tf.gather(data.x, idx);
  const y = tf.gather(data.y, idx);
  await model.trainOnBatch(x, y);
  tf.dispose([idx, x, y]);
}

/** Times `steps` steps after `warmup`; returns seconds and the all-reduce time spent meanwhile. */
async function timed(model, data, batches, from, steps, dp, afterStep) {
  const commBefore = dp?.stats.communicationMs ?? 0;
  const started = performance.now();
  for (let s = 0; s < steps; s++) {
    await step(model, data, batches[from + s]);
    afterStep?.();
  }
  const ended = performance.now();
  return {
    seconds: (ended - started) / 1000,
    allReduceMs: (dp?.stats.communicationMs ?? 0) - commBefore,
    window: [performance.timeOrigin + started, performance.timeOrigin + ended],  // wall-clock ms
  };
}

function gradientAllReduceAlone(model) {
  const floats = model.trainableWeights.reduce((n, w) => n + w.shape.reduce((a, b) => a * b, 1), 0);
  return { floats, buffer: new Float32Array(floats) };
}

async function startTogether(dir, group) {
  writeFileSync(join(dir, `ready-${process.pid}`), '');
  const deadline = Date.now() + 120_000;
  while (readdirSync(dir).filter((name) => name.startsWith('ready-')).length < group) {
    if (Date.now() > deadline) throw new Error(`--start-together ${dir}: ${group} processes did not all get there within 120 s`);
    await new Promise((resume) => setTimeout(resume, 1));
  }
}

async function train() {
  const steps = Number(args.steps);
  const warmup = Number(args.warmup);
  const batchSize = Number(args.batch);
  const dp = new DataParallel(comm);
  const { train: data } = loadMnist(tf);
  const model = mlp();
  model.compile({ optimizer: dp.wrapOptimizer(tf.train.adam(1e-3 * comm.size)), loss: 'categoricalCrossentropy' });
  await dp.broadcastVariables(model);
  const batches = batchList(data, batchSize, steps + warmup, comm.size, comm.rank);
  await timed(model, data, batches, 0, warmup, dp);
  if (args['start-together']) await startTogether(args['start-together'], Number(args.group));
  await comm.barrier();
  const { seconds, allReduceMs, window } = await timed(model, data, batches, warmup, steps, dp);
  // The same gradient all-reduce on its own: what moving the bytes costs without waiting.
  const { floats, buffer } = gradientAllReduceAlone(model);
  const alone = [];
  for (let i = 0; i < 50; i++) {
    await comm.barrier();
    const t0 = performance.now();
    comm.allReduceSync(buffer, { op: 'avg' });
    alone.push(performance.now() - t0);
  }
  return {
    size: comm.size,
    backend: backend.backend,
    threads: backend.threads?.intraOp,
    steps,
    batchSize,
    seconds,
    samplesPerSecond: (steps * batchSize * comm.size) / seconds,
    stepMs: (seconds * 1000) / steps,
    inAllReduceMs: allReduceMs / steps,
    allReduceAloneMs: median(alone),
    gradientBytes: floats * 4,
    window,
  };
}

// np=2 only: each round has four phases, in an order that rotates from round to round: rank 0
// trains alone (a plain optimizer, no communication) while rank 1 sleeps; both ranks train apart at
// once (each its own model and plain optimizer, no communication: two independent processes, the
// machine's two-process ceiling); both train apart in lockstep (waiting for each other after every
// step); both train data-parallel. All four figures come from the same minute of the same
// processes, which separate jobs on this drifting VM cannot give.
async function paired() {
  if (comm.size !== 2) throw new Error('--mode paired needs exactly 2 ranks');
  const steps = Number(args.steps);
  const warmup = Number(args.warmup);
  const rounds = Number(args.rounds);
  const batchSize = Number(args.batch);
  const { train: data } = loadMnist(tf);
  const dp = new DataParallel(comm);
  const together = mlp();
  together.compile({ optimizer: dp.wrapOptimizer(tf.train.adam(2e-3)), loss: 'categoricalCrossentropy' });
  await dp.broadcastVariables(together);
  const alone = mlp();
  alone.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
  const mine = batchList(data, batchSize, warmup + rounds * steps, 2, comm.rank);
  const all = batchList(data, batchSize, warmup + rounds * steps, 1, 0);
  await timed(together, data, mine, 0, warmup, dp);
  await timed(alone, data, comm.rank === 0 ? all : mine, 0, warmup);
  const marker = `${args.json}.solo-done`;
  const phases = {
    async solo(round) {
      await comm.barrier();
      if (comm.rank === 0) {
        const r = await timed(alone, data, all, warmup + round * steps, steps);
        writeFileSync(`${marker}-${round}`, '');
        return (steps * batchSize) / r.seconds;
      }
      // Rank 1 sleeps (no CPU) until rank 0 is done; MPI is not touched meanwhile.
      while (!existsSync(`${marker}-${round}`)) await new Promise((resolve) => setTimeout(resolve, 2));
      return null;
    },
    async apart(round) {
      await comm.barrier();
      const r = await timed(alone, data, mine, warmup + round * steps, steps);
      // Each rank timed its own window; the sum of the two rates is what two processes got.
      const rates = new Float64Array(2);
      rates[comm.rank] = (steps * batchSize) / r.seconds;
      comm.allReduceSync(rates, { op: 'sum' });
      return rates;
    },
    // Apart, but the ranks wait for each other after every step (a 4-byte all-reduce): what a
    // data-parallel job would get from an all-reduce that cost nothing, on this machine.
    async lockstep(round) {
      await comm.barrier();
      const token = new Float32Array(1);
      const r = await timed(alone, data, mine, warmup + round * steps, steps, undefined, () => comm.allReduceSync(token));
      return (steps * batchSize * 2) / r.seconds;
    },
    async both(round) {
      await comm.barrier();
      const r = await timed(together, data, mine, warmup + round * steps, steps, dp);
      return { rate: (steps * batchSize * 2) / r.seconds, stepMs: (r.seconds * 1000) / steps, inAllReduceMs: r.allReduceMs / steps };
    },
  };
  const order = ['solo', 'apart', 'lockstep', 'both'];
  const results = [];
  for (let round = 0; round < rounds; round++) {
    const got = {};
    for (let i = 0; i < order.length; i++) {
      const phase = order[(i + round) % order.length];
      got[phase] = await phases[phase](round);
    }
    await comm.barrier();
    if (comm.rank === 0) {
      results.push({
        soloSamplesPerSecond: got.solo,
        apartSamplesPerSecond: got.apart[0] + got.apart[1],
        apartPerRank: [...got.apart],
        dataParallelSamplesPerSecond: got.both.rate,
        efficiency: got.both.rate / (2 * got.solo),
        againstCeiling: got.both.rate / (got.apart[0] + got.apart[1]),
        lockstepSamplesPerSecond: got.lockstep,
        stepMs: got.both.stepMs,
        inAllReduceMs: got.both.inAllReduceMs,
      });
    }
  }
  for (let round = 0; round < rounds; round++) if (comm.rank === 0) rmSync(`${marker}-${round}`, { force: true });
  return { size: 2, backend: backend.backend, steps, rounds, batchSize, results };
}

async function buckets() {
  const tensors = Array.from({ length: 64 }, (_, i) => tf.fill([65536], i + comm.rank));
  const sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];
  const strategies = sizes.map((bucketBytes) => new DataParallel(comm, { bucketBytes }));
  const sync = sizes.map(() => []);
  const overlapped = sizes.map(() => []);
  // Sizes interleaved within each repetition, so a slow phase of the machine hits them all alike.
  for (let rep = 0; rep < 15; rep++) {
    for (let i = 0; i < sizes.length; i++) {
      await comm.barrier();
      let t0 = performance.now();
      tf.dispose(strategies[i].averageTensorsSync(tensors));
      if (rep >= 3) sync[i].push(performance.now() - t0);
      await comm.barrier();
      t0 = performance.now();
      tf.dispose(await strategies[i].averageTensors(tensors));
      if (rep >= 3) overlapped[i].push(performance.now() - t0);
    }
  }
  tf.dispose(tensors);
  const rows = sizes.map((bucketBytes, i) => ({ bucketBytes, calls: Math.ceil((16 << 20) / bucketBytes), syncMs: median(sync[i]), asyncMs: median(overlapped[i]) }));
  return { size: comm.size, totalBytes: 16 << 20, rows };
}

async function overlap() {
  const widths = args.hidden.split(',').map(Number);
  const model = tf.sequential({
    layers: [
      ...widths.map((units, i) => tf.layers.dense({ ...(i === 0 ? { inputShape: [784] } : {}), units, activation: 'relu' })),
      tf.layers.dense({ units: 10, activation: 'softmax' }),
    ],
  });
  const dp = new DataParallel(comm, { bucketBytes: Number(args['bucket-bytes']) });
  const { train: data } = loadMnist(tf);
  const batches = batchList(data, Number(args.batch), 40, comm.size, comm.rank);
  const variables = model.trainableWeights.map((w) => w.read());
  const gradientsOf = (indices) =>
    tf.tidy(() => {
      const x = tf.gather(data.x, tf.tensor1d(indices, 'int32'));
      const y = tf.gather(data.y, tf.tensor1d(indices, 'int32'));
      const { grads, value } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, model.apply(x)).mean(), variables);
      value.dispose();
      return variables.map((v) => grads[v.name]);
    });
  const floats = variables.reduce((n, v) => n + v.size, 0);
  const wire = new Float32Array(floats);
  const times = { read: [], reduce: [], sync: [], async: [] };
  for (let i = 0; i < batches.length; i++) {
    // Each measurement gets gradients nobody has read yet (a backend may keep what was read).
    const timeOf = async (what, run) => {
      const grads = gradientsOf(batches[i]);
      await comm.barrier();
      const t0 = performance.now();
      const out = await run(grads);
      const ms = performance.now() - t0;
      tf.dispose([...grads, ...(out ?? [])]);
      if (i >= 5) times[what].push(ms);
    };
    await timeOf('read', async (grads) => {
      for (const g of grads) g.dataSync();
    });
    await timeOf('reduce', async () => {
      for (let offset = 0; offset < floats; offset += Number(args['bucket-bytes']) / 4) comm.allReduceSync(wire.subarray(offset, Math.min(floats, offset + Number(args['bucket-bytes']) / 4)), { op: 'avg' });
    });
    await timeOf('sync', async (grads) => dp.averageTensorsSync(grads));
    await timeOf('async', async (grads) => dp.averageTensors(grads));
  }
  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  return {
    size: comm.size,
    backend: backend.backend,
    parameters: floats,
    bucketBytes: Number(args['bucket-bytes']),
    readMs: m.read,
    reduceMs: m.reduce,
    syncMs: m.sync,
    asyncMs: m.async,
    // What the asynchronous path saves, as a share of the communication alone.
    hiddenShare: Math.max(0, Math.min(1, (m.sync - m.async) / m.reduce)),
  };
}

const modes = { train, paired, buckets, overlap };
if (!modes[args.mode]) throw new Error(`--mode must be one of ${Object.keys(modes).join(', ')}`);
const result = await modes[args.mode]();
if (comm.rank === 0 && args.json) writeFileSync(args.json, JSON.stringify(result, null, 1));
await comm.close();
