// CUDA twins of the compression kernels. Each follows its CPU reference operation by operation
// (compress_scalar.h's rules; half.h's conversions, compiled for the device too; IEEE operations with
// explicit rounding; dot products summed in the CPU's 16-lane order; the build passes
// -fmad=false so nothing is contracted into FMA), so the GPU test can ask for the same bits.
// Entry points on device memory (namespace gpu, for DeviceBuffers), and on host memory through
// device buffers around them (see compress_cuda.h).
#include <cuda_runtime.h>
#include <thrust/execution_policy.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/transform_scan.h>

#include <cstdint>
#include <mutex>
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

// The casts are bound by memory: four values a thread, in 16-byte loads and 8-byte stores, move
// more bytes per instruction than one (the target is 0.9x a device copy). Little-endian words:
// the lower half of each 32 bits is the earlier value.
__device__ __forceinline__ uint32_t halfBits(float v, bool bf16) { return bf16 ? f32ToBf16(v) : f32ToF16(v); }
__global__ void encodeHalf4Kernel(const float4* in, uint2* out, size_t quads, bool bf16) {
  for (size_t q = globalIndex(); q < quads; q += globalStride()) {
    const float4 v = in[q];
    out[q] = make_uint2(halfBits(v.x, bf16) | (halfBits(v.y, bf16) << 16), halfBits(v.z, bf16) | (halfBits(v.w, bf16) << 16));
  }
}

// One CUDA block of kInt8Threads per int8 block (grid-stride over them): its threads read the
// int8 block's values side by side (coalesced; one thread per int8 block read 1 KiB strides and
// left most of the GPU idle), each keeps the max of its own, shared memory combines them (max is
// exact in any order; a NaN never enters a thread's max, as it never enters the CPU's), then
// every thread writes its values' codes.
constexpr unsigned kInt8Threads = 128;
__global__ void encodeInt8Kernel(const float* x, size_t n, size_t block, float* scales, int8_t* codes) {
  __shared__ float lane[kInt8Threads];
  const size_t blocks = (n + block - 1) / block;
  for (size_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const size_t start = b * block;
    const size_t end = start + block < n ? start + block : n;
    float maxAbs = 0;
    for (size_t i = start + threadIdx.x; i < end; i += kInt8Threads) {
      const float a = fabsf(x[i]);
      maxAbs = a > maxAbs ? a : maxAbs;
    }
    lane[threadIdx.x] = maxAbs;
    __syncthreads();
    for (unsigned half = kInt8Threads / 2; half > 0; half /= 2) {
      if (threadIdx.x < half && lane[threadIdx.x + half] > lane[threadIdx.x]) lane[threadIdx.x] = lane[threadIdx.x + half];
      __syncthreads();
    }
    const float scale = __fdiv_rn(lane[0], 127.0f);
    if (threadIdx.x == 0) scales[b] = scale;
    const float inverse = scale > 0 ? __fdiv_rn(1.0f, scale) : 0.0f;
    for (size_t i = start + threadIdx.x; i < end; i += kInt8Threads) codes[i] = rules::int8Code(x[i], inverse);
    __syncthreads();  // every thread has read lane[0] before the next int8 block overwrites it
  }
}

__global__ void encodeSignKernel(const float* x, size_t n, uint8_t* bits) {
  const size_t bytes = (n + 7) / 8;
  for (size_t b = globalIndex(); b < bytes; b += globalStride()) {
    uint32_t v = 0;
    for (int j = 0; j < 8 && b * 8 + j < n; ++j) v |= (__float_as_uint(x[b * 8 + j]) >> 31) << j;
    bits[b] = static_cast<uint8_t>(v);
  }
}

// Top-k keys: NaN lowest (0), then |x| in bit order (non-negative floats order like their bits).
__device__ __forceinline__ uint32_t topkKey(float v) { return isnan(v) ? 0u : (__float_as_uint(fabsf(v)) + 1u); }

// Top-k's radix select keeps its state on the device, so its four passes are queued without a
// read-back between them (each read-back was a stream sync: the host waited for the GPU, and the
// GPU then idled until the next launch). kth is the k-th largest key once mask covers all 32 bits.
struct RadixSelectState {
  uint32_t prefix;           // the bits chosen so far (under mask)
  uint32_t mask;
  unsigned long long rank;   // the k-th largest among the keys under prefix is the rank-th there
  unsigned long long above;  // keys above the bins chosen
  uint32_t failed;           // fewer keys under the prefix than asked for: cannot happen
};

__global__ void radixInitKernel(unsigned long long* counts, RadixSelectState* state, unsigned long long k) {
  counts[threadIdx.x] = 0;
  if (threadIdx.x == 0) *state = RadixSelectState{0u, 0u, k, 0ull, 0u};
}

