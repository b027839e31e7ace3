// float32 <-> float16 / bfloat16 in JavaScript, round to nearest even, with the NaN handling of
// the native kernels (native/src/kernels/half.h, which follows x86 F16C): a NaN keeps its payload's
// top bits and is made quiet. Both sides of a compressed all-reduce must agree bit for bit.

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

export function floatToHalfBits(value: number): number {
  scratch[0] = value;
  const bits = scratchBits[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return mantissa !== 0 ? sign | 0x7e00 | (mantissa >>> 13) : sign | 0x7c00;
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Subnormal or zero: the value is (1.mantissa) * 2^(exponent-127) = h * 2^-24.
    if (halfExponent < -10) return sign;
    const full = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    let h = full >>> shift;
    const rest = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (halfExponent << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa moves into the exponent, up to infinity: both are correct.
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

export function halfBitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) {
    if (mantissa === 0) return sign * Infinity;
    // Keep the payload: build the float32 NaN bit by bit, quiet bit set.
    scratchBits[0] = ((h & 0x8000) << 16) | 0x7fc00000 | (mantissa << 13);
    return scratch[0]!;
  }
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function floatToBfloat16Bits(value: number): number {
  scratch[0] = value;
  const bits = scratchBits[0]!;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloat16BitsToFloat(h: number): number {
  scratchBits[0] = (h & 0xffff) << 16;
  return scratch[0]!;
}

/** Converts `from` into `to` (same length) as float16 or bfloat16 bits. */
export function encodeHalf(from: Float32Array, to: Uint16Array, kind: 'float16' | 'bfloat16'): void {
  const n = from.length;
  if (kind === 'bfloat16') {
    const bits = new Uint32Array(from.buffer, from.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const b = bits[i]!;
      to[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  } else {
    for (let i = 0; i < n; i++) to[i] = floatToHalfBits(from[i]!);
  }
}

/** Converts float16 or bfloat16 bits in `from` back into float32 in `to`. */
export function decodeHalf(from: Uint16Array, to: Float32Array, kind: 'float16' | 'bfloat16'): void {
  const n = from.length;
  if (kind === 'bfloat16') {
    const bits = new Uint32Array(to.buffer, to.byteOffset, n);
    for (let i = 0; i < n; i++) bits[i] = from[i]! << 16;
  } else {
    for (let i = 0; i < n; i++) to[i] = halfBitsToFloat(from[i]!);
  }
}
