#!/usr/bin/env node
// Training where communication matters: the demo's MLP widened to 784-2048-512-10 (2.7M
// parameters, 10.6 MB of gradients a step) on native TensorFlow (tfjs-node), data-parallel across
// the hosts of the namespace test bed (scripts/cluster.sh) with every host's link shaped to each
// of --rates. Per rate:
//   - samples/s at np=1 (one host), np=2 (2 hosts x 1 rank) and np=4 (2 hosts x 2), dense
//     gradients, of the MLP and of the seed's CNN (examples/mnist/cnn.mjs); scaling efficiency;
//     the share of a step in all-reduce; bytes on the wire per step (the hosts' eth0 transmit
//     counters, every byte of the job included);
//   - time to accuracy at np=2 for dense, fp16, top-k 1% + error feedback and PowerSGD rank 4 +
//     error feedback: the wall time at which each first reaches the dense run's final test
//     accuracy less 1 point, and a plot of accuracy against wall time;
//   - overlap at np=2: the model's gradients averaged blocking (read, then reduce) and
//     asynchronously (bucket i on the wire while bucket i+1 is read out of TensorFlow): the share
//     of the communication the asynchronous path hides.
// Writes results/training-network.json and results/training-network.svg (+ .png). Root only.
//   node benchmarks/training-network.mjs [--rates 1gbit,100mbit] [--epochs 6] [--batch 64] [--hidden 2048,512] [--quick]
//   node benchmarks/training-network.mjs --replot   (the chart again from results/training-network.json)
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { tfjsNode } from '../packages/test-support/backend.mjs';
import { createHosts, netnsUnavailable } from '../packages/test-support/netns.mjs';
import { commandLine } from './common.mjs';
import { renderChart } from './plot.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const { args, opt } = commandLine();
const quick = args.includes('--quick');
const rates = opt('--rates', '1gbit,100mbit').split(',');
const epochs = opt('--epochs', quick ? '2' : '6');
const batch = opt('--batch', '64');
const hidden = opt('--hidden', '2048,512');
const scalingRows = quick ? '1024' : '4096';
const compressions = ['none', 'fp16', 'topk', 'powersgd'];
const resultsDir = join(here, 'results');
mkdirSync(resultsDir, { recursive: true });
const braid = join(root, 'packages', 'trainer', 'dist', 'cli.js');
const mlp = join(root, 'examples', 'mnist', 'mlp.mjs');
const worker = join(here, 'training-worker.mjs');
const cnn = join(root, 'examples', 'mnist', 'cnn.mjs');

if (args.includes('--replot')) {
  const saved = JSON.parse(readFileSync(join(resultsDir, 'training-network.json'), 'utf8'));
  const charts = await renderChart(accuracyChart(saved), join(resultsDir, 'training-network.svg'));
  console.log(`wrote ${charts.map((c) => c.split('/').pop()).join(', ')}`);
  process.exit(0);
}

const unavailable = netnsUnavailable();
if (unavailable) {
  console.error(`training-network: ${unavailable}`);
  process.exit(2);
}
if (!tfjsNode().available) {
  console.error(`training-network: ${tfjsNode().reason} (this benchmark trains on native TensorFlow)`);
  process.exit(2);
}

/** Bytes host i's eth0 has sent so far. */
function txBytes(hosts, i) {
  return Number(execFileSync('ip', ['netns', 'exec', `${hosts.name}-h${i}`, 'cat', '/sys/class/net/eth0/statistics/tx_bytes'], { encoding: 'utf8' }).trim());
}