// One pass of top-k's radix select: among the keys whose bits under the state's mask are its
// prefix (the bins chosen by the passes before), counts each value of the 8 bits at `shift`, in a
// block's shared histogram first. Launched with 256 threads a block.
__global__ void radixCountKernel(const float* x, size_t n, const RadixSelectState* state, unsigned shift, unsigned long long* counts) {
  __shared__ unsigned int bins[256];
  bins[threadIdx.x] = 0;
  const uint32_t prefix = state->prefix, mask = state->mask;
  __syncthreads();
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    const uint32_t key = topkKey(x[i]);
    if ((key & mask) == prefix) atomicAdd(&bins[(key >> shift) & 255u], 1u);
  }
  __syncthreads();
  if (bins[threadIdx.x] != 0) atomicAdd(&counts[threadIdx.x], static_cast<unsigned long long>(bins[threadIdx.x]));
}

// Picks the bin holding the rank-th largest key: the highest bin whose count with every bin above
// it reaches rank (a scan from the top in shared memory, 8 steps), then clears the counts for the
// next pass. One block of 256 threads.
__global__ void radixPickKernel(unsigned long long* counts, unsigned shift, RadixSelectState* state) {
  __shared__ unsigned long long atOrAbove[257];  // atOrAbove[b]: keys in bins b..255; [256] = 0
  const unsigned b = threadIdx.x;
  const unsigned long long rank = state->rank;  // read by all before the one that matches writes it
  atOrAbove[b] = counts[b];
  if (b == 0) atOrAbove[256] = 0;
  counts[b] = 0;
  __syncthreads();
  for (unsigned step = 1; step < 256; step <<= 1) {
    const unsigned long long add = b + step < 256 ? atOrAbove[b + step] : 0ull;
    __syncthreads();
    atOrAbove[b] += add;
    __syncthreads();
  }
  if (b == 0 && atOrAbove[0] < rank) state->failed = 1u;
  if (atOrAbove[b] >= rank && atOrAbove[b + 1] < rank) {
    state->above += atOrAbove[b + 1];
    state->rank = rank - atOrAbove[b + 1];
    state->prefix |= static_cast<uint32_t>(b) << shift;
    state->mask |= 255u << shift;
  }
}

// After the select, one scan places every taken value: each key counts as 1 in the low 32 bits if
// it is above kth and in the high 32 bits if it equals kth, so the exclusive sum at i holds both
// how many keys above kth and how many ties come before i (n < 2^32). Of the ties, the first
// k - above in index order are taken, as the CPU takes them.
struct TopkRankCounts {
  const RadixSelectState* state;
  __device__ unsigned long long operator()(float v) const {
    const uint32_t key = topkKey(v), kth = state->prefix;
    return key > kth ? 1ull : (key == kth ? 1ull << 32 : 0ull);
  }
};
struct AddCounts {
  __host__ __device__ unsigned long long operator()(unsigned long long a, unsigned long long b) const { return a + b; }
};

__global__ void topkScatterKernel(const float* x, const unsigned long long* before, const RadixSelectState* state, size_t k, size_t n, uint32_t* indices, float* values) {
  const uint32_t kth = state->prefix;
  const unsigned long long ties = k - state->above;
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    const uint32_t key = topkKey(x[i]);
    if (key < kth) continue;
    const unsigned long long aboveBefore = before[i] & 0xffffffffull, tiesBefore = before[i] >> 32;
    if (key == kth && tiesBefore >= ties) continue;
    const size_t at = static_cast<size_t>(aboveBefore + (tiesBefore < ties ? tiesBefore : ties));
    indices[at] = static_cast<uint32_t>(i);
    values[at] = x[i];
  }
}

__global__ void gatherKernel(const float* x, const uint32_t* indices, size_t k, float* values) {
  for (size_t i = globalIndex(); i < k; i += globalStride()) values[i] = x[indices[i]];
}

__global__ void subtractKernel(const float* a, const float* b, float* out, size_t n) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = __fsub_rn(a[i], b[i]);
}

// The CPU's dot: 16 partial sums over full chunks, the tail into lane 0, then lanes in order.
// P = M Q as the CPU's 16-accumulator dot product (compress_impl.h's dot) computes each element:
// accumulator l sums products j = l, l + 16, ... in order, the tail goes into accumulator 0, and
// the 16 are added in order. Here the 16 accumulators are 16 threads side by side, so a row of M
// is read 64 contiguous bytes at a time (one thread an element read each row with a 1-row stride),
// and the groups of a row's r elements share its reads in cache.
constexpr unsigned kDotLanes = 16, kDotGroupsPerBlock = 16;
__global__ void powerPKernel(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt) {
  __shared__ float partial[kDotGroupsPerBlock][kDotLanes];
  const unsigned group = threadIdx.x / kDotLanes, lane = threadIdx.x % kDotLanes;
  const size_t outputs = rows * r, whole = cols / kDotLanes * kDotLanes;
  // The loop's bounds are the block's: every thread reaches each __syncthreads.
  for (size_t first = static_cast<size_t>(blockIdx.x) * kDotGroupsPerBlock; first < outputs; first += static_cast<size_t>(gridDim.x) * kDotGroupsPerBlock) {
    const size_t t = first + group, i = t / r, c = t % r;
    float acc = 0.0f;
    if (t < outputs) {
      const float* a = m + i * cols;
      const float* b = qt + c * cols;
      for (size_t j = lane; j < whole; j += kDotLanes) acc = __fadd_rn(acc, __fmul_rn(a[j], b[j]));
      if (lane == 0)
        for (size_t j = whole; j < cols; ++j) acc = __fadd_rn(acc, __fmul_rn(a[j], b[j]));
    }
    partial[group][lane] = acc;
    __syncthreads();
    if (t < outputs && lane == 0) {
      float sum = 0.0f;
      for (unsigned l = 0; l < kDotLanes; ++l) sum = __fadd_rn(sum, partial[group][l]);
      pt[c * rows + i] = sum;
    }
    __syncthreads();  // the partials are read before the next groups overwrite them
  }
}

