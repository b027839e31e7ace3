// CUDA on the CPU, for testing Braid's CUDA sources where there is no GPU (CI here). The .cu files
// are compiled as C++ against this header (launches rewritten by launches.cmake); each kernel runs
// with CUDA's thread model: a block's threads as fibers meeting at __syncthreads, or one after
// another for kernels that never call it. What a CPU run would otherwise hide, this makes fail:
//   - device memory is mapped inaccessible except while device work runs, with a guard page after
//     each allocation: host code reading device memory, or a kernel running past an allocation's
//     end, stops with SIGSEGV (under ASan, which also poisons the alignment padding after the
//     data, a byte past the end is reported where it is read);
//   - device work is queued and runs only at a synchronization point (cudaStreamSynchronize,
//     cudaDeviceSynchronize, a query, a synchronous copy, cudaFree), so a host read that forgets to
//     synchronize sees stale memory; work that waits on other processes (nccl_emulation.h's
//     collectives) keeps a query answering cudaErrorNotReady until they come;
//   - a kernel argument, cudaMemcpy or cudaMemset range that is not where its direction says (a host
//     pointer handed to a kernel, a copy past an allocation) is reported by name and becomes a sticky
//     cudaErrorIllegalAddress, as a real launch would end.
// Not modelled: warps (no shuffles or warp-synchronous code may rely on lockstep), races between
// blocks (blocks run one after another), ordering between streams (work runs in issue order,
// a legal schedule for any correctly synchronized program), and a second host thread touching
// device memory while the first runs device work (the trap is off for that while).
#pragma once
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <math.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define BRAID_EMULATION_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define BRAID_EMULATION_POISON_OFF(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define BRAID_EMULATION_POISON(p, n) ((void)(p), (void)(n))
#define BRAID_EMULATION_POISON_OFF(p, n) ((void)(p), (void)(n))
#endif

#define __global__
#define __host__
#define __device__
#define __forceinline__ inline __attribute__((always_inline))
// One block runs at a time, so a function-static array is exactly a block's shared memory.
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
// The vector types kernels load and store whole, with CUDA's alignment.
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
};
enum cudaMemcpyKind { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4 };
struct braid_emulated_stream {
  unsigned flags;
};
struct braid_emulated_event {
  unsigned flags;
};
using cudaStream_t = braid_emulated_stream*;
using cudaEvent_t = braid_emulated_event*;
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDisableTiming = 2;
constexpr unsigned cudaHostAllocDefault = 0;

