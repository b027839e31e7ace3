// `braid plan`: what a data-parallel step would cost on a cluster that may not exist yet. Per
// all-reduce algorithm and gradient compressor: the predicted all-reduce time per step (the
// engine's cost model, native/src/algorithms/cost_model.h, through the addon), the bytes each
// rank sends, and the scaling efficiency compute / (compute + transfer + communication), where
// transfer is copying the gradients into and out of the all-reduce buffer.
import { existsSync, readFileSync } from 'node:fs';

import { readProfile } from '@braid/collectives';
import type { ProfileNumbers } from '@braid/native';

import { UsageError } from './launch.js';

export const PLAN_USAGE = `usage: braid plan (--params N | --model model.json) --hosts H --ranks-per-host R --link RATE[,LATENCY]
                  [--compression none|fp16|topk:RATIO]... [--profile profile.json] [--step-compute-ms T] [--json]
  Predicts, per all-reduce algorithm and gradient compressor, the all-reduce time of one training
  step's gradients (float32), the bytes each rank sends, and the scaling efficiency, from an
  alpha-beta model per link: RATE as tc writes it (10gbit, 100mbit), LATENCY one way (50us, 1ms;
  default 50us). --profile (from braid calibrate) gives the other links' numbers (shared memory,
  reduction speed); --link replaces its network. --compression may be given several times
  (default: none, fp16 and topk:0.01).`;

export interface PlanArgs {
  params: number;
  hosts: number;
  ranksPerHost: number;
  rateBytesPerSecond: number;
  latencyUs: number;
  compressions: string[];
  profile?: string;
  stepComputeMs: number;
  json: boolean;
}

export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(k|m|g|t)?bit(?:\/s)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`--link: a rate as tc writes it (e.g. 10gbit, 100mbit); got ${JSON.stringify(text)}`);
  const scale = { k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[(m[2] ?? '').toLowerCase() as 'k'] ?? 1;
  return (Number(m[1]) * scale) / 8;
}

export function parseLatency(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(us|ms|s)$/i.exec(text.trim());
  if (!m) throw new UsageError(`--link: a one-way latency such as 50us or 1ms; got ${JSON.stringify(text)}`);
  return Number(m[1]) * { us: 1, ms: 1e3, s: 1e6 }[m[2]!.toLowerCase() as 'us'];
}

/** Parameters of a TensorFlow.js model.json (the weights manifest's shapes). */
export function countParameters(path: string): number {
  if (!existsSync(path)) throw new UsageError(`--model: ${path} does not exist`);
  let model: { weightsManifest?: Array<{ weights?: Array<{ shape?: number[] }> }> };
  try {
    model = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UsageError(`--model: ${path} is not JSON (${(err as Error).message})`);
  }
  const weights = (model.weightsManifest ?? []).flatMap((group) => group.weights ?? []);
  if (weights.length === 0) throw new UsageError(`--model: ${path} has no weightsManifest; give a TensorFlow.js model.json (model.save('file://...')) or --params N`);
  return weights.reduce((sum, w) => sum + (w.shape ?? []).reduce((p, d) => p * d, 1), 0);
}

export function parsePlanArgs(argv: string[]): PlanArgs {
  const args: Partial<PlanArgs> & { compressions: string[] } = { compressions: [], stepComputeMs: 100, json: false };
  let model: string | undefined;
  let link: string | undefined;
  const value = (i: number, flag: string) => {
    const v = argv[i + 1];
    if (v === undefined) throw new UsageError(`${flag} needs a value\n${PLAN_USAGE}`);
    return v;
  };
  const positiveInt = (flag: string, raw: string) => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer; got ${JSON.stringify(raw)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === '--params') args.params = positiveInt(flag, value(i++, flag));
    else if (flag === '--model') model = value(i++, flag);
    else if (flag === '--hosts') args.hosts = positiveInt(flag, value(i++, flag));
    else if (flag === '--ranks-per-host') args.ranksPerHost = positiveInt(flag, value(i++, flag));
    else if (flag === '--link') link = value(i++, flag);
    else if (flag === '--compression') args.compressions.push(value(i++, flag));
    else if (flag === '--profile') args.profile = value(i++, flag);
    else if (flag === '--step-compute-ms') {
      const raw = value(i++, flag);
      const ms = Number(raw);
      if (!Number.isFinite(ms) || ms < 0) throw new UsageError(`--step-compute-ms must be a number of milliseconds >= 0; got ${JSON.stringify(raw)}`);
      args.stepComputeMs = ms;
    } else if (flag === '--json') args.json = true;
    else throw new UsageError(`unknown option ${flag}\n${PLAN_USAGE}`);
  }
  if ((args.params === undefined) === (model === undefined)) throw new UsageError(`give the model's size: --params N or --model model.json (one of them)\n${PLAN_USAGE}`);
  if (model !== undefined) args.params = countParameters(model);
  if (args.hosts === undefined || args.ranksPerHost === undefined) throw new UsageError(`give --hosts H and --ranks-per-host R\n${PLAN_USAGE}`);
  if (link === undefined) throw new UsageError(`give the network: --link RATE[,LATENCY], e.g. --link 10gbit,50us\n${PLAN_USAGE}`);
  const [rate, latency] = link.split(',');
  args.rateBytesPerSecond = parseRate(rate!);
  args.latencyUs = latency === undefined ? 50 : parseLatency(latency);
  if (args.compressions.length === 0) args.compressions = ['none', 'fp16', 'topk:0.01'];
  for (const c of args.compressions) compressionWire(c, 1);
  return args as PlanArgs;
}

