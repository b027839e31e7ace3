#include "transport/shm_transport.h"

#include "common/backoff.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <thread>

#include "common/status.h"
#include "transport/mpi_transport.h"

namespace braid {

namespace {
// The region's name carries its creator's pid: "/braid-<pid>-<n>".
constexpr const char* kNamePrefix = "braid-";

// Everything the set-up's MPI calls read or write, kept together so that a set-up cut short by
// the deadline can leave it to the orphanage with the requests.
struct SetupMessages {
  int ok = 0;
  char name[64] = {};
  int mapped = 0, all = 0;
};

void wait(MPI_Request request, std::shared_ptr<SetupMessages> messages, std::chrono::steady_clock::time_point deadline) {
  try {
    waitRequest(request, deadline, "a rank's part in setting up shared memory");
  } catch (const BraidException& e) {
    orphanRequests({request}, messages);
    throw BraidException(ErrorCode::kTimeout, std::string(e.what()) + "; a rank stopped while the communicator was made");
  }
}
}  // namespace

long ShmTransport::regionCreator(const std::string& name) {
  // "braid-" digits "-" digits, and nothing else.
  if (name.rfind(kNamePrefix, 0) != 0) return -1;
  const size_t pidStart = std::strlen(kNamePrefix);
  const size_t dash = name.find('-', pidStart);
  const auto digits = [&](size_t from, size_t to) {
    if (to <= from || to - from > 18) return false;
    for (size_t i = from; i < to; ++i)
      if (name[i] < '0' || name[i] > '9') return false;
    return true;
  };
  if (dash == std::string::npos || !digits(pidStart, dash) || !digits(dash + 1, name.size())) return -1;
  const long pid = std::strtol(name.c_str() + pidStart, nullptr, 10);
  return pid > 0 ? pid : -1;
}

int ShmTransport::removeStaleRegions() {
  // The region is unlinked as soon as every rank has mapped it; a rank 0 killed before that
  // leaves its name behind. Names whose creator is gone are removed by the next Braid process.
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return 0;
  int removed = 0;
  while (dirent* entry = readdir(dir)) {
    const std::string file = entry->d_name;
    const long pid = regionCreator(file);
    if (pid < 0) continue;
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      if (shm_unlink(("/" + file).c_str()) == 0) ++removed;
    }
  }
  closedir(dir);
  return removed;
}

std::unique_ptr<ShmTransport> ShmTransport::create(MPI_Comm comm, size_t slotBytes, std::string* why,
                                                   std::chrono::steady_clock::time_point deadline) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  // No non-blocking form in MPI; every rank of `comm` has just created it together.
  MPI_Comm local;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  int localSize = 0;
  MPI_Comm_size(local, &localSize);
  MPI_Comm_free(&local);
  if (localSize != size) {
    *why = "its ranks are not all on one host";
    return nullptr;
  }

  auto shm = std::unique_ptr<ShmTransport>(new ShmTransport());
  shm->rank_ = rank;
  shm->size_ = size;
  shm->slotBytes_ = slotBytes;
  shm->mappedBytes_ = (kControlBytes + slotBytes) * static_cast<size_t>(size);

  auto messages = std::make_shared<SetupMessages>();
  char* name = messages->name;
  std::string error;
  if (rank == 0) {
    removeStaleRegions();
    static std::atomic<int> counter{0};
    std::snprintf(name, sizeof messages->name, "/%s%d-%d", kNamePrefix, static_cast<int>(getpid()), counter++);
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
      error = std::string("shm_open: ") + std::strerror(errno);
    } else {
      // posix_fallocate reserves the pages now: a full /dev/shm is an error here, not a SIGBUS later.
      int rc = posix_fallocate(fd, 0, static_cast<off_t>(shm->mappedBytes_));
      if (rc != 0) error = std::string("cannot reserve ") + std::to_string(shm->mappedBytes_) + " bytes in /dev/shm: " + std::strerror(rc);
      close(fd);
    }
  }
  messages->ok = error.empty() ? 1 : 0;
  // The name, with ok in front of it, in one broadcast.
  MPI_Request request;
  struct Unlinker {
    const char* name;
    bool active;
    ~Unlinker() {
      if (active) shm_unlink(name);
    }
  } unlinkOnFailure{name, rank == 0 && error.empty()};
  checkMpi(MPI_Ibcast(&messages->ok, 1, MPI_INT, 0, comm, &request), "MPI_Ibcast (shared memory)");
  wait(request, messages, deadline);
  checkMpi(MPI_Ibcast(name, sizeof messages->name, MPI_CHAR, 0, comm, &request), "MPI_Ibcast (shared memory)");
  wait(request, messages, deadline);
  if (!messages->ok) {
    *why = rank == 0 ? error : "rank 0 could not create the shared region";
    return nullptr;
  }
  int fd = shm_open(name, O_RDWR, 0600);
  void* p = MAP_FAILED;
  if (fd >= 0) {
    p = mmap(nullptr, shm->mappedBytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
  }
  messages->mapped = p != MAP_FAILED ? 1 : 0;
  try {
    checkMpi(MPI_Iallreduce(&messages->mapped, &messages->all, 1, MPI_INT, MPI_MIN, comm, &request), "MPI_Iallreduce (shared memory)");
    wait(request, messages, deadline);
  } catch (...) {
    if (p != MAP_FAILED) munmap(p, shm->mappedBytes_);
    throw;
  }
  // Every rank has it open or failed: the name is no longer needed (the unlinker does it).
  if (!messages->all) {
    if (p != MAP_FAILED) munmap(p, shm->mappedBytes_);
    *why = "a rank could not map the shared region";
    return nullptr;
  }
  shm->base_ = static_cast<uint8_t*>(p);
  return shm;
}

