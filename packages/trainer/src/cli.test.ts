// The `braid` command as users start it: a real job through `braid run`, doctor, usage errors.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');
const braid = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });

describe('braid', () => {
  it('run: starts N ranks that find each other (as root too), with the environment and the timeline', () => {
    const dir = scratchDir('braid-cli-');
    const script = join(dir, 'job.mjs');
    const collectives = import.meta.resolve('@braid/collectives');
    writeFileSync(
      script,
      `import { writeFileSync } from 'node:fs';
import { init } from ${JSON.stringify(collectives)};
const comm = await init();
const x = new Float64Array([comm.rank + 1]);
await comm.allReduce(x);
writeFileSync(${JSON.stringify(dir)} + '/rank-' + comm.rank + '.json', JSON.stringify({ rank: comm.rank, size: comm.size, sum: x[0], arg: process.argv[2], custom: process.env.BRAID_CUSTOM ?? null }));
await comm.close();
`,
    );
    // No OMPI_ALLOW_RUN_AS_ROOT here: braid run must set it.
    const env = { ...process.env, BRAID_CUSTOM: 'yes' } as Record<string, string>;
    delete env.OMPI_ALLOW_RUN_AS_ROOT;
    delete env.OMPI_ALLOW_RUN_AS_ROOT_CONFIRM;
    const timeline = join(dir, 'trace.json');
    const result = spawnSync(process.execPath, [cli, 'run', '-np', '3', '--timeline', timeline, script, 'hello'], { encoding: 'utf8', env, timeout: 120_000 });
    expect(result.status, result.stderr).toBe(0);
    for (let r = 0; r < 3; r++) {
      expect(JSON.parse(readFileSync(join(dir, `rank-${r}.json`), 'utf8'))).toEqual({ rank: r, size: 3, sum: 6, arg: 'hello', custom: 'yes' });
    }
    const trace = JSON.parse(readFileSync(timeline, 'utf8'));
    expect(JSON.stringify(trace)).toContain('allReduce');
  });

  it('run: a failing rank fails the job with its exit status', () => {
    const dir = scratchDir('braid-cli-');
    const script = join(dir, 'fail.mjs');
    writeFileSync(script, `process.exit(Number(process.env.OMPI_COMM_WORLD_RANK) === 1 ? 3 : 0);\n`);
    const result = braid(['run', '-np', '2', script]);
    expect(result.status).not.toBe(0);
  });

  it('run: usage errors exit 2 with a message', () => {
    const result = braid(['run', 'train.mjs']);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/say how many ranks with -np N/);
    expect(braid(['frobnicate']).stderr).toMatch(/unknown command "frobnicate"/);
    // A script that is not there: said before any rank starts (not np stack traces after).
    const missing = braid(['run', '-np', '2', 'no-such-train.mjs']);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toBe(`braid: the script no-such-train.mjs does not exist in ${process.cwd()}\n`);
    expect(braid(['run', '-np', '2', '/nonexistent/train.js']).stderr).toBe('braid: the script /nonexistent/train.js does not exist\n');
    expect(braid(['--help']).stdout).toMatch(/braid run -np N/);
  });

  it('doctor: reports MPI, the addon, CUDA, NCCL and tfjs', () => {
    const result = braid(['doctor', '--json']);
    expect(result.status, result.stdout + result.stderr).toBe(0);
    const checks = JSON.parse(result.stdout) as Array<{ name: string; status: string; detail: string }>;
    const byName = Object.fromEntries(checks.map((c) => [c.name, c]));
    expect(byName.mpirun!.status).toBe('ok');
    expect(byName['MPI library']!.detail).toMatch(/Open MPI v\d/);
    expect(byName['@braid/native']!.detail).toMatch(/reduction kernels: (generic|avx2|avx512)/);
    expect(['ok', 'optional']).toContain(byName.CUDA!.status);
    expect(['ok', 'optional']).toContain(byName.NCCL!.status);
    const text = braid(['doctor']).stdout;
    expect(text).toMatch(/^ok\s+mpirun\s+mpirun \(Open MPI\)/m);
  });
});