/** How a compressor sends a gradient of `params` float32 values: an all-reduce of `bytes`, or an all-gather of `bytes` per rank. */
export function compressionWire(name: string, params: number): { collective: 'allReduce' | 'allGather'; bytes: number } {
  if (name === 'none') return { collective: 'allReduce', bytes: 4 * params };
  if (name === 'fp16') return { collective: 'allReduce', bytes: 2 * params };
  const topk = /^topk:(\d*\.?\d+)$/.exec(name);
  if (topk) {
    const ratio = Number(topk[1]);
    if (!(ratio > 0 && ratio <= 1)) throw new UsageError(`--compression topk:RATIO takes a ratio in (0, 1]; got ${JSON.stringify(name)}`);
    // Each rank's k largest values with their indices (float32 + int32), gathered by every rank.
    return { collective: 'allGather', bytes: 8 * Math.max(1, Math.ceil(ratio * params)) };
  }
  throw new UsageError(`--compression takes none, fp16 or topk:RATIO (e.g. topk:0.01); got ${JSON.stringify(name)}`);
}

export interface PlanRow {
  algorithm: string;
  compression: string;
  collective: 'allReduce' | 'allGather';
  bytes: number;
  wireBytesPerRank: number;
  communicationMs: number;
  transferMs: number;
  stepMs: number;
  scalingEfficiency: number;
}

type Predict = (query: Parameters<import('@braid/native').Addon['predict']>[0]) => number;

export function planRows(args: PlanArgs, numbers: ProfileNumbers, predict: Predict): PlanRow[] {
  const hosts = args.hosts;
  const perHost = args.ranksPerHost;
  const ranks = hosts * perHost;
  // Across hosts the data goes over Braid's TCP transport, where the direct all-reduce carries the agreement.
  const topology = { ranks, hosts, perHost, sharedMemory: hosts === 1 && perHost > 1, hierarchy: hosts > 1 && perHost > 1, directCarriesAgreement: hosts > 1 };
  type ModelAlgorithm = 'ring' | 'recursive-doubling' | 'tree' | 'direct' | 'shm' | 'hierarchical';
  const algorithms: ModelAlgorithm[] = ['ring', 'recursive-doubling', 'tree', 'direct', ...(topology.sharedMemory ? ['shm' as const] : []), ...(topology.hierarchy ? ['hierarchical' as const] : [])];
  const rows: PlanRow[] = [];
  for (const compression of args.compressions) {
    const wire = compressionWire(compression, args.params);
    const transferMs = (2 * wire.bytes * numbers.shmCopyUsPerByte) / 1e3;
    for (const algorithm of wire.collective === 'allReduce' ? algorithms : (['ring'] as ModelAlgorithm[])) {
      let communicationUs: number;
      let wireBytes: number;
      if (wire.collective === 'allGather') {
        // Ring all-gather: n-1 steps of one rank's block over the slowest link.
        const link = hosts > 1 ? { a: numbers.networkAlphaUs, b: numbers.networkBetaUsPerByte } : { a: numbers.localAlphaUs, b: numbers.localBetaUsPerByte };
        communicationUs = numbers.opUs + (ranks - 1) * (link.a + wire.bytes * link.b);
        wireBytes = (ranks - 1) * wire.bytes;
      } else {
        communicationUs = predict({ algorithm, ...topology, bytes: wire.bytes, profile: numbers });
        wireBytes = wireBytesPerRank(algorithm, ranks, hosts, perHost, wire.bytes);
      }
      const communicationMs = ranks > 1 ? communicationUs / 1e3 : 0;
      const stepMs = args.stepComputeMs + transferMs + communicationMs;
      rows.push({
        algorithm: wire.collective === 'allGather' ? 'ring (all-gather)' : algorithm,
        compression,
        collective: wire.collective,
        bytes: wire.bytes,
        wireBytesPerRank: ranks > 1 ? wireBytes : 0,
        communicationMs,
        transferMs,
        stepMs,
        scalingEfficiency: stepMs > 0 ? args.stepComputeMs / stepMs : 1,
      });
    }
  }
  return rows;
}

