// Ring reduce-scatter, chunked and pipelined.
//
// Cost (n ranks, m bytes in all): n-1 steps; each rank sends and receives (n-1)/n * m bytes and
// reduces (n-1)/n * m bytes: (n-1)*alpha + (n-1)/n * m * (beta + gamma). Blocks are cut into
// segments (CollectiveArgs::segmentBytes) that flow around the ring on their own: a segment is
// forwarded to the right neighbour as soon as it has been reduced, so reducing one segment
// overlaps receiving the next, and the receive slots (kSlots segments) stay in cache.
//
// Block b ends on rank b; the final value of every block is computed once, on that rank, so it
// is the same bits whichever rank later copies it.
#include <algorithm>

#include "algorithms/collective.h"

namespace braid {

namespace {
constexpr int kSlots = 4;

struct Segment {
  int step;
  size_t offset;  // elements
  size_t count;
};
}  // namespace

void ringReduceScatter(CollectiveArgs& args, uint8_t* buf, const BlockLayout& layout) {
  Transport& t = args.transport;
  const int n = t.size(), r = t.rank();
  if (n == 1) return;
  const size_t es = dtypeSize(args.dtype);
  const size_t segElems = std::max<size_t>(1, args.segmentBytes / es);
  const int right = (r + 1) % n, left = (r + n - 1) % n;
  // At step s this rank sends block (r-s-1) and receives block (r-s-2), so that after n-1 steps
  // it holds block r complete.
  auto sendBlock = [&](int s) { return ((r - s - 1) % n + n) % n; };
  auto recvBlock = [&](int s) { return ((r - s - 2) % n + 2 * n) % n; };

  std::vector<Segment> incoming;
  for (int s = 0; s < n - 1; ++s) {
    int b = recvBlock(s);
    for (size_t at = layout.offset[b]; at < layout.offset[b + 1]; at += segElems)
      incoming.push_back({s, at, std::min(segElems, layout.offset[b + 1] - at)});
  }

  const size_t slotBytes = segElems * es;
  args.scratch.resize(std::max(args.scratch.size(), kSlots * slotBytes));
  uint8_t* slots = args.scratch.data();

  std::vector<RequestId> sends;
  int b0 = sendBlock(0);
  for (size_t at = layout.offset[b0]; at < layout.offset[b0 + 1]; at += segElems)
    sends.push_back(t.isend(right, buf + at * es, std::min(segElems, layout.offset[b0 + 1] - at) * es));

  RequestId recvs[kSlots];
  const size_t total = incoming.size();
  for (size_t g = 0; g < total && g < kSlots; ++g)
    recvs[g] = t.irecv(left, slots + g * slotBytes, incoming[g].count * es);

  for (size_t g = 0; g < total; ++g) {
    const Segment& seg = incoming[g];
    uint8_t* slot = slots + (g % kSlots) * slotBytes;
    t.wait(recvs[g % kSlots]);
    uint8_t* local = buf + seg.offset * es;
    reduceTimed(args, local, slot, local, seg.count);
    if (g + kSlots < total) recvs[g % kSlots] = t.irecv(left, slot, incoming[g + kSlots].count * es);
    if (seg.step < n - 2) sends.push_back(t.isend(right, local, seg.count * es));
  }
  for (RequestId s : sends) t.wait(s);
}

}  // namespace braid
