// `braid run`: turns Horovod-style arguments into an mpirun command line. Kept apart from the
// CLI so the translation is tested on its own.
import { availableParallelism, hostname } from 'node:os';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';

export class UsageError extends Error {
  override name = 'UsageError';
}

export interface RunPlan {
  np: number;
  hosts?: string;
  hostfile?: string;
  timeline?: string;
  /** mpirun's --bind-to (default none, as horovodrun). */
  bindTo: string;
  /** --oversubscribe asked for (braid run adds it itself when N exceeds this machine's cores and no hosts are given). */
  oversubscribe?: boolean;
  dryRun: boolean;
  verbose: boolean;
  /** Extra arguments passed to mpirun as they are (after --mpi-args). */
  mpiArgs: string[];
  /** How mpirun starts processes on other hosts (Open MPI's plm_rsh_agent; default ssh). */
  agent?: string;
  /** --elastic: the hosts come from a discovery script and the job is restarted as they change. */
  elastic?: ElasticPlan;
  command: string[];
}

export interface ElasticPlan {
  discoveryScript: string;
  minNp: number;
  maxNp: number;
  maxRestarts: number;
  slotsPerHost: number;
  startTimeoutMs: number;
  cooldownMs: number;
}

export const RUN_USAGE = `usage: braid run -np N [-H host1:slots,host2:slots | --hostfile FILE] [--timeline trace.json]
                 [--bind-to none|core|socket] [--oversubscribe] [--agent rsh-agent] [--mpi-args "..."] [--dry-run] [--verbose] script.js [args...]
  Starts N copies of the script through mpirun, one rank each, with what Braid needs:
  permission to run as root, the job's environment (BRAID_*, NODE_*, PATH, LD_LIBRARY_PATH)
  passed to every rank, --oversubscribe when N exceeds this machine's cores and no hosts are
  given (or when asked for, e.g. for more ranks than a host's slots). A .js/.mjs/.cjs script runs under this Node.js; anything else runs as a command.
  --agent names the program that starts processes on other hosts (default ssh), e.g. the test
  bed's: --agent "$(scripts/cluster.sh agent)".

usage: braid run --elastic --host-discovery-script hosts.sh [--min-np N] [--max-np N] [--max-restarts 3]
                 [--slots-per-host 1] [--start-timeout 600] [--cooldown 60] [run options] script.js [args...]
  Elastic training (as horovodrun --elastic): the discovery script prints the hosts available now,
  one "host" or "host:slots" per line; the job starts on them (at least --min-np ranks, default 1,
  at most --max-np), and when a rank or host fails, the failed host is kept out for --cooldown
  seconds and the job restarts on the rest from its last commit (fit's checkpoints, ElasticState);
  when new hosts appear, the job stops at its next commit and restarts larger. It waits up to
  --start-timeout seconds for --min-np slots and gives up after --max-restarts failures. Every
  host must read the commits: a shared checkpointDir, or fit's checkpointOnEveryHost.`;

// Elastic options that take a number: [smallest value, integer only].
const ELASTIC_NUMBERS: Record<string, [number, boolean]> = {
  '--min-np': [1, true],
  '--max-np': [1, true],
  '--max-restarts': [0, true],
  '--slots-per-host': [1, true],
  '--start-timeout': [0, false],
  '--cooldown': [0, false],
};

