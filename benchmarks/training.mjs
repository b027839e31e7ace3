#!/usr/bin/env node
// The training benchmark: samples/s of the MNIST MLP (the demo's model) at np=1 and np=2, the
// scaling efficiency (side by side in one job, and in separate jobs), the share of a step spent in
// the gradient all-reduce, the machine's own two-process ceiling, and the bucket-size sweep
// behind DataParallel's default, on each backend: tfjs's pure-JS 'cpu' and native TensorFlow
// (tfjs-node, where `braid setup tfjs-node` built it). np=1 and np=2 runs alternate `--repeat`
// times (the VM's speed drifts) and the figures are medians. Writes results/training.json and
// results/training.svg.
// --bind-to core pins each rank to a core (braid run's --bind-to) and each of the two independent
// processes to a core of its own (taskset), so that the ceiling is measured as the job runs.
// The two independent processes start their timed steps together, as the ranks of a job do.
// Beside them, braid_lockstep_bench (C, fixed work of np=1's step time) gives the share of two
// independent processes that any job whose ranks wait for each other every step can expect here.
//   node benchmarks/training.mjs [--repeat 5] [--steps 150] [--warmup 20] [--batch 32] [--backends cpu,node] [--bind-to none|core] [--quick]
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { availableParallelism, tmpdir } from 'node:os';

import { buildDir } from '@braid/native';

import { tfjsNode } from '../packages/test-support/backend.mjs';
import { renderChart } from './plot.mjs';
import { commandLine, median } from './common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const { args, opt } = commandLine();
const quick = args.includes('--quick');
const repeat = Number(opt('--repeat', quick ? 1 : 5));
const steps = opt('--steps', quick ? '40' : '150');
const batch = opt('--batch', '32');
const warmup = opt('--warmup', '20');
const bindTo = opt('--bind-to', 'none');
if (!['none', 'core'].includes(bindTo)) {
  console.error(`--bind-to takes none or core; got ${bindTo}`);
  process.exit(2);
}
const resultsDir = join(here, 'results');
mkdirSync(resultsDir, { recursive: true });
const braid = join(root, 'packages', 'trainer', 'dist', 'cli.js');
const worker = join(here, 'training-worker.mjs');
const backends = opt('--backends', tfjsNode().available ? 'cpu,node' : 'cpu').split(',');
if (!tfjsNode().available && backends.includes('node')) {
  console.error(`--backends node: ${tfjsNode().reason}`);
  process.exit(2);
}

function job(np, extra) {
  const out = join(resultsDir, `training-np${np}.json`);
  const r = spawnSync(process.execPath, [braid, 'run', '-np', String(np), '--bind-to', bindTo, worker, ...extra, '--json', out], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) {
    console.error(`benchmark failed: braid run -np ${np} exited with ${r.status ?? r.signal}`);
    process.exit(1);
  }
  return JSON.parse(readFileSync(out, 'utf8'));
}

// Two independent single-process trainings at once (no MPI): what this machine gives two
// processes at all, the ceiling for any np=2 job here.
function twoAtOnce(backend) {
  const outs = [0, 1].map((i) => join(resultsDir, `training-independent-${i}.json`));
  // Each with the thread share a rank of an np=2 job gets.
  const env = { ...process.env, OMPI_COMM_WORLD_LOCAL_SIZE: '2' };
  // Their timed steps start together, as an np=2 job's do after its barrier: started unaligned,
  // 11-25% of each one's timed window ran while the other was still loading or warming up.
  const together = mkdtempSync(join(tmpdir(), 'braid-training-start-'));
  const command = (i, out) => {
    const run = [process.execPath, worker, '--backend', backend, '--steps', steps, '--warmup', warmup, '--batch', batch, '--json', out, '--start-together', together, '--group', '2'];
    return bindTo === 'core' ? ['taskset', '-c', String(i % availableParallelism()), ...run] : run;
  };
  const children = outs.map((out, i) => {
    const [cmd, ...rest] = command(i, out);
    return spawn(cmd, rest, { stdio: 'inherit', env });
  });
  return Promise.all(children.map((c) => new Promise((resolve) => c.on('close', resolve)))).then((codes) => {
    rmSync(together, { recursive: true, force: true });
    if (codes.some((c) => c !== 0)) {
      console.error('benchmark failed: an independent run exited with', codes);
      process.exit(1);
    }
    return outs.map((out) => JSON.parse(readFileSync(out, 'utf8')));
  });
}

