// The demo: MNIST with a multi-layer perceptron, trained data-parallel on every rank started by
// `braid run -np N` (or mpirun). Rank 0 shows progress and prints the test accuracy.
//
//   braid run -np 2 examples/mnist/mlp.mjs [--epochs 5] [--batch 32] [--checkpoint-dir ckpt] [--json result.json]
//        [--commit-every steps] [--checkpoint-on-every-host]
//        [--optimizer momentum|adam] [--compression none|fp16|bf16|topk|randomk|qsgd|int8|sign|powersgd]
//        [--compression-warmup steps] [--dense-below elements]
//        [--dp-epsilon 8 [--dp-clip 1] [--dp-microbatch 1] [--dp-delta 1e-5] [--secure-aggregation]] [--train-rows N]
//        [--backend auto|node|cpu] [--hidden 128] [--parameter-server sync|async [--servers 1] [--staleness s]]
// --hidden gives the hidden layers' widths (e.g. 2048,512: 2.7M parameters, for the
// communication-bound training benchmark).
// --backend node trains on native TensorFlow (tfjs-node, built by `braid setup tfjs-node`), cpu on
// tfjs's pure-JS backend; auto (the default) takes tfjs-node when it loads.
// topk and randomk keep 1% of each weight tensor, qsgd uses 127 levels, powersgd rank 4 on
// each weight matrix; those and int8 and sign run with error feedback.
// --parameter-server trains through a parameter server instead of DataParallel: the first
// --servers ranks hold the weights in shards and apply the optimizer, the others are workers
// (sync: the servers average every worker's step; async: each push is applied as it comes,
// --staleness bounding how far a worker may run ahead of the slowest).
// --dp-epsilon trains with DP-SGD: every example's gradient clipped to --dp-clip, Gaussian noise
// whose multiplier the accountant picks so that the whole run spends that epsilon at --dp-delta.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { init } from '@braid/collectives';
import { createCompressor, ErrorFeedback } from '@braid/compression';
import { DataParallel, noiseMultiplierFor, ParameterServer, scaleLearningRate } from '@braid/strategies';
import { fit, selectBackend } from '@braid/trainer';
import * as tf from '@tensorflow/tfjs';

import { loadMnist, subset } from './data.mjs';

