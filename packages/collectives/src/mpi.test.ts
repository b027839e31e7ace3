// Multi-process tests: real `mpirun -np N` jobs of test-support/worker.mjs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

import { mpirun } from './test-support/mpirun.js';

// BRAID_SHM=off: agreement through rank 0 over MPI, and 'auto' choosing among the MPI algorithms.
const SHM_OFF = { BRAID_SHM: 'off' };
// BRAID_TRANSPORT=tcp on one host: the TCP transport (over loopback) that carries data between hosts.
const TCP = { BRAID_SHM: 'off', BRAID_TRANSPORT: 'tcp' };

describe.each([
  [1, {}],
  [2, {}],
  [3, {}],
  [4, {}],
  [2, SHM_OFF],
  [3, SHM_OFF],
  [3, TCP],
  [4, TCP],
])('np=%i %o', (np, env) => {
  it('every op x dtype x algorithm is exact on awkward sizes, and the same bits on every rank', async () => {
    const run = await mpirun(np, 'matrix', { env });
    expect(run.stderr).not.toMatch(/error|abort/i);
    expect(run.code).toBe(0);
    expect(run.results).toHaveLength(np);
    const [first] = run.results;
    expect(first.cases.length).toBeGreaterThan(1000);
    for (const r of run.results) {
      expect(r.size).toBe(np);
      expect(r.localSize).toBe(np);
      expect(r.transport).toBe(np > 1 && 'BRAID_TRANSPORT' in env ? 'tcp' : 'mpi');
      const wrong = r.cases.filter((c: { wrong: number }) => c.wrong !== 0);
      expect(wrong, `rank ${r.rank}`).toEqual([]);
    }
    // Bitwise identical across ranks.
    for (let i = 0; i < first.cases.length; i++) {
      if (first.cases[i].digest === 'per-rank') continue;
      const digests = run.results.map((r) => r.cases[i].digest);
      expect(new Set(digests).size, first.cases[i].what).toBe(1);
    }
    for (const r of run.results) {
      expect(r.split.rank).toBe(r.split.wantRank);
      expect(r.split.size).toBe(r.split.wantSize);
      expect(r.split.sum).toEqual(r.split.wantSum);
      expect(r.split.evensNull).toBe(r.rank % 2 === 1);
      if (r.rank % 2 === 0) expect(r.split.evensSum).toBe(Math.ceil(np / 2));
      expect(r.split.closedRejects).toBe('ABORTED');
    }
  });
});

describe.each([
  [2, {}],
  [3, {}],
  [2, SHM_OFF],
  [3, SHM_OFF],
  [3, TCP],
])('disagreeing ranks, np=%i %o', (np, env) => {
  it('every rank gets MISMATCH naming the ranks and the field, within 5 s, and stays in step', async () => {
    const run = await mpirun(np, 'mismatch', { env });
    expect(run.code).toBe(0);
    expect(run.results).toHaveLength(np);
    const last = np - 1;
    const others = np === 2 ? 'rank 0' : `ranks 0-${np - 2}`;
    const fields: Record<string, RegExp> = {
      length: new RegExp(`length: ${others} ha(s|ve) 4, rank ${last} has 5`),
      dtype: new RegExp(`dtype: ${others} ha(s|ve) float32, rank ${last} has float64`),
      op: new RegExp(`op: ${others} ha(s|ve) sum, rank ${last} has max`),
      algorithm: new RegExp(`algorithm: ${others} ha(s|ve) tree, rank ${last} has ring`),
      root: new RegExp(`root: ${others} ha(s|ve) 0, rank ${last} has 1`),
      name: new RegExp(`name: ${others} ha(s|ve) 'layer1/kernel', rank ${last} has 'layer2/bias'`),
      operation: new RegExp(`operation: ${others} ha(s|ve) allReduce, rank ${last} has broadcast`),
      sync: new RegExp(`length: ${others} ha(s|ve) 3, rank ${last} has 2`),
      carried: new RegExp(`length: ${others} ha(s|ve) 4, rank ${last} has 262144`),
      directLength: new RegExp(`length: ${others} ha(s|ve) 4, rank ${last} has 6`),
    };
    for (const r of run.results) {
      for (const [kind, pattern] of Object.entries(fields)) {
        const got = r[kind];
        expect(got.code, `${kind} on rank ${r.rank}`).toBe('MISMATCH');
        expect(got.name).toBe('MismatchError');
        expect(got.message).toMatch(pattern);
        expect(got.ms).toBeLessThan(5000);
        expect(got.after).toBe(np);
      }
    }
    // Every rank got the same message.
    for (const kind of Object.keys(fields)) expect(new Set(run.results.map((r) => r[kind].message)).size).toBe(1);
  });
});