// The CPU adds row after row into each element: the same order here. A thread makes up to
// kPowerQColumns elements of one column j of M (Q's rows c..c+3 at j), so it reads each value of
// M once for all of them, where one thread per element read M r times.
constexpr size_t kPowerQColumns = 4;
__global__ void powerQKernel(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt) {
  const size_t groups = (r + kPowerQColumns - 1) / kPowerQColumns;
  for (size_t t = globalIndex(); t < cols * groups; t += globalStride()) {
    const size_t c0 = (t / cols) * kPowerQColumns, j = t % cols;
    const size_t width = r - c0 < kPowerQColumns ? r - c0 : kPowerQColumns;
    float acc[kPowerQColumns] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (size_t i = 0; i < rows; ++i) {
      const float v = m[i * cols + j];
#pragma unroll
      for (size_t q = 0; q < kPowerQColumns; ++q)
        if (q < width) acc[q] = __fadd_rn(acc[q], __fmul_rn(pt[(c0 + q) * rows + i], v));
    }
#pragma unroll
    for (size_t q = 0; q < kPowerQColumns; ++q)
      if (q < width) qt[(c0 + q) * cols + j] = acc[q];
  }
}

// --- for allReduceCompressed on DeviceBuffers -------------------------------------------------------

__device__ __forceinline__ float into(float old, float value, bool accumulate) { return accumulate ? __fadd_rn(old, value) : value; }

__global__ void decodeHalfIntoKernel(const uint16_t* in, float* out, size_t n, bool bf16, bool accumulate) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = into(out[i], bf16 ? bf16ToF32(in[i]) : f16ToF32(in[i]), accumulate);
}

// encodeHalf4Kernel's reverse; `out` is read only when accumulating.
__device__ __forceinline__ float halfValue(uint32_t bits, bool bf16) {
  const uint16_t h = static_cast<uint16_t>(bits);
  return bf16 ? bf16ToF32(h) : f16ToF32(h);
}
__global__ void decodeHalf4IntoKernel(const uint2* in, float4* out, size_t quads, bool bf16, bool accumulate) {
  for (size_t q = globalIndex(); q < quads; q += globalStride()) {
    const uint2 w = in[q];
    float4 v = make_float4(halfValue(w.x, bf16), halfValue(w.x >> 16, bf16), halfValue(w.y, bf16), halfValue(w.y >> 16, bf16));
    if (accumulate) {
      const float4 old = out[q];
      v = make_float4(__fadd_rn(old.x, v.x), __fadd_rn(old.y, v.y), __fadd_rn(old.z, v.z), __fadd_rn(old.w, v.w));
    }
    out[q] = v;
  }
}

// How many leading groups of four the vector kernels take: all of them when both pointers are
// aligned for the wide accesses (cudaMalloc's are), else none.
size_t quadsFor(const void* floats, const void* halves, size_t n) {
  return reinterpret_cast<uintptr_t>(floats) % 16 == 0 && reinterpret_cast<uintptr_t>(halves) % 8 == 0 ? n / 4 : 0;
}

__global__ void decodeInt8IntoKernel(const int8_t* codes, const float* scales, size_t n, size_t block, float* out, bool accumulate) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = into(out[i], __fmul_rn(static_cast<float>(codes[i]), scales[i / block]), accumulate);
}

__global__ void decodeSignIntoKernel(const uint8_t* bits, size_t n, float scale, float* out, bool accumulate) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = into(out[i], ((bits[i >> 3] >> (i & 7)) & 1) ? -scale : scale, accumulate);
}

template <class Code>
__global__ void encodeQsgdCodesKernel(const float* x, size_t n, float scale, int32_t levels, uint32_t seedA, uint32_t seedB, Code* codes) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) {
    codes[i] = rules::qsgdCode<Code>(x[i], scale, rules::uniformAt(seedA, seedB, static_cast<uint32_t>(i)), levels);
  }
}

template <class Code>
__global__ void decodeQsgdIntoKernel(const Code* codes, size_t n, float unit, float* out, bool accumulate) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = into(out[i], __fmul_rn(static_cast<float>(codes[i]), unit), accumulate);
}

// Indices ascend strictly, so no two threads write one element.
__global__ void scatterIntoKernel(const uint32_t* indices, const float* values, size_t k, float* out, size_t n, bool accumulate, uint32_t* bad) {
  for (size_t i = globalIndex(); i < k; i += globalStride()) {
    const uint32_t at = indices[i];
    if (at >= n || (i > 0 && indices[i - 1] >= at)) {
      atomicOr(bad, 1u);
      continue;
    }
    out[at] = into(out[at], values[i], accumulate);
  }
}

