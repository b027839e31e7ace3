// `braid run --elastic` (issue 11): the control loop of elastic.ts with real jobs. Each run is an
// mpirun job on the hosts discovery gave; what the ranks report (elastic-worker.ts's lines on
// stderr) says where training is, and mpirun's and Braid's failure lines say which host failed.
import { discoverHosts } from './discovery.js';
import { ElasticError, type ElasticDeps, type Placement, placeRanks, type RunningJob, type RunOutcome, runElastic } from './elastic.js';
import { parseElasticMark, ELASTIC_ENV, RESIZE_SIGNAL } from './elastic-worker.js';
import { type Job, preflight, startJob, unreachableHosts } from './job.js';
import { hostsNamedByPreflight, mpirunCommand, type RunPlan, shellLine } from './launch.js';


/**
 * The host whose failure ended a job, from mpirun's stderr: a daemon mpirun lost, a rank killed
 * by a signal, or the peer that Braid's failing ranks name ("rank 2 (host h2) did not answer").
 * Undefined when no host is to blame (a rank's own error, as an exception in the script).
 */
export function failedHostOf(stderr: string): string | undefined {
  const daemon = /Remote daemon\s*:\s*\S+ on node (\S+)/.exec(stderr);
  if (daemon) return daemon[1];
  const signalled = /process rank \d+ with PID \d+ on node (\S+) exited on signal/.exec(stderr);
  if (signalled) return signalled[1];
  // Only a TIMEOUT names a host that stopped answering. An ABORTED "connection closed by rank
  // N" may name a healthy rank that mpirun killed first while tearing the job down.
  for (const m of stderr.matchAll(/braid: rank \d+ on host (\S+) exits with code \d+: TIMEOUT: (.*)/g)) {
    const peers = /\(hosts? ([^)]+)\)/.exec(m[2]!)?.[1]?.split(/,\s*/) ?? [];
    const other = peers.find((h) => h !== m[1]);
    if (other) return other;
  }
  return undefined;
}

/** The placement's name for a host a message names (mpirun may say h2.example where discovery said h2). */
function placedHost(name: string | undefined, placement: Placement): string | undefined {
  if (name === undefined) return undefined;
  const hosts = placement.hosts.map((h) => h.host);
  return hosts.find((h) => h === name) ?? hosts.find((h) => name.startsWith(`${h}.`) || h.startsWith(`${name}.`)) ?? name;
}

