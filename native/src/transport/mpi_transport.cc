#include "transport/mpi_transport.h"

#include "common/backoff.h"

#include <algorithm>
#include <cstdio>
#include <climits>
#include <deque>
#include <mutex>
#include <string>

#include "common/status.h"
#include "kernels/reduce.h"

namespace braid {

namespace {
constexpr size_t kMaxMessageBytes = size_t{1} << 30;
constexpr int kDataTag = 7;

// Messages up to kEagerSplitLimit go as pieces of at most kEagerPiece bytes: under Open MPI's
// shared-memory eager limit (4 KiB with its header), each piece is sent at once, where a whole
// 4-64 KiB message would wait for a rendezvous handshake.
// (Measured with braid_allreduce_bench at np=2: recursive doubling at 4-64 KiB ran 1.2-1.8x faster.)
constexpr size_t kEagerPiece = 4000;
constexpr size_t kEagerSplitLimit = 64 * 1024;
// Across hosts (Open MPI's TCP transport) a piece is a message of its own with its own header and
// matching: there a message goes whole (up to the 1 GiB MPI count limit).
size_t pieceSize(size_t bytes, bool sameHost) {
  return sameHost && bytes > kEagerPiece && bytes <= kEagerSplitLimit ? kEagerPiece : kMaxMessageBytes;
}

MPI_Datatype mpiType(DType t) {
  switch (t) {
    case DType::kFloat32: return MPI_FLOAT;
    case DType::kFloat64: return MPI_DOUBLE;
    case DType::kInt32: return MPI_INT32_T;
    case DType::kInt64: return MPI_INT64_T;
    case DType::kUint8: return MPI_UINT8_T;
    case DType::kInt8: return MPI_INT8_T;
    case DType::kFloat16:
    case DType::kBFloat16: return MPI_UINT16_T;
  }
  return MPI_BYTE;
}

// MPI has no float16 / bfloat16 reductions: user-defined ops that call our kernels.
template <DType T, RedOp Op>
void halfReduce(void* in, void* inout, int* len, MPI_Datatype*) {
  reduceInto(T, Op, inout, in, inout, static_cast<size_t>(*len));
}

MPI_Op halfOp(DType t, RedOp op) {
  static MPI_Op ops[2][4] = {};
  static bool created = false;
  if (!created) {
    MPI_User_function* fns[2][4] = {
        {halfReduce<DType::kFloat16, RedOp::kSum>, halfReduce<DType::kFloat16, RedOp::kProd>,
         halfReduce<DType::kFloat16, RedOp::kMin>, halfReduce<DType::kFloat16, RedOp::kMax>},
        {halfReduce<DType::kBFloat16, RedOp::kSum>, halfReduce<DType::kBFloat16, RedOp::kProd>,
         halfReduce<DType::kBFloat16, RedOp::kMin>, halfReduce<DType::kBFloat16, RedOp::kMax>}};
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 4; ++j) MPI_Op_create(fns[i][j], 1, &ops[i][j]);
    created = true;
  }
  int opIndex = op == RedOp::kAvg ? 0 : static_cast<int>(op);
  return ops[t == DType::kFloat16 ? 0 : 1][opIndex];
}

MPI_Op builtinOp(RedOp op) {
  switch (op) {
    case RedOp::kSum:
    case RedOp::kAvg: return MPI_SUM;
    case RedOp::kProd: return MPI_PROD;
    case RedOp::kMin: return MPI_MIN;
    case RedOp::kMax: return MPI_MAX;
  }
  return MPI_SUM;
}
}  // namespace

void checkMpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw BraidException(ErrorCode::kAborted,
                       std::string(what) + " failed: " + std::string(text, len) +
                           " (a peer process probably failed; the communicator is unusable)");
}

