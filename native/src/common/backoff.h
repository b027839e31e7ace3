// How a rank's thread waits for a peer: spin briefly (a peer on this host is usually
// microseconds away), then yield, then sleep in naps that lengthen as the wait does. A rank that
// waits milliseconds for a slower one (a training step's compute jitter) must not keep a core
// busy: with as many ranks as cores, that core is the one the slower rank needs to finish. The
// first naps are short because the late rank waits for the early one to wake (half a nap on
// average); a wait that goes on is no longer jitter, and each wake-up costs CPU (20-25 us of it
// on the development VM).
#pragma once
#include <chrono>
#include <thread>

#if defined(__linux__)
#include <sys/prctl.h>
#endif

namespace braid {

class Backoff {
 public:
  static constexpr unsigned kSpins = 256;
  static constexpr std::chrono::microseconds kYieldFor{200};
  static constexpr std::chrono::microseconds kNap{20};
  static constexpr std::chrono::milliseconds kNapsFor{5};  // then kLongerNap
  static constexpr std::chrono::microseconds kLongerNap{200};
  static constexpr std::chrono::milliseconds kLongerNapsFor{50};  // then kLongestNap
  static constexpr std::chrono::milliseconds kLongestNap{1};

  // kShort keeps the naps at kNap however long the wait: for waits on transfers that move only
  // when polled (MPI's progress), where a long nap would slow the data rather than save a core.
  enum Naps { kLengthen, kShort };
  explicit Backoff(Naps naps = kLengthen) : naps_(naps) {}
  Backoff(const Backoff&) = delete;
  Backoff& operator=(const Backoff&) = delete;
  ~Backoff() {
#if defined(__linux__)
    if (savedSlackNs_ > 0) prctl(PR_SET_TIMERSLACK, savedSlackNs_, 0UL, 0UL, 0UL);
#endif
  }

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
    const auto waited = now - yieldingSince_;
    if (waited < kYieldFor) {
      std::this_thread::yield();
      return;
    }
    preciseNaps();
    if (naps_ == kShort || waited < kYieldFor + kNapsFor) {
      std::this_thread::sleep_for(kNap);
    } else if (waited < kYieldFor + kLongerNapsFor) {
      std::this_thread::sleep_for(kLongerNap);
    } else {
      std::this_thread::sleep_for(kLongestNap);
    }
  }

  /** True once the wait has gone past spinning (callers then check deadlines and progress). */
  bool slow() const { return spins_ >= kSpins; }

 private:
  // A thread's default timer slack (50 us) stretched a 50 us nap to about 135 us on the
  // development VM (73 us with 1 us of slack; a 20 us nap: 107 and 42 us), and the late peer
  // waited for half of that on average.
  // The engine thread runs with 1 us of slack; a blocking op waits on the caller's thread (the JS
  // thread), so the slack is narrowed for the naps and given back when the wait ends.
  void preciseNaps() {
#if defined(__linux__)
    if (slackChecked_) return;
    slackChecked_ = true;
    const int current = prctl(PR_GET_TIMERSLACK, 0UL, 0UL, 0UL, 0UL);
    if (current > static_cast<int>(kNapSlackNs) && prctl(PR_SET_TIMERSLACK, kNapSlackNs, 0UL, 0UL, 0UL) == 0)
      savedSlackNs_ = static_cast<unsigned long>(current);
#endif
  }

  static constexpr unsigned long kNapSlackNs = 1000;
  Naps naps_;
  bool slackChecked_ = false;
  unsigned long savedSlackNs_ = 0;
  unsigned spins_ = 0;
  std::chrono::steady_clock::time_point yieldingSince_{};
};

}  // namespace braid
