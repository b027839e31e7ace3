// Pipelined chain broadcast: root -> root+1 -> ... -> root-1, in segments, each rank forwarding
// a segment as soon as it arrives.
//
// Cost (n ranks, m bytes, segments of s bytes): (n - 2 + m/s) * (alpha + s*beta), which tends to
// m*beta for large m: every link carries the message once, at the same time.
#include <algorithm>

#include "algorithms/collective.h"

namespace braid {

void broadcastPipeline(CollectiveArgs& args, void* buf, size_t bytes, int root) {
  Transport& t = args.transport;
  const int n = t.size();
  if (bytes == 0 || n == 1) return;
  const int vr = (t.rank() - root + n) % n;
  const int prev = (t.rank() + n - 1) % n, next = (t.rank() + 1) % n;
  const bool forwards = vr < n - 1;
  uint8_t* data = static_cast<uint8_t*>(buf);
  const size_t seg = std::max<size_t>(1, args.segmentBytes);

  std::vector<RequestId> sends;
  if (vr == 0) {
    for (size_t at = 0; at < bytes; at += seg) sends.push_back(t.isend(next, data + at, std::min(seg, bytes - at)));
  } else {
    std::vector<RequestId> recvs;
    for (size_t at = 0; at < bytes; at += seg) recvs.push_back(t.irecv(prev, data + at, std::min(seg, bytes - at)));
    size_t i = 0;
    for (size_t at = 0; at < bytes; at += seg, ++i) {
      t.wait(recvs[i]);
      if (forwards) sends.push_back(t.isend(next, data + at, std::min(seg, bytes - at)));
    }
  }
  for (RequestId s : sends) t.wait(s);
}

}  // namespace braid
