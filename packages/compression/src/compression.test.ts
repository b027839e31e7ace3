// The compressors in one process: error bounds, top-k's exact selection, QSGD's unbiasedness,
// error feedback's conservation, and fuzzed payloads that must fail cleanly.
import { CorruptPayloadError, InvalidArgumentError } from '@braid/collectives';
import { loadAddon } from '@braid/native';
import { seededRandom } from '@braid/test-support/mpirun';
import { describe, expect, it } from 'vitest';

import { type CompressorName, createCompressor, ErrorFeedback } from './index.js';

const random = seededRandom;
function gradient(n: number, seed: number): Float32Array {
  const r = random(seed);
  return Float32Array.from({ length: n }, () => (r() - 0.5) * 10 ** (r() * 4 - 2));
}
const norm = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0));

describe('round trips', () => {
  const x = gradient(10_007, 1);

  it('none is exact; fp16 / bf16 within half an ulp of their format', () => {
    expect(Array.from(createCompressor('none').decompress(createCompressor('none').compress(x).payload))).toEqual(Array.from(x));
    for (const [name, bits] of [['fp16', 11], ['bf16', 8]] as const) {
      const c = createCompressor(name);
      const y = c.decompress(c.compress(x).payload);
      x.forEach((v, i) => {
        if (name === 'bf16' || Math.abs(v) > 6.2e-5) expect(Math.abs(y[i]! - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -bits);
        else expect(Math.abs(y[i]! - v)).toBeLessThanOrEqual(2 ** -25); // float16 subnormals
      });
    }
  });

  it('int8: within half a step of each block\'s scale', () => {
    const c = createCompressor('int8', { blockSize: 100 });
    const y = c.decompress(c.compress(x).payload);
    for (let b = 0; b < x.length; b += 100) {
      const block = x.subarray(b, b + 100);
      const step = Math.max(...Array.from(block, Math.abs)) / 127;
      block.forEach((v, i) => expect(Math.abs(y[b + i]! - v)).toBeLessThanOrEqual(step / 2 + 1e-6 * step));
    }
  });

  it('sign: every value becomes +-mean|x| with its sign', () => {
    const c = createCompressor('sign');
    const { payload } = c.compress(x);
    expect(payload.length).toBe(32 + Math.ceil((4 + Math.ceil(x.length / 8)) / 4) * 4);
    const y = c.decompress(payload);
    const mean = Math.fround(Array.from(x, Math.abs).reduce((a, b) => a + b, 0) / x.length);
    y.forEach((v, i) => expect(v).toBe(x[i]! < 0 ? -mean : mean));
  });

  it('QSGD: within one level (norm / s) of every value', () => {
    for (const levels of [4, 127, 1000]) {
      const c = createCompressor('qsgd', { levels, seed: 3 });
      const y = c.decompress(c.compress(x).payload);
      const unit = norm(x) / levels;
      x.forEach((v, i) => expect(Math.abs(y[i]! - v)).toBeLessThanOrEqual(unit * (1 + 1e-5)));
    }
  });

  it('PowerSGD: a rank-2 matrix comes back (almost) exactly at rank 2; others approximately', () => {
    const rows = 60;
    const cols = 50;
    const u = gradient(rows * 2, 4);
    const v = gradient(cols * 2, 5);
    const m = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) m[i * cols + j] = u[i]! * v[j]! + u[rows + i]! * v[cols + j]!;
    const c = createCompressor('powersgd', { rank: 2, shape: [rows, cols], seed: 1 });
    // Power iteration converges over calls (the warm start); three suffice here.
    let y = new Float32Array(0);
    for (let call = 0; call < 3; call++) y = c.decompress(c.compress(m).payload);
    const err = norm(m.map((val, i) => val - y[i]!));
    expect(err / norm(m)).toBeLessThan(1e-4);
    const flat = createCompressor('powersgd', { rank: 4 });
    const z = flat.decompress(flat.compress(x).payload);
    expect(z.length).toBe(x.length);
    expect(norm(x.map((val, i) => val - z[i]!))).toBeLessThanOrEqual(norm(x));
  });
});

