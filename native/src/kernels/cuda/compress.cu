// CUDA twins of the element-wise compression kernels (encoders; decoding is cheap and runs on
// the CPU). Each applies the same per-element rule as the CPU loops (kernels/compress_scalar.h;
// float16 through the hardware's round-to-nearest-even), so a GPU payload matches a CPU one bit
// for bit, NaN payloads aside (CUDA makes a canonical NaN). Not yet run on a GPU: this task's
// sessions had none; they are compiled (sm_80, sm_90) whenever nvcc is present.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/compress_scalar.h"
#include "kernels/cuda/compress_cuda.h"

namespace braid {
namespace {

__device__ __forceinline__ size_t globalIndex() { return static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t globalStride() { return static_cast<size_t>(blockDim.x) * gridDim.x; }

__global__ void toHalfKernel(const float* in, uint16_t* out, size_t n) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = __half_as_ushort(__float2half_rn(in[i]));
}

__global__ void toBfloat16Kernel(const float* in, uint16_t* out, size_t n) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    const uint32_t u = __float_as_uint(in[i]);
    const bool isNan = (u & 0x7fffffffu) > 0x7f800000u;
    out[i] = static_cast<uint16_t>(isNan ? ((u >> 16) | 0x40u) : ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16));
  }
}

__global__ void int8EncodeKernel(const float* x, size_t n, size_t block, const float* scales, int8_t* codes) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    const float scale = scales[i / block];
    codes[i] = rules::int8Code(x[i], scale > 0 ? __frcp_rn(scale) : 0.0f);
  }
}

__global__ void signEncodeKernel(const float* x, size_t n, uint8_t* bits) {
  const size_t bytes = (n + 7) / 8;
  for (size_t b = globalIndex(); b < bytes; b += globalStride()) {
    uint32_t v = 0;
    for (int j = 0; j < 8 && b * 8 + j < n; ++j) v |= (__float_as_uint(x[b * 8 + j]) >> 31) << j;
    bits[b] = static_cast<uint8_t>(v);
  }
}

__global__ void qsgdEncodeKernel(const float* x, size_t n, float scale, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    codes[i] = rules::qsgdCode<int16_t>(x[i], scale, rules::uniformAt(seedA, seedB, static_cast<uint32_t>(i)), levels);
  }
}

unsigned gridFor(size_t n) {
  const size_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65535 ? (blocks == 0 ? 1 : blocks) : 65535);
}

}  // namespace

// Device pointers in, device pointers out; the caller owns the stream (the default one here).
bool cudaCompressToHalf(const float* in, uint16_t* out, size_t n, bool bfloat16) {
  if (bfloat16) toBfloat16Kernel<<<gridFor(n), 256>>>(in, out, n);
  else toHalfKernel<<<gridFor(n), 256>>>(in, out, n);
  return cudaGetLastError() == cudaSuccess;
}

bool cudaCompressInt8(const float* x, size_t n, size_t block, const float* scales, int8_t* codes) {
  int8EncodeKernel<<<gridFor(n), 256>>>(x, n, block, scales, codes);
  return cudaGetLastError() == cudaSuccess;
}

bool cudaCompressSign(const float* x, size_t n, uint8_t* bits) {
  signEncodeKernel<<<gridFor((n + 7) / 8), 256>>>(x, n, bits);
  return cudaGetLastError() == cudaSuccess;
}

bool cudaCompressQsgd(const float* x, size_t n, float norm, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes) {
  const float scale = norm > 0 ? static_cast<float>(levels) / norm : 0.0f;
  qsgdEncodeKernel<<<gridFor(n), 256>>>(x, n, scale, levels, seedA, seedB, codes);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace braid
