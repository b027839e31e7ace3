#include "engine/engine.h"

#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <dlfcn.h>

#include <chrono>
#include <thread>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <cstdio>
#include <new>

#include "common/backoff.h"
#include "common/buffer_pool.h"
#include "engine/algorithm_table.h"
#include "engine/negotiation.h"
#include "kernels/reduce.h"

namespace braid {

const char* opKindName(OpKind k) {
  switch (k) {
    case OpKind::kAllreduce: return "allReduce";
    case OpKind::kBroadcast: return "broadcast";
    case OpKind::kAllgather: return "allGather";
    case OpKind::kReduceScatter: return "reduceScatter";
    case OpKind::kBarrier: return "barrier";
    case OpKind::kSplit: return "split";
    case OpKind::kCloseComm: return "close";
    case OpKind::kMpiLoop: return "mpiLoop";
    case OpKind::kSend: return "send";
    case OpKind::kRecv: return "recv";
  }
  return "unknown";
}

const char* algorithmName(Algorithm a) {
  switch (a) {
    case Algorithm::kAuto: return "auto";
    case Algorithm::kRing: return "ring";
    case Algorithm::kTree: return "tree";
    case Algorithm::kRecursiveDoubling: return "recursive-doubling";
    case Algorithm::kMpi: return "mpi";
    case Algorithm::kShm: return "shm";
    case Algorithm::kHierarchical: return "hierarchical";
    case Algorithm::kDirect: return "direct";
    case Algorithm::kNccl: return "nccl";
  }
  return "unknown";
}

namespace {

// `auto` for all-reduce, from benchmarks/allreduce at np=2 (benchmarks/README.md): shared memory
// whenever all ranks share a host (it led from 512 B; above 64 MiB the ring led until the
// shared-memory path streamed its large writes, after which shared memory won at 128 and 256 MiB
// in all five runs); the hierarchy when the ranks span hosts with several on each (it led the
// flat algorithms at every size on 2 hosts x 2 ranks); otherwise recursive doubling (fewest
// steps) for small messages and the ring (least data per rank) above
// (algorithm_table.cc: recursiveDoublingMaxBytes). The binomial tree never won at np <= 4; it
// stays available by name. A loaded profile replaces these rules with the cost model.

// The engine spins this long for the next op before it sleeps: back-to-back ops (a training
// step's buckets, a benchmark loop) then skip the wake-up.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(100);

// An awaited op is tried on the caller's thread up to this size: the shared-memory all-reduce of
// 256 KiB takes about as long as the two thread hand-offs plus the Promise's trip through the
// event loop it saves (~20 us on the development VM); larger ones leave the JS thread free.
constexpr size_t kInlineAsyncMaxBytes = 256 * 1024;
// Over TCP, an awaited op on an ordinary ArrayBuffer (which the engine thread could only use
// through copies) is tried on the caller's thread beyond kInlineAsyncMaxBytes as long as ops of
// its size have lately taken no longer than this: where the network is fast the two copies cost
// 30-45% of the op (64 MiB between the test bed's hosts: 0.86x MPI_Allreduce with them), where it
// is slow a few percent, and there the event loop stays free.
constexpr double kInlineAwaitedTcpMaxUs = 50000;
// Any awaited op over TCP (a SharedArrayBuffer's too) is tried there when ops its size have
// lately taken under this: the hand-offs and the Promise's trip through the event loop (20-40 us
// here) are 10-20% of a 512 KiB op between the test bed's hosts, and the event loop waits a
// millisecond at most.
constexpr double kInlineAwaitedTcpQuickUs = 1000;
// How long such a try waits for the other ranks to arrive before the engine thread takes over:
// a few hand-offs' worth, so that ranks in step finish inline and a late peer costs the caller
// little.
constexpr auto kInlineArrivalBudget = std::chrono::microseconds(50);
// An op that would need copies to leave this thread waits longer for its peers, in proportion
// to its size, as long as the two copies it saves would take (about 0.3 ms per MiB on the
// development VM): waiting then never costs more than twice what handing over at once would,
// and handing over costs more than the copies (the engine thread's wake-up, the Promise's trip
// through the event loop: 0.1-0.5 ms on this VM). With 0.1 ms per MiB, rounded down to whole
// MiB, 512 KiB ops of a nccl-tests-style loop handed over in runs and averaged 0.6x
// MPI_Allreduce.
std::chrono::microseconds arrivalBudget(const OpRecord& op) {
  if (!op.inlineAnySize) return kInlineArrivalBudget;
  constexpr uint64_t kCopiesUsPerMiB = 300;
  const uint64_t bytes = op.count * dtypeSize(op.dtype);
  return kInlineArrivalBudget + std::chrono::microseconds((bytes * kCopiesUsPerMiB) >> 20);
}

struct Recorder final : PhaseRecorder {
  explicit Recorder(OpRecord& op) : op_(op) {}
  void reduceSpan(double startUs, double endUs) override {
    auto& spans = op_.reduceSpans;
    // Adjacent reductions (a pipelined ring's segments) merge into one span.
    if (!spans.empty() && startUs - spans.back().second < 5.0) {
      spans.back().second = endUs;
    } else if (spans.size() < 256) {
      spans.emplace_back(startUs, endUs);
    }
  }
  OpRecord& op_;
};

// Open MPI loads its components with dlopen and expects libmpi's symbols to be global; Node
// loads addons with RTLD_LOCAL. Promote the already-loaded libmpi to global before MPI_Init.
void promoteMpiSymbols() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &info) != 0 && info.dli_fname != nullptr) {
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  }
}

}  // namespace

Engine& Engine::instance() {
  static Engine* engine = new Engine();  // never destroyed: its thread may outlive static teardown
  return *engine;
}

WorldInfo Engine::start(const EngineOptions& options) {
  std::unique_lock<std::mutex> lock(startMutex_);
  if (started_.load()) {
    // MPI can be initialised once per process: a retry after a failed start fails the same way
    // instead of returning a communicator with no engine behind it.
    if (!startError_.empty()) throw BraidException(startCode_, startError_ + " (Braid starts once per process; fix the cause and start the process again)");
    return world_;
  }
  started_.store(true);
  options_ = options;
  if (const char* fault = std::getenv("BRAID_TEST_FAULT")) {
    std::sscanf(fault, "bad_alloc@%d:%lld", &options_.faultRank, &options_.faultSeq);
  }
  thread_ = std::thread([this] { threadMain(); });
  startDone_.wait(lock, [this] { return startFinished_; });
  if (!startError_.empty()) {
    thread_.join();
    throw BraidException(startCode_, startError_);
  }
  return world_;
}

