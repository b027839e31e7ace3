// `braid plan` and `braid calibrate`'s profile: arguments, the model's predictions through the
// addon, the table and JSON, and every bad input's message.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BRAID_VERSION } from '@braid/collectives';
import { loadAddon } from '@braid/native';
import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

import { compressionWire, countParameters, parsePlanArgs, parseRate, planNumbers, planRows, wireBytesPerRank } from './plan.js';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');
const braid = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
const addon = loadAddon();
const profileNumbers = {
  networkAlphaUs: 10,
  networkBetaUsPerByte: 1e-3,
  localAlphaUs: 1,
  localBetaUsPerByte: 1e-4,
  shmBarrierUs: 0.5,
  shmCopyUsPerByte: 1e-4,
  gammaUsPerByte: 1e-4,
  opUs: 2,
  ringStepAlphaUs: 0,
  ringStepBetaUsPerByte: 0,
  crossAllAlphaUs: 0,
  crossAllBetaUsPerByte: 0,
  localAllAlphaUs: 0,
  localAllBetaUsPerByte: 0,
  overlap: 1,
  calibratedHosts: 0,
  calibratedPerHost: 0,
};

function writeProfile(overrides: Record<string, unknown> = {}): string {
  const path = join(scratchDir('braid-profile-'), 'profile.json');
  writeFileSync(path, JSON.stringify({ format: 'braid-profile', version: 2, braid: BRAID_VERSION, created: 'now', hosts: ['a', 'b'], numbers: profileNumbers, ...overrides }));
  return path;
}