describe.each([
  ['timeout', {}],
  ['timeout', SHM_OFF],
  ['timeout', TCP],
  ['timeout-sync', {}],
])('a rank that never makes the call (%s %o)', (scenario, env) => {
  it('gives TIMEOUT naming it on the others, then ABORTED, and a stall warning', async () => {
    const run = await mpirun(3, scenario, { env, timeoutMs: 60_000 });
    expect(run.results).toHaveLength(3);
    for (const r of run.results.slice(0, 2)) {
      expect(r.first.code).toBe('TIMEOUT');
      expect(r.first.name).toBe('TimeoutError');
      expect(r.first.message).toMatch(/rank 2 \(host \S+\) has not submitted allReduce #1 'grads' before the timeout/);
      expect(r.first.ms).toBeLessThan(5000);
      expect(r.second.code).toBe('ABORTED');
    }
    expect(run.stderr).toMatch(/braid: stall: rank 2 \(host \S+\) has not submitted allReduce #1 'grads'/);
    expect(run.results[2].skipped).toBe(true);
  });
});

describe.each([
  [2, {}],
  [3, {}],
  // Over TCP every small op can run on the caller's thread; the agreement hands over.
  [3, TCP],
])('small ops on the caller\'s thread, np=%i %o', (np, env) => {
  it('run inline, hand over to the engine when a peer is late, keep their order with queued ops, and stay exact', async () => {
    const dir = scratchDir('braid-inline-');
    const path = join(dir, 'trace.json');
    const run = await mpirun(np, 'inline', { env: { ...env, BRAID_TIMELINE: path } });
    expect(run.stderr).not.toMatch(/error|abort/i);
    expect(run.code).toBe(0);
    expect(run.results).toHaveLength(np);
    for (const r of run.results) expect(r.wrong, `rank ${r.rank}`).toEqual([]);
    expect(new Set(run.results.map((r) => r.digest)).size).toBe(1);
    // Rank 0's trace: where each op ran. All three ways occur, every op is there once, in order.
    const events = JSON.parse(readFileSync(path, 'utf8')) as Array<{ name: string; ph: string; args?: any }>;
    const ops = events.filter((e) => e.ph === 'X' && e.args);
    const threads = new Map<string, number>();
    for (const op of ops) threads.set(op.args.thread, (threads.get(op.args.thread) ?? 0) + 1);
    expect(threads.get('caller')).toBeGreaterThanOrEqual(12);  // most rounds' first op
    expect(threads.get('handed-off')).toBeGreaterThan(0);
    expect(threads.get('engine')).toBeGreaterThan(24);  // every ring, and the sync op queued behind it
    if (!('BRAID_TRANSPORT' in env)) for (const op of ops.filter((o) => o.args.algorithm === 'ring')) expect(op.args.thread).toBe('engine');
    // Over TCP the small ones are direct all-reduces whose buffers ride on the agreement: handed
    // over mid-agreement too, with their buffers already sent.
    if ('BRAID_TRANSPORT' in env) expect(ops.filter((o) => o.args.algorithm === 'direct' && o.args.thread === 'handed-off').length).toBeGreaterThan(0);
    const seqs = ops.filter((o) => o.args.comm === 0).map((o) => Number(o.name.split('#')[1]));
    expect(seqs).toEqual(seqs.map((_, i) => i));
  });
});

describe('awaited large ops on ordinary arrays over TCP', () => {
  it('run on the caller\'s thread once ops their size have been quick, hand over when a peer is late, and stay exact', async () => {
    const dir = scratchDir('braid-large-');
    const path = join(dir, 'trace.json');
    const run = await mpirun(2, 'large-awaited', { env: { ...TCP, BRAID_TIMELINE: path } });
    expect(run.code, run.stderr).toBe(0);
    for (const r of run.results) expect(r.wrong, `rank ${r.rank}`).toEqual([]);
    expect(new Set(run.results.map((r) => r.digest)).size).toBe(1);
    const events = JSON.parse(readFileSync(path, 'utf8')) as Array<{ ph: string; args?: any }>;
    const threads = events.filter((e) => e.ph === 'X' && e.args?.count === 512 * 1024).map((e) => e.args.thread);
    expect(threads).toHaveLength(8);
    expect(threads[0]).toBe('engine');  // nothing that size timed yet
    expect(threads[5]).toBe('handed-off');  // rank 1 came 30 ms late
    expect(threads.filter((t) => t === 'caller').length).toBeGreaterThanOrEqual(3);
  });
});

describe.each([1, 2])('a communicator of one, np=%i', (np) => {
  it('runs its ops on the caller\'s thread (but for \'mpi\' and large awaited shared arrays), each result its input', async () => {
    const dir = scratchDir('braid-alone-');
    const path = join(dir, 'trace.json');
    const run = await mpirun(np, 'alone', { env: { BRAID_TIMELINE: path } });
    expect(run.code, run.stderr).toBe(0);
    for (const r of run.results) expect(r.wrong, `rank ${r.rank}`).toEqual([]);
    const events = JSON.parse(readFileSync(path, 'utf8')) as Array<{ ph: string; args?: any }>;
    // Rank 0's ops on its communicator of one, after the first (nothing has settled MPI before it).
    const ops = events.filter((e) => e.ph === 'X' && e.args?.name?.match(/ [0-3]$/));
    expect(ops).toHaveLength(36);
    const where = (prefix: string) => ops.filter((o) => o.args.name.startsWith(prefix)).slice(1).map((o) => o.args.thread);
    for (const prefix of ['sync avg', 'awaited 800 KB', 'shared 16 KiB', 'broadcast', 'allGather', 'reduceScatter', 'barrier']) {
      expect(where(prefix), prefix).toEqual(['caller', 'caller', 'caller']);
    }
    expect(where('mpi')).toEqual(['engine', 'engine', 'engine']);
    expect(where('shared 512 KiB')).toEqual(['engine', 'engine', 'engine']);
  });
});

describe('timeline', () => {
  it('rank 0 writes a Chrome trace with every op and its phases', async () => {
    const dir = scratchDir('braid-timeline-');
    const path = join(dir, 'trace.json');
    const run = await mpirun(2, 'timeline', { env: { BRAID_TIMELINE: path } });
    expect(run.code).toBe(0);
    const events = JSON.parse(readFileSync(path, 'utf8')) as Array<{ name: string; ph: string; ts: number; dur?: number; args?: any }>;
    const ops = events.filter((e) => e.ph === 'X' && e.args);
    expect(ops.map((e) => e.name)).toEqual(['allReduce #0', 'allReduce #1', 'allReduce #2', 'allReduce #3', 'broadcast #4', 'barrier #5', 'close #6']);
    expect(ops[0].args).toMatchObject({ name: 'bucket0', dtype: 'float32', count: 1 << 20, algorithm: 'ring', status: 'OK' });
    const phases = new Set(events.filter((e) => !e.args).map((e) => e.name));
    for (const p of ['queued', 'negotiating', 'communicating', 'reducing', 'done']) expect(phases).toContain(p);
    // Phases nest inside their op.
    const first = ops[0];
    const reducing = events.filter((e) => e.name === 'reducing' && e.ts >= first.ts && e.ts <= first.ts + (first.dur ?? 0));
    expect(reducing.length).toBeGreaterThan(0);
  });
});