export function parseRunArgs(argv: string[]): RunPlan {
  const plan: RunPlan = { np: 0, bindTo: 'none', dryRun: false, verbose: false, mpiArgs: [], command: [] };
  let elastic = false;
  const elasticValues: Record<string, number> = {};
  let discoveryScript: string | undefined;
  let i = 0;
  const value = (flag: string) => {
    const v = argv[++i];
    if (v === undefined) throw new UsageError(`${flag} needs a value\n${RUN_USAGE}`);
    return v;
  };
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      i++;
      break;
    }
    if (arg === '-np' || arg === '-n' || arg === '--np') {
      const raw = value(arg);
      const np = Number(raw);
      if (!Number.isInteger(np) || np < 1) throw new UsageError(`-np must be a positive integer; got ${JSON.stringify(raw)}`);
      plan.np = np;
    } else if (arg === '-H' || arg === '--hosts' || arg === '--host') plan.hosts = value(arg);
    else if (arg === '--hostfile' || arg === '-hostfile') plan.hostfile = value(arg);
    else if (arg === '--timeline') plan.timeline = resolve(value(arg));
    else if (arg === '--agent') plan.agent = resolve(value(arg));
    else if (arg === '--bind-to') {
      plan.bindTo = value(arg);
      if (!/^(none|core|socket|hwthread|numa|l3cache)$/.test(plan.bindTo)) throw new UsageError(`--bind-to takes none, core, socket, hwthread, numa or l3cache; got ${JSON.stringify(plan.bindTo)}`);
    } else if (arg === '--mpi-args') plan.mpiArgs.push(...value(arg).split(/\s+/).filter(Boolean));
    else if (arg === '--elastic') elastic = true;
    else if (arg === '--host-discovery-script') discoveryScript = resolve(value(arg));
    else if (Object.hasOwn(ELASTIC_NUMBERS, arg)) {
      const raw = value(arg);
      const n = Number(raw);
      const [min, integerOnly] = ELASTIC_NUMBERS[arg]!;
      if (!Number.isFinite(n) || n < min || (integerOnly && !Number.isInteger(n))) {
        throw new UsageError(`${arg} takes ${integerOnly ? 'an integer' : 'a number'} >= ${min}; got ${JSON.stringify(raw)}`);
      }
      elasticValues[arg] = n;
    } else if (arg === '--oversubscribe') plan.oversubscribe = true;
    else if (arg === '--dry-run') plan.dryRun = true;
    else if (arg === '--verbose' || arg === '-v') plan.verbose = true;
    else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}\n${RUN_USAGE}`);
    else break;
  }
  plan.command = argv.slice(i);
  if (plan.command.length === 0) throw new UsageError(`name the script to run\n${RUN_USAGE}`);
  const elasticOnly = Object.keys(elasticValues);
  if (!elastic && (discoveryScript || elasticOnly.length > 0)) {
    throw new UsageError(`${discoveryScript ? '--host-discovery-script' : elasticOnly[0]} is an option of elastic runs: add --elastic`);
  }
  if (elastic) {
    if (!discoveryScript) throw new UsageError('--elastic needs --host-discovery-script: a program that prints the hosts available now, one "host:slots" per line');
    if (plan.hosts || plan.hostfile) throw new UsageError('--elastic takes its hosts from --host-discovery-script; leave out -H and --hostfile');
    const minNp = elasticValues['--min-np'] ?? (plan.np || 1);
    const maxNp = elasticValues['--max-np'] ?? Number.MAX_SAFE_INTEGER;
    if (maxNp < minNp) throw new UsageError(`--max-np (${maxNp}) must be at least --min-np (${minNp})`);
    plan.elastic = {
      discoveryScript,
      minNp,
      maxNp,
      maxRestarts: elasticValues['--max-restarts'] ?? 3,
      slotsPerHost: elasticValues['--slots-per-host'] ?? 1,
      startTimeoutMs: (elasticValues['--start-timeout'] ?? 600) * 1000,
      cooldownMs: (elasticValues['--cooldown'] ?? 60) * 1000,
    };
    return plan;
  }
  if (plan.np === 0) throw new UsageError(`say how many ranks with -np N\n${RUN_USAGE}`);
  if (plan.hosts && plan.hostfile) throw new UsageError('give either -H or --hostfile, not both');
  if (plan.hosts) {
    for (const entry of plan.hosts.split(',')) {
      if (!/^[^:,\s]+(:\d+)?$/.test(entry)) throw new UsageError(`-H takes host:slots pairs separated by commas (e.g. -H node1:4,node2:4); got ${JSON.stringify(entry)}`);
    }
  }
  return plan;
}

const FORWARDED = /^(BRAID_|NODE_|OMPI_MCA_|UCX_|NCCL_|TF_|CUDA_VISIBLE_DEVICES$|PATH$|LD_LIBRARY_PATH$)/;

/** A command braid run starts with this machine's Node.js (anything else runs as given). */
export const NODE_SCRIPT = /\.(m|c)?js$/;

// Run before a Node.js script on every rank: TensorFlow's threads for the rank's share of its host.
const PRELOAD_THREADS = new URL('./preload-threads.js', import.meta.url).href;

export interface MpirunCommand {
  program: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

/** mpirun options that let it notice an unreachable host's daemon in about 16 s. */
export const MPIRUN_KEEPALIVE = ['--mca', 'oob_tcp_keepalive_time', '10', '--mca', 'oob_tcp_keepalive_intvl', '2', '--mca', 'oob_tcp_keepalive_probes', '3'];

export function mpirunCommand(plan: RunPlan, env: NodeJS.ProcessEnv, options: { isRoot: boolean; isTTY: boolean; cores?: number; node?: string }): MpirunCommand {
  const childEnv: NodeJS.ProcessEnv = { ...env };
  if (options.isRoot) {
    childEnv.OMPI_ALLOW_RUN_AS_ROOT = '1';
    childEnv.OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = '1';
  }
  if (plan.timeline) childEnv.BRAID_TIMELINE = plan.timeline;
  // Open MPI gives each rank's stdout a pseudo-terminal, so the ranks cannot tell a log from a
  // terminal themselves: say which one `braid run` writes to.
  if (!childEnv.BRAID_PROGRESS) childEnv.BRAID_PROGRESS = options.isTTY ? 'bar' : 'lines';
  const args = ['-np', String(plan.np)];
  if (plan.hosts) args.push('-H', plan.hosts);
  if (plan.hostfile) args.push('--hostfile', plan.hostfile);
  const cores = options.cores ?? availableParallelism();
  if (plan.oversubscribe || (!plan.hosts && !plan.hostfile && plan.np > cores)) args.push('--oversubscribe');
  // By default as horovodrun: no binding (the engine thread is not forced onto the training
  // thread's core), ranks placed slot by slot.
  args.push('--bind-to', plan.bindTo, '--map-by', 'slot');
  // A host whose link goes down answers nothing: Open MPI notices its daemon is gone only when
  // TCP keepalives fail (300 s + 9 x 20 s by default), and until then mpirun waits. 10 s + 3 x 2 s
  // ends such a job (non-zero) about 16 s after the ranks' own TIMEOUT.
  args.push(...MPIRUN_KEEPALIVE);
  if (plan.agent) args.push('--mca', 'plm_rsh_agent', plan.agent);
  for (const name of Object.keys(childEnv).filter((k) => FORWARDED.test(k)).sort()) args.push('-x', name);
  args.push(...plan.mpiArgs);
  const [first, ...rest] = plan.command;
  if (NODE_SCRIPT.test(first!)) args.push(options.node ?? process.execPath, '--import', PRELOAD_THREADS, first!, ...rest);
  else args.push(first!, ...rest);
  return { program: 'mpirun', args, env: childEnv };
}

/** The hosts a plan names (-H entries or the hostfile's lines), in order, each once. */
export function hostsOf(plan: RunPlan): string[] {
  let names: string[] = [];
  if (plan.hosts) names = plan.hosts.split(',').map((entry) => entry.split(':')[0]!);
  if (plan.hostfile) {
    if (!existsSync(plan.hostfile)) throw new UsageError(`the hostfile ${plan.hostfile} does not exist`);
    names = readFileSync(plan.hostfile, 'utf8')
      .split('\n')
      .map((line) => line.replace(/#.*/, '').trim())
      .filter(Boolean)
      .map((line) => line.split(/\s+/)[0]!);
    if (names.length === 0) throw new UsageError(`the hostfile ${plan.hostfile} names no hosts (one "host slots=N" per line)`);
  }
  return [...new Set(names)];
}

export const PREFLIGHT_MARK = 'braid-preflight';

/**
 * Before a job on other hosts: one process per host checks that the Node.js every rank will run
 * (this machine's, by its absolute path) is there, and the script too. mpirun passes both paths
 * to every host (a relative script path from the same working folder), so they must be there
 * everywhere; this says so before the job instead of after.
 */
export function preflightCommand(plan: RunPlan, hosts: string[], env: NodeJS.ProcessEnv, options: { isRoot: boolean; node?: string }): MpirunCommand {
  const job = mpirunCommand({ ...plan, np: hosts.length, hosts: hosts.map((h) => `${h}:1`).join(','), hostfile: undefined, command: ['true'] }, env, {
    ...options,
    isTTY: false,
  });
  // The job's options (agent, keepalive, --mpi-args, the environment), one process per host.
  const args = job.args.slice(0, -1).map((a) => (a === 'slot' ? 'node' : a));
  const check = `if [ ! -x "$1" ]; then echo "${PREFLIGHT_MARK} missing $(hostname)"; elif [ -n "$2" ] && [ ! -r "$2" ]; then echo "${PREFLIGHT_MARK} no-script $(hostname)"; else echo "${PREFLIGHT_MARK} ok $(hostname)"; fi`;
  const script = NODE_SCRIPT.test(plan.command[0] ?? '') ? plan.command[0]! : '';
  args.push('/bin/sh', '-c', check, 'sh', options.node ?? process.execPath, script);
  return { program: 'mpirun', args, env: job.env };
}

/** What a preflight's output says is wrong, in words; undefined when every host has Node.js and the script. */
export function preflightProblem(hosts: string[], status: number | null, stdout: string, stderr: string, node = process.execPath, script = ''): string | undefined {
  const answered = new Map<string, string>();
  for (const m of stdout.matchAll(new RegExp(`${PREFLIGHT_MARK} (ok|missing|no-script) (\\S+)`, 'g'))) answered.set(m[2]!, m[1]!);
  const inState = (state: string) => [...answered].filter(([, s]) => s === state).map(([host]) => host);
  const missing = inState('missing');
  if (missing.length > 0) {
    return `Node.js is not at ${node} on ${missing.length === 1 ? 'host' : 'hosts'} ${missing.join(', ')}: every rank runs this machine's Node.js by its path, so install the same Node.js version at that path on every host (or run braid run from a machine whose Node.js path the hosts share)`;
  }
  const noScript = inState('no-script');
  if (noScript.length > 0) {
    return `the script ${script} is not on ${noScript.length === 1 ? 'host' : 'hosts'} ${noScript.join(', ')}: every rank runs it by the same path${isAbsolute(script) ? '' : ` (from the folder braid run starts in, ${process.cwd()})`}, so copy it there or put it on a folder every host shares`;
  }
  if (status === 0 && answered.size >= hosts.length) return undefined;
  const detail = stderr.split('\n').map((l) => l.trim()).filter((l) => l && !/^-+$/.test(l)).slice(0, 6).join(' / ');
  let silent = answered.size === 0 ? hosts : hosts.filter((h) => ![...answered.keys()].some((a) => a === h || a.startsWith(`${h}.`)));
  // mpirun starts nothing when one daemon fails: the hosts its messages name are the ones to check.
  const named = silent.filter((h) => new RegExp(`(^|[^\\w.-])${h.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}([^\\w-]|$)`).test(stderr));
  if (named.length > 0) silent = named;
  return `could not start a process on ${silent.length === 1 ? 'host' : 'hosts'} ${(silent.length ? silent : hosts).join(', ')} (unknown or unreachable host, or the launch agent failed)${detail ? `: ${detail}` : ''}`;
}

