// NCCL over the CUDA emulation (cuda_runtime.h here), for testing gpu/nccl_comm's use of NCCL
// where there is no GPU: the entry points Braid calls (nccl_api.h), with NCCL's non-blocking
// behaviour (init returns ncclInProgress; the async error says when the communicator is ready),
// collectives queued on the caller's stream like any device work, and device pointers checked.
// There is one process, so a communicator has one real rank; the others are either
//   - mirrors (an id from mirroredId): every other rank contributes the same values, so that an
//     all-reduce's result differs from its input (sum of 2 ranks = 2x) and a lost copy shows; or
//   - absent (an id from ncclGetUniqueId with nranks > 1): the communicator never becomes ready,
//     as when a peer never joins, so the caller's deadline and abort are exercised.
#pragma once
#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "gpu/nccl_api.h"
#include "gpu/nccl_loader.h"

namespace braid_cuda_emulation {

struct EmulatedComm {
  int ranks = 1;
  bool ready = false;
  bool aborted = false;
};

inline bool isMirrored(const braid::nccl::UniqueId& id) { return std::memcmp(id.internal, "mirrored", 8) == 0; }

inline braid::nccl::UniqueId mirroredId() {
  braid::nccl::UniqueId id{};
  std::memcpy(id.internal, "mirrored", 8);
  return id;
}

inline size_t ncclSize(braid::nccl::DataType t) {
  using namespace braid::nccl;
  switch (t) {
    case kInt8: case kUint8: return 1;
    case kFloat16: case kBfloat16: return 2;
    case kInt32: case kUint32: case kFloat32: return 4;
    default: return 8;
  }
}

// Checks like NCCL's: the buffers must be device memory on this device.
inline braid::nccl::Result ncclBuffers(const char* what, const void* send, size_t sendBytes, const void* recv, size_t recvBytes) {
  if ((sendBytes > 0 && !isDevice(send, sendBytes)) || (recvBytes > 0 && !isDevice(recv, recvBytes))) {
    std::fprintf(stderr, "nccl emulation: %s: a buffer is not device memory of its size\n", what);
    return braid::nccl::kInvalidArgument;
  }
  return braid::nccl::kSuccess;
}

// out = the reduction over `ranks` ranks that each hold x (callers refuse all but float32 with more
// than one rank: ncclInvalidUsage).
inline void mirroredReduce(float* out, const float* x, size_t count, braid::nccl::RedOp op, int ranks) {
  using namespace braid::nccl;
  for (size_t i = 0; i < count; ++i) {
    float acc = x[i];
    for (int r = 1; r < ranks; ++r) acc = op == kSum || op == kAvg ? acc + x[i] : op == kProd ? acc * x[i] : acc;
    out[i] = op == kAvg ? acc / static_cast<float>(ranks) : acc;
  }
}

inline braid::nccl::Result ncclGetVersionEmulated(int* version) {
  *version = 23007;
  return braid::nccl::kSuccess;
}
inline const char* ncclGetErrorStringEmulated(braid::nccl::Result r) {
  switch (r) {
    case braid::nccl::kSuccess: return "no error";
    case braid::nccl::kInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case braid::nccl::kInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case braid::nccl::kInProgress: return "NCCL operation in progress";
    default: return "unhandled error";
  }
}
inline braid::nccl::Result ncclGetUniqueIdEmulated(braid::nccl::UniqueId* id) {
  static unsigned counter = 0;
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "emulated %u", ++counter);
  return braid::nccl::kSuccess;
}
inline braid::nccl::Result ncclCommInitRankConfigEmulated(braid::nccl::Comm* comm, int nranks, braid::nccl::UniqueId id, int rank, braid::nccl::Config*) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return braid::nccl::kInvalidArgument;
  auto* c = new EmulatedComm;
  c->ranks = nranks;
  c->ready = nranks == 1 || isMirrored(id);
  *comm = reinterpret_cast<braid::nccl::Comm>(c);
  return braid::nccl::kInProgress;  // non-blocking: the async error says when it is ready
}
inline braid::nccl::Result ncclCommInitRankEmulated(braid::nccl::Comm* comm, int nranks, braid::nccl::UniqueId id, int rank) {
  return ncclCommInitRankConfigEmulated(comm, nranks, id, rank, nullptr);
}
inline braid::nccl::Result ncclCommAbortEmulated(braid::nccl::Comm comm) {
  flush();
  delete reinterpret_cast<EmulatedComm*>(comm);
  return braid::nccl::kSuccess;
}
inline braid::nccl::Result ncclCommGetAsyncErrorEmulated(braid::nccl::Comm comm, braid::nccl::Result* state) {
  const auto* c = reinterpret_cast<const EmulatedComm*>(comm);
  *state = c->ready ? braid::nccl::kSuccess : braid::nccl::kInProgress;
  return braid::nccl::kSuccess;
}