/** One `braid run` of the MLP from h0 with `placement`; its summary and the bytes both hosts sent. */
function train(hosts, label, placement, np, extra, script = mlp) {
  const out = join(resultsDir, `training-network-${label}.json`);
  const before = [0, 1].map((i) => txBytes(hosts, i));
  const modelArgs = script === cnn ? [] : ['--hidden', hidden];
  const cmd = hosts.on(0, [process.execPath, braid, 'run', '-np', String(np), ...hosts.braidRunArgs(placement), script,
    '--backend', 'node', ...modelArgs, '--batch', batch, '--json', out, ...extra]);
  const started = performance.now();
  const r = spawnSync(cmd[0], cmd.slice(1), { cwd: root, encoding: 'utf8', env: { ...process.env, BRAID_PROGRESS: 'none' }, timeout: 1_800_000 });
  const seconds = (performance.now() - started) / 1000;
  if (r.status !== 0) {
    console.error(`benchmark failed: ${label} exited with ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`);
    hosts.destroy();
    process.exit(1);
  }
  const summary = JSON.parse(readFileSync(out, 'utf8'));
  const sent = [0, 1].map((i, k) => txBytes(hosts, i) - before[k]);
  return { ...summary, jobSeconds: seconds, wireBytesPerStep: summary.globalStep ? (sent[0] + sent[1]) / summary.globalStep : undefined, wireBytes: sent };
}

const summary = { model: `MNIST MLP 784-${hidden.replace(/,/g, '-')}-10 on tfjs-node, SGD with momentum, batch ${batch} per rank`, cores: availableParallelism(), epochs: Number(epochs), rates: {} };
for (const rate of rates) {
  const hosts = createHosts(2, { rate });
  try {
    const r = { scaling: {}, timeToAccuracy: {} };
    console.log(`\n== links shaped to ${rate}`);
    // Dense samples/s on a share of the rows (one epoch): np=1 on h0, np=2 across, np=4 2 x 2.
    for (const [np, placement] of [[1, 'h0:1'], [2, 'h0:1,h1:1'], [4, 'h0:2,h1:2']]) {
      const s = train(hosts, `${rate}-np${np}`, placement, np, ['--epochs', '1', '--train-rows', scalingRows]);
      r.scaling[`np${np}`] = { samplesPerSecond: s.samplesPerSecond, communicationShare: s.communicationShare, wireBytesPerStep: s.wireBytesPerStep, payloadBytesPerStep: s.stats.bytesReduced / s.globalStep, parameters: s.parameters };
      console.log(`np=${np} (${placement}): ${s.samplesPerSecond.toFixed(0)} samples/s, ${(100 * s.communicationShare).toFixed(1)}% of the time in all-reduce, ${(s.wireBytesPerStep / 2 ** 20).toFixed(2)} MiB on the wire per step`);
    }
    for (const np of [2, 4]) r.scaling[`np${np}`].efficiency = r.scaling[`np${np}`].samplesPerSecond / (np * r.scaling.np1.samplesPerSecond);
    // The seed's CNN (122K parameters, 0.47 MiB of gradients): compute, not the link, dominates.
    r.cnnScaling = {};
    for (const [np, placement] of [[1, 'h0:1'], [2, 'h0:1,h1:1'], [4, 'h0:2,h1:2']]) {
      const s = train(hosts, `${rate}-cnn-np${np}`, placement, np, ['--epochs', '1', '--train-rows', scalingRows, '--test-rows', '256'], cnn);
      r.cnnScaling[`np${np}`] = { samplesPerSecond: s.samplesPerSecond, communicationShare: s.communicationShare, wireBytesPerStep: s.wireBytesPerStep };
      console.log(`CNN np=${np} (${placement}): ${s.samplesPerSecond.toFixed(0)} samples/s, ${(100 * s.communicationShare).toFixed(1)}% of the time in all-reduce, ${(s.wireBytesPerStep / 2 ** 20).toFixed(2)} MiB on the wire per step`);
    }
    for (const np of [2, 4]) r.cnnScaling[`np${np}`].efficiency = r.cnnScaling[`np${np}`].samplesPerSecond / (np * r.cnnScaling.np1.samplesPerSecond);
    // Time to accuracy at np=2 across the two hosts.
    for (const compression of compressions) {
      const s = train(hosts, `${rate}-${compression}`, 'h0:1,h1:1', 2, ['--epochs', epochs, '--compression', compression]);
      r.timeToAccuracy[compression] = { accuracy: s.accuracy, timeline: s.timeline, samplesPerSecond: s.samplesPerSecond, communicationShare: s.communicationShare, wireBytesPerStep: s.wireBytesPerStep, payloadBytesPerStep: s.stats.bytesReduced / s.globalStep };
      console.log(`${compression}: test accuracy ${s.accuracy.toFixed(4)} after ${s.timeline.at(-1).seconds.toFixed(1)} s, ${s.samplesPerSecond.toFixed(0)} samples/s, ${(100 * s.communicationShare).toFixed(1)}% in all-reduce, ${(s.wireBytesPerStep / 2 ** 20).toFixed(3)} MiB on the wire per step`);
    }
    const o = train(hosts, `${rate}-overlap`, 'h0:1,h1:1', 2, ['--mode', 'overlap'], worker);
    r.overlap = { readMs: o.readMs, reduceMs: o.reduceMs, syncMs: o.syncMs, asyncMs: o.asyncMs, hiddenShare: o.hiddenShare, bucketBytes: o.bucketBytes };
    console.log(`overlap: reading the gradients ${o.readMs.toFixed(1)} ms, reducing them ${o.reduceMs.toFixed(1)} ms; blocking ${o.syncMs.toFixed(1)} ms, asynchronous ${o.asyncMs.toFixed(1)} ms: ${(100 * o.hiddenShare).toFixed(0)}% of the communication hidden`);
    const target = r.timeToAccuracy.none.accuracy - 0.01;
    r.target = target;
    for (const [compression, t] of Object.entries(r.timeToAccuracy)) {
      t.secondsToTarget = t.timeline.find((e) => e.val_acc >= target)?.seconds ?? null;
    }
    const dense = r.timeToAccuracy.none.secondsToTarget;
    for (const [compression, t] of Object.entries(r.timeToAccuracy)) {
      t.soonerThanDense = t.secondsToTarget === null ? null : dense / t.secondsToTarget;
      console.log(`  ${compression.padEnd(8)} reaches ${target.toFixed(4)} (dense's final accuracy less 1 point) ${t.secondsToTarget === null ? 'never in these epochs' : `after ${t.secondsToTarget.toFixed(1)} s: ${t.soonerThanDense.toFixed(2)}x sooner than dense`}`);
    }
    summary.rates[rate] = r;
  } finally {
    hosts.destroy();
  }
}

