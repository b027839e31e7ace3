// A memcpy split across a few threads of its own, for copies of megabytes that one core's memory
// bandwidth would limit: the staged NCCL all-reduce moves every byte of a host array through
// pinned memory twice, on the engine thread, while the GPU's copy engines wait for it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace braid {

class ParallelCopy {
 public:
  // `helpers` threads besides the caller's (0: every copy is a plain memcpy).
  explicit ParallelCopy(int helpers);
  ~ParallelCopy();
  ParallelCopy(const ParallelCopy&) = delete;
  ParallelCopy& operator=(const ParallelCopy&) = delete;

  // The same bytes as memcpy (the ranges must not overlap). One caller at a time.
  void copy(void* dst, const void* src, size_t bytes);

  int helpers() const { return helpers_; }

  // A quarter of the cores, at most 3 helpers: enough for the copy bandwidth of a socket without
  // taking the cores the ranks' own threads run on; none on a machine of 2-7 cores.
  // BRAID_COPY_HELPERS (0-16) overrides it.
  static int defaultHelpers();

  // Below this a copy stays on the caller's thread: waking helpers costs more than it saves.
  static constexpr size_t kMinParallelBytes = 1u << 20;

 private:
  void helperLoop(int index);

  const int helpers_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable work_, done_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
  uint8_t* dst_ = nullptr;
  const uint8_t* src_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace braid
