// AES-256's key schedule with AES-NI, shared by the masking kernels (include it only from files
// compiled with -maes, inside their x86 section).
#pragma once

#include <cstdint>

#include <immintrin.h>
#include <wmmintrin.h>

namespace braid::aes {

// AES-256 key expansion with AESKEYGENASSIST (FIPS-197's schedule, two 128-bit halves a round):
// each new word is the previous round's word xor all the words before it in the half.
inline __m128i xorPrefixes(__m128i half) {
  __m128i shifted = _mm_slli_si128(half, 4);
  half = _mm_xor_si128(half, shifted);
  shifted = _mm_slli_si128(shifted, 4);
  half = _mm_xor_si128(half, shifted);
  shifted = _mm_slli_si128(shifted, 4);
  return _mm_xor_si128(half, shifted);
}

inline __m128i expandEven(__m128i previous, __m128i assist) { return _mm_xor_si128(xorPrefixes(previous), _mm_shuffle_epi32(assist, 0xff)); }

inline __m128i expandOdd(__m128i even, __m128i previous) {
  return _mm_xor_si128(xorPrefixes(previous), _mm_shuffle_epi32(_mm_aeskeygenassist_si128(even, 0x00), 0xaa));
}

inline void expandKey256(const uint8_t* key, __m128i* rk) {
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

}  // namespace braid::aes
