// Secure aggregation's masking in one pass (@braid/strategies' SecureAggregator): values to fixed
// point, then for every peer the AES-128-CTR keystream of the pair's key added (the lower rank of
// the pair) or subtracted (the higher), mod 2^32. The keystream is exactly what OpenSSL's
// aes-128-ctr gives for the counter block (call count, big-endian, in the first 8 bytes; the
// block index, big-endian, in the last 8), so a rank using this and one using node:crypto agree.
#pragma once

#include <cstddef>
#include <cstdint>

namespace braid {

// Whether this machine can run the kernels (x86 with AES-NI and AVX2); otherwise the caller masks in JS.
bool secureMaskAvailable();

// out[0..n) = floor(values x scale + 0.5) (clipped to [-clip, clip] first when clip > 0), each
// beyond [-limit, limit] or NaN counted and stored as +-limit; out[n] = the count; then each peer's
// keystream word k added to out[k] (sign +1) or subtracted (sign -1). Returns the count.
uint32_t secureMask(const float* values, int32_t* out, size_t n, double scale, double clip, int32_t limit, const uint8_t* keys,
                    const int8_t* signs, size_t peers, uint64_t call);

// Words [from, to) of what secureMask writes (0 <= from <= to <= n + 1), into out[0 .. to - from),
// so that the masking can go chunk by chunk inside an all-reduce (secure_mask_transform.h);
// chunks in any split give the same words as one call. `beyondBefore`: values beyond the range in words [0, from), counted by
// earlier calls, so that the count word (written when the range reaches word n) holds them all.
// Returns how many of the range's values were beyond.
uint32_t secureMaskRange(const float* values, int32_t* out, size_t n, size_t from, size_t to, double scale, double clip, int32_t limit,
                         const uint8_t* keys, const int8_t* signs, size_t peers, uint64_t call, uint32_t beyondBefore);

// values[i] = float(sum[i] / divisor), the division in double (as the JavaScript path does it).
void secureUnmask(const int32_t* sum, float* values, size_t n, double divisor);

}  // namespace braid
