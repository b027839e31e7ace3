// The compressors. Each turns a Float32Array into a self-describing payload and back:
// compress(x) -> { payload, context }, decompress(payload) -> Float32Array. Payload sizes depend
// only on the compressor's options and the input length, so ranks can all-gather them.
import { checkOptions, CorruptPayloadError, InvalidArgumentError } from '@braid/collectives';

import { callSeeds, type CompressorName, HEADER_BYTES, type Header, kernels, KINDS, newPayload, openPayload, seal } from './payload.js';

export type { CompressorName } from './payload.js';

export interface CompressContext {
  /** Elements in the input. */
  length: number;
  /** PowerSGD's matrix shape [rows, cols] (the input padded with zeros to rows x cols). */
  shape?: [number, number];
}

export interface Compressed {
  payload: Uint8Array;
  context: CompressContext;
}

export interface Compressor {
  readonly name: CompressorName;
  compress(x: Float32Array): Compressed;
  /** The values a payload carries; with `into`, written there (added, with `accumulate`). */
  decompress(payload: Uint8Array, into?: Float32Array, accumulate?: boolean): Float32Array;
  /** Bytes of the payload for an input of `length` elements. */
  payloadBytes(length: number): number;
}

export interface CompressorOptions {
  /** top-k and random-k: k = round(ratio * n), at least 1 for n > 0. Default 0.01. */
  ratio?: number;
  /** QSGD: quantization levels s (1..32767). Default 256. */
  levels?: number;
  /** int8: elements per scale. Default 256. */
  blockSize?: number;
  /** PowerSGD: the rank r of the approximation. Default 4. */
  rank?: number;
  /** PowerSGD: the matrix shape [rows, cols] (rows x cols = n); default near-square. */
  shape?: [number, number];
  /** random-k, QSGD, PowerSGD: the stream's seed (default 0). Same seed on every rank: same draws. */
  seed?: number;
}

function checkInput(name: string, x: unknown): asserts x is Float32Array {
  if (!(x instanceof Float32Array)) throw new InvalidArgumentError(`${name}.compress: x must be a Float32Array; got ${x === null ? 'null' : typeof x}`);
  if (x.length > 0xffffffff) throw new InvalidArgumentError(`${name}.compress: at most 2^32-1 elements`);
}

function output(name: string, length: number, into: Float32Array | undefined): Float32Array {
  if (into === undefined) return new Float32Array(length);
  if (!(into instanceof Float32Array) || into.length !== length) {
    throw new InvalidArgumentError(`${name}.decompress: 'into' must be a Float32Array of the payload's ${length} elements`);
  }
  return into;
}

/** Views of consecutive sections of a payload body (each 4-byte aligned when its type needs it). */
class Sections {
  private offset = HEADER_BYTES;
  constructor(private readonly payload: Uint8Array) {}
  f32(n: number): Float32Array {
    const v = new Float32Array(this.payload.buffer, this.payload.byteOffset + this.offset, n);
    this.offset += 4 * n;
    return v;
  }
  u32(n: number): Uint32Array {
    const v = new Uint32Array(this.payload.buffer, this.payload.byteOffset + this.offset, n);
    this.offset += 4 * n;
    return v;
  }
  u16(n: number): Uint16Array {
    const v = new Uint16Array(this.payload.buffer, this.payload.byteOffset + this.offset, n);
    this.offset += 2 * n;
    return v;
  }
  i16(n: number): Int16Array {
    const v = new Int16Array(this.payload.buffer, this.payload.byteOffset + this.offset, n);
    this.offset += 2 * n;
    return v;
  }
  i8(n: number): Int8Array {
    const v = new Int8Array(this.payload.buffer, this.payload.byteOffset + this.offset, n);
    this.offset += n;
    return v;
  }
  u8(n: number): Uint8Array {
    const v = this.payload.subarray(this.offset, this.offset + n);
    this.offset += n;
    return v;
  }
}

