// One rank of a multi-process trainer test: `mpirun -np N node worker.mjs <scenario> <dir>`.
import { hostname } from 'node:os';
import { join } from 'node:path';

import { init } from '@braid/collectives';
import { DataParallel, ParameterServer, PipelineParallel } from '@braid/strategies';
import { useTestBackend } from '@braid/test-support/backend';
import { digest, runScenario, seededRandom } from '@braid/test-support/mpirun';
import { tf } from '@braid/test-support/tfjs';

import { assembleServerCheckpoint, checkpointLoader, epochBatches, fit, latestCheckpoint } from '../../dist/index.js';

tf.enableProdMode();
await useTestBackend(tf); // BRAID_TEST_BACKEND=tensorflow: native TensorFlow (tfjs-node)
const [scenario, ...rest] = process.argv.slice(2);
const outDir = rest.pop();
const comm = await init();
const { rank, size } = comm;

// Two gaussian blobs per class in 8 dimensions: learnable, deterministic, the same on every rank.
function blobs(count, seed) {
  const next = seededRandom(seed);
  const x = new Float32Array(count * 8);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const c = Math.floor(next() * 3);
    labels[i] = c;
    for (let d = 0; d < 8; d++) x[i * 8 + d] = (d % 3 === c ? 1.5 : -0.5) + (next() - 0.5);
  }
  return { x: tf.tensor2d(x, [count, 8]), y: tf.oneHot(tf.tensor1d(labels, 'int32'), 3).toFloat() };
}

