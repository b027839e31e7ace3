// CUDA twins of the compression kernels. Each follows its CPU reference operation by operation
// (compress_scalar.h's rules; half.h's conversions, compiled for the device too; IEEE operations with
// explicit rounding; dot products summed in the CPU's 16-lane order; the build passes
// -fmad=false so nothing is contracted into FMA), so the GPU test can ask for the same bits.
// Entry points take host pointers and copy through device buffers (see compress_cuda.h).
#include <cuda_runtime.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/scan.h>

#include <cstdint>
#include <vector>

#include "kernels/compress_scalar.h"
#include "kernels/half.h"
#include "kernels/cuda/compress_cuda.h"
#include "kernels/cuda/cuda_info.h"

namespace braid {
namespace {

__device__ __forceinline__ size_t globalIndex() { return static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t globalStride() { return static_cast<size_t>(blockDim.x) * gridDim.x; }
unsigned gridFor(size_t n) {
  const size_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks == 0 ? 1 : (blocks < 65535 ? blocks : 65535));
}

__global__ void encodeHalfKernel(const float* in, uint16_t* out, size_t n, bool bf16) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    out[i] = bf16 ? f32ToBf16(in[i]) : f32ToF16(in[i]);
  }
}

__global__ void decodeHalfKernel(const uint16_t* in, float* out, size_t n, bool bf16) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = bf16 ? bf16ToF32(in[i]) : f16ToF32(in[i]);
}

// One thread per int8 block: the block's max (order does not matter for max), then its codes.
__global__ void encodeInt8Kernel(const float* x, size_t n, size_t block, float* scales, int8_t* codes) {
  const size_t blocks = (n + block - 1) / block;
  for (size_t b = globalIndex(); b < blocks; b += globalStride()) {
    const size_t start = b * block;
    const size_t end = start + block < n ? start + block : n;
    float maxAbs = 0;
    for (size_t i = start; i < end; ++i) {
      const float a = fabsf(x[i]);
      maxAbs = a > maxAbs ? a : maxAbs;
    }
    const float scale = __fdiv_rn(maxAbs, 127.0f);
    scales[b] = scale;
    const float inverse = scale > 0 ? __fdiv_rn(1.0f, scale) : 0.0f;
    for (size_t i = start; i < end; ++i) codes[i] = rules::int8Code(x[i], inverse);
  }
}

__global__ void decodeInt8Kernel(const int8_t* codes, const float* scales, size_t n, size_t block, float* out) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = __fmul_rn(static_cast<float>(codes[i]), scales[i / block]);
}

__global__ void encodeSignKernel(const float* x, size_t n, uint8_t* bits) {
  const size_t bytes = (n + 7) / 8;
  for (size_t b = globalIndex(); b < bytes; b += globalStride()) {
    uint32_t v = 0;
    for (int j = 0; j < 8 && b * 8 + j < n; ++j) v |= (__float_as_uint(x[b * 8 + j]) >> 31) << j;
    bits[b] = static_cast<uint8_t>(v);
  }
}

__global__ void decodeSignKernel(const uint8_t* bits, size_t n, float scale, float* out) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = ((bits[i >> 3] >> (i & 7)) & 1) ? -scale : scale;
}

__global__ void encodeQsgdKernel(const float* x, size_t n, float scale, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    codes[i] = rules::qsgdCode<int16_t>(x[i], scale, rules::uniformAt(seedA, seedB, static_cast<uint32_t>(i)), levels);
  }
}

__global__ void decodeQsgdKernel(const int16_t* codes, size_t n, float unit, float* out) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = __fmul_rn(static_cast<float>(codes[i]), unit);
}

// Top-k keys: NaN lowest (0), then |x| in bit order (non-negative floats order like their bits).
__device__ __forceinline__ uint32_t topkKey(float v) { return isnan(v) ? 0u : (__float_as_uint(fabsf(v)) + 1u); }