__global__ void addKernel(const float* a, const float* b, float* out, size_t n) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = __fadd_rn(a[i], b[i]);
}

__global__ void scaleKernel(float* out, size_t n, double factor) {
  for (size_t i = globalIndex(); i < n; i += globalStride()) out[i] = __double2float_rn(__dmul_rn(static_cast<double>(out[i]), factor));
}

__global__ void powerReconstructKernel(const float* pt, const float* qt, size_t r, size_t rows, size_t cols, float* out, bool accumulate) {
  for (size_t t = globalIndex(); t < rows * cols; t += globalStride()) {
    const size_t i = t / cols, j = t % cols;
    float acc = accumulate ? out[t] : 0.0f;
    for (size_t c = 0; c < r; ++c) acc = __fadd_rn(acc, __fmul_rn(pt[c * rows + i], qt[c * cols + j]));
    out[t] = acc;
  }
}

// A fixed grid and a fixed tree: each thread sums its stride in order, each block halves in
// shared memory, one block sums the blocks' partials. The same bits on every call.
constexpr unsigned kSumBlocks = 256, kSumThreads = 256;

template <bool kSquares>
__global__ void partialSumsKernel(const float* x, size_t n, double* partials) {
  __shared__ double lane[kSumThreads];
  double acc = 0;
  for (size_t i = static_cast<size_t>(blockIdx.x) * kSumThreads + threadIdx.x; i < n; i += static_cast<size_t>(kSumBlocks) * kSumThreads) {
    const double v = static_cast<double>(x[i]);
    acc = __dadd_rn(acc, kSquares ? __dmul_rn(v, v) : fabs(v));
  }
  lane[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned half = kSumThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) lane[threadIdx.x] = __dadd_rn(lane[threadIdx.x], lane[threadIdx.x + half]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = lane[0];
}

__global__ void sumPartialsKernel(double* partials) {
  __shared__ double lane[kSumBlocks];
  lane[threadIdx.x] = partials[threadIdx.x];
  __syncthreads();
  for (unsigned half = kSumBlocks / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) lane[threadIdx.x] = __dadd_rn(lane[threadIdx.x], lane[threadIdx.x + half]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[0] = lane[0];
}

// compress_scalar.h's checksum with every chunk of every byte run at once: kChecksumLanes threads
// a chunk (side by side, so a row's 64 bytes are one read), kChecksumChunksPerBlock chunks a block.
// The first thread of a chunk folds the lanes and adds the chunk's term to its run's sum; integer
// sums come out the same in any order. The host finishes each sum with the length.
constexpr unsigned kChecksumChunksPerBlock = 8;
__global__ void checksumChunksKernel(const uint8_t* base, size_t stride, size_t n, size_t chunksPerRun, size_t chunks, uint32_t* sums) {
  using namespace rules;
  __shared__ uint32_t lanes[kChecksumChunksPerBlock][kChecksumLanes];
  const unsigned slot = threadIdx.x / kChecksumLanes, lane = threadIdx.x % kChecksumLanes;
  // The loop's bounds are the block's, not the thread's: every thread reaches each __syncthreads.
  for (size_t first = static_cast<size_t>(blockIdx.x) * kChecksumChunksPerBlock; first < chunks; first += static_cast<size_t>(gridDim.x) * kChecksumChunksPerBlock) {
    const size_t id = first + slot;
    const bool active = id < chunks;
    const size_t run = active ? id / chunksPerRun : 0, chunk = active ? id % chunksPerRun : 0;
    const uint8_t* p = base + run * stride + chunk * kChecksumChunkBytes;
    const size_t len = active ? (n - chunk * kChecksumChunkBytes < kChecksumChunkBytes ? n - chunk * kChecksumChunkBytes : kChecksumChunkBytes) : 0;
    const size_t rows = len / kChecksumRowBytes;
    const uint32_t* words = reinterpret_cast<const uint32_t*>(p);
    uint32_t h = checksumLaneStart(lane);
#pragma unroll 8
    for (size_t r = 0; r < rows; ++r) h = checksumLaneStep(h, words[r * kChecksumLanes + lane]);
    lanes[slot][lane] = h;
    __syncthreads();
    if (active && lane == 0) {
      uint32_t digest = 0;
      for (unsigned l = 0; l < kChecksumLanes; ++l) digest = checksumFold(digest, lanes[slot][l]);
      for (size_t i = rows * kChecksumRowBytes; i < len; ++i) digest = checksumFold(digest, p[i]);
      atomicAdd(&sums[run], checksumTerm(digest, chunk));
    }
    __syncthreads();  // the lanes are read before the next chunks overwrite them
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
cudaStream_t on(void* stream) { return static_cast<cudaStream_t>(stream); }
bool launchOk() { return cudaGetLastError() == cudaSuccess; }

}  // namespace

// --- on device memory -----------------------------------------------------------------------------
namespace gpu {

bool encodeHalf(const float* in, uint16_t* out, size_t n, bool bfloat16, void* stream) {
  if (n == 0) return true;
  const size_t quads = quadsFor(in, out, n), done = 4 * quads;
  if (quads > 0) encodeHalf4Kernel<<<gridFor(quads), 256, 0, on(stream)>>>(reinterpret_cast<const float4*>(in), reinterpret_cast<uint2*>(out), quads, bfloat16);
  if (done < n) encodeHalfKernel<<<gridFor(n - done), 256, 0, on(stream)>>>(in + done, out + done, n - done, bfloat16);
  return launchOk();
}

bool decodeHalf(const uint16_t* in, float* out, size_t n, bool bfloat16, void* stream) {
  return decodeHalfInto(in, out, n, bfloat16, false, stream);
}

bool encodeInt8(const float* x, size_t n, size_t block, float* scales, int8_t* codes, void* stream) {
  if (block == 0) return false;
  if (n == 0) return true;
  const size_t blocks = (n + block - 1) / block;
  encodeInt8Kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kInt8Threads, 0, on(stream)>>>(x, n, block, scales, codes);
  return launchOk();
}

bool decodeInt8(const int8_t* codes, const float* scales, size_t n, size_t block, float* out, void* stream) {
  return decodeInt8Into(codes, scales, n, block, out, false, stream);
}

bool encodeSign(const float* x, size_t n, uint8_t* bits, void* stream) {
  if (n == 0) return true;
  encodeSignKernel<<<gridFor((n + 7) / 8), 256, 0, on(stream)>>>(x, n, bits);
  return launchOk();
}

bool decodeSign(const uint8_t* bits, size_t n, float scale, float* out, void* stream) {
  return decodeSignInto(bits, n, scale, out, false, stream);
}

bool encodeQsgd(const float* x, size_t n, float scale, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes, void* stream) {
  return encodeQsgdCodes(x, n, scale, levels, seedA, seedB, codes, 2, stream);
}

bool decodeQsgd(const int16_t* codes, size_t n, float unit, float* out, void* stream) {
  return decodeQsgdInto(codes, 2, n, unit, out, false, stream);
}

namespace {
// topk's workspace: the radix select's 256 counts and state, the scan's n 64-bit counts and its
// temporary storage, each 256-byte aligned.
constexpr size_t kWorkspaceAlign = 256;
constexpr size_t kCountsBytes = 256 * sizeof(unsigned long long);
constexpr size_t kSelectBytes = kCountsBytes + sizeof(RadixSelectState);
size_t alignedBytes(size_t bytes) { return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }
size_t rankCountBytes(size_t n) { return alignedBytes(n * sizeof(unsigned long long)); }
// CUB's scan wants a few bytes per tile of hundreds to thousands of items; this is ample.
size_t scanStorageBytes(size_t n) { return alignedBytes(n / 16 + (64u << 10)); }

// Thrust's temporary storage for the scan, from the workspace;
// a request beyond it falls back to cudaMalloc.
class WorkspaceAllocator {
 public:
  using value_type = char;
  WorkspaceAllocator(char* region, size_t bytes) : region_(region), bytes_(bytes) {}
  char* allocate(std::ptrdiff_t bytes) {
    if (!inUse_ && static_cast<size_t>(bytes) <= bytes_) {
      inUse_ = true;
      return region_;
    }
    char* p = nullptr;
    if (cudaMalloc(&p, static_cast<size_t>(bytes)) != cudaSuccess) throw std::bad_alloc();
    return p;
  }
  void deallocate(char* p, size_t) {
    if (p == region_) {
      inUse_ = false;
      return;
    }
    cudaFree(p);
  }

 private:
  char* region_;
  size_t bytes_;
  bool inUse_ = false;
};
}  // namespace

size_t topkWorkspaceBytes(size_t n) { return alignedBytes(kSelectBytes) + rankCountBytes(n) + scanStorageBytes(n); }

bool topk(const float* x, size_t n, size_t k, uint32_t* indices, float* values, void* stream, void* workspace) {
  if (k > n || n > UINT32_MAX) return false;  // indices are 32-bit, and so are the scan's counts
  if (k == 0) return true;
  const cudaStream_t s = on(stream);
  Device<char> own(workspace == nullptr ? topkWorkspaceBytes(n) : 0);
  if (!own.ok) return false;
  char* base = workspace != nullptr ? static_cast<char*>(workspace) : own.ptr;
  auto* counts = reinterpret_cast<unsigned long long*>(base);
  auto* state = reinterpret_cast<RadixSelectState*>(base + kCountsBytes);
  auto* before = reinterpret_cast<unsigned long long*>(base + alignedBytes(kSelectBytes));
  WorkspaceAllocator scanStorage(base + alignedBytes(kSelectBytes) + rankCountBytes(n), scanStorageBytes(n));
  // The k-th largest key, 8 bits a pass from the top (a radix select, as torch.topk's): each pass
  // counts the next 8 bits of the keys that share the bits chosen so far and takes the bin that
  // holds the k-th, on the device; 4 passes, where a bisection over the 32 bits took 33.
  radixInitKernel<<<1, 256, 0, s>>>(counts, state, static_cast<unsigned long long>(k));
  if (!launchOk()) return false;
  for (int shift = 24; shift >= 0; shift -= 8) {
    radixCountKernel<<<gridFor(n), 256, 0, s>>>(x, n, state, static_cast<unsigned>(shift), counts);
    if (!launchOk()) return false;
    radixPickKernel<<<1, 256, 0, s>>>(counts, static_cast<unsigned>(shift), state);
    if (!launchOk()) return false;
  }
  uint32_t failed = 1;
  try {
    // Queued behind the select without a sync (par_nosync); the counts are written whole before
    // they are read, so the workspace needs no clearing.
    thrust::transform_exclusive_scan(thrust::cuda::par_nosync(scanStorage).on(s), x, x + n, before, TopkRankCounts{state}, 0ull, AddCounts{});
    topkScatterKernel<<<gridFor(n), 256, 0, s>>>(x, before, state, k, n, indices, values);
    // The caller may hand the workspace to other work (own's is freed on return): done first.
    return launchOk() && cudaMemcpyAsync(&failed, &state->failed, sizeof(failed), cudaMemcpyDeviceToHost, s) == cudaSuccess &&
           cudaStreamSynchronize(s) == cudaSuccess && failed == 0;
  } catch (...) {
    return false;  // thrust reports allocation and launch failures as exceptions
  }
}

bool gather(const float* x, const uint32_t* indices, size_t k, float* values, void* stream) {
  if (k == 0) return true;
  gatherKernel<<<gridFor(k), 256, 0, on(stream)>>>(x, indices, k, values);
  return launchOk();
}

bool errorFeedback(const float* corrected, const float* sent, float* residual, size_t n, void* stream) {
  if (n == 0) return true;
  subtractKernel<<<gridFor(n), 256, 0, on(stream)>>>(corrected, sent, residual, n);
  return launchOk();
}

bool powerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt, void* stream) {
  if (rows * r == 0) return true;
  const size_t groups = (rows * r + kDotGroupsPerBlock - 1) / kDotGroupsPerBlock;
  powerPKernel<<<static_cast<unsigned>(groups < 65535 ? groups : 65535), kDotGroupsPerBlock * kDotLanes, 0, on(stream)>>>(m, rows, cols, qt, r, pt);
  return launchOk();
}

bool powerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt, void* stream) {
  if (cols * r == 0) return true;
  powerQKernel<<<gridFor(cols * ((r + kPowerQColumns - 1) / kPowerQColumns)), 256, 0, on(stream)>>>(m, rows, cols, pt, r, qt);
  return launchOk();
}

bool decodeHalfInto(const uint16_t* in, float* out, size_t n, bool bfloat16, bool accumulate, void* stream) {
  if (n == 0) return true;
  const size_t quads = quadsFor(out, in, n), done = 4 * quads;
  if (quads > 0)
    decodeHalf4IntoKernel<<<gridFor(quads), 256, 0, on(stream)>>>(reinterpret_cast<const uint2*>(in), reinterpret_cast<float4*>(out), quads, bfloat16, accumulate);
  if (done < n) decodeHalfIntoKernel<<<gridFor(n - done), 256, 0, on(stream)>>>(in + done, out + done, n - done, bfloat16, accumulate);
  return launchOk();
}

bool decodeInt8Into(const int8_t* codes, const float* scales, size_t n, size_t block, float* out, bool accumulate, void* stream) {
  if (block == 0) return false;
  if (n == 0) return true;
  decodeInt8IntoKernel<<<gridFor(n), 256, 0, on(stream)>>>(codes, scales, n, block, out, accumulate);
  return launchOk();
}

bool decodeSignInto(const uint8_t* bits, size_t n, float scale, float* out, bool accumulate, void* stream) {
  if (n == 0) return true;
  decodeSignIntoKernel<<<gridFor(n), 256, 0, on(stream)>>>(bits, n, scale, out, accumulate);
  return launchOk();
}

bool encodeQsgdCodes(const float* x, size_t n, float scale, int32_t levels, uint32_t seedA, uint32_t seedB, void* codes, int codeBytes, void* stream) {
  if (n == 0) return true;
  if (codeBytes == 1) {
    encodeQsgdCodesKernel<int8_t><<<gridFor(n), 256, 0, on(stream)>>>(x, n, scale, levels, seedA, seedB, static_cast<int8_t*>(codes));
  } else {
    encodeQsgdCodesKernel<int16_t><<<gridFor(n), 256, 0, on(stream)>>>(x, n, scale, levels, seedA, seedB, static_cast<int16_t*>(codes));
  }
  return launchOk();
}

bool decodeQsgdInto(const void* codes, int codeBytes, size_t n, float unit, float* out, bool accumulate, void* stream) {
  if (n == 0) return true;
  if (codeBytes == 1) {
    decodeQsgdIntoKernel<int8_t><<<gridFor(n), 256, 0, on(stream)>>>(static_cast<const int8_t*>(codes), n, unit, out, accumulate);
  } else {
    decodeQsgdIntoKernel<int16_t><<<gridFor(n), 256, 0, on(stream)>>>(static_cast<const int16_t*>(codes), n, unit, out, accumulate);
  }
  return launchOk();
}

bool scatterInto(const uint32_t* indices, const float* values, size_t k, float* out, size_t n, bool accumulate, uint32_t* bad, void* stream) {
  if (k == 0) return true;
  scatterIntoKernel<<<gridFor(k), 256, 0, on(stream)>>>(indices, values, k, out, n, accumulate, bad);
  return launchOk();
}

bool add(const float* a, const float* b, float* out, size_t n, void* stream) {
  if (n == 0) return true;
  addKernel<<<gridFor(n), 256, 0, on(stream)>>>(a, b, out, n);
  return launchOk();
}

bool scale(float* out, size_t n, double factor, void* stream) {
  if (n == 0) return true;
  scaleKernel<<<gridFor(n), 256, 0, on(stream)>>>(out, n, factor);
  return launchOk();
}

bool powerReconstruct(const float* pt, const float* qt, size_t r, size_t rows, size_t cols, float* out, bool accumulate, void* stream) {
  if (rows * cols == 0) return true;
  powerReconstructKernel<<<gridFor(rows * cols), 256, 0, on(stream)>>>(pt, qt, r, rows, cols, out, accumulate);
  return launchOk();
}

namespace {
// Where the sums and checksums leave their few results for the host: one buffer for the process,
// grown when a call needs more and held, with its lock, for the call (which reads the results
// back before it returns). A buffer per call meant a cudaFree per call, which waits for the whole GPU.
struct ResultBuffer {
  std::unique_lock<std::mutex> lock;
  void* ptr = nullptr;  // null: it could not be grown
  static ResultBuffer take(size_t bytes) {
    static std::mutex mutex;
    static void* buffer = nullptr;
    static size_t capacity = 0;
    ResultBuffer lease{std::unique_lock<std::mutex>(mutex)};
    if (capacity < bytes) {
      if (buffer != nullptr) cudaFree(buffer);
      buffer = nullptr;
      capacity = 0;
      const size_t want = std::max<size_t>(bytes, 4096);
      if (cudaMalloc(&buffer, want) != cudaSuccess) return lease;
      capacity = want;
    }
    lease.ptr = buffer;
    return lease;
  }
};

template <bool kSquares>
bool deviceSum(const float* x, size_t n, double* result, void* stream) {
  ResultBuffer partials = ResultBuffer::take(kSumBlocks * sizeof(double));
  if (partials.ptr == nullptr) return false;
  double* p = static_cast<double*>(partials.ptr);
  partialSumsKernel<kSquares><<<kSumBlocks, kSumThreads, 0, on(stream)>>>(x, n, p);
  sumPartialsKernel<<<1, kSumBlocks, 0, on(stream)>>>(p);
  return launchOk() && cudaMemcpyAsync(result, p, sizeof(double), cudaMemcpyDeviceToHost, on(stream)) == cudaSuccess &&
         cudaStreamSynchronize(on(stream)) == cudaSuccess;
}
}  // namespace

bool sumSquares(const float* x, size_t n, double* result, void* stream) { return deviceSum<true>(x, n, result, stream); }
bool sumAbs(const float* x, size_t n, double* result, void* stream) { return deviceSum<false>(x, n, result, stream); }

bool checksums(const uint8_t* base, size_t stride, size_t count, size_t n, uint32_t* out, void* stream) {
  if (count == 0) return true;
  if (stride % 4 != 0 || reinterpret_cast<uintptr_t>(base) % 4 != 0) return false;
  ResultBuffer sums = ResultBuffer::take(count * sizeof(uint32_t));
  if (sums.ptr == nullptr) return false;
  uint32_t* p = static_cast<uint32_t*>(sums.ptr);
  const size_t chunksPerRun = (n + rules::kChecksumChunkBytes - 1) / rules::kChecksumChunkBytes;
  const size_t chunks = count * chunksPerRun;
  if (cudaMemsetAsync(p, 0, count * sizeof(uint32_t), on(stream)) != cudaSuccess) return false;
  if (chunks > 0) {
    const size_t blocks = (chunks + kChecksumChunksPerBlock - 1) / kChecksumChunksPerBlock;
    checksumChunksKernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kChecksumChunksPerBlock * rules::kChecksumLanes, 0, on(stream)>>>(
        base, stride, n, chunksPerRun, chunks, p);
    if (!launchOk()) return false;
  }
  if (cudaMemcpyAsync(out, p, count * sizeof(uint32_t), cudaMemcpyDeviceToHost, on(stream)) != cudaSuccess ||
      cudaStreamSynchronize(on(stream)) != cudaSuccess)
    return false;
  for (size_t r = 0; r < count; ++r) out[r] = rules::checksumFinish(out[r], n);
  return true;
}

bool zero(void* p, size_t bytes, void* stream) { return bytes == 0 || cudaMemsetAsync(p, 0, bytes, on(stream)) == cudaSuccess; }
bool copy(void* to, const void* from, size_t bytes, void* stream) {
  return bytes == 0 || cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, on(stream)) == cudaSuccess;
}
bool synchronize(void* stream) { return cudaStreamSynchronize(on(stream)) == cudaSuccess; }

}  // namespace gpu

