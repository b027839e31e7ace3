// What an algorithm may ask of a transport: point-to-point byte transfers between the ranks of
// one communicator, posted without blocking and completed by wait(). Algorithms are written
// against this interface only, so the same ring or tree runs over MPI, TCP sockets or NCCL.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/dtype.h"

namespace braid {

using RequestId = int;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "tcp": for messages and for what a communicator reports.
  virtual const char* name() const = 0;

  // Messages between one pair of ranks are matched in the order they were posted.
  virtual RequestId isend(int peer, const void* data, size_t bytes) = 0;
  virtual RequestId irecv(int peer, void* data, size_t bytes) = 0;
  // Blocks until the request completes; throws BraidException (TIMEOUT, ABORTED) on failure.
  virtual void wait(RequestId request) = 0;

  void send(int peer, const void* data, size_t bytes) { wait(isend(peer, data, bytes)); }
  void recv(int peer, void* data, size_t bytes) { wait(irecv(peer, data, bytes)); }
  void sendrecv(int sendPeer, const void* sendData, size_t sendBytes, int recvPeer, void* recvData,
                size_t recvBytes) {
    RequestId r = irecv(recvPeer, recvData, recvBytes);
    RequestId s = isend(sendPeer, sendData, sendBytes);
    wait(r);
    wait(s);
  }

  // The library's own all-reduce (MPI_Allreduce for MPI), kept as a yardstick for ours.
  // Transports without one throw BACKEND_UNAVAILABLE.
  virtual void nativeAllreduce(void* data, size_t count, DType dtype, RedOp op) = 0;

  // After a failed op: drops every request still posted so that nothing the op handed over is
  // touched again. `memory` is what those requests may read or write; a transport that cannot
  // drop a request at once (MPI) keeps it alive with the request. Returns how many it kept.
  virtual size_t abandon(std::shared_ptr<void> memory) = 0;
  // After abandon(): closes connections left out of step (TCP); a no-op where there are none.
  // Separate so that a rank that timed out can still ask, over MPI, who answers before its
  // peers see the connections close (and fail at once, without asking).
  virtual void closeConnections() {}

  // Every wait() after this fails once the deadline passes; set by the engine for each op.
  void setDeadline(std::chrono::steady_clock::time_point deadline) { deadline_ = deadline; }
  std::chrono::steady_clock::time_point deadline() const { return deadline_; }
  // Each rank's host, for messages (owned by the caller, outlives the transport).
  void setHosts(const std::vector<std::string>* hosts) { hosts_ = hosts; }
  // A wait that has not moved for `stallWarningMs` prints one line naming the op (`describeOp`),
  // the peer and its host: data that stopped moving mid-collective is reported before the
  // timeout, as a rank that never submits is in the agreement step.
  void setStallReport(int stallWarningMs, std::function<std::string()> describeOp) {
    stallWarningMs_ = stallWarningMs;
    describeOp_ = std::move(describeOp);
    stallReported_ = false;
  }
  // "rank 3 (host b)".
  std::string who(int rank) const {
    std::string out = "rank " + std::to_string(rank);
    if (hosts_ != nullptr && rank >= 0 && static_cast<size_t>(rank) < hosts_->size()) out += " (host " + (*hosts_)[rank] + ")";
    return out;
  }
  // Whether `peer` runs on this rank's host (message sizing differs per link class).
  bool sameHost(int peer) const {
    const int me = rank();
    if (hosts_ == nullptr || peer < 0 || static_cast<size_t>(peer) >= hosts_->size() || static_cast<size_t>(me) >= hosts_->size())
      return true;  // unknown: as on one host
    return (*hosts_)[peer] == (*hosts_)[me];
  }

 protected:
  // Called by wait() loops once they are slow: prints the stall line once, and throws TIMEOUT
  // past the deadline. `what` names the transfer ("a receive from rank 1 (host b)").
  void checkSlowWait(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point slowSince,
                     const std::string& what);

  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  const std::vector<std::string>* hosts_ = nullptr;
  int stallWarningMs_ = 0;
  std::function<std::string()> describeOp_;
  bool stallReported_ = false;
};

}  // namespace braid