namespace braid_cuda_emulation {

struct Allocation {
  uintptr_t begin = 0;
  size_t bytes = 0;
  void* mapping = nullptr;  // device memory: pages then one guard page
  size_t dataPages = 0;     // bytes of the mapping before the guard page
  bool device = false;      // else pinned host memory
};

// Queued device work: true when done; false while it waits for something outside (a peer).
using Work = std::function<bool()>;

struct State {
  std::recursive_mutex mutex;
  std::map<uintptr_t, Allocation> allocations;
  std::deque<Work> queue;
  cudaError_t sticky = cudaSuccess;  // an illegal address ends the "context", as on a GPU
  cudaError_t last = cudaSuccess;
  bool deviceAccess = false;
  size_t mallocs = 0;  // cudaMalloc calls that made memory (tests: what a step allocates)
};

inline State& state() {
  static State s;
  return s;
}

// How many device allocations cudaMalloc has made: a test can tell that a repeated step allocates nothing.
inline size_t mallocCount() {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  return state().mallocs;
}

inline size_t pageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

inline cudaError_t fail(cudaError_t error, const std::string& why) {
  State& s = state();
  std::fprintf(stderr, "cuda emulation: %s\n", why.c_str());
  if (error == cudaErrorIllegalAddress) s.sticky = error;
  s.last = error;
  return error;
}

inline cudaError_t result(cudaError_t error) {
  State& s = state();
  if (error != cudaSuccess) s.last = error;
  return s.sticky != cudaSuccess ? s.sticky : error;
}

// The allocation holding [p, p + bytes), or null.
inline const Allocation* holding(const void* p, size_t bytes) {
  State& s = state();
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  auto it = s.allocations.upper_bound(at);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  return at >= a.begin && at + bytes <= a.begin + a.bytes ? &a : nullptr;
}

inline bool overlapsDevice(const void* p, size_t bytes) {
  State& s = state();
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  for (const auto& [begin, a] : s.allocations)
    if (a.device && at < a.begin + a.bytes && begin < at + bytes) return true;
  return false;
}

inline std::string where(const void* p, size_t bytes) {
  char text[96];
  std::snprintf(text, sizeof text, "%p (%zu bytes)", p, bytes);
  return text;
}

// True when [p, p + bytes) lies in one device allocation.
inline bool isDevice(const void* p, size_t bytes) {
  const Allocation* a = holding(p, bytes);
  return a != nullptr && a->device;
}

inline void setDeviceAccess(bool on) {
  State& s = state();
  if (s.deviceAccess == on) return;
  s.deviceAccess = on;
  for (auto& [begin, a] : s.allocations)
    if (a.device) mprotect(a.mapping, a.dataPages, on ? PROT_READ | PROT_WRITE : PROT_NONE);
}

// A fault in device memory or a guard page: say which, then let the previous handler (ASan's, or
// the default) report it as usual.
inline struct sigaction previousSegv;
inline void onSegv(int, siginfo_t* info, void*) {
  State& s = state();
  const uintptr_t at = reinterpret_cast<uintptr_t>(info->si_addr);
  for (const auto& [begin, a] : s.allocations) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(a.mapping);
    if (!a.device || at < start || at >= start + a.dataPages + pageSize()) continue;
    char text[200];
    const int n = at >= start + a.dataPages
                      ? std::snprintf(text, sizeof text, "\ncuda emulation: a read or write %zu bytes past the end of a %zu-byte device allocation\n",
                                      static_cast<size_t>(at - a.begin - a.bytes), a.bytes)
                      : std::snprintf(text, sizeof text, "\ncuda emulation: host code touched device memory (byte %zu of a %zu-byte allocation) outside device work\n",
                                      static_cast<size_t>(at - a.begin), a.bytes);
    std::fflush(stdout);
    if (n > 0) (void)!write(2, text, static_cast<size_t>(n));
    break;
  }
  sigaction(SIGSEGV, &previousSegv, nullptr);  // the access faults again, into the previous handler
}

inline void watchFaults() {
  static const bool installed = [] {
    struct sigaction action {};
    action.sa_sigaction = onSegv;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSEGV, &action, &previousSegv) == 0;
  }();
  (void)installed;
}

// Runs the queued device work in issue order; with `wait`, until all of it is done (as a
// synchronization waits), else as far as it can go now. True when nothing is left.
inline bool drain(bool wait) {
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  while (!s.queue.empty()) {
    setDeviceAccess(true);
    const bool done = s.sticky != cudaSuccess || s.queue.front()();  // a failed context runs nothing more
    if (done) {
      s.queue.pop_front();
      continue;
    }
    if (!wait) break;
    setDeviceAccess(false);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  setDeviceAccess(false);
  return s.queue.empty();
}

inline void flush() { drain(true); }

inline void enqueue(std::function<void()> run) {
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  s.queue.push_back([run = std::move(run)] {
    run();
    return true;
  });
}

// Work that may have to wait for something outside the process (an emulated NCCL peer).
inline void enqueueWaiting(Work run) {
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  s.queue.push_back(std::move(run));
}

// Device work touching memory outside the device, run now (host code may read it next).
inline void deviceNow(const std::function<void()>& run) {
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  flush();
  setDeviceAccess(true);
  run();
  setDeviceAccess(false);
}

// --- kernels ------------------------------------------------------------------------------------

// A block whose kernel calls __syncthreads runs as fibers on one thread: each fiber runs until its
// next __syncthreads (or its end), round after round, so no thread passes a barrier before every
// live thread of its block has reached it. A switch saves the callee-saved registers and swaps
// stacks (glibc's swapcontext also makes a system call for the signal mask each time: a 256-thread
// tree sum switches millions of times).
#if !defined(__x86_64__)
#error "the CUDA emulation's fibers switch stacks with x86-64 code"
#endif
extern "C" void braid_emulation_switch(void** save, void* load);
asm(R"(
  .text
  .weak braid_emulation_switch
  .type braid_emulation_switch, @function
braid_emulation_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size braid_emulation_switch, .-braid_emulation_switch
)");

struct Fibers {
  static constexpr size_t kStackBytes = 256 * 1024;
  void* scheduler = nullptr;           // its saved stack pointer while a fiber runs
  std::vector<void*> saved;            // each fiber's, while it waits
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<char> finished;
  std::vector<void*> fakeStacks;  // ASan's, per fiber
  size_t current = 0;
  std::function<void()> body;
  const void* schedulerBottom = nullptr;
  size_t schedulerSize = 0;
};
inline thread_local Fibers* fibers = nullptr;
inline thread_local bool calledSyncthreads = false;

[[noreturn]] inline void fiberEntry() {
  Fibers* f = fibers;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &f->schedulerBottom, &f->schedulerSize);
#endif
  f->body();
  f->finished[f->current] = 1;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(nullptr, f->schedulerBottom, f->schedulerSize);  // this fiber ends
#endif
  void* unused = nullptr;
  braid_emulation_switch(&unused, f->scheduler);
  __builtin_unreachable();
}

