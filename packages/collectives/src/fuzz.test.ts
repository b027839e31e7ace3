// API fuzzing on real processes (test-support/fuzz-worker.mjs): thousands of random calls, alone
// and at 2 ranks; nothing crashes or hangs, every failure is INVALID_ARGUMENT or ABORTED naming
// what is wrong, and the ranks stay in step.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { mpirunScript } from '@braid/test-support/mpirun';
import { describe, expect, it } from 'vitest';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'fuzz-worker.mjs');

describe.each([
  [1, 5000, 7],
  [2, 5000, 11],
  [3, 2000, 13],
])('np=%i, %i calls (seed %i)', (np, calls, seed) => {
  it('never crashes or hangs; each failure is INVALID_ARGUMENT or ABORTED naming the argument', async () => {
    const run = await mpirunScript(np, worker, [String(seed), String(calls)], { timeoutMs: 150_000 });
    expect(run.stderr).not.toMatch(/Segmentation|Aborted|core dumped|AddressSanitizer|runtime error/);
    expect(run.code, run.stderr).toBe(0);
    expect(run.results).toHaveLength(np);
    for (const r of run.results) {
      expect(r.bad, `rank ${r.rank}`).toEqual([]);
      expect(r.check).toBe(np);
      expect(r.outcomes.ok).toBeGreaterThan(calls / 20);
      expect(r.outcomes.INVALID_ARGUMENT).toBeGreaterThan(calls / 4);
      expect(r.outcomes.ABORTED).toBeGreaterThan(0);
    }
    // Every rank saw the same outcomes: the same calls were refused everywhere.
    for (const r of run.results) expect(r.outcomes).toEqual(run.results[0].outcomes);
  });
});
