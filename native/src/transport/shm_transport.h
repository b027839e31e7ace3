// Shared memory among the ranks of a communicator that all run on one host: one mapped region
// with a slot per rank that every rank can read and write, and a barrier over flags in it. No
// system call and no MPI call per transfer, which is what makes it faster than MPI's
// point-to-point on one host. MPI is used only to set the region up (the name travels by
// broadcast); the region is unlinked as soon as every rank has mapped it, so nothing is left
// behind when a process dies afterwards, and a name left by a rank killed during the set-up is
// removed by the next set-up on the host (removeStaleRegions).
#pragma once
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace braid {

class ShmTransport {
 public:
  // Collective over `comm`. Returns nullptr, with the reason in `why`, when the ranks are not
  // all on one host or the region cannot be made on some rank (every rank gets the same answer).
  // The set-up's messages keep `deadline` (TIMEOUT when a rank stops meanwhile).
  static std::unique_ptr<ShmTransport> create(MPI_Comm comm, size_t slotBytes, std::string* why,
                                              std::chrono::steady_clock::time_point deadline =
                                                  std::chrono::steady_clock::time_point::max());
  // Unlinks /dev/shm regions whose creating process is gone (left by a rank killed during a
  // set-up); returns how many. Rank 0 calls it before making one. Only names of the form this
  // transport makes ("braid-<pid>-<n>") are candidates: anything else in /dev/shm that happens to
  // start with "braid-" belongs to someone else.
  static int removeStaleRegions();
  // The creator's pid in a region name of that form, or -1 for any other name.
  static long regionCreator(const std::string& name);
  ~ShmTransport();
  ShmTransport(const ShmTransport&) = delete;
  ShmTransport& operator=(const ShmTransport&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  size_t slotBytes() const { return slotBytes_; }
  uint8_t* slot(int r) const { return base_ + kControlBytes * size_ + slotBytes_ * static_cast<size_t>(r); }
  // Which half of the slots the next chunk uses. It alternates across ops too, so that the first
  // chunk of an op never overwrites what a slower rank may still be reading from the last chunk
  // of the previous one (nothing else orders them when negotiation is off).
  int nextHalf() { return half_ ^= 1; }
  int half() const { return half_; }

  // Returns once every rank has called barrier() as many times as this one; throws
  // BraidException(TIMEOUT) at the deadline.
  void barrier();
  void setDeadline(std::chrono::steady_clock::time_point deadline) { deadline_ = deadline; }
  // A barrier that has waited `stallWarningMs` prints one line naming the op and the late ranks.
  void setStallReport(int stallWarningMs, std::function<std::string()> describeOp) {
    stallWarningMs_ = stallWarningMs;
    describeOp_ = std::move(describeOp);
  }
  // Called now and then while waiting. The engine passes an MPI progress call: a peer's MPI send
  // from the op before may complete only when this rank's MPI makes progress, and a rank that
  // spun here without it would wait for that peer while the peer waited for it.
  void setProgress(std::function<void()> progress) { progress_ = std::move(progress); }

  // A barrier in two halves, for callers that want to publish something first and to name the
  // late ranks: arrive() marks this rank, waitFor() returns the ranks still missing at the
  // deadline (empty once all arrived), calling onStall(missing) once after `stallAfter`.
  uint64_t arrive();
  std::vector<int> waitFor(uint64_t epoch, std::chrono::steady_clock::time_point deadline,
                           std::chrono::milliseconds stallAfter,
                           const std::function<void(const std::vector<int>&)>& onStall);

  // Per-rank bytes beside the flag, for small records (negotiation descriptors): kRecordBytes
  // each, kRecords of them.
  static constexpr size_t kRecordBytes = 192;
  static constexpr int kRecords = 2;
  uint8_t* record(int r, int which) const { return base_ + kControlBytes * r + 64 + kRecordBytes * which; }

 private:
  ShmTransport() = default;
  static constexpr size_t kControlBytes = 64 + kRecordBytes * kRecords;  // the flag has a cache line of its own
  std::atomic<uint64_t>* flag(int r) const { return reinterpret_cast<std::atomic<uint64_t>*>(base_ + kControlBytes * r); }

  uint8_t* base_ = nullptr;
  size_t mappedBytes_ = 0;
  size_t slotBytes_ = 0;
  int rank_ = 0, size_ = 1;
  uint64_t epoch_ = 0;
  int half_ = 0;
  std::function<void()> progress_;
  int stallWarningMs_ = 0;
  std::function<std::string()> describeOp_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
};

}  // namespace braid
