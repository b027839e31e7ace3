// DataParallel across hosts, on the multi-host test bed (scripts/cluster.sh through
// @braid/test-support/netns). Needs root and network namespaces; skipped otherwise, saying so.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { createHosts, netnsUnavailable } from '@braid/test-support/netns';
import { scratchDir } from '@braid/test-support/scratch';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { expectReplicasAgree } from './test-support/replicas.js';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'worker.mjs');
const unavailable = netnsUnavailable();

describe.skipIf(unavailable !== undefined)(`2 hosts x 2 ranks${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let hosts: ReturnType<typeof createHosts>;
  beforeAll(() => {
    hosts = createHosts(2);
  });
  afterAll(() => hosts?.destroy());

  // mpirun on h0 with ranks placed by `placement`; each rank's result (rank-<r>.json).
  async function run(placement: string, np: number, scenario: string, env: Record<string, string> = {}, mapBy?: string) {
    const dir = scratchDir('braid-strategies-hosts-');
    const exported = Object.entries(env).flatMap(([k, v]) => ['-x', `${k}=${v}`]);
    const cmd = hosts.on(0, ['mpirun', '-np', String(np), '-H', placement, ...(mapBy ? ['--map-by', mapBy] : []), '--oversubscribe', ...exported, ...hosts.mcaArgs(), process.execPath, worker, scenario, dir]);
    let stderr = '';
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(cmd[0]!, cmd.slice(1), { env: { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.on('data', (d) => (stderr += d));
      child.on('exit', resolve);
    });
    expect(code, stderr).toBe(0);
    const results = Array.from({ length: np }, (_, r) => join(dir, `rank-${r}.json`)).filter(existsSync).map((f) => JSON.parse(readFileSync(f, 'utf8')));
    expect(results.filter((r) => !r.ok).map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
    expect(results).toHaveLength(np);
    return results;
  }

  it('N ranks x B rows give the weights of one process on N*B rows (plain SGD), sync and async, identical on every rank', async () => {
    const results = await run('h0:2,h1:2', 4, 'equivalence');
    for (const path of ['sync', 'async']) {
      expect(new Set(results.map((r) => r[path].digest)).size).toBe(1);
      expect(results[0][path].diff).toBeLessThan(1e-6);
      expect(results[0][path].calls).toBeGreaterThan(5);
    }
  }, 120_000);

  // By slot, each pipeline's two stages share a host and a stage's replicas average across hosts;
  // by node, the activations and gradients between stages cross hosts.
  it.each([['slot'], ['node']])('2 pipelines x 2 stages placed by %s: one process\'s weights on both pipelines\' rows; replicas bitwise identical', async (mapBy) => {
    const results = await run('h0:2,h1:2', 4, 'pipeline-replicas', {}, mapBy);
    expectReplicasAgree(results);
  }, 120_000);

  it('a parameter server on h0 with workers on both hosts (sync): the workers hold bitwise the same weights after every step, one process\'s weights on all their rows', async () => {
    const results = await run('h0:2,h1:2', 4, 'ps-sync', { SERVERS: '1' });
    const workers = results.filter((r) => !r.isServer);
    expect(workers).toHaveLength(3);
    for (const w of workers) expect(w.digests).toEqual(workers[0].digests);
    expect(new Set(workers[0].digests).size).toBe(5);
    for (const r of results) expect(r.diff).toBeLessThan(1e-5);
  }, 120_000);
});
