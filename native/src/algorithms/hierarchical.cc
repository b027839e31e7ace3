// Hierarchical collectives, for communicators whose ranks run on H hosts with L ranks on each
// (what NCCL and Horovod's hierarchical all-reduce do): the ranks of a host work through their
// shared-memory region, and only one rank per block crosses the network, all L local ranks at
// once, each with its peers of the same local index on the other hosts.
//
// All-reduce (m bytes): local reduce-scatter through shared memory (local rank l ends with block
// l, m/L bytes, reduced over the host), all-reduce of block l among the H ranks with local index
// l over the network (ring or recursive doubling, `inter`), local all-gather. Per rank on the
// network: 2(H-1)/H * m/L bytes, so a host sends 2(H-1)/H * m in all: the network lower bound,
// where a flat ring over all H*L ranks sends as much but pays 2(HL-1) latency steps and crosses
// the network on some of them with every rank's traffic through one link.
//   T = shm(m) + inter(H, m/L) + shm(m), shm(m) ~ m / shm_bandwidth + rounds * barrier.
// Broadcast: the root's peers (its local index, one per host) broadcast over the network, then
// each host broadcasts through shared memory. All-gather: local rank l gathers the blocks of
// local index l from every host over the network (ring), then the host shares them through
// shared memory.
//
// Every element is reduced by one rank (its block's owner, slots in local-rank order, then the
// network algorithm, which gives identical bits to its ranks) and copied by the others, so every
// rank gets the same bits.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "algorithms/collective.h"
#include "algorithms/store_choice.h"
#include "kernels/copy.h"
#include "kernels/reduce.h"
#include "transport/shm_transport.h"