describe('the cost model through the addon', () => {
  const topology = { ranks: 4, hosts: 4, perHost: 1 };
  it('ring: 2(n-1) steps of m/n plus the reductions, exactly as cost_model.h writes it', () => {
    const m = 4 << 20;
    const want = profileNumbers.opUs + 2 * 3 * (10 + (m / 4) * 1e-3) + (3 / 4) * m * 1e-4;
    expect(addon.predict({ algorithm: 'ring', ...topology, bytes: m, profile: profileNumbers })).toBeCloseTo(want, 6);
  });
  it('recursive doubling: log2(n) exchanges of the whole buffer', () => {
    const m = 1024;
    expect(addon.predict({ algorithm: 'recursive-doubling', ...topology, bytes: m, profile: profileNumbers })).toBeCloseTo(2 + 2 * (10 + m * 1e-3 + m * 1e-4), 6);
  });
  it('direct: one step of (n-L)*m across each host link shared by its L ranks, n-1 reductions; no agreement exchange of its own across hosts', () => {
    const m = 1024;
    const reduce = 3 * m * 1e-4;
    // 4 hosts x 1 rank: 3 messages of m leave each host at once.
    expect(addon.predict({ algorithm: 'direct', ...topology, bytes: m, profile: profileNumbers })).toBeCloseTo(2 + 10 + 3 * m * 1e-3 + reduce, 6);
    expect(addon.predict({ algorithm: 'direct', ...topology, directCarriesAgreement: true, bytes: m, profile: profileNumbers })).toBeCloseTo(10 + 3 * m * 1e-3 + reduce, 6);
    // 2 hosts x 2 ranks: 2 remote messages per rank, the host's link shared by 2; the local one beside them.
    expect(addon.predict({ algorithm: 'direct', ranks: 4, hosts: 2, perHost: 2, hierarchy: true, directCarriesAgreement: true, bytes: m, profile: profileNumbers }))
      .toBeCloseTo(10 + 2 * m * 2 * 1e-3 + reduce, 6);
    // The fewest steps: below recursive doubling for small messages, above the ring for large ones.
    const at = (algorithm: 'ring' | 'recursive-doubling' | 'direct', bytes: number) =>
      addon.predict({ algorithm, ...topology, directCarriesAgreement: true, bytes, profile: profileNumbers });
    expect(at('direct', 64)).toBeLessThan(at('recursive-doubling', 64));
    expect(at('ring', 16 << 20)).toBeLessThan(at('direct', 16 << 20));
  });
  it('direct: the all-peers exchange where calibrate measured it on this placement, interpolated, plus the n-1 reductions', () => {
    const allPeersCurve: Array<[number, number]> = [[8, 70], [65536, 220], [1 << 20, 3700]];
    const calibrated = { ...profileNumbers, allPeersCurve, calibratedHosts: 2, calibratedPerHost: 2 };
    const twoByTwo = { ranks: 4, hosts: 2, perHost: 2, hierarchy: true, directCarriesAgreement: true };
    const direct = (bytes: number, profile: Record<string, unknown>, where = twoByTwo) => addon.predict({ algorithm: 'direct', ...where, bytes, profile });
    expect(direct(65536, calibrated)).toBeCloseTo(220 + 3 * 65536 * 1e-4, 6);
    // Halfway between 64 KiB and 1 MiB; above 64 KiB the agreement is an exchange of its own (opUs).
    const mid = (65536 + (1 << 20)) / 2;
    expect(direct(mid, calibrated)).toBeCloseTo(2 + (220 + 3700) / 2 + 3 * mid * 1e-4, 6);
    // Measured on another placement: the pair's numbers, as without the curve.
    const elsewhere = { ...calibrated, calibratedPerHost: 4 };
    expect(direct(1024, elsewhere)).toBeCloseTo(direct(1024, profileNumbers), 6);
  });
  it('small messages favour recursive doubling, large ones the ring', () => {
    const at = (algorithm: 'ring' | 'recursive-doubling', bytes: number) => addon.predict({ algorithm, ...topology, bytes, profile: profileNumbers });
    expect(at('recursive-doubling', 1024)).toBeLessThan(at('ring', 1024));
    expect(at('ring', 64 << 20)).toBeLessThan(at('recursive-doubling', 64 << 20));
  });
  it('on the placement calibrated, the every-rank-at-once exchanges; elsewhere the pair and the shared link', () => {
    const loaded = { ...profileNumbers, ringStepAlphaUs: 50, ringStepBetaUsPerByte: 4e-3, crossAllAlphaUs: 60, crossAllBetaUsPerByte: 5e-3,
      localAllAlphaUs: 40, localAllBetaUsPerByte: 3e-3, calibratedHosts: 2, calibratedPerHost: 2 };
    const twoByTwo = { ranks: 4, hosts: 2, perHost: 2, hierarchy: true };
    const m = 1 << 20;
    expect(addon.predict({ algorithm: 'ring', ...twoByTwo, bytes: m, profile: loaded })).toBeCloseTo(2 + 6 * (50 + (m / 4) * 4e-3) + (3 / 4) * m * 1e-4, 6);
    // One step within the host, one across, every rank at once in both.
    expect(addon.predict({ algorithm: 'recursive-doubling', ...twoByTwo, bytes: m, profile: loaded })).toBeCloseTo(
      2 + (40 + m * 3e-3 + m * 1e-4) + (60 + m * 5e-3 + m * 1e-4), 6);
    // Another placement: the pair's numbers, the host's link shared by its 2 ranks.
    const twoByFour = { ranks: 8, hosts: 2, perHost: 4, hierarchy: true };
    expect(addon.predict({ algorithm: 'recursive-doubling', ...twoByFour, bytes: m, profile: loaded })).toBeCloseTo(
      2 + 2 * (1 + m * 1e-4 + m * 1e-4) + (10 + m * 1e-3 * 4 + m * 1e-4), 6);
  });
  it('a loaded link with measured times is interpolated between them, and extended past the largest by its last slope', () => {
    const curve: Array<[number, number]> = [[8, 50], [65536, 100], [1 << 20, 1100]];
    const loaded = { ...profileNumbers, ringStepAlphaUs: 50, ringStepBetaUsPerByte: 1e-3, ringStepCurve: curve, calibratedHosts: 2, calibratedPerHost: 2 };
    const ringAt = (m: number) => addon.predict({ algorithm: 'ring', ranks: 4, hosts: 2, perHost: 2, hierarchy: true, bytes: m, profile: loaded });
    const reduce = (m: number) => (3 / 4) * m * 1e-4;
    // 4 ranks: steps of m/4. 256 KiB: steps of 64 KiB, a measured point.
    expect(ringAt(256 << 10)).toBeCloseTo(2 + 6 * 100 + reduce(256 << 10), 6);
    // Halfway between 64 KiB and 1 MiB (in bytes): halfway in time.
    const mid = (65536 + (1 << 20)) / 2;
    expect(ringAt(4 * mid)).toBeCloseTo(2 + 6 * 600 + reduce(4 * mid), 6);
    // Past 1 MiB: the last stretch's slope, 1000 us per 983040 bytes.
    const slope = 1000 / ((1 << 20) - 65536);
    expect(ringAt(8 << 20)).toBeCloseTo(2 + 6 * (1100 + ((2 << 20) - (1 << 20)) * slope) + reduce(8 << 20), 6);
  });
  it('past its largest point a curve goes on from that point, at the last stretch slope or beta, whichever is steeper', () => {
    // The last stretch (64 KiB to 1 MiB) is shallower than beta (1e-3 us/B): beta, from 1 MiB on.
    const curve: Array<[number, number]> = [[8, 50], [65536, 100], [1 << 20, 200]];
    const loaded = { ...profileNumbers, ringStepAlphaUs: 50, ringStepBetaUsPerByte: 1e-3, ringStepCurve: curve, calibratedHosts: 2, calibratedPerHost: 2 };
    const ringAt = (m: number) => addon.predict({ algorithm: 'ring', ranks: 4, hosts: 2, perHost: 2, hierarchy: true, bytes: m, profile: loaded });
    // 4 ranks: 6 steps of m/4; 16 MiB: steps of 4 MiB, 3 MiB past the last point.
    expect(ringAt(16 << 20)).toBeCloseTo(2 + 6 * (200 + (3 << 20) * 1e-3) + (3 / 4) * (16 << 20) * 1e-4, 6);
  });
  it('hierarchical: the overlap measured decides how much of the shorter phase the pipeline hides, and whether it pipelines at all', () => {
    const at = (overlap: number) => addon.predict({ algorithm: 'hierarchical', ranks: 4, hosts: 2, perHost: 2, hierarchy: true, bytes: 16 << 20,
      profile: { ...profileNumbers, overlap } });
    const sequential = addon.predict({ algorithm: 'hierarchical', ranks: 4, hosts: 2, perHost: 2, hierarchy: true, bytes: 16 << 20, overlapped: false,
      profile: profileNumbers });
    expect(at(0)).toBeCloseTo(sequential, 6);
    // Below 0.1 the engine runs the phases one after the other, without the pipeline's thread.
    expect(at(0.09)).toBeCloseTo(sequential, 6);
    expect(at(0.1)).toBeLessThan(sequential);
    expect(at(1)).toBeLessThan(at(0.5));
    expect(at(0.5)).toBeLessThan(at(0));
  });
  it('the staged NCCL all-reduce: measured times only, on the placement calibrated, with NCCL on every rank', () => {
    const curve: Array<[number, number]> = [[262144, 100], [4 << 20, 500]];
    const loaded = { ...profileNumbers, ncclStagedCurve: curve, calibratedHosts: 2, calibratedPerHost: 2 };
    const twoByTwo = { ranks: 4, hosts: 2, perHost: 2, hierarchy: true };
    const mid = (262144 + (4 << 20)) / 2;
    expect(addon.predict({ algorithm: 'nccl', ...twoByTwo, ncclReady: true, bytes: mid, profile: loaded })).toBeCloseTo(2 + 300, 6);
    expect(addon.predict({ algorithm: 'nccl', ...twoByTwo, bytes: mid, profile: loaded })).toBe(Infinity); // no NCCL on the ranks
    expect(addon.predict({ algorithm: 'nccl', ranks: 8, hosts: 2, perHost: 4, hierarchy: true, ncclReady: true, bytes: mid, profile: loaded })).toBe(Infinity);
    expect(addon.predict({ algorithm: 'nccl', ...twoByTwo, ncclReady: true, bytes: mid, profile: profileNumbers })).toBe(Infinity); // never measured
  });
  it('hierarchical needs several hosts with several ranks each; shm one host', () => {
    expect(addon.predict({ algorithm: 'hierarchical', ranks: 4, hosts: 4, perHost: 1, bytes: 1 << 20 })).toBe(Infinity);
    expect(addon.predict({ algorithm: 'hierarchical', ranks: 8, hosts: 2, perHost: 4, hierarchy: true, bytes: 1 << 20 })).toBeLessThan(Infinity);
    expect(addon.predict({ algorithm: 'shm', ranks: 4, hosts: 1, perHost: 4, bytes: 1 << 20 })).toBe(Infinity);
    expect(addon.predict({ algorithm: 'shm', ranks: 4, hosts: 1, perHost: 4, sharedMemory: true, bytes: 1 << 20 })).toBeLessThan(Infinity);
  });
});

