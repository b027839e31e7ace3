// How a failed job ends under `braid run`: a rank killed mid-training, a rank gone silent.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

import { describeFailure, removeMpirunSessionDir, removeStaleShmRegions } from './launch.js';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', 'dist', 'cli.js');
const job = join(here, 'test-support', 'failing-job.mjs');

function braidRun(np: number, mode: string, dir: string): Promise<{ code: number | null; stderr: string; endedAt: number }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, 'run', '-np', String(np), job, mode, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, endedAt: Date.now() });
    });
  });
}

// Running (a zombie waiting to be reaped by init has ended), checked for up to 3 s.
async function alive(pid: number): Promise<boolean> {
  for (let i = 0; i < 30; i++) {
    let state = '';
    try {
      state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] ?? '';
    } catch {
      return false;
    }
    if (state === 'Z' || state === 'X') return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}

// The regions these pids created ("braid-<pid>-<n>"): other jobs on the machine come and go.
const regionsOf = (pids: number[]) => readdirSync('/dev/shm').filter((f) => pids.some((pid) => f.startsWith(`braid-${pid}-`)));

describe.each([2, 3])('braid run -np %i', (np) => {
  it('a rank SIGKILLed mid-training: the job ends within 10 s, non-zero, naming the rank and host; no /dev/shm entries, no stray processes', async () => {
    const dir = scratchDir('braid-kill-');
    const run = await braidRun(np, 'kill', dir);
    const killedAt = Number(readFileSync(join(dir, 'killed-at'), 'utf8'));
    expect(run.code).not.toBe(0);
    expect(run.endedAt - killedAt).toBeLessThan(10_000);
    expect(run.stderr).toMatch(/braid run: the job failed \(exit code \d+\): rank 1 on host \S+ was killed by signal 9/);
    const pids = Array.from({ length: np }, (_, r) => Number(readFileSync(join(dir, `pid-${r}`), 'utf8')));
    expect(regionsOf(pids)).toEqual([]);
    for (const [r, pid] of pids.entries()) expect(await alive(pid), `rank ${r}`).toBe(false);
  });
});

describe('braid run -np 3, a rank that goes silent', () => {
  it('the others get TIMEOUT naming it within timeoutMs + 5 s, the job ends non-zero naming a rank and host, nothing left behind', async () => {
    const dir = scratchDir('braid-silent-');
    const run = await braidRun(3, 'timeout', dir);
    const silentAt = Number(readFileSync(join(dir, 'silent-at'), 'utf8'));
    expect(run.code).not.toBe(0);
    for (const r of [0, 1]) {
      const error = JSON.parse(readFileSync(join(dir, `error-${r}.json`), 'utf8'));
      expect(error.code).toBe('TIMEOUT');
      expect(error.message).toMatch(/rank 2/);
      expect(error.at - silentAt).toBeLessThan(3000 + 5000);
    }
    expect(run.stderr).toMatch(/braid run: the job failed \(exit code \d+\): rank \d on host \S+/);
    for (let r = 0; r < 3; r++) expect(await alive(Number(readFileSync(join(dir, `pid-${r}`), 'utf8'))), `rank ${r}`).toBe(false);
  });
});

describe('braid run -np 3, a parameter server (rank 0) that fails', () => {
  it('killed: the job ends within 10 s, non-zero, naming rank 0 and its host; nothing left behind', async () => {
    const dir = scratchDir('braid-ps-kill-');
    const run = await braidRun(3, 'ps-kill', dir);
    const stoppedAt = Number(readFileSync(join(dir, 'server-stopped-at'), 'utf8'));
    expect(run.code).not.toBe(0);
    expect(run.endedAt - stoppedAt).toBeLessThan(10_000);
    expect(run.stderr).toMatch(/braid run: the job failed \(exit code \d+\): rank 0 on host \S+ was killed by signal 9/);
    for (let r = 0; r < 3; r++) expect(await alive(Number(readFileSync(join(dir, `pid-${r}`), 'utf8'))), `rank ${r}`).toBe(false);
  });

  it('silent: every worker fails with TIMEOUT naming the server, its rank and the step, within timeoutMs + 5 s', async () => {
    const dir = scratchDir('braid-ps-silent-');
    const run = await braidRun(3, 'ps-silent', dir);
    const stoppedAt = Number(readFileSync(join(dir, 'server-stopped-at'), 'utf8'));
    expect(run.code).not.toBe(0);
    for (const [worker, r] of [[0, 1], [1, 2]] as const) {
      const error = JSON.parse(readFileSync(join(dir, `error-${r}.json`), 'utf8'));
      expect(error.code).toBe('TIMEOUT');
      // Its push is not taken (the server receives nothing more), or its answer never comes.
      expect(error.message).toMatch(new RegExp(`^ParameterServer: worker ${worker} \\(rank ${r}\\) (could not push its gradients to|got no weights back from) server 0 \\(rank 0\\) at step 11: .*rank 0 \\(host \\S+\\)`));
      expect(error.at - stoppedAt).toBeLessThan(3000 + 5000);
    }
    for (let r = 0; r < 3; r++) expect(await alive(Number(readFileSync(join(dir, `pid-${r}`), 'utf8'))), `rank ${r}`).toBe(false);
  });
});

