// The CUDA emulation's own promises (cuda_runtime.h here), so that a kernel test passing under it
// means something: block-wide __syncthreads, device work deferred to a synchronization point, and
// each misuse it exists to catch failing (each in a child process: an illegal address ends the
// emulated context for good, and some end the process).
#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "check.h"

using braid_test::runCase;

namespace {

constexpr unsigned kThreads = 256;

// Each block sums its 256 values with a tree in shared memory.
__global__ void blockSums(const uint32_t* in, uint32_t* out) {
  __shared__ uint32_t lane[kThreads];
  lane[threadIdx.x] = in[blockIdx.x * kThreads + threadIdx.x];
  __syncthreads();
  for (unsigned half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) lane[threadIdx.x] += lane[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = lane[0];
}

__global__ void fill(uint32_t* out, size_t n, uint32_t value) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(blockDim.x) * gridDim.x) out[i] = value;
}

__global__ void readPast(const uint32_t* in, size_t n, uint32_t* out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = in[n];
}

struct Ended {
  int code;            // the exit code, or 128 + the signal that stopped it
  std::string stderrText;
};

// Runs `scenario` in a child process and says how it ended and what it wrote to stderr.
Ended inChild(const std::function<int()>& scenario) {
  std::fflush(stdout);
  std::fflush(stderr);
  int pipeEnds[2];
  if (pipe(pipeEnds) != 0) return {-1, "pipe failed"};
  const pid_t pid = fork();
  if (pid == 0) {
    close(pipeEnds[0]);
    dup2(pipeEnds[1], 2);
    const int code = scenario();
    std::fflush(stderr);
    _exit(code);
  }
  close(pipeEnds[1]);
  std::string text;
  char chunk[4096];
  for (ssize_t got; (got = read(pipeEnds[0], chunk, sizeof chunk)) > 0;) text.append(chunk, static_cast<size_t>(got));
  close(pipeEnds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), text};
}

bool says(const Ended& e, const char* words) { return e.stderrText.find(words) != std::string::npos; }

}  // namespace

int main() {
  runCase("__syncthreads: four blocks each sum their 256 values with a shared-memory tree", [] {
    std::vector<uint32_t> host(4 * kThreads);
    for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<uint32_t>(i * 7 + 1);
    uint32_t *in = nullptr, *out = nullptr;
    CHECK(cudaMalloc(&in, host.size() * 4) == cudaSuccess && cudaMalloc(&out, 16) == cudaSuccess);
    CHECK(cudaMemcpy(in, host.data(), host.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
    blockSums<<<4, kThreads>>>(in, out);
    uint32_t sums[4];
    CHECK(cudaGetLastError() == cudaSuccess && cudaMemcpy(sums, out, 16, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (uint32_t b = 0; b < 4; ++b) {
      uint32_t want = 0;
      for (uint32_t t = 0; t < kThreads; ++t) want += host[b * kThreads + t];
      CHECK(sums[b] == want);
    }
    cudaFree(in);
    cudaFree(out);
  });

  runCase("device work waits for a synchronization point: pinned memory is stale until then", [] {
    uint32_t* device = nullptr;
    uint32_t* pinned = nullptr;
    CHECK(cudaMalloc(&device, 4000) == cudaSuccess && cudaHostAlloc(&pinned, 4000, cudaHostAllocDefault) == cudaSuccess);
    for (int i = 0; i < 1000; ++i) pinned[i] = 0;
    cudaStream_t stream = nullptr;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    fill<<<2, 128, 0, stream>>>(device, 1000, 42);
    CHECK(cudaMemcpyAsync(pinned, device, 4000, cudaMemcpyDeviceToHost, stream) == cudaSuccess);
    CHECK(pinned[999] == 0);
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(pinned[0] == 42 && pinned[999] == 42);
    cudaStreamDestroy(stream);
    cudaFreeHost(pinned);
    cudaFree(device);
  });

  runCase("a host pointer handed to a kernel is an illegal address, and stays one", [] {
    const Ended e = inChild([] {
      std::vector<uint32_t> host(100);
      fill<<<1, 32>>>(host.data(), host.size(), 1);
      if (cudaGetLastError() != cudaErrorIllegalAddress) return 1;
      uint32_t* device = nullptr;
      if (cudaMalloc(&device, 4) != cudaErrorIllegalAddress) return 2;  // the context is lost
      return host[0] == 0 ? 0 : 3;                                      // and nothing ran
    });
    CHECK(e.code == 0);
    CHECK(says(e, "kernel fill: argument 1 is") && says(e, "not device memory"));
  });

  runCase("copies and memsets outside an allocation, or against their direction, are refused", [] {
    const Ended pastEnd = inChild([] {
      uint32_t* device = nullptr;
      std::vector<uint32_t> host(64);
      if (cudaMalloc(&device, 100) != cudaSuccess) return 1;
      return cudaMemcpy(device, host.data(), 104, cudaMemcpyHostToDevice) == cudaErrorIllegalAddress ? 0 : 2;
    });
    CHECK(pastEnd.code == 0 && says(pastEnd, "cudaMemcpy: the destination") && says(pastEnd, "not inside one device allocation (it runs past one)"));
    const Ended backwards = inChild([] {
      uint32_t* device = nullptr;
      std::vector<uint32_t> host(64);
      if (cudaMalloc(&device, 256) != cudaSuccess) return 1;
      return cudaMemcpy(host.data(), device, 256, cudaMemcpyHostToDevice) == cudaErrorIllegalAddress ? 0 : 2;
    });
    CHECK(backwards.code == 0 && says(backwards, "the destination") && says(backwards, "is host memory, but the copy says device"));
    const Ended memset = inChild([] {
      uint32_t* device = nullptr;
      if (cudaMalloc(&device, 256) != cudaSuccess) return 1;
      return cudaMemsetAsync(device + 1, 0, 256) == cudaErrorIllegalAddress ? 0 : 2;
    });
    CHECK(memset.code == 0 && says(memset, "cudaMemsetAsync"));
  });

  runCase("host code reading device memory stops the process", [] {
    const Ended e = inChild([] {
      uint32_t* device = nullptr;
      if (cudaMalloc(&device, 64) != cudaSuccess) return 1;
      fill<<<1, 16>>>(device, 16, 5);
      cudaDeviceSynchronize();
      return device[3] == 5 ? 2 : 3;
    });
    CHECK(e.code > 3);
  });

  runCase("a kernel reading past its allocation's end stops the process", [] {
    const Ended e = inChild([] {
      uint32_t *in = nullptr, *out = nullptr;
      // A whole page: the next byte is the guard page in every build.
      if (cudaMalloc(&in, 4096) != cudaSuccess || cudaMalloc(&out, 4) != cudaSuccess) return 1;
      readPast<<<1, 1>>>(in, 1024, out);
      cudaDeviceSynchronize();
      return 0;
    });
    CHECK(e.code > 1);
  });

  return braid_test::finish("cuda emulation");
}
