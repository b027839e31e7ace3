// The few Thrust pieces Braid's CUDA sources use, over the CUDA emulation (cuda_runtime.h here):
// device_vector (zero-filled device memory), raw_pointer_cast, and exclusive_scan on a stream,
// which returns when the scan is done, as thrust::cuda::par's algorithms do.
#pragma once
#include <cuda_runtime.h>

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
  Policy on(cudaStream_t s) const { return Policy{s}; }
};
inline constexpr Policy par{};
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
  e::enqueue([=] { std::exclusive_scan(first, last, out, T(0)); });
  if (cudaStreamSynchronize(policy.stream) != cudaSuccess) throw std::bad_alloc();
  return out + n;
}

}  // namespace thrust
