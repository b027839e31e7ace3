// Multi-process tests: real `mpirun -np N` jobs of test-support/worker.mjs training tfjs models.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { testBackends } from '@braid/test-support/backend';
import { mpirunScript } from '@braid/test-support/mpirun';
import { describe, expect, it } from 'vitest';

import { expectReplicasAgree } from './test-support/replicas.js';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'worker.mjs');

async function run(np: number, scenario: string, env: Record<string, string> = {}) {
  const job = await mpirunScript(np, worker, [scenario], { env });
  const failed = job.results.filter((r) => !r.ok);
  expect(failed.map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
  expect(job.code, job.stderr).toBe(0);
  expect(job.results).toHaveLength(np);
  return job.results;
}

function same<T>(results: Array<Record<string, any>>, pick: (r: Record<string, any>) => T): T {
  const first = pick(results[0]!);
  for (const r of results) expect(pick(r)).toEqual(first);
  return first;
}

function expectFit(results: Array<Record<string, any>>) {
  const digests = same(results, (r) => r.digests);
  expect(new Set(digests).size).toBe(3); // the weights did move
  same(results, (r) => r.optimizerState);
  same(results, (r) => r.loss); // metrics averaged over ranks
  // 6 batches an epoch, 3 epochs, 4096-byte buckets of a 20-32-4 MLP's 804 floats: 1 call a step.
  expect(results[0]!.stats.reductions).toBe(18);
}

function expectEquivalence(results: Array<Record<string, any>>, tolerance = 1e-6) {
  for (const path of ['sync', 'async']) {
    same(results, (r) => r[path].digest);
    expect(results[0]![path].diff).toBeLessThan(tolerance);
    expect(results[0]![path].calls).toBeGreaterThan(5); // 1024-byte buckets: several per step
  }
}

function expectNoLeaks(results: Array<Record<string, any>>) {
  let paths = 0;
  for (const r of results) {
    for (const [path, counts] of Object.entries(r)) {
      if (typeof counts !== 'object' || counts === null || !('early' in counts)) continue;
      expect({ path, late: (counts as any).late }).toEqual({ path, late: (counts as any).early });
      paths++;
    }
  }
  expect(paths).toBeGreaterThan(0);
}

describe.each([2, 3, 4])('np=%i', (np) => {
  it('model.fit with the wrapped optimizer: every rank holds identical weights after every epoch', async () => {
    expectFit(await run(np, 'fit'));
  });
});

describe.each([2, 3])('np=%i', (np) => {
  it('fp16 and bf16 compression keep the ranks bitwise identical', async () => {
    for (const compression of ['fp16', 'bf16']) {
      const results = await run(np, 'fit', { COMPRESSION: compression });
      same(results, (r) => r.digests);
      // Half-precision buckets: 2 bytes per float on the wire.
      expect(results[0]!.stats.bytesReduced).toBe(18 * 804 * 2);
    }
  });

  it('@braid/compression compressors (top-k, PowerSGD, QSGD with error feedback) keep the ranks bitwise identical', async () => {
    for (const compression of ['topk', 'powersgd', 'qsgd']) {
      const results = await run(np, 'fit', { COMPRESSION: compression });
      const digests = same(results, (r) => r.digests);
      expect(new Set(digests).size).toBe(3);
      expect(results[0]!.stats.bytesReduced).toBeLessThan(18 * 804 * 4);
    }
  });

  it('N ranks x B rows give the weights of one process on N*B rows (plain SGD), sync and async', async () => {
    expectEquivalence(await run(np, 'equivalence'));
  });

  it('gradient accumulation: weights move only every 2nd step, as one step on the rows of both', async () => {
    const results = await run(np, 'accumulation');
    same(results, (r) => r.digest);
    expect(results[0]!.unchangedBetween).toEqual([true, true]);
    expect(results[0]!.diff).toBeLessThan(1e-6);
  });

  it.each(['none', 'topk', 'fp16'])('local SGD (gradient compression %s): ranks differ between averaging steps and hold the exact mean of their weights right after each', async (compression) => {
    const results = await run(np, 'localsgd', { COMPRESSION: compression });
    const [a, b] = [results[0]!.digests, results[1]!.digests];
    expect(a[2]).toBe(b[2]);
    expect(a[5]).toBe(b[5]);
    expect(a[0]).not.toBe(b[0]);
    expect(a[3]).not.toBe(b[3]);
    for (const r of results) {
      expect(r.meanError).toHaveLength(2);
      for (const e of r.meanError) expect(e).toBeLessThan(1e-6);
    }
  });

  it('broadcastVariables with a different model on one rank fails on every rank within seconds, in step', async () => {
    const results = await run(np, 'broadcast-mismatch');
    for (const r of results) {
      expect(r.error, `rank ${r.rank}`).toBeDefined();
      expect(r.ms).toBeLessThan(5000);
      expect(r.after).toBe(np);
      if (r.rank === np - 1) {
        expect(r.error.code).toBe('INVALID_ARGUMENT');
        expect(r.error.message).toMatch(/variables differ from rank 0's/);
      } else {
        expect(r.error.code).toBe('ABORTED');
        expect(r.error.message).toMatch(new RegExp(`broadcastVariables failed on rank ${np - 1} \\(broadcastVariables: rank ${np - 1}'s variables differ`));
      }
    }
  });

  it('gradient accumulation with a compression warm-up: finite weights, the same on every rank, across the switch', async () => {
    const results = await run(np, 'accumulation-warmup');
    same(results, (r) => r.digest);
    for (const r of results) {
      expect(r.finite).toBe(true);
      expect(r.losses.every(Number.isFinite)).toBe(true);
      expect(r.reductions).toBe(5);
    }
  });

  it('no tensor leaks: numTensors at step 2 equals numTensors at step 200 on every path', async () => {
    expectNoLeaks(await run(np, 'leaks'));
  });

  it('averageMetrics averages; broadcastVariables(optimizer) copies Adam state from rank 0', async () => {
    const results = await run(np, 'state');
    const metrics = same(results, (r) => r.metrics);
    expect(metrics).toEqual({ loss: (np + 1) / 2, acc: 1 / np });
    same(results, (r) => r.optimizer);
    expect(results.map((r) => r.iterations)).toEqual(new Array(np).fill(3));
    expect(results[0]!.count).toBe(9); // iterations + m and v for 4 variables
  });

  it('learning-rate warm-up ramps from lr/size to lr over the warm-up steps', async () => {
    const results = await run(np, 'warmup');
    const seen = same(results, (r) => r.seen);
    const target = 0.1 * np;
    const expected = [0, 1, 2, 3, 4, 5].map((s) => (s >= 4 ? target : target / np + ((target - target / np) * s) / 4));
    seen.forEach((lr: number, i: number) => expect(lr).toBeCloseTo(expected[i]!, 12));
  });
});

describe.each([2, 3, 4])('secure aggregation, np=%i', (np) => {
  it.each([['', {}], [' (ranks masking natively and in JavaScript side by side)', { MIXED: '1' }]] as const)('the masked sum (fused into the shared-memory all-reduce and not, a rank late) equals the plain all-reduce of the fixed-point values exactly; a rank\'s wire bytes look uniform; values beyond the range fail every rank%s', async (_, env) => {
    const results = await run(np, 'secure', env);
    same(results, (r) => r.digest);
    results.forEach((r, rank) => {
      // Native masking runs fused into the shared-memory all-reduce (JavaScript masking cannot).
      expect(r.fused).toBe('MIXED' in env ? rank % 2 === 1 : true);
      expect(r.exact).toBe(true);
      expect(r.unfusedExact).toBe(true);
      expect(r.lateExact).toBe(true);
      expect(r.smallExact).toBe(true);
      expect(r.plainEqual).toBe(true);
      expect(r.averageExact).toBe(true);
      expect(r.againExact).toBe(true);
      // 255 degrees of freedom: a uniform stream exceeds 450 with probability 6e-13 (the masks
      // are random, so a 0.999 quantile failed one CI run in ~50 over this test's 18 checks).
      // Unmasked, the same constant vector is four byte values only (a statistic in the millions).
      expect(r.chi2Masked).toBeLessThan(450);
      expect(r.chi2Unmasked).toBeGreaterThan(1e6);
      const limit = Math.floor(0x7fffffff / np) / 2 ** 16;
      expect(r.errors).toEqual([1, 2].map(() => `INVALID_ARGUMENT: secure aggregation: 1 value(s) were beyond the fixed-point range +-${limit} (scale 65536, ${np} ranks); lower the scale, clip the values (clip option), or check for NaN / Infinity`));
    });
  });

  it('DataParallel with privacy.secureAggregation trains like the plain one (to fixed-point rounding), every rank bitwise identical', async () => {
    const secure = await run(np, 'equivalence', { SECURE: '1' });
    for (const path of ['sync', 'async']) {
      same(secure, (r) => r[path].digest);
      // Gradients rounded to 2^-20 each step: the weights stay within 1e-4 of one process on all rows.
      for (const r of secure) expect(r[path].diff).toBeLessThan(1e-4);
    }
  });
});

describe.each([2, 3])('differential privacy, np=%i', (np) => {
  it('privateGradients clips every microbatch to clipNorm exactly, and the noise summed over ranks has std noiseMultiplier x clipNorm (plain and secure aggregation); every rank gets the same bits', async () => {
    const results = await run(np, 'privacy');
    for (const key of ['clip1', 'clip2', 'noise', 'noiseSecure']) same(results, (r) => r[key].digest);
    for (const r of results) {
      for (const key of ['clip1', 'clip2']) {
        r[key].got.forEach((g: number, k: number) => expect(g).toBeCloseTo(r[key].expected[k], 6));
      }
      // Per example: rank r's first row (norm 5(r+1)) and third (10+r) are clipped.
      expect(r.clip1).toMatchObject({ microbatches: 4, clipped: 2 });
      expect(r.clip2.microbatches).toBe(2);
      for (const key of ['noise', 'noiseSecure']) {
        // 200,000 samples: the variance's standard error is 0.3%, its mean's far below 0.01 std.
        expect(r[key].variance / r[key].expectedVariance).toBeGreaterThan(0.98);
        expect(r[key].variance / r[key].expectedVariance).toBeLessThan(1.02);
        expect(Math.abs(r[key].mean)).toBeLessThan(0.01 * Math.sqrt(r[key].expectedVariance));
        expect(r[key].steps).toBe(1);
      }
      // One step at q = 0.01, sigma 1.5: the accountant's figure (computeEpsilon is tested against TF Privacy).
      expect(r.noise.epsilon).toBeGreaterThan(0);
      expect(r.noise.epsilon).toBeLessThan(1);
    }
  });
});

describe.each([2, 3])('pipeline parallelism, np=%i', (np) => {
  it('an MLP, a CNN and a functional model with skip connections split into stages train under GPipe and 1F1B to the weights and losses of one process on the same batches; 1F1B keeps at most stages - stage micro-batches; rank 0 assembles the whole model', async () => {
    const results = await run(np, 'pipeline');
    for (const r of results) {
      for (const kind of ['mlp', 'cnn', 'residual']) {
        for (const schedule of ['gpipe', '1f1b']) {
          const k = r[`${kind}-${schedule}`];
          expect(k.diff, `${kind} ${schedule} stage ${r.rank}`).toBeLessThan(1e-5);
          expect(k.predictDiff).toBeLessThan(1e-5);
          expect(k.assembledDiff).toBe(0); // gatherWeights on rank 0: exactly the stages' weights
          expect(k.lossDiff).toBeLessThan(1e-5);
          expect(k.layers).toBeGreaterThanOrEqual(1);
          // GPipe holds every micro-batch; 1F1B at most S - s (4 micro-batches per batch).
          expect(k.maxStashed).toBe(schedule === 'gpipe' ? 4 : Math.min(4, np - r.rank));
        }
      }
    }
    // Every rank reports the same losses (broadcast from the last stage).
    same(results, (r) => r['mlp-1f1b'].losses);
  });
});

describe('pipeline and data parallelism together', () => {
  it('4 ranks as 2 pipelines x 2 stages: stage gradients averaged over replicas give one process\'s weights on both pipelines\' rows; replicas of a stage are bitwise identical', async () => {
    const results = await run(4, 'pipeline-replicas');
    expectReplicasAgree(results);
  });
});

describe('parameter server', () => {
  it.each([
    [3, 1],
    [4, 2],
  ])('sync, %i ranks with %i server(s): the workers hold bitwise the same weights after every step, and one process\'s weights on all their rows', async (np, servers) => {
    const results = await run(np, 'ps-sync', { SERVERS: String(servers) });
    const workers = results.filter((r) => !r.isServer);
    expect(workers).toHaveLength(np - servers);
    same(workers, (r) => r.digests);
    expect(new Set(workers[0]!.digests).size).toBe(5);
    for (const r of results) expect(r.diff).toBeLessThan(1e-5);
    for (const r of results.filter((x) => x.isServer)) expect(r.pushes).toBe(5);
  });

  it('async with a slow worker: staleness 2 holds the fast one within 2 steps of the slow one; unbounded, it runs further ahead; both learn', async () => {
    const results = await run(3, 'ps-async');
    const server = results.find((r) => r.rank === 0)!;
    expect(server.staleness2.stats.pushes).toBe(40);
    expect(server.staleness2.stats.maxLead).toBeLessThanOrEqual(2);
    expect(server.staleness2.stats.heldBack).toBeGreaterThan(0);
    expect(server.unbounded.stats.maxLead).toBeGreaterThan(2);
    same(results, (r) => r.staleness2.weights); // pullAll: every rank ends with the servers' weights
    for (const r of results.filter((x) => x.rank > 0)) {
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      expect(mean(r.staleness2.last)).toBeLessThan(mean(r.staleness2.first));
    }
  });
});

// The training paths again on native TensorFlow (tfjs-node), where `bash scripts/setup.sh
// --tfjs-node` built it: its kernels sum in other orders than the pure-JS ones, and the ranks must
// still agree to the bit.
const tensorflow = testBackends().find((b) => b.name === 'tensorflow')!;
describe.skipIf(tensorflow.skip !== undefined).each([2, 3])(`native TensorFlow (tfjs-node)${tensorflow.skip ? `, skipped: ${tensorflow.skip}` : ''}, np=%i`, (np) => {
  const runOnTensorflow = async (scenario: string) => {
    const results = await run(np, scenario, tensorflow.env);
    expect(results.map((r) => r.backend)).toEqual(new Array(np).fill('tensorflow'));
    return results;
  };

  it('model.fit with the wrapped optimizer: every rank holds identical weights after every epoch', async () => {
    expectFit(await runOnTensorflow('fit'));
  });

  it('N ranks x B rows give the weights of one process on N*B rows (plain SGD), sync and async', async () => {
    expectEquivalence(await runOnTensorflow('equivalence'));
  });

  it('no tensor leaks: numTensors at step 2 equals numTensors at step 200 on every path', async () => {
    expectNoLeaks(await runOnTensorflow('leaks'));
  });
});
