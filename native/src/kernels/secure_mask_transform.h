// Secure aggregation's masking fused into the shared-memory all-reduce (a ChunkTransform): what
// is exchanged is the masked int32 vector (n values and the count word), the op's second buffer
// holds the caller's n float32 values, and its own buffer (n + 1 int32) receives the reduced
// count word only, in its last element. Each chunk is masked just before it leaves this rank and
// unmasked into the float32 values once reduced, while it is still in the cache: the passes
// over memory that masking and unmasking cost on their own go.
#pragma once

#include <cstdint>
#include <vector>

#include "common/chunk_transform.h"

namespace braid {

class SecureMaskTransform final : public ChunkTransform {
 public:
  struct Params {
    double scale = 1, clip = 0, divisor = 1;  // clip 0: none; divisor: scale, or scale x size for 'avg'
    int32_t limit = 0;
    std::vector<uint8_t> keys;  // 16 bytes a peer
    std::vector<int8_t> signs;  // +1 where this rank is the lower of the pair
    uint64_t call = 0;
    size_t values = 0;  // n
  };
  explicit SecureMaskTransform(Params params) : p_(std::move(params)) {}

  void in(void* at, const void* second, size_t from, size_t to) override;
  void out(const void* at, void* buf, void* second, size_t from, size_t to) override;

 private:
  Params p_;
  size_t maskedUpTo_ = 0;  // words [0, maskedUpTo_) are masked
  uint32_t beyond_ = 0;    // values beyond the range among them
};

}  // namespace braid
