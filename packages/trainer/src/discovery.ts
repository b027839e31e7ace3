// Host discovery for elastic jobs (issue 11), as Horovod Elastic's --host-discovery-script: an
// executable that prints the hosts available now, one `host` or `host:slots` per line. The elastic
// launcher runs it before every (re)start and while the job runs; anything wrong with it is an
// error naming the script and what to fix, never a guess.
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { resolve } from 'node:path';

import { UsageError } from './launch.js';

export interface DiscoveredHost {
  host: string;
  slots: number;
}

export interface DiscoveryOptions {
  /** Slots of a host listed without `:slots` (--slots-per-host); default 1. */
  slotsPerHost?: number;
  /** The script is killed and discovery fails past this; default 10 s. */
  timeoutMs?: number;
  /** How a host name is checked (tests replace it); default: it must resolve (DNS or /etc/hosts). */
  resolves?: (host: string) => Promise<boolean>;
}

const HOST_LINE = /^([A-Za-z0-9][A-Za-z0-9._-]*)(?::(\d+))?$/;

async function resolvesByName(host: string): Promise<boolean> {
  try {
    await lookup(host);
    return true;
  } catch {
    return false;
  }
}

/**
 * The hosts `output` lists: one `host` or `host:slots` per line; blank lines and `#` comments are
 * skipped. Throws UsageError naming `script`, the line number and the line for anything else, and
 * for a host listed twice or zero slots.
 */
export function parseDiscovery(script: string, output: string, slotsPerHost = 1): DiscoveredHost[] {
  const hosts: DiscoveredHost[] = [];
  const lines = output.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*/, '').trim();
    if (line === '') continue;
    const m = HOST_LINE.exec(line);
    if (!m) {
      throw new UsageError(
        `the host discovery script ${script} printed ${JSON.stringify(lines[i]!.slice(0, 120))} on line ${i + 1}; it must print one "host" or "host:slots" per line (e.g. "node1:4")`,
      );
    }
    const host = m[1]!;
    const slots = m[2] === undefined ? slotsPerHost : Number(m[2]);
    if (!Number.isSafeInteger(slots) || slots < 1) {
      throw new UsageError(`the host discovery script ${script} gave ${host} ${m[2]} slots on line ${i + 1}; slots must be a positive integer`);
    }
    if (hosts.some((h) => h.host === host)) {
      throw new UsageError(`the host discovery script ${script} listed ${host} twice (line ${i + 1}); list each host once, with its slots`);
    }
    hosts.push({ host, slots });
  }
  return hosts;
}

/**
 * Runs the discovery script and returns the hosts it lists (possibly none: no host is available
 * now). Fails with UsageError naming the script when it is missing or not executable, exits
 * non-zero (with the end of its stderr), runs past the timeout, prints anything but host lines,
 * or lists a host whose name does not resolve.
 */
export async function discoverHosts(scriptPath: string, options: DiscoveryOptions = {}): Promise<DiscoveredHost[]> {
  const script = resolve(scriptPath);
  const slotsPerHost = options.slotsPerHost ?? 1;
  if (!Number.isSafeInteger(slotsPerHost) || slotsPerHost < 1) throw new UsageError(`--slots-per-host must be a positive integer; got ${slotsPerHost}`);
  try {
    if (!statSync(script).isFile()) throw new Error('not a file');
    accessSync(script, constants.X_OK);
  } catch {
    throw new UsageError(`the host discovery script ${script} does not exist or is not executable (chmod +x it)`);
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  const { code, signal, stdout, stderr, timedOut } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean }>(
    (done, fail) => {
      // In a process group of its own: at the timeout the whole group goes (a shell's `sleep`
      // would otherwise keep the pipes open, and the launcher waiting, after the shell died).
      const child = spawn(script, [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }, timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        fail(new UsageError(`the host discovery script ${script} could not be started: ${err.message}`));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        done({ code, signal, stdout, stderr, timedOut });
      });
    },
  );
  if (timedOut) throw new UsageError(`the host discovery script ${script} did not finish within ${timeoutMs} ms; it must print the hosts available now and exit`);
  if (code !== 0) {
    const tail = stderr.trim().split('\n').slice(-3).join(' | ');
    throw new UsageError(
      `the host discovery script ${script} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}${tail ? `: ${tail}` : ''}`,
    );
  }
  const hosts = parseDiscovery(script, stdout, slotsPerHost);
  const resolves = options.resolves ?? resolvesByName;
  const unknown: string[] = [];
  for (const { host } of hosts) if (!(await resolves(host))) unknown.push(host);
  if (unknown.length > 0) {
    throw new UsageError(
      `the host discovery script ${script} listed ${unknown.length === 1 ? 'a host' : 'hosts'} this machine cannot resolve: ${unknown.join(', ')} (check the script's output and /etc/hosts or DNS)`,
    );
  }
  return hosts;
}
