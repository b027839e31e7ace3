// The CUDA compression kernels, behind host-pointer entry points that copy to the first GPU,
// run, and copy back (as cudaSumFloat32 does): the GPU test compares each with its CPU twin bit
// for bit. Each returns false when CUDA is not compiled in or no GPU is usable (cuda_stub.cc).
#pragma once
#include <cstddef>
#include <cstdint>

namespace braid {
bool cudaEncodeHalf(const float* in, uint16_t* out, size_t n, bool bfloat16);
bool cudaDecodeHalf(const uint16_t* in, float* out, size_t n, bool bfloat16);
bool cudaEncodeInt8(const float* x, size_t n, size_t block, float* scales, int8_t* codes);
bool cudaDecodeInt8(const int8_t* codes, const float* scales, size_t n, size_t block, float* out);
bool cudaEncodeSign(const float* x, size_t n, uint8_t* bits);
bool cudaDecodeSign(const uint8_t* bits, size_t n, float scale, float* out);
bool cudaEncodeQsgd(const float* x, size_t n, float norm, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes);
bool cudaDecodeQsgd(const int16_t* codes, size_t n, float norm, int32_t levels, float* out);
// Exactly the CPU's selection (compress::topk): k largest |x|, ties to the lower index, ascending.
bool cudaTopk(const float* x, size_t n, size_t k, uint32_t* indices, float* values);
// random-k: the indices come from compress::randomk (host); the GPU gathers the values.
bool cudaGather(const float* x, size_t n, const uint32_t* indices, size_t k, float* values);
bool cudaErrorFeedback(const float* corrected, const float* sent, float* residual, size_t n);
// PowerSGD's products in the CPU's summation order (16 partial sums per dot product).
bool cudaPowerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt);
bool cudaPowerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt);
}  // namespace braid