/** The hosts a preflightProblem message says are at fault, in its order. */
export function hostsNamedByPreflight(problem: string): string[] {
  const m = /^(?:Node\.js is not at .+? on hosts?|the script .+? is not on hosts?|could not start a process on hosts?) (\S+(?:, \S+)*?)(?::| \()/.exec(problem);
  return m ? m[1]!.split(', ') : [];
}

/** The command as a shell would take it, for --dry-run and --verbose. */
export function shellLine(command: MpirunCommand): string {
  const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return [command.program, ...command.args].map(quote).join(' ');
}

/** The first failed rank (and its host) that mpirun or Braid reported in `stderr`, in words. */
export function describeFailure(stderr: string): string | undefined {
  const signalled = /process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+)(?: \(([^)]+)\))?/.exec(stderr);
  if (signalled) return `rank ${signalled[1]} on host ${signalled[2]} was killed by signal ${signalled[3]}${signalled[4] ? ` (${signalled[4]})` : ''}`;
  const braid = /braid: rank (\d+) on host (\S+) exit(?:s|ed) with code (\d+)(?:: (.*))?/.exec(stderr);
  if (braid) return `rank ${braid[1]} on host ${braid[2]} exited with code ${braid[3]}${braid[4] ? `: ${braid[4]}` : ''}`;
  const exited = /Process name: \[\[\d+,\d+\],(\d+)\]\s+Exit code:\s+(\d+)/.exec(stderr);
  if (exited) return `rank ${exited[1]} exited with code ${exited[2]}`;
  const improper = /process rank (\d+) with PID \d+ on\s+node (\S+) exiting improperly/.exec(stderr);
  if (improper) return `rank ${improper[1]} on host ${improper[2]} ended without finalizing MPI`;
  return undefined;
}

