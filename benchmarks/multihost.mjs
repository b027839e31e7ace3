#!/usr/bin/env node
// The multi-host benchmark, on the test bed (scripts/cluster.sh: hosts made of network
// namespaces on this machine; needs root). In one run, side by side:
//   - the peer: plain TCP between two hosts (an 8-byte ping-pong, one stream, two opposite streams),
//   - 2 hosts x 1 rank, unshaped: every all-reduce algorithm through @braid/collectives beside
//     MPI_Allreduce (Open MPI, same placement) called from C,
//   - the steady-state agreement across hosts: what it adds to an op (4-byte allReduceSync on the
//     caller's thread, with it and without it, BRAID_NEGOTIATION=off) beside the one-way latency,
//   - 2 hosts x 2 ranks, unshaped and with every host's link shaped to 1 Gbit/s (tc tbf),
//   - the cost model checked: in each configuration (unshaped, 1 Gbit/s and, without --quick,
//     100 Mbit/s) `braid calibrate` measures a profile and each algorithm's predicted all-reduce
//     time is set beside the measured one (allReduceSync, 64 KiB up; unshaped, without --quick,
//     three turns of calibration and measurement, each side's median compared).
// Prints nccl-tests columns per configuration, the ratios the targets are stated in, and writes
// results/multihost.json and results/multihost.svg (+ .png): busbw against size per algorithm.
//   node benchmarks/multihost.mjs [--quick] [--max-bytes 67108864] [--rate 1gbit]
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BRAID_VERSION, readProfile } from '@braid/collectives';
import { buildDir, loadAddon } from '@braid/native';

import { renderChart } from './plot.mjs';
import { commandLine, median } from './common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const { args, opt } = commandLine();
const quick = args.includes('--quick');
const maxBytes = Number(opt('--max-bytes', quick ? 16 * 2 ** 20 : 64 * 2 ** 20));
const rate = opt('--rate', '1gbit');
const rateBytesPerSecond = parseRate(rate);
const seconds = quick ? '0.15' : '0.3';
const rounds = quick ? '3' : '5';
const resultsDir = join(here, 'results');
mkdirSync(resultsDir, { recursive: true });
const cluster = join(root, 'scripts', 'cluster.sh');
const name = 'braid-bench';
const subnet = '10.79';
const clusterEnv = { ...process.env, BRAID_CLUSTER_NAME: name, BRAID_CLUSTER_SUBNET: subnet };

function parseRate(text) {
  const m = /^(\d+(?:\.\d+)?)(k|m|g)bit$/i.exec(text);
  if (!m) throw new Error(`--rate takes tc's form, e.g. 1gbit or 100mbit; got ${text}`);
  return (Number(m[1]) * { k: 1e3, m: 1e6, g: 1e9 }[m[2].toLowerCase()]) / 8;
}

function sh(argv, options = {}) {
  const r = spawnSync(argv[0], argv.slice(1), { env: clusterEnv, encoding: 'utf8', ...options });
  if (r.status !== 0) {
    console.error(`benchmark failed: ${argv.join(' ')} exited with ${r.status ?? r.signal}\n${r.stderr ?? ''}`);
    sh(['bash', cluster, 'down'], { stdio: 'ignore' });
    process.exit(1);
  }
  return r.stdout;
}

function up(shaping) {
  spawnSync('bash', [cluster, 'down'], { env: clusterEnv, stdio: 'ignore' });
  sh(['bash', cluster, 'up', '2', ...shaping], { stdio: ['ignore', 'inherit', 'inherit'] });
}

