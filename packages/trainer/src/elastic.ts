// The elastic launcher's control loop (issue 11), as Horovod Elastic's driver and torchrun's
// agent: with MPI fail-stop, elasticity is restart-based. The loop asks discovery which hosts are
// there, starts the job on them (at least minNp ranks, at most maxNp), and when a rank or host
// fails, keeps the failed host out for a cool-down and starts again on what is left; when
// discovery reports new hosts while the job runs, it asks the job to stop at its next commit and
// starts it again larger. The job itself (mpirun, the training script's commits) is behind
// `ElasticDeps.start`, so that this loop is tested on its own with a simulated clock.
import type { DiscoveredHost } from './discovery.js';
import { UsageError } from './launch.js';

export interface ElasticOptions {
  minNp: number;
  maxNp: number;
  /** Failed runs tolerated; one more ends the job (a restart to grow is not a failure). */
  maxRestarts: number;
  /** How long to wait for minNp slots before giving up (default 600 s). */
  startTimeoutMs?: number;
  /** How long a host that failed stays out (default 60 s). */
  cooldownMs?: number;
  /** How often discovery runs while waiting and while the job runs (default 1 s). */
  pollMs?: number;
}

/** Where a run goes: the hosts in discovery order with the slots used on each, np in all. */
export interface Placement {
  hosts: DiscoveredHost[];
  np: number;
}

export interface RunOutcome {
  /** ok: the job finished; resize: it stopped at a commit because it was asked to; failed: a rank or host failed. */
  status: 'ok' | 'resize' | 'failed';
  /** The host whose rank failed, when the launcher could tell. */
  failedHost?: string;
  /** What happened, for the summary ("rank 2 on h2 killed by SIGKILL"). */
  message?: string;
  /** The step the run got to and the step of its last commit, when known (for the progress line). */
  step?: number;
  committedStep?: number;
}

export interface RunningJob {
  done: Promise<RunOutcome>;
  /** Asks the job to stop at its next commit point (new hosts are there). */
  requestResize(): void;
}

export interface ElasticDeps {
  discover(): Promise<DiscoveredHost[]>;
  start(placement: Placement, attempt: number): RunningJob;
  now(): number;
  sleep(ms: number): Promise<void>;
  log(line: string): void;
}

export interface ElasticSummary {
  runs: number;
  failures: string[];
  finalPlacement: Placement;
}

export class ElasticError extends UsageError {}

const describeHosts = (p: Placement) => `${p.hosts.length} host${p.hosts.length === 1 ? '' : 's'} (${p.np} rank${p.np === 1 ? '' : 's'})`;

/** The placement for these hosts: every slot, in discovery order, up to maxNp ranks. */
export function placeRanks(hosts: readonly DiscoveredHost[], maxNp: number): Placement {
  const used: DiscoveredHost[] = [];
  let np = 0;
  for (const h of hosts) {
    if (np >= maxNp) break;
    const slots = Math.min(h.slots, maxNp - np);
    used.push({ host: h.host, slots });
    np += slots;
  }
  return { hosts: used, np };
}

