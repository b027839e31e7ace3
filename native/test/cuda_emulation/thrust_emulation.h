// The one Thrust algorithm Braid's CUDA sources use, over the CUDA emulation (cuda_runtime.h
// here): transform_exclusive_scan on a stream. Under thrust::cuda::par it returns when the scan is
// done, as Thrust's does; under par_nosync it only queues it, so a caller that reads the result
// without synchronizing reads it unwritten, as on a GPU. par(allocator) takes the scan's temporary
// storage from the caller's allocator, as Thrust's does; the emulated scan asks it for about what
// CUB's would (a few bytes per tile) and uses it, so storage that is not device memory, or too
// small, is reported.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <new>
#include <string>

namespace thrust {

namespace cuda {
struct Policy {
  cudaStream_t stream = nullptr;
  bool synchronize = true;  // false: par_nosync
  std::function<char*(std::ptrdiff_t)> allocate;  // empty: the scan's storage is its own
  std::function<void(char*, size_t)> deallocate;
  Policy on(cudaStream_t s) const {
    Policy p = *this;
    p.stream = s;
    return p;
  }
  template <class Allocator>
  Policy operator()(Allocator& allocator) const {
    Policy p = *this;
    p.allocate = [&allocator](std::ptrdiff_t bytes) { return allocator.allocate(bytes); };
    p.deallocate = [&allocator](char* at, size_t bytes) { allocator.deallocate(at, bytes); };
    return p;
  }
};
inline const Policy par{};
inline const Policy par_nosync{nullptr, false};
}  // namespace cuda

// Queues out[i] = init + transform(first[0]) + ... + transform(first[i-1]) (in `add`) on the
// policy's stream, with temporary storage from its allocator as CUB's would ask.
template <class T, class U, class Transform, class Init, class Add>
U* transform_exclusive_scan(const cuda::Policy& policy, const T* first, const T* last, U* out, Transform transform, Init init, Add add) {
  namespace e = braid_cuda_emulation;
  const size_t n = static_cast<size_t>(last - first);
  if (n == 0) return out;
  if (!e::isDevice(first, n * sizeof(T)) || !e::isDevice(out, n * sizeof(U))) {
    e::fail(cudaErrorIllegalAddress, "thrust::transform_exclusive_scan: its ranges are not device memory");
    throw std::bad_alloc();
  }
  char* temp = nullptr;
  const size_t tempBytes = 256 + 16 * (n / 2048 + 1);  // CUB's scan: a tile state per 2048 items, and a little
  if (policy.allocate) {
    temp = policy.allocate(static_cast<std::ptrdiff_t>(tempBytes));
    if (temp == nullptr || !e::isDevice(temp, tempBytes)) {
      e::fail(cudaErrorIllegalAddress, std::string("thrust::transform_exclusive_scan: the allocator's temporary storage is not ") + std::to_string(tempBytes) + " bytes of device memory");
      throw std::bad_alloc();
    }
  }
  e::enqueue([=] {
    if (temp != nullptr) std::memset(temp, 0, tempBytes);
    U sum = static_cast<U>(init);
    for (size_t i = 0; i < n; ++i) {
      const U value = static_cast<U>(transform(first[i]));  // before writing: the scan may run in place
      out[i] = sum;
      sum = add(sum, value);
    }
  });
  // Thrust hands its temporary storage back once the scan is queued (stream-ordered reuse).
  const bool done = !policy.synchronize || cudaStreamSynchronize(policy.stream) == cudaSuccess;
  if (temp != nullptr) policy.deallocate(temp, tempBytes);
  if (!done) throw std::bad_alloc();
  return out + n;
}

}  // namespace thrust
