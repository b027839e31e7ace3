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
  // Below this an op is a chunk or less and too short to time well: plain stores.
  static constexpr size_t kMinBytes = 512 * 1024;
  // One op in this many tries the other kind, so that a change of regime is noticed.
  static constexpr uint32_t kExploreEvery = 32;

  bool streaming(size_t bytes) {
    if (bytes < kMinBytes) return false;
    Bucket& b = bucket(bytes);
    ++b.ops;
    // Each kind is timed twice before the estimates are trusted.
    for (int kind = 0; kind < 2; ++kind)
      if (b.samples[kind] < 2) return kind == 1;
    const bool best = b.secondsPerByte[1] < b.secondsPerByte[0];
    return b.ops % kExploreEvery == 0 ? !best : best;
  }

  // The op's data movement (after its first barrier) took `seconds`.
  void record(size_t bytes, bool streaming, double seconds) {
    if (bytes < kMinBytes || seconds <= 0) return;
    Bucket& b = bucket(bytes);
    const int kind = streaming ? 1 : 0;
    const double perByte = seconds / static_cast<double>(bytes);
    // A moving average that forgets in a few ops: the regimes last seconds to minutes.
    b.secondsPerByte[kind] = b.samples[kind] == 0 ? perByte : 0.7 * b.secondsPerByte[kind] + 0.3 * perByte;
    if (b.samples[kind] < UINT32_MAX) ++b.samples[kind];
  }

 private:
  struct Bucket {
    double secondsPerByte[2] = {0, 0};
    uint32_t samples[2] = {0, 0};
    uint32_t ops = 0;
  };
  // Sizes a factor of two apart share a bucket: 512 KiB-1 MiB, 1-2 MiB, ..., 16 GiB and up.
  static constexpr int kBuckets = 16;
  Bucket& bucket(size_t bytes) {
    int i = 0;
    for (size_t b = bytes / kMinBytes; b > 1 && i < kBuckets - 1; b >>= 1) ++i;
    return buckets_[i];
  }
  Bucket buckets_[kBuckets];
};

}  // namespace braid