void Engine::initMpi() {
  promoteMpiSymbols();
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = 0;
  if (!initialized && MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    throw BraidException(ErrorCode::kBackendUnavailable, "MPI_Init_thread failed");
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  world_.threadLevel = provided;
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  world_.mpiLibrary.assign(version, strnlen(version, static_cast<size_t>(len)));
  while (!world_.mpiLibrary.empty() && (world_.mpiLibrary.back() == '\n' || world_.mpiLibrary.back() == '\0'))
    world_.mpiLibrary.pop_back();

  const auto startDeadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.timeoutMs);
  // Every rank's host, so that messages about a rank say where it runs.
  {
    auto names = std::make_shared<std::vector<char>>();
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    names->assign(static_cast<size_t>(MPI_MAX_PROCESSOR_NAME) * (size + 1), '\0');
    int length = 0;
    MPI_Get_processor_name(names->data(), &length);
    MPI_Request request;
    checkMpi(MPI_Iallgather(names->data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names->data() + MPI_MAX_PROCESSOR_NAME,
                            MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD, &request),
             "MPI_Iallgather (start-up)");
    try {
      waitRequest(request, startDeadline, "every rank's host name at start-up");
    } catch (...) {
      orphanRequests({request}, names);
      throw;
    }
    for (int r = 0; r < size; ++r) {
      const char* name = names->data() + static_cast<size_t>(MPI_MAX_PROCESSOR_NAME) * (r + 1);
      world_.hosts.emplace_back(name, strnlen(name, MPI_MAX_PROCESSOR_NAME));
    }
  }
  CommState& worldComm = addComm(MPI_COMM_WORLD, startDeadline);
  world_.rank = worldComm.rank;
  world_.size = worldComm.size;
  world_.transport = worldComm.network().name();
  world_.sharedMemory = worldComm.shm != nullptr;
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_.rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &world_.localRank);
  MPI_Comm_size(local, &world_.localSize);
  MPI_Comm_free(&local);

  // Rank 0's cost profile is everyone's (each host may have its own file, or none): `auto` must
  // choose alike on every rank. A profile rank 0 could not read fails every rank's start alike.
  {
    struct ProfileRecord {
      int32_t state;  // 0: none, 1: loaded, 2: error
      double numbers[kProfileFields];
      int32_t curvePoints[kCurvedLinks];
      double curveBytes[kCurvedLinks][LinkCost::kMaxPoints];
      double curveUs[kCurvedLinks][LinkCost::kMaxPoints];
      char error[480];
    };
    auto record = std::make_shared<ProfileRecord>();
    std::memset(record.get(), 0, sizeof(ProfileRecord));
    record->state = !options_.profileError.empty() ? 2 : options_.profileLoaded ? 1 : 0;
    CostProfile mine = options_.profile;
    const auto fields = profileFields(mine);
    for (size_t i = 0; i < kProfileFields; ++i) record->numbers[i] = *fields[i];
    const auto curves = curvedLinks(mine);
    for (size_t c = 0; c < kCurvedLinks; ++c) {
      record->curvePoints[c] = curves[c]->points;
      std::memcpy(record->curveBytes[c], curves[c]->bytes, sizeof curves[c]->bytes);
      std::memcpy(record->curveUs[c], curves[c]->us, sizeof curves[c]->us);
    }
    std::snprintf(record->error, sizeof record->error, "%s", options_.profileError.c_str());
    if (world_.size > 1) {
      MPI_Request request;
      checkMpi(MPI_Ibcast(record.get(), sizeof(ProfileRecord), MPI_BYTE, 0, MPI_COMM_WORLD, &request), "MPI_Ibcast (profile)");
      try {
        waitRequest(request, startDeadline, "rank 0's cost profile at start-up");
      } catch (...) {
        orphanRequests({request}, record);
        throw;
      }
    }
    if (record->state == 2) throw BraidException(ErrorCode::kInvalidArgument, std::string(record->error) + " (rank 0's profile)");
    options_.profileLoaded = record->state == 1;
    CostProfile& q = options_.profile;
    const auto shared = profileFields(q);
    for (size_t i = 0; i < kProfileFields; ++i) *shared[i] = record->numbers[i];
    const auto sharedCurves = curvedLinks(q);
    for (size_t c = 0; c < kCurvedLinks; ++c) {
      sharedCurves[c]->points = std::clamp(record->curvePoints[c], 0, LinkCost::kMaxPoints);
      std::memcpy(sharedCurves[c]->bytes, record->curveBytes[c], sizeof sharedCurves[c]->bytes);
      std::memcpy(sharedCurves[c]->us, record->curveUs[c], sizeof sharedCurves[c]->us);
    }
    q.shmSlotBytes = options_.shmSlotBytes;
  }

  // Rank 0 writes the timeline; every rank must learn if it cannot, or only rank 0 would fail.
  std::string timelineError;
  if (!options_.timelinePath.empty() && world_.rank == 0) {
    try {
      timeline_ = std::make_unique<Timeline>(options_.timelinePath);
    } catch (const BraidException& e) {
      timelineError = e.what();
    }
  }
  int timelineOk = timelineError.empty() ? 1 : 0;
  if (!options_.timelinePath.empty() && world_.size > 1) {
    MPI_Request request;
    checkMpi(MPI_Ibcast(&timelineOk, 1, MPI_INT, 0, MPI_COMM_WORLD, &request), "MPI_Ibcast (start-up)");
    waitRequest(request, std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.timeoutMs),
                "rank 0's answer at start-up");
  }
  if (!timelineOk) {
    throw BraidException(ErrorCode::kInvalidArgument,
                         timelineError.empty() ? "rank 0 cannot write the timeline file '" + options_.timelinePath +
                                                     "' (BRAID_TIMELINE / init's timeline); give a path rank 0 can write"
                                               : timelineError);
  }
}

void Engine::finalizeMpi() {
  if (timeline_) timeline_->close();
  for (auto& [id, comm] : comms_) {
    if (comm->closed) continue;
    comm->shm.reset();
    comm->tcp.reset();
    comm->mpi.reset();
    MPI_Comm_free(&comm->control);
    if (comm->base != MPI_COMM_WORLD) MPI_Comm_free(&comm->base);
  }
  comms_.clear();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && !skipFinalize_.load()) MPI_Finalize();
}

CommState& Engine::addComm(MPI_Comm base, std::chrono::steady_clock::time_point deadline) {
  auto state = std::make_unique<CommState>();
  state->id = nextCommId_++;
  state->base = base;
  MPI_Comm data = MPI_COMM_NULL;
  // The non-blocking duplicates, so that a rank lost in the middle is a TIMEOUT at the deadline.
  auto dup = [&](MPI_Comm* out) {
    auto handle = std::make_shared<MPI_Comm>(MPI_COMM_NULL);
    MPI_Request request;
    checkMpi(MPI_Comm_idup(base, handle.get(), &request), "MPI_Comm_idup");
    try {
      waitRequest(request, deadline, "a rank's part in creating the communicator");
    } catch (const BraidException& e) {
      orphanRequests({request}, handle);
      throw BraidException(ErrorCode::kTimeout, std::string(e.what()) + "; a rank stopped while the communicator was made");
    }
    *out = *handle;
  };
  dup(&state->control);
  dup(&data);
  {
    MPI_Comm p2pData = MPI_COMM_NULL, p2pAnswers = MPI_COMM_NULL;
    dup(&p2pData);
    dup(&p2pAnswers);
    state->p2p = std::make_unique<PointToPoint>(p2pData, p2pAnswers, &state->hosts);
  }
  MPI_Comm_set_errhandler(state->control, MPI_ERRORS_RETURN);
  state->mpi = std::make_unique<MpiTransport>(data);
  state->rank = state->mpi->rank();
  state->size = state->mpi->size();
  // Where each rank of this communicator runs (its world rank's host).
  {
    MPI_Group group, worldGroup;
    MPI_Comm_group(base, &group);
    MPI_Comm_group(MPI_COMM_WORLD, &worldGroup);
    std::vector<int> mine(state->size), world(state->size);
    for (int r = 0; r < state->size; ++r) mine[r] = r;
    MPI_Group_translate_ranks(group, state->size, mine.data(), worldGroup, world.data());
    MPI_Group_free(&group);
    MPI_Group_free(&worldGroup);
    for (int w : world) state->hosts.push_back(w >= 0 && static_cast<size_t>(w) < world_.hosts.size() ? world_.hosts[w] : "?");
  }
  state->mpi->setHosts(&state->hosts);
  // A failed set-up below frees what was made (the data communicator goes with `mpi`).
  struct FreeControl {
    std::unique_ptr<CommState>& state;
    ~FreeControl() {
      if (state && state->control != MPI_COMM_NULL) MPI_Comm_free(&state->control);
    }
  } freeControl{state};
  // Between hosts, data goes over Braid's own sockets (every rank decides alike: the hosts are
  // the same list everywhere).
  const bool spansHosts =
      std::any_of(state->hosts.begin(), state->hosts.end(), [&](const std::string& h) { return h != state->hosts[0]; });
  if (state->size > 1 && options_.transport != "mpi" && (spansHosts || options_.transport == "tcp")) {
    TcpOptions tcp = options_.tcp;
    tcp.loopback = !spansHosts;
    state->tcp = TcpTransport::create(state->control, tcp, state->hosts, deadline);
    state->tcp->setHosts(&state->hosts);
  }
  addHierarchy(*state, deadline);
  // Collective over the new communicator, like the dups above; every rank gets the same answer
  // (none when the ranks span hosts).
  if (!options_.sharedMemory) {
    state->shmUnavailable = "shared memory is off (BRAID_SHM=off)";
  } else if (state->size > 1) {
    state->shm = ShmTransport::create(state->control, options_.shmSlotBytes, &state->shmUnavailable, deadline);
    if (state->shm) {
      MPI_Comm control = state->control;
      state->shm->setProgress([control, engineThread = engineThreadId_] {
        // Only the engine thread calls MPI; an op run inline needs no progress (runInline).
        if (std::this_thread::get_id() != engineThread) return;
        int flag = 0;  // a tag nobody sends: the call only drives MPI's progress engine
        MPI_Iprobe(MPI_ANY_SOURCE, 32767, control, &flag, MPI_STATUS_IGNORE);
      });
    }
  }
  CommState& ref = *state;
  comms_[ref.id] = std::move(state);  // from here on, closeComm frees the communicators
  return ref;
}