// A fiber's first stack: six zeroed registers for the switch to pop, then fiberEntry as the
// address it returns to (placed so that fiberEntry starts with the stack aligned as after a call).
inline void* fiberStack(char* stack, size_t bytes) {
  // The previous block's fiber ended inside fiberEntry, whose frame ASan still has poisoned there.
  BRAID_EMULATION_POISON_OFF(stack + bytes - 16384, 16384);
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t{15};
  top -= 16;
  void** slots = reinterpret_cast<void**>(top);
  slots[0] = reinterpret_cast<void*>(&fiberEntry);
  slots[1] = nullptr;
  for (int r = 1; r <= 6; ++r) *(slots - r) = nullptr;
  return slots - 6;
}

// From a fiber back to the scheduler, until the next round resumes it.
inline void fiberYield() {
  Fibers* f = fibers;
  const size_t self = f->current;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(&f->fakeStacks[self], f->schedulerBottom, f->schedulerSize);
#endif
  braid_emulation_switch(&f->saved[self], f->scheduler);
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(f->fakeStacks[self], &f->schedulerBottom, &f->schedulerSize);
#endif
}

template <class Kernel, class Args>
void runKernel(const std::string& name, Kernel kernel, dim3 grid, dim3 block, const Args& args) {
  const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
  const size_t blocks = static_cast<size_t>(grid.x) * grid.y * grid.z;
  auto place = [&](size_t b, size_t t) {
    gridDim = grid;
    blockDim = block;
    blockIdx = uint3(static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y), static_cast<unsigned>(b / grid.x / grid.y));
    threadIdx = uint3(static_cast<unsigned>(t % block.x), static_cast<unsigned>(t / block.x % block.y), static_cast<unsigned>(t / block.x / block.y));
  };
  // Blocks [first, last) as fibers; true if any thread met a __syncthreads.
  auto cooperative = [&](size_t first, size_t last) {
    if (first >= last) return false;
    Fibers f;
    f.saved.resize(threads);
    f.finished.resize(threads);
    f.fakeStacks.resize(threads);
    for (size_t t = 0; t < threads; ++t) f.stacks.emplace_back(new char[Fibers::kStackBytes]);
    f.body = [&] { std::apply(kernel, args); };
    Fibers* outer = fibers;
    fibers = &f;
    calledSyncthreads = false;
    for (size_t b = first; b < last; ++b) {
      for (size_t t = 0; t < threads; ++t) {
        f.saved[t] = fiberStack(f.stacks[t].get(), Fibers::kStackBytes);
        f.finished[t] = 0;
      }
      for (bool live = true; live;) {
        live = false;
        for (size_t t = 0; t < threads; ++t) {
          if (f.finished[t]) continue;
          f.current = t;
          place(b, t);
#if defined(__SANITIZE_ADDRESS__)
          void* fake = nullptr;
          __sanitizer_start_switch_fiber(&fake, f.stacks[t].get(), Fibers::kStackBytes);
#endif
          braid_emulation_switch(&f.scheduler, f.saved[t]);
#if defined(__SANITIZE_ADDRESS__)
          __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
          live = live || !f.finished[t];
        }
      }
    }
    fibers = outer;
    const bool met = calledSyncthreads;
    calledSyncthreads = false;
    return met;
  };
  // The first launch's block 0 tells whether a kernel synchronizes its threads (remembered); if
  // not, its threads run one after another, plain calls.
  static std::map<const void*, bool> synchronizes;
  const void* key = reinterpret_cast<const void*>(kernel);
  auto known = synchronizes.find(key);
  size_t first = 0;
  if (known == synchronizes.end()) {
    known = synchronizes.emplace(key, cooperative(0, 1)).first;
    first = 1;
  }
  if (known->second) {
    cooperative(first, blocks);
    return;
  }
  for (size_t b = first; b < blocks; ++b) {
    for (size_t t = 0; t < threads; ++t) {
      place(b, t);
      std::apply(kernel, args);
      if (calledSyncthreads) {
        std::fprintf(stderr, "cuda emulation: kernel %s called __syncthreads in block %zu, but not in its first launch's block 0\n", name.c_str(), b);
        std::abort();
      }
    }
  }
}

