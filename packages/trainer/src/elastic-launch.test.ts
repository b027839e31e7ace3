// `braid run --elastic` on this machine alone (the test bed's tests are in elastic-hosts.test.ts):
// its options, what it reads from mpirun's output, discovery scripts that fail, and a custom loop
// with ElasticState restarted after a failure and grown when discovery offers more slots.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

import { failedHostOf } from './elastic-launch.js';
import { parseElasticMark } from './elastic-worker.js';
import { hostsNamedByPreflight, parseRunArgs } from './launch.js';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', 'dist', 'cli.js');
const loop = join(here, 'test-support', 'elastic-loop.mjs');
const ROWS = 60;

function script(body: string): string {
  const dir = scratchDir('braid-discovery-');
  const file = join(dir, 'discover.sh');
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

describe('braid run --elastic: options and what it reads', () => {
  it('parses the elastic options, with defaults, and refuses what does not go with them', () => {
    const plan = parseRunArgs(['--elastic', '--host-discovery-script', 'hosts.sh', '--min-np', '2', '--max-np', '8', '--slots-per-host', '2', 'train.mjs', '--epochs', '3']);
    expect(plan.elastic).toEqual({
      discoveryScript: join(process.cwd(), 'hosts.sh'),
      minNp: 2,
      maxNp: 8,
      maxRestarts: 3,
      slotsPerHost: 2,
      startTimeoutMs: 600_000,
      cooldownMs: 60_000,
    });
    expect(plan.command).toEqual(['train.mjs', '--epochs', '3']);
    const defaults = parseRunArgs(['--elastic', '--host-discovery-script', 'h.sh', '--start-timeout', '1.5', '--cooldown', '0', '--max-restarts', '0', 'a.mjs']).elastic!;
    expect([defaults.minNp, defaults.maxNp, defaults.startTimeoutMs, defaults.cooldownMs, defaults.maxRestarts]).toEqual([1, Number.MAX_SAFE_INTEGER, 1500, 0, 0]);
    expect(() => parseRunArgs(['--elastic', 'a.mjs'])).toThrow(/--elastic needs --host-discovery-script/);
    expect(() => parseRunArgs(['-np', '2', '--min-np', '2', 'a.mjs'])).toThrow(/--min-np is an option of elastic runs: add --elastic/);
    expect(() => parseRunArgs(['--elastic', '--host-discovery-script', 'h.sh', '-H', 'a:1', 'a.mjs'])).toThrow(/leave out -H and --hostfile/);
    expect(() => parseRunArgs(['--elastic', '--host-discovery-script', 'h.sh', '--min-np', '4', '--max-np', '2', 'a.mjs'])).toThrow(/--max-np \(2\) must be at least --min-np \(4\)/);
    expect(() => parseRunArgs(['--elastic', '--host-discovery-script', 'h.sh', '--min-np', '0', 'a.mjs'])).toThrow(/--min-np takes an integer >= 1; got "0"/);
    expect(() => parseRunArgs(['--elastic', '--host-discovery-script', 'h.sh', '--cooldown', 'soon', 'a.mjs'])).toThrow(/--cooldown takes a number >= 0/);
  });

  it('reads the ranks\' lines and names the failed host from mpirun\'s and Braid\'s messages', () => {
    expect(parseElasticMark('braid-elastic ready')).toEqual({ kind: 'ready' });
    expect(parseElasticMark('braid-elastic commit 800\r')).toEqual({ kind: 'commit', step: 800 });
    expect(parseElasticMark('braid-elastic step')).toBeUndefined();
    expect(parseElasticMark('epoch 1/3 braid-elastic step 4')).toBeUndefined();
    expect(failedHostOf('ORTE has lost communication with a remote daemon.\n\n  HNP daemon   : [[36383,0],0] on node h0\n  Remote daemon: [[36383,0],2] on node h2\n')).toBe('h2');
    expect(failedHostOf('mpirun noticed that process rank 1 with PID 0 on node vm3 exited on signal 9 (Killed).')).toBe('vm3');
    // A surviving rank's failure names the peer that stopped answering: that host is the one out.
    expect(failedHostOf('braid: rank 0 on host h0 exits with code 4: TIMEOUT: Rank 2 (host h2) did not answer within 3000 ms')).toBe('h2');
    // A connection closed by a peer that mpirun killed first while ending the job blames no host.
    expect(failedHostOf('braid: rank 1 on host h1 exits with code 1: ABORTED: the connection to rank 0 (host h0) was closed by that rank: its process ended or failed')).toBeUndefined();
    // A rank's own error (an exception in the script) blames no host.
    expect(failedHostOf('braid: rank 1 on host h1 exits with code 1: TypeError: x is not a function')).toBeUndefined();
    expect(hostsNamedByPreflight('could not start a process on hosts h1, h2 (unknown or unreachable host, or the launch agent failed): my node h0')).toEqual(['h1', 'h2']);
    expect(hostsNamedByPreflight('Node.js is not at /usr/bin/node on host b: every rank runs ...')).toEqual(['b']);
    expect(hostsNamedByPreflight('the script /a/train.mjs is not on hosts b, c: every rank runs it ...')).toEqual(['b', 'c']);
  });
});

describe('braid run --elastic on this machine', () => {
  const braid = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [cli, 'run', ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });

  it('a discovery script that fails, prints garbage or lists unknown hosts: an error naming it, exit 2, no job started', () => {
    const failing = script('echo "no cloud credentials" >&2; exit 3');
    let r = braid(['--elastic', '--host-discovery-script', failing, loop, 'x', 'y']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`braid: the host discovery script ${failing} exited with code 3: no cloud credentials`);
    const garbage = script('echo "localhost:2"; echo "hosts: none yet!"');
    r = braid(['--elastic', '--host-discovery-script', garbage, loop, 'x', 'y']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`braid: the host discovery script ${garbage} printed "hosts: none yet!" on line 2; it must print one "host" or "host:slots" per line`);
    const unknown = script('echo localhost; echo no-such-host.invalid:4');
    r = braid(['--elastic', '--host-discovery-script', unknown, loop, 'x', 'y']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`braid: the host discovery script ${unknown} listed a host this machine cannot resolve: no-such-host.invalid`);
    const two = script('echo "# the hosts up now"; echo localhost:2');
    r = braid(['--elastic', '--host-discovery-script', two, '--dry-run', loop, 'x', 'y']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^mpirun -np 2 -H localhost:2 .* -x BRAID_ELASTIC .*elastic-loop\.mjs x y\n$/);
    r = braid(['--elastic', '--host-discovery-script', join(tmpdir(), 'no-such-script.sh'), loop, 'x', 'y']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/does not exist or is not executable/);
  });

  it('a job that fails every time: restarted --max-restarts times, then an error listing every failure, exit 1', () => {
    const dir = scratchDir('braid-elastic-fail-');
    const job = join(dir, 'fail.mjs');
    writeFileSync(job, 'process.stderr.write("no data at /data/train\\n"); process.exit(3);\n');
    const r = braid(['--elastic', '--host-discovery-script', script('echo localhost:2'), '--max-restarts', '1', '--cooldown', '0', job]);
    expect(r.status).toBe(1);
    expect(r.stderr.match(/braid run: (starting|restarting) on 1 host \(2 ranks\): localhost:2/g)).toHaveLength(2);
    expect(r.stderr).toMatch(/braid run: giving up after 2 failures \(--max-restarts 1\): the job failed \(rank \d exited with code 3\); the job failed \(rank \d exited with code 3\)\n/);
  });

  function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string; out: string; results: any[] }> {
    const out = scratchDir('braid-elastic-loop-');
    const commits = join(out, 'commits');
    const child = spawn(process.execPath, [cli, 'run', '--elastic', ...args, loop, commits, out], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), 110_000);
    return new Promise((resolve) =>
      child.on('exit', (code) => {
        clearTimeout(killer);
        const results = [0, 1, 2].map((r) => join(out, `rank-${r}.json`)).filter(existsSync).map((f) => JSON.parse(readFileSync(f, 'utf8')));
        resolve({ code, stderr, out, results });
      }),
    );
  }

  it('ElasticState: a rank failing after step 5 (commits every 2): the job restarts from the commit at step 4; every row trained once an epoch', async () => {
    const found = script('echo localhost:2');
    const r = await run(['--host-discovery-script', found, '--min-np', '2', '--cooldown', '0'], { FAIL_AT_STEP: '5', COMMIT_EVERY: '2', EPOCHS: '3' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('braid run: starting on 1 host (2 ranks): localhost:2');
    expect(r.stderr).toMatch(/braid run: the job failed; restarting on 1 host \(2 ranks\) from the commit at step 4/);
    expect(r.stderr).toMatch(/braid run: finished on 2 ranks after 2 runs \(1 failure: the job failed \(rank 1 on host \S+ exited with code 3\)\)/);
    expect(r.results.map((x) => [x.attempt, x.restored, x.resumedAt, x.resets])).toEqual([
      [2, true, 4, []],
      [2, true, 4, []],
    ]);
    // 6 steps an epoch on 2 ranks: 18 in all.
    for (const x of r.results) expect(x.values).toEqual({ epoch: 3, position: 0, step: 18 });
    for (const x of r.results) expect(x.counts).toEqual(Array(ROWS).fill(3));
  }, 120_000);

  it('ElasticState: discovery offers a third slot: the job stops at its next commit, every rank together, and goes on on 3; onReset says 2 -> 3', async () => {
    const slots = join(scratchDir('braid-slots-'), 'slots');
    writeFileSync(slots, '2');
    const found = script(`echo localhost:$(cat ${slots})`);
    const r = await run(['--host-discovery-script', found, '--min-np', '2', '--max-np', '3'], { GROW_FILE: slots, GROW_AT_STEP: '3', GROW_SLOTS: '3', COMMIT_EVERY: '4', EPOCHS: '4', STEP_MS: '150' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('braid run: new hosts available (1 host (3 ranks)): stopping at the next commit to grow');
    const grew = /braid run: growing to 1 host \(3 ranks\) from the commit at step (\d+)/.exec(r.stderr);
    expect(grew, r.stderr).not.toBeNull();
    const at = Number(grew![1]);
    expect(at % 4 === 0 || at % 6 === 0, `commits are every 4 steps and at each epoch's end (6 steps); the job stopped at ${at}`).toBe(true);
    expect(r.results).toHaveLength(3);
    for (const x of r.results) {
      expect(x).toMatchObject({ attempt: 2, size: 3, restored: true, resumedAt: at, resets: [{ size: 3, previousSize: 2, step: at }] });
      expect(x.values).toMatchObject({ epoch: 4, position: 0 });
    }
    // The epoch the job grew in: its rows left, dealt among 3 ranks, padded to a multiple of 3
    // with rows of the epoch's start (fit's and epochBatches' rule); the other epochs once each.
    const position = (at % 6) * 10;
    const pad = position === 0 ? 0 : (3 - ((ROWS - position) % 3)) % 3;
    const counts = r.results[0].counts as number[];
    for (const x of r.results) expect(x.counts).toEqual(counts);
    expect(Math.min(...counts)).toBe(4);
    expect(Math.max(...counts)).toBe(pad > 0 ? 5 : 4);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(4 * ROWS + pad);
  }, 120_000);
});
