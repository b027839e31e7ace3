#include "engine/negotiation.h"

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "algorithms/collective.h"
#include "common/backoff.h"
#include "common/status.h"
#include "transport/mpi_transport.h"

namespace braid {

namespace {

constexpr int kDescriptorTag = 11;
constexpr int kVerdictTag = 12;
constexpr size_t kVerdictMax = 16384;
constexpr size_t kNameChars = 56;

struct Descriptor {
  int64_t seq, kind, dtype, count, redop, root, algorithm;
  uint64_t nameHash;
  char name[kNameChars];  // the name's head, for messages; the hash covers the rest
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

Descriptor describe(const OpRecord& op) {
  Descriptor d{};
  d.seq = static_cast<int64_t>(op.seq);
  d.kind = static_cast<int64_t>(op.kind);
  const bool typed = op.kind == OpKind::kAllreduce || op.kind == OpKind::kBroadcast ||
                     op.kind == OpKind::kAllgather || op.kind == OpKind::kReduceScatter || op.kind == OpKind::kMpiLoop;
  d.dtype = typed ? static_cast<int64_t>(op.dtype) : -1;
  d.count = typed ? static_cast<int64_t>(op.count) : -1;
  const bool reduces = op.kind == OpKind::kAllreduce || op.kind == OpKind::kReduceScatter || op.kind == OpKind::kMpiLoop;
  d.redop = reduces ? static_cast<int64_t>(op.redop) : -1;
  d.root = op.kind == OpKind::kBroadcast ? op.root : (op.kind == OpKind::kMpiLoop ? op.iterations : -1);
  d.algorithm = typed ? static_cast<int64_t>(op.algorithm) : -1;
  d.nameHash = fnv1a(op.name);
  std::memcpy(d.name, op.name.data(), std::min(op.name.size(), kNameChars - 1));  // d is zeroed
  return d;
}

std::string fieldValue(const char* field, const Descriptor& d) {
  std::string f(field);
  if (f == "operation") return opKindName(static_cast<OpKind>(d.kind));
  if (f == "dtype") return dtypeName(static_cast<DType>(d.dtype));
  if (f == "length") return std::to_string(d.count);
  if (f == "op") return redOpName(static_cast<RedOp>(d.redop));
  if (f == "root") return std::to_string(d.root);
  if (f == "algorithm") return algorithmName(static_cast<Algorithm>(d.algorithm));
  if (f == "name") return d.name[0] ? std::string("'") + d.name + "'" : std::string("(unnamed)");
  if (f == "call number") return std::to_string(d.seq);
  return "?";
}

int64_t fieldKey(const char* field, const Descriptor& d) {
  std::string f(field);
  if (f == "operation") return d.kind;
  if (f == "dtype") return d.dtype;
  if (f == "length") return d.count;
  if (f == "op") return d.redop;
  if (f == "root") return d.root;
  if (f == "algorithm") return d.algorithm;
  if (f == "name") return static_cast<int64_t>(d.nameHash);
  return d.seq;
}

// "0,2-4" for a sorted list of ranks.
std::string rankList(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(ranks[i]);
    if (j > i) out += "-" + std::to_string(ranks[j]);
    i = j + 1;
  }
  return out;
}

std::string opLabel(const Descriptor& d) {
  std::string label = std::string(opKindName(static_cast<OpKind>(d.kind))) + " #" + std::to_string(d.seq);
  if (d.name[0]) label += std::string(" '") + d.name + "'";
  return label;
}

// "rank 2 (host b)", "ranks 1, 2 (hosts a, b)": where the missing ranks run.
std::string ranksOnHosts(const std::vector<int>& ranks, const std::vector<std::string>* hostList) {
  std::string out = (ranks.size() == 1 ? "rank " : "ranks ") + rankList(ranks);
  if (hostList == nullptr || hostList->empty()) return out;
  const std::vector<std::string>& hosts = *hostList;
  std::vector<std::string> names;
  for (int r : ranks) {
    const std::string& h = static_cast<size_t>(r) < hosts.size() ? hosts[r] : std::string("?");
    if (std::find(names.begin(), names.end(), h) == names.end()) names.push_back(h);
  }
  out += names.size() == 1 ? " (host " : " (hosts ";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out + ")";
}

std::string missingMessage(const std::vector<int>& missing, const Descriptor& mine, const std::vector<std::string>* hosts) {
  return ranksOnHosts(missing, hosts) + (missing.size() == 1 ? " has" : " have") + " not submitted " + opLabel(mine);
}

[[noreturn]] void stallShutdown(const std::string& what, int ms) {
  // MPI_Abort ends every rank of the job, the silent ones too; mpirun (and braid run) then fail.
  std::fprintf(stderr, "braid: stall shutdown: %s for %d ms (stallShutdownMs); ending the job\n", what.c_str(), ms);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

bool sameOp(const Descriptor& a, const Descriptor& b) {
  return a.seq == b.seq && a.kind == b.kind && a.dtype == b.dtype && a.count == b.count && a.redop == b.redop &&
         a.root == b.root && a.algorithm == b.algorithm && a.nameHash == b.nameHash;
}

// Empty when all descriptors agree; otherwise the MISMATCH message.
std::string compare(const std::vector<Descriptor>& all) {
  bool agree = true;
  for (size_t r = 1; r < all.size() && agree; ++r) agree = sameOp(all[0], all[r]);
  if (agree) return "";
  const char* fields[] = {"operation", "call number", "name", "dtype", "length", "op", "root", "algorithm"};
  std::ostringstream msg;
  bool differs = false;
  for (const char* field : fields) {
    std::map<int64_t, std::vector<int>> byValue;
    for (size_t r = 0; r < all.size(); ++r) byValue[fieldKey(field, all[r])].push_back(static_cast<int>(r));
    if (byValue.size() <= 1) continue;
    // Listed in rank order: the group holding rank 0 first.
    std::vector<std::vector<int>> groups;
    for (auto& entry : byValue) groups.push_back(entry.second);
    std::sort(groups.begin(), groups.end(), [](const auto& a, const auto& b) { return a[0] < b[0]; });
    msg << (differs ? "; " : "") << field << ": ";
    bool firstGroup = true;
    for (const auto& ranks : groups) {
      msg << (firstGroup ? "" : ", ") << (ranks.size() == 1 ? "rank " : "ranks ") << rankList(ranks)
          << " " << (ranks.size() == 1 ? "has " : "have ") << fieldValue(field, all[ranks[0]]);
      firstGroup = false;
    }
    differs = true;
    // The other fields of different operations are not comparable; the operation says it all.
    if (std::string(field) == "operation") break;
  }
  if (!differs) return "";
  return "ranks submitted different operations at " + opLabel(all[0]) + " — " + msg.str() +
         ". Every rank must make the same collective calls, in the same order, with the same "
         "arguments (names, lengths, dtypes, ops, roots and algorithms).";
}

// Every message buffer of one negotiation, owned together: if the negotiation fails with
// messages still posted, they go to the orphanage with this memory (nothing MPI may still write
// is freed).
struct Exchange {
  std::vector<Descriptor> all;
  Descriptor mine{};
  std::string verdict;
  std::vector<MPI_Request> requests;
};

// Posts the verdict to `to` and waits until the deadline (plus `grace`) for the sends to finish.
void sendVerdicts(MPI_Comm control, const std::vector<int>& to, std::shared_ptr<Exchange> x,
                  std::chrono::steady_clock::time_point deadline) {
  x->requests.assign(to.size(), MPI_REQUEST_NULL);
  for (size_t i = 0; i < to.size(); ++i)
    checkMpi(MPI_Isend(x->verdict.data(), static_cast<int>(x->verdict.size()), MPI_CHAR, to[i], kVerdictTag, control,
                       &x->requests[i]),
             "MPI_Isend (negotiation)");
  for (size_t i = 0; i < to.size(); ++i) {
    try {
      waitRequest(x->requests[i], deadline, "rank " + std::to_string(to[i]) + "'s receipt of the agreement verdict");
    } catch (const BraidException&) {
      orphanRequests(x->requests, x);
      throw BraidException(ErrorCode::kTimeout,
                           "rank " + std::to_string(to[i]) +
                               " did not take rank 0's agreement verdict before the timeout; it has stopped "
                               "or its host is unreachable (the communicator is no longer usable)");
    }
  }
}

[[noreturn]] void raiseVerdict(const std::string& verdict) {
  ErrorCode code = static_cast<ErrorCode>(static_cast<unsigned char>(verdict[0]));
  throw BraidException(code, verdict.substr(1));
}

void negotiateAsRoot(MPI_Comm control, int size, const Descriptor& mine, const NegotiationLimits& limits) {
  auto x = std::make_shared<Exchange>();
  x->all.resize(size);
  x->all[0] = mine;
  std::vector<MPI_Request>& reqs = x->requests;
  reqs.assign(size, MPI_REQUEST_NULL);
  for (int r = 1; r < size; ++r)
    checkMpi(MPI_Irecv(&x->all[r], sizeof(Descriptor), MPI_BYTE, r, kDescriptorTag, control, &reqs[r]),
             "MPI_Irecv (negotiation)");
  const auto start = std::chrono::steady_clock::now();
  bool warned = false;
  unsigned spins = 0;
  Backoff backoff;
  for (;;) {
    int done = 0;
    checkMpi(MPI_Testall(size, reqs.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall (negotiation)");
    if (done) break;
    // Spin while the answer is microseconds away; past that, back off as the shared-memory
    // waits do (a rank waiting on the network must not hold a core).
    if (++spins > 4096) backoff.pause();
    // The clock every 1024 polls while they are quick, every poll once they nap.
    if ((spins & 1023u) != 0 && !backoff.slow()) continue;
    const auto now = std::chrono::steady_clock::now();
    const bool late = now > limits.deadline;
    const bool stalled = !warned && now - start > std::chrono::milliseconds(limits.stallWarningMs);
    const bool shutdown = limits.stallShutdownMs > 0 && now - start > std::chrono::milliseconds(limits.stallShutdownMs);
    if (!late && !stalled && !shutdown) continue;
    std::vector<int> missing, present;
    for (int r = 1; r < size; ++r) {
      int flag = 0;
      checkMpi(MPI_Test(&reqs[r], &flag, MPI_STATUS_IGNORE), "MPI_Test (negotiation)");
      (flag ? present : missing).push_back(r);
    }
    if (missing.empty()) continue;
    const std::string what = missingMessage(missing, mine, limits.hosts);
    if (shutdown && !late) stallShutdown(what, limits.stallShutdownMs);
    if (!late) {
      const std::string queued = limits.queuedBehind ? limits.queuedBehind() : std::string();
      std::fprintf(stderr, "braid: stall: %s after %d ms (ranks 0%s%s are waiting for it%s)\n", what.c_str(),
                   limits.stallWarningMs, present.empty() ? "" : ",", rankList(present).c_str(), queued.c_str());
      warned = true;
      continue;
    }
    // The missing ranks' receives stay with the exchange's memory until MPI lets them go.
    orphanRequests(reqs, x);
    std::string message = what + " before the timeout; the communicator is no longer usable. Check "
                          "that every rank makes the same collective calls (a rank may have failed, "
                          "returned early or skipped a call).";
    auto verdict = std::make_shared<Exchange>();
    verdict->verdict = std::string(1, static_cast<char>(ErrorCode::kTimeout)) + message;
    // The present ranks wait 2 s past the deadline for this verdict; give it as long.
    try {
      sendVerdicts(control, present, verdict, limits.deadline + std::chrono::seconds(2));
    } catch (const BraidException&) {
      // A present rank is gone too; the message about the missing ones still stands.
    }
    throw BraidException(ErrorCode::kTimeout, message);
  }
  std::string mismatch = compare(x->all);
  std::vector<int> others;
  for (int r = 1; r < size; ++r) others.push_back(r);
  x->verdict = std::string(1, static_cast<char>(mismatch.empty() ? ErrorCode::kOk : ErrorCode::kMismatch)) + mismatch;
  if (x->verdict.size() > kVerdictMax) x->verdict.resize(kVerdictMax);
  sendVerdicts(control, others, x, limits.deadline);
  if (!mismatch.empty()) raiseVerdict(x->verdict);
}

void negotiateAsMember(MPI_Comm control, const Descriptor& mine, const NegotiationLimits& limits) {
  auto x = std::make_shared<Exchange>();
  x->mine = mine;
  x->verdict.assign(kVerdictMax, '\0');
  x->requests.assign(2, MPI_REQUEST_NULL);
  MPI_Request* reqs = x->requests.data();
  checkMpi(MPI_Irecv(x->verdict.data(), static_cast<int>(kVerdictMax), MPI_CHAR, 0, kVerdictTag, control, &reqs[1]),
           "MPI_Irecv (negotiation)");
  checkMpi(MPI_Isend(&x->mine, sizeof(Descriptor), MPI_BYTE, 0, kDescriptorTag, control, &reqs[0]),
           "MPI_Isend (negotiation)");
  MPI_Status statuses[2];
  unsigned spins = 0;
  Backoff backoff;
  for (;;) {
    int done = 0;
    checkMpi(MPI_Testall(2, reqs, &done, statuses), "MPI_Testall (negotiation)");
    if (done) break;
    // Spin while the answer is microseconds away; past that, back off as the shared-memory
    // waits do (a rank waiting on the network must not hold a core).
    if (++spins > 4096) backoff.pause();
    // The clock every 1024 polls while they are quick, every poll once they nap.
    if ((spins & 1023u) != 0 && !backoff.slow()) continue;
    // Members give rank 0 a grace period past the deadline, so that its verdict, which names
    // the missing ranks, arrives before their own timeout.
    if (std::chrono::steady_clock::now() > limits.deadline + std::chrono::seconds(2)) {
      orphanRequests(x->requests, x);
      throw BraidException(ErrorCode::kTimeout,
                           ranksOnHosts({0}, limits.hosts) + " did not answer for " + opLabel(mine) +
                               " before the timeout; rank 0 has stopped, its host is unreachable, or it is "
                               "waiting for a rank that has not made this call (the communicator is no longer usable)");
    }
  }
  int length = 0;
  MPI_Get_count(&statuses[1], MPI_CHAR, &length);
  std::string verdict = x->verdict.substr(0, static_cast<size_t>(length));
  if (verdict.empty()) throw BraidException(ErrorCode::kInternal, "empty negotiation verdict");
  if (verdict[0] != static_cast<char>(ErrorCode::kOk)) raiseVerdict(verdict);
}

}  // namespace

void negotiateOpShm(ShmTransport& shm, const OpRecord& op, const NegotiationLimits& limits,
                    const std::function<void()>& beforeArrive) {
  const int n = shm.size(), r = shm.rank();
  if (n == 1) return;
  static_assert(sizeof(Descriptor) <= ShmTransport::kRecordBytes, "descriptor must fit a record");
  const Descriptor mine = describe(op);
  // Descriptors alternate between two records: a rank can publish op k+1 while a slower one is
  // still reading op k, but not op k+2 before everyone has arrived at k+1.
  const int which = static_cast<int>(op.seq % 2);
  uint64_t epoch = op.resumeEpoch;
  if (epoch == 0) {
    std::memcpy(shm.record(r, which), &mine, sizeof mine);
    if (beforeArrive) beforeArrive();
    epoch = shm.arrive();
    if (limits.handOffAt != std::chrono::steady_clock::time_point::max() &&
        !shm.waitFor(epoch, limits.handOffAt, std::chrono::milliseconds(0), nullptr).empty()) {
      throw HandOff{epoch};
    }
  }
  auto stall = [&](const std::vector<int>& missing) {
    // The lowest rank that is waiting reports, once.
    int reporter = 0;
    while (std::find(missing.begin(), missing.end(), reporter) != missing.end()) ++reporter;
    if (reporter != r) return;
    const std::string queued = limits.queuedBehind ? limits.queuedBehind() : std::string();
    std::fprintf(stderr, "braid: stall: %s after %d ms (the other ranks are waiting for it%s)\n",
                 missingMessage(missing, mine, limits.hosts).c_str(), limits.stallWarningMs, queued.c_str());
  };
  auto waitUntil = limits.deadline;
  if (limits.stallShutdownMs > 0)
    waitUntil = std::min(waitUntil, std::chrono::steady_clock::now() + std::chrono::milliseconds(limits.stallShutdownMs));
  std::vector<int> missing = shm.waitFor(epoch, waitUntil, std::chrono::milliseconds(limits.stallWarningMs), stall);
  if (!missing.empty() && waitUntil < limits.deadline) stallShutdown(missingMessage(missing, mine, limits.hosts), limits.stallShutdownMs);
  if (!missing.empty()) {
    throw BraidException(ErrorCode::kTimeout,
                         missingMessage(missing, mine, limits.hosts) +
                             " before the timeout; the communicator is no longer usable. Check that every rank "
                             "makes the same collective calls (a rank may have failed, returned early or skipped a call).");
  }
  std::vector<Descriptor> all(n);
  for (int s = 0; s < n; ++s) std::memcpy(&all[s], shm.record(s, which), sizeof(Descriptor));
  std::string mismatch = compare(all);
  if (!mismatch.empty()) throw BraidException(ErrorCode::kMismatch, mismatch);
}

struct PeerAgreement {
  SentAfterRule sentAfter;
  std::vector<Descriptor> all;
  std::vector<RequestId> receives, sends;
  // Per peer: the receive of what follows its descriptor (its buffer, or bytes to drop; -1:
  // nothing), and the send of this rank's buffer.
  std::vector<RequestId> bufferReceives, bufferSends;
  std::vector<char> got;
  std::vector<uint8_t> buffers;               // n slots of `bytes`, rank order
  std::vector<std::vector<uint8_t>> dropped;  // what disagreeing peers sent after their descriptors
  size_t bytes = 0;  // this op's carried buffer; 0: it carries none
  int remaining = 0;
  std::chrono::steady_clock::time_point start;
  bool warned = false;
};

std::shared_ptr<PeerAgreement> newPeerAgreement(SentAfterRule sentAfter) {
  auto state = std::make_shared<PeerAgreement>();
  state->sentAfter = std::move(sentAfter);
  return state;
}

uint8_t* agreedBuffers(PeerAgreement& state) { return state.buffers.data(); }

namespace {
// What the peer whose descriptor is `d` sent after it, by the engine's rule; 0 for a descriptor
// that names no typed all-reduce.
size_t sentAfterDescriptor(const PeerAgreement& x, const Descriptor& d) {
  if (!x.sentAfter || d.kind != static_cast<int64_t>(OpKind::kAllreduce) || d.count <= 0) return 0;
  if (d.dtype < 0 || d.dtype >= kNumDTypes || d.algorithm < 0 || d.algorithm > static_cast<int64_t>(Algorithm::kDirect)) return 0;
  return x.sentAfter(OpKind::kAllreduce, static_cast<Algorithm>(d.algorithm), static_cast<DType>(d.dtype),
                     static_cast<size_t>(d.count));
}
}  // namespace

void negotiateOpPeers(TcpTransport& t, const OpRecord& op, const NegotiationLimits& limits, PeerAgreement& x,
                      const AgreementPayload* payload) {
  const int n = t.size(), me = t.rank();
  if (n == 1) return;
  try {
    if (op.resumeEpoch == 0) {
      x.all.assign(n, Descriptor{});
      x.all[me] = describe(op);
      x.receives.assign(n, -1);
      x.sends.assign(n, -1);
      x.bufferReceives.assign(n, -1);
      x.bufferSends.assign(n, -1);
      x.got.assign(n, 0);
      x.got[me] = 1;
      x.dropped.resize(n);
      x.bytes = payload != nullptr ? payload->bytes : 0;
      if (x.bytes > 0) {
        // This rank's own slot is what it sends: memory of the agreement's, which outlives a
        // hand-off to the engine thread whatever happens to the caller's buffer.
        x.buffers.resize(x.bytes * n);
        std::memcpy(x.buffers.data() + x.bytes * me, payload->data, x.bytes);
      }
      x.remaining = n - 1;
      x.start = std::chrono::steady_clock::now();
      x.warned = false;
      // Peers in the order after this rank: not every rank's first message to rank 0.
      for (int i = 1; i < n; ++i) {
        const int p = (me + i) % n;
        x.receives[p] = t.irecv(p, &x.all[p], sizeof(Descriptor));
        x.sends[p] = t.isend(p, &x.all[me], sizeof(Descriptor));
        if (x.bytes > 0) x.bufferSends[p] = t.isend(p, x.buffers.data() + x.bytes * me, x.bytes);
      }
    }
    const auto spinFrom = std::chrono::steady_clock::now();
    while (x.remaining > 0) {
      for (int p = 0; p < n; ++p) {
        if (!x.got[p] && t.test(x.receives[p])) {
          x.got[p] = 1;
          --x.remaining;
          // What follows the descriptor: the peer's buffer where it agrees, else whatever it
          // sent, to drop.
          uint8_t* into = nullptr;
          size_t length = 0;
          if (x.bytes > 0 && sameOp(x.all[p], x.all[me])) {
            into = x.buffers.data() + x.bytes * p;
            length = x.bytes;
          } else if ((length = sentAfterDescriptor(x, x.all[p])) > 0) {
            x.dropped[p].resize(length);
            into = x.dropped[p].data();
          }
          if (length > 0) x.bufferReceives[p] = t.irecv(p, into, length);
        }
      }
      if (x.remaining == 0) break;
      const auto now = std::chrono::steady_clock::now();
      if (now > limits.handOffAt) throw HandOff{1};  // the engine thread waits on (state kept)
      // Spin until 50 us after the start or after bytes last moved: a carried buffer's writes go
      // out between the tests, and sleeping in poll() between them made the 32-64 KiB direct
      // all-reduce 1.1-1.45x slower on the 2x2 test bed (4 ranks on 2 cores; A/B in one run).
      const auto movedAt = std::max(spinFrom, t.lastMoved());
      if (now - movedAt < std::chrono::microseconds(50)) {
        // As the transport's own wait: where ranks outnumber cores, the peer may need this core.
        if (now - movedAt > std::chrono::microseconds(5)) std::this_thread::yield();
        continue;
      }
      const bool late = now > limits.deadline;
      const bool stalled = !x.warned && now - x.start > std::chrono::milliseconds(limits.stallWarningMs);
      const bool shutdown = limits.stallShutdownMs > 0 && now - x.start > std::chrono::milliseconds(limits.stallShutdownMs);
      if (late || stalled || shutdown) {
        std::vector<int> missing, present;
        for (int p = 0; p < n; ++p) (x.got[p] ? present : missing).push_back(p);
        const std::string what = missingMessage(missing, x.all[me], limits.hosts);
        if (shutdown && !late) stallShutdown(what, limits.stallShutdownMs);
        if (late) {
          throw BraidException(ErrorCode::kTimeout,
                               what + " before the timeout; the communicator is no longer usable. Check that every rank "
                                      "makes the same collective calls (a rank may have failed, returned early or skipped a call).");
        }
        x.warned = true;
        // The lowest rank that waits reports, once.
        if (present.front() == me) {
          const std::string queued = limits.queuedBehind ? limits.queuedBehind() : std::string();
          std::fprintf(stderr, "braid: stall: %s after %d ms (the other ranks are waiting for it%s)\n", what.c_str(),
                       limits.stallWarningMs, queued.c_str());
        }
      }
      t.idle(std::chrono::milliseconds(10));
    }
    // Every rank is here: the buffers behind the descriptors move at the transport's own pace
    // (its wait spins while bytes flow; this loop's is for descriptors, which are one write).
    for (int p = 0; p < n; ++p) {
      if (p == me) continue;
      if (x.bufferReceives[p] >= 0) t.wait(x.bufferReceives[p]);
      t.wait(x.sends[p]);
      if (x.bytes > 0) t.wait(x.bufferSends[p]);
    }
  } catch (const HandOff&) {
    throw;
  } catch (...) {
    t.abandon(nullptr);  // nothing posted may outlive a failed agreement
    t.closeConnections();
    throw;
  }
  std::string mismatch = compare(x.all);
  if (!mismatch.empty()) throw BraidException(ErrorCode::kMismatch, mismatch);
}

void negotiateOp(MPI_Comm control, int rank, int size, const OpRecord& op, const NegotiationLimits& limits) {
  if (size == 1) return;
  Descriptor mine = describe(op);
  if (rank == 0) {
    negotiateAsRoot(control, size, mine, limits);
  } else {
    negotiateAsMember(control, mine, limits);
  }
}

}  // namespace braid
