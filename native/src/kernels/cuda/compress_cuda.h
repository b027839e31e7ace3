// The CUDA compression kernels (device pointers; the CPU kernels are their reference). Present
// when the build found nvcc; see cuda/compress.cu.
#pragma once
#include <cstddef>
#include <cstdint>

namespace braid {
bool cudaCompressToHalf(const float* in, uint16_t* out, size_t n, bool bfloat16);
bool cudaCompressInt8(const float* x, size_t n, size_t block, const float* scales, int8_t* codes);
bool cudaCompressSign(const float* x, size_t n, uint8_t* bits);
bool cudaCompressQsgd(const float* x, size_t n, float norm, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes);
}  // namespace braid