const CHECK_AFTER_FAILURE_MS = 10_000;
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export async function launchElastic(plan: RunPlan): Promise<number> {
  const elastic = plan.elastic!;
  const log = (line: string) => process.stderr.write(`braid run: ${line}\n`);
  if (plan.dryRun) {
    // What the first run would be, on the hosts discovery lists now.
    const placement = placeRanks(await discoverHosts(elastic.discoveryScript, { slotsPerHost: elastic.slotsPerHost }), elastic.maxNp);
    if (placement.np < elastic.minNp) log(`discovery lists ${placement.np} slot${placement.np === 1 ? '' : 's'} now, fewer than --min-np ${elastic.minNp}: the job would wait for more`);
    const runPlan: RunPlan = { ...plan, elastic: undefined, np: Math.max(placement.np, 1), hosts: placement.hosts.map((h) => `${h.host}:${h.slots}`).join(',') || undefined };
    const env = { ...process.env, [ELASTIC_ENV]: '1' };
    process.stdout.write(`${shellLine(mpirunCommand(runPlan, env, { isRoot: process.getuid?.() === 0, isTTY: Boolean(process.stdout.isTTY) }))}\n`);
    return 0;
  }
  const checked = new Set<string>();
  let current: Job | undefined;
  let interrupted: NodeJS.Signals | undefined;
  let lastRunEndedAt: number | undefined;
  const forward = (signal: NodeJS.Signals) => {
    interrupted = signal;
    current?.child?.kill(signal);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);

  const start = (placement: Placement, attempt: number): RunningJob => {
    const runPlan: RunPlan = { ...plan, elastic: undefined, np: placement.np, hosts: placement.hosts.map((h) => `${h.host}:${h.slots}`).join(',') };
    // Hosts not seen before are checked first (Node.js at this path, reachable): a host that is
    // not fails this run like any lost host, and sits out its cool-down.
    const fresh = placement.hosts.map((h) => h.host).filter((h) => !checked.has(h));
    const problem = fresh.length > 0 ? preflight(runPlan, fresh) : undefined;
    if (problem) {
      const blame = async (): Promise<RunOutcome> => {
        const silent = await unreachableHosts(runPlan, fresh, CHECK_AFTER_FAILURE_MS);
        return { status: 'failed', failedHost: placedHost(silent[0] ?? hostsNamedByPreflight(problem)[0], placement), message: problem };
      };
      return { done: blame(), requestResize() {} };
    }
    for (const h of fresh) checked.add(h);

    let ready = 0;
    let resizeWanted = false;
    let signalled = false;
    let resized = false;
    let step: number | undefined;
    let committed: number | undefined;
    let resumed: number | undefined;
    let saidTraining = false;
    // The ranks stop only at a commit, and only once each of them listens for the request.
    const signalWhenReady = () => {
      if (resizeWanted && !signalled && ready >= placement.np && job.child) {
        signalled = true;
        job.child.kill(RESIZE_SIGNAL);
      }
    };
    const job = startJob(runPlan, {
      env: { [ELASTIC_ENV]: String(attempt) },
      onStderrLine: (line) => {
        if (/^mpirun: Forwarding signal \d+ to job/.test(line)) return true;
        const mark = parseElasticMark(line);
        if (!mark) return false;
        if (mark.kind === 'ready') {
          ready++;
          signalWhenReady();
        } else if (mark.kind === 'step') {
          step = mark.step;
          if (!saidTraining && lastRunEndedAt !== undefined) {
            saidTraining = true;
            log(`training again on ${placement.np} rank${placement.np === 1 ? '' : 's'} at step ${mark.step}, ${seconds(Date.now() - lastRunEndedAt)} after the last run ended`);
          }
        } else {
          committed = mark.step;
          if (mark.kind === 'resumed') resumed = mark.step;
          if (mark.kind === 'resize') resized = true;
        }
        return true;
      },
    });
    current = job;
    const done = job.done.then(async (end): Promise<RunOutcome> => {
      lastRunEndedAt = Date.now();
      if (interrupted) {
        log(`interrupted (${interrupted}); not restarting`);
        process.exit(interrupted === 'SIGINT' ? 130 : 143);
      }
      const at = { step, committedStep: committed ?? resumed };
      if (end.notStarted) return { status: 'failed', message: end.notStarted, ...at };
      if (end.status === 0) return { status: resized ? 'resize' : 'ok', ...at };
      let failedHost = placedHost(failedHostOf(end.tail), placement);
      // mpirun does not always say which host (a launch agent that died with its host): the
      // hosts of the run that do not answer now are the ones to keep out.
      if (failedHost === undefined) failedHost = (await unreachableHosts(runPlan, placement.hosts.map((h) => h.host), CHECK_AFTER_FAILURE_MS))[0];
      return { status: 'failed', failedHost, message: end.failure ?? `mpirun exited with code ${end.status}`, ...at };
    });
    return {
      done,
      requestResize() {
        resizeWanted = true;
        signalWhenReady();
      },
    };
  };

  const deps: ElasticDeps = {
    discover: () => discoverHosts(elastic.discoveryScript, { slotsPerHost: elastic.slotsPerHost }),
    start,
    now: () => Date.now(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    log,
  };
  try {
    const summary = await runElastic(
      { minNp: elastic.minNp, maxNp: elastic.maxNp, maxRestarts: elastic.maxRestarts, startTimeoutMs: elastic.startTimeoutMs, cooldownMs: elastic.cooldownMs },
      deps,
    );
    const failures = summary.failures.length;
    log(
      `finished on ${summary.finalPlacement.np} rank${summary.finalPlacement.np === 1 ? '' : 's'} after ${summary.runs} run${summary.runs === 1 ? '' : 's'}` +
        (failures ? ` (${failures} failure${failures === 1 ? '' : 's'}: ${summary.failures.join('; ')})` : ''),
    );
    return 0;
  } catch (err) {
    if (err instanceof ElasticError) {
      log(err.message);
      return 1;
    }
    throw err;
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
}
