// Ring all-gather, pipelined.
//
// Cost (n ranks, m bytes in all): n-1 steps; each rank sends and receives (n-1)/n * m bytes:
// (n-1)*alpha + (n-1)/n * m * beta. Segments are forwarded to the right neighbour as soon as
// they arrive, straight from and into the destination buffer: no copies, no scratch.
#include <algorithm>

#include "algorithms/collective.h"

namespace braid {

void ringAllgather(CollectiveArgs& args, uint8_t* buf, const BlockLayout& layout) {
  Transport& t = args.transport;
  const int n = t.size(), r = t.rank();
  if (n == 1) return;
  const size_t es = dtypeSize(args.dtype);
  const size_t segElems = std::max<size_t>(1, args.segmentBytes / es);
  const int right = (r + 1) % n, left = (r + n - 1) % n;

  struct Segment {
    int step;
    size_t offset, count;
    RequestId request;
  };
  std::vector<Segment> incoming;
  // Step s receives block (r-s-1); it is sent on at step s+1.
  for (int s = 0; s < n - 1; ++s) {
    int b = ((r - s - 1) % n + n) % n;
    for (size_t at = layout.offset[b]; at < layout.offset[b + 1]; at += segElems) {
      size_t c = std::min(segElems, layout.offset[b + 1] - at);
      incoming.push_back({s, at, c, t.irecv(left, buf + at * es, c * es)});
    }
  }
  std::vector<RequestId> sends;
  for (size_t at = layout.offset[r]; at < layout.offset[r + 1]; at += segElems)
    sends.push_back(t.isend(right, buf + at * es, std::min(segElems, layout.offset[r + 1] - at) * es));
  for (Segment& seg : incoming) {
    t.wait(seg.request);
    if (seg.step < n - 2) sends.push_back(t.isend(right, buf + seg.offset * es, seg.count * es));
  }
  for (RequestId s : sends) t.wait(s);
}

}  // namespace braid