__global__ void countAtLeastKernel(const float* x, size_t n, uint32_t key, unsigned long long* count) {
  unsigned long long local = 0;
  for (size_t i = globalIndex(); i < n; i += globalStride()) local += topkKey(x[i]) >= key ? 1 : 0;
  atomicAdd(count, local);
}

__global__ void topkFlagsKernel(const float* x, size_t n, uint32_t kth, uint32_t* greater, uint32_t* equal) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    const uint32_t key = topkKey(x[i]);
    greater[i] = key > kth;
    equal[i] = key == kth;
  }
}

__global__ void topkTakeKernel(const uint32_t* greater, const uint32_t* equal, const uint32_t* equalRank, size_t ties, size_t n, uint32_t* take) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) take[i] = greater[i] || (equal[i] && equalRank[i] < ties);
}

__global__ void topkScatterKernel(const float* x, const uint32_t* take, const uint32_t* position, size_t n, uint32_t* indices, float* values) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    if (!take[i]) continue;
    indices[position[i]] = static_cast<uint32_t>(i);
    values[position[i]] = x[i];
  }
}

__global__ void gatherKernel(const float* x, const uint32_t* indices, size_t k, float* values) {
  for (size_t i = globalIndex(); i < k; i += globalStride()) values[i] = x[indices[i]];
}

__global__ void subtractKernel(const float* a, const float* b, float* out, size_t n) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = __fsub_rn(a[i], b[i]);
}

// The CPU's dot: 16 partial sums over full chunks, the tail into lane 0, then lanes in order.
__device__ float dot16(const float* a, const float* b, size_t n, size_t strideB) {
  float acc[16];
  for (int l = 0; l < 16; ++l) acc[l] = 0.0f;
  size_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] = __fadd_rn(acc[l], __fmul_rn(a[j + l], b[(j + l) * strideB]));
  for (; j < n; ++j) acc[0] = __fadd_rn(acc[0], __fmul_rn(a[j], b[j * strideB]));
  float s = 0.0f;
  for (int l = 0; l < 16; ++l) s = __fadd_rn(s, acc[l]);
  return s;
}

__global__ void powerPKernel(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt) {
  for (size_t t = globalIndex(); t < rows * r; t += globalStride()) {
    const size_t i = t / r, c = t % r;
    pt[c * rows + i] = dot16(m + i * cols, qt + c * cols, cols, 1);
  }
}

// The CPU adds row after row into each element: the same order here, one thread per element.
__global__ void powerQKernel(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt) {
  for (size_t t = globalIndex(); t < cols * r; t += globalStride()) {
    const size_t c = t / cols, j = t % cols;
    float acc = 0.0f;
    for (size_t i = 0; i < rows; ++i) acc = __fadd_rn(acc, __fmul_rn(pt[c * rows + i], m[i * cols + j]));
    qt[c * cols + j] = acc;
  }
}

// Device copies of host arrays, freed on scope exit.
template <class T>
struct Device {
  T* ptr = nullptr;
  size_t count = 0;
  bool ok = true;
  explicit Device(size_t n, const T* from = nullptr) : count(n) {
    if (n == 0) return;
    ok = cudaMalloc(&ptr, n * sizeof(T)) == cudaSuccess;
    if (ok && from) ok = cudaMemcpy(ptr, from, n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess;
  }
  bool copyTo(T* host) const { return count == 0 || cudaMemcpy(host, ptr, count * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess; }
  ~Device() {
    if (ptr) cudaFree(ptr);
  }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
};

bool launched() { return cudaGetLastError() == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess; }

}  // namespace

bool cudaEncodeHalf(const float* in, uint16_t* out, size_t n, bool bfloat16) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> d(n, in);
  Device<uint16_t> o(n);
  if (!d.ok || !o.ok) return false;
  encodeHalfKernel<<<gridFor(n), 256>>>(d.ptr, o.ptr, n, bfloat16);
  return launched() && o.copyTo(out);
}