// mpirun on h0 placing `perHost` ranks on each of the two hosts.
function mpirun(perHost, argv, env = {}) {
  const agent = sh(['bash', cluster, 'agent']).trim();
  const cidr = `${subnet}.0.0/24`;
  const exported = Object.entries(env).flatMap(([k, v]) => ['-x', `${k}=${v}`]);
  // 4 ranks on this 2-core machine: MPI must yield while it waits (Open MPI cannot tell, since
  // each host's daemon sees 2 cores for its 2 ranks), or its polling starves the other ranks.
  const yieldMca = perHost > 1 ? ['--mca', 'mpi_yield_when_idle', '1'] : [];
  const full = ['mpirun', '-np', String(2 * perHost), '-H', `h0:${perHost},h1:${perHost}`, '--mca', 'plm_rsh_agent', agent,
    '--mca', 'oob_tcp_if_include', cidr, '--mca', 'btl_tcp_if_include', cidr, ...yieldMca, ...exported, ...argv];
  console.log(`\n$ ${full.join(' ')}`);
  sh(['bash', cluster, 'exec', 'h0', 'env', 'OMPI_ALLOW_RUN_AS_ROOT=1', 'OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1', ...full], {
    stdio: ['ignore', 'inherit', 'inherit'],
    cwd: root,
  });
}

// `profile`: a profile file the ranks load (BRAID_PROFILE), as a user who calibrated runs.
function allreduce(label, perHost, algorithms, minBytes, largest = maxBytes, profile = undefined) {
  const out = join(resultsDir, `multihost-${label}.json`);
  mpirun(perHost, [process.execPath, join(here, 'allreduce-worker.mjs'), '--algorithms', algorithms.join(','), '--min-bytes', String(minBytes),
    '--max-bytes', String(Math.min(largest, maxBytes)), '--seconds-per-size', seconds, '--rounds', rounds, '--spread-rounds', '--json', out], profile ? { BRAID_PROFILE: profile } : {});
  return JSON.parse(readFileSync(out, 'utf8'));
}

const MPI_C = 'MPI_Allreduce(C)';

// The profile's numbers with the measured curves the model interpolates, and its file.
function calibrate(label, perHost) {
  const out = join(resultsDir, `multihost-profile-${label}.json`);
  mpirun(perHost, [join(buildDir, 'braid_calibrate'), '--out', out, '--braid-version', BRAID_VERSION, '--seconds', quick ? '0.5' : '1']);
  return Object.assign(readProfile(out), { file: out });
}

// Each measured row beside the model's prediction with the configuration's profile. With several
// turns (calibration and measurement taking turns), each row's predicted time is the median of
// the turns' profiles' predictions and its measured time the median of the turns' runs.
const addon = loadAddon();
function validate(config, runs, profiles, perHost) {
  runs = [runs].flat();
  profiles = [profiles].flat();
  const rows = [];
  for (const [i, r] of runs[0].results.entries()) {
    const algorithm = r.algorithm.replace(/-sync$/, '');
    if (!['ring', 'recursive-doubling', 'tree', 'hierarchical', 'direct'].includes(algorithm) || !r.algorithm.endsWith('-sync')) continue;
    const predictions = profiles.map((profile) =>
      addon.predict({ algorithm, ranks: 2 * perHost, hosts: 2, perHost, hierarchy: perHost > 1, directCarriesAgreement: true, bytes: r.bytes, profile: profile.numbers }));
    const measured = runs.map((run) => run.results[i].timeUs);
    const predictedUs = median(predictions);
    const measuredUs = median(measured);
    const row = { configuration: config, algorithm, bytes: r.bytes, measuredUs, predictedUs, ratio: predictedUs / measuredUs };
    if (runs.length > 1) Object.assign(row, { measuredUsByTurn: measured, predictedUsByTurn: predictions });
    rows.push(row);
  }
  return rows;
}
const summary = { rate, configurations: {} };

const probe = spawnSync('bash', [cluster, 'status'], { env: clusterEnv, encoding: 'utf8' });
if (probe.status !== 0 || process.getuid?.() !== 0) {
  console.error('benchmark needs root and network namespaces (scripts/cluster.sh): run it as root on Linux');
  process.exit(1);
}

// --- unshaped -----------------------------------------------------------------------------------
up([]);
const peerJson = join(resultsDir, 'multihost-tcp-peer.json');
mpirun(1, [join(buildDir, 'braid_tcp_streams_bench'), '--seconds', quick ? '1' : '2', '--json', peerJson]);
summary.peer = JSON.parse(readFileSync(peerJson, 'utf8'));