abstract class Base implements Compressor {
  abstract readonly name: CompressorName;
  protected calls = 0;
  constructor(protected readonly seed: number) {}
  abstract payloadBytes(length: number): number;
  protected abstract bodyBytes(h: Header): number;
  /** The header's parameters for an input of `length` elements (the seeds: this call's). */
  protected abstract params(length: number, seeds: [number, number]): Omit<Header, 'kind' | 'length'>;
  protected abstract encode(x: Float32Array, header: Header): { fill: (s: Sections) => void; context?: Partial<CompressContext> };
  protected abstract decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean): void;

  compress(x: Float32Array): Compressed {
    checkInput(this.name, x);
    const full = this.nextHeader(x.length);
    const { fill, context } = this.encode(x, full);
    const payload = newPayload(full, this.bodyBytes(full));
    fill(new Sections(payload));
    return { payload: seal(payload), context: { length: x.length, ...context } };
  }

  /**
   * @internal The header of this call's payload for `length` elements, as compress() writes it
   * (its first 28 bytes; the checksum is left zero): for the payloads made on a device.
   */
  deviceHeader(length: number): Uint8Array {
    return newPayload(this.nextHeader(length), 0).subarray(0, HEADER_BYTES);
  }

  private nextHeader(length: number): Header {
    return { kind: this.name, length, ...this.params(length, callSeeds(this.seed, this.calls++)) };
  }

  decompress(payload: Uint8Array, into?: Float32Array, accumulate = false): Float32Array {
    const opened = openPayload(payload, this.name, (h) => this.bodyBytes(h));
    const out = output(this.name, opened.header.length, into);
    this.decode(opened.header, new Sections(opened.payload), out, accumulate && into !== undefined);
    return out;
  }
}

/** @internal This call's payload header for `length` elements (its first 28 bytes), or undefined for a compressor not made by createCompressor. */
export function deviceHeaderOf(compressor: Compressor, length: number): Uint8Array | undefined {
  return compressor instanceof Base ? compressor.deviceHeader(length) : undefined;
}

class NoneCompressor extends Base {
  readonly name = 'none';
  payloadBytes(n: number) {
    return HEADER_BYTES + 4 * n;
  }
  protected bodyBytes(h: Header) {
    return 4 * h.length;
  }
  protected params() {
    return { param0: 0, param1: 0, seedA: 0, seedB: 0 };
  }
  protected encode(x: Float32Array) {
    return { fill: (s: Sections) => s.f32(x.length).set(x) };
  }
  protected decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean) {
    const values = s.f32(h.length);
    if (accumulate) kernels().add(out, values, out);
    else out.set(values);
  }
}

class HalfCompressor extends Base {
  constructor(
    readonly name: 'fp16' | 'bf16',
    seed: number,
  ) {
    super(seed);
  }
  payloadBytes(n: number) {
    return HEADER_BYTES + ((2 * n + 3) & ~3);
  }
  protected bodyBytes(h: Header) {
    return 2 * h.length;
  }
  protected params() {
    return { param0: 0, param1: 0, seedA: 0, seedB: 0 };
  }
  protected encode(x: Float32Array) {
    return { fill: (s: Sections) => kernels().castToHalf(x, s.u16(x.length), this.name === 'bf16') };
  }
  protected decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean) {
    kernels().castFromHalf(s.u16(h.length), out, this.name === 'bf16', accumulate);
  }
}

function kOf(ratio: number, n: number): number {
  return n === 0 ? 0 : Math.min(n, Math.max(1, Math.round(ratio * n)));
}

class TopKCompressor extends Base {
  readonly name = 'topk';
  constructor(
    private readonly ratio: number,
    seed: number,
  ) {
    super(seed);
  }
  payloadBytes(n: number) {
    return HEADER_BYTES + 8 * kOf(this.ratio, n);
  }
  protected bodyBytes(h: Header) {
    if (h.param0 > h.length) throw new Error(`k ${h.param0} > length ${h.length}`);
    return 8 * h.param0;
  }
  protected params(length: number) {
    return { param0: kOf(this.ratio, length), param1: 0, seedA: 0, seedB: 0 };
  }
  protected encode(x: Float32Array, h: Header) {
    const k = h.param0;
    return {
      fill: (s: Sections) => {
        const values = s.f32(k);
        kernels().topk(x, k, s.u32(k), values);
      },
    };
  }
  protected decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean) {
    const values = s.f32(h.param0);
    const indices = s.u32(h.param0);
    if (!accumulate) out.fill(0);
    if (!kernels().scatter(indices, values, out, true)) {
      throw new CorruptPayloadError('decompress: the top-k payload holds indices out of range or out of order');
    }
  }
}

