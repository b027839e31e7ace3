#include "common/parallel_copy.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace braid {

namespace {

// Part i of n of a copy, cut at 4 KiB so that no two threads write the same page.
void copyPart(uint8_t* dst, const uint8_t* src, size_t bytes, int part, int parts) {
  constexpr size_t kPage = 4096;
  const size_t pages = (bytes + kPage - 1) / kPage;
  const size_t from = std::min(bytes, pages * static_cast<size_t>(part) / static_cast<size_t>(parts) * kPage);
  const size_t to = std::min(bytes, pages * static_cast<size_t>(part + 1) / static_cast<size_t>(parts) * kPage);
  if (to > from) std::memcpy(dst + from, src + from, to - from);
}

}  // namespace

ParallelCopy::ParallelCopy(int helpers) : helpers_(std::max(0, helpers)) {
  threads_.reserve(static_cast<size_t>(helpers_));
  for (int i = 0; i < helpers_; ++i) threads_.emplace_back([this, i] { helperLoop(i); });
}

ParallelCopy::~ParallelCopy() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  for (std::thread& t : threads_) t.join();
}

int ParallelCopy::defaultHelpers() {
  // BRAID_COPY_HELPERS=N sets it (0: one thread), for a side-by-side measurement.
  if (const char* forced = std::getenv("BRAID_COPY_HELPERS"); forced != nullptr && *forced != '\0') {
    char* end = nullptr;
    const long n = std::strtol(forced, &end, 10);
    if (end != forced && *end == '\0' && n >= 0 && n <= 16) return static_cast<int>(n);
  }
  const unsigned cores = std::thread::hardware_concurrency();
  return static_cast<int>(std::min(3u, cores / 4));
}

void ParallelCopy::copy(void* dst, const void* src, size_t bytes) {
  if (helpers_ == 0 || bytes < kMinParallelBytes) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const int parts = helpers_ + 1;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    dst_ = static_cast<uint8_t*>(dst);
    src_ = static_cast<const uint8_t*>(src);
    bytes_ = bytes;
    pending_ = helpers_;
    ++generation_;
  }
  work_.notify_all();
  copyPart(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), bytes, 0, parts);
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return pending_ == 0; });
}

void ParallelCopy::helperLoop(int index) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    uint8_t* dst = dst_;
    const uint8_t* src = src_;
    const size_t bytes = bytes_;
    const int parts = helpers_ + 1;
    lock.unlock();
    copyPart(dst, src, bytes, index + 1, parts);
    lock.lock();
    if (--pending_ == 0) done_.notify_one();
  }
}

}  // namespace braid