function model(optimizer) {
  const m = tf.sequential({
    // Seeded initializers: two separate runs (one killed and resumed) start from the same weights.
    layers: [
      tf.layers.dense({ inputShape: [8], units: 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
      tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    ],
  });
  m.compile({ optimizer, loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  return m;
}

// An onBatchEnd that kills this rank at that global step (undefined or '0': never), as a host lost mid-run.
const killedAt = (step) => (s) => {
  if (step && step !== '0' && s.globalStep === Number(step)) process.kill(process.pid, 'SIGKILL');
};

function makeOptimizer(name) {
  if (name === 'adam') return tf.train.adam(0.02);
  if (name === 'momentum') return tf.train.momentum(0.1, 0.9);
  return tf.train.sgd(0.2);
}

// The pipeline scenarios' model, data and PipelineParallel: one pipeline over all the ranks, or
// REPLICAS pipelines side by side.
async function pipelineSetup(optimizer) {
  const replicas = Number(process.env.REPLICAS ?? 1);
  const stages = size / replicas;
  const replica = Math.floor(rank / stages);
  const pipelineComm = replicas > 1 ? await comm.split(replica, rank % stages) : comm;
  const stageComm = replicas > 1 ? await comm.split(rank % stages, replica) : undefined;
  const build = () =>
    tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [8], units: 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
        tf.layers.dense({ units: 12, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
        tf.layers.dense({ units: 10, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }),
        tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }),
      ],
    });
  const model = build();
  const pipe = new PipelineParallel(pipelineComm, model, {
    optimizer: optimizer === 'adam' ? tf.train.adam(0.01) : optimizer === 'momentum' ? tf.train.momentum(0.1, 0.9) : tf.train.sgd(0.2),
    loss: 'categoricalCrossentropy',
    microBatches: 2,
    ...(stageComm ? { replicas: new DataParallel(stageComm) } : {}),
  });
  return { replicas, replica, pipelineComm, stageComm, build, data: blobs(96, 5), validation: blobs(30, 6), model, pipe };
}

const scenarios = {
  // fit with a ParameterServer (SERVERS of the ranks serve; MODE sync or async): workers train on
  // their rows; every rank ends with the servers' weights and the same history. Sync: one process
  // on every worker's batch of each step gives the same weights and losses.
  async 'ps-fit'() {
    const servers = Number(process.env.SERVERS ?? 1);
    const mode = process.env.MODE ?? 'sync';
    const build = () => {
      const m = tf.sequential({
        layers: [
          tf.layers.dense({ inputShape: [8], units: 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
          tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
        ],
      });
      m.compile({ optimizer: tf.train.sgd(0.2), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
      return m;
    };
    const data = blobs(96, 5);
    const validation = blobs(30, 6);
    const model = build();
    const ps = new ParameterServer(comm, model.trainableWeights.map((w) => w.read()), { servers, optimizer: tf.train.sgd(0.2), mode });
    const lines = [];
    const result = await fit(model, data, { strategy: ps, epochs: 3, batchSize: 8, seed: 3, validationData: validation, progress: 'lines', write: (t) => lines.push(t) });
    const workers = size - servers;
    let diff;
    let lossDiff;
    if (mode === 'sync') {
      const reference = build();
      const losses = [];
      for (let epoch = 0; epoch < 3; epoch++) {
        const perWorker = Array.from({ length: workers }, (_, w) => epochBatches({ rows: 96, rank: w, size: workers, batchSize: 8, seed: 3, epoch, shuffle: true }));
        let sum = 0;
        for (let b = 0; b < perWorker[0].length; b++) {
          const indices = tf.tensor1d(Int32Array.from(perWorker.flatMap((batches) => Array.from(batches[b]))), 'int32');
          const [x, y] = [tf.gather(data.x, indices), tf.gather(data.y, indices)];
          const out = await reference.trainOnBatch(x, y);
          sum += out[0];
          tf.dispose([indices, x, y]);
        }
        losses.push(sum / perWorker[0].length);
      }
      const mine = model.getWeights();
      diff = Math.max(...reference.getWeights().map((w, i) => tf.tidy(() => tf.max(tf.abs(tf.sub(w, mine[i]))).dataSync()[0])));
      lossDiff = Math.max(...losses.map((l, i) => Math.abs(l - result.history.loss[i])));
    }
    return { isServer: ps.isServer, history: result.history, globalStep: result.globalStep, weights: digest(model.getWeights()), diff, lossDiff, epochLines: lines.join('').split('\n').filter((l) => l.startsWith('epoch ')) };
  },

  // fit with a ParameterServer and checkpoints (every 4 steps, and at the end): run straight,
  // or with worker 0 killed after step KILL_AT (mpirun then ends the job), or resumed from the
  // folder. SERVERS, MODE as in ps-fit; the servers' optimizer is the first argument's.
  async 'ps-resume'() {
    const [optimizer, dir] = rest;
    const servers = Number(process.env.SERVERS ?? 1);
    const mode = process.env.MODE ?? 'sync';
    const m = model(tf.train.sgd(0.2));
    const ps = new ParameterServer(comm, m.trainableWeights.map((w) => w.read()), { servers, optimizer: makeOptimizer(optimizer), mode });
    const checkpoints = [];
    const lines = [];
    let result;
    try {
      result = await fit(m, blobs(96, 5), {
      strategy: ps,
      epochs: 3,
      batchSize: 8,
      seed: 3,
      validationData: blobs(30, 6),
      progress: 'lines',
      write: (t) => lines.push(t),
      checkpointDir: dir,
      checkpointEvery: { steps: 4 },
      callbacks: { onBatchEnd: rank === servers ? killedAt(process.env.KILL_AT) : () => {}, onCheckpoint: (folder, state) => checkpoints.push([folder, state.globalStep]) },
      });
    } catch (err) {
      return { error: { code: err.code, message: err.message } };
    }
    const assembled = rank === 0 ? digest([assembleServerCheckpoint(latestCheckpoint(dir))]) : undefined;
    const flat = Float32Array.from(m.getWeights().flatMap((w) => Array.from(w.dataSync())));
    return { isServer: ps.isServer, history: result.history, globalStep: result.globalStep, resumedFrom: result.resumedFrom ?? null, weights: digest([flat]), assembled, checkpoints, messages: lines.join('') };
  },

  // Early stopping under a pipeline or a parameter server (KIND): monitoring the loss as if higher
  // were better, the first epoch is the best and the second stops the run (patience 0), which
  // puts back the first epoch's weights; a one-epoch run gives the weights to compare with.
  async 'stop-early'() {
    const kind = process.env.KIND;
    const setup = async () => {
      if (kind === 'pipeline') {
        const { pipelineComm, stageComm, data, model, pipe } = await pipelineSetup('sgd');
        return { strategy: pipe, model, data, weights: () => digest(pipe.stageWeights()), close: async () => { if (stageComm) await stageComm.close(); if (pipelineComm !== comm) await pipelineComm.close(); } };
      }
      const m = model(tf.train.sgd(0.2));
      const ps = new ParameterServer(comm, m.trainableWeights.map((w) => w.read()), { servers: 1, optimizer: tf.train.sgd(0.2), mode: 'sync' });
      return { strategy: ps, model: m, data: blobs(96, 5), weights: () => digest(m.getWeights()), close: async () => {} };
    };
    const one = await setup();
    await fit(one.model, one.data, { strategy: one.strategy, epochs: 1, batchSize: 8, seed: 3, progress: 'none' });
    const firstEpoch = one.weights();
    await one.close();
    const run = await setup();
    const stopped = await fit(run.model, run.data, { strategy: run.strategy, epochs: 5, batchSize: 8, seed: 3, progress: 'none', earlyStopping: { monitor: 'loss', mode: 'max', patience: 0, restoreBestWeights: true } });
    const restored = run.weights();
    await run.close();
    const bad = await setup();
    let error;
    try {
      await fit(bad.model, bad.data, { strategy: bad.strategy, epochs: 2, batchSize: 8, seed: 3, progress: 'none', earlyStopping: { monitor: 'val_accuracy' } });
    } catch (err) {
      error = { code: err.code, message: err.message };
    }
    await bad.close();
    return { firstEpoch, restored, stoppedEarly: stopped.stoppedEarly, epochs: stopped.history.loss.length, error };
  },

  // A worker's training throws at step 5 (its callback): the servers stop at once and the other
  // workers fail with ABORTED too, long before any deadline.
  async 'ps-worker-fails'() {
    const servers = Number(process.env.SERVERS ?? 1);
    const failing = Number(process.env.FAIL_WORKER ?? 0);
    const m = model(tf.train.sgd(0.2));
    const ps = new ParameterServer(comm, m.trainableWeights.map((w) => w.read()), { servers, optimizer: tf.train.sgd(0.2), mode: process.env.MODE ?? 'sync' });
    const started = performance.now();
    const fail = (step) => {
      if (rank === servers + failing && step.globalStep === 5) throw new Error('a bug in worker code');
    };
    try {
      await fit(m, blobs(96, 5), { strategy: ps, epochs: 3, batchSize: 8, seed: 3, progress: 'none', callbacks: { onBatchEnd: fail } });
      return { error: null };
    } catch (err) {
      return { error: { code: err.code ?? null, message: err.message }, ms: performance.now() - started };
    }
  },

  // fit under a pipeline with checkpoints (checkpointEvery 4 steps): run straight, or stopped by
  // an error thrown on every rank at step CRASH_AT, or resumed from the folder.
  async 'pipeline-resume'() {
    const [optimizer, dir] = rest;
    const crashAt = Number(process.env.CRASH_AT ?? 0);
    const { pipelineComm, stageComm, data, validation, model, pipe } = await pipelineSetup(optimizer);
    const crash = { onBatchEnd: (step) => { if (step.globalStep === crashAt) throw new Error(`stopped at step ${crashAt}`); } };
    let result;
    let error;
    try {
      result = await fit(model, data, { strategy: pipe, epochs: 3, batchSize: 8, seed: 3, validationData: validation, progress: 'none', checkpointDir: dir, checkpointEvery: { steps: 4 }, callbacks: crashAt ? [crash] : [] });
    } catch (err) {
      error = err.message;
    }
    const weights = digest(pipe.stageWeights());
    if (stageComm) await stageComm.close();
    if (pipelineComm !== comm) await pipelineComm.close();
    return { stage: pipe.stage, replica: pipe.replicaIndex, error, weights, history: result?.history, globalStep: result?.globalStep, resumedFrom: result?.resumedFrom };
  },
  // fit with a PipelineParallel strategy: one pipeline over all the ranks, or (4 ranks,
  // REPLICAS=2) two pipelines of 2 stages. The stages end where one process does on the same
  // batches (each step: the rows of every pipeline's batch), and report the same history.
  async 'pipeline-fit'() {
    const { replicas, replica, pipelineComm, stageComm, build, data, validation, model, pipe } = await pipelineSetup('sgd');
    const epochs = 3;
    const batchSize = 8;
    const epochLines = [];
    const before = tf.memory().numTensors;
    const result = await fit(model, data, { strategy: pipe, epochs, batchSize, seed: 3, validationData: validation, progress: 'lines', write: (t) => epochLines.push(t) });
    const leaked = tf.memory().numTensors - before;

    // One process on the same batches: each step, the rows of every pipeline's batch.
    const reference = build();
    const plain = tf.train.sgd(0.2);
    const crossEntropy = (y, p) => tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(p, 1e-7, 1 - 1e-7))), -1));
    const losses = [];
    for (let epoch = 0; epoch < epochs; epoch++) {
      const perReplica = Array.from({ length: replicas }, (_, r) => epochBatches({ rows: 96, rank: r, size: replicas, batchSize, seed: 3, epoch, shuffle: true }));
      let sum = 0;
      for (let b = 0; b < perReplica[0].length; b++) {
        const indices = tf.tensor1d(Int32Array.from(perReplica.flatMap((batches) => Array.from(batches[b]))), 'int32');
        const [x, y] = [tf.gather(data.x, indices), tf.gather(data.y, indices)];
        const cost = plain.minimize(() => tf.mean(crossEntropy(y, reference.apply(x))), true);
        sum += cost.dataSync()[0];
        tf.dispose([indices, x, y, cost]);
      }
      losses.push(sum / perReplica[0].length);
    }
    const [begin, end] = pipe.ranges[pipe.stage];
    let diff = 0;
    const mine = pipe.layers.flatMap((l) => l.getWeights());
    reference.layers.slice(begin, end).flatMap((l) => l.getWeights()).forEach((w, i) => {
      diff = Math.max(diff, tf.tidy(() => tf.max(tf.abs(tf.sub(w, mine[i]))).dataSync()[0]));
    });
    const predicted = reference.predict(validation.x);
    const referenceValLoss = tf.tidy(() => tf.mean(crossEntropy(validation.y, predicted)).dataSync()[0]);
    const referenceValAcc = tf.tidy(() => tf.mean(tf.equal(tf.argMax(validation.y, 1), tf.argMax(predicted, 1)).toFloat()).dataSync()[0]);
    predicted.dispose();
    if (stageComm) await stageComm.close();
    if (pipelineComm !== comm) await pipelineComm.close();
    return {
      stage: pipe.stage,
      replica,
      history: result.history,
      globalStep: result.globalStep,
      lossDiff: Math.max(...losses.map((l, i) => Math.abs(l - result.history.loss[i]))),
      valLossDiff: Math.abs(referenceValLoss - result.history.val_loss.at(-1)),
      valAccDiff: Math.abs(referenceValAcc - result.history.val_acc.at(-1)),
      diff,
      weights: digest(mine),
      leaked,
      epochLines: epochLines.join('').split('\n').filter((l) => l.startsWith('epoch ')),
      samplesPerSecond: result.samplesPerSecond,
    };
  },

  // A few all-reduces, small to large: every rank's sums (the profile test checks auto's choices run exactly).
  async allreduce() {
    const sums = [];
    for (const n of [4, 100000, 1 << 20]) {
      const buf = new Float32Array(n).fill(comm.rank + 1);
      await comm.allReduce(buf);
      sums.push(buf[n - 1]);
    }
    return { sums };
  },
  // 101 rows do not divide by 2, 3 or 4 ranks, nor by the batch of 8.
  async fit() {
    const dp = new DataParallel(comm);
    const m = model(dp.wrapOptimizer(tf.train.adam(0.02)));
    const train = blobs(101, 1);
    const validation = blobs(37, 2);
    const steps = [];
    const result = await fit(m, train, {
      epochs: 4,
      batchSize: 8,
      strategy: dp,
      seed: 3,
      validationData: validation,
      progress: 'lines',
      callbacks: { onBatchEnd: (s) => void steps.push(s.globalStep) },
    });
    return { history: result.history, globalStep: result.globalStep, steps: steps.length, weights: digest(m.getWeights()), share: result.communicationShare };
  },

  // DP-SGD through fit, noise on: every rank ends with the same weights (the noise is summed in
  // the all-reduce, so every rank applies the same noisy average), epsilon grows per epoch.
  async private() {
    const dp = new DataParallel(comm, { privacy: { clipNorm: 1, noiseMultiplier: 0.8, microbatchSize: 2, secureAggregation: process.env.SECURE === '1' } });
    const m = model(dp.wrapOptimizer(tf.train.sgd(0.2)));
    const result = await fit(m, blobs(96, 4), { epochs: 3, batchSize: 8, strategy: dp, seed: 2, validationData: blobs(60, 5), progress: 'lines' });
    return { history: result.history, globalStep: result.globalStep, weights: digest(m.getWeights()), steps: dp.differentialPrivacy.steps };
  },

  // Train with step checkpoints; `crash` kills every rank at a given step; a second run resumes.
  async resume() {
    const [optimizerName, dir, crashAt] = rest;
    const dp = new DataParallel(comm);
    const m = model(dp.wrapOptimizer(makeOptimizer(optimizerName)));
    const messages = [];
    const result = await fit(m, blobs(90, 5), {
      epochs: 3,
      batchSize: 4,
      strategy: dp,
      seed: 9,
      checkpointDir: dir,
      checkpointEvery: { steps: 5 },
      keepCheckpoints: 100,
      checkpointOnEveryHost: process.env.BRAID_TEST_CHECKPOINT_EVERY_HOST === '1',
      progress: 'lines',
      write: (text) => void messages.push(text),
      callbacks: { onBatchEnd: killedAt(crashAt) },
    });
    let reloaded;
    if (rank === 0) {
      const folder = latestCheckpoint(dir);
      const loaded = await tf.loadLayersModel(checkpointLoader(folder));
      reloaded = { folder, weights: digest(loaded.getWeights()) };
    }
    return { history: result.history, globalStep: result.globalStep, resumedFrom: result.resumedFrom ?? null, weights: digest(m.getWeights()), reloaded, host: hostname(), messages };
  },

  // Early stopping on an averaged metric, and model.stopTraining set on one rank only.
  async stopping() {
    const dp = new DataParallel(comm);
    const early = model(dp.wrapOptimizer(tf.train.sgd(0.1)));
    const data = blobs(40, 7);
    const a = await fit(early, data, { epochs: 6, batchSize: 5, strategy: dp, progress: 'none', earlyStopping: { monitor: 'loss', minDelta: 1e9 } });
    const other = model(dp.wrapOptimizer(tf.train.sgd(0.1)));
    const b = await fit(other, data, {
      epochs: 6,
      batchSize: 5,
      strategy: dp,
      progress: 'none',
      callbacks: {
        onEpochEnd: (epoch) => {
          if (rank === size - 1 && epoch === 1) other.stopTraining = true;
        },
      },
    });
    return { early: { epochs: a.epochs.length, stopped: a.stoppedEarly }, oneRank: { epochs: b.epochs.length, stopped: b.stoppedEarly } };
  },

  // Rank 0 alone cannot write (the checkpoint folder is a file) or read (a corrupt `latest`) its
  // checkpoint: every rank fails within seconds, not at the collective timeout.
  async 'checkpoint-errors'() {
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const failures = {};
    for (const kind of ['write', 'read']) {
      const dir = join(outDir, `ckpt-${kind}`);
      if (rank === 0) {
        if (kind === 'write') writeFileSync(dir, 'not a folder');
        else {
          mkdirSync(dir, { recursive: true });
          writeFileSync(join(dir, 'latest'), 'ckpt-garbage');
        }
      }
      await comm.barrier();
      const dp = new DataParallel(comm);
      const m = model(dp.wrapOptimizer(tf.train.sgd(0.1)));
      const started = Date.now();
      try {
        await fit(m, blobs(24, 1), { epochs: 1, batchSize: 4, strategy: dp, progress: 'none', checkpointDir: dir });
        failures[kind] = { code: 'OK' };
      } catch (err) {
        failures[kind] = { code: err.code, message: err.message, ms: Date.now() - started };
      }
    }
    // The communicator is still usable afterwards: the failure was agreed, not a timeout.
    const after = await comm.allReduce(new Float32Array([1]));
    return { failures, after: after[0] };
  },

  // Every row's training count in its own weight: row i is the one-hot e_i, the model w.x starts
  // at 0 and the target is far above, so mean absolute error's gradient adds lr / (batch x ranks)
  // to w_i each time row i is trained (DataParallel averages over the ranks). Two epochs of 60
  // rows, a checkpoint every 2 steps; `crashAt` kills every rank at that step (0: never).
  async countRows() {
    const [dir, crashAt, batch] = rest;
    const rows = 60;
    const dp = new DataParallel(comm);
    const m = tf.sequential({ layers: [tf.layers.dense({ inputShape: [rows], units: 1, useBias: false, kernelInitializer: 'zeros' })] });
    m.compile({ optimizer: dp.wrapOptimizer(tf.train.sgd(1)), loss: 'meanAbsoluteError' });
    let began;
    const result = await fit(m, { x: tf.eye(rows), y: tf.fill([rows, 1], 1000) }, {
      epochs: 2,
      batchSize: Number(batch),
      strategy: dp,
      seed: 4,
      checkpointDir: dir,
      checkpointEvery: { steps: 2 },
      keepCheckpoints: 100,
      progress: 'none',
      callbacks: { onBatchEnd: killedAt(crashAt), onTrainBegin: (info) => (began = info) },
    });
    return { weights: Array.from(m.getWeights()[0].dataSync()), globalStep: result.globalStep, resumedFrom: result.resumedFrom ?? null, began: { size: began.size, resumedSize: began.resumedSize ?? null } };
  },

  // Ranks that disagree on the data fail together with a message.
  async mismatch() {
    const dp = new DataParallel(comm);
    const m = model(dp.wrapOptimizer(tf.train.sgd(0.1)));
    try {
      await fit(m, blobs(20 + rank, 1), { epochs: 1, batchSize: 4, strategy: dp, progress: 'none' });
      return { error: null };
    } catch (err) {
      return { error: { code: err.code, message: err.message } };
    }
  },
};

await runScenario(comm, outDir, scenario, scenarios);
