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
// Synchronizes `stream` once, at the end (the radix select's passes stay on the device); k <= n.
// `workspace`: device memory of topkWorkspaceBytes(n) for the select's state and the scan, which a
// caller keeps across calls (the device steps' scratch cache); null: it allocates its own and
// frees it on return, a cudaFree per call, which waits for the whole GPU.
bool topk(const float* x, size_t n, size_t k, uint32_t* indices, float* values, void* stream, void* workspace = nullptr);
size_t topkWorkspaceBytes(size_t n);
// `indices` on the device, each < n (the caller checks).
bool gather(const float* x, const uint32_t* indices, size_t k, float* values, void* stream);
bool errorFeedback(const float* corrected, const float* sent, float* residual, size_t n, void* stream);
bool powerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt, void* stream);
bool powerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt, void* stream);

// For allReduceCompressed on DeviceBuffers (gpu/device_compress.cc). Decoders add into `out`
// with `accumulate` (out + value, as the CPU's do); QSGD takes 1- or 2-byte codes (`codeBytes`).
bool decodeHalfInto(const uint16_t* in, float* out, size_t n, bool bfloat16, bool accumulate, void* stream);
bool decodeInt8Into(const int8_t* codes, const float* scales, size_t n, size_t block, float* out, bool accumulate, void* stream);
bool decodeSignInto(const uint8_t* bits, size_t n, float scale, float* out, bool accumulate, void* stream);
bool encodeQsgdCodes(const float* x, size_t n, float scale, int32_t levels, uint32_t seedA, uint32_t seedB, void* codes, int codeBytes, void* stream);
bool decodeQsgdInto(const void* codes, int codeBytes, size_t n, float unit, float* out, bool accumulate, void* stream);
// out[indices[i]] (+)= values[i]; sets *bad (device memory, zeroed by the caller) when an index
// is >= n or the indices do not ascend (the CPU's scatter refuses those).
bool scatterInto(const uint32_t* indices, const float* values, size_t k, float* out, size_t n, bool accumulate, uint32_t* bad, void* stream);
bool add(const float* a, const float* b, float* out, size_t n, void* stream);
// out[i] = float(double(out[i]) * factor): JavaScript's rounding of x[i] * factor into a Float32Array.
bool scale(float* out, size_t n, double factor, void* stream);
// out (+)= P Q^T, the CPU's powerReconstruct order (r terms added in turn to each element).
bool powerReconstruct(const float* pt, const float* qt, size_t r, size_t rows, size_t cols, float* out, bool accumulate, void* stream);
// Sums of x^2 and |x| in double, in a fixed tree (the same bits every call on every GPU; not the
// CPU's eight-lane order, so a norm may differ from the CPU's in its last bits). Synchronizes.
bool sumSquares(const float* x, size_t n, double* result, void* stream);
bool sumAbs(const float* x, size_t n, double* result, void* stream);
// The payload checksum's body part (compress_impl.h's checksum) of `count` byte runs of `n` bytes
// each, `stride` apart (4-byte aligned), into out[count] on the host. Synchronizes.
bool checksums(const uint8_t* base, size_t stride, size_t count, size_t n, uint32_t* out, void* stream);
bool zero(void* p, size_t bytes, void* stream);
bool copy(void* to, const void* from, size_t bytes, void* stream);
bool synchronize(void* stream);
}  // namespace gpu
}  // namespace braid
