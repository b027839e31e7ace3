// Collectives across hosts, on the multi-host test bed (scripts/cluster.sh through
// @braid/test-support/netns: hosts with their own addresses, hostnames and /dev/shm). Needs root
// and network namespaces; skipped otherwise, saying so.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { createHosts, netnsUnavailable } from '@braid/test-support/netns';
import { scratchDir } from '@braid/test-support/scratch';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BRAID_VERSION } from './profile.js';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'worker.mjs');
const p2pWorker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'p2p-worker.mjs');
const unavailable = netnsUnavailable();

describe.skipIf(unavailable !== undefined)(`across hosts${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let hosts: ReturnType<typeof createHosts>;
  beforeAll(() => {
    hosts = createHosts(3);
  });
  afterAll(() => hosts?.destroy());

  // mpirun on h0 with ranks placed by `placement` (-H h0:2,h1:2), the worker's scenario.
  function run(
    placement: string,
    np: number,
    scenario: string,
    env: Record<string, string> = {},
    script = worker,
  ): Promise<{ code: number | null; stderr: string; results: any[] }> {
    const dir = scratchDir('braid-across-');
    const exported = Object.entries(env)
      .filter(([k]) => k !== 'MAP_BY')
      .flatMap(([k, v]) => ['-x', `${k}=${v}`]);
    const mapBy = env.MAP_BY ? ['--map-by', env.MAP_BY] : [];
    const cmd = hosts.on(0, ['mpirun', '-np', String(np), '-H', placement, ...mapBy, '--oversubscribe', ...exported, ...hosts.mcaArgs(), process.execPath, script, scenario, dir]);
    return new Promise((resolve) => {
      const child = spawn(cmd[0]!, cmd.slice(1), { env: { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const killer = setTimeout(() => child.kill('SIGKILL'), 240_000);
      child.on('exit', (code) => {
        clearTimeout(killer);
        const results = Array.from({ length: np }, (_, r) => join(dir, `rank-${r}.json`)).filter(existsSync).map((f) => JSON.parse(readFileSync(f, 'utf8')));
        resolve({ code, stderr, results });
      });
    });
  }

  // Between hosts the data goes over Braid's TCP transport; BRAID_TRANSPORT=mpi is the fallback.
  describe.each([
    ['2 hosts x 2 ranks', 'h0:2,h1:2', 4, [0, 1, 0, 1], 2, 'tcp'],
    ['2 hosts x 2 ranks, BRAID_TRANSPORT=mpi', 'h0:2,h1:2', 4, [0, 1, 0, 1], 2, 'mpi'],
    // Ranks 0 and 2 on h0, 1 and 3 on h1: the hierarchy's rank order differs from the communicator's.
    ['2 hosts x 2 ranks, interleaved (--map-by node)', 'h0:2,h1:2', 4, [0, 0, 1, 1], 2, 'node'],
    ['3 hosts x 1 rank', 'h0:1,h1:1,h2:1', 3, [0, 0, 0], 1, 'tcp'],
  ] as const)('%s', (_, placement, np, localRanks, localSize, transport) => {
    it('every op x dtype x algorithm is exact and bitwise identical on every rank; localRank and localSize per host', async () => {
      const job = await run(placement, np, 'matrix', transport === 'mpi' ? { BRAID_TRANSPORT: 'mpi' } : transport === 'node' ? { MAP_BY: 'node' } : {});
      expect(job.code, job.stderr).toBe(0);
      expect(job.results).toHaveLength(np);
      const [first] = job.results;
      expect(first.cases.length).toBeGreaterThan(1000);
      for (const r of job.results) {
        expect(r.size).toBe(np);
        expect(r.localRank).toBe(localRanks[r.rank]);
        expect(r.localSize).toBe(localSize);
        expect(r.transport).toBe(transport === 'node' ? 'tcp' : transport);
        expect(r.cases.filter((c: { wrong: number }) => c.wrong !== 0), `rank ${r.rank}`).toEqual([]);
      }
      for (let i = 0; i < first.cases.length; i++) {
        if (first.cases[i].digest === 'per-rank') continue;
        expect(new Set(job.results.map((r) => r.cases[i].digest)).size, first.cases[i].what).toBe(1);
      }
    }, 240_000);
  });

  // Messages go through MPI (Open MPI's TCP between hosts, its shared memory on one) whatever
  // carries the collectives they run beside: Braid's TCP transport, or MPI with BRAID_TRANSPORT=mpi.
  it.each([['tcp'], ['mpi']])('point-to-point across 2 hosts x 2 ranks (collectives over %s): ring shifts, order per (source, tag), 16 MiB and empty messages, ANY_SOURCE, 64 in flight: all exact', async (transport) => {
    const job = await run('h0:2,h1:2', 4, 'messages', transport === 'mpi' ? { BRAID_TRANSPORT: 'mpi' } : {}, p2pWorker);
    expect(job.code, job.stderr).toBe(0);
    expect(job.results).toHaveLength(4);
    for (const r of job.results) {
      expect(r.crashed).toBeUndefined();
      expect(r.wrong).toEqual([]);
      expect(r.sum).toBe(6);
    }
    expect(job.results[0]!.sources).toEqual([1, 2, 3]);
    // Rank 1 (on h0) sends to rank 2, on h1: the refused too-long message names that host.
    expect(job.results[1]!.tooLong[0].message).toContain('send to rank 2 (host h1)');
  }, 240_000);

  // The hierarchical all-reduce's network step is the one the model predicts with: where a
  // calibrated profile is loaded, whichever of ring and recursive doubling it says is quicker for
  // the slice; without one, recursive doubling up to 64 KiB slices.
  // Three ranks a host: local rank 2 reduces its block from its slot, not in place as ranks 0
  // and 1 do, and each rank's slot holds three blocks.
  it('2 hosts x 3 ranks: the hierarchical all-reduce is exact and bitwise identical on every rank, every dtype and op', async () => {
    const job = await run('h0:3,h1:3', 6, 'hierarchical');
    expect(job.code, job.stderr).toBe(0);
    expect(job.results).toHaveLength(6);
    const [first] = job.results;
    expect(first.cases.length).toBeGreaterThan(100);
    for (const r of job.results) {
      expect(r.localSize).toBe(3);
      expect(r.cases.filter((c: { wrong: number }) => c.wrong !== 0), `rank ${r.rank}`).toEqual([]);
    }
    for (let i = 0; i < first.cases.length; i++) expect(new Set(job.results.map((r) => r.cases[i].digest)).size, first.cases[i].what).toBe(1);
  }, 240_000);

  it.each([
    ['no profile', undefined, ['recursive-doubling', 'ring']],
    // A message costs 1 ms, bytes almost nothing: doubling's one exchange beats the ring's two.
    ['a profile where latency dominates', { crossAllAlphaUs: 1000, crossAllBetaUsPerByte: 1e-6, gammaUsPerByte: 1e-7 }, ['recursive-doubling', 'recursive-doubling']],
    // Reducing is what costs: the ring reduces half the slice, doubling all of it.
    ['a profile where reducing dominates', { crossAllAlphaUs: 1, crossAllBetaUsPerByte: 1e-6, gammaUsPerByte: 1 }, ['ring', 'ring']],
  ] as const)('hierarchical all-reduce across hosts, %s: the network step the model picks runs, and the results are exact', async (_, links, expected) => {
    const dir = scratchDir('braid-hierarchy-network-');
    const env: Record<string, string> = { BRAID_TIMELINE: join(dir, 'timeline.json') };
    if (links) {
      const numbers = { networkAlphaUs: 10, networkBetaUsPerByte: 1e-3, localAlphaUs: 10, localBetaUsPerByte: 1e-3, ringStepAlphaUs: 0, ringStepBetaUsPerByte: 0,
        localAllAlphaUs: 0, localAllBetaUsPerByte: 0, shmBarrierUs: 1, shmCopyUsPerByte: 1e-4, opUs: 2, overlap: 0, calibratedHosts: 2, calibratedPerHost: 2, ...links };
      // On h0 alone (its own /run/braid-host): h1's ranks get rank 0's profile at start-up, after
      // the world's hierarchy is made, and must still choose as h0's do.
      env.BRAID_PROFILE = `/run/braid-host/profile-${process.pid}-${Date.now()}.json`;
      const write = hosts.on(0, ['tee', env.BRAID_PROFILE]);
      const wrote = spawnSync(write[0]!, write.slice(1), { input: JSON.stringify({ format: 'braid-profile', version: 2, braid: BRAID_VERSION, created: 'now', hosts: ['h0', 'h1'], numbers }) });
      expect(wrote.status).toBe(0);
    }
    const job = await run('h0:2,h1:2', 4, 'hierarchy-network', env);
    expect(job.code, job.stderr).toBe(0);
    expect(job.results).toHaveLength(4);
    for (const r of job.results) expect(r.wrong).toEqual([]);
    const ops = (JSON.parse(readFileSync(env.BRAID_TIMELINE!, 'utf8')) as Array<{ ph: string; args?: { name?: string; acrossHosts?: string } }>)
      .filter((e) => e.ph === 'X' && e.args?.name?.startsWith('hierarchical'));
    expect(ops.map((o) => `${o.args!.name}: ${o.args!.acrossHosts}`)).toEqual([`hierarchical 8192: ${expected[0]}`, `hierarchical 262144: ${expected[1]}`]);
  });

  it('MISMATCH across hosts: every rank gets the same message naming ranks and field, within 5 s, and stays in step', async () => {
    const job = await run('h0:2,h1:2', 4, 'mismatch');
    expect(job.code, job.stderr).toBe(0);
    expect(job.results).toHaveLength(4);
    for (const r of job.results) {
      for (const kind of ['length', 'dtype', 'op', 'algorithm', 'root', 'name', 'operation', 'sync', 'carried', 'directLength']) {
        expect(r[kind].code, `${kind} on rank ${r.rank}`).toBe('MISMATCH');
        expect(r[kind].message).toMatch(/rank 3 has/);
        expect(r[kind].ms).toBeLessThan(5000);
        expect(r[kind].after).toBe(4);
      }
    }
    for (const kind of ['length', 'dtype', 'op']) expect(new Set(job.results.map((r) => r[kind].message)).size).toBe(1);
  });
});
