// A transform an all-reduce applies around its exchange, chunk by chunk, so that it costs no pass
// over memory of its own: secure aggregation's masking (kernels/secure_mask_transform.h) turns
// the caller's float32 values into masked fixed point just before each chunk leaves this rank,
// and the reduced fixed point back into float32 once the chunk is final.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/buffer_pool.h"

namespace braid {

class ChunkTransform {
 public:
  virtual ~ChunkTransform() = default;
  // Writes elements [from, to) of what is exchanged to `at`, from `second` (the op's second
  // buffer). Called for consecutive ranges from 0 to the op's count, each once, before any of
  // those elements leaves this rank (a range may be empty).
  virtual void in(void* at, const void* second, size_t from, size_t to) = 0;
  // Consumes elements [from, to), reduced, from `at` (any order of ranges, each once): into
  // `second`, and into `buf` (the op's own buffer) what the caller is to read there.
  virtual void out(const void* at, void* buf, void* second, size_t from, size_t to) = 0;
  // Where the all-reduce keeps the chunk under way: the transform's own memory, small enough to
  // stay in the cache, and still there when an op begun on the caller's thread goes on on the
  // engine thread. From the pool: a fresh block each op would cost page faults.
  uint8_t* chunkBuffer(size_t bytes) {
    if (chunkBytes_ < bytes) {
      chunk_ = BufferPool::shared().take(bytes);
      chunkBytes_ = bytes;
    }
    return chunk_.get();
  }

 private:
  std::shared_ptr<uint8_t> chunk_;
  size_t chunkBytes_ = 0;
};

}  // namespace braid
