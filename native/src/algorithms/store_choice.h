// Which stores the shared-memory all-reduce writes its slots with, chosen by what each has cost
// lately. On the development VM (EPYC, 2 vCPUs) the best choice flips with the minute: plain
// stores moved 0.5-16 MiB at 11-14 GB/s in some minutes and at 1.5-2.0 GB/s in others, when
// streaming stores (the bytes go through memory rather than the writer's cache) moved 6-9 GB/s;
// in the fast minutes streaming gave 6-7 GB/s (benchmarks/README.md). The store kind changes no
// result bit, so each rank chooses alone, from its own timings, with no agreement.
#pragma once
#include <cstddef>
#include <cstdint>

namespace braid {

class StoreChoice {
 public:
  // Below this an op costs its barriers more than its bytes: plain stores. Down to 64 KiB the slow
  // regime shows too (plain 37-100 us against 12-32 us, 64-128 KiB, on the development VM, where
  // streaming was never the slower by more than noise), and at the training benchmark's 398 KiB
  // bucket plain took 250 us in the slow minutes, streaming 55-75, plain 40 otherwise.
  static constexpr size_t kMinBytes = 64 * 1024;
  // One op in this many tries the other kind, so that a change of regime is noticed.
  static constexpr uint32_t kExploreEvery = 32;
  // Each kind's estimate is the fastest of its last few timings. Noise here only ever adds time
  // (a preempted rank, a first touch), so the minimum ignores it where a moving average carried
  // it for dozens of ops: with one slow first op (23 ms against 11) the average kept the slower
  // kind for 60 ops of 64 MiB, past the whole of a nccl-tests size. A kind that slows down is
  // noticed after this many timings; one that speeds up, at its next.
  static constexpr int kWindow = 3;

  bool streaming(size_t bytes) {
    if (bytes < kMinBytes) return false;
    Bucket& b = bucket(bytes);
    ++b.ops;
    // Each kind is timed once, plain first; the one that looked slower is timed again before it
    // is given up (its first timing may have been the noisy one). At most two ops of the slower
    // kind, then.
    for (int kind = 0; kind < 2; ++kind)
      if (b.samples[kind] == 0) return kind == 1;
    const bool best = b.estimate(1) < b.estimate(0);
    const int slower = best ? 0 : 1;
    if (b.samples[slower] < 2) return slower == 1;
    return b.ops % kExploreEvery == 0 ? !best : best;
  }

  // The op's data movement (after its first barrier) took `seconds`.
  void record(size_t bytes, bool streaming, double seconds) {
    if (bytes < kMinBytes || seconds <= 0) return;
    Bucket& b = bucket(bytes);
    const int kind = streaming ? 1 : 0;
    b.recent[kind][b.samples[kind] % kWindow] = seconds / static_cast<double>(bytes);
    if (b.samples[kind] < UINT32_MAX) ++b.samples[kind];
  }

 private:
  struct Bucket {
    double recent[2][kWindow] = {};  // seconds per byte, a ring per kind
    uint32_t samples[2] = {0, 0};
    uint32_t ops = 0;
    double estimate(int kind) const {
      const int n = samples[kind] < static_cast<uint32_t>(kWindow) ? static_cast<int>(samples[kind]) : kWindow;
      double best = recent[kind][0];
      for (int i = 1; i < n; ++i) best = recent[kind][i] < best ? recent[kind][i] : best;
      return best;
    }
  };
  // Sizes a factor of two apart share a bucket: 64-128 KiB, 128-256 KiB, ..., 2 GiB and up.
  static constexpr int kBuckets = 16;
  Bucket& bucket(size_t bytes) {
    int i = 0;
    for (size_t b = bytes / kMinBytes; b > 1 && i < kBuckets - 1; b >>= 1) ++i;
    return buckets_[i];
  }
  Bucket buckets_[kBuckets];
};

}  // namespace braid