bool Hierarchy::networkDoubles(size_t sliceBytes, const CostProfile* profile) const {
  if (profile != nullptr) {
    Topology t;
    t.ranks = hosts * perHost;
    t.hosts = hosts;
    t.perHost = perHost;
    t.hierarchy = true;
    return cost::hierarchyNetworkDoubles(t, *profile, static_cast<double>(sliceBytes));
  }
  return sliceBytes <= recursiveDoublingMaxBytes(hosts);
}

Hierarchy::~Hierarchy() {
  // The overlap thread is idle between ops (every op finishes its job), so the transports can go first.
  local.reset();
  cross.reset();
  if (localComm != MPI_COMM_NULL) MPI_Comm_free(&localComm);
  if (crossComm != MPI_COMM_NULL) MPI_Comm_free(&crossComm);
}

void Engine::addHierarchy(CommState& comm, std::chrono::steady_clock::time_point deadline) {
  // Hosts in order of their first rank; every rank computes the same from the same list.
  std::vector<std::string> order;
  std::vector<int> hostOf(comm.size), localOf(comm.size);
  std::vector<int> counts;
  for (int r = 0; r < comm.size; ++r) {
    auto it = std::find(order.begin(), order.end(), comm.hosts[r]);
    if (it == order.end()) {
      order.push_back(comm.hosts[r]);
      counts.push_back(0);
      it = order.end() - 1;
    }
    const int h = static_cast<int>(it - order.begin());
    hostOf[r] = h;
    localOf[r] = counts[h]++;
  }
  const int hosts = static_cast<int>(order.size());
  if (hosts < 2) {
    comm.hierarchyUnavailable = "all ranks run on one host";
    return;
  }
  if (std::any_of(counts.begin(), counts.end(), [&](int c) { return c != counts[0]; })) {
    comm.hierarchyUnavailable = "the hosts run different numbers of ranks";
    return;
  }
  if (counts[0] == 1) {
    comm.hierarchyUnavailable = "one rank per host (nothing to share within a host)";
    return;
  }
  if (!options_.sharedMemory) {
    comm.hierarchyUnavailable = "shared memory is off (BRAID_SHM=off)";
    return;
  }
  auto h = std::make_unique<Hierarchy>();
  h->hosts = hosts;
  h->perHost = counts[0];
  h->hostIndex = hostOf[comm.rank];
  h->localIndex = localOf[comm.rank];
  h->hostOfRank = hostOf;
  h->localOfRank = localOf;
  h->rankOf.assign(static_cast<size_t>(hosts) * h->perHost, 0);
  for (int r = 0; r < comm.size; ++r) h->rankOf[static_cast<size_t>(hostOf[r]) * h->perHost + localOf[r]] = r;
  // Right after the agreement (or at start-up) every rank is here: MPI_Comm_split cannot stall.
  checkMpi(MPI_Comm_split(comm.control, h->hostIndex, h->localIndex, &h->localComm), "MPI_Comm_split (hosts)");
  checkMpi(MPI_Comm_split(comm.control, h->localIndex, h->hostIndex, &h->crossComm), "MPI_Comm_split (local index)");
  MPI_Comm_set_errhandler(h->localComm, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(h->crossComm, MPI_ERRORS_RETURN);
  std::string why;
  h->local = ShmTransport::create(h->localComm, options_.shmSlotBytes, &why, deadline);
  // Every host must have its region, or no rank uses the hierarchy.
  auto ok = std::make_shared<int>(h->local ? 1 : 0);
  MPI_Request request;
  checkMpi(MPI_Iallreduce(MPI_IN_PLACE, ok.get(), 1, MPI_INT, MPI_MIN, comm.control, &request), "MPI_Iallreduce (hierarchy)");
  try {
    waitRequest(request, deadline, "every host's shared-memory answer");
  } catch (...) {
    orphanRequests({request}, ok);
    throw;
  }
  if (!*ok) {
    comm.hierarchyUnavailable = why.empty() ? "a host could not make its shared-memory region" : why;
    return;
  }
  {
    MPI_Comm control = h->localComm;
    h->local->setProgress([control, engineThread = engineThreadId_] {
      if (std::this_thread::get_id() != engineThread) return;
      int flag = 0;
      MPI_Iprobe(MPI_ANY_SOURCE, 32767, control, &flag, MPI_STATUS_IGNORE);
    });
  }
  // The ranks of one local index are on different hosts: the network transport of the
  // communicator's kind (TCP unless BRAID_TRANSPORT=mpi).
  h->hostNames = order;
  if (comm.tcp) {
    h->cross = TcpTransport::create(h->crossComm, options_.tcp, h->hostNames, deadline);
  } else {
    MPI_Comm dup = MPI_COMM_NULL;
    checkMpi(MPI_Comm_dup(h->crossComm, &dup), "MPI_Comm_dup (hierarchy)");
    h->cross = std::make_unique<MpiTransport>(dup);
  }
  h->cross->setHosts(&h->hostNames);
  comm.hierarchy = std::move(h);
}

void Engine::threadMain() {
#if defined(__linux__)
  // Backoff naps of 20 us should not stretch to the default 50 us timer slack on top.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
#endif
  engineThreadId_ = std::this_thread::get_id();
  auto finishStart = [this](const std::string& error, ErrorCode code) {
    std::lock_guard<std::mutex> lock(startMutex_);
    startError_ = error;
    startCode_ = code;
    startFinished_ = true;
    startDone_.notify_all();
  };
  try {
    initMpi();
  } catch (const std::exception& e) {
    // Every rank fails alike (the start-up checks are agreed), so MPI can end in order.
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) finalizeMpi();
    const auto* braid = dynamic_cast<const BraidException*>(&e);
    finishStart(e.what(), braid ? braid->code() : ErrorCode::kBackendUnavailable);
    return;
  }
  finishStart("", ErrorCode::kOk);
  // Closing the world resolves only once MPI is finalized: a script may exit right after.
  OpRecord* worldClose = nullptr;
  for (;;) {
    OpRecord* op = nextOp();
    if (op == nullptr) break;
    if (op->kind == OpKind::kSend || op->kind == OpKind::kRecv) {
      startPointToPoint(op);
      progressPointToPoint();  // a message already there completes at once
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      continue;
    }
    run(op);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
    }
    if (op->kind == OpKind::kCloseComm && op->commId == 0 && op->code == ErrorCode::kOk) {
      worldClose = op;
      continue;
    }
    // Only after busy_ is clear: the completion wakes the JS thread, which may take this core at
    // once and, finding the engine still busy, queue its next op instead of running it inline.
    op->onComplete(op);
    if (p2pInFlight_ > 0) progressWhileIdle();  // between queued collectives too
  }
  // Exiting (or the world closed) with messages under way: they end here, before MPI does.
  for (auto& [id, comm] : comms_) {
    if (comm->p2p) finishPointToPoint(comm->p2p->fail(ErrorCode::kAborted, "the process is exiting; this point-to-point message did not complete"));
  }
  finalizeMpi();
  if (worldClose != nullptr) worldClose->onComplete(worldClose);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    threadDone_ = true;
  }
  wake_.notify_all();
}

