// The masking kernel with VAES and AVX-512 (compiled with -mvaes -mavx512f ...; used where the
// CPU has both): four AES blocks per instruction, eight values per fixed-point step (sixteen in
// float32 where that is exact), the keystream added straight from the cipher's registers. It
// gives exactly what secure_mask.cc's AES-NI kernel gives (and OpenSSL's aes-128-ctr): the same
// counter blocks, the same fixed-point integers (no fused multiply-add: -ffp-contract=off).
#include "kernels/secure_mask_avx512.h"

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__x86_64__) && defined(BRAID_HAVE_X86_VARIANTS)
#include <immintrin.h>

#include "kernels/aes_schedule.h"

namespace braid {

namespace {

// AES-128's key schedule (aes_schedule.h), each round key broadcast to the four 128-bit lanes
// of a 512-bit register.
void expandKey(const uint8_t* key, __m512i* rk) {
  __m128i k[aes::kRounds + 1];
  aes::expandKey128(key, k);
  for (int r = 0; r <= aes::kRounds; r++) rk[r] = _mm512_broadcast_i32x4(k[r]);
}

// Eight registers of four counter blocks: 32 blocks (128 words) a round through the cipher.
constexpr size_t kRegisters = 8;
constexpr size_t kWordsPerRegister = 16;
constexpr size_t kChunk = kRegisters * kWordsPerRegister;

inline void encrypt(__m512i (&x)[kRegisters], const __m512i* rk) {
  for (size_t l = 0; l < kRegisters; l++) x[l] = _mm512_xor_si512(x[l], rk[0]);
  for (int r = 1; r < aes::kRounds; r++)
    for (size_t l = 0; l < kRegisters; l++) x[l] = _mm512_aesenc_epi128(x[l], rk[r]);
  for (size_t l = 0; l < kRegisters; l++) x[l] = _mm512_aesenclast_epi128(x[l], rk[aes::kRounds]);
}

// Counter blocks b .. b + 4 x kRegisters - 1, four to a register: the call count (big-endian) in
// each block's first 8 bytes, the block index (big-endian) in its last 8. The index is kept
// little-endian so that one add steps it, and a byte shuffle turns it big-endian (a bswap and an
// insert per block cost as much as a fifth of the cipher).
inline void counterRegisters(__m512i (&x)[kRegisters], __m512i callPart, uint64_t b) {
  const __m512i laneOffsets = _mm512_set_epi64(3, 0, 2, 0, 1, 0, 0, 0);
  const __m512i step = _mm512_set_epi64(4, 0, 4, 0, 4, 0, 4, 0);
  const __m512i toBigEndian = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 15, 14, 13, 12, 11, 10, 9, 8));
  __m512i c = _mm512_or_si512(callPart, _mm512_add_epi64(laneOffsets, _mm512_maskz_set1_epi64(0xAA, static_cast<long long>(b))));
  for (size_t l = 0; l < kRegisters; l++) {
    x[l] = _mm512_shuffle_epi8(c, toBigEndian);
    c = _mm512_add_epi64(c, step);
  }
}

