// A world of one (no mpirun): argument checks, bucket planning, and the
// distributed optimizer inside LayersModel.fit giving exactly what the plain optimizer gives.
import { createCipheriv, randomBytes } from 'node:crypto';

import { init, InvalidArgumentError } from '@braid/collectives';
import { loadAddon } from '@braid/native';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { planBuckets } from './buckets.js';
import { computeEpsilon, noiseMultiplierFor, RdpAccountant, sampledGaussianRdp } from './privacy-accountant.js';
import { DataParallel } from './data-parallel.js';
import { DistributedOptimizer } from './distributed-optimizer.js';
import { GradientReducer } from './reducer.js';
import { linearWarmup, scaleLearningRate } from './schedules.js';
import { dataParallelCallbacks, learningRateWarmup } from './callbacks.js';

tf.enableProdMode();
let comm: Awaited<ReturnType<typeof init>>;
beforeAll(async () => {
  comm = await init();
});
afterAll(async () => {
  await comm.close();
});

describe('planBuckets', () => {
  it('packs consecutive tensors up to the byte limit; a big tensor gets its own bucket', () => {
    const plan = planBuckets([10, 20, 30, 100, 5, 5], 160);
    expect(plan.map((b) => b.slots.map((s) => s.tensor))).toEqual([[0, 1], [2], [3], [4, 5]]);
    expect(plan.map((b) => b.length)).toEqual([30, 30, 100, 10]);
    expect(plan[0]!.slots.map((s) => s.offset)).toEqual([0, 10]);
    expect(planBuckets([], 64)).toEqual([]);
    expect(planBuckets([1, 1, 1], 1 << 20)).toHaveLength(1);
  });
});

describe('DataParallel in a world of one', () => {
  it('refuses bad options with messages that say what to pass', () => {
    expect(() => new DataParallel({} as never)).toThrow(/Communicator/);
    expect(() => new DataParallel(comm, { bucketBytes: 0 })).toThrow(InvalidArgumentError);
    expect(() => new DataParallel(comm, { compression: 'zip' as never })).toThrow(/'none', 'fp16', 'bf16', or a function returning/);
    const odd = new DataParallel(comm, { compression: (() => 42) as never });
    expect(() => odd.averageTensorsSync([tf.zeros([2])])).toThrow(/returned 42 for a tensor of shape \[2\]; return a compressor/);
    expect(() => new DataParallel(comm, { algorithm: 'fast' as never })).toThrow(/algorithm/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: true }, compression: 'fp16' })).toThrow(/cannot be combined with compression/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: true }, localSgdSteps: 4 })).toThrow(/local SGD averages weights instead/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: { scale: 0 } } })).toThrow(/scale must be a positive number; got 0/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: { clip: -1 } } })).toThrow(/clip must be a positive number; got -1/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: { fuse: 'yes' as unknown as boolean } } })).toThrow(/fuse must be true or false; got "yes"/);
    expect(() => new DataParallel(comm, { privacy: { secureAggregation: { scael: 2 } as never } })).toThrow(/scael/);
    expect(() => new DataParallel(comm, { privacy: { dp: true } as never })).toThrow(/privacy/);
    expect(() => new DataParallel(comm, { accumulationSteps: 1.5 })).toThrow(/accumulationSteps/);
    expect(() => new DataParallel(comm, { accumulationSteps: 2, localSgdSteps: 2 })).toThrow(/either/);
    const dp = new DataParallel(comm);
    expect(() => dp.wrapOptimizer({} as never)).toThrow(/tf.train.adam/);
    const wrapped = dp.wrapOptimizer(tf.train.sgd(0.1));
    expect(wrapped).toBeInstanceOf(DistributedOptimizer);
    expect(tf.train.sgd(0.1)).not.toBeInstanceOf(DistributedOptimizer);
    expect(() => dp.wrapOptimizer(wrapped)).toThrow(/already distributed/);
    return expect(dp.broadcastVariables([], 1)).rejects.toThrow(/root must be a rank in \[0, 0\]/);
  });

  it('model.fit with the wrapped optimizer gives exactly the plain optimizer\'s weights', async () => {
    const build = () =>
      tf.sequential({ layers: [tf.layers.dense({ inputShape: [6], units: 8, activation: 'tanh' }), tf.layers.dense({ units: 1 })] });
    const x = tf.randomNormal([64, 6], 0, 1, 'float32', 3);
    const y = tf.randomNormal([64, 1], 0, 1, 'float32', 4);
    const a = build();
    const b = build();
    b.setWeights(a.getWeights());
    const dp = new DataParallel(comm, { bucketBytes: 64 });
    const wrapped = dp.wrapOptimizer(tf.train.adam(0.01));
    a.compile({ optimizer: wrapped, loss: 'meanSquaredError' });
    b.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
    await a.fit(x, y, { epochs: 2, batchSize: 16, shuffle: false, verbose: 0 });
    await b.fit(x, y, { epochs: 2, batchSize: 16, shuffle: false, verbose: 0 });
    a.getWeights().forEach((w, i) => expect(Array.from(w.dataSync())).toEqual(Array.from(b.getWeights()[i]!.dataSync())));
    expect(wrapped.iterations).toBe(8);
    expect(wrapped.getClassName()).toBe('Adam');
    expect(dp.stats.reductions).toBe(8);
    expect(dp.stats.allReduceCalls).toBeGreaterThan(8); // 64-byte buckets split the 6x8 kernel's step
    wrapped.learningRate = 0.5;
    expect(wrapped.learningRate).toBe(0.5);
  });
});

