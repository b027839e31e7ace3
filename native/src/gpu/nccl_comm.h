// One NCCL communicator on one GPU, driven from the host: created from rank 0's unique id (the
// caller passes it to every rank over MPI), non-blocking, and polled against a deadline so that
// no rank waits in NCCL forever: when the deadline passes, the communicator is aborted
// (ncclCommAbort) and the call fails. Compiled with the CUDA kernels (nccl_comm.cu); without nvcc
// every call says CUDA is not compiled in (nccl_comm_stub.cc).
#pragma once
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "gpu/nccl_loader.h"

namespace braid {

using Deadline = std::chrono::steady_clock::time_point;

// Device memory on the current GPU, for DeviceBuffer and the GPU tests. Each returns false (or
// null) with `error` set when CUDA fails or is not compiled in.
bool gpuSelect(int device, std::string& error);
void* gpuAlloc(size_t bytes, std::string& error);
void gpuFree(void* pointer);
bool gpuUpload(void* device, const void* host, size_t bytes, std::string& error);
bool gpuDownload(void* host, const void* device, size_t bytes, std::string& error);

class NcclCommunicator {
 public:
  // Rank 0's id for a new communicator.
  static bool uniqueId(const NcclLibrary& nccl, nccl::UniqueId& id, std::string& error);
  // Joins the communicator of `ranks` ranks keyed by `id` on `device`; null and `error` on failure
  // (TIMEOUT-worthy failures say "deadline" in `error`, and `timedOut` is set).
  static std::unique_ptr<NcclCommunicator> join(const NcclLibrary& nccl, int device, int ranks, int rank, const nccl::UniqueId& id,
                                                Deadline deadline, std::string& error, bool& timedOut);
  ~NcclCommunicator();

  // In place on device memory, waiting for completion until `deadline` (then the communicator
  // is aborted and unusable).
  bool allReduce(void* data, size_t count, nccl::DataType type, nccl::RedOp op, Deadline deadline, std::string& error, bool& timedOut);
  bool broadcast(void* data, size_t count, nccl::DataType type, int root, Deadline deadline, std::string& error, bool& timedOut);
  // `count` elements from each rank into `out` (ranks x count), in rank order.
  bool allGather(const void* data, void* out, size_t count, nccl::DataType type, Deadline deadline, std::string& error, bool& timedOut);
  // The reduction of `data` (ranks x outCount) over the ranks; this rank's block into `out`.
  bool reduceScatter(const void* data, void* out, size_t outCount, nccl::DataType type, nccl::RedOp op, Deadline deadline, std::string& error,
                     bool& timedOut);
  // An all-reduce of host memory: chunks copied into pinned buffers, to the GPU, reduced, back and
  // out, three chunks in flight (one being copied in, one in NCCL, one coming back).
  bool allReduceStaged(void* host, size_t count, size_t elementBytes, nccl::DataType type, nccl::RedOp op, Deadline deadline, std::string& error,
                       bool& timedOut);
  bool usable() const { return !aborted_; }

 private:
  NcclCommunicator(const NcclLibrary& nccl, nccl::Comm comm, void* stream) : nccl_(nccl), comm_(comm), stream_(stream) {}
  // Launches one collective on the communicator's stream and waits for it.
  bool run(const char* what, const std::function<nccl::Result()>& launch, Deadline deadline, std::string& error, bool& timedOut);
  // Polls the communicator's state, then the stream, until both are done or `deadline` passes.
  bool wait(const char* what, Deadline deadline, std::string& error, bool& timedOut);
  void abort();
  // Polls the communicator's state and `event` (a cudaEvent_t) until the event is done or `deadline` passes.
  bool waitEvent(const char* what, void* event, Deadline deadline, std::string& error, bool& timedOut);

  const NcclLibrary& nccl_;
  nccl::Comm comm_;
  void* stream_;  // cudaStream_t
  bool aborted_ = false;
  // allReduceStaged's pinned and device buffers, streams and events, kept between calls (pinning
  // memory costs milliseconds); a type of the .cu file's, so held as void.
  std::shared_ptr<void> staging_;
  size_t stagingBytes_ = 0;
};

}  // namespace braid
