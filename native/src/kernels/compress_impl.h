// The compression loops, written plainly for the compiler to vectorize for the ISA of the
// including file (which defines BRAID_ISA_NS first, as for reduce_impl.h). Where a loop does not
// auto-vectorize (compress-store), the AVX-512 file uses intrinsics.
#pragma once
#ifndef BRAID_ISA_NS
#error "define BRAID_ISA_NS before including compress_impl.h"
#endif
#include <cmath>
#include <cstring>

#include "kernels/compress.h"
#include "kernels/compress_scalar.h"
#include "kernels/half.h"

#if defined(BRAID_USE_F16C) || defined(BRAID_USE_AVX512)
#include <immintrin.h>
#endif

namespace braid {
namespace BRAID_ISA_NS {

inline void toHalf(const float* in, uint16_t* out, size_t n) {
  size_t i = 0;
#if defined(BRAID_USE_F16C)
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
#endif
  for (; i < n; ++i) out[i] = f32ToF16(in[i]);
}

inline void fromHalf(const uint16_t* in, float* out, size_t n, bool accumulate) {
  size_t i = 0;
#if defined(BRAID_USE_F16C)
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(out + i));
    _mm256_storeu_ps(out + i, v);
  }
#endif
  for (; i < n; ++i) out[i] = accumulate ? out[i] + f16ToF32(in[i]) : f16ToF32(in[i]);
}

inline void toBfloat16(const float* in, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, in + i, 4);
    const bool isNan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    out[i] = static_cast<uint16_t>(isNan ? ((u >> 16) | 0x40u) : rounded);
  }
}

inline void fromBfloat16(const uint16_t* in, float* out, size_t n, bool accumulate) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(in[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    out[i] = accumulate ? out[i] + f : f;
  }
}