describe('averages lent over the reducer\'s buffers', () => {
  it('keep their values when kept, cloned or fed back in; a disposed step\'s buffer is reused', async () => {
    const reducer = new GradientReducer(comm, { bucketBytes: 1 << 20, compression: 'none', algorithm: 'auto', compressionWarmup: 0 });
    const lend = { lend: true };
    const step = (k: number) => [tf.tensor([k, k + 1, k + 2]), tf.tensor([[k * 10, k * 10 + 1]]), tf.tensor([k], [1], 'int32')];
    const values = (ts: tf.Tensor[]) => ts.map((t) => Array.from(t.dataSync()));
    const expected = (k: number) => [[k, k + 1, k + 2], [k * 10, k * 10 + 1], [k]];
    const bufferOf = (t: tf.Tensor) => (t.dataSync() as Float32Array).buffer;
    const held: tf.Tensor[] = [];
    const run = (k: number) => {
      const inputs = step(k);
      const out = reducer.reduceSync(inputs, lend);
      tf.dispose(inputs);
      return out;
    };
    // Disposed before the next step: the same buffer again.
    const first = run(1);
    expect(values(first)).toEqual(expected(1));
    expect(first[2]!.dtype).toBe('int32');
    const buffer = bufferOf(first[0]!);
    expect(buffer).toBeInstanceOf(SharedArrayBuffer);
    tf.dispose(first);
    const kept = run(2);
    expect(bufferOf(kept[0]!)).toBe(buffer);
    // Kept across a step: their values stay, the step writes a new buffer.
    const next = run(3);
    expect(bufferOf(next[0]!)).not.toBe(buffer);
    expect(values(kept)).toEqual(expected(2));
    expect(values(next)).toEqual(expected(3));
    held.push(...kept);
    // A clone outlives its disposed original.
    const clone = next[1]!.clone();
    tf.dispose(next);
    held.push(clone, ...run(4));
    expect(Array.from(clone.dataSync())).toEqual(expected(3)[1]);
    // The last step's results fed back in, synchronously and awaited.
    const again = reducer.reduceSync(held.slice(-3), lend);
    expect(values(again)).toEqual(expected(4));
    expect(values(held.slice(-3))).toEqual(expected(4));
    const awaited = await reducer.reduce(again, lend);
    expect(values(awaited)).toEqual(expected(4));
    expect(values(again)).toEqual(expected(4));
    const later = await reducer.reduce(step(5), lend);
    expect(values(awaited)).toEqual(expected(4));
    expect(values(later)).toEqual(expected(5));
    tf.dispose([...held, ...again, ...awaited, ...later]);
  });

  it('are what the wrapped optimizer applies; averages handed to the caller are copies', async () => {
    const dp = new DataParallel(comm);
    const w = tf.variable(tf.tensor([1, 2, 3]));
    const wrapped = dp.wrapOptimizer(tf.train.sgd(1));
    wrapped.applyGradients({ [w.name]: tf.tensor([0.5, 0.25, 0.125]) });
    expect(Array.from(w.dataSync())).toEqual([0.5, 1.75, 2.875]);
    const layout = (dp as unknown as { reducer: { layoutFor(t: tf.Tensor[]): { lent: object[][] } } }).reducer.layoutFor([w]);
    expect(layout.lent[0]).toHaveLength(1);
    const [mine] = dp.averageTensorsSync([tf.tensor([4, 5])]);
    expect(mine!.dataSync().buffer).not.toBeInstanceOf(SharedArrayBuffer);
    const { g } = await dp.averageGradients({ g: tf.tensor([6, 7]) });
    expect(g!.dataSync().buffer).not.toBeInstanceOf(SharedArrayBuffer);
    expect(Array.from(g!.dataSync())).toEqual([6, 7]);
    tf.dispose([w, mine!, g!]);
    wrapped.dispose();
  });
});