uint32_t toFixedPoint(const float* values, int32_t* out, size_t from, size_t to, double scale, double clip, int32_t limit) {
  uint32_t beyond = 0;
  const __m512d vScale = _mm512_set1_pd(scale), half = _mm512_set1_pd(0.5), zero = _mm512_setzero_pd();
  const __m512d high = _mm512_set1_pd(limit), low = _mm512_set1_pd(-static_cast<double>(limit));
  const __m512d vClip = _mm512_set1_pd(clip), vNegClip = _mm512_set1_pd(-clip);
  size_t i = from;
  for (; i + 8 <= to; i += 8) {
    __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(values + i));
    if (clip > 0) {
      v = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(v, vClip, _CMP_GT_OQ), v, vClip);
      v = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(v, vNegClip, _CMP_LT_OQ), v, vNegClip);
    }
    const __m512d q = _mm512_roundscale_pd(_mm512_add_pd(_mm512_mul_pd(v, vScale), half), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __mmask8 outOfRange = _mm512_cmp_pd_mask(q, high, _CMP_GT_OQ) | _mm512_cmp_pd_mask(q, low, _CMP_LT_OQ) | _mm512_cmp_pd_mask(q, q, _CMP_UNORD_Q);
    const __m512d saturated = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(q, zero, _CMP_GT_OQ), low, high);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvttpd_epi32(_mm512_mask_blend_pd(outOfRange, q, saturated)));
    beyond += static_cast<uint32_t>(__builtin_popcount(outOfRange));
  }
  for (; i < to; i++) {
    double v = values[i];
    if (clip > 0) v = v > clip ? clip : v < -clip ? -clip : v;
    const double q = std::floor(v * scale + 0.5);
    if (q > limit || q < -static_cast<double>(limit) || q != q) {
      beyond++;
      out[i] = q > 0 ? limit : -limit;
    } else {
      out[i] = static_cast<int32_t>(q);
    }
  }
  return beyond;
}

// The same integers, sixteen at a time in float32, where that is exact: a power-of-two scale >= 1
// and no clipping. Then x = v x scale is exact in float32 (or infinite, or NaN), and floor(x + 0.5)
// = floor(x) + (x - floor(x) >= 0.5), every step exact in float32 (x + 0.5 itself would round).
// The range check compares with the largest float32 <= limit, which decides as limit would.
uint32_t toFixedPointFloat(const float* values, int32_t* out, size_t from, size_t to, float scale, int32_t limit, float limitBelow) {
  uint32_t beyond = 0;
  const __m512 vScale = _mm512_set1_ps(scale), half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  const __m512 high = _mm512_set1_ps(limitBelow);
  const __m512i highInt = _mm512_set1_epi32(limit), lowInt = _mm512_set1_epi32(-limit);
  size_t i = from;
  for (; i + 16 <= to; i += 16) {
    const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(values + i), vScale);
    const __m512 f = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(x, f), half, _CMP_GE_OQ);
    const __m512 q = _mm512_mask_add_ps(f, up, f, one);
    // One compare for both ends and NaN (the range is symmetric): |q| > limit, or unordered.
    const __mmask16 outOfRange = _mm512_cmp_ps_mask(_mm512_abs_ps(q), high, _CMP_NLE_UQ);
    if (__builtin_expect(outOfRange == 0, 1)) {
      // In range, |q| <= limit < 2^31: the conversion is exact.
      _mm512_storeu_si512(out + i, _mm512_cvttps_epi32(q));
      continue;
    }
    const __m512i saturated = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(q, zero, _CMP_GT_OQ), lowInt, highInt);
    const __m512i converted = _mm512_cvttps_epi32(_mm512_mask_blend_ps(outOfRange, q, zero));
    _mm512_storeu_si512(out + i, _mm512_mask_blend_epi32(outOfRange, converted, saturated));
    beyond += static_cast<uint32_t>(__builtin_popcount(outOfRange));
  }
  return beyond + toFixedPoint(values, out, i, to, scale, 0, limit);
}

}  // namespace

bool secureMaskAvx512Available() {
  return __builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
}