// Eight partial sums, combined at the end: vectorizes, and every variant adds in the same order
// within a lane, so results differ across ISAs only by the final combination.
inline double sumSquares(const float* x, size_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(x[i + l]) * x[i + l];
  for (; i < n; ++i) acc[0] += static_cast<double>(x[i]) * x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

inline double sumAbs(const float* x, size_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += std::fabs(x[i + l]);
  for (; i < n; ++i) acc[0] += std::fabs(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

inline void int8Encode(const float* x, size_t n, size_t block, float* scales, int8_t* codes) {
  for (size_t b = 0, start = 0; start < n; ++b, start += block) {
    const size_t len = n - start < block ? n - start : block;
    float maxAbs = 0;
    // A plain compare-select (not std::fmax, whose NaN rules block vectorization).
    for (size_t i = 0; i < len; ++i) {
      const float a = std::fabs(x[start + i]);
      maxAbs = a > maxAbs ? a : maxAbs;
    }
    const float scale = maxAbs / 127.0f;
    scales[b] = scale;
    const float inverse = scale > 0 ? 1.0f / scale : 0.0f;
    for (size_t i = 0; i < len; ++i) codes[start + i] = rules::int8Code(x[start + i], inverse);
  }
}

inline void int8Decode(const int8_t* codes, const float* scales, size_t n, size_t block, float* out, bool accumulate) {
  for (size_t b = 0, start = 0; start < n; ++b, start += block) {
    const size_t len = n - start < block ? n - start : block;
    const float scale = scales[b];
    if (accumulate) {
      for (size_t i = 0; i < len; ++i) out[start + i] += static_cast<float>(codes[start + i]) * scale;
    } else {
      for (size_t i = 0; i < len; ++i) out[start + i] = static_cast<float>(codes[start + i]) * scale;
    }
  }
}

// Bit i of the stream is 1 when x[i] < 0 (or is -0 / a negative NaN: the sign bit).
inline void signEncode(const float* x, size_t n, uint8_t* bits) {
  const size_t full = n / 8;
  for (size_t byte = 0; byte < full; ++byte) {
    uint32_t v = 0;
    for (int b = 0; b < 8; ++b) {
      uint32_t u;
      std::memcpy(&u, x + byte * 8 + b, 4);
      v |= (u >> 31) << b;
    }
    bits[byte] = static_cast<uint8_t>(v);
  }
  if (n % 8) {
    uint32_t v = 0;
    for (size_t i = full * 8; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, x + i, 4);
      v |= (u >> 31) << (i - full * 8);
    }
    bits[full] = static_cast<uint8_t>(v);
  }
}

inline void signDecode(const uint8_t* bits, size_t n, float scale, float* out, bool accumulate) {
  uint32_t scaleBits;
  std::memcpy(&scaleBits, &scale, 4);
  // Eight values per byte, the sign flipped by bit j: the inner loop vectorizes as variable shifts.
  const size_t full = n / 8;
  for (size_t byte = 0; byte < full; ++byte) {
    const uint32_t b = bits[byte];
    float v[8];
    for (int j = 0; j < 8; ++j) {
      const uint32_t u = scaleBits ^ (((b >> j) & 1u) << 31);
      std::memcpy(v + j, &u, 4);
    }
    float* o = out + byte * 8;
    if (accumulate) {
      for (int j = 0; j < 8; ++j) o[j] += v[j];
    } else {
      for (int j = 0; j < 8; ++j) o[j] = v[j];
    }
  }
  for (size_t i = full * 8; i < n; ++i) {
    const float v = ((bits[i >> 3] >> (i & 7)) & 1) ? -scale : scale;
    out[i] = accumulate ? out[i] + v : v;
  }
}

template <class Code>
inline void qsgdEncode(const float* x, size_t n, float norm, int32_t levels, uint32_t seedA, uint32_t seedB, Code* codes) {
  const float scale = norm > 0 ? static_cast<float>(levels) / norm : 0.0f;
  // In chunks through an int32 buffer: the narrowing store kept the main loop scalar.
  constexpr size_t kChunk = 1024;
  int32_t wide[kChunk];
  for (size_t start = 0; start < n; start += kChunk) {
    const size_t len = n - start < kChunk ? n - start : kChunk;
    for (size_t i = 0; i < len; ++i) {
      wide[i] = rules::qsgdCode<int32_t>(x[start + i], scale, rules::uniformAt(seedA, seedB, static_cast<uint32_t>(start + i)), levels);
    }
    for (size_t i = 0; i < len; ++i) codes[start + i] = static_cast<Code>(wide[i]);
  }
}

template <class Code>
inline void qsgdDecode(const Code* codes, size_t n, float norm, int32_t levels, float* out, bool accumulate) {
  const float unit = levels > 0 ? norm / static_cast<float>(levels) : 0.0f;
  for (size_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(codes[i]) * unit;
    out[i] = accumulate ? out[i] + v : v;
  }
}

inline size_t selectAbove(const float* x, size_t n, float threshold, uint32_t* indices, size_t cap) {
  size_t count = 0;
  size_t i = 0;
#if defined(BRAID_USE_AVX512)
  const __m512 t = _mm512_set1_ps(threshold);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; i + 16 <= n && count + 16 <= cap; i += 16) {
    const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
    const __mmask16 m = _mm512_cmp_ps_mask(a, t, _CMP_GT_OQ);
    _mm512_mask_compressstoreu_epi32(indices + count, m, idx);
    count += static_cast<size_t>(__builtin_popcount(m));
    idx = _mm512_add_epi32(idx, step);
  }
#endif
  for (; i < n; ++i) {
    const bool keep = std::fabs(x[i]) > threshold;
    if (count < cap) indices[count] = static_cast<uint32_t>(i);  // branch-free store, kept when counted
    count += keep ? 1 : 0;
  }
  return count;
}

inline void subtract(const float* a, const float* b, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
}

inline void add(const float* a, const float* b, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

inline float dot(const float* a, const float* b, size_t n) {
  float acc[16] = {0};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[i + l] * b[i + l];
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  float s = 0;
  for (int l = 0; l < 16; ++l) s += acc[l];
  return s;
}

inline void axpy(float alpha, const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// The checksum's lanes over `rows` 64-byte rows: one vector step a row where the ISA has 32-bit
// multiplies in vectors (GCC keeps the plain loop's 16 lanes in scalar registers, and spills).
inline void checksumLanes(const uint8_t* p, size_t rows, uint32_t* h) {
  using namespace rules;
  static_assert(kChecksumLanes == 16, "two 256-bit vectors a row");
#if defined(BRAID_USE_F16C)  // AVX2 and AVX-512 alike: two chains a row run faster than one 512-bit chain
  __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h));
  __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + 8));
  const __m256i prime = _mm256_set1_epi32(0x01000193);
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* row = p + r * kChecksumRowBytes;
    lo = _mm256_mullo_epi32(_mm256_xor_si256(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row))), prime);
    hi = _mm256_mullo_epi32(_mm256_xor_si256(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32))), prime);
    lo = _mm256_xor_si256(lo, _mm256_srli_epi32(lo, 15));
    hi = _mm256_xor_si256(hi, _mm256_srli_epi32(hi, 15));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(h), lo);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + 8), hi);
