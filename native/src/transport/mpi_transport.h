// Point-to-point transfers over one MPI communicator (CPU memory). Only the engine thread owns
// and calls it. Waits poll MPI_Test against a deadline so that a lost peer is a TIMEOUT, not a hang.
#pragma once
#include <mpi.h>

#include <chrono>
#include <vector>

#include "transport/transport.h"

namespace braid {

class MpiTransport final : public Transport {
 public:
  // Takes ownership of `comm` (a communicator private to this transport) and frees it.
  explicit MpiTransport(MPI_Comm comm);
  ~MpiTransport() override;
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  RequestId isend(int peer, const void* data, size_t bytes) override;
  RequestId irecv(int peer, void* data, size_t bytes) override;
  void wait(RequestId request) override;
  void nativeAllreduce(void* data, size_t count, DType dtype, RedOp op) override;

  // Every wait() after this fails once the deadline passes; set by the engine for each op.
  void setDeadline(std::chrono::steady_clock::time_point deadline) { deadline_ = deadline; }

 private:
  RequestId allocate();
  void release(RequestId request);

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  // One logical request can span several MPI messages (MPI counts are int; big spans are split).
  std::vector<std::vector<MPI_Request>> requests_;
  std::vector<int> peers_;  // per request, for messages
  std::vector<RequestId> freeList_;
};

// Throws BraidException(ABORTED) naming `what` when an MPI call did not succeed.
void checkMpi(int rc, const char* what);

}  // namespace braid