summary.configurations['2x1 unshaped'] = allreduce('2x1', 1, [MPI_C, 'auto-sync', 'auto', 'auto-shared', 'ring', 'recursive-doubling'], 64 * 1024);

// Steady-state agreement: rank 0's timeline of back-to-back 4-byte allReduceSync calls, the direct
// all-reduce (one exchange) on the caller's thread, with the agreement (its descriptor rides in
// front of the data) and without it (BRAID_NEGOTIATION=off: the same exchange, data alone); the
// runs take turns 3 times and the medians of each side's runs are compared.
{
  const trace = join(resultsDir, 'multihost-agreement-trace.json');
  const opTimes = { on: [], off: [] };
  for (let turn = 0; turn < 3; turn++) {
    for (const negotiation of ['on', 'off']) {
      rmSync(trace, { force: true });
      mpirun(1, [process.execPath, '--input-type=module', '-e', `
        const { init } = await import('@braid/collectives');
        const comm = await init();
        const one = new Float32Array(1);
        for (let i = 0; i < 6000; i++) comm.allReduceSync(one, { algorithm: 'direct' });
        await comm.close();`], { BRAID_TIMELINE: trace, BRAID_NEGOTIATION: negotiation });
      const ops = JSON.parse(readFileSync(trace, 'utf8')).filter((e) => e.cat === 'op' && e.name.startsWith('allReduce') && e.args?.thread === 'caller');
      opTimes[negotiation].push(median(ops.slice(1000).map((e) => e.dur)));
    }
  }
  const withUs = median(opTimes.on);
  const withoutUs = median(opTimes.off);
  summary.agreement = { opUs: withUs, withoutAgreementUs: withoutUs, agreementUs: withUs - withoutUs, runs: opTimes, oneWayLatencyUs: summary.peer.roundTripUs / 2 };
}

summary.configurations['2x2 unshaped'] = allreduce('2x2', 2, [MPI_C, 'auto-sync', 'auto', 'auto-shared', 'hierarchical', 'ring'], 64 * 1024);

const SYNC = ['ring-sync', 'recursive-doubling-sync'];
// The direct all-reduce sends the whole buffer to every other rank: for small messages (auto takes
// it up to 64 KiB at most, where its buffers ride on the agreement), validated up to 1 MiB.
const DIRECT_MAX = 1 << 20;
summary.validation = [];
{
  // Each placement measured as it runs: on this 2-core machine 4 ranks share the cores of both
  // "hosts". Unshaped, the machine's own speed drifts (an exchange runs at half speed for
  // seconds at a time, often enough that one calibration or one run can land in it), so the
  // calibrations and the measured runs take turns and each side's median is compared. Each run
  // loads its turn's profile: the engine reads it too (whether the hierarchical all-reduce
  // pipelines, its network step), so the prediction is of what runs. Without it the runs took
  // the pipelined hierarchical all-reduce that the profile had ruled out, 1.3-1.6x slower from
  // 2 MiB up on the test bed.
  const turns = quick ? 1 : 3;
  const suffix = (turn) => (turn === 0 ? '' : `-turn${turn + 1}`);
  const sides = { alone: [], both: [], run1: [], direct1: [], run2: [], direct2: [] };
  for (let turn = 0; turn < turns; turn++) {
    const alone = calibrate(`unshaped-2x1${suffix(turn)}`, 1);
    sides.alone.push(alone);
    sides.run1.push(allreduce(`2x1-model${suffix(turn)}`, 1, SYNC, 64 * 1024, maxBytes, alone.file));
    sides.direct1.push(allreduce(`2x1-direct${suffix(turn)}`, 1, ['direct-sync'], 64 * 1024, DIRECT_MAX, alone.file));
    const both = calibrate(`unshaped-2x2${suffix(turn)}`, 2);
    sides.both.push(both);
    sides.run2.push(allreduce(`2x2-model${suffix(turn)}`, 2, [...SYNC, 'hierarchical-sync'], 64 * 1024, maxBytes, both.file));
    sides.direct2.push(allreduce(`2x2-direct${suffix(turn)}`, 2, ['direct-sync'], 64 * 1024, DIRECT_MAX, both.file));
  }
  summary.profiles = { 'unshaped 2x1': sides.alone[0], 'unshaped 2x2': sides.both[0] };
  summary.unshapedTurns = turns;
  summary.validation.push(...validate('2x1 unshaped', sides.run1, sides.alone, 1));
  summary.validation.push(...validate('2x1 unshaped', sides.direct1, sides.alone, 1));
  summary.validation.push(...validate('2x2 unshaped', sides.run2, sides.both, 2));
  summary.validation.push(...validate('2x2 unshaped', sides.direct2, sides.both, 2));
}

