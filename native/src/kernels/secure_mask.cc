// The AES-NI masking kernel (compiled with -maes -msse4.1 on x86; a stub elsewhere).
#include "kernels/secure_mask.h"

#include "kernels/secure_mask_avx512.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(BRAID_HAVE_X86_VARIANTS)
#include <immintrin.h>
#include <wmmintrin.h>

#include "kernels/aes_schedule.h"

namespace braid {

namespace {

using aes::expandKey128;

// Eight counter blocks at once: the AES units are pipelined, one block at a time stalls them.
constexpr size_t kLanes = 8;

inline void encrypt(__m128i (&x)[kLanes], const __m128i* rk) {
  for (size_t l = 0; l < kLanes; l++) x[l] = _mm_xor_si128(x[l], rk[0]);
  for (int r = 1; r < aes::kRounds; r++)
    for (size_t l = 0; l < kLanes; l++) x[l] = _mm_aesenc_si128(x[l], rk[r]);
  for (size_t l = 0; l < kLanes; l++) x[l] = _mm_aesenclast_si128(x[l], rk[aes::kRounds]);
}

inline __m128i counterBlock(uint64_t callBigEndian, uint64_t block) {
  return _mm_set_epi64x(static_cast<long long>(__builtin_bswap64(block)), static_cast<long long>(callBigEndian));
}

}  // namespace

bool secureMaskAvailable() { return __builtin_cpu_supports("aes") && __builtin_cpu_supports("avx2"); }

namespace {

// The VAES kernel where the CPU has it, unless BRAID_ISA names another (as for the reductions:
// tests run both kernels on one machine).
bool useWide() {
  const char* forced = std::getenv("BRAID_ISA");
  return secureMaskAvx512Available() && (forced == nullptr || std::strcmp(forced, "avx512") == 0);
}

}  // namespace

namespace {

// Values [from, to) to fixed point, four at a time: floor(double(v) x scale + 0.5), the same
// double operations as the JavaScript path, so both give the same integers. Returns how many
// were beyond +-limit or NaN (stored as +-limit, NaN as -limit).
uint32_t toFixedPoint(const float* values, int32_t* out, size_t from, size_t to, double scale, double clip, int32_t limit) {
  uint32_t beyond = 0;
  const __m256d vScale = _mm256_set1_pd(scale), half = _mm256_set1_pd(0.5), zero = _mm256_setzero_pd();
  const __m256d high = _mm256_set1_pd(limit), low = _mm256_set1_pd(-static_cast<double>(limit));
  const __m256d vClip = _mm256_set1_pd(clip), vNegClip = _mm256_set1_pd(-clip);
  size_t i = from;
  for (; i + 4 <= to; i += 4) {
    __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(values + i));
    if (clip > 0) {
      v = _mm256_blendv_pd(v, vClip, _mm256_cmp_pd(v, vClip, _CMP_GT_OQ));
      v = _mm256_blendv_pd(v, vNegClip, _mm256_cmp_pd(v, vNegClip, _CMP_LT_OQ));
    }
    const __m256d q = _mm256_floor_pd(_mm256_add_pd(_mm256_mul_pd(v, vScale), half));
    const __m256d out_of_range = _mm256_or_pd(_mm256_or_pd(_mm256_cmp_pd(q, high, _CMP_GT_OQ), _mm256_cmp_pd(q, low, _CMP_LT_OQ)), _mm256_cmp_pd(q, q, _CMP_UNORD_Q));
    const __m256d saturated = _mm256_blendv_pd(low, high, _mm256_cmp_pd(q, zero, _CMP_GT_OQ));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvttpd_epi32(_mm256_blendv_pd(q, saturated, out_of_range)));
    beyond += static_cast<uint32_t>(__builtin_popcount(_mm256_movemask_pd(out_of_range)));
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

}  // namespace

uint32_t secureMaskRange(const float* values, int32_t* out, size_t n, size_t from, size_t to, double scale, double clip, int32_t limit,
                         const uint8_t* keys, const int8_t* signs, size_t peers, uint64_t call, uint32_t beyondBefore) {
  static const bool wide = useWide();
  if (wide) return secureMaskRangeAvx512(values, out, n, from, to, scale, clip, limit, keys, signs, peers, call, beyondBefore);
  struct Schedule {
    __m128i rk[aes::kRounds + 1];
  };
  std::vector<Schedule> schedules(peers);  // C++17 allocates it 16-byte aligned
  for (size_t p = 0; p < peers; p++) expandKey128(keys + 16 * p, schedules[p].rk);
  const uint64_t callBigEndian = __builtin_bswap64(call);
  uint32_t* target = reinterpret_cast<uint32_t*>(out);  // word `from` is target[0]
  uint32_t beyond = 0;
  // One pass over memory: a chunk of 32 words to fixed point, then every peer's keystream on it
  // while it is in the cache (a chunk not starting on a cipher block uses the rest of its block).
  constexpr size_t kChunk = kLanes * 4;
  for (size_t first = from; first < to;) {
    const size_t skew = first % 4;
    const size_t count = std::min(kChunk - skew, to - first);
    const size_t end = std::min(first + count, n);
    if (end > first) beyond += toFixedPoint(values + first, out + (first - from), 0, end - first, scale, clip, limit);
    if (first + count == n + 1) out[n - from] = static_cast<int32_t>(beyondBefore + beyond);
    for (size_t p = 0; p < peers; p++) {
      __m128i x[kLanes];
      for (size_t l = 0; l < kLanes; l++) x[l] = counterBlock(callBigEndian, first / 4 + l);
      encrypt(x, schedules[p].rk);
      alignas(16) uint32_t stream[kChunk];
      for (size_t l = 0; l < kLanes; l++) _mm_store_si128(reinterpret_cast<__m128i*>(stream + 4 * l), x[l]);
      const uint32_t* key = stream + skew;
      if (signs[p] > 0)
        for (size_t k = 0; k < count; k++) target[first - from + k] += key[k];
      else
        for (size_t k = 0; k < count; k++) target[first - from + k] -= key[k];
    }
    first += count;
  }
  return beyond;
}

uint32_t secureMask(const float* values, int32_t* out, size_t n, double scale, double clip, int32_t limit, const uint8_t* keys,
                    const int8_t* signs, size_t peers, uint64_t call) {
  return secureMaskRange(values, out, n, 0, n + 1, scale, clip, limit, keys, signs, peers, call, 0);
}

void secureUnmask(const int32_t* sum, float* values, size_t n, double divisor) {
  static const bool wide = useWide();
  if (wide) return secureUnmaskAvx512(sum, values, n, divisor);
  size_t i = 0;
  int exponent = 0;
  // A power of two: multiplying by its inverse is exact, the quotient's bits for far less.
  const bool exactInverse = std::frexp(divisor, &exponent) == 0.5;
  const __m256d d = _mm256_set1_pd(exactInverse ? 1.0 / divisor : divisor);
  for (; i + 4 <= n; i += 4) {
    const __m256d q = _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sum + i)));
    _mm_storeu_ps(values + i, _mm256_cvtpd_ps(exactInverse ? _mm256_mul_pd(q, d) : _mm256_div_pd(q, d)));
  }
  for (; i < n; i++) values[i] = static_cast<float>(sum[i] / divisor);
}

}  // namespace braid

#else

namespace braid {
bool secureMaskAvailable() { return false; }
uint32_t secureMaskRange(const float*, int32_t*, size_t, size_t, size_t, double, double, int32_t, const uint8_t*, const int8_t*, size_t,
                         uint64_t, uint32_t) {
  return 0;
}
uint32_t secureMask(const float*, int32_t*, size_t, double, double, int32_t, const uint8_t*, const int8_t*, size_t, uint64_t) { return 0; }
void secureUnmask(const int32_t*, float*, size_t, double) {}
}  // namespace braid

#endif
