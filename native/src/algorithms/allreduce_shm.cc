// Shared-memory all-reduce, for communicators whose ranks all run on one host.
//
// Cost (n ranks, m bytes, chunks of c bytes per rank): per chunk, every rank copies into its slot
// the (n-1)/n of the chunk that the other ranks reduce (ranks 0 and 1; the others all of it),
// reduces its own 1/n share across the n ranks' data (its own from its buffer, the others' from
// their slots), publishes that share, and
// copies the other (n-1)/n of the chunk back: at n=2 about 2.25m bytes read and 1.75m written per
// rank (copying the whole chunk in, as before, cost 0.5m more of each), and 2 flag barriers per
// chunk, with no system calls. Chunks alternate
// between two halves of each slot (across ops too), so writing chunk k+1 never races with peers
// still reading chunk k, and they are small enough to stay in the shared cache.
//
// Every share is reduced by one rank, in rank order (slot 0, slot 1, ...), and copied by the
// others, so every rank gets the same bits.
//
// From 64 KiB up, what goes into a slot is written with plain or with streaming stores, as
// StoreChoice (store_choice.h) finds faster lately: streaming sends the bytes through memory
// rather than the writer's cache, which on the development VM kept 0.5-16 MiB at 6-9 GB/s in
// the minutes when the cache-to-cache path fell to 1.5-2.0 GB/s (the two vCPUs on different
// dies, it seems), and cost half the speed in the other minutes.
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
// One for the process: the regime is the machine's. Ops run one at a time (the engine's busy
// claim orders them, whichever thread runs them), so no lock.
StoreChoice& storeChoice() {
  static StoreChoice choice;
  return choice;
}
}  // namespace

void allreduceShm(CollectiveArgs& args, ShmTransport& shm, void* buf, size_t count, const FirstBarrier& firstBarrier,
                  bool resumed, ChunkTransform* transform, void* second) {
  const int n = shm.size(), r = shm.rank();
  if (count == 0 || n == 1) return;  // a world of one: runShm applies a transform itself
  const size_t es = dtypeSize(args.dtype);
  // Each half of a slot holds one chunk.
  const size_t chunkElems = std::max<size_t>(1, shm.slotBytes() / 2 / es);
  uint8_t* data = static_cast<uint8_t*>(buf);
  const size_t bytes = count * es;
  const bool streaming = storeChoice().streaming(bytes);
  // Only ops large enough for the choice are timed: small ones stay free of clock reads. Not
  // those with a transform either: its compute would be taken for the stores' cost.
  const bool timed = bytes >= StoreChoice::kMinBytes && transform == nullptr;
  std::chrono::steady_clock::time_point moving{};  // after the first barrier: the peers are in
  auto toSlot = [streaming](void* dst, const void* src, size_t n) { copyWithStores(streaming, dst, src, n); };
  for (size_t start = 0; start < count; start += chunkElems) {
    const size_t len = std::min(chunkElems, count - start);
    const int half = start == 0 && resumed ? shm.half() : shm.nextHalf();
    const size_t halfOffset = static_cast<size_t>(half) * (shm.slotBytes() / 2);
    // With a transform, this rank's share is made in (and reduced into) the transform's buffer,
    // which stays in the cache; the op's buffer gets what the transform puts there.
    uint8_t* mine = transform != nullptr ? transform->chunkBuffer(chunkElems * es) : data + start * es;
    // This rank's share of the chunk: elements [lo, hi). Ranks 0 and 1, whose parts the first
    // reduction reads, read their own part in place and leave it out of the slot; a later rank's
    // part would be overwritten by that first reduction before its turn, so it goes in too.
    const size_t lo = len * r / n, hi = len * (r + 1) / n;
    const bool ownInPlace = r < 2;
    auto copyIn = [&] {
      uint8_t* slot = shm.slot(r) + halfOffset;
      if (transform != nullptr) {
        // Made where it goes, in order: the others' shares straight into the slot (no copy), our
        // own where the reduction reads it.
        if (!ownInPlace) return transform->in(slot, second, start, start + len);
        transform->in(slot, second, start, start + lo);
        transform->in(mine + lo * es, second, start + lo, start + hi);
        return transform->in(slot + hi * es, second, start + hi, start + len);
      }
      if (!ownInPlace) return toSlot(slot, mine, len * es);
      toSlot(slot, mine, lo * es);
      toSlot(slot + hi * es, mine + hi * es, (len - hi) * es);
    };
    if (start == 0 && firstBarrier) {
      try {
        firstBarrier(copyIn);
      } catch (const HandOff&) {
        throw;  // the half stays taken: the op goes on with it
      } catch (...) {
        shm.nextHalf();  // the op did not happen: give the half back so all ranks stay in step
        throw;
      }
    } else {
      copyIn();
      shm.barrier();
    }
    if (start == 0 && timed) moving = std::chrono::steady_clock::now();

    if (hi > lo) {
      const size_t off = halfOffset + lo * es;
      uint8_t* out = mine + lo * es;  // accumulate in our own buffer, then publish
      // Rank order (slot 0, 1, ...) whoever reduces, so every rank gets the same bits.
      auto part = [&](int s) -> const uint8_t* { return s == r && ownInPlace ? out : shm.slot(s) + off; };
      reduceTimed(args, out, part(0), part(1), hi - lo);
      for (int s = 2; s < n; ++s) reduceTimed(args, out, out, part(s), hi - lo);
      if (args.op == RedOp::kAvg) finishAverage(args.dtype, out, hi - lo, n);
      toSlot(shm.slot(r) + off, out, (hi - lo) * es);
    }
    shm.barrier();

    for (int s = 0; s < n; ++s) {
      const size_t slo = len * s / n, shi = len * (s + 1) / n;
      const uint8_t* reduced = s == r ? mine + slo * es : shm.slot(s) + halfOffset + slo * es;
      // A transform takes each share from where it lies; otherwise the others' are copied in.
      if (transform != nullptr) {
        transform->out(reduced, buf, second, start + slo, start + shi);
      } else if (s != r && shi > slo) {
        std::memcpy(mine + slo * es, reduced, (shi - slo) * es);
      }
    }
  }
  if (timed) storeChoice().record(bytes, streaming, std::chrono::duration<double>(std::chrono::steady_clock::now() - moving).count());
}

}  // namespace braid
