// How the engine thread waits for a peer: spin briefly (a peer on this host is usually
// microseconds away), then yield, then sleep in short naps. A rank that waits milliseconds for a
// slower one (a training step's compute jitter) must not keep a core busy: with as many ranks as
// cores, that core is the one the slower rank needs to finish.
#pragma once
#include <chrono>
#include <thread>

namespace braid {

class Backoff {
 public:
  static constexpr unsigned kSpins = 256;
  static constexpr std::chrono::microseconds kYieldFor{200};
  static constexpr std::chrono::microseconds kNap{50};

  void pause() {
    if (spins_ < kSpins) {
      ++spins_;
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (yieldingSince_ == std::chrono::steady_clock::time_point{}) yieldingSince_ = now;
    if (now - yieldingSince_ < kYieldFor) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(kNap);
    }
  }

  /** True once the wait has gone past spinning (callers then check deadlines and progress). */
  bool slow() const { return spins_ >= kSpins; }

 private:
  unsigned spins_ = 0;
  std::chrono::steady_clock::time_point yieldingSince_{};
};

}  // namespace braid