// --- on host memory: copies through device buffers around the device entry points -----------------

bool cudaEncodeHalf(const float* in, uint16_t* out, size_t n, bool bfloat16) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> d(n, in);
  Device<uint16_t> o(n);
  return d.ok && o.ok && gpu::encodeHalf(d.ptr, o.ptr, n, bfloat16, nullptr) && launched() && o.copyTo(out);
}

bool cudaDecodeHalf(const uint16_t* in, float* out, size_t n, bool bfloat16) {
  if (cudaDeviceCount() == 0) return false;
  Device<uint16_t> d(n, in);
  Device<float> o(n);
  return d.ok && o.ok && gpu::decodeHalf(d.ptr, o.ptr, n, bfloat16, nullptr) && launched() && o.copyTo(out);
}

bool cudaEncodeInt8(const float* x, size_t n, size_t block, float* scales, int8_t* codes) {
  if (cudaDeviceCount() == 0 || block == 0) return false;
  Device<float> d(n, x), s((n + block - 1) / block);
  Device<int8_t> c(n);
  return d.ok && s.ok && c.ok && gpu::encodeInt8(d.ptr, n, block, s.ptr, c.ptr, nullptr) && launched() && s.copyTo(scales) && c.copyTo(codes);
}

bool cudaDecodeInt8(const int8_t* codes, const float* scales, size_t n, size_t block, float* out) {
  if (cudaDeviceCount() == 0 || block == 0) return false;
  Device<int8_t> c(n, codes);
  Device<float> s((n + block - 1) / block, scales), o(n);
  return c.ok && s.ok && o.ok && gpu::decodeInt8(c.ptr, s.ptr, n, block, o.ptr, nullptr) && launched() && o.copyTo(out);
}

