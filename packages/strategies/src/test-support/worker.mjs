// One rank of a multi-process strategies test: `mpirun -np N node worker.mjs <scenario> <dir>`.
// Each scenario trains for real and writes what the test asserts on to <dir>/rank-<r>.json.

import { init } from '@braid/collectives';
import { createCompressor, ErrorFeedback } from '@braid/compression';
import { useTestBackend } from '@braid/test-support/backend';
import { digest, runScenario, seededRandom } from '@braid/test-support/mpirun';
import { tf } from '@braid/test-support/tfjs';

import { DataParallel, dataParallelCallbacks, ParameterServer, PipelineParallel, SecureAggregator } from '../../dist/index.js';

tf.enableProdMode();
await useTestBackend(tf); // BRAID_TEST_BACKEND=tensorflow: native TensorFlow (tfjs-node)
const [scenario, outDir] = process.argv.slice(2);
const comm = await init();
const { rank, size } = comm;

// Deterministic data, the same on every rank: rows i of x and y depend only on (seed, i).
function rows(seed, count, features, classes) {
  const next = seededRandom(seed);
  const x = new Float32Array(count * features).map(() => next() * 2 - 1);
  const labels = Int32Array.from({ length: count }, () => Math.floor(next() * classes));
  return { x: tf.tensor2d(x, [count, features]), y: tf.oneHot(tf.tensor1d(labels, 'int32'), classes).toFloat() };
}

function mlp(features, classes) {
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [features], units: 32, activation: 'relu' }),
      tf.layers.dense({ units: classes, activation: 'softmax' }),
    ],
  });
}

function lossOf(model, x, y) {
  return () => tf.losses.softmaxCrossEntropy(y, model.apply(x)).mean();
}

const all = (t, start, count) => t.slice([start, 0], [count, t.shape[1]]);

function maxAbsDiff(a, b) {
  let worst = 0;
  a.forEach((t, i) => {
    const u = t.dataSync();
    const v = b[i].dataSync();
    for (let k = 0; k < u.length; k++) worst = Math.max(worst, Math.abs(u[k] - v[k]));
  });
  return worst;
}

