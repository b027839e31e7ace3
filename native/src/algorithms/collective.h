// The algorithms, each in a file of its own named <collective>_<algorithm>.cc, built on the
// Transport interface alone. Each file opens with its cost model, in the usual alpha-beta terms:
// a message of m bytes costs alpha + m*beta, n is the rank count, and gamma is the cost per byte
// of reducing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/chunk_transform.h"
#include "kernels/dtype.h"
#include "transport/transport.h"

namespace braid {

class ShmTransport;

// Records when reductions ran, for the timeline (optional).
class PhaseRecorder {
 public:
  virtual ~PhaseRecorder() = default;
  virtual void reduceSpan(double startUs, double endUs) = 0;
};

struct CollectiveArgs {
  Transport& transport;
  DType dtype;
  RedOp op;
  std::vector<uint8_t>& scratch;  // reused between ops; algorithms grow it as they need
  PhaseRecorder* recorder = nullptr;
  size_t segmentBytes = 1 << 20;  // pipelining unit of ring algorithms (measured: benchmarks/README.md)
};

// out = a (op) b for n elements, timed for the timeline.
void reduceTimed(CollectiveArgs& args, void* out, const void* a, const void* b, size_t n);
double nowMicros();

// Element ranges of the n blocks a buffer is cut into: block i is [offset[i], offset[i+1]).
struct BlockLayout {
  std::vector<size_t> offset;
  size_t count(int block) const { return offset[block + 1] - offset[block]; }
  // `count` elements as evenly as possible: the first (count % n) blocks get one more.
  static BlockLayout even(size_t count, int blocks);
};

// --- all-reduce (in place); 'avg' divides at the end --------------------------------------
void allreduceRing(CollectiveArgs& args, void* buf, size_t count);
void allreduceTree(CollectiveArgs& args, void* buf, size_t count);
void allreduceRecursiveDoubling(CollectiveArgs& args, void* buf, size_t count);
void allreduceMpi(CollectiveArgs& args, void* buf, size_t count);
// Every rank's whole buffer to every other, reduced by each in rank order (allreduce_direct.cc).
void allreduceDirect(CollectiveArgs& args, void* buf, size_t count);
// buf = slot 0 (op) slot 1 (op) ... slot n-1, folded in that order (n = the transport's size), the
// slots `count` elements each, back to back (the slots are used as scratch); 'avg' divides at the
// end. The direct all-reduce's reduction, for when the agreement step already carried the buffers.
void reduceInRankOrder(CollectiveArgs& args, void* buf, uint8_t* slots, size_t count);
// Ranks on one host only: through a shared-memory region instead of messages. `firstBarrier`, if
// given, replaces the first chunk's copy-in and barrier: it is called with the copy-in and must
// run it and then pass a barrier (the engine's agreement step does both at once).
// `resumed`: the first chunk was copied in and its barrier entered already, by an attempt on the
// caller's thread that handed the op over (HandOff); it goes on from that barrier.
// `transform`, if given, makes each chunk (in its own buffer) from `second` just before the
// chunk's copy-in and turns it into `second` (and `buf`) once reduced (common/chunk_transform.h).
using FirstBarrier = std::function<void(const std::function<void()>& copyIn)>;
void allreduceShm(CollectiveArgs& args, ShmTransport& shm, void* buf, size_t count,
                  const FirstBarrier& firstBarrier = nullptr, bool resumed = false, ChunkTransform* transform = nullptr,
                  void* second = nullptr);

// Thrown by a first barrier that stopped waiting on the caller's thread (Engine::runInline): this
// rank has arrived at barrier `epoch`, and the engine thread carries the op on from there.
struct HandOff {
  uint64_t epoch;
};

// --- the ring phases, shared by all-reduce, reduce-scatter and all-gather ------------------
// After it, block r of buf (this rank's) holds the reduction of block r over all ranks; the
// other blocks hold partial sums.
void ringReduceScatter(CollectiveArgs& args, uint8_t* buf, const BlockLayout& layout);
// Needs block r of buf filled on rank r; afterwards every block is filled on every rank.
void ringAllgather(CollectiveArgs& args, uint8_t* buf, const BlockLayout& layout);

// --- broadcast (in place, from root) --------------------------------------------------------
void broadcastBinomial(CollectiveArgs& args, void* buf, size_t bytes, int root);
void broadcastPipeline(CollectiveArgs& args, void* buf, size_t bytes, int root);

// Runs one job at a time on a thread of its own (owned by the engine through the communicator):
// the hierarchical all-reduce's network steps, so that they overlap its shared-memory steps.
class Overlap {
 public:
  Overlap() = default;
  ~Overlap();
  Overlap(const Overlap&) = delete;
  Overlap& operator=(const Overlap&) = delete;
  // Starts `job` (none may be outstanding).
  void start(std::function<void()> job);
  // Waits for the job; rethrows what it threw. A no-op when none is outstanding.
  void finish();

 private:
  void loop();
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::function<void()> job_;
  bool pending_ = false, busy_ = false, stop_ = false;
  std::exception_ptr error_;
};

// --- hierarchical (hierarchical.cc): ranks on several hosts, the same number on each ----------
// `cross` runs over the ranks with this rank's local index, one per host (its transport's rank is
// the host's index); `local` joins this host's ranks. `inter` is the network algorithm.
using CollectiveFn = void (*)(CollectiveArgs&, void*, size_t);
using BroadcastFn = void (*)(CollectiveArgs&, void*, size_t, int);
// With `overlap`, messages of several segments are pipelined: the network step of one segment
// runs on the overlap thread while this thread does the next segment's shared-memory steps.
void allreduceHierarchical(CollectiveArgs& cross, ShmTransport& local, void* buf, size_t count, CollectiveFn inter,
                           Overlap* overlap = nullptr);
void broadcastHierarchical(CollectiveArgs& cross, ShmTransport& local, void* buf, size_t bytes, int rootHost,
                           int rootLocal, BroadcastFn inter);
// `rankOf[host * L + local]` is the communicator rank of that rank; `out` gets every rank's
// `bytes` in communicator rank order.
void allgatherHierarchical(CollectiveArgs& cross, ShmTransport& local, const void* in, size_t bytes, void* out,
                           const std::vector<int>& rankOf);

// --- barrier -----------------------------------------------------------------------------------
void barrierDissemination(Transport& transport);

}  // namespace braid
