// One mpirun job of `braid run`: started, its stderr passed on line by line (a caller may take
// lines of its own out), the rank that failed named, and a job whose rank failed ended even when
// mpirun waits for a host that cannot answer.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';

import { describeFailure, hostsOf, mpirunCommand, PREFLIGHT_MARK, preflightCommand, preflightProblem, removeMpirunSessionDir, removeStaleShmRegions, type RunPlan, shellLine } from './launch.js';

export interface JobOptions {
  /** Variables added to the job's environment. */
  env?: NodeJS.ProcessEnv;
  /** Each whole line of mpirun's stderr; return true to keep it from the user's stderr. */
  onStderrLine?: (line: string) => boolean;
}

export interface JobEnd {
  /** The job's status: mpirun's, or, when a rank failed, that rank's. */
  status: number;
  /** What failed, in words (describeFailure), when it could be told. */
  failure?: string;
  /** The end of mpirun's stderr (64 KiB), to find what failed. */
  tail: string;
  /** mpirun could not be started at all. */
  notStarted?: string;
}

export interface Job {
  child?: ChildProcess;
  done: Promise<JobEnd>;
}

const RANK_FAILED = /braid: rank \d+ on host \S+ exits with code [1-9]/;
const WATCHDOG_MS = 15_000;
const PREFLIGHT_MS = 60_000;
const MPIRUN_MISSING = 'mpirun is not on PATH (Debian/Ubuntu: sudo apt-get install -y openmpi-bin libopenmpi-dev)';

/** Starts the plan's mpirun job. */
export function startJob(plan: RunPlan, options: JobOptions = {}): Job {
  const command = mpirunCommand(plan, { ...process.env, ...options.env }, { isRoot: process.getuid?.() === 0, isTTY: Boolean(process.stdout.isTTY) });
  if (plan.verbose) process.stdout.write(`${shellLine(command)}\n`);
  // mpirun's stderr passes through, and its last part is kept to name the rank that failed.
  const child = spawn(command.program, command.args, { env: command.env, stdio: ['inherit', 'inherit', 'pipe'] });
  const done = new Promise<JobEnd>((resolve) => {
    let tail = '';
    let partial = '';
    let watchdog: NodeJS.Timeout | undefined;
    let endedByWatchdog = false;
    const take = (text: string) => {
      tail = (tail + text).slice(-65536);
      // A rank failed: mpirun normally ends the job at once. If a host is unreachable, mpirun
      // can wait minutes for its daemon; past the ranks' own 10 s bound, end it here.
      if (!watchdog && RANK_FAILED.test(tail)) {
        watchdog = setTimeout(() => {
          endedByWatchdog = true;
          process.stderr.write(`braid run: mpirun did not end ${WATCHDOG_MS / 1000} s after a rank failed (a host may be unreachable); ending the job\n`);
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 3000).unref();
        }, WATCHDOG_MS);
      }
    };
    child.stderr!.on('data', (chunk: Buffer) => {
      if (!options.onStderrLine) {
        process.stderr.write(chunk);
        take(chunk.toString());
        return;
      }
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop()!;
      let out = '';
      for (const line of lines) if (!options.onStderrLine(line)) out += `${line}\n`;
      if (out) {
        process.stderr.write(out);
        take(out);
      }
    });
    child.on('error', (err) => {
      const notStarted = (err as NodeJS.ErrnoException).code === 'ENOENT' ? MPIRUN_MISSING : `could not start mpirun: ${err.message}`;
      resolve({ status: 127, tail, notStarted });
    });
    // 'exit', not 'close': a daemon on an unreachable host may hold mpirun's pipes.
    child.on('exit', (code, signal) => {
      clearTimeout(watchdog);
      if (partial && !options.onStderrLine?.(partial)) {
        process.stderr.write(`${partial}\n`);
        take(`${partial}\n`);
      }
      removeStaleShmRegions();
      if (child.pid !== undefined) removeMpirunSessionDir(child.pid, command.env);
      const failure = describeFailure(tail);
      let status = code ?? (signal ? 128 + 15 : 1);
      // A rank that failed fails the job, whatever mpirun's own status says.
      if ((status === 0 || endedByWatchdog) && failure) status = Number(/exit(?:s|ed) with code (\d+)/.exec(failure)?.[1] ?? 1) || 1;
      resolve({ status, failure, tail });
    });
  });
  return { child, done };
}

/** Every host named can start a process and has this machine's Node.js and the script at the same paths: undefined, or what is wrong. */
export function preflight(plan: RunPlan, hosts = hostsOf(plan), timeoutMs = PREFLIGHT_MS): string | undefined {
  const command = preflightCommand(plan, hosts, process.env, { isRoot: process.getuid?.() === 0 });
  if (plan.verbose) process.stdout.write(`${shellLine(command)}\n`);
  // Bounded: an unreachable host must not hold the launch (mpirun's keepalive would, for minutes).
  const r = spawnSync(command.program, command.args, { env: command.env, encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return MPIRUN_MISSING;
  const timedOut = r.error !== undefined || r.signal === 'SIGKILL';
  return preflightProblem(hosts, timedOut ? null : r.status, r.stdout ?? '', (r.stderr ?? '') + (timedOut ? `\nno answer within ${timeoutMs / 1000} s` : ''), process.execPath, plan.command[0]);
}

/**
 * The hosts, each checked on its own and all at once, that cannot start a process within
 * `timeoutMs` (one silent host makes a joint check fail on all of them, so each gets its own).
 */
export async function unreachableHosts(plan: RunPlan, hosts: string[], timeoutMs: number): Promise<string[]> {
  const answers = await Promise.all(
    hosts.map(
      (host) =>
        new Promise<boolean>((resolve) => {
          const command = preflightCommand(plan, [host], process.env, { isRoot: process.getuid?.() === 0 });
          const child = spawn(command.program, command.args, { env: command.env, stdio: ['ignore', 'pipe', 'ignore'] });
          let stdout = '';
          child.stdout!.on('data', (d) => (stdout += d));
          const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
          child.on('error', () => resolve(false));
          // 'exit', not 'close': a launch agent left behind may hold the pipe.
          child.on('exit', (code) => {
            clearTimeout(timer);
            resolve(code === 0 && stdout.includes(`${PREFLIGHT_MARK} ok`));
          });
        }),
    ),
  );
  return hosts.filter((_, i) => !answers[i]);
}
