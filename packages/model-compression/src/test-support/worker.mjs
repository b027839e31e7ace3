// One rank of a multi-process model-compression test: `mpirun -np N node worker.mjs <scenario> <dir>`.
import { init } from '@braid/collectives';
import { DataParallel } from '@braid/strategies';
import { digest, runScenario, seededRandom } from '@braid/test-support/mpirun';
import { tf } from '@braid/test-support/tfjs';
import { fit } from '@braid/trainer';

import { constantSparsity, distillationLoss, MagnitudePruning, polynomialDecay } from '../../dist/index.js';

tf.enableProdMode();
const [scenario, outDir] = process.argv.slice(2);
const comm = await init();
const { rank } = comm;

function data(rows, seed) {
  const next = seededRandom(seed);
  const x = new Float32Array(rows * 6);
  const labels = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    labels[i] = Math.floor(next() * 3);
    for (let d = 0; d < 6; d++) x[i * 6 + d] = (d % 3 === labels[i] ? 1 : -0.5) + (next() - 0.5);
  }
  return { x: tf.tensor2d(x, [rows, 6]), y: tf.oneHot(tf.tensor1d(labels, 'int32'), 3).toFloat() };
}

function mlp(units, seed, optimizer) {
  const m = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [6], units, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
  m.compile({ optimizer, loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  return m;
}

const zeroPositions = (t) => Array.from(t.dataSync()).flatMap((v, i) => (v === 0 ? [i] : []));

const scenarios = {
  // Pruning under DataParallel: every rank ends with the same weights and the same zeros, checked
  // by the pruner itself at each mask update (comm given).
  async pruning() {
    const dp = new DataParallel(comm);
    const model = mlp(16, 1, dp.wrapOptimizer(tf.train.sgd(0.2)));
    const pruning = new MagnitudePruning(model, polynomialDecay({ finalSparsity: 0.8, endStep: 12, frequency: 3 }), { comm });
    const result = await fit(model, data(120, 3), { epochs: 3, batchSize: 8, strategy: dp, progress: 'none', callbacks: pruning.callbacks() });
    return { weights: digest(model.getWeights()), zeros: zeroPositions(model.weights[0].read()), summary: pruning.summary(), loss: result.history.loss };
  },

  // Ranks whose weights differ (no DataParallel) compute different masks: every rank is told.
  async divergent() {
    const model = mlp(16, 1 + rank, tf.train.sgd(0.1));
    const pruning = new MagnitudePruning(model, constantSparsity(0.5), { comm });
    try {
      pruning.step(0);
      return { error: null };
    } catch (err) {
      return { error: `${err.code}: ${err.message}` };
    }
  },

  // Distillation under DataParallel: each rank's teacher runs on that rank's rows only.
  async distillation() {
    const train = data(120, 4);
    const teacherDp = new DataParallel(comm);
    const teacher = mlp(32, 5, teacherDp.wrapOptimizer(tf.train.sgd(0.2)));
    await fit(teacher, train, { epochs: 4, batchSize: 8, strategy: teacherDp, progress: 'none' });
    const dp = new DataParallel(comm);
    const student = mlp(4, 9, dp.wrapOptimizer(tf.train.sgd(0.2)));
    const loss = distillationLoss({ teacher, temperature: 3, alpha: 0.2 });
    student.compile({ optimizer: student.optimizer, loss, metrics: ['accuracy'] });
    const rows = [];
    const result = await fit(student, train, { epochs: 3, batchSize: 8, strategy: dp, progress: 'none', callbacks: { onBatchEnd: (s) => void rows.push(s.rows.length) } });
    return { weights: digest(student.getWeights()), stats: loss.stats, steps: rows.length, loss: result.history.loss };
  },
};

await runScenario(comm, outDir, scenario, scenarios);