class RandomKCompressor extends Base {
  readonly name = 'randomk';
  constructor(
    private readonly ratio: number,
    seed: number,
  ) {
    super(seed);
  }
  payloadBytes(n: number) {
    return HEADER_BYTES + 4 * kOf(this.ratio, n);
  }
  protected bodyBytes(h: Header) {
    if (h.param0 > h.length) throw new Error(`k ${h.param0} > length ${h.length}`);
    return 4 * h.param0;
  }
  // Only the values travel: the indices follow from the seeds in the header.
  protected params(length: number, [seedA, seedB]: [number, number]) {
    return { param0: kOf(this.ratio, length), param1: 0, seedA, seedB };
  }
  protected encode(x: Float32Array, h: Header) {
    const k = h.param0;
    return {
      fill: (s: Sections) => {
        const indices = new Uint32Array(k);
        kernels().randomk(x.length, k, h.seedA, h.seedB, indices);
        kernels().gather(x, indices, s.f32(k));
      },
    };
  }
  protected decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean) {
    const indices = new Uint32Array(h.param0);
    kernels().randomk(h.length, h.param0, h.seedA, h.seedB, indices);
    if (!accumulate) out.fill(0);
    kernels().scatter(indices, s.f32(h.param0), out, true);
  }
}

class QsgdCompressor extends Base {
  readonly name = 'qsgd';
  constructor(
    private readonly levels: number,
    seed: number,
  ) {
    super(seed);
  }
  private codeBytes(levels: number) {
    return levels <= 127 ? 1 : 2;
  }
  payloadBytes(n: number) {
    return HEADER_BYTES + ((4 + this.codeBytes(this.levels) * n + 3) & ~3);
  }
  protected bodyBytes(h: Header) {
    if (h.param0 < 1 || h.param0 > 32767 || h.param1 !== this.codeBytes(h.param0)) throw new Error(`levels ${h.param0}, code size ${h.param1}`);
    return 4 + h.param1 * h.length;
  }
  protected params(_length: number, [seedA, seedB]: [number, number]) {
    return { param0: this.levels, param1: this.codeBytes(this.levels), seedA, seedB };
  }
  protected encode(x: Float32Array, h: Header) {
    const norm = Math.fround(Math.sqrt(kernels().sumSquares(x)));
    return {
      fill: (s: Sections) => {
        s.f32(1)[0] = norm;
        kernels().qsgdEncode(x, norm, this.levels, h.seedA, h.seedB, h.param1 === 1 ? s.i8(x.length) : s.i16(x.length));
      },
    };
  }
  protected decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean) {
    const norm = s.f32(1)[0]!;
    if (!Number.isFinite(norm) || norm < 0) throw new CorruptPayloadError('decompress: the QSGD payload holds an invalid norm');
    kernels().qsgdDecode(h.param1 === 1 ? s.i8(h.length) : s.i16(h.length), norm, h.param0, out, accumulate);
  }
}

class Int8Compressor extends Base {
  readonly name = 'int8';
  constructor(
    private readonly blockSize: number,
    seed: number,
  ) {
    super(seed);
  }
  payloadBytes(n: number) {
    return HEADER_BYTES + ((4 * Math.ceil(n / this.blockSize) + n + 3) & ~3);
  }
  protected bodyBytes(h: Header) {
    if (h.param0 < 1) throw new Error('block size 0');
    return 4 * Math.ceil(h.length / h.param0) + h.length;
  }
  protected params() {
    return { param0: this.blockSize, param1: 0, seedA: 0, seedB: 0 };
  }
  protected encode(x: Float32Array) {
    return {
      fill: (s: Sections) => {
        const scales = s.f32(Math.ceil(x.length / this.blockSize));
        kernels().int8Encode(x, this.blockSize, scales, s.i8(x.length));
      },
    };
  }
  protected decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean) {
    const scales = s.f32(Math.ceil(h.length / h.param0));
    kernels().int8Decode(s.i8(h.length), scales, h.param0, out, accumulate);
  }
}