// --- shaped ---------------------------------------------------------------------------------------
up(['--rate', rate]);
summary.configurations[`2x2 at ${rate}`] = allreduce('2x2-shaped', 2, [MPI_C, 'auto-shared', 'hierarchical', 'ring'], 1 << 20);
{
  const profile = calibrate('shaped', 2);
  summary.profiles[rate] = profile;
  summary.validation.push(...validate(`2x2 at ${rate}`, allreduce('2x2-shaped-model', 2, [...SYNC, 'hierarchical-sync'], 64 * 1024, maxBytes, profile.file), profile, 2));
  summary.validation.push(...validate(`2x2 at ${rate}`, allreduce('2x2-shaped-direct', 2, ['direct-sync'], 64 * 1024, DIRECT_MAX, profile.file), profile, 2));
}
if (!quick) {
  const slow = '100mbit';
  up(['--rate', slow]);
  const profile = calibrate('100mbit', 2);
  summary.profiles[slow] = profile;
  summary.validation.push(...validate(`2x2 at ${slow}`, allreduce('2x2-100mbit-model', 2, [...SYNC, 'hierarchical-sync'], 64 * 1024, 16 * 2 ** 20, profile.file), profile, 2));
  summary.validation.push(...validate(`2x2 at ${slow}`, allreduce('2x2-100mbit-direct', 2, ['direct-sync'], 64 * 1024, DIRECT_MAX, profile.file), profile, 2));
}
spawnSync('bash', [cluster, 'down'], { env: clusterEnv, stdio: 'inherit' });

// --- the targets' ratios ------------------------------------------------------------------------
const rows = (config, algorithm) => summary.configurations[config].results.filter((r) => r.algorithm === algorithm);
const at = (config, algorithm, bytes) => rows(config, algorithm).find((r) => r.bytes === bytes);
const perDirection = summary.peer.perDirectionBytesPerSecond / 1e9;
const report = [];
const line = (text) => {
  report.push(text);
  console.log(text);
};
console.log('\n=== targets ===');
line(`plain TCP between the hosts: round trip ${summary.peer.roundTripUs.toFixed(1)} us, one stream ${(summary.peer.oneStreamBytesPerSecond / 1e9).toFixed(3)} GB/s, two opposite streams ${perDirection.toFixed(3)} GB/s each way`);
for (const algorithm of ['auto-sync', 'auto-shared', 'auto']) {
  for (const r of rows('2x1 unshaped', algorithm)) {
    const mpi = at('2x1 unshaped', MPI_C, r.bytes);
    const parts = [`2x1 unshaped ${algorithm.padEnd(11)} ${String(r.bytes).padStart(9)} B: ${(mpi.timeUs / r.timeUs).toFixed(2)}x MPI_Allreduce`];
    if (r.bytes >= 4 * 2 ** 20) parts.push(`busbw ${(r.busbw / perDirection).toFixed(2)}x the per-direction TCP rate`);
    line(parts.join(', '));
  }
}
const shaped = `2x2 at ${rate}`;
for (const algorithm of ['auto-shared', 'hierarchical']) {
  for (const r of rows(shaped, algorithm)) {
    if (r.bytes < 4 * 2 ** 20) continue;
    const bound = (r.bytes / rateBytesPerSecond) * 1e6; // 2(H-1)/H x bytes / rate, H = 2
    const mpi = at(shaped, MPI_C, r.bytes);
    line(`${shaped} ${algorithm.padEnd(12)} ${String(r.bytes).padStart(9)} B: ${(r.timeUs / bound).toFixed(3)}x the link's lower bound (${(bound / 1e3).toFixed(1)} ms), ${(mpi.timeUs / r.timeUs).toFixed(2)}x MPI_Allreduce`);
  }
}
const a = summary.agreement;
line(`agreement across hosts, steady state: ${a.agreementUs.toFixed(2)} us per op (4-byte direct allReduceSync ${a.opUs.toFixed(2)} us with it, ${a.withoutAgreementUs.toFixed(2)} us without), one-way latency ${a.oneWayLatencyUs.toFixed(1)} us`);
const within = summary.validation.filter((v) => Math.abs(v.ratio - 1) <= 0.2).length;
line(`cost model: ${within} of ${summary.validation.length} predictions within 20% of the measured time (64 KiB up; each configuration with its own calibrated profile; unshaped: medians of ${summary.unshapedTurns} turns of calibration and measurement)`);
for (const config of [...new Set(summary.validation.map((v) => v.configuration))]) {
  for (const algorithm of [...new Set(summary.validation.filter((v) => v.configuration === config).map((v) => v.algorithm))]) {
    const rowsHere = summary.validation.filter((v) => v.configuration === config && v.algorithm === algorithm);
    line(`  ${config} ${algorithm.padEnd(18)} predicted/measured: ${rowsHere.map((v) => v.ratio.toFixed(2)).join(' ')}`);
  }
}
summary.report = report;
writeFileSync(join(resultsDir, 'multihost.json'), JSON.stringify(summary, null, 1));

