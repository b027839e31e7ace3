// The AES-NI masking kernel (compiled with -maes -msse4.1 on x86; a stub elsewhere).
#include "kernels/secure_mask.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__) && defined(BRAID_HAVE_X86_VARIANTS)
#include <immintrin.h>
#include <wmmintrin.h>

namespace braid {

namespace {

// AES-256 key expansion with AESKEYGENASSIST (FIPS-197's schedule, two 128-bit halves a round):
// each new word is the previous round's word xor all the words before it in the half.
__m128i xorPrefixes(__m128i half) {
  __m128i shifted = _mm_slli_si128(half, 4);
  half = _mm_xor_si128(half, shifted);
  shifted = _mm_slli_si128(shifted, 4);
  half = _mm_xor_si128(half, shifted);
  shifted = _mm_slli_si128(shifted, 4);
  return _mm_xor_si128(half, shifted);
}

__m128i expandEven(__m128i previous, __m128i assist) { return _mm_xor_si128(xorPrefixes(previous), _mm_shuffle_epi32(assist, 0xff)); }

__m128i expandOdd(__m128i even, __m128i previous) {
  return _mm_xor_si128(xorPrefixes(previous), _mm_shuffle_epi32(_mm_aeskeygenassist_si128(even, 0x00), 0xaa));
}

void expandKey(const uint8_t* key, __m128i rk[15]) {
  rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key));
  rk[1] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key + 16));
#define BRAID_AES_ROUND(i, rcon)                                              \
  rk[i] = expandEven(rk[i - 2], _mm_aeskeygenassist_si128(rk[i - 1], rcon)); \
  if (i + 1 < 15) rk[i + 1] = expandOdd(rk[i], rk[i - 1]);
  BRAID_AES_ROUND(2, 0x01)
  BRAID_AES_ROUND(4, 0x02)
  BRAID_AES_ROUND(6, 0x04)
  BRAID_AES_ROUND(8, 0x08)
  BRAID_AES_ROUND(10, 0x10)
  BRAID_AES_ROUND(12, 0x20)
  rk[14] = expandEven(rk[12], _mm_aeskeygenassist_si128(rk[13], 0x40));
#undef BRAID_AES_ROUND
}

// Eight counter blocks at once: the AES units are pipelined, one block at a time stalls them.
constexpr size_t kLanes = 8;

inline void encrypt(__m128i (&x)[kLanes], const __m128i rk[15]) {
  for (size_t l = 0; l < kLanes; l++) x[l] = _mm_xor_si128(x[l], rk[0]);
  for (int r = 1; r < 14; r++)
    for (size_t l = 0; l < kLanes; l++) x[l] = _mm_aesenc_si128(x[l], rk[r]);
  for (size_t l = 0; l < kLanes; l++) x[l] = _mm_aesenclast_si128(x[l], rk[14]);
}

inline __m128i counterBlock(uint64_t callBigEndian, uint64_t block) {
  return _mm_set_epi64x(static_cast<long long>(__builtin_bswap64(block)), static_cast<long long>(callBigEndian));
}

}  // namespace

bool secureMaskAvailable() { return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse4.1"); }

uint32_t secureMask(const float* values, int32_t* out, size_t n, double scale, double clip, int32_t limit, const uint8_t* keys,
                    const int8_t* signs, size_t peers, uint64_t call) {
  uint32_t beyond = 0;
  const double high = static_cast<double>(limit);
  for (size_t i = 0; i < n; i++) {
    double v = values[i];
    if (clip > 0) v = v > clip ? clip : v < -clip ? -clip : v;
    const double q = std::floor(v * scale + 0.5);
    if (q > high || q < -high || q != q) {
      beyond++;
      out[i] = q > 0 ? limit : -limit;
    } else {
      out[i] = static_cast<int32_t>(q);
    }
  }
  out[n] = static_cast<int32_t>(beyond);
  const size_t words = n + 1;
  const size_t blocks = (words + 3) / 4;
  const uint64_t callBigEndian = __builtin_bswap64(call);
  uint32_t* target = reinterpret_cast<uint32_t*>(out);
  for (size_t p = 0; p < peers; p++) {
    __m128i rk[15];
    expandKey(keys + 32 * p, rk);
    const bool add = signs[p] > 0;
    for (size_t b = 0; b < blocks; b += kLanes) {
      __m128i x[kLanes];
      for (size_t l = 0; l < kLanes; l++) x[l] = counterBlock(callBigEndian, b + l);
      encrypt(x, rk);
      alignas(16) uint32_t stream[kLanes * 4];
      for (size_t l = 0; l < kLanes; l++) _mm_store_si128(reinterpret_cast<__m128i*>(stream + 4 * l), x[l]);
      const size_t first = b * 4;
      const size_t count = std::min(kLanes * 4, words - first);
      if (add)
        for (size_t k = 0; k < count; k++) target[first + k] += stream[k];
      else
        for (size_t k = 0; k < count; k++) target[first + k] -= stream[k];
    }
  }
  return beyond;
}

}  // namespace braid

#else

namespace braid {
bool secureMaskAvailable() { return false; }
uint32_t secureMask(const float*, int32_t*, size_t, double, double, int32_t, const uint8_t*, const int8_t*, size_t, uint64_t) { return 0; }
}  // namespace braid

#endif