namespace {
struct Orphan {
  std::vector<MPI_Request> requests;
  std::shared_ptr<void> memory;
};
std::mutex orphanMutex;
std::deque<Orphan> orphans;

bool finished(std::vector<MPI_Request>& requests) {
  int flag = 0;
  if (MPI_Testall(static_cast<int>(requests.size()), requests.data(), &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
    // An errored request is finished as far as memory goes: MPI no longer touches it.
    for (auto& r : requests) {
      if (r == MPI_REQUEST_NULL) continue;
      int one = 0;
      MPI_Status status;
      if (MPI_Test(&r, &one, &status) != MPI_SUCCESS || one) r = MPI_REQUEST_NULL;
    }
    return std::all_of(requests.begin(), requests.end(), [](MPI_Request r) { return r == MPI_REQUEST_NULL; });
  }
  return flag != 0;
}
}  // namespace

void orphanRequests(std::vector<MPI_Request> requests, std::shared_ptr<void> memory) {
  requests.erase(std::remove(requests.begin(), requests.end(), MPI_REQUEST_NULL), requests.end());
  for (auto& r : requests) {
    // Receives not yet matched are cancelled at once; sends cannot be (MPI-4 deprecates it and
    // Open MPI ignores it), they wait for their peer.
    int flag = 0;
    MPI_Status status;
    MPI_Request_get_status(r, &flag, &status);
    if (!flag) MPI_Cancel(&r);
  }
  // A cancelled receive that was not matched yet completes at once.
  if (finished(requests)) return;
  std::lock_guard<std::mutex> lock(orphanMutex);
  orphans.push_back(Orphan{std::move(requests), std::move(memory)});
}

void reapOrphans() {
  std::lock_guard<std::mutex> lock(orphanMutex);
  for (auto it = orphans.begin(); it != orphans.end();) {
    it = finished(it->requests) ? orphans.erase(it) : it + 1;
  }
}

size_t orphanCount() {
  std::lock_guard<std::mutex> lock(orphanMutex);
  return orphans.size();
}

void waitRequest(MPI_Request& request, std::chrono::steady_clock::time_point deadline, const std::string& what) {
  Backoff backoff(Backoff::kShort);  // MPI moves the data only when polled
  unsigned spins = 0;
  for (;;) {
    int flag = 0;
    checkMpi(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    if (flag) return;
    if (++spins > 4096) backoff.pause();
    if ((spins & 1023u) == 0 && std::chrono::steady_clock::now() > deadline) {
      throw BraidException(ErrorCode::kTimeout, what + " did not arrive before the timeout");
    }
  }
}

size_t MpiTransport::abandon(std::shared_ptr<void> memory) {
  std::vector<MPI_Request> pending;
  for (size_t id = 0; id < requests_.size(); ++id) {
    for (MPI_Request r : requests_[id])
      if (r != MPI_REQUEST_NULL) pending.push_back(r);
    if (!requests_[id].empty()) release(static_cast<RequestId>(id));
  }
  if (pending.empty()) return 0;
  const size_t before = orphanCount();
  orphanRequests(std::move(pending), std::move(memory));
  return orphanCount() - before;
}

MpiTransport::MpiTransport(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiTransport::~MpiTransport() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

RequestId MpiTransport::allocate() {
  if (!freeList_.empty()) {
    RequestId id = freeList_.back();
    freeList_.pop_back();
    return id;
  }
  requests_.emplace_back();
  peers_.push_back(-1);
  return static_cast<RequestId>(requests_.size() - 1);
}

void MpiTransport::release(RequestId request) {
  requests_[request].clear();
  freeList_.push_back(request);
}

RequestId MpiTransport::isend(int peer, const void* data, size_t bytes) {
  RequestId id = allocate();
  peers_[id] = peer;
  auto& parts = requests_[id];
  const char* p = static_cast<const char*>(data);
  const size_t piece = pieceSize(bytes, sameHost(peer));
  size_t offset = 0;
  do {
    size_t n = std::min(bytes - offset, piece);
    parts.emplace_back();
    checkMpi(MPI_Isend(p + offset, static_cast<int>(n), MPI_BYTE, peer, kDataTag, comm_, &parts.back()),
             "MPI_Isend");
    offset += n;
  } while (offset < bytes);
  return id;
}

RequestId MpiTransport::irecv(int peer, void* data, size_t bytes) {
  RequestId id = allocate();
  peers_[id] = -2 - peer;  // receives are stored as -2 - peer
  auto& parts = requests_[id];
  char* p = static_cast<char*>(data);
  const size_t piece = pieceSize(bytes, sameHost(peer));
  size_t offset = 0;
  do {
    size_t n = std::min(bytes - offset, piece);
    parts.emplace_back();
    checkMpi(MPI_Irecv(p + offset, static_cast<int>(n), MPI_BYTE, peer, kDataTag, comm_, &parts.back()),
             "MPI_Irecv");
    offset += n;
  } while (offset < bytes);
  return id;
}

void MpiTransport::wait(RequestId request) {
  auto& parts = requests_[request];
  unsigned spins = 0;
  Backoff backoff(Backoff::kShort);  // MPI moves the data only when polled
  std::chrono::steady_clock::time_point slowSince{};
  for (;;) {
    int flag = 0;
    checkMpi(MPI_Testall(static_cast<int>(parts.size()), parts.data(), &flag, MPI_STATUSES_IGNORE),
             "MPI_Testall");
    if (flag) break;
    // Keep calling MPI_Testall at full speed while the transfer is moving (it drives progress);
    // back off only once the peer is evidently late.
    if (++spins > 4096) backoff.pause();
    if ((spins & 1023u) != 0) continue;
    const auto now = std::chrono::steady_clock::now();
    const int p = peers_[request];
    const int peer = p >= 0 ? p : -2 - p;
    if (slowSince == std::chrono::steady_clock::time_point{}) slowSince = now;
    checkSlowWait(now, slowSince, p >= 0 ? "a send to " + who(peer) : "a receive from " + who(peer));
  }
  release(request);
}

void MpiTransport::nativeAllreduce(void* data, size_t count, DType dtype, RedOp op) {
  if (count == 0) return;
  if (count > static_cast<size_t>(INT_MAX)) {
    throw BraidException(ErrorCode::kInvalidArgument, "algorithm 'mpi' takes at most 2^31-1 elements");
  }
  MPI_Op mop = (dtype == DType::kFloat16 || dtype == DType::kBFloat16) ? halfOp(dtype, op) : builtinOp(op);
  // The non-blocking form, so that the op's deadline holds here too; abandon() takes the request
  // if it does not finish.
  RequestId id = allocate();
  peers_[id] = -1;
  requests_[id].emplace_back();
  checkMpi(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), mpiType(dtype), mop, comm_, &requests_[id].back()),
           "MPI_Iallreduce");
  try {
    waitRequest(requests_[id].back(), deadline_, "MPI_Iallreduce's data from the other ranks");
  } catch (const BraidException& e) {
    throw BraidException(ErrorCode::kTimeout,
                         std::string(e.what()) + " (algorithm 'mpi'; MPI does not say which rank is missing)");
  }
  release(id);
  if (op == RedOp::kAvg) finishAverage(dtype, data, count, size_);
}

void MpiTransport::blockingAllreduce(void* data, size_t count, DType dtype, RedOp op) {
  if (count == 0) return;
  MPI_Op mop = (dtype == DType::kFloat16 || dtype == DType::kBFloat16) ? halfOp(dtype, op) : builtinOp(op);
  checkMpi(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), mpiType(dtype), mop, comm_), "MPI_Allreduce");
  if (op == RedOp::kAvg) finishAverage(dtype, data, count, size_);
}

}  // namespace braid