template <class T>
void checkArgument(const std::string& name, size_t index, const T& value, bool& ok) {
  if constexpr (std::is_pointer_v<T>) {
    if (value == nullptr || !ok) return;
    // A pointer may sit one past its data (an empty range at the end of an allocation).
    const Allocation* a = holding(value, 0);
    if (a == nullptr || !a->device) {
      fail(cudaErrorIllegalAddress, "kernel " + name + ": argument " + std::to_string(index + 1) + " is " + where(value, 0) +
                                        ", which is not device memory (a host pointer handed to the GPU)");
      ok = false;
    }
  }
}

template <class... Params>
struct Launch {
  std::string name;
  void (*kernel)(Params...);
  dim3 grid, block;
  template <class... Args>
  void operator()(Args&&... args) const {
    State& s = state();
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    if (s.sticky != cudaSuccess) return;
    const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
    if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 ||
        grid.x > 2147483647u) {
      fail(cudaErrorInvalidConfiguration, "kernel " + name + ": invalid launch configuration");
      return;
    }
    std::tuple<Params...> values(std::forward<Args>(args)...);
    bool ok = true;
    std::apply([&](const auto&... v) {
      size_t i = 0;
      (checkArgument(name, i++, v, ok), ...);
    }, values);
    if (!ok) return;
    enqueue([name = name, kernel = kernel, grid = grid, block = block, values] { runKernel(name, kernel, grid, block, values); });
  }
};

template <class... Params>
Launch<Params...> launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t sharedBytes = 0, cudaStream_t stream = nullptr) {
  (void)sharedBytes;
  (void)stream;
  return Launch<Params...>{name, kernel, grid, block};
}

}  // namespace braid_cuda_emulation

inline void __syncthreads() {
  namespace e = braid_cuda_emulation;
  e::calledSyncthreads = true;
  if (e::fibers != nullptr) e::fiberYield();
}

// --- device functions: IEEE operations with the rounding their names say (the build passes
// -ffp-contract=off, so none of these is fused) -----------------------------------------------------
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __double2float_rn(double a) { return static_cast<float>(a); }
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// PTX cvt.rni.s32.f32: nearest even, saturating, NaN to 0.
inline int __float2int_rn(float f) {
  if (std::isnan(f)) return 0;
  const float r = std::nearbyint(f);
  if (r >= 2147483648.0f) return 2147483647;
  if (r < -2147483648.0f) return -2147483647 - 1;
  return static_cast<int>(r);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }

// --- the runtime API ------------------------------------------------------------------------------

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
  }
  return "unknown error";
}

inline cudaError_t cudaGetLastError() {
  auto& s = braid_cuda_emulation::state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  const cudaError_t e = s.sticky != cudaSuccess ? s.sticky : s.last;
  s.last = cudaSuccess;
  return e;
}

namespace braid_cuda_emulation {
// One device, or BRAID_CUDA_EMULATION_DEVICES (so that several ranks on a host each get one).
inline int deviceCount() {
  const char* v = std::getenv("BRAID_CUDA_EMULATION_DEVICES");
  const int n = v != nullptr ? std::atoi(v) : 1;
  return n > 0 ? n : 1;
}
}  // namespace braid_cuda_emulation

inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = braid_cuda_emulation::deviceCount();
  return cudaSuccess;
}

inline cudaError_t cudaSetDevice(int device) {
  namespace e = braid_cuda_emulation;
  if (device < 0 || device >= e::deviceCount())
    return e::fail(cudaErrorInvalidDevice, "cudaSetDevice(" + std::to_string(device) + "): the emulation has " + std::to_string(e::deviceCount()) + " device(s)");
  return e::result(cudaSuccess);
}

inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  namespace e = braid_cuda_emulation;
  auto& s = e::state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  *p = nullptr;
  if (s.sticky != cudaSuccess) return s.sticky;
  if (bytes == 0) return e::result(cudaSuccess);
  e::watchFaults();
  // The data ends where the guard page starts, 256-byte aligned as cudaMalloc's are.
  const size_t page = e::pageSize();
  const size_t rounded = (bytes + 255) / 256 * 256;
  const size_t dataPages = (rounded + page - 1) / page * page;
  void* mapping = mmap(nullptr, dataPages + page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) return e::fail(cudaErrorMemoryAllocation, "cudaMalloc(" + std::to_string(bytes) + "): out of memory");
  e::Allocation a;
  a.mapping = mapping;
  a.dataPages = dataPages;
  a.begin = reinterpret_cast<uintptr_t>(mapping) + dataPages - rounded;
  a.bytes = bytes;
  a.device = true;
  if (s.deviceAccess) mprotect(mapping, dataPages, PROT_READ | PROT_WRITE);
  BRAID_EMULATION_POISON(reinterpret_cast<void*>(a.begin + bytes), rounded - bytes);
  s.allocations[a.begin] = a;
  ++s.mallocs;
  *p = reinterpret_cast<void*>(a.begin);
  return e::result(cudaSuccess);
}
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}

inline cudaError_t cudaFree(void* p) {
  namespace e = braid_cuda_emulation;
  auto& s = e::state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  if (p == nullptr) return e::result(cudaSuccess);
  e::flush();  // cudaFree waits for the device
  auto it = s.allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == s.allocations.end() || !it->second.device) return e::fail(cudaErrorInvalidValue, "cudaFree(" + e::where(p, 0) + "): not a cudaMalloc pointer");
  const e::Allocation& a = it->second;
  const size_t rounded = (a.bytes + 255) / 256 * 256;
  BRAID_EMULATION_POISON_OFF(reinterpret_cast<void*>(a.begin + a.bytes), rounded - a.bytes);
  munmap(a.mapping, a.dataPages + e::pageSize());
  s.allocations.erase(it);
  return e::result(cudaSuccess);
}

inline cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) {
  namespace e = braid_cuda_emulation;
  auto& s = e::state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  *p = std::malloc(bytes > 0 ? bytes : 1);
  if (*p == nullptr) return e::fail(cudaErrorMemoryAllocation, "cudaHostAlloc: out of memory");
  e::Allocation a;
  a.begin = reinterpret_cast<uintptr_t>(*p);
  a.bytes = bytes;
  s.allocations[a.begin] = a;
  return e::result(cudaSuccess);
}
template <class T>
cudaError_t cudaHostAlloc(T** p, size_t bytes, unsigned flags) {
  return cudaHostAlloc(reinterpret_cast<void**>(p), bytes, flags);
}

inline cudaError_t cudaFreeHost(void* p) {
  namespace e = braid_cuda_emulation;
  auto& s = e::state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  e::flush();
  auto it = s.allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == s.allocations.end() || it->second.device) return e::fail(cudaErrorInvalidValue, "cudaFreeHost(" + e::where(p, 0) + "): not a cudaHostAlloc pointer");
  std::free(p);
  s.allocations.erase(it);
  return e::result(cudaSuccess);
}

