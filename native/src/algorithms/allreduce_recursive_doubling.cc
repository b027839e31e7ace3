// Recursive-doubling all-reduce, with the usual fold for rank counts that are not a power of two
// (Thakur, Rabenseifner & Gropp 2005).
//
// Cost (n ranks, p = largest power of two <= n, m bytes): log2(p) exchanges of the whole buffer,
// log2(p)*(alpha + m*beta + m*gamma); when n != p, two more steps (fold in, copy out) of
// alpha + m*beta. Fewest steps of all three for small messages, but every step moves the whole
// buffer, so it loses to the ring as messages grow.
//
// Non-power-of-two: of the first 2*(n-p) ranks, each even rank hands its data to the odd rank
// above it and sits out; the remaining p ranks do the exchanges; then the odd ranks hand the
// result back. In every exchange both partners compute op(lower group's part, higher group's
// part), the same expression, so all ranks end with the same bits.
#include <cstring>

#include "algorithms/collective.h"
#include "kernels/reduce.h"

namespace braid {

void allreduceRecursiveDoubling(CollectiveArgs& args, void* buf, size_t count) {
  Transport& t = args.transport;
  const int n = t.size(), r = t.rank();
  if (count == 0 || n == 1) return;
  const size_t bytes = count * dtypeSize(args.dtype);
  args.scratch.resize(std::max(args.scratch.size(), bytes));
  uint8_t* tmp = args.scratch.data();

  int p = 1;
  while (p * 2 <= n) p *= 2;
  const int rem = n - p;

  // Fold: rank 2i hands its data to rank 2i+1 for i < rem.
  int newRank;
  if (r < 2 * rem) {
    if (r % 2 == 0) {
      t.send(r + 1, buf, bytes);
      newRank = -1;
    } else {
      t.recv(r - 1, tmp, bytes);
      reduceTimed(args, buf, tmp, buf, count);  // op(lower rank, higher rank)
      newRank = r / 2;
    }
  } else {
    newRank = r - rem;
  }
  auto realRank = [&](int nr) { return nr < rem ? nr * 2 + 1 : nr + rem; };

  if (newRank >= 0) {
    for (int mask = 1; mask < p; mask <<= 1) {
      int partner = realRank(newRank ^ mask);
      t.sendrecv(partner, buf, bytes, partner, tmp, bytes);
      if ((newRank & mask) == 0) {
        reduceTimed(args, buf, buf, tmp, count);
      } else {
        reduceTimed(args, buf, tmp, buf, count);
      }
    }
    if (args.op == RedOp::kAvg) finishAverage(args.dtype, buf, count, n);
  }

  // Unfold: odd ranks hand the result back.
  if (r < 2 * rem) {
    if (r % 2 == 0) {
      t.recv(r + 1, buf, bytes);
    } else {
      t.send(r - 1, buf, bytes);
    }
  }
}

}  // namespace braid