describe('learning-rate helpers', () => {
  it('scale by the number of ranks and warm up linearly', () => {
    expect(scaleLearningRate(0.01, 4)).toBeCloseTo(0.04, 15);
    expect(() => scaleLearningRate(-1, 2)).toThrow(/positive/);
    const lr = linearWarmup({ targetLr: 0.4, size: 4, warmupSteps: 10 });
    expect(lr(0)).toBeCloseTo(0.1, 15);
    expect(lr(5)).toBeCloseTo(0.25, 15);
    expect(lr(10)).toBe(0.4);
    expect(lr(1000)).toBe(0.4);
    expect(linearWarmup({ targetLr: 0.4, size: 4, warmupSteps: 0 })(0)).toBe(0.4);
  });
});

describe('unknown options are refused, naming the key and the nearest known one', () => {
  it('in DataParallel, linearWarmup and the callbacks', async () => {
    const comm = await init();
    expect(() => new DataParallel(comm, { bucketbytes: 1024 } as never)).toThrow(/DataParallel: unknown option 'bucketbytes'; did you mean 'bucketBytes'\?/);
    expect(() => new DataParallel(comm, { privacyy: true } as never)).toThrow(InvalidArgumentError);
    expect(() => new DataParallel(comm, { compresion: 'fp16' } as never)).toThrow(/did you mean 'compression'\?/);
    expect(() => linearWarmup({ targetLr: 1, size: 2, warmupSteps: 3, warmupStep: 1 } as never)).toThrow(/linearWarmup: unknown option 'warmupStep'; did you mean 'warmupSteps'\?/);
    const dp = new DataParallel(comm);
    expect(() => learningRateWarmup(dp, { learningRate: 1 }, { warmupEpoch: 2 } as never)).toThrow(/did you mean 'warmupEpochs'\?/);
    expect(() => dataParallelCallbacks(dp, [], { roots: 0 } as never)).toThrow(/dataParallelCallbacks: unknown option 'roots'; did you mean 'root'\?/);
  });
});