bool cudaDecodeHalf(const uint16_t* in, float* out, size_t n, bool bfloat16) {
  if (cudaDeviceCount() == 0) return false;
  Device<uint16_t> d(n, in);
  Device<float> o(n);
  if (!d.ok || !o.ok) return false;
  decodeHalfKernel<<<gridFor(n), 256>>>(d.ptr, o.ptr, n, bfloat16);
  return launched() && o.copyTo(out);
}

bool cudaEncodeInt8(const float* x, size_t n, size_t block, float* scales, int8_t* codes) {
  if (cudaDeviceCount() == 0 || block == 0) return false;
  const size_t blocks = (n + block - 1) / block;
  Device<float> d(n, x), s(blocks);
  Device<int8_t> c(n);
  if (!d.ok || !s.ok || !c.ok) return false;
  encodeInt8Kernel<<<gridFor(blocks), 256>>>(d.ptr, n, block, s.ptr, c.ptr);
  return launched() && s.copyTo(scales) && c.copyTo(codes);
}

bool cudaDecodeInt8(const int8_t* codes, const float* scales, size_t n, size_t block, float* out) {
  if (cudaDeviceCount() == 0 || block == 0) return false;
  Device<int8_t> c(n, codes);
  Device<float> s((n + block - 1) / block, scales), o(n);
  if (!c.ok || !s.ok || !o.ok) return false;
  decodeInt8Kernel<<<gridFor(n), 256>>>(c.ptr, s.ptr, n, block, o.ptr);
  return launched() && o.copyTo(out);
}

bool cudaEncodeSign(const float* x, size_t n, uint8_t* bits) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> d(n, x);
  Device<uint8_t> b((n + 7) / 8);
  if (!d.ok || !b.ok) return false;
  encodeSignKernel<<<gridFor((n + 7) / 8), 256>>>(d.ptr, n, b.ptr);
  return launched() && b.copyTo(bits);
}

bool cudaDecodeSign(const uint8_t* bits, size_t n, float scale, float* out) {
  if (cudaDeviceCount() == 0) return false;
  Device<uint8_t> b((n + 7) / 8, bits);
  Device<float> o(n);
  if (!b.ok || !o.ok) return false;
  decodeSignKernel<<<gridFor(n), 256>>>(b.ptr, n, scale, o.ptr);
  return launched() && o.copyTo(out);
}

bool cudaEncodeQsgd(const float* x, size_t n, float norm, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> d(n, x);
  Device<int16_t> c(n);
  if (!d.ok || !c.ok) return false;
  const float scale = norm > 0 ? static_cast<float>(levels) / norm : 0.0f;  // host division: IEEE, as on the CPU
  encodeQsgdKernel<<<gridFor(n), 256>>>(d.ptr, n, scale, levels, seedA, seedB, c.ptr);
  return launched() && c.copyTo(codes);
}

bool cudaDecodeQsgd(const int16_t* codes, size_t n, float norm, int32_t levels, float* out) {
  if (cudaDeviceCount() == 0) return false;
  Device<int16_t> c(n, codes);
  Device<float> o(n);
  if (!c.ok || !o.ok) return false;
  const float unit = levels > 0 ? norm / static_cast<float>(levels) : 0.0f;
  decodeQsgdKernel<<<gridFor(n), 256>>>(c.ptr, n, unit, o.ptr);
  return launched() && o.copyTo(out);
}