/** What each rank sends per all-reduce of m bytes (the algorithm files' cost headers). */
export function wireBytesPerRank(algorithm: string, n: number, hosts: number, perHost: number, m: number): number {
  if (n <= 1) return 0;
  const log2 = Math.floor(Math.log2(n));
  switch (algorithm) {
    case 'ring':
      return (2 * (n - 1) * m) / n;
    case 'recursive-doubling':
      return log2 * m + (2 ** log2 === n ? 0 : m);
    case 'direct':
      return (n - 1) * m; // the whole buffer to every other rank
    case 'tree':
      return 2 * m; // a rank sends its partial up once and the result down to its children (at most log n; on average ~1 each way)
    case 'shm':
      return 0; // shared memory: nothing on a wire
    case 'hierarchical':
      return (2 * (hosts - 1) * (m / perHost)) / hosts; // only the network step; the rest is shared memory
    default:
      return NaN;
  }
}

export function formatPlan(args: PlanArgs, rows: PlanRow[], profileNote: string): string {
  const mib = (b: number) => (b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
  const lines = [
    `# ${args.params.toLocaleString('en-US')} parameters (${mib(4 * args.params)} of float32 gradients) on ${args.hosts} host(s) x ${args.ranksPerHost} rank(s); network ${(args.rateBytesPerSecond * 8 / 1e9).toFixed(3)} Gbit/s, ${args.latencyUs} us one way; compute ${args.stepComputeMs} ms per step; ${profileNote}`,
    `${'algorithm'.padEnd(20)} ${'compression'.padEnd(12)} ${'sent/rank'.padStart(12)} ${'all-reduce ms'.padStart(14)} ${'transfer ms'.padStart(12)} ${'step ms'.padStart(10)} ${'efficiency'.padStart(10)}`,
  ];
  for (const r of rows) {
    lines.push(
      `${r.algorithm.padEnd(20)} ${r.compression.padEnd(12)} ${mib(r.wireBytesPerRank).padStart(12)} ${r.communicationMs.toFixed(3).padStart(14)} ${r.transferMs.toFixed(3).padStart(12)} ${r.stepMs.toFixed(2).padStart(10)} ${`${(100 * r.scalingEfficiency).toFixed(1)}%`.padStart(10)}`,
    );
  }
  const best = [...rows].sort((a, b) => a.stepMs - b.stepMs)[0];
  if (best) lines.push(`# fastest: ${best.algorithm} with ${best.compression} (${best.stepMs.toFixed(2)} ms per step, ${(100 * best.scalingEfficiency).toFixed(1)}% efficiency)`);
  return lines.join('\n');
}

/** The numbers `braid plan` predicts with: the profile's (or the defaults), the network from --link. */
export function planNumbers(args: PlanArgs, defaults: ProfileNumbers): { numbers: ProfileNumbers; note: string } {
  let numbers = { ...defaults };
  let note = 'no profile (the model\'s default shared-memory and reduction speeds)';
  if (args.profile) {
    numbers = { ...readProfile(args.profile).numbers };
    note = `profile ${args.profile}`;
  }
  numbers.networkAlphaUs = args.latencyUs;
  numbers.networkBetaUsPerByte = 1e6 / args.rateBytesPerSecond;
  // The profile's every-rank-at-once exchanges were measured on its own network, not --link's.
  numbers.calibratedHosts = 0;
  numbers.calibratedPerHost = 0;
  return { numbers, note };
}
