// Multi-process tests: real `mpirun -np N` jobs of test-support/worker.mjs.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { mpirunScript } from '@braid/test-support/mpirun';
import { describe, expect, it } from 'vitest';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'worker.mjs');

async function run(np: number, scenario: string) {
  const job = await mpirunScript(np, worker, [scenario]);
  expect(job.results.filter((r) => !r.ok).map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
  expect(job.code, job.stderr).toBe(0);
  expect(job.results).toHaveLength(np);
  return job.results as Array<Record<string, any>>;
}

function same(results: Array<Record<string, any>>, key: string) {
  for (const r of results) expect(r[key]).toEqual(results[0]![key]);
  return results[0]![key];
}

describe.each([2, 3])('np=%i', (np) => {
  it('pruning under DataParallel: the same masks and bitwise the same weights on every rank, at the schedule\'s sparsity', async () => {
    const results = await run(np, 'pruning');
    same(results, 'weights');
    const zeros = same(results, 'zeros');
    expect(zeros).toHaveLength(Math.round(0.8 * 96));
    expect(same(results, 'summary').map((s: { sparsity: number }) => s.sparsity)).toEqual([Math.round(0.8 * 96) / 96, Math.round(0.8 * 48) / 48]);
  });

  it('ranks with different weights compute different masks: every rank fails, naming the fix', async () => {
    const results = await run(np, 'divergent');
    for (const r of results) expect(r.error).toBe('INVALID_ARGUMENT: pruning: the ranks computed different masks at sparsity 0.5 (their weights differ); train with a DataParallel strategy so every rank holds the same weights');
  });

  it('distillation under DataParallel: the teacher runs on each rank\'s own rows every step; every rank ends with the same student', async () => {
    const results = await run(np, 'distillation');
    same(results, 'weights');
    same(results, 'loss');
    for (const r of results) expect(r.stats).toEqual({ distilled: r.steps, labelsOnly: 0 });
    expect(results[0]!.steps).toBe(3 * Math.ceil(Math.ceil(120 / np) / 8));
  });
});
