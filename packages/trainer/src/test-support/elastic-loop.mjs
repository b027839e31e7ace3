// One rank of the ElasticState tests: a custom loop (no fit) under `braid run --elastic` whose
// one weight per row counts how often each row was trained, so a restarted job's rows can be
// checked exactly.
//   elastic-loop.mjs <commitsDir> <outDir>
// Environment: EPOCHS (default 3), COMMIT_EVERY (steps, default 2), FAIL_AT_STEP (the first run's
// rank 1 exits with code 3 after that step), GROW_FILE + GROW_AT_STEP (rank 0 of the first run
// writes GROW_SLOTS into GROW_FILE at that step: the discovery script's answer grows), STEP_MS
// (a pause each step, so that the launcher sees the job running).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { init } from '@braid/collectives';
import { DataParallel } from '@braid/strategies';
import { tf } from '@braid/test-support/tfjs';

import { ElasticState, epochBatches } from '../../dist/index.js';

export const ROWS = 60;
const [dir, outDir] = process.argv.slice(2);
const attempt = Number(process.env.BRAID_ELASTIC ?? 0);
const epochs = Number(process.env.EPOCHS ?? 3);
const commitEvery = Number(process.env.COMMIT_EVERY ?? 2);
tf.enableProdMode();
const comm = await init();
const { rank, size } = comm;
const dp = new DataParallel(comm);
const counts = tf.variable(tf.zeros([ROWS]));
// The gradients are averaged over the ranks; a rate of `size` makes each step add, to each row's
// weight, the number of times the ranks trained it (small integers: exact in float32).
const optimizer = dp.wrapOptimizer(tf.train.sgd(size));
const state = new ElasticState(dp, { epoch: 0, position: 0, step: 0 }, { dir, variables: [counts], optimizer });
const resets = [];
state.onReset((info) => resets.push({ size: info.size, previousSize: info.previousSize, step: info.values.step }));
const restored = await state.restore();
const resumedAt = state.values.step;

while (state.values.epoch < epochs) {
  const batches = epochBatches({ rows: ROWS, rank, size, batchSize: 5, seed: 3, epoch: state.values.epoch, shuffle: true, startPosition: state.values.position });
  for (const rows of batches) {
    const onehot = tf.tidy(() => tf.oneHot(tf.tensor1d(rows, 'int32'), ROWS).sum(0));
    await optimizer.minimizeAsync(() => tf.neg(tf.sum(tf.mul(counts, onehot))), false, [counts]);
    onehot.dispose();
    state.values.step++;
    if (process.env.STEP_MS) await new Promise((resolve) => setTimeout(resolve, Number(process.env.STEP_MS)));
    state.values.position += rows.length * size;
    if (attempt === 1 && rank === 1 && state.values.step === Number(process.env.FAIL_AT_STEP)) process.exit(3);
    if (attempt === 1 && rank === 0 && state.values.step === Number(process.env.GROW_AT_STEP)) writeFileSync(process.env.GROW_FILE, process.env.GROW_SLOTS);
    if (state.values.step % commitEvery === 0 && state.values.position < ROWS) await state.commit();
  }
  state.values.epoch++;
  state.values.position = 0;
  await state.commit();
}
writeFileSync(join(outDir, `rank-${rank}.json`), JSON.stringify({ attempt, size, restored, resumedAt, resets, values: state.values, counts: Array.from(counts.dataSync()) }));
await comm.close();
