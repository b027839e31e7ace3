// AES-128's key schedule with AES-NI, shared by the masking kernels (include it only from files
// compiled with -maes, inside their x86 section). AES-128: the pairs' secrets come from X25519,
// which gives about 128 bits of security, so a longer key would buy nothing but rounds.
#pragma once

#include <cstdint>

#include <immintrin.h>
#include <wmmintrin.h>

namespace braid::aes {

// FIPS-197's key expansion with AESKEYGENASSIST: each round key's words are the previous round
// key's words, each xored with all the words before it, and the assist's rotated, substituted
// last word with the round constant.
inline __m128i xorPrefixes(__m128i key) {
  __m128i shifted = _mm_slli_si128(key, 4);
  key = _mm_xor_si128(key, shifted);
  shifted = _mm_slli_si128(shifted, 4);
  key = _mm_xor_si128(key, shifted);
  shifted = _mm_slli_si128(shifted, 4);
  return _mm_xor_si128(key, shifted);
}

constexpr int kRounds = 10;

inline void expandKey128(const uint8_t* key, __m128i* rk) {
  rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key));
#define BRAID_AES_ROUND(i, rcon) rk[i] = _mm_xor_si128(xorPrefixes(rk[i - 1]), _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], rcon), 0xff));
  BRAID_AES_ROUND(1, 0x01)
  BRAID_AES_ROUND(2, 0x02)
  BRAID_AES_ROUND(3, 0x04)
  BRAID_AES_ROUND(4, 0x08)
  BRAID_AES_ROUND(5, 0x10)
  BRAID_AES_ROUND(6, 0x20)
  BRAID_AES_ROUND(7, 0x40)
  BRAID_AES_ROUND(8, 0x80)
  BRAID_AES_ROUND(9, 0x1b)
  BRAID_AES_ROUND(10, 0x36)
#undef BRAID_AES_ROUND
}

}  // namespace braid::aes
