// Ring all-reduce: ring reduce-scatter, then ring all-gather (Patarasuk & Yuan; what Horovod and
// NCCL use for large messages).
//
// Cost (n ranks, m bytes): 2(n-1) steps, 2(n-1)*alpha + 2(n-1)/n * m * beta + (n-1)/n * m * gamma.
// Bandwidth-optimal: each rank sends 2(n-1)/n * m bytes whatever n, which is why `auto` picks it
// for large messages; the 2(n-1) latency terms are why it loses to the tree for small ones.
// Both phases are segmented and pipelined (see reducescatter_ring.cc).
#include "algorithms/collective.h"
#include "kernels/reduce.h"

namespace braid {

void allreduceRing(CollectiveArgs& args, void* buf, size_t count) {
  const int n = args.transport.size(), r = args.transport.rank();
  if (count == 0 || n == 1) return;
  BlockLayout layout = BlockLayout::even(count, n);
  uint8_t* bytes = static_cast<uint8_t*>(buf);
  ringReduceScatter(args, bytes, layout);
  if (args.op == RedOp::kAvg)
    finishAverage(args.dtype, bytes + layout.offset[r] * dtypeSize(args.dtype), layout.count(r), n);
  ringAllgather(args, bytes, layout);
}

}  // namespace braid