describe('braid plan', () => {
  it('parses rates, latencies and models', () => {
    expect(parseRate('10gbit')).toBe(1.25e9);
    expect(parseRate('100mbit')).toBe(12.5e6);
    const args = parsePlanArgs(['--params', '1000000', '--hosts', '2', '--ranks-per-host', '4', '--link', '10gbit,1ms']);
    expect(args).toMatchObject({ params: 1e6, hosts: 2, ranksPerHost: 4, rateBytesPerSecond: 1.25e9, latencyUs: 1000, compressions: ['none', 'fp16', 'topk:0.01'] });
    const model = join(scratchDir('braid-model-'), 'model.json');
    writeFileSync(model, JSON.stringify({ weightsManifest: [{ weights: [{ shape: [784, 128] }, { shape: [128] }] }, { weights: [{ shape: [128, 10] }, { shape: [10] }] }] }));
    expect(countParameters(model)).toBe(784 * 128 + 128 + 128 * 10 + 10);
  });

  it('bytes on the wire per rank and per compressor', () => {
    expect(wireBytesPerRank('ring', 4, 4, 1, 1000)).toBe(1500);
    expect(wireBytesPerRank('recursive-doubling', 4, 4, 1, 1000)).toBe(2000);
    expect(wireBytesPerRank('hierarchical', 8, 2, 4, 4000)).toBe(1000);
    expect(wireBytesPerRank('direct', 4, 4, 1, 1000)).toBe(3000);
    expect(compressionWire('none', 100)).toEqual({ collective: 'allReduce', bytes: 400 });
    expect(compressionWire('fp16', 100)).toEqual({ collective: 'allReduce', bytes: 200 });
    expect(compressionWire('topk:0.1', 100)).toEqual({ collective: 'allGather', bytes: 80 });
  });

  it('rows: every algorithm x compressor, the network from --link, efficiency = compute / step', () => {
    const args = parsePlanArgs(['--params', '25000000', '--hosts', '2', '--ranks-per-host', '4', '--link', '10gbit,50us', '--step-compute-ms', '200']);
    const { numbers } = planNumbers(args, addon.costDefaults());
    expect(numbers.networkBetaUsPerByte).toBeCloseTo(1e6 / 1.25e9, 12);
    expect(numbers.networkAlphaUs).toBe(50);
    const rows = planRows(args, numbers, (q) => addon.predict(q));
    expect(rows.map((r) => `${r.algorithm}/${r.compression}`)).toEqual([
      'ring/none', 'recursive-doubling/none', 'tree/none', 'direct/none', 'hierarchical/none',
      'ring/fp16', 'recursive-doubling/fp16', 'tree/fp16', 'direct/fp16', 'hierarchical/fp16',
      'ring (all-gather)/topk:0.01',
    ]);
    for (const r of rows) {
      expect(r.stepMs).toBeCloseTo(200 + r.transferMs + r.communicationMs, 9);
      expect(r.scalingEfficiency).toBeCloseTo(200 / r.stepMs, 9);
    }
    const ring = rows.find((r) => r.algorithm === 'ring' && r.compression === 'none')!;
    // 100 MB over a 10 Gbit/s link, 2(n-1)/n of it per rank: at least 140 ms.
    expect(ring.communicationMs).toBeGreaterThan(140);
    const fp16 = rows.find((r) => r.algorithm === 'ring' && r.compression === 'fp16')!;
    expect(fp16.communicationMs).toBeLessThan(ring.communicationMs * 0.6);
  });

  it('prints a table and JSON from the command line', () => {
    const table = braid('plan', '--params', '1000000', '--hosts', '2', '--ranks-per-host', '2', '--link', '1gbit');
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^# 1,000,000 parameters \(3\.81 MiB of float32 gradients\) on 2 host\(s\) x 2 rank\(s\)/);
    expect(table.stdout).toMatch(/\nhierarchical\s+none\s+/);
    expect(table.stdout).toMatch(/# fastest: /);
    const json = braid('plan', '--params', '1000000', '--hosts', '2', '--ranks-per-host', '2', '--link', '1gbit', '--json', '--profile', writeProfile());
    expect(json.status, json.stderr).toBe(0);
    const parsed = JSON.parse(json.stdout);
    expect(parsed.numbers.shmBarrierUs).toBe(0.5);
    expect(parsed.rows.length).toBe(11);
  });

  it.each([
    [['--hosts', '2', '--ranks-per-host', '2', '--link', '1gbit'], /give the model's size: --params N or --model model.json/],
    [['--params', '10', '--hosts', '2', '--ranks-per-host', '2', '--link', '1 gigabit'], /--link: a rate as tc writes it/],
    [['--params', '10', '--hosts', '2', '--ranks-per-host', '2', '--link', '1gbit,fast'], /--link: a one-way latency such as 50us/],
    [['--params', '10', '--hosts', '0', '--ranks-per-host', '2', '--link', '1gbit'], /--hosts must be a positive integer/],
    [['--params', '10', '--hosts', '2', '--ranks-per-host', '2', '--link', '1gbit', '--compression', 'topk:2'], /topk:RATIO takes a ratio in \(0, 1\]/],
    [['--model', '/nonexistent/model.json', '--hosts', '2', '--ranks-per-host', '2', '--link', '1gbit'], /--model: \/nonexistent\/model.json does not exist/],
  ])('bad input %j: exit 2 with a message', (args, message) => {
    const r = braid('plan', ...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
  });
});

describe('cost profiles', () => {
  const plan = (profile: string) => braid('plan', '--params', '10', '--hosts', '2', '--ranks-per-host', '2', '--link', '1gbit', '--profile', profile);
  it('a missing, malformed, foreign or outdated profile is refused naming the file and the fix', () => {
    expect(plan('/nonexistent/p.json').stderr).toMatch(/the cost profile \/nonexistent\/p.json does not exist; run `braid calibrate --out \/nonexistent\/p.json` to make one/);
    const bad = join(scratchDir('braid-profile-'), 'p.json');
    writeFileSync(bad, '{ not json');
    expect(plan(bad).stderr).toMatch(/is not JSON/);
    expect(plan(writeProfile({ format: 'something' })).stderr).toMatch(/is not a Braid cost profile/);
    expect(plan(writeProfile({ braid: '0.0.1' })).stderr).toMatch(new RegExp(`was made by Braid 0\\.0\\.1 \\(profile version 2\\); this is Braid ${BRAID_VERSION.replace(/\./g, '\\.')}`));
    expect(plan(writeProfile({ numbers: { ...profileNumbers, gammaUsPerByte: 'fast' } })).stderr).toMatch(/numbers.gammaUsPerByte must be a non-negative number; got "fast"/);
    expect(plan(writeProfile({ measured: { crossAll: { exchangeUs: [[65536, 10], [4096, 5]] } } })).stderr).toMatch(
      /measured\.crossAll\.exchangeUs must be up to 8 \[bytes, microseconds\] pairs of non-negative numbers, bytes ascending/);
    expect(plan(writeProfile({ measured: { ncclStaged: { allReduceUs: [[65536, -1]] } } })).stderr).toMatch(
      /measured\.ncclStaged\.allReduceUs must be up to 8 \[bytes, microseconds\] pairs of non-negative numbers, bytes ascending/);
    for (const p of ['/nonexistent/p.json', bad]) expect(plan(p).status).toBe(2);
  });
});
