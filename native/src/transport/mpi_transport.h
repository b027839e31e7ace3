// Point-to-point transfers over one MPI communicator (CPU memory). Only the engine thread owns
// and calls it. Waits poll MPI_Test against a deadline so that a lost peer is a TIMEOUT, not a hang.
#pragma once
#include <mpi.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
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
  const char* name() const override { return "mpi"; }
  RequestId isend(int peer, const void* data, size_t bytes) override;
  RequestId irecv(int peer, void* data, size_t bytes) override;
  void wait(RequestId request) override;
  void nativeAllreduce(void* data, size_t count, DType dtype, RedOp op) override;
  // MPI_Allreduce itself, with no deadline: only the benchmarks' yardstick loop (kMpiLoop) uses
  // it, to time the library's blocking call as users of MPI would make it.
  void blockingAllreduce(void* data, size_t count, DType dtype, RedOp op);

  // After a failed op: cancels its posted receives and gives every request still unfinished to
  // the orphanage together with `memory` (everything those requests may read or write), so that
  // nothing MPI still holds is freed or reused. Returns how many were left unfinished.
  size_t abandon(std::shared_ptr<void> memory) override;

 private:
  RequestId allocate();
  void release(RequestId request);

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  // One logical request can span several MPI messages (MPI counts are int; big spans are split).
  std::vector<std::vector<MPI_Request>> requests_;
  std::vector<int> peers_;  // per request, for messages
  std::vector<RequestId> freeList_;
};

// Waits for one request, driving MPI's progress, until `deadline`; then throws TIMEOUT saying
// that `what` did not arrive. The request is left posted: the caller hands it to the orphanage
// with its memory.
void waitRequest(MPI_Request& request, std::chrono::steady_clock::time_point deadline, const std::string& what);

// Requests that a failed op left posted, kept with the memory they may still touch until MPI
// finishes them (if the peer is gone, never: the memory is then held for the process's life,
// which is the price of never writing into freed memory). Receives are cancelled first.
void orphanRequests(std::vector<MPI_Request> requests, std::shared_ptr<void> memory);
// Frees the memory of orphans that have finished since; engine thread only.
void reapOrphans();
size_t orphanCount();

// Throws BraidException(ABORTED) naming `what` when an MPI call did not succeed.
void checkMpi(int rc, const char* what);

}  // namespace braid