const scenarios = {
  // model.fit with the wrapped optimizer and the callbacks: identical weights on every rank after
  // every epoch, though each rank trains on different rows.
  async fit() {
    const name = process.env.COMPRESSION ?? 'none';
    // Other names: a @braid/compression compressor with error feedback, one per bucket.
    const compression = ['none', 'fp16', 'bf16'].includes(name)
      ? name
      : ({ shape, size }) => (shape.length > 1 || name !== 'powersgd' ? new ErrorFeedback(createCompressor(name, { ratio: 0.1, rank: 2, seed: 1, shape: name === 'powersgd' ? [shape[0], size / shape[0]] : undefined })) : undefined);
    const dp = new DataParallel(comm, { compression, bucketBytes: 4096 });
    const model = mlp(20, 4);
    const optimizer = dp.wrapOptimizer(tf.train.adam(0.01));
    model.compile({ optimizer, loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
    const { x, y } = rows(1000 + rank, 96, 20, 4);
    const digests = [];
    const history = await model.fit(x, y, {
      epochs: 3,
      batchSize: 16,
      shuffle: false,
      verbose: 0,
      callbacks: [...dataParallelCallbacks(dp, model), { onEpochEnd: () => void digests.push(digest(model.getWeights())) }],
    });
    const optimizerState = digest((await optimizer.getWeights()).map((w) => w.tensor));
    return { digests, optimizerState, loss: history.history.loss, acc: history.history.acc, stats: { ...dp.stats } };
  },

  // N ranks with B rows each and plain SGD move the weights as one process does on the N*B rows.
  async equivalence() {
    const B = 8;
    const steps = 5;
    const all = rows(7, B * size * steps, 12, 3);
    const results = {};
    for (const path of ['sync', 'async']) {
      const dp = new DataParallel(comm, { bucketBytes: 1024, ...(process.env.SECURE ? { privacy: { secureAggregation: true } } : {}) });
      const model = mlp(12, 3);
      await dp.broadcastVariables(model);
      const reference = mlp(12, 3);
      reference.setWeights(model.getWeights());
      const optimizer = dp.wrapOptimizer(tf.train.sgd(0.5));
      const plain = tf.train.sgd(0.5);
      for (let step = 0; step < steps; step++) {
        const start = step * B * size;
        const mine = [all.x.slice([start + rank * B, 0], [B, 12]), all.y.slice([start + rank * B, 0], [B, 3])];
        const global = [all.x.slice([start, 0], [B * size, 12]), all.y.slice([start, 0], [B * size, 3])];
        if (path === 'sync') optimizer.minimize(lossOf(model, ...mine));
        else await optimizer.minimizeAsync(lossOf(model, ...mine));
        plain.minimize(lossOf(reference, ...global));
        tf.dispose([...mine, ...global]);
      }
      results[path] = { diff: maxAbsDiff(model.getWeights(), reference.getWeights()), digest: digest(model.getWeights()), calls: dp.stats.allReduceCalls };
    }
    return results;
  },

  // Gradient accumulation over 2 local steps of B rows equals one step on the 2*N*B rows.
  async accumulation() {
    const B = 6;
    const all = rows(11, B * size * 4, 10, 3);
    const dp = new DataParallel(comm, { accumulationSteps: 2 });
    const model = mlp(10, 3);
    await dp.broadcastVariables(model);
    const reference = mlp(10, 3);
    reference.setWeights(model.getWeights());
    const optimizer = dp.wrapOptimizer(tf.train.sgd(0.3));
    const plain = tf.train.sgd(0.3);
    const afterFirstMicroStep = [];
    for (let step = 0; step < 4; step++) {
      // Micro-step `step` reads rows [step*B*size + rank*B, +B).
      const start = step * B * size;
      const mine = [all.x.slice([start + rank * B, 0], [B, 10]), all.y.slice([start + rank * B, 0], [B, 3])];
      const before = digest(model.getWeights());
      optimizer.minimize(lossOf(model, ...mine));
      if (step % 2 === 0) afterFirstMicroStep.push(before === digest(model.getWeights()));
      tf.dispose(mine);
    }
    for (let step = 0; step < 2; step++) {
      const start = step * 2 * B * size;
      // The same rows as two micro-steps: each rank's mean over 2B rows, averaged over ranks.
      const global = [all.x.slice([start, 0], [2 * B * size, 10]), all.y.slice([start, 0], [2 * B * size, 3])];
      plain.minimize(lossOf(reference, ...global));
      tf.dispose(global);
    }
    return { unchangedBetween: afterFirstMicroStep, diff: maxAbsDiff(model.getWeights(), reference.getWeights()), digest: digest(model.getWeights()) };
  },

  // Local SGD: ranks drift apart between averaging steps and agree right after one, on the
  // exact mean of the ranks' weights, even when the gradients would go through a lossy
  // compressor (COMPRESSION=topk) or half precision (fp16).
  async localsgd() {
    const name = process.env.COMPRESSION ?? 'none';
    const compression = ['none', 'fp16', 'bf16'].includes(name) ? name : () => new ErrorFeedback(createCompressor(name, { ratio: 0.1, seed: 1 }));
    const dp = new DataParallel(comm, { localSgdSteps: 3, compression });
    const model = mlp(8, 2);
    await dp.broadcastVariables(model);
    // The wrapped optimizer applies the local step, then averages: what it leaves behind in its
    // applyGradients is each rank's weights before the average.
    const inner = tf.train.sgd(0.2);
    const applyLocal = inner.applyGradients.bind(inner);
    let before = [];
    inner.applyGradients = (grads) => {
      applyLocal(grads);
      before = model.getWeights().map((w) => Float32Array.from(w.dataSync()));
    };
    const optimizer = dp.wrapOptimizer(inner);
    const { x, y } = rows(300 + rank, 8 * 6, 8, 2);
    const digests = [];
    const meanError = [];
    for (let step = 0; step < 6; step++) {
      const xb = x.slice([step * 8, 0], [8, 8]);
      const yb = y.slice([step * 8, 0], [8, 2]);
      optimizer.minimize(lossOf(model, xb, yb));
      digests.push(digest(model.getWeights()));
      tf.dispose([xb, yb]);
      if ((step + 1) % 3 !== 0) continue;
      // The mean of every rank's pre-average weights, summed in rank order in float32.
      let worst = 0;
      const after = model.getWeights();
      for (let i = 0; i < before.length; i++) {
        const all = await comm.allGather(before[i]);
        const n = before[i].length;
        const got = after[i].dataSync();
        for (let k = 0; k < n; k++) {
          let sum = Math.fround(all[k]);
          for (let r = 1; r < size; r++) sum = Math.fround(sum + all[r * n + k]);
          const mean = Math.fround(sum / size);
          worst = Math.max(worst, Math.abs(got[k] - mean) / Math.max(1, Math.abs(mean)));
        }
      }
      meanError.push(worst);
    }
    return { digests, meanError };
  },

  // The last rank built another model: broadcastVariables fails on every rank within seconds
  // (before, only the ranks that noticed threw, and the root waited for them until the timeout).
  async 'broadcast-mismatch'() {
    const dp = new DataParallel(comm);
    const model = rank === size - 1 ? mlp(9, 2) : mlp(8, 2);
    const started = Date.now();
    let error;
    try {
      await dp.broadcastVariables(model);
    } catch (err) {
      error = { code: err.code, message: err.message };
    }
    const after = await comm.allReduce(new Float32Array([1]));
    return { error, ms: Date.now() - started, after: after[0] };
  },

  // Gradient accumulation over 2 steps with a compressor that starts after a dense warm-up: the
  // layouts differ in buckets, so the accumulators must follow the switch.
  async 'accumulation-warmup'() {
    const dp = new DataParallel(comm, {
      accumulationSteps: 2,
      compressionWarmupSteps: 2,
      compression: ({ size }) => (size >= 16 ? new ErrorFeedback(createCompressor('topk', { ratio: 0.25 })) : undefined),
      bucketBytes: 256,
    });
    const model = mlp(8, 2);
    await dp.broadcastVariables(model);
    const optimizer = dp.wrapOptimizer(tf.train.sgd(0.1));
    const { x, y } = rows(500 + rank, 8 * 10, 8, 2);
    const losses = [];
    for (let step = 0; step < 10; step++) {
      const xb = x.slice([step * 8, 0], [8, 8]);
      const yb = y.slice([step * 8, 0], [8, 2]);
      const loss = optimizer.minimize(lossOf(model, xb, yb), true);
      losses.push(loss.dataSync()[0]);
      tf.dispose([xb, yb, loss]);
    }
    const finite = model.getWeights().every((w) => w.dataSync().every(Number.isFinite));
    return { losses, finite, digest: digest(model.getWeights()), reductions: dp.stats.reductions };
  },

  // tf.memory().numTensors does not grow between step 2 and step 200 (3 and 201 with accumulation), on every path.
  async leaks() {
    const out = {};
    for (const path of ['fit', 'minimize', 'minimizeAsync', 'fp16', 'topk', 'accumulation', 'localsgd']) {
      const dp = new DataParallel(comm, {
        bucketBytes: 2048,
        compression: path === 'fp16' ? 'fp16' : path === 'topk' ? () => new ErrorFeedback(createCompressor('topk', { ratio: 0.1 })) : 'none',
        accumulationSteps: path === 'accumulation' ? 3 : 1,
        localSgdSteps: path === 'localsgd' ? 4 : 0,
      });
      const model = mlp(6, 2);
      const optimizer = dp.wrapOptimizer(tf.train.adam(0.01));
      model.compile({ optimizer, loss: 'categoricalCrossentropy' });
      await dp.broadcastVariables(model);
      const { x, y } = rows(5 + rank, 16, 6, 2);
      const counts = {};
      // Adam makes its moment variables on its first update: count from there on.
      const first = path === 'accumulation' ? 3 : 2;
      for (let step = 1; step <= first + 198; step++) {
        if (path === 'fit') await model.trainOnBatch(x, y);
        else if (path === 'minimizeAsync') await optimizer.minimizeAsync(lossOf(model, x, y));
        else optimizer.minimize(lossOf(model, x, y));
        if (step === first || step === first + 198) counts[step === first ? 'early' : 'late'] = tf.memory().numTensors;
      }
      out[path] = counts;
      tf.dispose([x, y]);
    }
    return out;
  },

  // Metric averaging and optimizer-state broadcast.
  async state() {
    const dp = new DataParallel(comm);
    const metrics = await dp.averageMetrics({ loss: rank + 1, acc: rank === 0 ? 1 : 0, ignored: 'text' });
    const model = mlp(5, 2);
    const adam = tf.train.adam(0.05);
    const { x, y } = rows(900 + rank, 8, 5, 2);
    // Only rank 0 steps, so its Adam has moments and an iteration count the others lack.
    if (rank === 0) for (let i = 0; i < 3; i++) adam.minimize(lossOf(model, x, y));
    await dp.broadcastVariables(adam);
    const weights = await adam.getWeights();
    return { metrics, optimizer: digest(weights.map((w) => w.tensor)), count: weights.length, iterations: adam.iterations };
  },

  // The warm-up callback: the learning rate seen at each batch inside model.fit.
  async warmup() {
    const dp = new DataParallel(comm);
    const model = mlp(4, 2);
    const optimizer = dp.wrapOptimizer(tf.train.sgd(0.1 * size));
    model.compile({ optimizer, loss: 'categoricalCrossentropy' });
    const { x, y } = rows(40 + rank, 8, 4, 2);
    const seen = [];
    await model.fit(x, y, {
      epochs: 3,
      batchSize: 4,
      verbose: 0,
      callbacks: [
        ...dataParallelCallbacks(dp, model, { warmup: { optimizer, warmupEpochs: 2, stepsPerEpoch: 2 } }),
        { onBatchBegin: () => void seen.push(optimizer.learningRate) },
      ],
    });
    return { seen };
  },
  // Secure aggregation: the masked sum against the plain sum of the same fixed-point values,
  // what one rank puts on the wire (a chi-square on its bytes), values beyond the range.
  // DP-SGD through privateGradients: clipping bounds each example (exactly), the noise summed
  // over ranks has std noiseMultiplier x clipNorm (with and without secure aggregation), and
  // every rank gets the same bits.
  async privacy() {
    const out = {};
    // Clipping, no noise: loss = sum over the microbatch of x . w, so a microbatch's gradient is
    // the sum of its rows; rank r's rows differ, some far above the clip norm.
    const w = tf.variable(tf.zeros([3]), true, `dp-w-${rank}`);
    const rowsOf = (r) => [[3 * (r + 1), 4 * (r + 1), 0], [0.1, 0.2, 0.2], [0, 0, 10 + r], [-0.3, 0, 0.4]];
    const linear = (x) => tf.sum(tf.mul(x, w));
    for (const microbatchSize of [1, 2]) {
      const dp = new DataParallel(comm, { privacy: { clipNorm: 1, noiseMultiplier: 0, microbatchSize } });
      const x = tf.tensor2d(rowsOf(rank));
      const step = dp.privateGradientsSync(linear, x, x, { variables: [w] });
      const got = Array.from(step.grads[w.name].dataSync());
      // The expectation in doubles from every rank's rows.
      const expected = [0, 0, 0];
      for (let r = 0; r < size; r++) {
        const rows = rowsOf(r);
        for (let b = 0; b < rows.length; b += microbatchSize) {
          const g = [0, 1, 2].map((k) => rows.slice(b, b + microbatchSize).reduce((s, row) => s + row[k], 0));
          const norm = Math.hypot(...g);
          const scale = Math.min(1, 1 / norm);
          g.forEach((v, k) => (expected[k] += (v * scale) / ((rows.length / microbatchSize) * size)));
        }
      }
      out[`clip${microbatchSize}`] = { got, expected, clipped: step.clipped, microbatches: step.microbatches, digest: digest([step.grads[w.name]]) };
      tf.dispose([x, step.grads[w.name]]);
    }
    // Noise: the loss ignores the variable (zero gradients), so what comes back is the noise over
    // the global number of microbatches: variance (sigma C)^2 / (n m)^2.
    const n = 200_000;
    const v = tf.variable(tf.zeros([n]), true, `dp-v-${rank}`);
    for (const secureAggregation of [false, true]) {
      const dp = new DataParallel(comm, { privacy: { clipNorm: 0.5, noiseMultiplier: 1.5, secureAggregation } });
      const x = tf.zeros([2, 1]);
      const step = await dp.privateGradients((xm) => tf.sum(tf.mul(tf.sum(v), tf.zeros([]))).add(tf.sum(xm)), x, x, { variables: [v], expectedRows: 2 });
      const values = step.grads[v.name].dataSync();
      let sum = 0;
      let squares = 0;
      for (const value of values) {
        sum += value;
        squares += value * value;
      }
      const mean = sum / n;
      out[secureAggregation ? 'noiseSecure' : 'noise'] = {
        mean,
        variance: squares / n - mean * mean,
        expectedVariance: (1.5 * 0.5) ** 2 / (2 * size) ** 2,
        digest: digest([step.grads[v.name]]),
        epsilon: dp.differentialPrivacy.epsilon(0.01).epsilon,
        steps: dp.differentialPrivacy.steps,
      };
      tf.dispose([x, step.grads[v.name]]);
    }
    return out;
  },

  // Pipeline parallelism: an MLP, a small CNN and a residual (functional) MLP split over the ranks
  // train, under GPipe and 1F1B, to the weights one process gets on the same batches (plain SGD),
  // with the same losses.
  async pipeline() {
    const out = {};
    const builders = {
      mlp: () =>
        tf.sequential({
          layers: [
            tf.layers.dense({ inputShape: [12], units: 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
            tf.layers.dense({ units: 16, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
            tf.layers.dense({ units: 8, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }),
            tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }),
          ],
        }),
      cnn: () =>
        tf.sequential({
          layers: [
            tf.layers.conv2d({ inputShape: [6, 6, 1], filters: 4, kernelSize: 3, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 5 }) }),
            tf.layers.flatten(),
            tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 6 }) }),
          ],
        }),
      // A functional model with two residual blocks: stages are cut only where one tensor passes.
      residual: () => {
        const dense = (units, activation, seed) => tf.layers.dense({ units, activation, kernelInitializer: tf.initializers.glorotUniform({ seed }) });
        const input = tf.input({ shape: [12] });
        const a = dense(16, 'relu', 7).apply(input);
        const c = tf.layers.add().apply([a, dense(16, 'tanh', 8).apply(a)]);
        const d = dense(8, 'relu', 9).apply(c);
        const f = tf.layers.add().apply([d, dense(8, 'tanh', 10).apply(d)]);
        return tf.model({ inputs: input, outputs: dense(3, 'softmax', 11).apply(f) });
      },
    };
    const crossEntropy = (y, p) => tf.mean(tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(p, 1e-7, 1 - 1e-7))), -1)));
    for (const kind of ['mlp', 'cnn', 'residual']) {
      const data = rows(21, 16 * 5, kind === 'cnn' ? 36 : 12, 3);
      const x = kind === 'cnn' ? data.x.reshape([16 * 5, 6, 6, 1]) : data.x;
      for (const schedule of ['gpipe', '1f1b']) {
        const reference = builders[kind]();
        const plain = tf.train.sgd(0.5);
        const model = builders[kind]();
        const pipe = new PipelineParallel(comm, model, { optimizer: tf.train.sgd(0.5), loss: 'categoricalCrossentropy', microBatches: 4, schedule });
        const losses = [];
        const referenceLosses = [];
        for (let step = 0; step < 5; step++) {
          const xb = x.slice(step * 16, 16);
          const yb = data.y.slice(step * 16, 16);
          losses.push(await pipe.trainStep(xb, yb));
          const cost = plain.minimize(() => crossEntropy(yb, reference.apply(xb)), true);
          referenceLosses.push(cost.dataSync()[0]);
          tf.dispose([xb, yb, cost]);
        }
        // This stage's layers against the same layers of the one-process model.
        const [begin, end] = pipe.ranges[pipe.stage];
        const diff = maxAbsDiff(reference.layers.slice(begin, end).flatMap((l) => l.getWeights()), pipe.layers.flatMap((l) => l.getWeights()));
        const predicted = await pipe.predict(x.slice(0, 10));
        const expected = reference.predict(x.slice(0, 10));
        const predictDiff = Math.max(...Array.from(predicted.dataSync(), (v, k) => Math.abs(v - expected.dataSync()[k])));
        // The whole model assembled on rank 0 predicts as the pipeline does.
        const gathered = await pipe.gatherWeights();
        let assembledDiff = 0;
        if (rank === 0) {
          const full = builders[kind]();
          full.setWeights(gathered);
          const a = full.predict(x.slice(0, 10)).dataSync();
          assembledDiff = Math.max(...Array.from(predicted.dataSync(), (v, k) => Math.abs(v - a[k])));
        }
        out[`${kind}-${schedule}`] = {
          assembledDiff,
          diff,
          predictDiff,
          losses,
          lossDiff: Math.max(...losses.map((l, k) => Math.abs(l - referenceLosses[k]))),
          maxStashed: pipe.stats.maxStashed,
          layers: end - begin,
          tensorsAfter: tf.memory().numTensors,
        };
      }
    }
    return out;
  },

  // 4 ranks = 2 pipelines x 2 stages: each stage's gradients averaged over its 2 replicas, each
  // pipeline on its own 16 rows: one process on the 32 rows gets the same weights.
  async 'pipeline-replicas'() {
    const replica = Math.floor(rank / 2);
    const pipelineComm = await comm.split(replica, rank % 2);
    const stageComm = await comm.split(rank % 2, replica);
    const build = () =>
      tf.sequential({
        layers: [
          tf.layers.dense({ inputShape: [12], units: 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
          tf.layers.dense({ units: 8, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
          tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }),
        ],
      });
    const crossEntropy = (y, p) => tf.mean(tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(p, 1e-7, 1 - 1e-7))), -1)));
    const data = rows(23, 32 * 4, 12, 3);
    const reference = build();
    const plain = tf.train.sgd(0.5);
    const pipe = new PipelineParallel(pipelineComm, build(), { optimizer: tf.train.sgd(0.5), loss: 'categoricalCrossentropy', microBatches: 2, replicas: new DataParallel(stageComm) });
    const lossDiffs = [];
    for (let step = 0; step < 4; step++) {
      const xb = data.x.slice(step * 32 + replica * 16, 16);
      const yb = data.y.slice(step * 32 + replica * 16, 16);
      const loss = await pipe.trainStep(xb, yb);
      const all = [data.x.slice(step * 32, 32), data.y.slice(step * 32, 32)];
      const cost = plain.minimize(() => crossEntropy(all[1], reference.apply(all[0])), true);
      lossDiffs.push(Math.abs(loss - cost.dataSync()[0]));
      tf.dispose([xb, yb, ...all, cost]);
    }
    const [begin, end] = pipe.ranges[pipe.stage];
    const diff = maxAbsDiff(reference.layers.slice(begin, end).flatMap((l) => l.getWeights()), pipe.layers.flatMap((l) => l.getWeights()));
    const weights = digest(pipe.layers.flatMap((l) => l.getWeights()));
    await pipelineComm.close();
    await stageComm.close();
    return { stage: pipe.stage, replica, diff, lossDiff: Math.max(...lossDiffs), weights };
  },

  // A synchronous parameter server (SERVERS of the ranks serve): the workers' weights after each
  // step are bitwise identical, and after 5 steps equal one process's on all the workers' rows.
  async 'ps-sync'() {
    const servers = Number(process.env.SERVERS ?? 1);
    const workers = size - servers;
    const B = 8;
    const data = rows(31, B * workers * 5, 12, 3);
    const model = mlp(12, 3);
    const variables = model.trainableWeights.map((w) => w.read());
    const ps = new ParameterServer(comm, variables, { servers, optimizer: tf.train.sgd(0.5) });
    await ps.init();
    const reference = mlp(12, 3);
    reference.setWeights(model.getWeights());
    const digests = [];
    if (ps.isServer) {
      await ps.serve();
    } else {
      for (let step = 0; step < 5; step++) {
        const start = (step * workers + ps.index) * B;
        const [x, y] = [all(data.x, start, B), all(data.y, start, B)];
        const { value, grads } = tf.variableGrads(lossOf(model, x, y), variables);
        await ps.push(grads);
        digests.push(digest(variables));
        tf.dispose([x, y, value, ...Object.values(grads)]);
      }
      await ps.finish();
    }
    await ps.pullAll();
    const plain = tf.train.sgd(0.5);
    for (let step = 0; step < 5; step++) {
      const [x, y] = [all(data.x, step * workers * B, workers * B), all(data.y, step * workers * B, workers * B)];
      plain.minimize(lossOf(reference, x, y));
      tf.dispose([x, y]);
    }
    return { isServer: ps.isServer, digests, diff: maxAbsDiff(model.getWeights(), reference.getWeights()), pushes: ps.stats.pushes };
  },

  // An asynchronous parameter server with one slow worker: with staleness 2 no answer goes to a
  // worker more than 2 steps ahead of the slowest; without a bound the fast one runs ahead.
  async 'ps-async'() {
    const out = {};
    for (const staleness of [2, undefined]) {
      const model = mlp(12, 3);
      const variables = model.trainableWeights.map((w) => w.read());
      const ps = new ParameterServer(comm, variables, { servers: 1, optimizer: tf.train.sgd(0.2), mode: 'async', staleness });
      await ps.init();
      // Learnable: the class is the largest of the first three features.
      const x = rows(41, 8 * 20, 12, 3).x;
      const data = { x, y: tf.oneHot(tf.argMax(x.slice([0, 0], [8 * 20, 3]), 1), 3).toFloat() };
      const losses = [];
      if (ps.isServer) {
        await ps.serve();
      } else {
        for (let step = 0; step < 20; step++) {
          if (ps.index === 1) await new Promise((resolve) => setTimeout(resolve, 40));
          const [x, y] = [all(data.x, step * 8, 8), all(data.y, step * 8, 8)];
          const { value, grads } = tf.variableGrads(lossOf(model, x, y), variables);
          losses.push(value.dataSync()[0]);
          await ps.push(grads);
          tf.dispose([x, y, value, ...Object.values(grads)]);
        }
        await ps.finish();
      }
      await ps.pullAll();
      out[staleness === undefined ? 'unbounded' : `staleness${staleness}`] = { stats: ps.stats, first: losses.slice(0, 3), last: losses.slice(-3), weights: digest(model.getWeights()) };
    }
    return out;
  },

  async secure() {
    // Three of the shared-memory all-reduce's chunks (131,072 words each), the last one short.
    const n = 300_007;
    const scale = 2 ** 16;
    const valuesOf = (r) => {
      const next = seededRandom(1000 + r);
      return Float32Array.from({ length: n }, () => (next() * 2 - 1) * 3);
    };
    // MIXED: odd ranks mask with the native kernel (fused into the all-reduce), even ranks in
    // JavaScript (not fused): the masks must still cancel, and the two kinds of op still meet.
    const agg = new SecureAggregator(comm, { scale, ...(process.env.MIXED ? { kernel: rank % 2 ? 'native' : 'js' } : {}) });
    const unfused = new SecureAggregator(comm, { scale, fuse: false });
    // The exact expectation, from every rank's values (each rank can make them all here).
    const fixedSum = new Int32Array(n);
    for (let r = 0; r < size; r++) valuesOf(r).forEach((v, i) => (fixedSum[i] += Math.floor(v * scale + 0.5)));
    const mine = valuesOf(rank);
    const summed = await agg.allReduce(Float32Array.from(mine));
    const summedUnfused = await unfused.allReduce(Float32Array.from(mine));
    const expected = Float32Array.from(fixedSum, (q) => q / scale);
    const plain = Int32Array.from(mine, (v) => Math.floor(v * scale + 0.5));
    await comm.allReduce(plain, { op: 'sum' });
    const averaged = agg.allReduceSync(Float32Array.from(mine), { op: 'avg' });
    // A late rank: the others' awaited op waits past its arrival budget and goes on on the engine
    // thread, with copies of the values (an ordinary ArrayBuffer).
    if (rank === size - 1) await new Promise((resolve) => setTimeout(resolve, 200));
    const late = await agg.allReduce(Float32Array.from(mine));
    // Fewer words than ranks: some ranks' shares of the one chunk are empty.
    let smallExact = true;
    for (const length of [1, 2, 3, 5]) {
      const got = await agg.allReduce(Float32Array.from(mine.subarray(0, length)));
      smallExact &&= got.every((v, i) => v === expected[i]);
    }
    const chi2 = (bytes) => {
      const counts = new Float64Array(256);
      for (const b of bytes) counts[b]++;
      const e = bytes.length / 256;
      return counts.reduce((acc, c) => acc + ((c - e) * (c - e)) / e, 0);
    };
    // The worst case for a mask: every value the same. What goes on the wire, and what would without masks.
    const constant = new Float32Array(250_000).fill(0.5);
    const masked = agg.mask(constant);
    const unmasked = Int32Array.from(constant, (v) => Math.floor(v * scale + 0.5));
    const errors = [];
    for (const bad of [1e9, Number.NaN]) {
      const x = Float32Array.from(mine);
      if (rank === size - 1) x[7] = bad;
      try {
        await agg.allReduce(x);
        errors.push('no error');
      } catch (err) {
        errors.push(`${err.code}: ${err.message}`);
      }
    }
    // After the refused steps the masks still cancel.
    const again = await agg.allReduce(Float32Array.from(mine));
    return {
      fused: agg.fused,
      exact: summed.every((v, i) => v === expected[i]),
      unfusedExact: summedUnfused.every((v, i) => v === expected[i]),
      lateExact: late.every((v, i) => v === expected[i]),
      smallExact,
      plainEqual: plain.every((q, i) => q === fixedSum[i]),
      averageExact: averaged.every((v, i) => v === Math.fround(fixedSum[i] / (scale * size))),
      againExact: again.every((v, i) => v === expected[i]),
      digest: digest([tf.tensor(summed)]),
      chi2Masked: chi2(new Uint8Array(masked.buffer)),
      chi2Unmasked: chi2(new Uint8Array(unmasked.buffer)),
      errors,
    };
  },
};

await runScenario(comm, outDir, scenario, scenarios);
