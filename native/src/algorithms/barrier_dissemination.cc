// Dissemination barrier (Hensgen, Finkel & Manber).
//
// Cost: ceil(log2 n) rounds of one empty message each way, ceil(log2 n)*alpha. Round k signals
// rank r+2^k and waits for rank r-2^k, so after the last round every rank has heard, directly or
// not, from every other.
#include "algorithms/collective.h"

namespace braid {

void barrierDissemination(Transport& t) {
  const int n = t.size(), r = t.rank();
  uint8_t out = 0, in = 0;
  for (int k = 1; k < n; k <<= 1) t.sendrecv((r + k) % n, &out, 1, (r - k + n) % n, &in, 1);
}

}  // namespace braid
