// Scalar float16 / bfloat16 <-> float32 conversions, round to nearest even, written branch-free
// so compilers vectorize them. NaN handling matches the x86 F16C instructions (the payload's top
// bits are kept and the quiet bit is set), so a rank using F16C and a rank using this code
// produce the same bits.
//
// Host and device code: the CUDA kernels (cuda/compress.cu) include this file for the same rules.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define BRAID_HALF_FN __host__ __device__ inline
#else
#define BRAID_HALF_FN inline
#endif

namespace braid {

BRAID_HALF_FN uint32_t floatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
BRAID_HALF_FN float bitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

BRAID_HALF_FN float f16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t expMant = static_cast<uint32_t>(h & 0x7fffu) << 13;
  const uint32_t exp = expMant & 0x0f800000u;
  const uint32_t normal = expMant + ((127u - 15u) << 23);
  // Inf / NaN: move the exponent to all-ones, and quiet a NaN.
  const uint32_t special = (expMant + ((255u - 31u) << 23)) | ((expMant & 0x007fffffu) ? 0x00400000u : 0u);
  // Subnormal: let the FPU normalise via a magic subtraction.
  const float sub = bitsFloat(expMant + (113u << 23)) - bitsFloat(113u << 23);
  const uint32_t out = exp == 0x0f800000u ? special : (exp == 0 ? floatBits(sub) : normal);
  return bitsFloat(out | sign);
}

BRAID_HALF_FN uint16_t f32ToF16(float value) {
  uint32_t f = floatBits(value);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  const uint32_t kInf32 = 255u << 23;
  const uint32_t kMax16 = (127u + 16u) << 23;  // first value that rounds to inf
  const uint32_t kDenormMagic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t out;
  if (f >= kMax16) {
    out = f > kInf32 ? (0x7e00u | ((f >> 13) & 0x3ffu)) : 0x7c00u;
  } else if (f < (113u << 23)) {
    // Result is subnormal or zero: the float adder does the rounding (nearest even).
    out = floatBits(bitsFloat(f) + bitsFloat(kDenormMagic)) - kDenormMagic;
  } else {
    const uint32_t mantOdd = (f >> 13) & 1u;
    f += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
    f += mantOdd;
    out = f >> 13;
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

BRAID_HALF_FN float bf16ToF32(uint16_t h) { return bitsFloat(static_cast<uint32_t>(h) << 16); }

BRAID_HALF_FN uint16_t f32ToBf16(float value) {
  const uint32_t u = floatBits(value);
  const bool isNan = (u & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(isNan ? ((u >> 16) | 0x40u) : rounded);
}

}  // namespace braid