describe('secure aggregation\'s native masking kernels', () => {
  const compress = loadAddon().compress;
  it.skipIf(!compress.secureMaskAvailable)('gives exactly node:crypto\'s AES-128-CTR keystream over the fixed-point values (any length, both signs, clipping, values beyond the range)', () => {
    const expected = (values: Float32Array, scale: number, clip: number, limit: number, keys: Buffer[], signs: number[], call: number) => {
      const n = values.length;
      const out = new Int32Array(n + 1);
      let beyond = 0;
      values.forEach((raw, i) => {
        const v = clip > 0 ? Math.min(clip, Math.max(-clip, raw)) : raw;
        const q = Math.floor(v * scale + 0.5);
        if (q > limit || q < -limit || Number.isNaN(q)) {
          beyond++;
          out[i] = q > 0 ? limit : -limit;
        } else out[i] = q;
      });
      out[n] = beyond;
      keys.forEach((key, p) => {
        const iv = Buffer.alloc(16);
        iv.writeBigUInt64BE(BigInt(call), 0);
        const stream = createCipheriv('aes-128-ctr', key, iv).update(Buffer.alloc(4 * (n + 1)));
        const m = new Int32Array(stream.buffer, stream.byteOffset, n + 1);
        for (let i = 0; i <= n; i++) out[i] = signs[p]! > 0 ? out[i]! + m[i]! : out[i]! - m[i]!;
      });
      return { out, beyond };
    };
    for (const [n, clip, call] of [[1001, 0, 5], [3, 0.25, 0], [32 * 7 + 2, 0, 2 ** 40 + 3], [0, 0, 1]] as const) {
      const values = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.3) * 4);
      if (n > 10) [values[1], values[2], values[3], values[4]] = [1e9, Number.NaN, -2.5, 2.5];
      const keys = [randomBytes(16), randomBytes(16), randomBytes(16)];
      const signs = [1, -1, 1];
      const limit = Math.floor(0x7fffffff / 4);
      const out = new Int32Array(n + 1);
      const beyond = compress.secureMask(values, out, 2 ** 16, clip, limit, new Uint8Array(Buffer.concat(keys)), Int8Array.from(signs), call);
      const want = expected(values, 2 ** 16, clip, limit, keys, signs, call);
      expect(beyond).toBe(want.beyond);
      expect(Buffer.from(out.buffer).equals(Buffer.from(want.out.buffer))).toBe(true);
    }
  });

  it.skipIf(!compress.secureMaskAvailable)('rounds to fixed point exactly as JavaScript does at the edges: half-integers, values just beside them and beside the range, every exponent, subnormals, infinities, NaN', () => {
    const next = (x: number, up: boolean) => {
      const bits = new Int32Array(Float32Array.of(x).buffer);
      bits[0] += (x >= 0) === up ? 1 : -1;
      return new Float32Array(bits.buffer)[0]!;
    };
    // Random bit patterns: floats of every exponent and sign (NaNs and infinities among them).
    const random = new Uint32Array(randomBytes(4 * 20000).buffer.slice(0));
    for (const scale of [2 ** 16, 2 ** 4, 1, 2 ** 20]) {
      for (const limit of [Math.floor(0x7fffffff / 4), Math.floor(0x7fffffff / 3), 1000, 0x7fffffff]) {
        const edges: number[] = [0, -0, 1e-45, -1e-45, Infinity, -Infinity, Number.NaN, 3e38, -3e38, 2 ** -17 - 2 ** -41, -(2 ** -17 - 2 ** -41)];
        for (const k of [0, 1, 2, 7, 2 ** 21, 2 ** 22 - 1, 2 ** 22, 2 ** 23 - 1, 2 ** 23, 2 ** 24, limit - 1, limit]) {
          for (const sign of [1, -1]) {
            for (const x of [(k + 0.5) / scale, k / scale, (k + 0.25) / scale, (k + 0.75) / scale, (limit + 0.5) / scale, (limit - 0.5) / scale]) {
              const f = Math.fround(sign * x);
              edges.push(f, next(f, true), next(f, false));
            }
          }
        }
        const values = Float32Array.from([...edges, ...new Float32Array(random.buffer)]);
        const out = new Int32Array(values.length + 1);
        const keys = [randomBytes(16)];
        const beyond = compress.secureMask(values, out, scale, 0, limit, new Uint8Array(Buffer.concat(keys)), Int8Array.of(1), 9);
        let wantBeyond = 0;
        const want = new Int32Array(values.length + 1);
        values.forEach((v, i) => {
          const q = Math.floor(v * scale + 0.5);
          if (q > limit || q < -limit || Number.isNaN(q)) {
            wantBeyond++;
            want[i] = q > 0 ? limit : -limit;
          } else want[i] = q;
        });
        want[values.length] = wantBeyond;
        const iv = Buffer.alloc(16);
        iv.writeBigUInt64BE(9n, 0);
        const stream = createCipheriv('aes-128-ctr', keys[0]!, iv).update(Buffer.alloc(4 * want.length));
        const m = new Int32Array(stream.buffer, stream.byteOffset, want.length);
        for (let i = 0; i < want.length; i++) want[i] = want[i]! + m[i]!;
        expect(beyond, `scale ${scale}, limit ${limit}`).toBe(wantBeyond);
        const firstDifference = out.findIndex((q, i) => q !== want[i]);
        expect(firstDifference === -1 ? 'same' : `value ${values[firstDifference]} (index ${firstDifference})`, `scale ${scale}, limit ${limit}`).toBe('same');
      }
    }
  });

  it.skipIf(!compress.secureMaskAvailable)('the AES-NI and the VAES kernels (BRAID_ISA=avx2 / avx512) mask and unmask to the same bits', async () => {
    const { spawnSync } = await import('node:child_process');
    // Edge values and random bit patterns, both scales' paths, clipping; a digest of every output.
    const script = `
      import { createHash, randomBytes } from 'node:crypto';
      import { loadAddon } from '@braid/native';
      const c = loadAddon().compress;
      const hash = createHash('sha256');
      let seed = 7;
      const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
      const bits = Uint32Array.from({ length: 5000 }, () => (random() * 2 ** 32) >>> 0);
      const values = Float32Array.from([...new Float32Array(bits.buffer), 0.5 / 65536, -0.5 / 65536, 1e9, NaN, Infinity, -Infinity, 2.5, -2.5]);
      const keys = Uint8Array.from({ length: 32 }, (_, i) => (i * 37) & 255);
      for (const [scale, clip] of [[65536, 0], [65536 * 1.5, 0], [65536, 0.25], [1, 0]]) {
        const out = new Int32Array(values.length + 1);
        const beyond = c.secureMask(values, out, scale, clip, 536870911, keys, Int8Array.of(1, -1), 3);
        hash.update(new Uint8Array(out.buffer)).update(String(beyond));
        for (const divisor of [scale, scale * 2, scale * 3]) {
          const back = new Float32Array(values.length);
          c.secureUnmask(out, back, divisor);
          hash.update(new Uint8Array(back.buffer));
        }
      }
      console.log(hash.digest('hex'));`;
    const digests = ['avx2', 'avx512'].map((isa) => {
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, BRAID_ISA: isa }, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim();
    });
    expect(digests[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(digests[1]).toBe(digests[0]);
  });

  it.skipIf(!compress.secureMaskAvailable)('masks in chunks (any split, chunks not starting on a cipher block, the count word in the last) to the words of one call, on both kernels', async () => {
    const { spawnSync } = await import('node:child_process');
    const script = `
      import { loadAddon } from '@braid/native';
      const c = loadAddon().compress;
      let seed = 11;
      const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
      const keys = Uint8Array.from({ length: 48 }, (_, i) => (i * 53 + 1) & 255);
      const signs = Int8Array.of(1, -1, 1);
      let cases = 0;
      for (const n of [0, 1, 3, 127, 128, 129, 1000, 4099]) {
        const values = Float32Array.from({ length: n }, () => (random() * 2 - 1) * 5);
        if (n > 10) values[7] = 1e12; // beyond the range: counted in the chunk that holds it
        if (n > 3000) values[3001] = NaN;
        for (const [scale, clip] of [[65536, 0], [65536 * 1.5, 0], [65536, 2]]) {
          const whole = new Int32Array(n + 1);
          const total = c.secureMask(values, whole, scale, clip, 536870911, keys, signs, 5);
          for (let trial = 0; trial < 6; trial++) {
            const cuts = [0, n + 1];
            for (let k = 0; k < trial * 3; k++) cuts.push(Math.floor(random() * (n + 2)));
            cuts.sort((a, b) => a - b);
            const joined = new Int32Array(n + 1);
            let beyond = 0;
            for (let k = 0; k + 1 < cuts.length; k++) {
              const part = new Int32Array(cuts[k + 1] - cuts[k]);
              beyond += c.secureMaskRange(values, part, scale, clip, 536870911, keys, signs, 5, cuts[k], cuts[k + 1], beyond);
              joined.set(part, cuts[k]);
            }
            if (beyond !== total) throw new Error('count ' + beyond + ' != ' + total + ' at n=' + n);
            const at = joined.findIndex((w, i) => w !== whole[i]);
            if (at !== -1) throw new Error('word ' + at + ' differs at n=' + n + ', cuts ' + cuts.join(','));
            cases++;
          }
        }
      }
      console.log(cases);`;
    for (const isa of ['avx2', 'avx512']) {
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, BRAID_ISA: isa }, encoding: 'utf8' });
      expect(r.stderr, isa).toBe('');
      expect(r.stdout.trim(), isa).toBe(String(8 * 3 * 6));
    }
  });

  it.skipIf(!compress.secureMaskAvailable)('unmasks as JavaScript does: float32 of the int32 sum divided in double', () => {
    const sum = Int32Array.from({ length: 1003 }, (_, i) => (i % 2 ? 1 : -1) * ((i * 2654435761) % 2147483647));
    sum[0] = -2147483648;
    sum[1] = 2147483647;
    // Powers of two take a float32 path where that is exact (2^-95 .. 2^125); the ends and just beyond them too.
    for (const divisor of [65536, 65536 * 2, 65536 * 4, 65536 * 3, 2 ** 20 * 7, 1, 2 ** 40, 2 ** 125, 2 ** 126, 2 ** -95, 2 ** -96, 2 ** -3]) {
      const values = new Float32Array(sum.length - 1);
      compress.secureUnmask(sum, values, divisor);
      const want = Float32Array.from(sum.subarray(0, values.length), (q) => q / divisor);
      expect(Buffer.from(values.buffer).equals(Buffer.from(want.buffer))).toBe(true);
    }
  });
});

