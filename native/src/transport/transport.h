// What an algorithm may ask of a transport: point-to-point byte transfers between the ranks of
// one communicator, posted without blocking and completed by wait(). Algorithms are written
// against this interface only, so the same ring or tree runs over MPI, shared memory or NCCL.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"

namespace braid {

using RequestId = int;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

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
};

}  // namespace braid
