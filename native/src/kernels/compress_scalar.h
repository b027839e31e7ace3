// The per-element rules of the compression kernels, shared by the CPU variants
// (compress_impl.h) and the CUDA kernels (cuda/compress.cu) so both give the same bits.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define BRAID_HD __host__ __device__ __forceinline__
#else
#define BRAID_HD inline
#endif

namespace braid {
namespace rules {

// A counter-based generator: element i's uniform draw depends only on (seedA, seedB, i), so any
// thread or vector lane computes it on its own and every rank with the same seeds draws the same.
BRAID_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
// Uniform in [0, 1) with 24 random bits.
BRAID_HD float uniformAt(uint32_t seedA, uint32_t seedB, uint32_t i) {
  // Through int32 (the value is below 2^24): unsigned-to-float conversion does not vectorize on AVX2.
  return static_cast<float>(static_cast<int32_t>(mix32(mix32(i ^ seedA) + seedB) >> 8)) * (1.0f / 16777216.0f);
}

// int8 with a per-block scale: q = round-half-even(x / scale), clamped to [-127, 127];
// scale = maxAbs / 127 (a zero block has scale 0 and codes 0).
BRAID_HD int8_t int8Code(float x, float inverseScale) {
  float q = x * inverseScale;
  q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
#if defined(__CUDA_ARCH__)
  return static_cast<int8_t>(__float2int_rn(q));
#else
  return static_cast<int8_t>(__builtin_rintf(q));
#endif
}

// QSGD (Alistarh et al. 2017) with s levels: |x| / norm * s = l + p (0 <= p < 1) is sent as l + 1
// with probability p, else l: unbiased. The code keeps the sign: +-level.
template <class Code>
BRAID_HD Code qsgdCode(float x, float scale /* levels / norm */, float u, int32_t levels) {
  // Branch-free (selects and masks only), so the CPU loop vectorizes.
  const float level = fabsf(x) * scale;
  int32_t l = static_cast<int32_t>(level);  // floor: level >= 0
  const float p = level - static_cast<float>(l);
  l += static_cast<int32_t>(u < p);
  l = l < levels ? l : levels;
  const int32_t negative = -static_cast<int32_t>(x < 0);  // all ones when negative
  return static_cast<Code>((l ^ negative) - negative);
}

// The payload checksum. Chunks of kChecksumChunkBytes are hashed on their own: kChecksumLanes
// multiply-xor lanes, lane l taking word l of every 64-byte row, folded into the chunk's digest,
// then the bytes past the last whole row. The chunks' mixed digests are summed (mod 2^32), so a GPU
// hashes every chunk of every payload at once and adds them in any order; a CPU runs the lanes as
// one vector. Every step is a bijection of the value it updates, so any one flipped bit changes
// the result.
constexpr size_t kChecksumChunkBytes = 16384;
constexpr unsigned kChecksumLanes = 16;
constexpr size_t kChecksumRowBytes = 4 * kChecksumLanes;
BRAID_HD uint32_t checksumLaneStart(unsigned lane) { return 0x811c9dc5u + lane * 0x9e3779b9u; }
BRAID_HD uint32_t checksumLaneStep(uint32_t h, uint32_t word) {
  h = (h ^ word) * 0x01000193u;
  return h ^ (h >> 15);
}
// Lanes fold in order from a zero digest; tail bytes follow, one at a time.
BRAID_HD uint32_t checksumFold(uint32_t digest, uint32_t value) { return mix32(digest ^ value); }
// What chunk `chunk` adds to the sum: its digest, mixed with its position (so chunks cannot swap).
BRAID_HD uint32_t checksumTerm(uint32_t digest, size_t chunk) { return mix32(digest + static_cast<uint32_t>(chunk) * 0x9e3779b9u); }
BRAID_HD uint32_t checksumFinish(uint32_t sum, size_t n) { return mix32(sum ^ static_cast<uint32_t>(n)); }

}  // namespace rules
}  // namespace braid