describe('failure reports and clean-up', () => {
  it('describeFailure names the rank and host from mpirun\'s and Braid\'s messages', () => {
    expect(describeFailure('mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).')).toBe(
      'rank 1 on host vm was killed by signal 9 (Killed)',
    );
    expect(describeFailure('braid: rank 2 on host b exits with code 4: TIMEOUT: rank 0 did not answer')).toBe('rank 2 on host b exited with code 4: TIMEOUT: rank 0 did not answer');
    expect(describeFailure('  Process name: [[8879,1],1]\n  Exit code:    4\n')).toBe('rank 1 exited with code 4');
    expect(describeFailure('all fine')).toBeUndefined();
  });

  it('removes /dev/shm regions whose creator is gone, and only those', () => {
    const dir = scratchDir('braid-shm-');
    // A pid that surely ran and ended: a child that exited.
    const deadPid = 2 ** 22 + 17;  // above the default pid_max on most systems: never alive
    writeFileSync(join(dir, `braid-${deadPid}-0`), '');
    writeFileSync(join(dir, `braid-${process.pid}-0`), '');
    writeFileSync(join(dir, 'other-file'), '');
    expect(removeStaleShmRegions(dir)).toBe(1);
    expect(existsSync(join(dir, `braid-${deadPid}-0`))).toBe(false);
    expect(existsSync(join(dir, `braid-${process.pid}-0`))).toBe(true);
    expect(existsSync(join(dir, 'other-file'))).toBe(true);
  });

  it("removes the session folder of a mpirun that ended (Open MPI's, under its temporary folder), and only that one", () => {
    const base = scratchDir('braid-session-');
    const uid = process.getuid!();
    const folder = (pid: number) => join(base, `ompi.testhost.${uid}`, `pid.${pid}`);
    for (const pid of [4321, 4322]) {
      mkdirSync(join(folder(pid), 'pmix_dstor_ds21'), { recursive: true });
      writeFileSync(join(folder(pid), 'contact.txt'), 'x');
    }
    removeMpirunSessionDir(4321, { TMPDIR: base }, 'testhost');
    expect([existsSync(folder(4321)), existsSync(folder(4322))]).toEqual([false, true]);
    // Open MPI's own setting wins over TMPDIR, as it does for Open MPI.
    removeMpirunSessionDir(4322, { TMPDIR: '/nonexistent', OMPI_MCA_orte_tmpdir_base: base }, 'testhost');
    expect(existsSync(folder(4322))).toBe(false);
  });

  // python3 maps a file and holds it (Node cannot map files).
  const python = spawnSync('python3', ['--version']).status === 0;
  it.skipIf(!python)(`removes Open MPI's segments of killed ranks: old, ours, and neither open nor mapped by any process${python ? '' : ' (skipped: needs python3 to map a file)'}`, async () => {
    const dir = scratchDir('braid-shm-');
    const segment = (name: string, ageS: number) => {
      writeFileSync(join(dir, name), 'x'.repeat(4096));
      const then = Date.now() / 1000 - ageS;
      utimesSync(join(dir, name), then, then);
      return join(dir, name);
    };
    const orphan = segment('vader_segment.vm.0.47ca0001.0', 60);
    const fresh = segment('vader_segment.vm.0.47ca0001.1', 0);  // a rank that is about to map it
    const open = segment('vader_segment.vm.0.47ca0001.2', 60);
    const mapped = segment('sm_segment.vm.0.47ca0002.0', 60);
    const other = segment('vader-notes', 60);
    // Processes that hold a segment: one through an open descriptor, one through a mapping only.
    const fd = openSync(open, 'r');
    const holder = spawn('sleep', ['60'], { stdio: [fd, 'ignore', 'ignore'] });
    closeSync(fd);
    const mapper = spawn('python3', ['-c', 'import mmap, sys, time\nf = open(sys.argv[1], "r+b")\nm = mmap.mmap(f.fileno(), 0)\nf.close()\nprint("mapped", flush=True)\ntime.sleep(60)', mapped], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        mapper.stdout!.once('data', () => resolve());
        mapper.once('exit', (code) => reject(new Error(`python3 mmap exited with ${code}`)));
      });
      expect(removeStaleShmRegions(dir)).toBe(1);
      expect([orphan, fresh, open, mapped, other].map((p) => existsSync(p))).toEqual([false, true, true, true, true]);
    } finally {
      holder.kill('SIGKILL');
      mapper.kill('SIGKILL');
    }
  });
});