describe('half-precision casts (the kernels DataParallel\'s fp16 / bf16 use)', () => {
  const casts = loadAddon().compress;
  const bits = new Uint32Array(1);
  const asFloat = new Float32Array(bits.buffer);
  const f32 = (u: number) => ((bits[0] = u), asFloat[0]!);
  const half = (v: number, bf16 = false) => {
    const out = new Uint16Array(1);
    casts.castToHalf(Float32Array.of(v), out, bf16);
    return out[0];
  };

  it('float16 rounds to nearest, ties to even, overflow to infinity, NaN kept quiet', () => {
    expect(half(1 + 2 ** -11)).toBe(0x3c00); // halfway between 1 and the next half: even
    expect(half(1 + 3 * 2 ** -11)).toBe(0x3c02); // halfway, odd below: up
    expect(half(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    expect(half(65504)).toBe(0x7bff);
    expect(half(65519.99)).toBe(0x7bff);
    expect(half(65520)).toBe(0x7c00);
    expect(half(-Infinity)).toBe(0xfc00);
    expect(half(2 ** -25)).toBe(0); // exactly half the smallest subnormal: even (0)
    expect(half(2 ** -25 * 1.5)).toBe(1);
    expect(half(3 * 2 ** -25)).toBe(2); // 1.5 subnormal steps: ties to even (2)
    expect(half(-0)).toBe(0x8000);
    expect(half(f32(0x7f800001))).toBe(0x7e00);
  });

  it('bfloat16 rounds to nearest even and keeps NaN quiet', () => {
    expect(half(f32(0x3f808000), true)).toBe(0x3f80); // tie, even below
    expect(half(f32(0x3f818000), true)).toBe(0x3f82); // tie, odd below: up
    expect(half(f32(0x3f808001), true)).toBe(0x3f81);
    expect(half(f32(0x7f800001), true)).toBe(0x7fc0);
    expect(half(f32(0x7f7fffff), true)).toBe(0x7f80); // rounds to infinity
  });
});

describe('top-k', () => {
  function reference(x: Float32Array, k: number): number[] {
    return Array.from(x, (v, i) => [Number.isNaN(v) ? -1 : Math.abs(v), i] as const)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, k)
      .map(([, i]) => i)
      .sort((a, b) => a - b);
  }

  it('selects exactly the k largest magnitudes (ties to the lower index) on many inputs', () => {
    for (let trial = 0; trial < 60; trial++) {
      const r = random(100 + trial);
      const n = 1 + Math.floor(r() * 50_000);
      // Some inputs are full of ties, zeros and duplicates.
      const x = trial % 3 === 0 ? Float32Array.from({ length: n }, () => Math.floor(r() * 7) - 3) : gradient(n, trial);
      const ratio = [0.001, 0.01, 0.1, 0.5, 1][trial % 5]!;
      const c = createCompressor('topk', { ratio });
      const k = Math.min(n, Math.max(1, Math.round(ratio * n)));
      const y = c.decompress(c.compress(x).payload);
      const chosen = Array.from(y, (v, i) => (v !== 0 ? i : -1)).filter((i) => i >= 0);
      const expected = reference(x, k).filter((i) => x[i] !== 0);
      expect(chosen).toEqual(expected);
      for (const i of chosen) expect(y[i]).toBe(x[i]);
    }
  });

  it('never picks NaN before a number, and handles n = 0 and k = n', () => {
    const x = Float32Array.from([NaN, 1, NaN, -3, 2]);
    const c = createCompressor('topk', { ratio: 0.4 });
    const y = c.decompress(c.compress(x).payload);
    expect(Array.from(y)).toEqual([0, 0, 0, -3, 2]);
    expect(c.decompress(c.compress(new Float32Array(0)).payload).length).toBe(0);
    const all = createCompressor('topk', { ratio: 1 });
    expect(Array.from(all.decompress(all.compress(Float32Array.from([1, -2, 3])).payload))).toEqual([1, -2, 3]);
  });
});

describe('random-k', () => {
  it('k distinct seeded indices, fresh ones every call, the same for the same seed', () => {
    const x = gradient(5000, 9);
    const a = createCompressor('randomk', { ratio: 0.02, seed: 42 });
    const b = createCompressor('randomk', { ratio: 0.02, seed: 42 });
    const picks = (y: Float32Array) => Array.from(y, (v, i) => (v !== 0 ? i : -1)).filter((i) => i >= 0);
    const first = picks(a.decompress(a.compress(x).payload));
    expect(first).toHaveLength(100);
    expect(picks(b.decompress(b.compress(x).payload))).toEqual(first);
    const second = picks(a.decompress(a.compress(x).payload));
    expect(second).toHaveLength(100);
    expect(second).not.toEqual(first);
    const payload = a.compress(x).payload;
    expect(payload.length).toBe(32 + 4 * 100); // values only: the indices follow from the seeds
  });
});

describe('QSGD is unbiased', () => {
  it('averaged over seeds, the decodes approach the input', () => {
    const x = gradient(1000, 8);
    const sum = new Float64Array(x.length);
    const seeds = 2000;
    for (let seed = 0; seed < seeds; seed++) {
      const c = createCompressor('qsgd', { levels: 2, seed });
      c.decompress(c.compress(x).payload).forEach((v, i) => (sum[i]! += v));
    }
    const unit = norm(x) / 2;
    let worst = 0;
    x.forEach((v, i) => (worst = Math.max(worst, Math.abs(sum[i]! / seeds - v))));
    expect(worst).toBeLessThan((5 * unit) / (2 * Math.sqrt(seeds)));
  });

  it('the mean of many decodes approaches the input (the stream advances every call)', () => {
    const x = gradient(2000, 7);
    const c = createCompressor('qsgd', { levels: 4, seed: 11 });
    const sum = new Float64Array(x.length);
    const calls = 3000;
    for (let t = 0; t < calls; t++) {
      const y = c.decompress(c.compress(x).payload);
      y.forEach((v, i) => (sum[i]! += v));
    }
    const unit = norm(x) / 4;
    // Each decode is off by at most one level; the mean's error shrinks like unit / sqrt(calls).
    let worst = 0;
    x.forEach((v, i) => (worst = Math.max(worst, Math.abs(sum[i]! / calls - v))));
    expect(worst).toBeLessThan((5 * unit) / (2 * Math.sqrt(calls)));
    expect(worst).toBeGreaterThan(0);
  });
});

describe('error feedback', () => {
  it('what was sent plus the residual equals what went in, over any number of steps', () => {
    for (const name of ['topk', 'randomk', 'sign', 'int8', 'qsgd', 'fp16', 'powersgd'] as CompressorName[]) {
      const ef = new ErrorFeedback(createCompressor(name, { ratio: 0.05, levels: 8, rank: 2, seed: 5 }));
      const inputs = new Float64Array(3000);
      const sent = new Float64Array(3000);
      for (let step = 0; step < 40; step++) {
        const x = gradient(3000, 1000 + step);
        x.forEach((v, i) => (inputs[i]! += v));
        const y = ef.decompress(ef.compress(x).payload);
        y.forEach((v, i) => (sent[i]! += v));
      }
      const scaleOf = norm(inputs);
      let err = 0;
      inputs.forEach((v, i) => (err += (sent[i]! + ef.residual[i]! - v) ** 2));
      // Float32 rounding of the running residual only.
      expect(Math.sqrt(err) / scaleOf, name).toBeLessThan(1e-4);
    }
  });
});

describe('payloads', () => {
  const x = gradient(4099, 12);
  const names: CompressorName[] = ['none', 'fp16', 'bf16', 'topk', 'randomk', 'qsgd', 'int8', 'sign', 'powersgd'];

  it('have the announced size and say which compressor made them', () => {
    for (const name of names) {
      const c = createCompressor(name, { ratio: 0.1 });
      const { payload, context } = c.compress(x);
      expect(payload.length, name).toBe(c.payloadBytes(x.length));
      expect(context.length).toBe(x.length);
      const other = createCompressor(name === 'none' ? 'fp16' : 'none');
      expect(() => other.decompress(payload)).toThrow(new RegExp(`made by the '${name}' compressor`));
    }
  });

  it('truncated, bit-flipped or garbage payloads fail with CORRUPT_PAYLOAD, thousands of times, never crash', () => {
    const r = random(99);
    let failures = 0;
    for (const name of names) {
      const c = createCompressor(name, { ratio: 0.05 });
      const { payload } = c.compress(x);
      for (let t = 0; t < 500; t++) {
        const cut = payload.slice(0, Math.floor(r() * payload.length));
        expect(() => c.decompress(cut)).toThrow(CorruptPayloadError);
        const flipped = payload.slice();
        const bit = Math.floor(r() * payload.length * 8);
        flipped[bit >> 3]! ^= 1 << (bit & 7);
        expect(() => c.decompress(flipped)).toThrow(CorruptPayloadError);
        const longer = new Uint8Array(payload.length + 1 + Math.floor(r() * 64));
        longer.set(payload);
        expect(() => c.decompress(longer)).toThrow(CorruptPayloadError);
        failures += 3;
      }
      const garbage = Uint8Array.from({ length: 200 }, () => Math.floor(r() * 256));
      expect(() => c.decompress(garbage)).toThrow(CorruptPayloadError);
      expect(() => c.decompress('nope' as never)).toThrow(CorruptPayloadError);
      // An intact payload still decodes after all that.
      expect(c.decompress(payload).length).toBe(x.length);
    }
    expect(failures).toBe(names.length * 1500);
    try {
      createCompressor('sign').decompress(new Uint8Array(3));
    } catch (err) {
      expect((err as CorruptPayloadError).code).toBe('CORRUPT_PAYLOAD');
    }
  });

  it('decodes a payload at an odd byte offset (copied to alignment)', () => {
    const c = createCompressor('topk', { ratio: 0.1 });
    const { payload } = c.compress(x);
    const shifted = new Uint8Array(payload.length + 1);
    shifted.set(payload, 1);
    expect(Array.from(c.decompress(shifted.subarray(1)))).toEqual(Array.from(c.decompress(payload)));
  });
});

describe('options', () => {
  it('are checked with messages that say what to pass', () => {
    expect(() => createCompressor('zip' as never)).toThrow(/unknown compressor "zip"; use one of 'none', 'fp16'/);
    expect(() => createCompressor('topk', { ratio: 0 })).toThrow(/ratio must be a number in \(0, 1\]/);
    expect(() => createCompressor('qsgd', { levels: 0 })).toThrow(/levels must be an integer in \[1, 32767\]/);
    expect(() => createCompressor('int8', { blockSize: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => createCompressor('powersgd', { shape: [2] as never })).toThrow(/shape must be \[rows, cols\]/);
    expect(() => createCompressor('powersgd', { shape: [3, 3] }).compress(new Float32Array(10))).toThrow(/does not hold 10 elements/);
    expect(() => createCompressor('sign').compress([1, 2] as never)).toThrow(/must be a Float32Array/);
    const ef = new ErrorFeedback(createCompressor('sign'));
    ef.compress(new Float32Array(4));
    expect(() => ef.compress(new Float32Array(5))).toThrow(/length changed from 4 to 5/);
  });
});

describe('kernel variants', () => {
  it('generic, AVX2 and AVX-512 kernels give every compressor the same payload bits', async () => {
    const { spawnSync } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const script = fileURLToPath(new URL('./test-support/digests.mjs', import.meta.url));
    const runs = ['generic', 'avx2', 'avx512'].map((isa) => {
      const r = spawnSync(process.execPath, [script], { env: { ...process.env, BRAID_ISA: isa }, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, string>;
    });
    const [first, ...others] = runs.map(({ isa: _isa, ...digests }) => digests);
    for (const other of others) expect(other).toEqual(first);
    // Which variants actually ran depends on this CPU (an unsupported one falls back).
    expect(runs[0]!.isa).toBe('generic');
  });
});

describe('unknown options are refused, naming the key and the nearest known one', () => {
  it('in createCompressor and allReduceCompressed', async () => {
    expect(() => createCompressor('topk', { ratoi: 0.1 } as never)).toThrow(/createCompressor: unknown option 'ratoi'; did you mean 'ratio'\?/);
    expect(() => createCompressor('qsgd', { level: 4 } as never)).toThrow(/did you mean 'levels'\?/);
    const { init } = await import('@braid/collectives');
    const { allReduceCompressed } = await import('./index.js');
    const comm = await init();
    await expect(allReduceCompressed(comm, new Float32Array(4), createCompressor('fp16'), { Op: 'avg' } as never)).rejects.toThrow(/allReduceCompressed: unknown option 'Op'; did you mean 'op'\?/);
  });
});
