// Binomial-tree broadcast.
//
// Cost (n ranks, m bytes): ceil(log2 n) steps, ceil(log2 n)*(alpha + m*beta). Best for small
// messages; for large ones the whole message crosses each of the log n levels in turn, which is
// why `auto` switches to the pipelined chain (broadcast_pipeline.cc).
#include "algorithms/collective.h"

namespace braid {

void broadcastBinomial(CollectiveArgs& args, void* buf, size_t bytes, int root) {
  Transport& t = args.transport;
  const int n = t.size();
  if (bytes == 0 || n == 1) return;
  const int vr = (t.rank() - root + n) % n;  // rank relative to the root
  int mask = 1;
  while (mask < n) {
    if (vr & mask) {
      t.recv((vr - mask + root) % n, buf, bytes);
      break;
    }
    mask <<= 1;
  }
  std::vector<RequestId> sends;
  for (mask >>= 1; mask > 0; mask >>= 1) {
    if (vr + mask < n) sends.push_back(t.isend((vr + mask + root) % n, buf, bytes));
  }
  for (RequestId s : sends) t.wait(s);
}

}  // namespace braid