OpRecord* Engine::nextOp() {
  // Yield rather than pause: on a machine with as many ranks as cores, the JS thread that will
  // submit the next op may be waiting for this very core.
  const auto spinUntil = std::chrono::steady_clock::now() + kSpinBeforeSleep;
  while (queued_.load(std::memory_order_acquire) == 0 && !stopping_.load() &&
         std::chrono::steady_clock::now() < spinUntil) {
    if (p2pInFlight_ > 0) progressWhileIdle();
    else std::this_thread::yield();
  }
  std::unique_lock<std::mutex> lock(mutex_);
  // With messages in flight the engine naps instead of sleeping, testing them after each nap:
  // from 20 us, doubling while nothing moves, up to 200 us (a message that arrives waits at most
  // that long to be noticed; a request/answer exchange notices several).
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    sleeping_ = true;
    // Not while an op runs inline on another thread: it owns the engine's state until it is done.
    const auto ready = [this] { return !busy_ && (!queue_.empty() || stopping_.load()); };
    if (p2pInFlight_ > 0) {
      if (!wake_.wait_for(lock, nap, ready)) {
        sleeping_ = false;
        lock.unlock();
        const int before = p2pInFlight_;
        progressWhileIdle();
        nap = p2pInFlight_ < before ? std::chrono::microseconds(20) : std::min(nap * 2, std::chrono::microseconds(200));
        lock.lock();
        continue;
      }
    } else {
      wake_.wait(lock, ready);
    }
    sleeping_ = false;
    if (queue_.empty()) {
      exited_ = true;  // from here on submit() refuses ops itself
      return nullptr;
    }
    OpRecord* op = queue_.front();
    queue_.pop_front();
    queued_.fetch_sub(1, std::memory_order_release);
    if (!abandonQueued_.load()) {
      busy_ = true;
      return op;
    }
    // The process is exiting: what was queued will not run.
    op->code = ErrorCode::kAborted;
    op->message = "the process is exiting; the operation was not run";
    lock.unlock();
    op->onComplete(op);
    lock.lock();
  }
}

CommState& Engine::usableComm(int commId) {
  auto it = comms_.find(commId);
  if (it == comms_.end() || it->second->closed) {
    throw BraidException(ErrorCode::kAborted, "the communicator is closed; create a new one with init() or split()");
  }
  CommState& comm = *it->second;
  if (!comm.brokenReason.empty()) {
    throw BraidException(ErrorCode::kAborted, "the communicator is unusable since an earlier failure: " + comm.brokenReason);
  }
  return comm;
}

void Engine::startPointToPoint(OpRecord* op) {
  op->tStart = stamp();
  op->tNegotiated = op->tStart;  // no agreement: a message is not collective
  try {
    CommState& comm = usableComm(op->commId);
    const bool anySource = op->kind == OpKind::kRecv && op->peer == -1;
    if (!anySource && (op->peer < 0 || op->peer >= comm.size)) {
      throw BraidException(ErrorCode::kInvalidArgument, std::string(opKindName(op->kind)) + ": the peer must be a rank in [0, " +
                                                            std::to_string(comm.size - 1) + "]; got " + std::to_string(op->peer));
    }
    if (op->tag < 0 || op->tag > kMaxPointToPointTag) {
      throw BraidException(ErrorCode::kInvalidArgument, std::string(opKindName(op->kind)) + ": tag must be in [0, " +
                                                            std::to_string(kMaxPointToPointTag) + "]; got " + std::to_string(op->tag));
    }
    mpiSettled_.store(false, std::memory_order_relaxed);  // its messages go through MPI
    comm.p2p->start(op, std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.timeoutMs), op->callerCopies);
    ++p2pInFlight_;
  } catch (const BraidException& e) {
    op->code = e.code();
    op->message = e.what();
    op->tDone = stamp();
    op->onComplete(op);
  }
}

bool Engine::progressPointToPoint() {
  if (p2pInFlight_ == 0) return false;
  std::vector<OpRecord*> finished;
  for (auto& [id, comm] : comms_) {
    if (!comm->p2p || comm->p2p->idle()) continue;
    std::string outOfStep;
    for (OpRecord* op : comm->p2p->progress(&outOfStep)) finished.push_back(op);
    // A message left half-way: what this communicator's peers send next cannot be trusted.
    if (!outOfStep.empty() && comm->brokenReason.empty()) {
      comm->brokenReason = outOfStep;
      anyBroken_.store(true);
    }
  }
  const bool any = !finished.empty();
  finishPointToPoint(std::move(finished));
  return any;
}

void Engine::finishPointToPoint(std::vector<OpRecord*> finished) {
  for (OpRecord* op : finished) {
    --p2pInFlight_;
    op->tDone = stamp();
    if (timeline_) timeline_->record(*op);
    op->onComplete(op);
  }
}

void Engine::progressWhileIdle() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (busy_) return;  // an op runs inline: it owns the communicators' state meanwhile
    busy_ = true;
  }
  progressPointToPoint();
  std::lock_guard<std::mutex> lock(mutex_);
  busy_ = false;
}

bool Engine::submit(OpRecord* op) {
  op->tQueued = stamp();
  bool wakeUp;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (exited_ || abandonQueued_.load()) {
      op->code = ErrorCode::kAborted;
      op->message = "the world communicator is closed (MPI is finalized); no more collectives can run in this process";
      return false;
    }
    queue_.push_back(op);
    queued_.fetch_add(1, std::memory_order_release);
    wakeUp = sleeping_;
  }
  if (wakeUp) wake_.notify_one();
  return true;
}

Engine::InlineOutcome Engine::runInline(OpRecord* op, bool blocking) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (busy_ || exited_ || stopping_.load() || !queue_.empty() || !mpiSettled_.load(std::memory_order_relaxed))
      return InlineOutcome::kNotRun;
    busy_ = true;
  }
  InlineOutcome outcome = InlineOutcome::kNotRun;
  if (inlineEligible(*op, blocking)) {
    op->tQueued = stamp();
    const auto handOffAt = blocking ? std::chrono::steady_clock::time_point::max()
                                    : std::chrono::steady_clock::now() + arrivalBudget(*op);
    op->ranInline = true;
    outcome = run(op, handOffAt) ? InlineOutcome::kDone : InlineOutcome::kHandedOff;
  }
  bool wakeUp;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // A handed-over op goes first: it is already under way on the other ranks.
    if (outcome == InlineOutcome::kHandedOff) {
      op->ranInline = false;
      if (op->beforeHandOff) op->beforeHandOff(*op);
      queue_.push_front(op);
      queued_.fetch_add(1, std::memory_order_release);
    }
    busy_ = false;
    wakeUp = sleeping_ && (!queue_.empty() || stopping_.load());
  }
  if (wakeUp) wake_.notify_one();
  if (outcome == InlineOutcome::kDone) op->onComplete(op);
  return outcome;
}

