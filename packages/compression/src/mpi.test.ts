// Compressed all-reduce on real `mpirun` jobs: identical bits on every rank, and the error each
// compressor is expected to make against the exact sum.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { mpirunScript } from '@braid/test-support/mpirun';
import { describe, expect, it } from 'vitest';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'worker.mjs');

describe.each([2, 3, 4])('np=%i', (np) => {
  it('allReduceCompressed (and its blocking form): every compressor, sum and avg, with and without error feedback', async () => {
    const job = await mpirunScript(np, worker, []);
    expect(job.code, job.stderr).toBe(0);
    expect(job.results).toHaveLength(np);
    const cases = job.results[0]!.cases as Record<string, { digest: string; syncDigest: string; relativeError: number; maxExact: number }>;
    for (const [name, c] of Object.entries(cases)) expect({ name, sync: c.syncDigest }).toEqual({ name, sync: c.digest });
    for (const r of job.results) {
      for (const [name, c] of Object.entries(r.cases as typeof cases)) expect({ name, digest: c.digest }).toEqual({ name, digest: cases[name]!.digest });
    }
    expect(Object.keys(cases)).toHaveLength(40);
    const bound: Record<string, number> = { none: 1e-7, fp16: 1e-3, bf16: 8e-3, 'topk(ratio 1)': 1e-7, int8: 0.01, qsgd: 1, topk: 1, randomk: 1, sign: 1.2, powersgd: 1 };
    for (const [label, c] of Object.entries(cases)) {
      const name = label.replace(/ (sum|avg)( \+ef)?$/, '');
      expect({ label, ok: c.relativeError <= bound[name]! }).toEqual({ label, ok: true });
    }
    // Exactness where nothing is dropped: float32 sums of the same values in the same order.
    expect(cases['none sum']!.maxExact).toBeLessThan(1e-5);
    expect(cases['topk(ratio 1) sum']!.maxExact).toBeLessThan(1e-5);
  });
});