describe('the RDP privacy accountant', () => {
  // Published values: tensorflow/privacy, tutorials/README.md ("Expected Output" and "Select
  // Parameters"), MNIST DP-SGD: 60,000 examples, batches of 256, delta = 1e-5, the RDP accountant
  // at the tutorial's steps (epochs x 60000 // 256).
  const published = [
    { noiseMultiplier: 1.12, epochs: 60, epsilon: 2.92 },
    { noiseMultiplier: 0.6, epochs: 30, epsilon: 9.74 },
    { noiseMultiplier: 1.2, epochs: 10, epsilon: 1.2 },
    { noiseMultiplier: 1.12, epochs: 1, epsilon: 1.0 },
    { noiseMultiplier: 1.12, epochs: 2, epsilon: 1.04 },
  ];
  it.each(published)('sigma $noiseMultiplier, $epochs epochs: epsilon within 2% of TF Privacy\'s $epsilon', ({ noiseMultiplier, epochs, epsilon }) => {
    const steps = Math.floor((epochs * 60000) / 256);
    const spent = computeEpsilon({ samplingRate: 256 / 60000, noiseMultiplier, steps, delta: 1e-5 });
    expect(Math.abs(spent.epsilon - epsilon) / epsilon).toBeLessThan(0.02);
  });

  it('adds up steps as one call does; q = 1 is the plain Gaussian mechanism; noiseMultiplierFor inverts it', () => {
    const a = new RdpAccountant();
    for (let i = 0; i < 10; i++) a.step(0.01, 1.0, 100);
    expect(a.epsilon(1e-5).epsilon).toBeCloseTo(computeEpsilon({ samplingRate: 0.01, noiseMultiplier: 1.0, steps: 1000, delta: 1e-5 }).epsilon, 9);
    // Gaussian mechanism: RDP(a) = a / (2 sigma^2).
    expect(sampledGaussianRdp(1, 2, 5)).toBeCloseTo(5 / 8, 12);
    expect(sampledGaussianRdp(0, 2, 5)).toBe(0);
    const steps = Math.floor((60 * 60000) / 256);
    const sigma = noiseMultiplierFor({ targetEpsilon: 2.92, samplingRate: 256 / 60000, steps, delta: 1e-5 });
    expect(Math.abs(sigma - 1.12) / 1.12).toBeLessThan(0.01);
    expect(computeEpsilon({ samplingRate: 256 / 60000, noiseMultiplier: sigma, steps, delta: 1e-5 }).epsilon).toBeLessThanOrEqual(2.92);
    expect(() => a.step(1.5, 1)).toThrow(/sampling rate must be in \[0, 1\]/);
    expect(() => a.epsilon(0)).toThrow(/delta must be in \(0, 1\)/);
    expect(() => new RdpAccountant([1.5])).toThrow(/orders must be integers >= 2/);
  });
});
