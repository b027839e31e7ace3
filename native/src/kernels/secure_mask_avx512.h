// secure_mask.h's kernels with VAES and AVX-512 (secure_mask.cc calls them where the CPU has both).
#pragma once

#include <cstddef>
#include <cstdint>

namespace braid {

bool secureMaskAvx512Available();

// Words [from, to) of secureMask's output (secure_mask.h's secureMaskRange).
uint32_t secureMaskRangeAvx512(const float* values, int32_t* out, size_t n, size_t from, size_t to, double scale, double clip,
                               int32_t limit, const uint8_t* keys, const int8_t* signs, size_t peers, uint64_t call,
                               uint32_t beyondBefore);

void secureUnmaskAvx512(const int32_t* sum, float* values, size_t n, double divisor);

}  // namespace braid
