// The op record: everything the engine needs to run one collective, as plain C++ values. The
// addon builds it in one place (addon/ops.cc) from the JS call; the engine thread runs it and
// calls onComplete.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/chunk_transform.h"
#include "common/status.h"
#include "kernels/dtype.h"

namespace braid {

// Numeric values cross the addon boundary (packages/collectives/src/codes.ts).
enum class OpKind : int {
  kAllreduce = 0,
  kBroadcast = 1,
  kAllgather = 2,
  kReduceScatter = 3,
  kBarrier = 4,
  kSplit = 5,
  kCloseComm = 6,
  // Benchmarks only: MPI_Allreduce called `iterations` times back to back from C on the engine
  // thread, so the JS benchmark can put the library beside itself in the same run.
  kMpiLoop = 7,
  // Point-to-point (engine/p2p.h): started in queue order, completed on their own.
  kSend = 8,
  kRecv = 9,
};
// kNccl: the op's buffers are on the GPU (DeviceBuffers) and NCCL moves them (engine/nccl_ops.h).
enum class Algorithm : int { kAuto = 0, kRing = 1, kTree = 2, kRecursiveDoubling = 3, kMpi = 4, kShm = 5, kHierarchical = 6,
                           kDirect = 7, kNccl = 8 };

const char* opKindName(OpKind k);
const char* algorithmName(Algorithm a);

struct OpRecord {
  int commId = 0;
  OpKind kind = OpKind::kAllreduce;
  DType dtype = DType::kFloat32;
  RedOp redop = RedOp::kSum;
  Algorithm algorithm = Algorithm::kAuto;
  int root = 0;
  std::string name;  // empty: derived from the call order on the communicator

  void* data = nullptr;  // input (all-reduce and broadcast work on it in place)
  size_t count = 0;      // elements in data
  void* out = nullptr;   // output of all-gather (size*count) and reduce-scatter (count/size)
  size_t outCount = 0;
  // Set when data/out are copies the caller made (an awaited op on a detachable ArrayBuffer):
  // the engine then runs on them directly and, if the op fails with MPI requests unfinished,
  // keeps this alive with them.
  std::shared_ptr<void> callerCopies;
  // Called on the caller's thread just before an op tried there is handed to the engine thread
  // (HandOff): the caller may swap data/out for copies it owns from then on.
  std::function<void(OpRecord&)> beforeHandOff;
  // An awaited op that would need such copies on the engine thread: it is tried on the caller's
  // thread at any size (the peers ready within the arrival budget, it runs there in place, as a
  // synchronous call does; else it is handed over, with copies).
  bool inlineAnySize = false;
  // All-reduce only: applied around the exchange, chunk by chunk (secure aggregation's masking);
  // `out` / `outCount` is then its second buffer. Runs over shared memory only (the addon checks).
  std::shared_ptr<ChunkTransform> transform;
  // The buffers are DeviceBuffers (device memory); with Algorithm::kNccl and host buffers, NCCL
  // runs on copies staged through pinned memory (all-reduce only).
  bool onDevice = false;
  int color = 0, key = 0;  // split
  int iterations = 1;      // kMpiLoop
  int peer = 0;            // kSend: the destination; kRecv: the source (-1: any)
  int tag = 0;             // kSend / kRecv

  // Results.
  ErrorCode code = ErrorCode::kOk;
  std::string message;
  int newCommId = -1, newRank = -1, newSize = 0;  // split
  std::string newTransport;                        // split: "tcp" or "mpi"
  bool newSharedMemory = false;                    // split: the new communicator has a shared-memory region
  int matchedSource = -1;                          // recv: who sent the message
  size_t matchedBytes = 0;                         // recv: its length
  Algorithm ranAlgorithm = Algorithm::kAuto;
  // A hierarchical all-reduce's network step among the hosts (ring or recursive doubling); kAuto otherwise.
  Algorithm ranAcrossHosts = Algorithm::kAuto;
  uint64_t seq = 0;
  uint64_t resumeEpoch = 0;  // handed over by the caller's thread at this barrier (HandOff)
  bool ranInline = false;    // finished on the caller's thread
  bool dataCarried = false;  // the agreement carried every rank's buffer (the direct all-reduce over TCP)
  // Set by an op on the caller's thread whose data phase timed out (its message): the engine
  // thread, which may call MPI, finds out which ranks stopped answering and fails the op.
  std::string timedOut;

  // Phase times in microseconds (steady clock), for the timeline.
  double tQueued = 0, tStart = 0, tNegotiated = 0, tDone = 0;
  double loopUs = 0;  // kMpiLoop: time spent in the loop
  std::vector<std::pair<double, double>> reduceSpans;

  // Called on the engine thread when the op has finished, failed or was refused.
  std::function<void(OpRecord*)> onComplete;
};

}  // namespace braid
