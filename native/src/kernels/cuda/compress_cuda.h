// The CUDA compression kernels, on device memory (namespace gpu: the caller's pointers on the
// current GPU, launched on `stream`, a cudaStream_t, null for the default one; for DeviceBuffers)
// and behind host-pointer entry points that copy to the GPU, run the device ones and copy back
// (as cudaSumFloat32 does): the GPU test compares each with its CPU twin bit for bit, so it
// covers both. Each returns false when CUDA is not compiled in, no GPU is usable, or a launch
// fails (cuda_stub.cc).
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

namespace gpu {
// Asynchronous on `stream` unless said otherwise; the same arguments as the host entry points
// (QSGD's `scale` is levels / norm, its decode's `unit` norm / levels, as the host ones compute).
bool encodeHalf(const float* in, uint16_t* out, size_t n, bool bfloat16, void* stream);
bool decodeHalf(const uint16_t* in, float* out, size_t n, bool bfloat16, void* stream);
bool encodeInt8(const float* x, size_t n, size_t block, float* scales, int8_t* codes, void* stream);
bool decodeInt8(const int8_t* codes, const float* scales, size_t n, size_t block, float* out, void* stream);
bool encodeSign(const float* x, size_t n, uint8_t* bits, void* stream);
bool decodeSign(const uint8_t* bits, size_t n, float scale, float* out, void* stream);
bool encodeQsgd(const float* x, size_t n, float scale, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes, void* stream);
bool decodeQsgd(const int16_t* codes, size_t n, float unit, float* out, void* stream);
// Synchronizes `stream` (the bisection reads counts back); k <= n.
bool topk(const float* x, size_t n, size_t k, uint32_t* indices, float* values, void* stream);
// `indices` on the device, each < n (the caller checks).
bool gather(const float* x, const uint32_t* indices, size_t k, float* values, void* stream);
bool errorFeedback(const float* corrected, const float* sent, float* residual, size_t n, void* stream);
bool powerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt, void* stream);
bool powerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt, void* stream);
}  // namespace gpu
}  // namespace braid