uint32_t secureMaskRangeAvx512(const float* values, int32_t* out, size_t n, size_t from, size_t to, double scale, double clip,
                               int32_t limit, const uint8_t* keys, const int8_t* signs, size_t peers, uint64_t call,
                               uint32_t beyondBefore) {
  struct Schedule {
    __m512i rk[aes::kRounds + 1];
  };
  std::vector<Schedule> schedules(peers);  // C++17 allocates it 64-byte aligned
  for (size_t p = 0; p < peers; p++) expandKey(keys + 16 * p, schedules[p].rk);
  const long long callBigEndian = static_cast<long long>(__builtin_bswap64(call));
  const __m512i callPart = _mm512_maskz_set1_epi64(0x55, callBigEndian);
  uint32_t beyond = 0;
  int exponent = 0;
  const bool inFloat = clip <= 0 && scale >= 1 && scale <= 0x1p60 && std::frexp(scale, &exponent) == 0.5;
  float limitBelow = static_cast<float>(limit);
  if (static_cast<double>(limitBelow) > limit) limitBelow = std::nextafter(limitBelow, 0.0f);
  // One pass over memory: 128 words to fixed point, then every peer's keystream on them while
  // they are in the cache. A chunk that does not start on a cipher block (a range's first) or
  // is short (its last) takes the keystream through a buffer.
  for (size_t first = from; first < to;) {
    const size_t skew = first % 4;  // words of the first block before `first`
    const size_t count = std::min(kChunk - skew, to - first);
    const size_t end = std::min(first + count, n);
    if (end > first) {
      beyond += inFloat ? toFixedPointFloat(values + first, out + (first - from), 0, end - first, static_cast<float>(scale), limit, limitBelow)
                        : toFixedPoint(values + first, out + (first - from), 0, end - first, scale, clip, limit);
    }
    // The count word, once the count is known: it is the last word of the last chunk.
    if (first + count == n + 1) out[n - from] = static_cast<int32_t>(beyondBefore + beyond);
    for (size_t p = 0; p < peers; p++) {
      __m512i x[kRegisters];
      counterRegisters(x, callPart, first / 4);
      encrypt(x, schedules[p].rk);
      if (count == kChunk) {
        for (size_t l = 0; l < kRegisters; l++) {
          int32_t* at = out + (first - from) + l * kWordsPerRegister;
          const __m512i word = _mm512_loadu_si512(at);
          _mm512_storeu_si512(at, signs[p] > 0 ? _mm512_add_epi32(word, x[l]) : _mm512_sub_epi32(word, x[l]));
        }
      } else {
        alignas(64) uint32_t stream[kChunk];
        for (size_t l = 0; l < kRegisters; l++) _mm512_store_si512(stream + l * kWordsPerRegister, x[l]);
        uint32_t* target = reinterpret_cast<uint32_t*>(out) + (first - from);
        const uint32_t* key = stream + skew;
        if (signs[p] > 0)
          for (size_t k = 0; k < count; k++) target[k] += key[k];
        else
          for (size_t k = 0; k < count; k++) target[k] -= key[k];
      }
    }
    first += count;
  }
  return beyond;
}

void secureUnmaskAvx512(const int32_t* sum, float* values, size_t n, double divisor) {
  size_t i = 0;
  int exponent = 0;
  if (std::frexp(divisor, &exponent) == 0.5 && exponent >= -94 && exponent <= 126) {
    // A power of two 2^k (the scale; the average over 2, 4, 8 ranks) with -95 <= k <= 125: float32
    // holds 2^-k, and a nonzero int32 times it stays a normal float32, so rounding the sum to
    // float32 and then scaling gives the same bits as scaling exactly and then rounding (rounding
    // commutes with powers of two), sixteen at a time.
    const __m512 inverse = _mm512_set1_ps(static_cast<float>(1.0 / divisor));
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(values + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(sum + i)), inverse));
  } else {
    const __m512d d = _mm512_set1_pd(divisor);
    for (; i + 8 <= n; i += 8) {
      const __m512d v = _mm512_div_pd(_mm512_cvtepi32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sum + i))), d);
      _mm256_storeu_ps(values + i, _mm512_cvtpd_ps(v));
    }
  }
  for (; i < n; i++) values[i] = static_cast<float>(sum[i] / divisor);
}

}  // namespace braid

#else

namespace braid {
bool secureMaskAvx512Available() { return false; }
uint32_t secureMaskAvx512(const float*, int32_t*, size_t, double, double, int32_t, const uint8_t*, const int8_t*, size_t, uint64_t) { return 0; }
void secureUnmaskAvx512(const int32_t*, float*, size_t, double) {}
}  // namespace braid

#endif