// A collective queued on `stream` once its buffers are checked.
inline braid::nccl::Result ncclQueue(const char* what, braid::nccl::Comm comm, const void* send, size_t sendBytes, void* recv, size_t recvBytes,
                                     std::function<void()> run) {
  const auto* c = reinterpret_cast<const EmulatedComm*>(comm);
  if (!c->ready) return braid::nccl::kInvalidUsage;
  const braid::nccl::Result checked = ncclBuffers(what, send, sendBytes, recv, recvBytes);
  if (checked != braid::nccl::kSuccess) return checked;
  enqueue(what, std::move(run));
  return braid::nccl::kSuccess;
}

inline braid::nccl::Result ncclAllReduceEmulated(const void* send, void* recv, size_t count, braid::nccl::DataType type, braid::nccl::RedOp op,
                                                 braid::nccl::Comm comm, braid::nccl::Stream) {
  const int ranks = reinterpret_cast<const EmulatedComm*>(comm)->ranks;
  const size_t bytes = count * ncclSize(type);
  if (ranks > 1 && type != braid::nccl::kFloat32) return braid::nccl::kInvalidUsage;
  return ncclQueue("ncclAllReduce", comm, send, bytes, recv, bytes, [=] {
    if (ranks == 1) std::memmove(recv, send, bytes);  // one rank: every op gives back its input
    else mirroredReduce(static_cast<float*>(recv), static_cast<const float*>(send), count, op, ranks);
  });
}
inline braid::nccl::Result ncclBroadcastEmulated(const void* send, void* recv, size_t count, braid::nccl::DataType type, int root,
                                                 braid::nccl::Comm comm, braid::nccl::Stream) {
  const size_t bytes = count * ncclSize(type);
  if (root < 0 || root >= reinterpret_cast<const EmulatedComm*>(comm)->ranks) return braid::nccl::kInvalidArgument;
  return ncclQueue("ncclBroadcast", comm, send, bytes, recv, bytes, [=] {
    std::memmove(recv, send, bytes);  // every rank holds what the root holds
  });
}
inline braid::nccl::Result ncclAllGatherEmulated(const void* send, void* recv, size_t count, braid::nccl::DataType type, braid::nccl::Comm comm,
                                                 braid::nccl::Stream) {
  const int ranks = reinterpret_cast<const EmulatedComm*>(comm)->ranks;
  const size_t bytes = count * ncclSize(type);
  return ncclQueue("ncclAllGather", comm, send, bytes, recv, bytes * ranks, [=] {
    for (int r = 0; r < ranks; ++r) std::memmove(static_cast<char*>(recv) + r * bytes, send, bytes);
  });
}
inline braid::nccl::Result ncclReduceScatterEmulated(const void* send, void* recv, size_t count, braid::nccl::DataType type, braid::nccl::RedOp op,
                                                     braid::nccl::Comm comm, braid::nccl::Stream) {
  const int ranks = reinterpret_cast<const EmulatedComm*>(comm)->ranks;
  const size_t bytes = count * ncclSize(type);
  if (ranks > 1 && type != braid::nccl::kFloat32) return braid::nccl::kInvalidUsage;
  return ncclQueue("ncclReduceScatter", comm, send, bytes * ranks, recv, bytes, [=] {
    if (ranks == 1) std::memmove(recv, send, bytes);
    else mirroredReduce(static_cast<float*>(recv), static_cast<const float*>(send), count, op, ranks);  // rank 0's block
  });
}
inline braid::nccl::Result ncclGroupEmulated() { return braid::nccl::kSuccess; }

inline const braid::NcclLibrary& emulatedNccl() {
  static const braid::NcclLibrary library = [] {
    braid::NcclLibrary l;
    l.path = "(NCCL emulated over test/cuda_emulation)";
    l.version = 23007;
    l.getVersion = ncclGetVersionEmulated;
    l.getErrorString = ncclGetErrorStringEmulated;
    l.getUniqueId = ncclGetUniqueIdEmulated;
    l.commInitRank = ncclCommInitRankEmulated;
    l.commInitRankConfig = ncclCommInitRankConfigEmulated;
    l.commAbort = ncclCommAbortEmulated;
    l.commDestroy = ncclCommAbortEmulated;
    l.commGetAsyncError = ncclCommGetAsyncErrorEmulated;
    l.allReduce = ncclAllReduceEmulated;
    l.broadcast = ncclBroadcastEmulated;
    l.allGather = ncclAllGatherEmulated;
    l.reduceScatter = ncclReduceScatterEmulated;
    l.groupStart = ncclGroupEmulated;
    l.groupEnd = ncclGroupEmulated;
    return l;
  }();
  return library;
}

}  // namespace braid_cuda_emulation