ShmTransport::~ShmTransport() {
  if (base_ != nullptr) munmap(base_, mappedBytes_);
}

uint64_t ShmTransport::arrive() {
  ++epoch_;
  flag(rank_)->store(epoch_, std::memory_order_release);
  return epoch_;
}

std::vector<int> ShmTransport::waitFor(uint64_t epoch, std::chrono::steady_clock::time_point deadline,
                                       std::chrono::milliseconds stallAfter,
                                       const std::function<void(const std::vector<int>&)>& onStall) {
  // The stall clock starts when spinning ends: a clock read per barrier would cost more than
  // the fast barriers themselves.
  std::chrono::steady_clock::time_point start{};
  bool warned = !onStall;
  Backoff backoff;
  unsigned checks = 0;
  for (int r = 0; r < size_; ++r) {
    while (flag(r)->load(std::memory_order_acquire) < epoch) {
      backoff.pause();
      if (!backoff.slow()) continue;
      ++checks;
      if (progress_ && (checks & 15u) == 0) progress_();
      if ((checks & 15u) != 0) continue;  // a clock read is cheap beside the yields between checks
      const auto now = std::chrono::steady_clock::now();
      if (start == std::chrono::steady_clock::time_point{}) start = now;
      const bool late = now > deadline;
      if (!late && (warned || now - start < stallAfter)) continue;
      std::vector<int> missing;
      for (int s = 0; s < size_; ++s)
        if (flag(s)->load(std::memory_order_acquire) < epoch) missing.push_back(s);
      if (late) return missing;
      onStall(missing);
      warned = true;
    }
  }
  return {};
}

void ShmTransport::barrier() {
  std::function<void(const std::vector<int>&)> report;
  if (stallWarningMs_ > 0) {
    report = [this](const std::vector<int>& missing) {
      std::string late;
      for (int r : missing) late += (late.empty() ? "" : ", ") + std::to_string(r);
      const std::string op = describeOp_ ? describeOp_() : std::string("an operation");
      std::fprintf(stderr, "braid: stall: rank %d has waited %d ms in %s for %s %s at a shared-memory step; the data stopped moving\n",
                   rank_, stallWarningMs_, op.c_str(), missing.size() == 1 ? "rank" : "ranks", late.c_str());
    };
  }
  std::vector<int> missing = waitFor(arrive(), deadline_, std::chrono::milliseconds(stallWarningMs_), report);
  if (!missing.empty()) {
    throw BraidException(ErrorCode::kTimeout,
                         "rank " + std::to_string(missing[0]) + " did not reach the shared-memory step before the timeout "
                         "(a peer stopped or is stuck); the communicator is no longer usable");
  }
}

}  // namespace braid
