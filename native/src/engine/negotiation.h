// Agreement before every op: each rank sends a small descriptor of the op it submitted to the
// communicator's rank 0, which compares them and answers every rank with one verdict. On
// disagreement every rank gets the same MISMATCH message naming the ranks and the fields that
// differ; a rank that never submits is named in a stall warning and, at the timeout, in a TIMEOUT
// error on the ranks that did. Steady-state cost: one small message to rank 0 and one back.
// Rank 0 hears from every rank before answering, so a completed negotiation is also a barrier.
#pragma once
#include <mpi.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/op.h"
#include "transport/shm_transport.h"
#include "transport/tcp_transport.h"

namespace braid {

struct NegotiationLimits {
  std::chrono::steady_clock::time_point deadline;
  int stallWarningMs;
  // When a rank has not submitted the op for this long, the waiting ranks end the whole job
  // (MPI_Abort) with a message naming it, as Horovod's stall shutdown does; 0: never.
  int stallShutdownMs = 0;
  // Each rank's host, for messages ("rank 3 (host b)"); null: ranks only.
  const std::vector<std::string>* hosts = nullptr;
  // negotiateOpShm only: when the other ranks have not all arrived by then, throw HandOff instead
  // of waiting on (an op tried on the caller's thread; see Engine::runInline).
  std::chrono::steady_clock::time_point handOffAt = std::chrono::steady_clock::time_point::max();
  // The ops queued behind this one on this rank, for the stall report (" (queued behind it:
  // 'a', 'b')"); called only when a stall is reported.
  std::function<std::string()> queuedBehind;
};

// Throws BraidException with MISMATCH or TIMEOUT (the same code on every rank that gets an answer).
void negotiateOp(MPI_Comm control, int rank, int size, const OpRecord& op, const NegotiationLimits& limits);

// The same agreement for ranks on one host, through shared memory: every rank publishes its
// descriptor and passes a flag barrier, then reads all descriptors and reaches the same verdict
// itself. No message and no system call; a rank that never arrives is named by every rank that
// did, from the barrier's flags.
// `beforeArrive`, if given, runs after the descriptor is published and before this rank marks
// its arrival: the shared-memory all-reduce copies its first chunk in there, so that one barrier
// serves both the agreement and the data (on a mismatch that copy is simply never read).
// With op.resumeEpoch set, this rank published and arrived already (HandOff): it only waits.
void negotiateOpShm(ShmTransport& shm, const OpRecord& op, const NegotiationLimits& limits,
                    const std::function<void()>& beforeArrive = nullptr);

// The same agreement without rank 0, for communicators with a TCP transport (ranks on several
// hosts): every rank sends its descriptor to every other over the op's own connections and, having
// all of them, reaches the same verdict itself. Steady-state cost: one exchange, which takes one
// one-way latency between hosts (rank 0's gather and reply took a round trip plus rank 0's own
// turn-around, all through MPI). A missing rank is named by the lowest rank that waits for it;
// past the deadline the waiting ranks fail with TIMEOUT naming it.
// `state` holds the exchange (it is the communicator's, reused op after op): when the op was tried
// on the caller's thread and the other ranks had not all answered by limits.handOffAt, this
// throws HandOff and the engine thread, called again with op.resumeEpoch set, waits on from there.
//
// The exchange may carry data: with `payload`, each rank's buffer follows its descriptor on the
// same connection (the direct all-reduce: agreement and data in one one-way latency). A rank reads
// a peer's buffer only once that peer's descriptor matched its own; a peer whose descriptor
// differs may have sent a buffer too, or none, of its own length: `sentAfter`, the engine's rule
// for what an op's descriptor sends after it (the same on every rank), says, and those bytes are
// read off and dropped, so that a MISMATCH leaves every connection in step.
struct PeerAgreement;
using SentAfterRule = std::function<size_t(OpKind kind, Algorithm algorithm, DType dtype, size_t count)>;
std::shared_ptr<PeerAgreement> newPeerAgreement(SentAfterRule sentAfter);
struct AgreementPayload {
  const void* data = nullptr;  // this rank's buffer: sentAfter(this op) bytes of it
  size_t bytes = 0;
};
void negotiateOpPeers(TcpTransport& transport, const OpRecord& op, const NegotiationLimits& limits, PeerAgreement& state,
                      const AgreementPayload* payload = nullptr);
// After negotiateOpPeers with a payload: every rank's buffer, in rank order, back to back.
uint8_t* agreedBuffers(PeerAgreement& state);

}  // namespace braid
