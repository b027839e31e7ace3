// The elastic launcher's control loop on a simulated clock: discovery answers and job outcomes
// are scripted, time moves only when the loop sleeps.
import { describe, expect, it } from 'vitest';

import type { DiscoveredHost } from './discovery.js';
import { ElasticError, placeRanks, runElastic, type ElasticDeps, type Placement, type RunOutcome } from './elastic.js';

interface ScriptedRun {
  /** Virtual ms the run takes before it ends by itself (with `outcome`). */
  takesMs: number;
  outcome: RunOutcome;
  /** When asked to resize, it stops this long after (at its next commit) with status 'resize'. */
  commitEveryMs?: number;
}

function harness(discovery: (nowMs: number) => DiscoveredHost[], runs: ScriptedRun[]) {
  let now = 0;
  const log: string[] = [];
  const started: Placement[] = [];
  const resizeAsked: number[] = [];
  const pending: Array<{ at: number; resolve: (o: RunOutcome) => void; outcome: RunOutcome }> = [];
  const settle = () => {
    for (let i = pending.length - 1; i >= 0; i--) {
      if (pending[i]!.at <= now) {
        pending[i]!.resolve(pending[i]!.outcome);
        pending.splice(i, 1);
      }
    }
  };
  const deps: ElasticDeps = {
    discover: async () => discovery(now),
    start(placement, attempt) {
      started.push(placement);
      const run = runs[attempt - 1];
      if (!run) throw new Error(`no scripted run ${attempt}`);
      let entry!: { at: number; resolve: (o: RunOutcome) => void; outcome: RunOutcome };
      const done = new Promise<RunOutcome>((resolve) => {
        entry = { at: now + run.takesMs, resolve, outcome: run.outcome };
        pending.push(entry);
      });
      return {
        done,
        requestResize() {
          resizeAsked.push(attempt);
          const commitAt = now + (run.commitEveryMs ?? 1000);
          if (commitAt < entry.at) {
            entry.at = commitAt;
            entry.outcome = { status: 'resize', committedStep: 100 * attempt };
          }
        },
      };
    },
    now: () => now,
    async sleep(ms) {
      now += ms;
      settle();
    },
    log: (line) => log.push(line),
  };
  return { deps, log, started, resizeAsked, nowMs: () => now };
}

const hosts = (...spec: string[]): DiscoveredHost[] => spec.map((s) => ({ host: s.split(':')[0]!, slots: Number(s.split(':')[1] ?? 1) }));