bool cudaTopk(const float* x, size_t n, size_t k, uint32_t* indices, float* values) {
  if (cudaDeviceCount() == 0) return false;
  if (k > n) k = n;
  if (k == 0) return true;
  Device<float> d(n, x);
  Device<unsigned long long> count(1);
  if (!d.ok || !count.ok) return false;
  auto atLeast = [&](uint32_t key, unsigned long long* out) {
    cudaMemset(count.ptr, 0, sizeof(unsigned long long));
    countAtLeastKernel<<<gridFor(n), 256>>>(d.ptr, n, key, count.ptr);
    return launched() && count.copyTo(out);
  };
  // The k-th largest key: the largest K with at least k keys >= K (bisection over 32 bits).
  uint64_t lo = 0, hi = 1ull << 32;  // count(>= lo) >= k always holds; count(>= hi) = 0
  while (hi - lo > 1) {
    const uint64_t mid = (lo + hi) / 2;
    unsigned long long c = 0;
    if (!atLeast(static_cast<uint32_t>(mid), &c)) return false;
    if (c >= k) lo = mid;
    else hi = mid;
  }
  const uint32_t kth = static_cast<uint32_t>(lo);
  unsigned long long above = 0;
  if (kth == 0xffffffffu) above = 0;
  else if (!atLeast(kth + 1, &above)) return false;
  try {
    thrust::device_vector<uint32_t> greater(n), equal(n), equalRank(n), take(n), position(n);
    topkFlagsKernel<<<gridFor(n), 256>>>(d.ptr, n, kth, thrust::raw_pointer_cast(greater.data()), thrust::raw_pointer_cast(equal.data()));
    if (!launched()) return false;
    thrust::exclusive_scan(thrust::device, equal.begin(), equal.end(), equalRank.begin());
    topkTakeKernel<<<gridFor(n), 256>>>(thrust::raw_pointer_cast(greater.data()), thrust::raw_pointer_cast(equal.data()), thrust::raw_pointer_cast(equalRank.data()),
                                        k - static_cast<size_t>(above), n, thrust::raw_pointer_cast(take.data()));
    if (!launched()) return false;
    thrust::exclusive_scan(thrust::device, take.begin(), take.end(), position.begin());
    Device<uint32_t> outIdx(k);
    Device<float> outVal(k);
    if (!outIdx.ok || !outVal.ok) return false;
    topkScatterKernel<<<gridFor(n), 256>>>(d.ptr, thrust::raw_pointer_cast(take.data()), thrust::raw_pointer_cast(position.data()), n, outIdx.ptr, outVal.ptr);
    return launched() && outIdx.copyTo(indices) && outVal.copyTo(values);
  } catch (...) {
    return false;  // thrust reports allocation and launch failures as exceptions
  }
}

bool cudaGather(const float* x, size_t n, const uint32_t* indices, size_t k, float* values) {
  if (cudaDeviceCount() == 0) return false;
  for (size_t i = 0; i < k; ++i)
    if (indices[i] >= n) return false;
  Device<float> d(n, x), v(k);
  Device<uint32_t> idx(k, indices);
  if (!d.ok || !v.ok || !idx.ok) return false;
  gatherKernel<<<gridFor(k), 256>>>(d.ptr, idx.ptr, k, v.ptr);
  return launched() && v.copyTo(values);
}

bool cudaErrorFeedback(const float* corrected, const float* sent, float* residual, size_t n) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> a(n, corrected), b(n, sent), o(n);
  if (!a.ok || !b.ok || !o.ok) return false;
  subtractKernel<<<gridFor(n), 256>>>(a.ptr, b.ptr, o.ptr, n);
  return launched() && o.copyTo(residual);
}

bool cudaPowerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> dm(rows * cols, m), dq(r * cols, qt), dp(r * rows);
  if (!dm.ok || !dq.ok || !dp.ok) return false;
  powerPKernel<<<gridFor(rows * r), 256>>>(dm.ptr, rows, cols, dq.ptr, r, dp.ptr);
  return launched() && dp.copyTo(pt);
}

bool cudaPowerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> dm(rows * cols, m), dp(r * rows, pt), dq(r * cols);
  if (!dm.ok || !dp.ok || !dq.ok) return false;
  powerQKernel<<<gridFor(cols * r), 256>>>(dm.ptr, rows, cols, dp.ptr, r, dq.ptr);
  return launched() && dq.copyTo(qt);
}

}  // namespace braid
