// Point-to-point messages (comm.send / comm.recv): not collective, so they cannot wait in the
// engine's queue like the collectives (a rank's recv would hold up the send its peer waits for).
// The engine starts each one when it reaches the queue's head and keeps it here, in flight beside
// whatever runs next, testing it between ops and while idle; each completes on its own.
//
// Over MPI (Open MPI's shared memory on one host, its network transports between hosts), on two
// communicators of their own: the message itself, then the receiver's answer on the second, so
// that a send completes only once the receiver has taken the message (MPI_Ssend's semantics) and
// a receive buffer too small for a message fails on both sides instead of truncating on one.
// The receiver matches with MPI_Improbe, so the message's length is known before it is taken;
// receives probe in the order posted, and none probes for what an earlier unmatched one could
// take, so (source, tag) order holds as for MPI's own receives, ANY_SOURCE ones included.
#pragma once
#include <mpi.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/op.h"

namespace braid {

// The largest tag: what every MPI library supports (MPI_TAG_UB is at least this).
constexpr int kMaxPointToPointTag = 32767;

class PointToPoint {
 public:
  // `data` and `answers` are this communicator's own duplicates; freed with it.
  PointToPoint(MPI_Comm data, MPI_Comm answers, const std::vector<std::string>* hosts);
  ~PointToPoint();
  PointToPoint(const PointToPoint&) = delete;
  PointToPoint& operator=(const PointToPoint&) = delete;

  // Starts a kSend or kRecv; it completes in progress() (or fail()). `memory` keeps the op's
  // buffers alive if the op ends with an MPI request unfinished.
  void start(OpRecord* op, std::chrono::steady_clock::time_point deadline, std::shared_ptr<void> memory);
  // Moves every transfer on; returns those that finished (their code and message set). A send
  // whose deadline passed, or a message left half-received, leaves the communicator out of step:
  // `outOfStep` then names why. A receive that matched nothing before its deadline does not.
  std::vector<OpRecord*> progress(std::string* outOfStep);
  // Ends every transfer with `code` and `message` (the communicator is closing or broken).
  std::vector<OpRecord*> fail(ErrorCode code, const std::string& message);
  bool idle() const { return transfers_.empty(); }

 private:
  struct Transfer;
  bool advance(Transfer& t, std::chrono::steady_clock::time_point now, std::string* outOfStep,
               std::vector<std::pair<int, int>>& unmatched);
  void probe(const OpRecord& op, const std::vector<std::pair<int, int>>& unmatched, int* flag, MPI_Message* message,
             MPI_Status* status);
  std::string peerName(int rank) const;

  MPI_Comm data_, answers_;
  const std::vector<std::string>* hosts_;
  std::vector<std::unique_ptr<Transfer>> transfers_;
};

}  // namespace braid