bool Engine::tcpOnly(const CommState& comm) const { return comm.tcp && !comm.shm; }

bool Engine::directCarriesAgreement(const CommState& comm) const { return tcpOnly(comm) && options_.negotiate; }

// Ops whose agreement and data go over the TCP transport alone on a tcpOnly communicator.
static bool movesOverTcpOnly(OpKind kind) {
  return kind == OpKind::kAllreduce || kind == OpKind::kBroadcast || kind == OpKind::kAllgather ||
         kind == OpKind::kReduceScatter || kind == OpKind::kBarrier;
}

// The same collectives on a communicator of one send nothing: they are copies at most.
static bool sendsNothing(const CommState& comm, OpKind kind) { return comm.size == 1 && movesOverTcpOnly(kind); }

// Called with busy_ claimed.
bool Engine::inlineEligible(const OpRecord& op, bool blocking) {
  // NCCL's ops run on the engine thread: the first makes the communicator over MPI.
  if (op.algorithm == Algorithm::kNccl) return false;
  // Without the agreement step a try could not hand over: it would wait for late peers.
  if (!blocking && !options_.negotiate) return false;
  auto it = comms_.find(op.commId);
  if (it == comms_.end()) return false;
  const CommState& comm = *it->second;
  if (comm.closed || !comm.brokenReason.empty()) return false;
  if (op.kind == OpKind::kAllreduce && op.algorithm == Algorithm::kAuto && comm.ncclMade.load() &&
      chooseAllreduce(comm, op.count * dtypeSize(op.dtype)) == Algorithm::kNccl)
    return false;  // `auto` sends it through NCCL, which runs on the engine thread
  // An op on a communicator whose agreement and data go over TCP makes no MPI call: the caller's
  // thread runs it (holding the engine, as for shared memory) and saves the two thread hand-offs.
  // An awaited one up to kInlineAsyncMaxBytes, and above while ops its size have lately been
  // quick (kInlineAwaitedTcpQuickUs, or kInlineAwaitedTcpMaxUs where copies would be needed):
  // over a slow network a large op would hold the event loop as long as the network takes. When
  // the peers' descriptors have not all arrived within the arrival budget, the engine thread
  // waits on (HandOff).
  if (tcpOnly(comm) && movesOverTcpOnly(op.kind)) {
    const size_t bytes = op.count * dtypeSize(op.dtype);
    if (!blocking && bytes > kInlineAsyncMaxBytes) {
      const double lately = comm.tcpUsLately(bytes);
      const double bound = op.inlineAnySize ? kInlineAwaitedTcpMaxUs : kInlineAwaitedTcpQuickUs;
      const bool quickEnough = op.kind == OpKind::kAllreduce && lately > 0 && lately <= bound;
      if (!quickEnough) return false;
    }
    return !(op.kind == OpKind::kAllreduce && op.algorithm == Algorithm::kMpi);
  }
  if (!blocking && op.count * dtypeSize(op.dtype) > kInlineAsyncMaxBytes && !op.inlineAnySize) return false;
  // On a communicator of one a hand-off to the engine thread would cost more than the op.
  if (sendsNothing(comm, op.kind)) return !(op.kind == OpKind::kAllreduce && op.algorithm == Algorithm::kMpi);
  if (!comm.shm) return false;
  if (op.kind == OpKind::kBarrier) return options_.negotiate;  // the agreement is the barrier
  if (op.kind != OpKind::kAllreduce) return false;
  const Algorithm a = op.algorithm == Algorithm::kAuto ? chooseAllreduce(comm, op.count * dtypeSize(op.dtype)) : op.algorithm;
  return a == Algorithm::kShm;
}

std::chrono::milliseconds Engine::shutdownBound() const {
  // Healthy, MPI_Finalize waits for every rank to get there, however long their work takes (as
  // MPI does). Once an op failed, a peer may be gone or unreachable and never get there: the
  // ranks still alive reach their own finalization within seconds of the shared error.
  return anyBroken_.load() ? std::chrono::milliseconds(10000) : std::chrono::milliseconds::max();
}

bool Engine::shutdown() {
  if (!started_.load() || !thread_.joinable()) return true;
  std::unique_lock<std::mutex> lock(mutex_);
  if (leftBehind_) return false;
  stopping_.store(true);
  abandonQueued_.store(true);
  wake_.notify_all();
  // Checked every 100 ms: an op still under way may break the communicator meanwhile.
  auto giveUpAt = std::chrono::steady_clock::time_point::max();
  while (!threadDone_) {
    const auto bound = std::min(shutdownBound(), failingBound_);
    if (giveUpAt == std::chrono::steady_clock::time_point::max() && bound != std::chrono::milliseconds::max())
      giveUpAt = std::chrono::steady_clock::now() + bound;
    if (std::chrono::steady_clock::now() >= giveUpAt) {
      leftBehind_ = true;
      return false;
    }
    wake_.wait_for(lock, std::chrono::milliseconds(100));
  }
  lock.unlock();
  thread_.join();
  return true;
}

bool Engine::shutdownFailing(std::chrono::milliseconds bound) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    skipFinalize_.store(true);
    failingBound_ = bound;
  }
  return shutdown();
}

// What an op's MPI requests may read or write, owned by the engine: if the op fails with requests
// unfinished, this goes to the orphanage with them (MpiTransport::abandon) and the user's buffers
// are released untouched by anything still posted.
struct Engine::OpMemory {
  std::shared_ptr<std::vector<uint8_t>> scratch;
  std::shared_ptr<uint8_t> data, out;  // the engine's copies of the user's buffers (BufferPool)
  std::shared_ptr<void> callerCopies;
};

namespace {
// Thrown by an op on the caller's thread whose data phase timed out: the engine thread finishes it.
struct DiagnoseOnEngine {};
}  // namespace