const OPEN_MPI_SEGMENT = /^(vader|sm)_segment\./;

/**
 * Removes /dev/shm regions left behind on this host: Braid's, whose creating process is gone (a
 * rank killed while its shared memory was being set up), and Open MPI's shared-memory segments
 * (vader_segment.*, sm_segment.*) of ranks that were killed, which Open MPI 4 never removes:
 * ours, older than `settleMs` (a rank maps the segment it makes at once), and neither open nor
 * mapped by any process.
 */
export function removeStaleShmRegions(dir = '/dev/shm', settleMs = 2_000): number {
  let removed = 0;
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  const unlink = (name: string) => {
    try {
      unlinkSync(join(dir, name));
      removed++;
    } catch {
      // gone already
    }
  };
  const segments: string[] = [];
  for (const name of names) {
    if (OPEN_MPI_SEGMENT.test(name)) {
      segments.push(name);
      continue;
    }
    const match = /^braid-(\d+)-\d+$/.exec(name);
    if (!match) continue;
    try {
      process.kill(Number(match[1]), 0);
      continue;  // its creator still runs
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    unlink(name);
  }
  const now = Date.now();
  const uid = process.getuid?.();
  const settled = segments.filter((name) => {
    try {
      const stat = statSync(join(dir, name));
      return stat.isFile() && (uid === undefined || stat.uid === uid) && now - stat.mtimeMs > settleMs;
    } catch {
      return false;
    }
  });
  if (settled.length === 0) return removed;
  const inUse = filesInUse();
  for (const name of settled) if (!inUse.has(join(dir, name))) unlink(name);
  return removed;
}

/** Every file some process on this host (that this user may inspect) has open or mapped. */
function filesInUse(): Set<string> {
  const paths = new Set<string>();
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return paths;
  }
  for (const pid of pids) {
    try {
      for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
        const at = line.indexOf('/');
        if (at >= 0) paths.add(line.slice(at).replace(/ \(deleted\)$/, ''));
      }
    } catch {
      // gone, or another user's
    }
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          paths.add(readlinkSync(`/proc/${pid}/fd/${fd}`));
        } catch {
          // closed meanwhile
        }
      }
    } catch {
      // gone, or another user's
    }
  }
  return paths;
}

/**
 * Removes the session folder Open MPI's mpirun keeps on this host (`ompi.<host>.<uid>/pid.<pid>`
 * under its temporary folder: 8 MiB of PMIx stores and contact files), which it leaves behind
 * when it is killed. Call once that mpirun has exited.
 */
export function removeMpirunSessionDir(mpirunPid: number, env: NodeJS.ProcessEnv = process.env, host = hostname()): void {
  const uid = process.getuid?.();
  if (uid === undefined || !Number.isInteger(mpirunPid) || mpirunPid <= 0) return;
  // Open MPI's own choice of base: its MCA setting, else TMPDIR, TEMP, TMP, else /tmp.
  const base = env.OMPI_MCA_orte_tmpdir_base || env.TMPDIR || env.TEMP || env.TMP || '/tmp';
  rmSync(join(base, `ompi.${host}.${uid}`, `pid.${mpirunPid}`), { recursive: true, force: true });
}
