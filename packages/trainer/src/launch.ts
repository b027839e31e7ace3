// `braid run`: turns Horovod-style arguments into an mpirun command line. Kept apart from the
// CLI so the translation is tested on its own.
import { availableParallelism } from 'node:os';
import { readdirSync, unlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';

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
  dryRun: boolean;
  verbose: boolean;
  /** Extra arguments passed to mpirun as they are (after --mpi-args). */
  mpiArgs: string[];
  /** How mpirun starts processes on other hosts (Open MPI's plm_rsh_agent; default ssh). */
  agent?: string;
  command: string[];
}

export const RUN_USAGE = `usage: braid run -np N [-H host1:slots,host2:slots | --hostfile FILE] [--timeline trace.json]
                 [--bind-to none|core|socket] [--agent rsh-agent] [--mpi-args "..."] [--dry-run] [--verbose] script.js [args...]
  Starts N copies of the script through mpirun, one rank each, with what Braid needs:
  permission to run as root, the job's environment (BRAID_*, NODE_*, PATH, LD_LIBRARY_PATH)
  passed to every rank, --oversubscribe when N exceeds this machine's cores and no hosts are
  given. A .js/.mjs/.cjs script runs under this Node.js; anything else runs as a command.
  --agent names the program that starts processes on other hosts (default ssh), e.g. the test
  bed's: --agent "$(scripts/cluster.sh agent)".`;

export function parseRunArgs(argv: string[]): RunPlan {
  const plan: RunPlan = { np: 0, bindTo: 'none', dryRun: false, verbose: false, mpiArgs: [], command: [] };
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
    else if (arg === '--dry-run') plan.dryRun = true;
    else if (arg === '--verbose' || arg === '-v') plan.verbose = true;
    else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}\n${RUN_USAGE}`);
    else break;
  }
  plan.command = argv.slice(i);
  if (plan.np === 0) throw new UsageError(`say how many ranks with -np N\n${RUN_USAGE}`);
  if (plan.command.length === 0) throw new UsageError(`name the script to run\n${RUN_USAGE}`);
  if (plan.hosts && plan.hostfile) throw new UsageError('give either -H or --hostfile, not both');
  if (plan.hosts) {
    for (const entry of plan.hosts.split(',')) {
      if (!/^[^:,\s]+(:\d+)?$/.test(entry)) throw new UsageError(`-H takes host:slots pairs separated by commas (e.g. -H node1:4,node2:4); got ${JSON.stringify(entry)}`);
    }
  }
  return plan;
}

const FORWARDED = /^(BRAID_|NODE_|OMPI_MCA_|UCX_|NCCL_|CUDA_VISIBLE_DEVICES$|PATH$|LD_LIBRARY_PATH$)/;

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
  if (!plan.hosts && !plan.hostfile && plan.np > cores) args.push('--oversubscribe');
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
  if (/\.(m|c)?js$/.test(first!)) args.push(options.node ?? process.execPath, first!, ...rest);
  else args.push(first!, ...rest);
  return { program: 'mpirun', args, env: childEnv };
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

/**
 * Removes /dev/shm regions left by Braid processes that are gone (a rank killed while its
 * shared memory was being set up), on this host.
 */
export function removeStaleShmRegions(dir = '/dev/shm'): number {
  let removed = 0;
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    const match = /^braid-(\d+)-\d+$/.exec(name);
    if (!match) continue;
    try {
      process.kill(Number(match[1]), 0);
      continue;  // its creator still runs
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    try {
      unlinkSync(join(dir, name));
      removed++;
    } catch {
      // gone already
    }
  }
  return removed;
}