#else
  for (size_t r = 0; r < rows; ++r) {
    uint32_t row[kChecksumLanes];
    std::memcpy(row, p + r * kChecksumRowBytes, kChecksumRowBytes);
    for (unsigned l = 0; l < kChecksumLanes; ++l) h[l] = checksumLaneStep(h[l], row[l]);
  }
#endif
}

// compress_scalar.h's chunked checksum.
inline uint32_t checksum(const uint8_t* bytes, size_t n) {
  using namespace rules;
  uint32_t sum = 0;
  for (size_t chunk = 0; chunk * kChecksumChunkBytes < n; ++chunk) {
    const uint8_t* p = bytes + chunk * kChecksumChunkBytes;
    const size_t len = n - chunk * kChecksumChunkBytes < kChecksumChunkBytes ? n - chunk * kChecksumChunkBytes : kChecksumChunkBytes;
    const size_t rows = len / kChecksumRowBytes;
    uint32_t h[kChecksumLanes];
    for (unsigned l = 0; l < kChecksumLanes; ++l) h[l] = checksumLaneStart(l);
    checksumLanes(p, rows, h);
    uint32_t digest = 0;
    for (unsigned l = 0; l < kChecksumLanes; ++l) digest = checksumFold(digest, h[l]);
    for (size_t i = rows * kChecksumRowBytes; i < len; ++i) digest = checksumFold(digest, p[i]);
    sum += checksumTerm(digest, chunk);
  }
  return checksumFinish(sum, n);
}

inline CompressKernels makeCompressKernels(const char* isa) {
  CompressKernels k{};
  k.isa = isa;
  k.toHalf = toHalf;
  k.fromHalf = fromHalf;
  k.toBfloat16 = toBfloat16;
  k.fromBfloat16 = fromBfloat16;
  k.sumSquares = sumSquares;
  k.sumAbs = sumAbs;
  k.int8Encode = int8Encode;
  k.int8Decode = int8Decode;
  k.signEncode = signEncode;
  k.signDecode = signDecode;
  k.qsgdEncode8 = qsgdEncode<int8_t>;
  k.qsgdEncode16 = qsgdEncode<int16_t>;
  k.qsgdDecode8 = qsgdDecode<int8_t>;
  k.qsgdDecode16 = qsgdDecode<int16_t>;
  k.selectAbove = selectAbove;
  k.subtract = subtract;
  k.add = add;
  k.dot = dot;
  k.axpy = axpy;
  k.checksum = checksum;
  return k;
}

}  // namespace BRAID_ISA_NS
}  // namespace braid
