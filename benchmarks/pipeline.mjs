// Pipeline parallelism (issue 15): the bubble and the memory per rank. An MLP of 8 equal dense
// layers split over the ranks `braid run` starts (one stage each), trained with GPipe and 1F1B at
// several micro-batch counts. Per stage: the share of each step spent waiting to receive (the
// bubble, with the transfers), against GPipe's ideal bubble (S-1)/(M+S-1); the weights and the
// most activations a stage holds, against one process holding the whole model.
//   node benchmarks/pipeline.mjs [--np 3] [--width 512] [--batch 64] [--micro 1,2,4,8] [--steps 6] [--json out.json]
import { writeFileSync } from 'node:fs';

import { commandLine, median, runUnderBraid } from './common.mjs';

const { opt } = commandLine();
runUnderBraid(import.meta.url, opt);

const { init } = await import('@braid/collectives');
const { PipelineParallel } = await import('@braid/strategies');
const tf = await import('@tensorflow/tfjs');

tf.enableProdMode();
const comm = await init();
const width = Number(opt('--width', '512'));
const batch = Number(opt('--batch', '64'));
const steps = Number(opt('--steps', '6'));
const micros = opt('--micro', '1,2,4,8').split(',').map(Number);
const LAYERS = 8;

const build = () =>
  tf.sequential({
    layers: Array.from({ length: LAYERS }, (_, i) =>
      tf.layers.dense({ ...(i === 0 ? { inputShape: [width] } : {}), units: i === LAYERS - 1 ? 10 : width, activation: i === LAYERS - 1 ? 'softmax' : 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: i }) }),
    ),
  });
const x = tf.randomNormal([batch, width], 0, 1, 'float32', 1);
const y = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 10), 'int32'), 10).toFloat();

// One process holding the whole model: its weights' bytes.
const whole = build();
const wholeBytes = whole.countParams() * 4;
whole.dispose();

const rows = [];
for (const schedule of ['gpipe', '1f1b']) {
  for (const micro of micros) {
    const pipe = new PipelineParallel(comm, build(), { optimizer: tf.train.sgd(0.01), loss: 'categoricalCrossentropy', microBatches: micro, schedule });
    const stageBytes = pipe.layers.reduce((n, l) => n + l.countParams() * 4, 0);
    await pipe.trainStep(x, y); // warm-up
    const shares = [];
    for (let s = 0; s < steps; s++) {
      const before = { wait: pipe.stats.waitingMs, step: pipe.stats.stepMs };
      await pipe.trainStep(x, y);
      shares.push((pipe.stats.waitingMs - before.wait) / (pipe.stats.stepMs - before.step));
    }
    const mine = Float64Array.of(median(shares), pipe.stats.maxStashed, stageBytes, pipe.stats.stepMs / pipe.stats.steps);
    const all = await comm.allGather(mine);
    rows.push({ schedule, micro, ideal: (comm.size - 1) / (micro + comm.size - 1), stages: Array.from({ length: comm.size }, (_, s) => ({ waitShare: all[s * 4], maxStashed: all[s * 4 + 1], weightBytes: all[s * 4 + 2], stepMs: all[s * 4 + 3] })) });
    pipe.layers.forEach((l) => l.dispose());
  }
}
if (comm.rank === 0) {
  console.log(`pipeline: ${comm.size} stages, ${LAYERS} dense layers of ${width}, batch ${batch}; medians of ${steps} steps`);
  console.log(`weights: one process ${(wholeBytes / 1e6).toFixed(2)} MB; per stage ${rows[0].stages.map((s) => (s.weightBytes / 1e6).toFixed(2)).join(' / ')} MB`);
  console.log('schedule  M   ideal bubble  waiting share per stage        most stashed per stage  step ms');
  for (const r of rows) {
    console.log(
      `${r.schedule.padEnd(8)} ${String(r.micro).padStart(2)}   ${r.ideal.toFixed(3).padStart(12)}  ${r.stages.map((s) => s.waitShare.toFixed(3)).join(' ').padEnd(30)} ${r.stages.map((s) => s.maxStashed).join(' ').padEnd(23)} ${r.stages[0].stepMs.toFixed(1)}`,
    );
  }
  const json = opt('--json', undefined);
  if (json) writeFileSync(json, JSON.stringify({ stages: comm.size, width, batch, wholeBytes, rows }, null, 1));
}
await comm.close();
