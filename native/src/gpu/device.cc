#include "gpu/device.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "gpu/nccl_comm.h"
#include "kernels/cuda/cuda_info.h"

namespace braid {

namespace {

std::mutex gDeviceMutex;
DeviceState* gDevice = nullptr;  // set once, never freed (the engine thread reads it)
std::atomic<size_t> gAllocations{0};

// Released scratch by exact size; never freed (the process's device lives as long as it does).
struct ScratchCache {
  std::mutex mutex;
  std::unordered_multimap<size_t, void*> blocks;
  size_t bytes = 0;
};
ScratchCache& scratchCache() {
  static ScratchCache* cache = new ScratchCache();  // not destroyed at exit: the engine thread may still release
  return *cache;
}

bool hostStandIn() {
  const char* v = std::getenv("BRAID_DEVICE");
  return v != nullptr && std::strcmp(v, "host") == 0;
}

DeviceState choose(int localRank, int requested) {
  DeviceState s;
  if (hostStandIn()) {
    s.kind = DeviceKind::kHost;
    s.index = requested >= 0 ? requested : localRank;
    s.count = 0;
    return s;
  }
  if (!cudaCompiled()) {
    s.error = "this build of @braid/native has no CUDA (nvcc was not found when it was built); rebuild it on a machine with the CUDA "
              "toolkit, or set BRAID_DEVICE=host to run the device API on host memory";
    return s;
  }
  s.count = cudaDeviceCount();
  if (s.count == 0) {
    s.error = "no CUDA GPU is visible to this process (no driver, no GPU, or CUDA_VISIBLE_DEVICES hides them); set BRAID_DEVICE=host "
              "to run the device API on host memory";
    return s;
  }
  const int index = requested >= 0 ? requested : localRank;
  if (index >= s.count) {
    s.error = requested >= 0 ? "init({ device: " + std::to_string(requested) + " }) names a GPU this process cannot see (" +
                                   std::to_string(s.count) + " visible)"
                             : "this rank is local rank " + std::to_string(localRank) + " on its host, but only " + std::to_string(s.count) +
                                   " GPU" + (s.count == 1 ? " is" : "s are") +
                                   " visible: NCCL takes one rank a GPU, so run at most that many ranks a host (or pick one with init({ device }))";
    return s;
  }
  std::string error;
  if (!gpuSelect(index, error)) {
    s.error = "GPU " + std::to_string(index) + " could not be selected: " + error;
    return s;
  }
  s.kind = DeviceKind::kCuda;
  s.index = index;
  return s;
}

}  // namespace

const DeviceState& openDevice(int localRank, int requested) {
  std::lock_guard<std::mutex> lock(gDeviceMutex);
  if (gDevice == nullptr) gDevice = new DeviceState(choose(localRank, requested));
  return *gDevice;
}

const DeviceState* openedDevice() {
  std::lock_guard<std::mutex> lock(gDeviceMutex);
  return gDevice;
}

void* deviceAlloc(size_t bytes, std::string& error) {
  const DeviceState* d = openedDevice();
  if (d == nullptr || d->kind == DeviceKind::kNone) {
    error = d == nullptr ? "the device is not open" : d->error;
    return nullptr;
  }
  ++gAllocations;
  if (d->kind == DeviceKind::kHost) {
    // 256-byte aligned, as cudaMalloc's are.
    void* p = std::aligned_alloc(256, ((bytes > 0 ? bytes : 1) + 255) / 256 * 256);
    if (p == nullptr) error = "out of host memory for " + std::to_string(bytes) + " bytes";
    return p;
  }
  return gpuAlloc(bytes, error);
}

size_t deviceAllocations() { return gAllocations.load(); }

void* deviceScratch(size_t bytes, std::string& error) {
  ScratchCache& cache = scratchCache();
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    auto it = cache.blocks.find(bytes);
    if (it != cache.blocks.end()) {
      void* p = it->second;
      cache.blocks.erase(it);
      cache.bytes -= bytes;
      return p;
    }
  }
  return deviceAlloc(bytes, error);
}

void releaseScratch(void* pointer, size_t bytes) {
  if (pointer == nullptr) return;
  ScratchCache& cache = scratchCache();
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    if (cache.bytes + bytes <= kScratchCacheBytes) {
      cache.blocks.emplace(bytes, pointer);
      cache.bytes += bytes;
      return;
    }
  }
  deviceFree(pointer);
}

void deviceFree(void* pointer) {
  const DeviceState* d = openedDevice();
  if (pointer == nullptr || d == nullptr) return;
  if (d->kind == DeviceKind::kHost) {
    std::free(pointer);
  } else {
    gpuFree(pointer);
  }
}

bool deviceCopy(void* device, void* host, size_t bytes, bool toDevice, std::string& error) {
  const DeviceState* d = openedDevice();
  if (d != nullptr && d->kind == DeviceKind::kHost) {
    if (bytes > 0) std::memcpy(toDevice ? device : host, toDevice ? host : device, bytes);
    return true;
  }
  return toDevice ? gpuUpload(device, host, bytes, error) : gpuDownload(host, device, bytes, error);
}

bool deviceBindThread(std::string& error) {
  const DeviceState* d = openedDevice();
  if (d == nullptr || d->kind == DeviceKind::kNone) {
    error = d == nullptr ? "the device is not open" : d->error;
    return false;
  }
  return d->kind == DeviceKind::kHost || gpuSelect(d->index, error);
}

}  // namespace braid
