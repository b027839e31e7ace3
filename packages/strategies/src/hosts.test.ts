// DataParallel across hosts, on the multi-host test bed (scripts/cluster.sh through
// @braid/test-support/netns). Needs root and network namespaces; skipped otherwise, saying so.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { createHosts, netnsUnavailable } from '@braid/test-support/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'worker.mjs');
const unavailable = netnsUnavailable();

describe.skipIf(unavailable !== undefined)(`2 hosts x 2 ranks${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let hosts: ReturnType<typeof createHosts>;
  beforeAll(() => {
    hosts = createHosts(2);
  });
  afterAll(() => hosts?.destroy());

  it('N ranks x B rows give the weights of one process on N*B rows (plain SGD), sync and async, identical on every rank', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'braid-dp-hosts-'));
    const cmd = hosts.on(0, ['mpirun', '-np', '4', '-H', 'h0:2,h1:2', ...hosts.mcaArgs(), process.execPath, worker, 'equivalence', dir]);
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(cmd[0]!, cmd.slice(1), { env: { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' }, stdio: 'ignore' });
      child.on('exit', resolve);
    });
    expect(code).toBe(0);
    const results = [0, 1, 2, 3].map((r) => join(dir, `rank-${r}.json`)).filter(existsSync).map((f) => JSON.parse(readFileSync(f, 'utf8')));
    expect(results).toHaveLength(4);
    for (const path of ['sync', 'async']) {
      expect(new Set(results.map((r) => r[path].digest)).size).toBe(1);
      expect(results[0][path].diff).toBeLessThan(1e-6);
      expect(results[0][path].calls).toBeGreaterThan(5);
    }
  }, 120_000);
});