namespace braid_cuda_emulation {
// Checks a copy's two ranges against its direction.
inline bool copyChecked(const char* api, void* to, const void* from, size_t bytes, cudaMemcpyKind kind) {
  const bool toDevice = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool fromDevice = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault || kind == cudaMemcpyHostToHost) {
    fail(cudaErrorInvalidValue, std::string(api) + ": only the explicit host/device directions are emulated");
    return false;
  }
  auto wrong = [&](const void* p, bool device) -> const char* {
    if (device ? isDevice(p, bytes) : !overlapsDevice(p, bytes)) return nullptr;
    if (!device) return " is device memory, but the copy says host";
    return overlapsDevice(p, bytes) ? " is not inside one device allocation (it runs past one)" : " is host memory, but the copy says device";
  };
  for (const auto& [side, p, device] : {std::tuple<const char*, const void*, bool>{"destination", to, toDevice}, {"source", from, fromDevice}}) {
    if (const char* why = wrong(p, device)) {
      fail(cudaErrorIllegalAddress, std::string(api) + ": the " + side + " " + where(p, bytes) + why);
      return false;
    }
  }
  return true;
}
}  // namespace braid_cuda_emulation

namespace braid_cuda_emulation {
// A copy as CUDA orders it: synchronous ones (and any into pageable memory) done on return,
// asynchronous ones queued (from pageable memory, its bytes staged first).
inline cudaError_t copy(const char* api, void* to, const void* from, size_t bytes, cudaMemcpyKind kind, bool synchronous) {
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  if (s.sticky != cudaSuccess) return s.sticky;  // a lost context fails every call
  if (bytes == 0) return result(cudaSuccess);
  if (!copyChecked(api, to, from, bytes, kind)) return result(s.last);
  const bool pinnedHost = kind == cudaMemcpyHostToDevice ? holding(from, bytes) != nullptr : holding(to, bytes) != nullptr;
  if (synchronous || (kind == cudaMemcpyDeviceToHost && !pinnedHost)) {
    deviceNow([&] { std::memcpy(to, from, bytes); });
  } else if (kind == cudaMemcpyHostToDevice && !pinnedHost) {
    auto staged = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t*>(from), static_cast<const uint8_t*>(from) + bytes);
    enqueue([=] { std::memcpy(to, staged->data(), bytes); });
  } else {
    enqueue([=] { std::memcpy(to, from, bytes); });
  }
  return result(cudaSuccess);
}
}  // namespace braid_cuda_emulation

inline cudaError_t cudaMemcpy(void* to, const void* from, size_t bytes, cudaMemcpyKind kind) {
  return braid_cuda_emulation::copy("cudaMemcpy", to, from, bytes, kind, true);
}
inline cudaError_t cudaMemcpyAsync(void* to, const void* from, size_t bytes, cudaMemcpyKind kind, cudaStream_t = nullptr) {
  return braid_cuda_emulation::copy("cudaMemcpyAsync", to, from, bytes, kind, false);
}

inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  namespace e = braid_cuda_emulation;
  auto& s = e::state();
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  if (s.sticky != cudaSuccess) return s.sticky;  // a lost context fails every call
  if (bytes == 0) return e::result(cudaSuccess);
  if (!e::isDevice(p, bytes)) return e::result(e::fail(cudaErrorIllegalAddress, "cudaMemsetAsync: " + e::where(p, bytes) + " is not inside one device allocation"));
  e::enqueue([=] { std::memset(p, value, bytes); });
  return e::result(cudaSuccess);
}

inline cudaError_t cudaDeviceSynchronize() {
  braid_cuda_emulation::flush();
  return braid_cuda_emulation::result(cudaSuccess);
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaDeviceSynchronize(); }
// Not ready while any earlier work waits (one queue: a conservative answer for any stream or event).
inline cudaError_t cudaStreamQuery(cudaStream_t) {
  return braid_cuda_emulation::drain(false) ? braid_cuda_emulation::result(cudaSuccess) : cudaErrorNotReady;
}
inline cudaError_t cudaEventQuery(cudaEvent_t) { return cudaStreamQuery(nullptr); }

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  *stream = new braid_emulated_stream{flags};
  return braid_cuda_emulation::result(cudaSuccess);
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  braid_cuda_emulation::flush();
  delete stream;
  return braid_cuda_emulation::result(cudaSuccess);
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  *event = new braid_emulated_event{flags};
  return braid_cuda_emulation::result(cudaSuccess);
}
inline cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return braid_cuda_emulation::result(cudaSuccess);
}
// Work runs in issue order, so recording an event and waiting for one order nothing further.
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = nullptr) { return braid_cuda_emulation::result(cudaSuccess); }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned = 0) { return braid_cuda_emulation::result(cudaSuccess); }
