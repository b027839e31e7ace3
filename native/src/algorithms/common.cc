#include <chrono>

#include "algorithms/collective.h"
#include "kernels/reduce.h"

namespace braid {

double nowMicros() {
  using namespace std::chrono;
  return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}

void reduceTimed(CollectiveArgs& args, void* out, const void* a, const void* b, size_t n) {
  if (args.recorder == nullptr) {
    reduceInto(args.dtype, args.op, out, a, b, n);
    return;
  }
  double start = nowMicros();
  reduceInto(args.dtype, args.op, out, a, b, n);
  args.recorder->reduceSpan(start, nowMicros());
}

BlockLayout BlockLayout::even(size_t count, int blocks) {
  BlockLayout layout;
  layout.offset.resize(static_cast<size_t>(blocks) + 1);
  size_t base = count / blocks, extra = count % blocks, at = 0;
  for (int i = 0; i < blocks; ++i) {
    layout.offset[i] = at;
    at += base + (static_cast<size_t>(i) < extra ? 1 : 0);
  }
  layout.offset[blocks] = at;
  return layout;
}

Overlap::~Overlap() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void Overlap::start(std::function<void()> job) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  job_ = std::move(job);
  pending_ = true;
  error_ = nullptr;
  lock.unlock();
  wake_.notify_one();
}

void Overlap::finish() {
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return !pending_ && !busy_; });
  if (error_) {
    std::exception_ptr error = error_;
    error_ = nullptr;
    std::rethrow_exception(error);
  }
}

void Overlap::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return pending_ || stop_; });
    if (stop_ && !pending_) return;
    std::function<void()> job = std::move(job_);
    pending_ = false;
    busy_ = true;
    lock.unlock();
    std::exception_ptr error;
    try {
      job();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    error_ = error;
    busy_ = false;
    done_.notify_all();
  }
}

}  // namespace braid