bool Engine::run(OpRecord* op, std::chrono::steady_clock::time_point handOffAt) {
  op->tStart = stamp();
  if (onEngineThread()) reapOrphans();  // it calls MPI: never from an op run on the caller's thread
  // What the op moved through (see mpiSettled_); a refused op moved nothing.
  bool throughShmOnly = true, spansWorld = false, overTcp = false, movesNothing = false;
  try {
    CommState& comm = usableComm(op->commId);
    if (!op->timedOut.empty()) {
      // Handed over by the caller's thread after a data-phase TIMEOUT: name who stopped answering.
      comm.brokenReason = op->timedOut;
      anyBroken_.store(true);
      const std::string silent = unansweringRanks(comm, op->ranAlgorithm == Algorithm::kNccl);
      closeConnections(comm);  // kept open while asking (abandonOp on the caller's thread)
      throw BraidException(ErrorCode::kTimeout, silent + " (this rank timed out on " + op->timedOut + ")");
    }
    if (op->resumeEpoch == 0) op->seq = comm.seq++;
    spansWorld = comm.size == world_.size;
    overTcp = tcpOnly(comm) && movesOverTcpOnly(op->kind);
    movesNothing = sendsNothing(comm, op->kind);
    throughShmOnly = (comm.shm && (op->kind == OpKind::kAllreduce || (op->kind == OpKind::kBarrier && options_.negotiate))) || overTcp ||
                     movesNothing;
    try {
      if (op->kind == OpKind::kCloseComm) {
        closeComm(comm);
      } else {
        const auto began = std::chrono::steady_clock::now();
        const auto deadline = began + std::chrono::milliseconds(options_.timeoutMs);
        NegotiationLimits limits{deadline, options_.stallWarningMs, options_.stallShutdownMs, &comm.hosts, handOffAt,
                                 [this, commId = comm.id] { return queuedOpNames(commId); }};
        // A shared-memory all-reduce agrees on the op in its own first barrier: one flag
        // round-trip fewer per op. Every rank decides this alike or its descriptor differs.
        auto describeOp = [op] {
          return std::string(opKindName(op->kind)) + " #" + std::to_string(op->seq) + (op->name.empty() ? "" : " '" + op->name + "'");
        };
        const bool fuse = options_.negotiate && comm.shm && op->kind == OpKind::kAllreduce && op->count > 0 &&
                          (op->algorithm == Algorithm::kShm ||
                           (op->algorithm == Algorithm::kAuto && chooseAllreduce(comm, op->count * dtypeSize(op->dtype)) == Algorithm::kShm));
        if (options_.negotiate && !fuse) {
          if (comm.shm) {
            negotiateOpShm(*comm.shm, *op, limits);
          } else if (comm.tcp) {
            comm.tcp->setDeadline(deadline);
            comm.tcp->setStallReport(options_.stallWarningMs, describeOp);  // buffers may ride on the agreement
            if (!comm.agreement) {
              comm.agreement = newPeerAgreement([this, &comm](OpKind kind, Algorithm algorithm, DType dtype, size_t count) {
                return carriedByAgreement(comm, kind, algorithm, dtype, count);
              });
            }
            const size_t carried = carriedByAgreement(comm, op->kind, op->algorithm, op->dtype, op->count);
            const AgreementPayload payload{op->data, carried};
            negotiateOpPeers(*comm.tcp, *op, limits, *comm.agreement, carried > 0 ? &payload : nullptr);
            op->dataCarried = carried > 0;
          } else {
            negotiateOp(comm.control, comm.rank, comm.size, *op, limits);
          }
          op->tNegotiated = stamp();
        }
        if (!options_.negotiate) op->tNegotiated = stamp();
        // Every transport the op may wait on keeps its deadline and names it in a stall report.
        auto arm = [&](auto* transport) {
          if (transport == nullptr) return;
          transport->setDeadline(deadline);
          transport->setStallReport(options_.stallWarningMs, describeOp);
        };
        arm(comm.mpi.get());
        arm(comm.tcp.get());
        arm(comm.shm.get());
        if (comm.hierarchy) {
          arm(comm.hierarchy->cross.get());
          arm(comm.hierarchy->local.get());
        }
        OpMemory memory;
        memory.scratch = scratch_;
        memory.callerCopies = op->callerCopies;
        try {
          execute(comm, *op, fuse ? &limits : nullptr, memory);
          const size_t bytes = op->count * dtypeSize(op->dtype);
          if (overTcp && op->kind == OpKind::kAllreduce && bytes > kInlineAsyncMaxBytes) {
            comm.recordTcpUs(bytes, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - began).count());
          }
        } catch (const BraidException& e) {
          // A data-phase timeout names the peer this rank waited for, which may be a healthy
          // rank waiting for another: ask every rank who still answers, and name those who do not.
          // The TCP connections stay open meanwhile: closed, they would fail a peer that is
          // about to time out too before it asks (and this rank would name it as silent).
          const bool diagnose = e.code() == ErrorCode::kTimeout && comm.size > 1 && op->ranAlgorithm != Algorithm::kShm;
          abandonOp(comm, std::move(memory), diagnose);
          if (diagnose) {
            // That exchange goes through MPI: an op run on the caller's thread hands it over.
            if (!onEngineThread()) {
              op->timedOut = e.what();
              throw DiagnoseOnEngine{};
            }
            const std::string silent = unansweringRanks(comm, op->ranAlgorithm == Algorithm::kNccl);
            closeConnections(comm);
            throw BraidException(ErrorCode::kTimeout, silent + " (this rank timed out on " + e.what() + ")");
          }
          throw;
        } catch (...) {
          abandonOp(comm, std::move(memory));
          throw;
        }
      }
    } catch (const HandOff& handOff) {
      op->resumeEpoch = handOff.epoch;
      return false;
    } catch (const DiagnoseOnEngine&) {
      return false;
    } catch (const BraidException& e) {
      // These are raised on every rank alike before any data moves, so the ranks stay in step;
      // anything else may have left messages in flight.
      const bool inStep = e.code() == ErrorCode::kMismatch || e.code() == ErrorCode::kInvalidArgument ||
                          e.code() == ErrorCode::kBackendUnavailable;
      if (!inStep) {
        comm.brokenReason = e.what();
        anyBroken_.store(true);
      }
      throw;
    } catch (const std::exception& e) {
      // bad_alloc or another failure mid-collective: the peers may be mid-ring, so this
      // communicator cannot be trusted to be in step any more.
      comm.brokenReason = std::string("an internal error interrupted ") + opKindName(op->kind) + ": " + e.what();
      anyBroken_.store(true);
      throw BraidException(ErrorCode::kAborted, comm.brokenReason +
                                                    "; the communicator is no longer usable (the other ranks will "
                                                    "fail with TIMEOUT or ABORTED)");
    }
  } catch (const BraidException& e) {
    op->code = e.code();
    op->message = e.what();
  } catch (const std::exception& e) {
    op->code = ErrorCode::kInternal;
    op->message = e.what();
  }
  if (op->tNegotiated == 0) op->tNegotiated = stamp();  // refused before the agreement
  op->tDone = stamp();
  // Through shared memory, agreed and moved over TCP alone, or on a communicator of one: no MPI
  // message was involved.
  if (op->kind == OpKind::kAllreduce && op->ranAlgorithm != Algorithm::kAuto && op->ranAlgorithm != Algorithm::kShm &&
      !((overTcp || movesNothing) && op->ranAlgorithm != Algorithm::kMpi))
    throughShmOnly = false;
  if (!throughShmOnly) {
    mpiSettled_.store(false, std::memory_order_relaxed);
  } else if (spansWorld && op->code == ErrorCode::kOk && std::this_thread::get_id() == engineThreadId_) {
    mpiSettled_.store(true, std::memory_order_relaxed);
  }
  if (timeline_) timeline_->record(*op);
  return true;
}

void Engine::abandonOp(CommState& comm, OpMemory&& memory, bool keepConnections) {
  auto kept = std::make_shared<OpMemory>(std::move(memory));
  size_t held = comm.mpi->abandon(kept);
  if (comm.tcp) held += comm.tcp->abandon(kept);
  if (comm.hierarchy) held += comm.hierarchy->cross->abandon(kept);
  // The scratch is held by requests MPI still has: the next op gets a new one.
  if (held > 0) scratch_ = std::make_shared<std::vector<uint8_t>>();
  if (!keepConnections) closeConnections(comm);
}

void Engine::closeConnections(CommState& comm) {
  if (comm.tcp) comm.tcp->closeConnections();
  if (comm.hierarchy) comm.hierarchy->cross->closeConnections();
}

std::string Engine::queuedOpNames(int commId) {
  // What this rank has submitted after the stalled op: the ops the other ranks will wait for
  // next (Horovod's stall report lists every missing tensor).
  std::lock_guard<std::mutex> lock(mutex_);
  std::string names;
  int listed = 0, more = 0;
  for (const OpRecord* queued : queue_) {
    if (queued->commId != commId) continue;
    if (listed == 8) {
      ++more;
      continue;
    }
    names += (listed++ ? ", " : "") + (queued->name.empty() ? std::string(opKindName(queued->kind)) : "'" + queued->name + "'");
  }
  if (listed == 0) return "";
  return "; queued behind it here: " + names + (more ? " and " + std::to_string(more) + " more" : "");
}

