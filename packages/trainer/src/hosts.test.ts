// Failures between hosts under `braid run`, on the namespace test bed (@braid/test-support/netns:
// each host a network namespace with its own address and hostname; mpirun reaches them through
// an rsh agent). Needs root and network namespaces; skipped otherwise, saying so.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { createHosts, netnsUnavailable } from '@braid/test-support/netns';
import { scratchDir } from '@braid/test-support/scratch';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', 'dist', 'cli.js');
const job = join(here, 'test-support', 'link-down-job.mjs');
const trainerWorker = join(here, 'test-support', 'worker.mjs');
const unavailable = netnsUnavailable();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function running(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

describe.skipIf(unavailable !== undefined)(`braid run on two hosts, one rank each${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let hosts: ReturnType<typeof createHosts>;
  beforeAll(() => {
    hosts = createHosts(2);
  });
  afterAll(() => hosts?.destroy());

  async function braidRun(env: Record<string, string>, cut: () => Promise<void>) {
    const dir = scratchDir('braid-hosts-');
    const cmd = hosts.on(0, [process.execPath, cli, 'run', '-np', '2', ...hosts.braidRunArgs(), job, dir]);
    const child = spawn(cmd[0]!, cmd.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exit = new Promise<{ code: number | null; at: number }>((resolve) => child.on('exit', (code) => resolve({ code, at: Date.now() })));
    const killer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    for (let i = 0; i < 300 && !(existsSync(join(dir, 'ready-0')) && existsSync(join(dir, 'ready-1'))); i++) await sleep(50);
    const cutAt = Date.now();
    await cut();
    const ended = await exit;
    clearTimeout(killer);
    const pids = [0, 1].map((r) => Number(readFileSync(join(dir, `pid-${r}`), 'utf8')));
    await sleep(500);
    const leftRanks = pids.filter(running);
    hosts.link(1, true);
    const results = [0, 1].map((r) => (existsSync(join(dir, `rank-${r}.json`)) ? JSON.parse(readFileSync(join(dir, `rank-${r}.json`), 'utf8')) : undefined));
    return { ...ended, cutAt, stderr, results, leftRanks };
  }

  it('a link down for 0.5 s (shorter than timeoutMs) rides through: no error, exact results', async () => {
    const run = await braidRun({ TIMEOUT_MS: '8000', ITERATIONS: '120' }, async () => {
      hosts.link(1, false);
      await sleep(500);
      hosts.link(1, true);
    });
    expect(run.code, run.stderr).toBe(0);
    for (const r of run.results) {
      expect(r.outcome.code).toBe('OK');
      expect(r.iterations).toBe(120);
      expect(r.wrong).toBe(0);
    }
    expect(run.results.map((r) => r.host)).toEqual(['h0', 'h1']);
  });

  it('a link that stays down: TIMEOUT on every rank naming the unreachable rank and host within timeoutMs + 5 s; the ranks end and braid run fails, naming a rank and host', async () => {
    const timeoutMs = 3000;
    const run = await braidRun({ TIMEOUT_MS: String(timeoutMs), ITERATIONS: '100000' }, async () => hosts.link(1, false));
    expect(run.code).not.toBe(0);
    const [zero, one] = run.results;
    for (const [r, other, host] of [[zero, 1, 'h1'], [one, 0, 'h0']] as const) {
      expect(r, run.stderr).toBeDefined();
      expect(r.outcome.code).toBe('TIMEOUT');
      // From the agreement step (the other rank never arrived) or the data phase (it stopped answering).
      expect(r.outcome.message).toMatch(new RegExp(`[Rr]ank ${other} \\(host ${host}\\) (has not submitted|did not answer|does not answer)`));
      expect(r.outcome.at - run.cutAt).toBeLessThan(timeoutMs + 5000);
    }
    // No rank stays blocked in MPI_Finalize (bounded at 10 s), and braid run does not wait for
    // mpirun's lost daemon (its watchdog, 15 s after a rank failed).
    expect(run.leftRanks).toEqual([]);
    expect(run.at - run.cutAt).toBeLessThan(timeoutMs + 5000 + 15_000 + 5000);
    expect(run.stderr).toMatch(/braid run: the job failed \(exit code \d+\): rank \d on host h\d/);
  });

  // `braid run` of the trainer's worker on the hosts; results land in a shared folder, the
  // checkpoints in /run/braid-host, which each host sees on its own.
  // Started from host `from` (Open MPI places the first ranks on the host it starts on).
  function trainer(placement: string, np: number, args: string[], env: Record<string, string> = {}, from = 0): Promise<{ code: number | null; stderr: string; results: any[] }> {
    const out = scratchDir('braid-hosts-trainer-');
    const cmd = hosts.on(from, [process.execPath, cli, 'run', '-np', String(np), ...hosts.braidRunArgs(placement), trainerWorker, ...args, out]);
    return new Promise((resolve) => {
      const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (code) => {
        const results = Array.from({ length: np }, (_, r) => join(out, `rank-${r}.json`)).filter(existsSync).map((f) => JSON.parse(readFileSync(f, 'utf8')));
        resolve({ code, stderr, results });
      });
    });
  }

  it('2 hosts x 2 ranks, no shared file system: a run killed mid-epoch and resumed ends bitwise where an uninterrupted one does', async () => {
    const tag = `${process.pid}-${Date.now()}`;
    const straight = `/run/braid-host/a-${tag}`;
    const crashed = `/run/braid-host/b-${tag}`;
    const a = await trainer('h0:2,h1:2', 4, ['resume', 'adam', straight]);
    expect(a.code, a.stderr).toBe(0);
    const stepsPerEpoch = Math.ceil(Math.ceil(90 / 4) / 4);
    const b = await trainer('h0:2,h1:2', 4, ['resume', 'adam', crashed, String(stepsPerEpoch + 3)]);
    expect(b.code).not.toBe(0);
    // Only h0 holds the checkpoints; h1 sees an empty /run/braid-host.
    const onHost = (i: number, dir: string) => spawnSync(hosts.on(i, ['ls', dir])[0]!, hosts.on(i, ['ls', dir]).slice(1), { encoding: 'utf8' }).stdout.trim();
    expect(onHost(0, crashed)).toMatch(/ckpt-/);
    expect(onHost(1, crashed)).toBe('');
    const c = await trainer('h0:2,h1:2', 4, ['resume', 'adam', crashed]);
    expect(c.code, c.stderr).toBe(0);
    expect(c.results[0].resumedFrom).toMatch(/ckpt-\d{9}$/);
    for (const r of c.results) expect(r.weights).toBe(a.results[0].weights);
    expect(c.results[0].history).toEqual(a.results[0].history);
  }, 120_000);

  it('checkpoints on every host: h0\'s copy lost, the job resumes from h1\'s own copy, bitwise, whether rank 0 runs on h1 or on h0 (the rank holding the newest copy reads it)', async () => {
    const tag = `${process.pid}-${Date.now()}`;
    const straight = `/run/braid-host/e-${tag}`;
    const crashed = `/run/braid-host/f-${tag}`;
    const everyHost = { BRAID_TEST_CHECKPOINT_EVERY_HOST: '1' };
    const a = await trainer('h0:2,h1:2', 4, ['resume', 'adam', straight]);
    expect(a.code, a.stderr).toBe(0);
    const stepsPerEpoch = Math.ceil(Math.ceil(90 / 4) / 4);
    const b = await trainer('h0:2,h1:2', 4, ['resume', 'adam', crashed, String(stepsPerEpoch + 3)], everyHost);
    expect(b.code).not.toBe(0);
    const onHost = (i: number, argv: string[]) => spawnSync(hosts.on(i, argv)[0]!, hosts.on(i, argv).slice(1), { encoding: 'utf8' });
    expect(onHost(0, ['ls', crashed]).stdout).toMatch(/ckpt-/);
    expect(onHost(1, ['ls', crashed]).stdout).toBe(onHost(0, ['ls', crashed]).stdout);
    // h0's disk is lost: rank 0 (and 1) now run on h1, which has its own copy.
    onHost(0, ['rm', '-rf', crashed]);
    // A copy of the crashed run's checkpoints, for the second variant below.
    const copy = `${crashed}-copy`;
    onHost(1, ['cp', '-a', crashed, copy]);
    const c = await trainer('h0:2,h1:2', 4, ['resume', 'adam', crashed], everyHost, 1);
    expect(c.code, c.stderr).toBe(0);
    expect(c.results[0].host).toBe('h1');
    expect(c.results[0].resumedFrom).toMatch(/ckpt-\d{9}$/);
    for (const r of c.results) expect(r.weights).toBe(a.results[0].weights);
    expect(c.results[0].history).toEqual(a.results[0].history);
    // Rank 0 on h0, which has no copy at all: ranks 2 and 3 on h1 hold the newest, rank 2 reads it.
    const d = await trainer('h0:2,h1:2', 4, ['resume', 'adam', copy], everyHost, 0);
    expect(d.code, d.stderr).toBe(0);
    expect(d.results[0].host).toBe('h0');
    expect(d.results[0].resumedFrom).toBe(c.results[0].resumedFrom.replace(crashed, copy));
    for (const r of d.results) expect(r.weights).toBe(a.results[0].weights);
    // Both hosts hold the final checkpoint again.
    expect(onHost(0, ['cat', `${crashed}/latest`]).stdout).toBe(onHost(1, ['cat', `${crashed}/latest`]).stdout);
  }, 180_000);

  // braid run checks every host before the job: it can start a process there, and this machine's
  // Node.js is at the same path (every rank runs it by that path).
  function braidRunOn(placement: string): { code: number | null; stderr: string; ms: number } {
    const started = Date.now();
    const cmd = hosts.on(0, [process.execPath, cli, 'run', '-np', '2', ...hosts.braidRunArgs(placement), trainerWorker, 'never-runs']);
    const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 90_000 });
    return { code: r.status, stderr: r.stderr ?? '', ms: Date.now() - started };
  }

  it('a host that does not exist: braid run fails before the job, naming it', () => {
    const r = braidRunOn('h0:1,nosuchhost:1');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/braid run: could not start a process on host nosuchhost \(unknown or unreachable host/);
    expect(r.ms).toBeLessThan(60_000);
  });

  it('Node.js missing at this machine\'s path on a host: braid run says so before the job', () => {
    // Hide the binary in h1's mount namespace only.
    expect(spawnSync(hosts.on(1, ['mount', '--bind', '/dev/null', process.execPath])[0]!, hosts.on(1, ['mount', '--bind', '/dev/null', process.execPath]).slice(1)).status).toBe(0);
    try {
      const r = braidRunOn('h0:1,h1:1');
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`braid run: Node.js is not at ${process.execPath} on host h1: every rank runs this machine's Node.js by its path`);
    } finally {
      const undo = hosts.on(1, ['umount', process.execPath]);
      spawnSync(undo[0]!, undo.slice(1));
    }
  });

  it('the script missing on a host: braid run says so before the job, naming the host', () => {
    const dir = scratchDir('braid-hosts-script-');
    const script = join(dir, 'train.mjs');
    writeFileSync(script, 'process.exit(0);\n');
    // An empty folder over it in h1's mount namespace only.
    const hide = hosts.on(1, ['mount', '-t', 'tmpfs', 'none', dir]);
    expect(spawnSync(hide[0]!, hide.slice(1)).status).toBe(0);
    try {
      const cmd = hosts.on(0, [process.execPath, cli, 'run', '-np', '2', ...hosts.braidRunArgs('h0:1,h1:1'), script]);
      const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 90_000 });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`braid run: the script ${script} is not on host h1: every rank runs it by the same path, so copy it there`);
    } finally {
      const undo = hosts.on(1, ['umount', dir]);
      spawnSync(undo[0]!, undo.slice(1));
    }
  });

  it('braid calibrate across 2 hosts x 2 ranks writes a profile with every link class; plan and init read it (rank 0\'s host alone has the file)', async () => {
    const profile = `/run/braid-host/profile-${process.pid}-${Date.now()}.json`;
    const cmd = hosts.on(0, [process.execPath, cli, 'calibrate', '-np', '4', ...hosts.braidRunArgs('h0:2,h1:2'), '--out', profile, '--seconds', '0.2']);
    const calibrated = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 120_000 });
    expect(calibrated.status, calibrated.stderr).toBe(0);
    const read = (i: number) => spawnSync(hosts.on(i, ['cat', profile])[0]!, hosts.on(i, ['cat', profile]).slice(1), { encoding: 'utf8' });
    const p = JSON.parse(read(0).stdout);
    expect(p.format).toBe('braid-profile');
    expect(p.hosts).toEqual(['h0', 'h1']);
    expect(p.defaulted).toEqual([]);
    expect(Object.keys(p.measured).sort()).toEqual(['allPeers', 'crossAll', 'local', 'localAll', 'ncclStaged', 'network', 'overlap', 'reduce', 'ringStep', 'sharedMemory']);
    // Every op's fixed cost across hosts is the agreement's exchange: the all-peers one, of 8 bytes.
    expect(p.measured.allPeers.exchangeUs.map((q: number[]) => q[0])).toEqual([8, 4096, 65536, 262144, 1 << 20, 4 << 20]);
    expect(p.numbers.opUs).toBeCloseTo(p.measured.allPeers.exchangeUs[0][1], 2);
    // The staged NCCL all-reduce needs a GPU and NCCL on every rank: the profile says why it skipped.
    if (!p.measured.ncclStaged.allReduceUs) expect(p.measured.ncclStaged.skipped).toMatch(/^rank 0: /);
    expect(p.version).toBe(2);
    expect([p.numbers.calibratedHosts, p.numbers.calibratedPerHost]).toEqual([2, 2]);
    expect(p.numbers.overlap).toBeGreaterThanOrEqual(0);
    expect(p.numbers.overlap).toBeLessThanOrEqual(1);
    for (const [field, value] of Object.entries(p.numbers as Record<string, number>)) if (field !== 'overlap') expect(value, field).toBeGreaterThan(0);
    expect(read(1).status).not.toBe(0); // h1 has no such file
    const plan = hosts.on(0, [process.execPath, cli, 'plan', '--params', '1000000', '--hosts', '2', '--ranks-per-host', '2', '--link', '1gbit', '--profile', profile, '--json']);
    const planned = spawnSync(plan[0]!, plan.slice(1), { encoding: 'utf8' });
    expect(planned.status, planned.stderr).toBe(0);
    expect(JSON.parse(planned.stdout).numbers.shmBarrierUs).toBe(p.numbers.shmBarrierUs);
    // A job with BRAID_PROFILE: rank 0 (h0) reads it and every rank uses it; h1's ranks have none.
    const out = scratchDir('braid-hosts-profile-');
    const job = hosts.on(0, ['env', `BRAID_PROFILE=${profile}`, process.execPath, cli, 'run', '-np', '4', ...hosts.braidRunArgs('h0:2,h1:2'), trainerWorker, 'allreduce', out]);
    const ran = spawnSync(job[0]!, job.slice(1), { encoding: 'utf8', timeout: 120_000 });
    expect(ran.status, ran.stderr).toBe(0);
    for (let r = 0; r < 4; r++) {
      const result = JSON.parse(readFileSync(join(out, `rank-${r}.json`), 'utf8'));
      expect(result.ok, result.message).toBe(true);
      expect(result.sums).toEqual([10, 10, 10]);
    }
  }, 180_000);
});