const { values: args } = parseArgs({
  options: {
    epochs: { type: 'string', default: '5' },
    batch: { type: 'string', default: '32' },
    compression: { type: 'string', default: 'none' },
    'compression-warmup': { type: 'string', default: '0' },
    'dense-below': { type: 'string', default: '1024' },
    optimizer: { type: 'string', default: 'momentum' },
    'checkpoint-dir': { type: 'string' },
    'commit-every': { type: 'string' },
    'checkpoint-on-every-host': { type: 'boolean', default: false },
    json: { type: 'string' },
    seed: { type: 'string', default: '1' },
    'dp-epsilon': { type: 'string' },
    'dp-clip': { type: 'string', default: '1' },
    'dp-microbatch': { type: 'string', default: '1' },
    'dp-delta': { type: 'string', default: '1e-5' },
    'secure-aggregation': { type: 'boolean', default: false },
    lr: { type: 'string' },
    'train-rows': { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    hidden: { type: 'string', default: '128' },
    'parameter-server': { type: 'string' },
    servers: { type: 'string', default: '1' },
    staleness: { type: 'string' },
  },
});
if (args['parameter-server'] !== undefined && !['sync', 'async'].includes(args['parameter-server'])) {
  throw new Error(`--parameter-server takes sync or async; got ${args['parameter-server']}`);
}

// Before any tensor: native TensorFlow with this rank's share of the cores, or pure JS.
const backend = await selectBackend({ backend: args.backend });

tf.enableProdMode(); // quiet tfjs's "install tfjs-node" banner on every rank
const comm = await init();
// One compressor per weight tensor, as PowerSGD and GRACE do; tensors under 1,024 values (the
// biases) go uncompressed in the fused buckets: they are a rounding error of the bytes.
const compression = ['none', 'fp16', 'bf16'].includes(args.compression)
  ? args.compression
  : ({ shape, size }) => {
      if (size < Number(args['dense-below'])) return undefined;
      const options = { ratio: 0.01, levels: 127, rank: 4, seed: 7, shape: [shape[0], size / shape[0]] };
      return new ErrorFeedback(createCompressor(args.compression, options));
    };
const { train: allTrain, test } = loadMnist(tf);
const train = subset(tf, allTrain, Number(args['train-rows'] ?? 0));
const epochs = Number(args.epochs);
const batch = Number(args.batch);
let privacy;
if (args['dp-epsilon'] !== undefined) {
  // The run's steps at sampling rate q = global batch / rows: the noise that spends exactly epsilon.
  const rows = train.x.shape[0];
  const samplingRate = (batch * comm.size) / rows;
  const steps = epochs * Math.ceil(Math.ceil(rows / comm.size) / batch);
  const delta = Number(args['dp-delta']);
  const noiseMultiplier = noiseMultiplierFor({ targetEpsilon: Number(args['dp-epsilon']), samplingRate, steps, delta });
  privacy = { clipNorm: Number(args['dp-clip']), noiseMultiplier, microbatchSize: Number(args['dp-microbatch']), delta };
  if (comm.rank === 0) console.log(`DP-SGD: clip ${privacy.clipNorm}, noise multiplier ${noiseMultiplier.toFixed(3)} for epsilon ${args['dp-epsilon']} at delta ${delta} (${steps} steps, q = ${samplingRate.toFixed(4)})`);
}
if (args['secure-aggregation']) privacy = { ...privacy, secureAggregation: true };
const dp = new DataParallel(comm, { compression, compressionWarmupSteps: Number(args['compression-warmup']), privacy });
const seed = Number(args.seed);

const hidden = args.hidden.split(',').map(Number);
if (hidden.some((units) => !Number.isInteger(units) || units < 1)) throw new Error(`--hidden takes layer widths, e.g. 128 or 2048,512; got ${args.hidden}`);
const model = tf.sequential({
  layers: [
    // Seeded initial weights (rank 0's are broadcast anyway): the same run gives the same accuracy.
    ...hidden.map((units, i) => tf.layers.dense({ ...(i === 0 ? { inputShape: [784] } : {}), units, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + i }) })),
    tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + hidden.length }) }),
  ],
});
// SGD with momentum 0.9 (what DGC and PowerSGD were designed with: top-k with error feedback
// under Adam lost 2.1 points here, under momentum 0.3), or --optimizer adam. Linear scaling
// rule: the global batch is size x batch, so the rate is size x the base rate.
const baseRate = args.lr === undefined ? (args.optimizer === 'momentum' ? 0.02 : 1e-3) : Number(args.lr);
const makeOptimizer = (rate) => (args.optimizer === 'momentum' ? tf.train.momentum(rate, 0.9) : tf.train.adam(rate));
let strategy = dp;
if (args['parameter-server']) {
  // The servers apply the optimizer: sync to the workers' mean (the linear scaling rule over the
  // workers), async to each worker's push as it comes (the base rate).
  const servers = Number(args.servers);
  const workers = comm.size - servers;
  const rate = args['parameter-server'] === 'sync' ? scaleLearningRate(baseRate, workers) : baseRate;
  model.compile({ optimizer: tf.train.sgd(0), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  strategy = new ParameterServer(comm, model.trainableWeights.map((w) => w.read()), {
    servers,
    optimizer: makeOptimizer(rate),
    mode: args['parameter-server'],
    ...(args.staleness === undefined ? {} : { staleness: Number(args.staleness) }),
  });
} else {
  model.compile({ optimizer: dp.wrapOptimizer(makeOptimizer(scaleLearningRate(baseRate, comm.size))), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
}

if (comm.rank === 0) {
  const how = strategy === dp ? `compression ${args.compression}` : `parameter server (${args['parameter-server']}, ${strategy.servers} server(s), ${strategy.workers} worker(s))`;
  console.log(`MNIST MLP 784-${hidden.join('-')}-10 (${model.countParams()} parameters): ${comm.size} rank(s), ${train.x.shape[0]} training and ${test.x.shape[0]} test digits, batch ${args.batch} per rank, ${how}`);
  const threads = backend.threads ? `, ${backend.threads.intraOp} thread(s) per rank` : '';
  console.log(`backend: ${backend.backend} (${backend.package}${threads})${backend.fallback ? `: ${backend.fallback}` : ''}`);
}
// When each epoch ended (seconds since the first step) and what it reached: time to accuracy.
const timeline = [];
let started;
const result = await fit(model, train, {
  callbacks: {
    onTrainBegin: () => {
      started = performance.now();
    },
    onEpochEnd: (epoch, logs) => {
      timeline.push({ epoch: epoch + 1, seconds: (performance.now() - started) / 1000, val_acc: logs.val_acc, loss: logs.loss });
    },
  },
  epochs,
  batchSize: batch,
  strategy,
  seed,
  validationData: test,
  checkpointDir: args['checkpoint-dir'],
  // Under braid run --elastic: a restart goes on from the last commit (steps lost: fewer than this).
  commitEvery: args['commit-every'] === undefined ? undefined : Number(args['commit-every']),
  checkpointOnEveryHost: args['checkpoint-on-every-host'],
});

const accuracy = result.history.val_acc.at(-1);
if (comm.rank === 0) {
  const communication = strategy === dp ? 'all-reduce' : 'push and pull';
  console.log(`${result.samplesPerSecond.toFixed(0)} samples/s over ${comm.size} rank(s); ${(100 * result.communicationShare).toFixed(1)}% of the time in ${communication}`);
  if (privacy?.clipNorm) console.log(`privacy spent: epsilon ${result.history.epsilon.at(-1).toFixed(2)} at delta ${privacy.delta}`);
  console.log(`test accuracy: ${accuracy.toFixed(4)}`);
  if (args.json) {
    const summary = { size: comm.size, compression: args.compression, parameterServer: args['parameter-server'] ?? null, backend: backend.backend, parameters: model.countParams(), accuracy, timeline, stats: { ...dp.stats }, ...result };
    writeFileSync(args.json, JSON.stringify(summary, null, 1));
  }
}
await comm.close();