class SignCompressor extends Base {
  readonly name = 'sign';
  payloadBytes(n: number) {
    return HEADER_BYTES + ((4 + Math.ceil(n / 8) + 3) & ~3);
  }
  protected bodyBytes(h: Header) {
    return 4 + Math.ceil(h.length / 8);
  }
  protected params() {
    return { param0: 0, param1: 0, seedA: 0, seedB: 0 };
  }
  // signSGD with a scale: each value becomes +-mean(|x|), which keeps the L1 norm.
  protected encode(x: Float32Array) {
    const scale = x.length > 0 ? Math.fround(kernels().sumAbs(x) / x.length) : 0;
    return {
      fill: (s: Sections) => {
        s.f32(1)[0] = scale;
        kernels().signEncode(x, s.u8(Math.ceil(x.length / 8)));
      },
    };
  }
  protected decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean) {
    const scale = s.f32(1)[0]!;
    if (!Number.isFinite(scale)) throw new CorruptPayloadError('decompress: the sign payload holds an invalid scale');
    kernels().signDecode(s.u8(Math.ceil(h.length / 8)), scale, out, accumulate);
  }
}

/** Rows x cols for n elements: the given shape, or near-square (rows = ceil(sqrt(n))). */
export function matrixShape(n: number, shape?: [number, number]): [number, number] {
  if (shape) {
    if (shape[0] * shape[1] !== n) throw new InvalidArgumentError(`powersgd: shape ${shape[0]}x${shape[1]} does not hold ${n} elements`);
    return shape;
  }
  if (n === 0) return [0, 0];
  const rows = Math.ceil(Math.sqrt(n));
  return [rows, Math.ceil(n / rows)];
}

/** Seeded standard normals (Box-Muller over the counter-based generator). */
export function seededNormals(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const [a, b] = callSeeds(seed, i);
    const u1 = ((a >>> 8) + 1) / 16777217;
    const u2 = (b >>> 8) / 16777216;
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < count) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

export class PowerSgdCompressor extends Base {
  readonly name = 'powersgd';
  /** Q from the previous call (transposed, rank x cols): PowerSGD's warm start. */
  private qt: Float32Array | undefined;
  private qtShape = '';

  constructor(
    readonly rank: number,
    private readonly shape: [number, number] | undefined,
    seed: number,
  ) {
    super(seed);
  }

  dims(n: number): { rows: number; cols: number; r: number } {
    const [rows, cols] = matrixShape(n, this.shape);
    return { rows, cols, r: Math.max(0, Math.min(this.rank, rows, cols)) };
  }

  payloadBytes(n: number) {
    const { rows, cols, r } = this.dims(n);
    return HEADER_BYTES + 4 * r * (rows + cols);
  }

  protected bodyBytes(h: Header) {
    const rows = h.param1;
    const r = h.param0;
    if (h.length === 0) return 0;
    if (rows < 1 || rows > h.length) throw new Error(`rows ${rows}`);
    const cols = Math.ceil(h.length / rows);
    if (r > Math.min(rows, cols)) throw new Error(`rank ${r} > ${Math.min(rows, cols)}`);
    return 4 * r * (rows + cols);
  }

  /** The warm-start Q for this shape (seeded, so every rank starts from the same one). */
  startQ(r: number, cols: number): Float32Array {
    const key = `${r}x${cols}`;
    if (!this.qt || this.qtShape !== key) {
      this.qt = seededNormals(r * cols, this.seed);
      this.qtShape = key;
    }
    return this.qt;
  }

  keepQ(qt: Float32Array): void {
    this.qt = qt.slice();
  }

  /** The input as a rows x cols matrix (zero-padded when rows x cols > n). */
  matrix(x: Float32Array, rows: number, cols: number): Float32Array {
    if (rows * cols === x.length) return x;
    const m = new Float32Array(rows * cols);
    m.set(x);
    return m;
  }