async function measure(backend) {
  const runs = { 1: [], 2: [] };
  const ceilings = [];
  const togetherShares = [];
  for (let i = 0; i < repeat; i++) {
    for (const np of [1, 2]) {
      const r = job(np, ['--backend', backend, '--steps', steps, '--warmup', warmup, '--batch', batch]);
      runs[np].push(r);
      console.log(`${backend} run ${i + 1}/${repeat} np=${np}: ${r.samplesPerSecond.toFixed(0)} samples/s, step ${r.stepMs.toFixed(1)} ms, in all-reduce ${r.inAllReduceMs.toFixed(2)} ms, all-reduce alone ${r.allReduceAloneMs.toFixed(3)} ms`);
    }
    const both = await twoAtOnce(backend);
    const ceiling = (both[0].samplesPerSecond + both[1].samplesPerSecond) / (2 * runs[1][i].samplesPerSecond);
    ceilings.push(ceiling);
    // How much of each timed window the other process spent timing too.
    const [a, b] = both.map((r) => r.window);
    const common = Math.max(0, Math.min(a[1], b[1]) - Math.max(a[0], b[0]));
    const overlap = Math.min(common / (a[1] - a[0]), common / (b[1] - b[0]));
    togetherShares.push(overlap);
    console.log(`${backend} run ${i + 1}/${repeat} two independent processes: ${both.map((r) => r.samplesPerSecond.toFixed(0)).join(' + ')} samples/s (${(100 * ceiling).toFixed(1)}% of 2x the np=1 run; timed windows ${(100 * overlap).toFixed(0)}% together)`);
  }
  console.log(`\n${backend}: side by side in one job (rank 0 alone, both ranks apart, apart in lockstep, data-parallel, taking turns):`);
  // Short phases taking turns many times, pooled (time per sample summed over the rounds): a slow
  // spell of the VM weighs on every phase alike, where medians of long phases swung by 10 points.
  const pairedRounds = quick ? 4 : backend === 'cpu' ? 12 : 40;
  const pairedSteps = Math.max(10, Math.round(Number(steps) / 5));
  const paired = job(2, ['--mode', 'paired', '--backend', backend, '--steps', String(pairedSteps), '--warmup', warmup, '--batch', batch, '--rounds', String(pairedRounds)]);
  const perSample = (key) => paired.results.reduce((t, r) => t + 1 / r[key], 0);
  const side = { twiceSolo: perSample('soloSamplesPerSecond') / 2, apart: perSample('apartSamplesPerSecond'), lockstep: perSample('lockstepSamplesPerSecond'), both: perSample('dataParallelSamplesPerSecond') };
  const rate = (t) => (paired.results.length / t).toFixed(0);
  console.log(`  ${pairedRounds} rounds of ${pairedSteps} steps per phase, pooled: rank 0 alone ${rate(2 * side.twiceSolo)}, both apart ${rate(side.apart)}, apart in lockstep ${rate(side.lockstep)}, data-parallel ${rate(side.both)} samples/s`);
  // The machine's ceiling for any synchronous job: fixed work of np=1's step time, in C, the
  // ranks apart and then waiting for each other after every step (an MPI_Barrier), taking turns.
  const stepMs = median(runs[1].map((r) => r.stepMs));
  const lockstepJson = join(resultsDir, 'training-lockstep.json');
  const lockstepRun = spawnSync(process.execPath, [braid, 'run', '-np', '2', '--bind-to', bindTo, join(buildDir, 'braid_lockstep_bench'), '--step-ms', stepMs.toFixed(2), '--steps', '20', '--rounds', quick ? '20' : '60', '--json', lockstepJson], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (lockstepRun.status !== 0) {
    console.error(`benchmark failed: braid_lockstep_bench exited with ${lockstepRun.status ?? lockstepRun.signal}`);
    process.exit(1);
  }
  const lockstep = JSON.parse(readFileSync(lockstepJson, 'utf8'));
  // Efficiency per pair (np=1 and np=2 run back to back), then the median: pairs share the machine's mood.
  const efficiencies = runs[2].map((r, i) => r.samplesPerSecond / (2 * runs[1][i].samplesPerSecond));
  const summary = {
    backend: runs[1][0].backend,
    threadsPerRank: { np1: runs[1][0].threads, np2: runs[2][0].threads },
    repeat,
    steps: Number(steps),
    samplesPerSecond: { np1: median(runs[1].map((r) => r.samplesPerSecond)), np2: median(runs[2].map((r) => r.samplesPerSecond)) },
    // Headline: rank 0 alone vs both ranks data-parallel, alternating inside one job.
    scalingEfficiency: side.twiceSolo / side.both,
    pairedEfficiencies: paired.results.map((r) => r.efficiency),
    // Separate np=1 and np=2 jobs run back to back (more exposed to the machine's drift).
    separateJobsEfficiency: median(efficiencies),
    separateJobsEfficiencies: efficiencies,
    // Two independent processes at once vs one alone: the machine's own ceiling for two ranks.
    twoProcessCeiling: median(ceilings),
    twoProcessCeilings: ceilings,
    // The share of the longer of their two timed windows during which both were timing.
    twoProcessWindowsTogether: togetherShares,
    // The same ceiling side by side in one job: both ranks training apart (no communication)
    // between the data-parallel phases, and np=2 against it (pooled; then per round).
    sideBySideRounds: { rounds: pairedRounds, steps: pairedSteps },
    sideBySideCeiling: side.twiceSolo / side.apart,
    sideBySideAgainstCeiling: side.apart / side.both,
    sideBySideAgainstCeilings: paired.results.map((r) => r.againstCeiling),
    // Both ranks training apart but waiting for each other after every step: the share of the
    // ceiling a data-parallel job with a free all-reduce would get, and np=2 against that.
    sideBySideLockstep: side.apart / side.lockstep,
    sideBySideAgainstLockstep: side.lockstep / side.both,
    // Two ranks of fixed work in lockstep against the same two apart (braid_lockstep_bench).
    lockstepPeer: { stepMs: lockstep.stepMs, shareOfApart: lockstep.lockstepShareOfApart, ratios: lockstep.ratios },
    stepMs: { np1: median(runs[1].map((r) => r.stepMs)), np2: median(runs[2].map((r) => r.stepMs)) },
    // Time inside the all-reduce call, waiting for the slower rank included.
    allReduceShareOfStep: median([...runs[2], ...paired.results].map((r) => r.inAllReduceMs / r.stepMs)),
    // The same all-reduce alone (after a barrier): what moving the gradients costs.
    transferShareOfStep: median(runs[2].map((r) => r.allReduceAloneMs / r.stepMs)),
    gradientBytes: runs[2][0].gradientBytes,
    runs,
  };
  return summary;
}

const summary = { model: 'MNIST MLP 784-128-10, Adam, batch ' + batch + ' per rank', cores: availableParallelism(), repeat, steps: Number(steps), bindTo, backends: {} };
for (const backend of backends) {
  const s = await measure(backend);
  summary.backends[s.backend] = s;
}
console.log('\nbucket-size sweep (np=2, a 16 MiB gradient list of 64 tensors):');
const sweep = job(2, ['--mode', 'buckets']);
for (const row of sweep.rows) {
  console.log(`  ${String(row.bucketBytes >> 10).padStart(6)} KiB buckets (${String(row.calls).padStart(3)} calls): sync ${row.syncMs.toFixed(2)} ms, async ${row.asyncMs.toFixed(2)} ms`);
}
summary.bucketSweep = sweep;

for (const [name, b] of Object.entries(summary.backends)) {
  console.log(`\n${name} backend (${b.threadsPerRank.np1 ?? '-'} TensorFlow thread(s) at np=1, ${b.threadsPerRank.np2 ?? '-'} per rank at np=2):`);
  console.log(`  samples/s: np=1 ${b.samplesPerSecond.np1.toFixed(0)}, np=2 ${b.samplesPerSecond.np2.toFixed(0)}`);
  console.log(`  scaling efficiency at np=2, side by side in one job: ${(100 * b.scalingEfficiency).toFixed(1)}% (${b.sideBySideRounds.rounds} rounds of ${b.sideBySideRounds.steps} steps, pooled)`);
  console.log(`  scaling efficiency at np=2, separate jobs: ${(100 * b.separateJobsEfficiency).toFixed(1)}% (pairs: ${b.separateJobsEfficiencies.map((e) => (100 * e).toFixed(1)).join(', ')})`);
  console.log(`  two independent processes at once reach ${(100 * b.twoProcessCeiling).toFixed(1)}% of twice one alone (the machine's ceiling for 2 ranks); np=2 reaches ${(100 * b.separateJobsEfficiency / b.twoProcessCeiling).toFixed(1)}% of that ceiling`);
  console.log(`  side by side in one job, both ranks training apart reach ${(100 * b.sideBySideCeiling).toFixed(1)}% of twice rank 0 alone; np=2 reaches ${(100 * b.sideBySideAgainstCeiling).toFixed(1)}% of that`);
  console.log(`  side by side, the ranks training apart but waiting for each other after every step reach ${(100 * b.sideBySideLockstep).toFixed(1)}% of apart; np=2 data-parallel reaches ${(100 * b.sideBySideAgainstLockstep).toFixed(1)}% of that lockstep`);
  console.log(`  a C job of ${b.lockstepPeer.stepMs.toFixed(1)} ms steps of fixed work, its ranks waiting for each other after every step, reaches ${(100 * b.lockstepPeer.shareOfApart).toFixed(1)}% of the same ranks working apart (${b.lockstepPeer.ratios.length} rounds of 20 steps each way, pooled): the share of the two-process ceiling a synchronous np=2 job can expect on this machine`);
  console.log(`  share of a step in the gradient all-reduce (waiting included): ${(100 * b.allReduceShareOfStep).toFixed(1)}%`);
  console.log(`  share of a step moving the gradients (${(b.gradientBytes / 1024).toFixed(0)} KiB, all-reduce alone): ${(100 * b.transferShareOfStep).toFixed(2)}%`);
}
const [cpu, native] = [summary.backends.cpu, summary.backends.tensorflow];
if (cpu && native) {
  summary.nativeSpeedup = { np1: native.samplesPerSecond.np1 / cpu.samplesPerSecond.np1, np2: native.samplesPerSecond.np2 / cpu.samplesPerSecond.np2 };
  console.log(`\ntfjs-node against the pure-JS backend: ${summary.nativeSpeedup.np1.toFixed(1)}x at np=1, ${summary.nativeSpeedup.np2.toFixed(1)}x at np=2`);
}
writeFileSync(join(resultsDir, 'training.json'), JSON.stringify(summary, null, 1));
const charts = await renderChart(trainingChart(summary), join(resultsDir, 'training.svg'));
console.log(`wrote ${join(resultsDir, 'training.json')} and ${charts.map((c) => c.split('/').pop()).join(', ')}`);

// Per backend: samples/s at np=1, np=2, two independent processes and twice np=1, and the np=2
// step's split between compute and all-reduce.
function trainingChart(summary) {
  const rates = [];
  const step = [];
  for (const [backend, b] of Object.entries(summary.backends)) {
    const independent = b.twoProcessCeiling * 2 * b.samplesPerSecond.np1;
    const lockstep = b.lockstepPeer.shareOfApart * independent;
    for (const [run, samplesPerSecond] of [['np=1', b.samplesPerSecond.np1], ['np=2', b.samplesPerSecond.np2], ['2 in lockstep (C)', lockstep], ['2 processes, no MPI', independent], ['2 x np=1', 2 * b.samplesPerSecond.np1]]) {
      rates.push({ backend, run, samplesPerSecond });
    }
    step.push({ backend, part: 'compute', share: 1 - b.allReduceShareOfStep }, { backend, part: 'all-reduce', share: b.allReduceShareOfStep });
  }
  const runs = ['np=1', 'np=2', '2 in lockstep (C)', '2 processes, no MPI', '2 x np=1'];
  const efficiencies = Object.entries(summary.backends).map(
    ([backend, b]) => `${backend}: scaling efficiency at np=2 ${(100 * b.separateJobsEfficiency).toFixed(0)}%, ${(100 * b.separateJobsEfficiency / b.twoProcessCeiling).toFixed(0)}% of the two-process ceiling, where a C job in lockstep gets ${(100 * b.lockstepPeer.shareOfApart).toFixed(0)}%`,
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: `Braid data-parallel training: ${summary.model}`,
      subtitle: [`medians of ${summary.repeat} alternating runs on ${summary.cores} cores`, ...efficiencies],
    },
    resolve: { scale: { color: 'independent' } },
    hconcat: [
      {
        data: { values: rates },
        facet: { column: { field: 'backend', type: 'nominal', title: 'tfjs backend' } },
        resolve: { scale: { y: 'independent' } },
        spec: {
          width: 220,
          height: 240,
          layer: [
            { mark: 'bar', encoding: { x: { field: 'run', type: 'nominal', sort: runs, title: null, axis: { labelAngle: -30 } }, y: { field: 'samplesPerSecond', type: 'quantitative', title: 'samples/s' }, color: { field: 'run', type: 'nominal', sort: runs, legend: null } } },
            { mark: { type: 'text', dy: -6 }, encoding: { x: { field: 'run', type: 'nominal', sort: runs }, y: { field: 'samplesPerSecond', type: 'quantitative' }, text: { field: 'samplesPerSecond', type: 'quantitative', format: '.0f' } } },
          ],
        },
      },
      {
        data: { values: step },
        width: 70,
        height: 240,
        title: 'np=2 step time',
        mark: 'bar',
        encoding: {
          x: { field: 'backend', type: 'nominal', title: null, axis: { labelAngle: -30 } },
          y: { field: 'share', type: 'quantitative', axis: { format: '%' }, title: 'share of a step' },
          color: { field: 'part', type: 'nominal', scale: { domain: ['compute', 'all-reduce'], range: ['#59a14f', '#e15759'] }, title: null },
        },
      },
    ],
  };
}