bool cudaEncodeSign(const float* x, size_t n, uint8_t* bits) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> d(n, x);
  Device<uint8_t> b((n + 7) / 8);
  return d.ok && b.ok && gpu::encodeSign(d.ptr, n, b.ptr, nullptr) && launched() && b.copyTo(bits);
}

bool cudaDecodeSign(const uint8_t* bits, size_t n, float scale, float* out) {
  if (cudaDeviceCount() == 0) return false;
  Device<uint8_t> b((n + 7) / 8, bits);
  Device<float> o(n);
  return b.ok && o.ok && gpu::decodeSign(b.ptr, n, scale, o.ptr, nullptr) && launched() && o.copyTo(out);
}

bool cudaEncodeQsgd(const float* x, size_t n, float norm, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> d(n, x);
  Device<int16_t> c(n);
  const float scale = norm > 0 ? static_cast<float>(levels) / norm : 0.0f;  // host division: IEEE, as on the CPU
  return d.ok && c.ok && gpu::encodeQsgd(d.ptr, n, scale, levels, seedA, seedB, c.ptr, nullptr) && launched() && c.copyTo(codes);
}

bool cudaDecodeQsgd(const int16_t* codes, size_t n, float norm, int32_t levels, float* out) {
  if (cudaDeviceCount() == 0) return false;
  Device<int16_t> c(n, codes);
  Device<float> o(n);
  const float unit = levels > 0 ? norm / static_cast<float>(levels) : 0.0f;
  return c.ok && o.ok && gpu::decodeQsgd(c.ptr, n, unit, o.ptr, nullptr) && launched() && o.copyTo(out);
}

