// Point-to-point transfers over TCP sockets of Braid's own, for data between hosts (as gloo's and
// NCCL's socket transports): Open MPI's TCP transport moved about 0.4x of what plain sockets move
// between the same two hosts. MPI is used only to bootstrap (every rank's listening address is
// exchanged over the communicator) and stays the fallback (BRAID_TRANSPORT=mpi).
//
// Every pair of ranks gets `streams` connections, made once when the communicator is created.
// A message is a 16-byte header (length and a per-stream sequence number, checked on arrival)
// followed by the payload, written and read straight from and into the caller's buffer with one
// sendmsg/recvmsg each time the socket takes more (the messages queued on a connection go out in
// one sendmsg, up to a write's worth): no per-piece handshake and no copy. Messages
// of 512 KiB and more are cut into one stripe per stream. Only the engine thread touches it.
//
// Waiting: a few microseconds of non-blocking attempts (a peer on the same switch answers within
// tens of microseconds), then poll() on the sockets involved, so a rank waiting for a slower one
// sleeps in the kernel instead of spinning. A peer that closes its connection (its process ended)
// is ABORTED at once; one that goes silent is a TIMEOUT at the op's deadline.
#pragma once
#include <mpi.h>
#include <poll.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "transport/transport.h"

namespace braid {

struct TcpOptions {
  // BRAID_SOCKET_IFNAME, as NCCL_SOCKET_IFNAME: comma-separated interface name prefixes ("eth,ib"),
  // "=eth0" for an exact name, "^docker,lo" to exclude. Empty: the interface this host's name
  // resolves to, else the first interface that is up and not loopback.
  std::string interfaces;
  int streams = 1;  // BRAID_SOCKET_NSTREAMS: connections per pair of ranks (1-8)
  // Every rank on one host (BRAID_TRANSPORT=tcp on one machine): loopback suffices.
  bool loopback = false;
};

class TcpTransport final : public Transport {
 public:
  // Collective over `comm`: every rank listens, the addresses are exchanged over MPI, and each
  // rank connects to the ranks below it. Every rank gets the same outcome: a transport, or a
  // BraidException(BACKEND_UNAVAILABLE) naming the rank and address that failed.
  static std::unique_ptr<TcpTransport> create(MPI_Comm comm, const TcpOptions& options,
                                              const std::vector<std::string>& hosts,
                                              std::chrono::steady_clock::time_point deadline);
  ~TcpTransport() override;
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "tcp"; }
  RequestId isend(int peer, const void* data, size_t bytes) override;
  RequestId irecv(int peer, void* data, size_t bytes) override;
  void wait(RequestId request) override;
  // Moves what it can without blocking; true, with the request released, once it completed.
  bool test(RequestId request);
  // When a test() last moved bytes: a caller that polls with test() keeps spinning while a
  // transfer flows, as wait() does, and sleeps in idle() only once nothing has moved for a while.
  std::chrono::steady_clock::time_point lastMoved() const { return lastMoved_; }
  // Sleeps in poll() until a posted transfer can move, or `most` has passed.
  void idle(std::chrono::milliseconds most);
  void nativeAllreduce(void* data, size_t count, DType dtype, RedOp op) override;
  // Drops every posted request (none is touched again) and marks the streams out of step: the
  // communicator is unusable from then on. closeConnections() then closes them.
  size_t abandon(std::shared_ptr<void> memory) override;
  void closeConnections() override;
  // This rank's listening address ("10.0.0.1:40123"), for messages and tests.
  const std::string& address() const { return address_; }
  int streams() const { return streams_; }

  // Payload bytes per stripe at least: smaller messages go whole on the pair's first stream.
  static constexpr size_t kStripeMinBytes = 256 * 1024;

 private:
  TcpTransport() = default;
  struct Part {
    RequestId request;
    uint8_t* data;
    size_t bytes;
    size_t done = 0;  // header included
    uint8_t header[16];
  };
  struct Stream {
    int fd = -1;
    int peer = 0;
    uint64_t sent = 0, received = 0;  // messages, for the header check
    std::deque<Part> sends, recvs;
  };
  struct Request {
    int parts = 0;  // not yet done
    int peer = 0;
    bool send = false;
    bool live = false;
  };
  RequestId allocate(int peer, bool send);
  RequestId post(int peer, bool send, uint8_t* data, size_t bytes);
  // Moves what the sockets take or give without blocking; true if anything moved.
  bool progress(Stream& stream);
  bool progressAll();
  void fail(const Stream& stream, const std::string& why);
  Stream& stream(int peer, int index) { return streams_by_peer_[static_cast<size_t>(peer) * streams_ + index]; }

  int rank_ = 0, size_ = 1, streams_ = 1;
  std::string address_;
  std::vector<Stream> streams_by_peer_;  // size * streams; this rank's own are unused
  std::vector<int> active_;              // streams with posted parts (indices into streams_by_peer_)
  std::vector<Request> requests_;
  std::vector<RequestId> freeList_;
  std::string broken_;  // set once a connection failed: every later call throws ABORTED
  bool outOfStep_ = false;  // abandon() dropped requests: the streams are unusable, to be closed
  std::vector<pollfd> pollSet_;  // idle()'s, reused
  std::chrono::steady_clock::time_point lastMoved_{};
};

// The address this host would advertise under `options` (for `braid` diagnostics and tests);
// throws BACKEND_UNAVAILABLE naming the interfaces it saw when none matches.
std::string chooseSocketAddress(const TcpOptions& options);

}  // namespace braid