writeFileSync(join(resultsDir, 'training-network.json'), JSON.stringify(summary, null, 1));
const charts = await renderChart(accuracyChart(summary), join(resultsDir, 'training-network.svg'));
console.log(`\nwrote ${join(resultsDir, 'training-network.json')} and ${charts.map((c) => c.split('/').pop()).join(', ')}`);

// Test accuracy against wall time, one panel per link rate, one line per compressor.
function accuracyChart(s) {
  const names = { none: 'dense', fp16: 'fp16', topk: 'top-k 1% + EF', powersgd: 'PowerSGD r4 + EF' };
  const points = [];
  for (const [rate, r] of Object.entries(s.rates)) {
    for (const [compression, t] of Object.entries(r.timeToAccuracy)) {
      for (const e of t.timeline) points.push({ rate: `links at ${rate}`, compressor: names[compression], seconds: e.seconds, accuracy: e.val_acc });
    }
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `Time to accuracy across 2 hosts: ${s.model}`, subtitle: `np=2 (one rank per host), ${s.epochs} epochs of 8,500 MNIST digits; test accuracy after each epoch` },
    data: { values: points },
    facet: { column: { field: 'rate', type: 'nominal', title: null, sort: Object.keys(s.rates).map((rate) => `links at ${rate}`) } },
    resolve: { scale: { x: 'independent' } },
    spec: {
      width: 320,
      height: 240,
      mark: { type: 'line', point: true, clip: true },
      encoding: {
        x: { field: 'seconds', type: 'quantitative', title: 'wall time (s)' },
        y: { field: 'accuracy', type: 'quantitative', title: 'test accuracy', scale: { zero: false } },
        color: { field: 'compressor', type: 'nominal', sort: Object.values(names), title: null },
      },
    },
  };
}
