// CUDA reductions. The first kernel is the float32 sum; the CPU kernels (kernels/reduce_impl.h)
// are its reference, and the GPU-side test compares the two bit for bit.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_info.h"

namespace braid {

namespace {
__global__ void sumFloat32Kernel(float* out, const float* a, const float* b, size_t n) {
  size_t stride = static_cast<size_t>(blockDim.x) * gridDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = __fadd_rn(a[i], b[i]);  // no contraction into FMA: the same bits as the CPU
  }
}
}  // namespace

bool cudaCompiled() { return true; }

int cudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

bool cudaSumFloat32(float* out, const float* a, const float* b, size_t n) {
  if (cudaDeviceCount() == 0) return false;
  if (n == 0) return true;
  float *da = nullptr, *db = nullptr;
  const size_t bytes = n * sizeof(float);
  bool ok = cudaMalloc(&da, bytes) == cudaSuccess && cudaMalloc(&db, bytes) == cudaSuccess &&
            cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice) == cudaSuccess &&
            cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice) == cudaSuccess;
  if (ok) {
    int blocks = static_cast<int>(std::min<size_t>((n + 255) / 256, 65535));
    sumFloat32Kernel<<<blocks, 256>>>(da, da, db, n);
    ok = cudaGetLastError() == cudaSuccess && cudaMemcpy(out, da, bytes, cudaMemcpyDeviceToHost) == cudaSuccess;
  }
  cudaFree(da);
  cudaFree(db);
  return ok;
}

}  // namespace braid
