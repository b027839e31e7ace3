// secure_mask.h's kernels with VAES and AVX-512 (secure_mask.cc calls them where the CPU has both).
#pragma once

#include <cstddef>
#include <cstdint>

namespace braid {

bool secureMaskAvx512Available();

uint32_t secureMaskAvx512(const float* values, int32_t* out, size_t n, double scale, double clip, int32_t limit, const uint8_t* keys,
                          const int8_t* signs, size_t peers, uint64_t call);

void secureUnmaskAvx512(const int32_t* sum, float* values, size_t n, double divisor);

}  // namespace braid