bool cudaTopk(const float* x, size_t n, size_t k, uint32_t* indices, float* values) {
  if (cudaDeviceCount() == 0) return false;
  if (k > n) k = n;
  if (k == 0) return true;
  Device<float> d(n, x);
  Device<uint32_t> outIdx(k);
  Device<float> outVal(k);
  return d.ok && outIdx.ok && outVal.ok && gpu::topk(d.ptr, n, k, outIdx.ptr, outVal.ptr, nullptr) && launched() && outIdx.copyTo(indices) &&
         outVal.copyTo(values);
}

bool cudaGather(const float* x, size_t n, const uint32_t* indices, size_t k, float* values) {
  if (cudaDeviceCount() == 0) return false;
  for (size_t i = 0; i < k; ++i)
    if (indices[i] >= n) return false;
  Device<float> d(n, x), v(k);
  Device<uint32_t> idx(k, indices);
  return d.ok && v.ok && idx.ok && gpu::gather(d.ptr, idx.ptr, k, v.ptr, nullptr) && launched() && v.copyTo(values);
}

bool cudaErrorFeedback(const float* corrected, const float* sent, float* residual, size_t n) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> a(n, corrected), b(n, sent), o(n);
  return a.ok && b.ok && o.ok && gpu::errorFeedback(a.ptr, b.ptr, o.ptr, n, nullptr) && launched() && o.copyTo(residual);
}

bool cudaPowerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> dm(rows * cols, m), dq(r * cols, qt), dp(r * rows);
  return dm.ok && dq.ok && dp.ok && gpu::powerP(dm.ptr, rows, cols, dq.ptr, r, dp.ptr, nullptr) && launched() && dp.copyTo(pt);
}

bool cudaPowerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt) {
  if (cudaDeviceCount() == 0) return false;
  Device<float> dm(rows * cols, m), dp(r * rows, pt), dq(r * cols);
  return dm.ok && dp.ok && dq.ok && gpu::powerQ(dm.ptr, rows, cols, dp.ptr, r, dq.ptr, nullptr) && launched() && dq.copyTo(qt);
}

}  // namespace braid