std::string Engine::unansweringRanks(CommState& comm, bool onGpu) {
  // Every rank that timed out sends a heartbeat to every other and listens for theirs for a
  // while: the ranks that timed out in the same op hear each other, a stopped or unreachable rank
  // is not heard. Each rank judges alone, but ranks that see the same failure name the same ranks.
  // The window covers how much later than this rank another one may have entered the op (and so
  // time out): without the agreement, ranks enter on their own, and on a loaded machine a quarter
  // of a 2.5 s timeout was not enough (an answering rank was named as silent).
  constexpr int kLivenessTag = 13;
  const auto window = std::chrono::milliseconds(std::min(3000, std::max(200, options_.timeoutMs / 2)));
  struct Heartbeats {
    std::vector<int> out, in;
    std::vector<MPI_Request> requests;
  };
  auto beats = std::make_shared<Heartbeats>();
  const int n = comm.size;
  beats->out.assign(n, comm.rank);
  beats->in.assign(n, -1);
  beats->requests.assign(2 * n, MPI_REQUEST_NULL);
  for (int r = 0; r < n; ++r) {
    if (r == comm.rank) continue;
    MPI_Irecv(&beats->in[r], 1, MPI_INT, r, kLivenessTag, comm.control, &beats->requests[r]);
    MPI_Isend(&beats->out[r], 1, MPI_INT, r, kLivenessTag, comm.control, &beats->requests[n + r]);
  }
  const auto until = std::chrono::steady_clock::now() + window;
  Backoff backoff;
  for (;;) {
    int all = 0;
    MPI_Testall(n, beats->requests.data(), &all, MPI_STATUSES_IGNORE);  // the receives
    if (all || std::chrono::steady_clock::now() > until) break;
    backoff.pause();
  }
  std::vector<int> silent;
  for (int r = 0; r < n; ++r) {
    if (r == comm.rank) continue;
    int got = 0;
    MPI_Test(&beats->requests[r], &got, MPI_STATUS_IGNORE);
    if (!got) silent.push_back(r);
  }
  orphanRequests(beats->requests, beats);
  if (silent.empty() && onGpu) {
    return "Every other rank still answers: the GPU work did not finish in time (a kernel or NCCL is stuck on some rank's GPU, "
           "or NCCL's own network between the hosts is down; if it was only slow, raise timeoutMs in init())";
  }
  if (silent.empty()) return "Every other rank still answers: the data was only slow (raise timeoutMs in init()) or a link drops packets";
  std::string list;
  std::vector<std::string> hosts;
  for (int r : silent) {
    list += (list.empty() ? "" : ", ") + std::to_string(r);
    const std::string& h = comm.hosts[r];
    if (std::find(hosts.begin(), hosts.end(), h) == hosts.end()) hosts.push_back(h);
  }
  std::string hostList;
  for (const auto& h : hosts) hostList += (hostList.empty() ? "" : ", ") + h;
  return std::string(silent.size() == 1 ? "Rank " : "Ranks ") + list + (hosts.size() == 1 ? " (host " : " (hosts ") + hostList +
         (silent.size() == 1 ? ") does" : ") do") + " not answer: stopped, stuck, or the network to " +
         (hosts.size() == 1 ? "that host" : "those hosts") + " is down";
}

static Topology topologyOf(const CommState& comm) {
  Topology t;
  t.ranks = comm.size;
  t.sharedMemory = comm.shm != nullptr;
  if (comm.hierarchy) {
    t.hosts = comm.hierarchy->hosts;
    t.perHost = comm.hierarchy->perHost;
    t.hierarchy = true;
  } else {
    std::vector<std::string> seen;
    int most = 0;
    for (const auto& h : comm.hosts) {
      if (std::find(seen.begin(), seen.end(), h) == seen.end()) seen.push_back(h);
      most = std::max<int>(most, static_cast<int>(std::count(comm.hosts.begin(), comm.hosts.end(), h)));
    }
    t.hosts = std::max<int>(1, static_cast<int>(seen.size()));
    t.perHost = std::max(1, most);
  }
  return t;
}

size_t Engine::carriedByAgreement(const CommState& comm, OpKind kind, Algorithm algorithm, DType dtype, size_t count) const {
  if (!directCarriesAgreement(comm) || kind != OpKind::kAllreduce || count == 0 || comm.size <= 1) return 0;
  const size_t bytes = count * dtypeSize(dtype);
  if (bytes > kDirectCarriedMaxBytes) return 0;  // larger: agreed first, then sent (cost_model.h)
  const Algorithm a = algorithm == Algorithm::kAuto ? chooseAllreduce(comm, bytes) : algorithm;
  return a == Algorithm::kDirect ? bytes : 0;
}

Algorithm Engine::chooseAllreduce(const CommState& comm, size_t bytes) const {
  if (comm.size <= 1) return Algorithm::kRing;
  // The calibrated model decides among the table's rows that can run here. The staged NCCL
  // all-reduce is one of them only once this communicator's NCCL exists (never made for host
  // arrays alone: a CPU job never starts CUDA) and where calibrate measured it; it may then beat
  // even shared memory, which otherwise `auto` takes on one host without asking the model.
  const bool ncclMade = comm.ncclMade.load();
  if (options_.profileLoaded && (!comm.shm || ncclMade)) {
    Topology t = topologyOf(comm);
    t.directCarriesAgreement = directCarriesAgreement(comm);
    t.ncclReady = ncclMade;
    const bool overlapped = comm.tcp != nullptr;
    Algorithm best = Algorithm::kRing;
    double bestUs = std::numeric_limits<double>::infinity();
    for (const AlgorithmRow* row : rowsOf(OpKind::kAllreduce)) {
      if (!row->modeled || !row->unavailable(comm).empty()) continue;
      const double us = predictAllreduceUs(row->model, t, options_.profile, bytes, overlapped);
      if (us < bestUs) {
        bestUs = us;
        best = row->algorithm;
      }
    }
    if (!comm.shm || best == Algorithm::kNccl) return best;
  }
  if (comm.shm) return Algorithm::kShm;
  // Over TCP the direct all-reduce carries the agreement: one exchange instead of two or more.
  if (directCarriesAgreement(comm) && bytes <= directMaxBytes(comm.size)) return Algorithm::kDirect;
  if (comm.hierarchy) return Algorithm::kHierarchical;
  if (bytes <= recursiveDoublingMaxBytes(comm.size)) return Algorithm::kRecursiveDoubling;
  return Algorithm::kRing;
}

Algorithm Engine::chooseAlgorithm(const CommState& comm, const OpRecord& op) const {
  if (op.algorithm != Algorithm::kAuto) return op.algorithm;
  const bool hierarchy = comm.hierarchy && comm.size > 1;
  switch (op.kind) {
    case OpKind::kBroadcast:
      if (hierarchy) return Algorithm::kHierarchical;
      return op.count * dtypeSize(op.dtype) > kBroadcastBinomialMaxBytes ? Algorithm::kRing : Algorithm::kTree;
    case OpKind::kAllgather: return hierarchy ? Algorithm::kHierarchical : Algorithm::kRing;
    default: return Algorithm::kRing;
  }
}

// The engine writes exactly the elements these shapes promise; TypeScript checks them with
// friendlier messages, this keeps a bad call from touching memory it does not own.
static void checkShapes(const CommState& comm, const OpRecord& op) {
  auto refuse = [](const std::string& m) { throw BraidException(ErrorCode::kInvalidArgument, m); };
  if (op.kind == OpKind::kAllgather && op.outCount != op.count * comm.size)
    refuse("allGather: the output must hold size x input length elements");
  if (op.kind == OpKind::kReduceScatter &&
      (op.count % comm.size != 0 || op.outCount != op.count / comm.size))
    refuse("reduceScatter: the input length must divide by the communicator size");
  if (op.kind == OpKind::kBroadcast && (op.root < 0 || op.root >= comm.size))
    refuse("broadcast: root is not a rank of this communicator");
  // Its data may leave this rank only through the transform, chunk by chunk: the shared-memory
  // algorithm, or none (a world of one).
  if (op.transform && (op.kind != OpKind::kAllreduce || op.algorithm != Algorithm::kShm || (comm.size > 1 && !comm.shm)))
    refuse("a masked all-reduce runs over shared memory only (all ranks on one host)");
}