describe('elastic runs', () => {
  it('places every slot in discovery order, up to max-np', () => {
    expect(placeRanks(hosts('a:2', 'b:2', 'c:2'), 5)).toEqual({ hosts: hosts('a:2', 'b:2', 'c:1'), np: 5 });
    expect(placeRanks(hosts('a:2'), 8)).toEqual({ hosts: hosts('a:2'), np: 2 });
  });

  it('a job that finishes runs once', async () => {
    const h = harness(() => hosts('h0:1', 'h1:1', 'h2:1'), [{ takesMs: 5000, outcome: { status: 'ok' } }]);
    const summary = await runElastic({ minNp: 2, maxNp: 3, maxRestarts: 2 }, h.deps);
    expect(summary.runs).toBe(1);
    expect(h.started).toEqual([{ hosts: hosts('h0:1', 'h1:1', 'h2:1'), np: 3 }]);
  });

  it('a lost host: restarted on the others at once, the host kept out for the cool-down, and said so', async () => {
    const h = harness(() => hosts('h0:1', 'h1:1', 'h2:1'), [
      { takesMs: 3000, outcome: { status: 'failed', failedHost: 'h2', message: 'rank 2 killed by SIGKILL', step: 812, committedStep: 800 } },
      { takesMs: 5000, outcome: { status: 'ok' } },
    ]);
    const summary = await runElastic({ minNp: 2, maxNp: 3, maxRestarts: 2, cooldownMs: 60_000 }, h.deps);
    expect(summary.runs).toBe(2);
    expect(summary.failures).toEqual(['host h2 lost at step 812 (rank 2 killed by SIGKILL)']);
    expect(h.started[1]).toEqual({ hosts: hosts('h0:1', 'h1:1'), np: 2 });
    expect(h.log).toContain('host h2 lost at step 812; restarting on 2 hosts (2 ranks) from the commit at step 800');
  });

  it('new hosts while it runs: asked to stop at its next commit, then restarted larger (up to max-np)', async () => {
    const h = harness((t) => (t < 10_000 ? hosts('h0:2') : hosts('h0:2', 'h1:2', 'h2:2')), [
      { takesMs: 60_000, outcome: { status: 'ok' }, commitEveryMs: 2000 },
      { takesMs: 5000, outcome: { status: 'ok' } },
    ]);
    const summary = await runElastic({ minNp: 2, maxNp: 5, maxRestarts: 0 }, h.deps);
    expect(h.resizeAsked).toEqual([1]);
    expect(summary.failures).toEqual([]);
    expect(h.started.map((p) => p.np)).toEqual([2, 5]);
    expect(h.started[1]!.hosts).toEqual(hosts('h0:2', 'h1:2', 'h2:1'));
    expect(h.log.some((l) => /growing to 3 hosts \(5 ranks\) from the commit at step 100/.test(l))).toBe(true);
    // The grown run started within a commit interval (plus a poll) of the hosts appearing.
    expect(h.nowMs()).toBeLessThan(10_000 + 2000 + 1000 + 5000 + 1000);
  });

  it('below min-np past the start timeout: an error naming min-np and what discovery lists', async () => {
    const h = harness(() => hosts('h0:1'), []);
    await expect(runElastic({ minNp: 2, maxNp: 4, maxRestarts: 1, startTimeoutMs: 30_000 }, h.deps)).rejects.toThrow(
      /only 1 slot available for 30 s, fewer than --min-np 2 \(discovery lists h0:1\)/,
    );
    expect(h.nowMs()).toBeGreaterThanOrEqual(30_000);
    expect(h.started).toEqual([]);
  });

  it('waits for enough hosts to come, then starts', async () => {
    const h = harness((t) => (t < 20_000 ? hosts('h0:1') : hosts('h0:1', 'h1:1')), [{ takesMs: 1000, outcome: { status: 'ok' } }]);
    await runElastic({ minNp: 2, maxNp: 2, maxRestarts: 0 }, h.deps);
    expect(h.started).toEqual([{ hosts: hosts('h0:1', 'h1:1'), np: 2 }]);
    expect(h.log[0]).toMatch(/waiting for at least 2 slots \(have 1\)/);
  });

  it('more failures than max-restarts: stops with every failure listed', async () => {
    const failed = (host: string, step: number): ScriptedRun => ({ takesMs: 1000, outcome: { status: 'failed', failedHost: host, step } });
    const h = harness(() => hosts('h0:1', 'h1:1', 'h2:1', 'h3:1'), [failed('h3', 10), failed('h2', 20), failed('h1', 30)]);
    await expect(runElastic({ minNp: 1, maxNp: 4, maxRestarts: 2 }, h.deps)).rejects.toThrow(
      /giving up after 3 failures \(--max-restarts 2\): host h3 lost at step 10; host h2 lost at step 20; host h1 lost at step 30/,
    );
    expect(h.started.map((p) => p.np)).toEqual([4, 3, 2]);
  });

  it('a host back after its cool-down is used again; a failure without a host keeps every host', async () => {
    const h = harness(() => hosts('h0:1', 'h1:1'), [
      { takesMs: 1000, outcome: { status: 'failed', failedHost: 'h1' } },
      { takesMs: 1000, outcome: { status: 'failed', message: 'exit code 1' } },
      { takesMs: 1000, outcome: { status: 'ok' } },
    ]);
    // h1 fails at 1 s and is out until 1.8 s: the second run (1-2 s) goes without it, the third with it.
    await runElastic({ minNp: 1, maxNp: 2, maxRestarts: 3, cooldownMs: 800 }, h.deps);
    expect(h.started.map((p) => p.np)).toEqual([2, 1, 2]);
  });

  it('refuses bad limits, naming the flag', async () => {
    const h = harness(() => [], []);
    await expect(runElastic({ minNp: 0, maxNp: 2, maxRestarts: 1 }, h.deps)).rejects.toThrow(/--min-np must be a positive integer/);
    await expect(runElastic({ minNp: 3, maxNp: 2, maxRestarts: 1 }, h.deps)).rejects.toThrow(/--max-np must be an integer >= --min-np \(3\)/);
    await expect(runElastic({ minNp: 1, maxNp: 2, maxRestarts: -1 }, h.deps)).rejects.toThrow(/--max-restarts must be an integer >= 0/);
    expect(ElasticError.prototype).toBeInstanceOf(Error);
  });
});
