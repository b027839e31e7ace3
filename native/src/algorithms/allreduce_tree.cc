// Tree all-reduce: binomial-tree reduce to rank 0, then binomial-tree broadcast.
//
// Cost (n ranks, m bytes): 2*ceil(log2 n) steps, 2*ceil(log2 n)*(alpha + m*beta) + ceil(log2 n)*m*gamma.
// Chosen for small messages, where the alpha terms dominate: log n latencies against the ring's
// 2(n-1). Why binomial and not NCCL's double binary tree: the double tree's gain is bandwidth
// (each tree carries half the data, pipelined), and large messages go to the ring here anyway;
// for the small messages this algorithm serves, both trees have the same log n depth, and the
// binomial tree needs no pipelining and no second tree. Every partial result is combined as
// op(lower ranks' part, higher ranks' part) and the root's result is copied out, so all ranks
// get the same bits.
#include <cstring>

#include "algorithms/collective.h"
#include "kernels/reduce.h"

namespace braid {

void allreduceTree(CollectiveArgs& args, void* buf, size_t count) {
  Transport& t = args.transport;
  const int n = t.size(), r = t.rank();
  if (count == 0 || n == 1) return;
  const size_t bytes = count * dtypeSize(args.dtype);
  args.scratch.resize(std::max(args.scratch.size(), bytes));
  uint8_t* tmp = args.scratch.data();

  // Reduce: at step `mask`, ranks with that bit set send their subtree's partial to r - mask.
  for (int mask = 1; mask < n; mask <<= 1) {
    if (r & mask) {
      t.send(r - mask, buf, bytes);
      break;
    }
    if (r + mask < n) {
      t.recv(r + mask, tmp, bytes);
      reduceTimed(args, buf, buf, tmp, count);
    }
  }
  if (args.op == RedOp::kAvg && r == 0) finishAverage(args.dtype, buf, count, n);
  broadcastBinomial(args, buf, bytes, 0);
}

}  // namespace braid
