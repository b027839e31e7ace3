// NCCL over the CUDA emulation (cuda_runtime.h here), for testing Braid's use of NCCL where there
// is no GPU: the entry points Braid calls (nccl_api.h) with NCCL's non-blocking behaviour (init
// returns ncclInProgress; the async error says when every rank has joined), collectives queued on
// the caller's stream like any device work, their buffers checked, and ncclCommAbort dropping
// what is in flight. Ranks are processes on one machine meeting in POSIX shared memory (one
// segment per communicator to join, one per collective, named by the unique id): each copies its
// contribution in, and once all have, every rank reduces the same slots in rank order with Braid's
// CPU kernels (so all get the same bits; avg divides once, as Braid's host algorithms do). A peer
// that never joins or never calls leaves the others not ready, so their deadlines and aborts are
// what end it. mirroredId() instead makes a communicator whose other ranks are mirrors of this one
// (each contributes the same values): one process can then see a sum of two ranks (2x its input).
// BRAID_NCCL_EMULATION_STALL_RANK makes one rank's collectives hang, as a stuck GPU would.
#pragma once
#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string>

#include "gpu/nccl_api.h"
#include "gpu/nccl_loader.h"
#include "kernels/reduce.h"

namespace braid_cuda_emulation {

namespace nccl = braid::nccl;

// BRAID_NCCL_EMULATION_TRACE=<dir>: each process appends what its emulated collectives do to
// <dir>/trace-<pid>.txt, one unbuffered line per event (to find why a run hangs).
inline void trace(const char* format, ...) {
  static const int fd = [] {
    const char* dir = std::getenv("BRAID_NCCL_EMULATION_TRACE");
    if (dir == nullptr) return -1;
    const std::string path = std::string(dir) + "/trace-" + std::to_string(getpid()) + ".txt";
    return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  }();
  if (fd < 0) return;
  char line[512];
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  int n = std::snprintf(line, sizeof line, "%lld ", static_cast<long long>(us));
  va_list args;
  va_start(args, format);
  n += std::vsnprintf(line + n, sizeof line - n - 1, format, args);
  va_end(args);
  n = std::min<int>(n, sizeof line - 2);
  line[n++] = '\n';
  (void)!::write(fd, line, n);
}

struct EmulatedComm {
  std::string name;  // from the unique id
  int ranks = 1, rank = 0;
  bool mirrored = false;
  bool ready = false;
  std::atomic<bool> aborted{false};
  uint64_t calls = 0;
  std::set<std::string> segments;  // shared memory this rank may still have to remove
};

// A segment's header: how many ranks have copied their part in, and how many are done with it.
struct SegmentHeader {
  std::atomic<uint32_t> arrived;
  std::atomic<uint32_t> departed;
};
constexpr size_t kSegmentHeader = 64;

struct Segment {
  void* base = nullptr;
  size_t bytes = 0;
  SegmentHeader* header() const { return static_cast<SegmentHeader*>(base); }
  uint8_t* slot(size_t index, size_t slotBytes) const { return static_cast<uint8_t*>(base) + kSegmentHeader + index * slotBytes; }
};

// Opens (creating it if this rank is first) and maps a segment of `bytes` after the header.
inline bool openSegment(const std::string& name, size_t bytes, Segment& segment) {
  const int fd = shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
  if (fd < 0) {
    trace("shm_open %s failed: %s", name.c_str(), std::strerror(errno));
    return false;
  }
  segment.bytes = kSegmentHeader + bytes;
  const bool sized = ftruncate(fd, static_cast<off_t>(segment.bytes)) == 0;  // the same size from every rank: no data lost
  segment.base = sized ? mmap(nullptr, segment.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  close(fd);
  if (segment.base == MAP_FAILED) segment.base = nullptr;
  return segment.base != nullptr;
}

inline bool isMirrored(const nccl::UniqueId& id) { return std::memcmp(id.internal, "mirrored", 8) == 0; }

inline nccl::UniqueId mirroredId() {
  nccl::UniqueId id{};
  std::memcpy(id.internal, "mirrored", 8);
  return id;
}

// Braid's element type for NCCL's (false for the unsigned 32/64-bit ones Braid never sends).
inline bool braidType(nccl::DataType t, braid::DType& dtype) {
  switch (t) {
    case nccl::kInt8: dtype = braid::DType::kInt8; return true;
    case nccl::kUint8: dtype = braid::DType::kUint8; return true;
    case nccl::kInt32: dtype = braid::DType::kInt32; return true;
    case nccl::kInt64: dtype = braid::DType::kInt64; return true;
    case nccl::kFloat16: dtype = braid::DType::kFloat16; return true;
    case nccl::kBfloat16: dtype = braid::DType::kBFloat16; return true;
    case nccl::kFloat32: dtype = braid::DType::kFloat32; return true;
    case nccl::kFloat64: dtype = braid::DType::kFloat64; return true;
    default: return false;
  }
}

// Braid's operation for NCCL's.
inline bool braidOp(nccl::RedOp op, braid::RedOp& redop) {
  switch (op) {
    case nccl::kSum: redop = braid::RedOp::kSum; return true;
    case nccl::kProd: redop = braid::RedOp::kProd; return true;
    case nccl::kMax: redop = braid::RedOp::kMax; return true;
    case nccl::kMin: redop = braid::RedOp::kMin; return true;
    case nccl::kAvg: redop = braid::RedOp::kAvg; return true;
    default: return false;
  }
}

// out = the reduction of `count` elements from each of `ranks` inputs, in rank order.
inline void reduceSlots(braid::DType dtype, braid::RedOp op, void* out, const std::function<const void*(int)>& input, int ranks, size_t count) {
  const size_t bytes = count * braid::dtypeSize(dtype);
  std::memmove(out, input(0), bytes);
  for (int r = 1; r < ranks; ++r) braid::reduceInto(dtype, op, out, out, input(r), count);
  if (op == braid::RedOp::kAvg) braid::finishAverage(dtype, out, count, ranks);
}

inline nccl::Result ncclGetVersionEmulated(int* version) {
  *version = 23007;
  return nccl::kSuccess;
}
inline const char* ncclGetErrorStringEmulated(nccl::Result r) {
  switch (r) {
    case nccl::kSuccess: return "no error";
    case nccl::kInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case nccl::kInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case nccl::kInProgress: return "NCCL operation in progress";
    case nccl::kSystemError: return "unhandled system error";
    default: return "unhandled error";
  }
}
inline nccl::Result ncclGetUniqueIdEmulated(nccl::UniqueId* id) {
  static std::atomic<unsigned> counter{0};
  std::memset(id->internal, 0, sizeof id->internal);
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  std::snprintf(id->internal, sizeof id->internal, "%d-%u-%llx", static_cast<int>(getpid()), ++counter, static_cast<unsigned long long>(now));
  return nccl::kSuccess;
}

inline void releaseSegment(EmulatedComm& c, const std::string& name, Segment& segment) {
  if (segment.base != nullptr && segment.header()->departed.fetch_add(1) + 1 == static_cast<uint32_t>(c.ranks)) {
    trace("rank %d unlinks %s (last to leave)", c.rank, name.c_str());
    shm_unlink(name.c_str());
    c.segments.erase(name);
  }
  if (segment.base != nullptr) munmap(segment.base, segment.bytes);
  segment.base = nullptr;
}

inline nccl::Result ncclCommInitRankConfigEmulated(nccl::Comm* comm, int nranks, nccl::UniqueId id, int rank, nccl::Config*) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return nccl::kInvalidArgument;
  auto* c = new EmulatedComm;
  c->ranks = nranks;
  c->rank = rank;
  c->mirrored = isMirrored(id);
  char name[64];
  std::snprintf(name, sizeof name, "/braid-nccl-emulated-%.40s", id.internal);
  for (char* p = name + 1; *p != 0; ++p)
    if (*p == '/') *p = '_';
  c->name = name;
  c->ready = nranks == 1 || c->mirrored;
  trace("rank %d of %d joins %s", rank, nranks, c->name.c_str());
  if (!c->ready) {
    // Joining: count this rank in; the communicator is ready once every rank has.
    const std::string join = c->name + "-join";
    c->segments.insert(join);
    Segment segment;
    if (!openSegment(join, 0, segment)) {
      delete c;
      return nccl::kSystemError;
    }
    segment.header()->arrived.fetch_add(1);
    munmap(segment.base, segment.bytes);
  }
  *comm = reinterpret_cast<nccl::Comm>(c);
  return nccl::kInProgress;  // non-blocking: the async error says when it is ready
}
inline nccl::Result ncclCommInitRankEmulated(nccl::Comm* comm, int nranks, nccl::UniqueId id, int rank) {
  return ncclCommInitRankConfigEmulated(comm, nranks, id, rank, nullptr);
}
inline nccl::Result ncclCommGetAsyncErrorEmulated(nccl::Comm comm, nccl::Result* state) {
  auto* c = reinterpret_cast<EmulatedComm*>(comm);
  if (!c->ready) {
    const std::string join = c->name + "-join";
    Segment segment;
    if (openSegment(join, 0, segment)) {
      c->ready = segment.header()->arrived.load() >= static_cast<uint32_t>(c->ranks);
      if (c->ready) releaseSegment(*c, join, segment);
      else munmap(segment.base, segment.bytes);
    }
  }
  *state = c->ready ? nccl::kSuccess : nccl::kInProgress;
  return nccl::kSuccess;
}
// Whatever is in flight ends (the queue drops it); this rank's shared memory names go.
inline nccl::Result ncclCommAbortEmulated(nccl::Comm comm) {
  auto* c = reinterpret_cast<EmulatedComm*>(comm);
  c->aborted = true;
  trace("rank %d aborts %s, unlinking %zu name(s)", c->rank, c->name.c_str(), c->segments.size());
  drain(false);
  for (const std::string& name : c->segments) shm_unlink(name.c_str());
  c->segments.clear();
  return nccl::kSuccess;  // the struct stays: queued work may still point at it
}

// A collective: this rank's `send` (sendBytes) goes into its slot of the call's segment; once every
// rank's is there, `finish(slot)` writes the result from the slots.
inline nccl::Result ncclCollective(const char* what, nccl::Comm comm, const void* send, size_t sendBytes, const void* recv, size_t recvBytes,
                                   std::function<void(const std::function<const void*(int)>&)> finish) {
  auto* c = reinterpret_cast<EmulatedComm*>(comm);
  if (!c->ready || c->aborted) return nccl::kInvalidUsage;
  if ((sendBytes > 0 && !isDevice(send, sendBytes)) || (recvBytes > 0 && !isDevice(recv, recvBytes))) {
    std::fprintf(stderr, "nccl emulation: %s: a buffer is not device memory of its size\n", what);
    return nccl::kInvalidArgument;
  }
  if (c->mirrored) {
    enqueue([=] { finish([&](int) { return send; }); });
    return nccl::kSuccess;
  }
  const std::string name = c->name + "-" + std::to_string(++c->calls);
  c->segments.insert(name);
  trace("rank %d issues %s %s (%zu bytes)", c->rank, what, name.c_str(), sendBytes);
  // BRAID_NCCL_EMULATION_STALL_RANK=r: rank r's collectives never contribute (a GPU that hangs),
  // so every rank's stays not ready until its deadline; for the tests of what Braid does then.
  const char* stall = std::getenv("BRAID_NCCL_EMULATION_STALL_RANK");
  if (stall != nullptr && std::atoi(stall) == c->rank) {
    enqueueWaiting([c] { return c->aborted.load(); });
    return nccl::kSuccess;
  }
  auto segment = std::make_shared<Segment>();
  auto copied = std::make_shared<bool>(false);
  auto waitingSince = std::make_shared<std::chrono::steady_clock::time_point>();
  enqueueWaiting([=] {
    if (c->aborted) return true;  // NCCL's abort ends the kernels in flight
    if (!*copied) {
      if (!openSegment(name, sendBytes * c->ranks, *segment)) return false;
      std::memcpy(segment->slot(c->rank, sendBytes), send, sendBytes);
      const uint32_t arrived = segment->header()->arrived.fetch_add(1) + 1;
      *copied = true;
      *waitingSince = std::chrono::steady_clock::now();
      trace("rank %d copied into %s: %u arrived", c->rank, name.c_str(), arrived);
    }
    if (segment->header()->arrived.load() < static_cast<uint32_t>(c->ranks)) {
      if (*waitingSince != std::chrono::steady_clock::time_point{} && std::chrono::steady_clock::now() - *waitingSince > std::chrono::seconds(5)) {
        trace("rank %d still waiting on %s after 5 s: %u arrived, %s", c->rank, name.c_str(), segment->header()->arrived.load(),
              access(("/dev/shm" + name).c_str(), F_OK) == 0 ? "the name exists" : "the name is gone");
        *waitingSince = std::chrono::steady_clock::time_point{};
      }
      return false;
    }
    finish([&](int r) { return static_cast<const void*>(segment->slot(r, sendBytes)); });
    releaseSegment(*c, name, *segment);
    return true;
  });
  return nccl::kSuccess;
}

inline nccl::Result ncclAllReduceEmulated(const void* send, void* recv, size_t count, nccl::DataType type, nccl::RedOp op, nccl::Comm comm, nccl::Stream) {
  braid::DType dtype;
  braid::RedOp redop;
  if (!braidType(type, dtype) || !braidOp(op, redop)) return nccl::kInvalidArgument;
  const int ranks = reinterpret_cast<EmulatedComm*>(comm)->ranks;
  const size_t bytes = count * braid::dtypeSize(dtype);
  return ncclCollective("ncclAllReduce", comm, send, bytes, recv, bytes, [=](const auto& slot) { reduceSlots(dtype, redop, recv, slot, ranks, count); });
}
inline nccl::Result ncclBroadcastEmulated(const void* send, void* recv, size_t count, nccl::DataType type, int root, nccl::Comm comm, nccl::Stream) {
  const auto* c = reinterpret_cast<EmulatedComm*>(comm);
  braid::DType dtype;
  if (root < 0 || root >= c->ranks || !braidType(type, dtype)) return nccl::kInvalidArgument;
  const size_t bytes = count * braid::dtypeSize(dtype);
  // NCCL reads `send` on the root only; the others' slots are left unread.
  const bool root_ = c->rank == root;
  return ncclCollective("ncclBroadcast", comm, root_ ? send : recv, bytes, recv, bytes, [=](const auto& slot) { std::memmove(recv, slot(root), bytes); });
}
inline nccl::Result ncclAllGatherEmulated(const void* send, void* recv, size_t count, nccl::DataType type, nccl::Comm comm, nccl::Stream) {
  braid::DType dtype;
  if (!braidType(type, dtype)) return nccl::kInvalidArgument;
  const int ranks = reinterpret_cast<EmulatedComm*>(comm)->ranks;
  const size_t bytes = count * braid::dtypeSize(dtype);
  return ncclCollective("ncclAllGather", comm, send, bytes, recv, bytes * ranks, [=](const auto& slot) {
    for (int r = 0; r < ranks; ++r) std::memmove(static_cast<char*>(recv) + r * bytes, slot(r), bytes);
  });
}
inline nccl::Result ncclReduceScatterEmulated(const void* send, void* recv, size_t count, nccl::DataType type, nccl::RedOp op, nccl::Comm comm,
                                              nccl::Stream) {
  braid::DType dtype;
  braid::RedOp redop;
  if (!braidType(type, dtype) || !braidOp(op, redop)) return nccl::kInvalidArgument;
  const auto* c = reinterpret_cast<EmulatedComm*>(comm);
  const int ranks = c->ranks, rank = c->rank;
  const size_t bytes = count * braid::dtypeSize(dtype);
  return ncclCollective("ncclReduceScatter", comm, send, bytes * ranks, recv, bytes, [=](const auto& slot) {
    reduceSlots(dtype, redop, recv, [&](int r) { return static_cast<const void*>(static_cast<const uint8_t*>(slot(r)) + rank * bytes); }, ranks, count);
  });
}
inline nccl::Result ncclGroupEmulated() { return nccl::kSuccess; }

inline const braid::NcclLibrary& emulatedNccl() {
  static const braid::NcclLibrary library = [] {
    braid::NcclLibrary l;
    l.path = "(NCCL emulated over test/cuda_emulation)";
    l.version = 23007;
    l.getVersion = ncclGetVersionEmulated;
    l.getErrorString = ncclGetErrorStringEmulated;
    l.getUniqueId = ncclGetUniqueIdEmulated;
    l.commInitRank = ncclCommInitRankEmulated;
    l.commInitRankConfig = ncclCommInitRankConfigEmulated;
    l.commAbort = ncclCommAbortEmulated;
    l.commDestroy = ncclCommAbortEmulated;
    l.commGetAsyncError = ncclCommGetAsyncErrorEmulated;
    l.allReduce = ncclAllReduceEmulated;
    l.broadcast = ncclBroadcastEmulated;
    l.allGather = ncclAllGatherEmulated;
    l.reduceScatter = ncclReduceScatterEmulated;
    l.groupStart = ncclGroupEmulated;
    l.groupEnd = ncclGroupEmulated;
    return l;
  }();
  return library;
}

}  // namespace braid_cuda_emulation