// Ops whose data moves through MPI point-to-point messages (or MPI's own collectives): a request
// MPI cannot drop may outlive a failed op. The TCP transport drops its own at once.
static bool movesThroughMpi(const CommState& comm, const OpRecord& op, Algorithm allreduceAlgorithm) {
  if (comm.size <= 1 || op.algorithm == Algorithm::kNccl) return false;  // NCCL's buffers are on the GPU
  if (op.kind == OpKind::kAllreduce && allreduceAlgorithm == Algorithm::kMpi) return op.count > 0;
  if (comm.tcp) return false;
  switch (op.kind) {
    case OpKind::kAllreduce: return allreduceAlgorithm != Algorithm::kShm && op.count > 0;
    case OpKind::kBroadcast:
    case OpKind::kAllgather:
    case OpKind::kReduceScatter: return op.count > 0;
    default: return false;
  }
}

void Engine::execute(CommState& comm, OpRecord& op, const NegotiationLimits* fusedNegotiation, OpMemory& memory) {
  checkShapes(comm, op);
  Recorder recorder(op);
  CollectiveArgs args{comm.network(), op.dtype, op.redop, *memory.scratch, timeline_ ? &recorder : nullptr,
                      options_.segmentBytes};
  const size_t es = dtypeSize(op.dtype);
  // Through MPI, the op runs on the engine's own copies unless the caller made some: a request
  // left unfinished by a failure may then keep them, never the user's memory.
  void* const userData = op.data;
  void* const userOut = op.out;
  const Algorithm allreduceAlgorithm =
      op.kind == OpKind::kAllreduce && op.algorithm == Algorithm::kAuto ? chooseAllreduce(comm, op.count * es) : op.algorithm;
  const bool stage = !op.callerCopies && movesThroughMpi(comm, op, allreduceAlgorithm);
  if (stage) {
    memory.data = BufferPool::shared().take(op.count * es);
    std::memcpy(memory.data.get(), op.data, op.count * es);
    op.data = memory.data.get();
    if (op.outCount > 0) {
      memory.out = BufferPool::shared().take(op.outCount * es);
      op.out = memory.out.get();
    }
  }
  // The reduce-scatter ring works in place: on a copy of the input, which the caller keeps as it was.
  if (!stage && !op.callerCopies && op.kind == OpKind::kReduceScatter && op.count > 0 && comm.size > 1 && op.algorithm != Algorithm::kNccl) {
    memory.data = BufferPool::shared().take(op.count * es);
    std::memcpy(memory.data.get(), op.data, op.count * es);
    op.data = memory.data.get();
  }
  struct Restore {
    OpRecord& op;
    void* data;
    void* out;
    ~Restore() {
      op.data = data;
      op.out = out;
    }
  } restore{op, userData, userOut};
  if (comm.id == 0 && comm.rank == options_.faultRank && static_cast<long long>(op.seq) == options_.faultSeq &&
      comm.size > 1 && op.kind != OpKind::kBarrier && op.algorithm != Algorithm::kNccl) {
    // Injected (tests): what an allocation failing mid-collective looks like. The peers have
    // posted this op's first messages, so this rank sends its first too before failing.
    if (op.count > 0) comm.network().isend((comm.rank + 1) % comm.size, op.data, dtypeSize(op.dtype));
    throw std::bad_alloc();
  }
  executeOn(comm, op, fusedNegotiation, args, allreduceAlgorithm);
  if (stage) {
    const bool inPlace = op.kind == OpKind::kAllreduce || op.kind == OpKind::kBroadcast;
    if (inPlace) std::memcpy(userData, memory.data.get(), op.count * es);
    if (op.outCount > 0) std::memcpy(userOut, memory.out.get(), op.outCount * es);
  }
}

void Engine::executeOn(CommState& comm, OpRecord& op, const NegotiationLimits* fusedNegotiation, CollectiveArgs& args,
                       Algorithm allreduceAlgorithm) {
  switch (op.kind) {
    case OpKind::kAllreduce:
    case OpKind::kBroadcast:
    case OpKind::kAllgather:
    case OpKind::kReduceScatter: {
      const Algorithm a = op.kind == OpKind::kAllreduce ? allreduceAlgorithm : chooseAlgorithm(comm, op);
      const AlgorithmRow* row = findAlgorithm(op.kind, a);
      if (row == nullptr) {
        throw BraidException(ErrorCode::kInvalidArgument, std::string(opKindName(op.kind)) + " has no algorithm '" +
                                                              algorithmName(a) + "'; use " + algorithmsOf(op.kind));
      }
      const std::string why = row->unavailable(comm);
      if (!why.empty()) {
        throw BraidException(ErrorCode::kBackendUnavailable, std::string(opKindName(op.kind)) + ": algorithm '" + algorithmName(a) +
                                                                 "' is not available on this communicator: " + why);
      }
      op.ranAlgorithm = a;
      AlgorithmContext context{comm, op, args, fusedNegotiation, [this, &op] { op.tNegotiated = stamp(); }};
      row->run(context);
      return;
    }
    case OpKind::kBarrier:
      // A completed negotiation already heard from every rank.
      if (!options_.negotiate) barrierDissemination(comm.network());
      return;
    case OpKind::kSplit:
      split(comm, op, comm.mpi->deadline());
      return;
    case OpKind::kCloseComm:
      return;
    case OpKind::kMpiLoop: {
      op.ranAlgorithm = Algorithm::kMpi;
      const double start = nowMicros();
      for (int i = 0; i < op.iterations; ++i) comm.mpi->blockingAllreduce(op.data, op.count, op.dtype, op.redop);
      op.loopUs = nowMicros() - start;
      return;
    }
    case OpKind::kSend:
    case OpKind::kRecv:
      throw BraidException(ErrorCode::kInternal, "point-to-point ops are started by startPointToPoint, not run as collectives");
  }
}

void Engine::split(CommState& comm, OpRecord& op, std::chrono::steady_clock::time_point deadline) {
  // MPI has no non-blocking MPI_Comm_split: it runs right after the agreement every rank has
  // just passed, so only a rank dying in those microseconds can hold it; the rest of the set-up
  // (duplicates, the shared-memory region) keeps the op's deadline.
  MPI_Comm child = MPI_COMM_NULL;
  checkMpi(MPI_Comm_split(comm.base, op.color < 0 ? MPI_UNDEFINED : op.color, op.key, &child), "MPI_Comm_split");
  if (child == MPI_COMM_NULL) return;  // this rank asked for no communicator
  MPI_Comm_set_errhandler(child, MPI_ERRORS_RETURN);
  CommState& made = addComm(child, deadline);
  op.newCommId = made.id;
  op.newRank = made.rank;
  op.newSize = made.size;
  op.newTransport = made.network().name();
  op.newSharedMemory = made.shm != nullptr;
}

void Engine::closeComm(CommState& comm) {
  if (comm.id == 0) {
    // Closing the world ends the engine: every communicator goes, then MPI is finalized.
    for (auto& [id, other] : comms_) {
      if (other->id != 0 && !other->closed) closeComm(*other);
    }
    stopping_.store(true);
  }
  comm.closed = true;
  if (comm.p2p) {
    finishPointToPoint(comm.p2p->fail(ErrorCode::kAborted, "the communicator was closed while this point-to-point message was under way"));
    comm.p2p.reset();
  }
  comm.shm.reset();
  comm.tcp.reset();
  comm.mpi.reset();
  MPI_Comm_free(&comm.control);
  if (comm.base != MPI_COMM_WORLD) MPI_Comm_free(&comm.base);
}

}  // namespace braid