// --- the chart ----------------------------------------------------------------------------------
const points = Object.entries(summary.configurations).flatMap(([config, run]) =>
  run.results.map((r) => ({ configuration: config, algorithm: r.algorithm, bytes: r.bytes, busbw: r.busbw })),
);
const charts = await renderChart(
  {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Braid all-reduce across hosts (network namespaces on one machine)', subtitle: `float32 sum; plain TCP: ${perDirection.toFixed(2)} GB/s each way with two opposite streams; shaped: ${rate} per host` },
    data: { values: points },
    facet: { column: { field: 'configuration', type: 'nominal', title: null, sort: Object.keys(summary.configurations) } },
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: 320,
      height: 260,
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'bytes', type: 'quantitative', scale: { type: 'log', base: 2 }, title: 'message size (bytes)', axis: { format: '~s' } },
        y: { field: 'busbw', type: 'quantitative', title: 'busbw (GB/s)' },
        color: { field: 'algorithm', type: 'nominal' },
      },
    },
  },
  join(resultsDir, 'multihost.svg'),
);
const modelCharts = await renderChart(
  {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    // The subtitle in lines no wider than the plot: one long line widened the picture to its left.
    title: {
      text: 'Cost model: predicted against measured all-reduce time',
      anchor: 'start',
      subtitle: ['allReduceSync, 64 KiB up; each configuration with the profile', `braid calibrate measured there (unshaped: medians of ${summary.unshapedTurns} turns);`, 'the gray line is equality'],
    },
    width: 420,
    height: 420,
    layer: [
      {
        data: { values: [{ t: 10 }, { t: 1e7 }] },
        mark: { type: 'line', color: 'gray' },
        encoding: { x: { field: 't', type: 'quantitative', scale: { type: 'log' } }, y: { field: 't', type: 'quantitative', scale: { type: 'log' } } },
      },
      {
        data: { values: summary.validation },
        mark: { type: 'point', filled: true, size: 50 },
        encoding: {
          x: { field: 'measuredUs', type: 'quantitative', scale: { type: 'log' }, title: 'measured (us)' },
          y: { field: 'predictedUs', type: 'quantitative', scale: { type: 'log' }, title: 'predicted (us)' },
          color: { field: 'algorithm', type: 'nominal' },
          shape: { field: 'configuration', type: 'nominal' },
        },
      },
    ],
  },
  join(resultsDir, 'multihost-model.svg'),
);
console.log(`\nwrote ${join(resultsDir, 'multihost.json')} and ${[...charts, ...modelCharts].map((c) => c.split('/').pop()).join(', ')}`);
