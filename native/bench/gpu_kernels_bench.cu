// The GPU kernels' speed on device memory (issue 14's targets), for scripts/gpu-check.sh: a
// device-to-device copy's bandwidth beside the float16 / bfloat16 casts' (bytes read and written
// per second), and top-k 1% of 16M-256M floats in elements per second, with CUDA events, medians
// of 9 runs after a warm-up. PyTorch's peer figures come from benchmarks/gpu_peers.py in the same
// check. One JSON line; without a GPU it says so and exits 0.
//   braid_gpu_kernels_bench [--max-floats 268435456]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/compress_cuda.h"
#include "kernels/cuda/cuda_info.h"

using namespace braid;

namespace {

// Median milliseconds of `run` (9 timed after one warm-up); negative when a call fails.
double medianMs(const std::function<bool()>& run) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  if (!run() || cudaDeviceSynchronize() != cudaSuccess) return -1;
  std::vector<double> ms;
  for (int i = 0; i < 9; ++i) {
    cudaEventRecord(start);
    if (!run()) return -1;
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

__global__ void fillKernel(float* x, size_t n) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(blockDim.x) * gridDim.x) {
    // A spread of magnitudes and signs, different in every element (no ties to speak of).
    const uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
    x[i] = (static_cast<float>(h >> 8) / 16777216.0f - 0.5f) * 8.0f;
  }
}

}  // namespace

int main(int argc, char** argv) {
  size_t maxFloats = size_t{1} << 28;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--max-floats") == 0) maxFloats = std::strtoull(argv[i + 1], nullptr, 10);
  if (cudaDeviceCount() == 0) {
    std::printf("{\"gpu\":false,\"why\":\"no CUDA GPU visible\"}\n");
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::string out = std::string("{\"gpu\":\"") + prop.name + "\"";
  // Casts at 64M floats: bandwidth as bytes read + written per second.
  const size_t n = std::min<size_t>(size_t{1} << 26, maxFloats);
  float *x = nullptr, *y = nullptr;
  uint16_t* h = nullptr;
  if (cudaMalloc(&x, n * 4) != cudaSuccess || cudaMalloc(&y, n * 4) != cudaSuccess || cudaMalloc(&h, n * 2) != cudaSuccess) {
    std::printf("{\"gpu\":\"%s\",\"error\":\"cudaMalloc failed\"}\n", prop.name);
    return 1;
  }
  fillKernel<<<1024, 256>>>(x, n);
  const double copyMs = medianMs([&] { return cudaMemcpyAsync(y, x, n * 4, cudaMemcpyDeviceToDevice) == cudaSuccess; });
  const double f16Ms = medianMs([&] { return gpu::encodeHalf(x, h, n, false, nullptr); });
  const double bf16Ms = medianMs([&] { return gpu::encodeHalf(x, h, n, true, nullptr); });
  const double f16BackMs = medianMs([&] { return gpu::decodeHalf(h, y, n, false, nullptr); });
  auto gbps = [](double bytes, double ms) { return ms > 0 ? bytes / (ms * 1e6) : -1; };
  char buf[512];
  std::snprintf(buf, sizeof buf,
                ",\"castFloats\":%zu,\"copyGBps\":%.1f,\"fp16GBps\":%.1f,\"bf16GBps\":%.1f,\"fp16DecodeGBps\":%.1f,\"fp16VsCopy\":%.3f,\"bf16VsCopy\":%.3f",
                n, gbps(8.0 * n, copyMs), gbps(6.0 * n, f16Ms), gbps(6.0 * n, bf16Ms), gbps(6.0 * n, f16BackMs),
                gbps(6.0 * n, f16Ms) / gbps(8.0 * n, copyMs), gbps(6.0 * n, bf16Ms) / gbps(8.0 * n, copyMs));
  out += buf;
  cudaFree(x);
  cudaFree(y);
  cudaFree(h);
  // Top-k 1%: elements per second, at 16M, 64M and 256M floats (as far as --max-floats allows).
  out += ",\"topk\":[";
  bool first = true;
  for (size_t m = size_t{1} << 24; m <= maxFloats; m <<= 2) {
    float* v = nullptr;
    float* values = nullptr;
    uint32_t* indices = nullptr;
    const size_t k = m / 100;
    void* workspace = nullptr;  // kept across calls, as the device steps' scratch cache keeps it
    if (cudaMalloc(&v, m * 4) != cudaSuccess || cudaMalloc(&values, k * 4) != cudaSuccess || cudaMalloc(&indices, k * 4) != cudaSuccess ||
        cudaMalloc(&workspace, gpu::topkWorkspaceBytes(m)) != cudaSuccess)
      break;
    fillKernel<<<1024, 256>>>(v, m);
    const double ms = medianMs([&] { return gpu::topk(v, m, k, indices, values, nullptr, workspace); });
    std::snprintf(buf, sizeof buf, "%s{\"floats\":%zu,\"k\":%zu,\"ms\":%.3f,\"elementsPerS\":%.3e}", first ? "" : ",", m, k, ms, ms > 0 ? m / (ms * 1e-3) : -1.0);
    out += buf;
    first = false;
    cudaFree(v);
    cudaFree(values);
    cudaFree(indices);
    cudaFree(workspace);
  }
  out += "]}";
  std::printf("%s\n", out.c_str());
  return 0;
}
