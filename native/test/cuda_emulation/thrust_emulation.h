// The few Thrust pieces Braid's CUDA sources use, over the CUDA emulation (cuda_runtime.h here):
// device_vector (zero-filled device memory), raw_pointer_cast, and exclusive_scan on a stream,
// which returns when the scan is done, as thrust::cuda::par's algorithms do. par(allocator) takes
// the scan's temporary storage from the caller's allocator, as Thrust's does; the emulated scan
// asks it for about what CUB's would (a few bytes per tile) and uses it, so storage that is not
// device memory, or too small, is reported.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <new>
#include <numeric>

namespace thrust {

template <class T>
class device_ptr {
 public:
  explicit device_ptr(T* p) : p_(p) {}
  T* get() const { return p_; }

 private:
  T* p_;
};

template <class T>
T* raw_pointer_cast(device_ptr<T> p) {
  return p.get();
}
template <class T>
T* raw_pointer_cast(T* p) {
  return p;
}

template <class T>
class device_vector {
 public:
  explicit device_vector(size_t n) : n_(n) {
    if (n == 0) return;
    if (cudaMalloc(&data_, n * sizeof(T)) != cudaSuccess) throw std::bad_alloc();
    cudaMemsetAsync(data_, 0, n * sizeof(T));
    cudaDeviceSynchronize();
  }
  ~device_vector() { cudaFree(data_); }
  device_vector(const device_vector&) = delete;
  device_vector& operator=(const device_vector&) = delete;
  device_ptr<T> data() { return device_ptr<T>(data_); }
  T* begin() { return data_; }
  T* end() { return data_ + n_; }
  size_t size() const { return n_; }

 private:
  T* data_ = nullptr;
  size_t n_ = 0;
};

namespace cuda {
struct Policy {
  cudaStream_t stream = nullptr;
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
}  // namespace cuda

template <class T, class U>
U* exclusive_scan(const cuda::Policy& policy, T* first, T* last, U* out) {
  namespace e = braid_cuda_emulation;
  const size_t n = static_cast<size_t>(last - first);
  if (n == 0) return out;
  if (!e::isDevice(first, n * sizeof(T)) || !e::isDevice(out, n * sizeof(U))) {
    e::fail(cudaErrorIllegalAddress, "thrust::exclusive_scan: its ranges are not device memory");
    throw std::bad_alloc();
  }
  char* temp = nullptr;
  const size_t tempBytes = 256 + 16 * (n / 2048 + 1);  // CUB's scan: a tile state per 2048 items, and a little
  if (policy.allocate) {
    temp = policy.allocate(static_cast<std::ptrdiff_t>(tempBytes));
    if (temp == nullptr || !e::isDevice(temp, tempBytes)) {
      e::fail(cudaErrorIllegalAddress, "thrust::exclusive_scan: the allocator's temporary storage is not " + std::to_string(tempBytes) + " bytes of device memory");
      throw std::bad_alloc();
    }
  }
  e::enqueue([=] {
    if (temp != nullptr) std::memset(temp, 0, tempBytes);
    std::exclusive_scan(first, last, out, T(0));
  });
  const bool done = cudaStreamSynchronize(policy.stream) == cudaSuccess;
  if (temp != nullptr) policy.deallocate(temp, tempBytes);
  if (!done) throw std::bad_alloc();
  return out + n;
}

}  // namespace thrust