  protected params(length: number) {
    const { rows, r } = this.dims(length);
    return { param0: r, param1: rows, seedA: 0, seedB: 0 };
  }
  protected encode(x: Float32Array) {
    const { rows, cols, r } = this.dims(x.length);
    return {
      context: { shape: [rows, cols] as [number, number] },
      fill: (s: Sections) => {
        if (x.length === 0) return;
        const k = kernels();
        const m = this.matrix(x, rows, cols);
        const pt = s.f32(r * rows);
        const qt = s.f32(r * cols);
        k.powerP(m, rows, cols, this.startQ(r, cols), r, pt);
        k.orthonormalize(pt, r, rows);
        k.powerQ(m, rows, cols, pt, r, qt);
        this.keepQ(qt);
      },
    };
  }

  protected decode(h: Header, s: Sections, out: Float32Array, accumulate: boolean) {
    if (h.length === 0) return;
    const rows = h.param1;
    const cols = Math.ceil(h.length / rows);
    const r = h.param0;
    const pt = s.f32(r * rows);
    const qt = s.f32(r * cols);
    reconstruct(pt, qt, r, rows, cols, out, accumulate);
  }
}

/** out (+)= (P Q^T) restricted to the first out.length elements. */
export function reconstruct(pt: Float32Array, qt: Float32Array, r: number, rows: number, cols: number, out: Float32Array, accumulate: boolean): void {
  const k = kernels();
  if (rows * cols === out.length) {
    k.powerReconstruct(pt, qt, r, rows, cols, out, accumulate);
    return;
  }
  const full = new Float32Array(rows * cols);
  k.powerReconstruct(pt, qt, r, rows, cols, full, false);
  const part = full.subarray(0, out.length);
  if (accumulate) k.add(out, part, out);
  else out.set(part);
}

function number(name: string, what: string, value: unknown, fallback: number, check: (v: number) => boolean, expectation: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !check(value)) throw new InvalidArgumentError(`createCompressor('${name}'): ${what} must be ${expectation}; got ${JSON.stringify(value)}`);
  return value;
}

/** A compressor by name: 'none', 'fp16', 'bf16', 'topk', 'randomk', 'qsgd', 'int8', 'sign', 'powersgd'. */
export function createCompressor(name: CompressorName, options: CompressorOptions = {}): Compressor {
  if (!KINDS.includes(name)) throw new InvalidArgumentError(`createCompressor: unknown compressor ${JSON.stringify(name)}; use one of ${KINDS.map((k) => `'${k}'`).join(', ')}`);
  // Any compressor's option is accepted (one options object can serve several names); others,
  // misspellings above all, are refused.
  checkOptions('createCompressor', options, ['ratio', 'levels', 'blockSize', 'rank', 'shape', 'seed']);
  const seed = number(name, 'seed', options.seed, 0, (v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff, 'an integer in [0, 2^32)');
  switch (name) {
    case 'none':
      return new NoneCompressor(seed);
    case 'fp16':
    case 'bf16':
      return new HalfCompressor(name, seed);
    case 'topk':
    case 'randomk': {
      const ratio = number(name, 'ratio', options.ratio, 0.01, (v) => v > 0 && v <= 1, 'a number in (0, 1]');
      return name === 'topk' ? new TopKCompressor(ratio, seed) : new RandomKCompressor(ratio, seed);
    }
    case 'qsgd':
      return new QsgdCompressor(number(name, 'levels', options.levels, 256, (v) => Number.isInteger(v) && v >= 1 && v <= 32767, 'an integer in [1, 32767]'), seed);
    case 'int8':
      return new Int8Compressor(number(name, 'blockSize', options.blockSize, 256, (v) => Number.isInteger(v) && v >= 1 && v <= 0xffffffff, 'a positive integer'), seed);
    case 'sign':
      return new SignCompressor(seed);
    case 'powersgd': {
      const rank = number(name, 'rank', options.rank, 4, (v) => Number.isInteger(v) && v >= 1 && v <= 1024, 'an integer in [1, 1024]');
      const shape = options.shape;
      if (shape !== undefined && !(Array.isArray(shape) && shape.length === 2 && shape.every((d) => Number.isInteger(d) && d >= 1))) {
        throw new InvalidArgumentError(`createCompressor('powersgd'): shape must be [rows, cols] of positive integers; got ${JSON.stringify(shape)}`);
      }
      return new PowerSgdCompressor(rank, shape, seed);
    }
  }
}
