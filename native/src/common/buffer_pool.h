// Reused blocks for the copies an op makes of the user's buffers (an awaited op on a detachable
// ArrayBuffer; an op through MPI). A fresh block of tens of MiB costs more in page faults than
// the copy itself (measured: awaited 64 MiB all-reduces fell from 2.0x MPI_Allreduce to 0.5x
// with a new block per op), so blocks go back to the pool when their op is done, or when MPI
// lets go of them after a failure (they are held by shared_ptr, the orphanage's too).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace braid {

class BufferPool {
 public:
  // The process's pool (any thread).
  static BufferPool& shared() {
    static BufferPool* pool = new BufferPool();  // never destroyed: blocks may come back at exit
    return *pool;
  }

  // A block of at least `bytes` (uninitialised), given back to the pool when the last
  // shared_ptr to it goes.
  std::shared_ptr<uint8_t> take(size_t bytes) {
    bytes = bytes == 0 ? 1 : bytes;
    uint8_t* block = nullptr;
    size_t capacity = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      size_t best = free_.size();
      for (size_t i = 0; i < free_.size(); ++i) {
        // Fits, without wasting more than its size again (plus a little).
        if (free_[i].capacity >= bytes && free_[i].capacity <= 2 * bytes + kSlack &&
            (best == free_.size() || free_[i].capacity < free_[best].capacity))
          best = i;
      }
      if (best < free_.size()) {
        block = free_[best].data;
        capacity = free_[best].capacity;
        kept_ -= capacity;
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
      }
    }
    if (block == nullptr) {
      capacity = (bytes + kSlack - 1) / kSlack * kSlack;
      block = new uint8_t[capacity];
    }
    return std::shared_ptr<uint8_t>(block, [this, capacity](uint8_t* p) { give(p, capacity); });
  }

 private:
  static constexpr size_t kSlack = 64 * 1024;
  static constexpr size_t kMaxBlocks = 8;
  static constexpr size_t kMaxKeptBytes = size_t{1} << 30;

  void give(uint8_t* block, size_t capacity) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (free_.size() < kMaxBlocks && kept_ + capacity <= kMaxKeptBytes) {
        free_.push_back({block, capacity});
        kept_ += capacity;
        return;
      }
    }
    delete[] block;
  }

  struct Block {
    uint8_t* data;
    size_t capacity;
  };
  std::mutex mutex_;
  std::vector<Block> free_;
  size_t kept_ = 0;
};

}  // namespace braid