/** Runs the job elastically until it finishes; throws ElasticError with a summary when it cannot. */
export async function runElastic(options: ElasticOptions, deps: ElasticDeps): Promise<ElasticSummary> {
  const { minNp, maxNp, maxRestarts } = options;
  if (!Number.isInteger(minNp) || minNp < 1) throw new UsageError(`--min-np must be a positive integer; got ${minNp}`);
  if (!Number.isInteger(maxNp) || maxNp < minNp) throw new UsageError(`--max-np must be an integer >= --min-np (${minNp}); got ${maxNp}`);
  if (!Number.isInteger(maxRestarts) || maxRestarts < 0) throw new UsageError(`--max-restarts must be an integer >= 0; got ${maxRestarts}`);
  const startTimeoutMs = options.startTimeoutMs ?? 600_000;
  const cooldownMs = options.cooldownMs ?? 60_000;
  const pollMs = options.pollMs ?? 1_000;
  const coolingUntil = new Map<string, number>();
  const failures: string[] = [];
  let runs = 0;

  const usable = (hosts: DiscoveredHost[]) => hosts.filter((h) => (coolingUntil.get(h.host) ?? -Infinity) <= deps.now());

  // Discovery until minNp slots are there (outside the cool-down), or the start timeout.
  const waitForPlacement = async (): Promise<Placement> => {
    const giveUpAt = deps.now() + startTimeoutMs;
    let said = false;
    for (;;) {
      const found = await deps.discover();
      const placement = placeRanks(usable(found), maxNp);
      if (placement.np >= minNp) return placement;
      if (deps.now() >= giveUpAt) {
        const cooling = found.filter((h) => !usable([h]).length).map((h) => h.host);
        throw new ElasticError(
          `only ${placement.np} slot${placement.np === 1 ? '' : 's'} available for ${Math.round(startTimeoutMs / 1000)} s, fewer than --min-np ${minNp}` +
            ` (discovery lists ${found.length === 0 ? 'no hosts' : found.map((h) => `${h.host}:${h.slots}`).join(', ')}` +
            `${cooling.length ? `; cooling down after a failure: ${cooling.join(', ')}` : ''})` +
            `${failures.length ? `; failures so far: ${failures.join('; ')}` : ''}`,
        );
      }
      if (!said) {
        deps.log(`waiting for at least ${minNp} slots (have ${placement.np}); giving up after ${Math.round(startTimeoutMs / 1000)} s`);
        said = true;
      }
      await deps.sleep(pollMs);
    }
  };

  let placement = await waitForPlacement();
  for (;;) {
    runs++;
    deps.log(`${runs === 1 ? 'starting' : 'restarting'} on ${describeHosts(placement)}: ${placement.hosts.map((h) => `${h.host}:${h.slots}`).join(',')}`);
    const job = deps.start(placement, runs);
    // A start that throws, or a job whose promise rejects, is a failed run like any other.
    const done: Promise<RunOutcome> = job.done.catch((err: unknown) => ({ status: 'failed' as const, message: err instanceof Error ? err.message : String(err) }));
    let finished = false;
    void done.then(() => (finished = true));
    let resizeAsked = false;
    let discoveryFailing = false;
    // While it runs: discovery, and a request to stop at the next commit when it could grow.
    while (!finished) {
      await Promise.race([done, deps.sleep(pollMs)]);
      if (finished || resizeAsked || placement.np >= maxNp) continue;
      // Discovery failing while the job runs does not stop the job; it only cannot grow now.
      let found: DiscoveredHost[];
      try {
        found = await deps.discover();
      } catch (err) {
        if (!discoveryFailing) deps.log(`host discovery failed while the job runs (${(err as Error).message}); the job goes on`);
        discoveryFailing = true;
        continue;
      }
      discoveryFailing = false;
      const grown = placeRanks(usable(found), maxNp);
      if (grown.np > placement.np) {
        deps.log(`new hosts available (${describeHosts(grown)}): stopping at the next commit to grow`);
        job.requestResize();
        resizeAsked = true;
      }
    }
    const outcome = await done;
    if (outcome.status === 'ok') return { runs, failures, finalPlacement: placement };
    const at = outcome.step !== undefined ? ` at step ${outcome.step}` : '';
    const from = outcome.committedStep !== undefined ? ` from the commit at step ${outcome.committedStep}` : ' from the last commit';
    if (outcome.status === 'failed') {
      const what = outcome.failedHost ? `host ${outcome.failedHost} lost${at}` : `the job failed${at}`;
      failures.push(`${what}${outcome.message ? ` (${outcome.message})` : ''}`);
      if (outcome.failedHost) coolingUntil.set(outcome.failedHost, deps.now() + cooldownMs);
      if (failures.length > maxRestarts) {
        throw new ElasticError(`giving up after ${failures.length} failure${failures.length === 1 ? '' : 's'} (--max-restarts ${maxRestarts}): ${failures.join('; ')}`);
      }
      placement = await waitForPlacement();
      deps.log(`${what}; restarting on ${describeHosts(placement)}${from}`);
    } else {
      placement = await waitForPlacement();
      deps.log(`growing to ${describeHosts(placement)}${from}`);
    }
  }
}
