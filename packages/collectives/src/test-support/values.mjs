// The values every rank contributes in the multi-process tests, and the exact answers. Small
// integers (and products of 1, 2 and -1) keep every reduction exact in every dtype, so results
// can be compared bit for bit.

export const DTYPES = ['float32', 'float64', 'int32', 'int64', 'uint8', 'int8', 'float16', 'bfloat16'];
export const OPS = ['sum', 'prod', 'min', 'max', 'avg'];
export const FLOAT_DTYPES = new Set(['float32', 'float64', 'float16', 'bfloat16']);

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> float16 bits, round to nearest even (exact for the small values used here). */
export function toF16(value) {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (value === 0) return sign;
  if (exp <= 0) {
    // subnormal
    mant = (mant | 0x800000) >>> (1 - exp);
    const half = (mant >>> 12) & 1, rest = mant & 0xfff, out = mant >>> 13;
    return sign | (out + (half && (rest || (out & 1)) ? 1 : 0));
  }
  const half = (mant >>> 12) & 1, rest = mant & 0xfff;
  let out = (exp << 10) | (mant >>> 13);
  if (half && (rest || (out & 1))) out += 1;
  return sign | out;
}
export function toBF16(value) {
  f32[0] = value;
  const x = u32[0];
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function arrayFor(dtype, length) {
  switch (dtype) {
    case 'float32': return new Float32Array(length);
    case 'float64': return new Float64Array(length);
    case 'int32': return new Int32Array(length);
    case 'int64': return new BigInt64Array(length);
    case 'uint8': return new Uint8Array(length);
    case 'int8': return new Int8Array(length);
    default: return new Uint16Array(length);
  }
}

function encode(dtype, v) {
  if (dtype === 'int64') return BigInt(v);
  if (dtype === 'float16') return toF16(v);
  if (dtype === 'bfloat16') return toBF16(v);
  return v;
}

/** Rank r's contribution at element i: periodic in i with period 5 (13i mod 5). */
export function valueAt(dtype, op, r, i) {
  const v = (r * 7 + i * 13) % 5;
  if (op === 'prod') return v % 3 === 0 ? 1 : v % 3 === 1 ? 2 : dtype === 'uint8' ? 3 : -1;
  return dtype === 'uint8' ? v : v - 2;
}

const PERIOD = 5;

// Fills a[PERIOD..] with copies of a[0..PERIOD): the values repeat, and writing MiB-sized arrays
// element by element was most of the multi-process tests' time.
function repeatPeriod(a) {
  for (let n = PERIOD; n < a.length; n *= 2) a.copyWithin(n, 0, Math.min(n, a.length - n));
  return a;
}

export function fill(dtype, op, rank, length) {
  const a = arrayFor(dtype, length);
  for (let i = 0; i < Math.min(length, PERIOD); i++) a[i] = encode(dtype, valueAt(dtype, op, rank, i));
  return repeatPeriod(a);
}

function wrap(dtype, v) {
  if (dtype === 'uint8') return ((v % 256) + 256) % 256;
  if (dtype === 'int8') return (((v + 128) % 256) + 256) % 256 - 128;
  if (dtype === 'int32') return v | 0;
  return v;
}

/** The exact all-reduce of `fill(dtype, op, r, length)` over ranks 0..size-1. */
export function expected(dtype, op, size, length) {
  const a = arrayFor(dtype, length);
  for (let i = 0; i < Math.min(length, PERIOD); i++) {
    let acc = valueAt(dtype, op, 0, i);
    for (let r = 1; r < size; r++) {
      const v = valueAt(dtype, op, r, i);
      if (op === 'sum' || op === 'avg') acc += v;
      else if (op === 'prod') acc *= v;
      else if (op === 'min') acc = Math.min(acc, v);
      else acc = Math.max(acc, v);
    }
    acc = wrap(dtype, acc);
    if (op === 'avg') {
      // The sum is exact; the division is rounded once, in the element type.
      if (dtype === 'float32') acc = Math.fround(Math.fround(acc) / size);
      else if (dtype === 'float64') acc = acc / size;
      else {
        a[i] = encode(dtype, Math.fround(acc / size));
        continue;
      }
    }
    a[i] = encode(dtype, acc);
  }
  return repeatPeriod(a);
}

export function sameBytes(x, y) {
  return x.byteLength === y.byteLength && Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
}

/** Number of elements of `got` that differ from `want`. */
export function countWrong(got, want) {
  // Equal bytes are equal elements (the answers hold no NaN); only a mismatch is counted one by one.
  if (got.length === want.length && sameBytes(got, want)) return 0;
  let wrong = 0;
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) wrong++;
  return wrong;
}
