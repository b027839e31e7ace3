// Where DeviceBuffers live (@braid/collectives' comm.device): the GPU this rank uses, through the
// CUDA runtime (nccl_comm.cu's gpu* calls), or, with BRAID_DEVICE=host, host memory standing in
// for it: the same API, checks and lifetimes on a machine without a GPU, with the collectives run
// by the host algorithms instead of NCCL (for tests and development).
#pragma once
#include <cstddef>
#include <string>

namespace braid {

enum class DeviceKind { kNone, kCuda, kHost };

struct DeviceState {
  DeviceKind kind = DeviceKind::kNone;
  int index = -1;     // the GPU's ordinal among the visible ones (CUDA_VISIBLE_DEVICES applies)
  int count = 0;      // GPUs visible to this process
  std::string error;  // why there is none (kind kNone)
};

// Opens this process's device the first time (later calls return the same state, whatever they
// pass): `requested` >= 0 names the GPU, else this rank's local rank picks it among the visible
// ones, one rank a GPU; a local rank beyond them is refused, naming both counts.
const DeviceState& openDevice(int localRank, int requested);
// The state once opened; null before.
const DeviceState* openedDevice();

void* deviceAlloc(size_t bytes, std::string& error);
void deviceFree(void* pointer);
// Scratch for the device steps (device_compress), kept for reuse instead of freed: cudaFree waits
// for the whole GPU, an NCCL op on another buffer in flight included, so a step that freed its
// scratch stalled behind it. A released block goes back to a cache (up to kScratchCacheBytes)
// and is handed out again for a request of exactly its size: a training loop asks for the same
// sizes every step, and an exact size keeps the CUDA emulation's guard page right after what was
// asked for. Safe because every device step runs on the legacy default stream: a block handed
// out again is used by work queued after the work that used it before.
void* deviceScratch(size_t bytes, std::string& error);
void releaseScratch(void* pointer, size_t bytes);
constexpr size_t kScratchCacheBytes = size_t{256} << 20;
// How many blocks deviceAlloc has made so far (deviceScratch's misses included), for tests.
size_t deviceAllocations();
// Host to device (toDevice) or back, synchronously.
bool deviceCopy(void* device, void* host, size_t bytes, bool toDevice, std::string& error);
// Makes the opened GPU the calling thread's (CUDA's current device is per thread).
bool deviceBindThread(std::string& error);

}  // namespace braid