namespace braid {

namespace {

// Rounds of the local phases move `piece` elements of every block at a time: each round a rank
// fills its slot's next half (alternating halves keep a fast rank from overwriting what a slow
// one still reads: a rank writes round k+2 only after everyone passed round k+1's barrier, which
// they reach only after reading round k).
size_t pieceElems(const ShmTransport& shm, size_t es, int blocks) {
  return std::max<size_t>(1, shm.slotBytes() / 2 / es / static_cast<size_t>(blocks));
}

// Pipelining unit of the hierarchical all-reduce with an overlap thread: large enough that a
// thread hand-off (tens of microseconds) is small beside its network step.
constexpr size_t kOverlapSegmentBytes = 2 << 20;

// The local phases' store kind, learned from their own timings (the shared-memory all-reduce
// keeps its own: other copies, other timings). Ops run one at a time, so no lock.
StoreChoice& localPhasesStoreChoice() {
  static StoreChoice choice;
  return choice;
}

size_t halfOffset(ShmTransport& shm) { return static_cast<size_t>(shm.nextHalf()) * (shm.slotBytes() / 2); }

// Afterwards block l (this rank's) of `data` holds the block reduced over the host's ranks.
// As in allreduce_shm.cc, local ranks 0 and 1 reduce their own block from `data` in place and
// leave it out of the slot (a later rank's block would be overwritten by the first reduction
// before its turn, so it goes in too): at L=2 a rank copies m/2 into its slot, not m.
void localReduceScatter(CollectiveArgs& args, ShmTransport& shm, uint8_t* data, const BlockLayout& layout, bool streaming) {
  const int n = shm.size(), me = shm.rank();
  const size_t es = dtypeSize(args.dtype);
  const size_t piece = pieceElems(shm, es, n);
  const bool ownInPlace = me < 2;
  size_t longest = 0;
  for (int b = 0; b < n; ++b) longest = std::max(longest, layout.count(b));
  for (size_t at = 0; at < longest; at += piece) {
    const size_t half = halfOffset(shm);
    uint8_t* slot = shm.slot(me) + half;
    for (int b = 0; b < n; ++b) {
      if (b == me && ownInPlace) continue;
      const size_t len = layout.count(b) > at ? std::min(piece, layout.count(b) - at) : 0;
      if (len) copyWithStores(streaming, slot + b * piece * es, data + (layout.offset[b] + at) * es, len * es);
    }
    shm.barrier();
    const size_t len = layout.count(me) > at ? std::min(piece, layout.count(me) - at) : 0;
    if (len == 0) continue;
    uint8_t* out = data + (layout.offset[me] + at) * es;
    const size_t off = half + me * piece * es;
    // Slot order (0, 1, ...) whichever rank reduces, so every host's ranks get the same bits.
    auto part = [&](int s) -> const uint8_t* { return s == me && ownInPlace ? out : shm.slot(s) + off; };
    reduceTimed(args, out, part(0), part(1), len);
    for (int s = 2; s < n; ++s) reduceTimed(args, out, out, part(s), len);
  }
}

// Needs block l of `data` filled on local rank l; afterwards every block is filled everywhere.
// Blocks are in bytes here (`layout` over bytes).
void localAllgather(ShmTransport& shm, uint8_t* data, const BlockLayout& layout, bool streaming) {
  const int n = shm.size(), me = shm.rank();
  const size_t piece = pieceElems(shm, 1, n);
  size_t longest = 0;
  for (int b = 0; b < n; ++b) longest = std::max(longest, layout.count(b));
  for (size_t at = 0; at < longest; at += piece) {
    const size_t half = halfOffset(shm);
    const size_t mine = layout.count(me) > at ? std::min(piece, layout.count(me) - at) : 0;
    if (mine) copyWithStores(streaming, shm.slot(me) + half + me * piece, data + layout.offset[me] + at, mine);
    shm.barrier();
    for (int b = 0; b < n; ++b) {
      if (b == me) continue;
      const size_t len = layout.count(b) > at ? std::min(piece, layout.count(b) - at) : 0;
      if (len) std::memcpy(data + layout.offset[b] + at, shm.slot(b) + half + b * piece, len);
    }
  }
}

// From local rank `root` to the host's other ranks.
void localBroadcast(ShmTransport& shm, uint8_t* data, size_t bytes, int root) {
  const size_t piece = shm.slotBytes() / 2;
  for (size_t at = 0; at < bytes; at += piece) {
    const size_t half = halfOffset(shm);
    const size_t len = std::min(piece, bytes - at);
    if (shm.rank() == root) std::memcpy(shm.slot(root) + half, data + at, len);
    shm.barrier();
    if (shm.rank() != root) std::memcpy(data + at, shm.slot(root) + half, len);
  }
}

}  // namespace

void allreduceHierarchical(CollectiveArgs& cross, ShmTransport& local, void* buf, size_t count, CollectiveFn inter,
                           Overlap* overlap) {
  const int hosts = cross.transport.size(), perHost = local.size();
  if (count == 0 || hosts * perHost == 1) return;
  const size_t es = dtypeSize(cross.dtype);
  uint8_t* data = static_cast<uint8_t*>(buf);
  const int me = local.rank();
  // 'avg' sums across both levels and divides once, by every rank of the communicator.
  CollectiveArgs sum = cross;
  if (cross.op == RedOp::kAvg) sum.op = RedOp::kSum;
  // The network step may run on the overlap thread: its own arguments, no timeline recorder
  // (the reduce spans are this thread's).
  CollectiveArgs network = sum;
  network.recorder = nullptr;

  struct Segment {
    size_t start;
    BlockLayout layout;
  };
  const size_t segmentElems = overlap ? std::max<size_t>(perHost, kOverlapSegmentBytes / es) : count;
  std::vector<Segment> segments;
  for (size_t start = 0; start < count; start += segmentElems)
    segments.push_back({start, BlockLayout::even(std::min(segmentElems, count - start), perHost)});
  // What the local phases take (the network step left out) is what the store choice learns from.
  const size_t bytes = count * es;
  const bool streaming = localPhasesStoreChoice().streaming(bytes);
  const bool timed = bytes >= StoreChoice::kMinBytes;  // small ops stay free of clock reads
  double localSeconds = 0;
  auto timedLocal = [&](auto&& phase) {
    if (!timed) return phase();
    const auto start = std::chrono::steady_clock::now();
    phase();
    localSeconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  auto reduceScatter = [&](const Segment& s) {
    timedLocal([&] { localReduceScatter(sum, local, data + s.start * es, s.layout, streaming); });
  };
  auto acrossHosts = [&, hosts, perHost, es, data, me](const Segment& s) {
    uint8_t* mine = data + (s.start + s.layout.offset[me]) * es;
    const size_t myCount = s.layout.count(me);
    if (hosts > 1 && myCount > 0) inter(network, mine, myCount);
    if (cross.op == RedOp::kAvg) finishAverage(cross.dtype, mine, myCount, hosts * perHost);
  };
  auto allgather = [&](const Segment& s) {
    BlockLayout layout = s.layout;
    for (auto& o : layout.offset) o *= es;
    timedLocal([&] { localAllgather(local, data + s.start * es, layout, streaming); });
  };
  if (segments.size() == 1) {
    reduceScatter(segments[0]);
    acrossHosts(segments[0]);
    allgather(segments[0]);
    localPhasesStoreChoice().record(bytes, streaming, localSeconds);
    return;
  }
  // Pipelined: segment k crosses the network while this thread reduces k+1 and gathers k-1.
  try {
    reduceScatter(segments[0]);
    overlap->start([&, k = size_t{0}] { acrossHosts(segments[k]); });
    for (size_t k = 1; k < segments.size(); ++k) {
      reduceScatter(segments[k]);
      overlap->finish();
      overlap->start([&, k] { acrossHosts(segments[k]); });
      allgather(segments[k - 1]);
    }
    overlap->finish();
    allgather(segments.back());
    localPhasesStoreChoice().record(bytes, streaming, localSeconds);
  } catch (...) {
    // The network step must be over before the buffer and transports can go.
    try {
      overlap->finish();
    } catch (...) {
    }
    throw;
  }
}

void broadcastHierarchical(CollectiveArgs& cross, ShmTransport& local, void* buf, size_t bytes, int rootHost,
                           int rootLocal, BroadcastFn inter) {
  if (bytes == 0) return;
  uint8_t* data = static_cast<uint8_t*>(buf);
  if (local.rank() == rootLocal && cross.transport.size() > 1) inter(cross, data, bytes, rootHost);
  if (local.size() > 1) localBroadcast(local, data, bytes, rootLocal);
}

void allgatherHierarchical(CollectiveArgs& cross, ShmTransport& local, const void* in, size_t bytes, void* out,
                           const std::vector<int>& rankOf) {
  const int hosts = cross.transport.size(), perHost = local.size();
  const int me = local.rank(), myHost = cross.transport.rank();
  if (bytes == 0) return;
  // 1. Over the network, among the ranks of this local index: block h of `gathered` is the input
  //    of the rank with this local index on host h.
  std::vector<uint8_t>& gathered = cross.scratch;
  const size_t column = bytes * static_cast<size_t>(hosts);
  // The whole host's view, [local index][host][bytes], so that step 2 shares one block per rank.
  const size_t total = column * static_cast<size_t>(perHost);
  if (gathered.size() < total) gathered.resize(total);
  uint8_t* mineColumn = gathered.data() + column * me;
  std::memcpy(mineColumn + bytes * myHost, in, bytes);
  if (hosts > 1) {
    CollectiveArgs bytewise = cross;
    bytewise.dtype = DType::kUint8;
    ringAllgather(bytewise, mineColumn, BlockLayout::even(column, hosts));
  }
  // 2. Through shared memory: every local rank's column to every local rank.
  if (perHost > 1) {
    BlockLayout columns;
    columns.offset.resize(static_cast<size_t>(perHost) + 1);
    for (int l = 0; l <= perHost; ++l) columns.offset[l] = column * l;
    localAllgather(local, gathered.data(), columns, false);
  }
  // 3. Into rank order.
  uint8_t* result = static_cast<uint8_t*>(out);
  for (int l = 0; l < perHost; ++l)
    for (int h = 0; h < hosts; ++h)
      std::memcpy(result + bytes * rankOf[static_cast<size_t>(h) * perHost + l], gathered.data() + column * l + bytes * h, bytes);
}

}  // namespace braid
