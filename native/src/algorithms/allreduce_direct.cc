// Direct all-reduce: every rank sends its whole buffer to every other, then reduces all n buffers
// itself, in rank order.
//
// Cost (n ranks, m bytes): one step, alpha + (n-1)*m*beta + (n-1)*m*gamma (the n-1 messages go
// out at once; on a host with L ranks its link carries L*(n-L)*m each way). The fewest steps of
// any algorithm and the most data per rank: for small messages only, where one latency is the
// whole cost. Across hosts its one exchange also carries the op's agreement (negotiation.h): each
// rank's buffer follows its descriptor on the same connection, so agreement and data together take
// one one-way latency.
//
// Every rank folds the same buffers in the same order (((x0 op x1) op x2) ...), so all ranks end
// with the same bits.
#include <algorithm>
#include <cstring>
#include <vector>

#include "algorithms/collective.h"
#include "kernels/reduce.h"

namespace braid {

namespace {
// Folds every rank's buffer in rank order into buf, where rank p's is `of(p)` (this rank's may be
// buf itself): the running result lives in a peer's slot once it is read (never in a buffer
// still to be read), and the last step writes buf.
template <typename Of>
void foldInRankOrder(CollectiveArgs& args, void* buf, size_t count, int n, Of of) {
  if (n == 2) {
    reduceTimed(args, buf, of(0), of(1), count);
  } else {
    void* acc = const_cast<void*>(of(0) != buf ? of(0) : of(1));
    reduceTimed(args, acc, of(0), of(1), count);
    for (int p = 2; p < n - 1; ++p) reduceTimed(args, acc, acc, of(p), count);
    reduceTimed(args, buf, acc, of(n - 1), count);
  }
  if (args.op == RedOp::kAvg) finishAverage(args.dtype, buf, count, n);
}
}  // namespace

void reduceInRankOrder(CollectiveArgs& args, void* buf, uint8_t* slots, size_t count) {
  const int n = args.transport.size();
  const size_t bytes = count * dtypeSize(args.dtype);
  if (count == 0 || n == 1) return;
  foldInRankOrder(args, buf, count, n, [&](int p) -> const void* { return slots + p * bytes; });
}

void allreduceDirect(CollectiveArgs& args, void* buf, size_t count) {
  Transport& t = args.transport;
  const int n = t.size(), r = t.rank();
  if (count == 0 || n == 1) return;
  const size_t bytes = count * dtypeSize(args.dtype);
  // A slot per peer; this rank's buffer is sent from where it is (no copy: at 1 MiB between two
  // hosts the copy made this 1.4x slower than recursive doubling's same exchange).
  args.scratch.resize(std::max(args.scratch.size(), bytes * n));
  uint8_t* slots = args.scratch.data();
  std::vector<RequestId> receives, sends;
  receives.reserve(n - 1);
  sends.reserve(n - 1);
  // Peers in the order after this rank, so that not every rank sends to rank 0 first.
  for (int i = 1; i < n; ++i) {
    const int p = (r + i) % n;
    receives.push_back(t.irecv(p, slots + p * bytes, bytes));
    sends.push_back(t.isend(p, buf, bytes));
  }
  for (RequestId id : receives) t.wait(id);
  // The sends read buf: it is written only once they are done.
  for (RequestId id : sends) t.wait(id);
  foldInRankOrder(args, buf, count, n, [&](int p) -> const void* { return p == r ? buf : slots + p * bytes; });
}

}  // namespace braid
