// The communication engine: one thread per process that owns every MPI call. JS calls become
// OpRecords queued to it; it negotiates each op with the other ranks, runs the algorithm over the
// transport and reports completion through the record's callback.
#pragma once
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "algorithms/collective.h"
#include "algorithms/cost_model.h"
#include "engine/negotiation.h"
#include "engine/op.h"
#include "engine/p2p.h"
#include "engine/timeline.h"
#include "gpu/nccl_comm.h"
#include "transport/mpi_transport.h"
#include "transport/shm_transport.h"
#include "transport/tcp_transport.h"

namespace braid {

struct EngineOptions {
  int timeoutMs = 120000;       // an op not finished by then fails with TIMEOUT
  int stallWarningMs = 30000;   // rank 0 names the ranks it is still waiting for
  int stallShutdownMs = 0;      // a stall this long ends the job (MPI_Abort); 0: never
  bool negotiate = true;        // BRAID_NEGOTIATION=off skips the agreement step (benchmarks)
  size_t segmentBytes = 1 << 20;
  bool sharedMemory = true;       // BRAID_SHM=off: MPI only, even on one host
  size_t shmSlotBytes = 1 << 20;  // per rank; holds two chunks
  // Where the data of communicators that span hosts goes (BRAID_TRANSPORT): "auto" (Braid's TCP
  // transport between hosts, MPI on one host), "tcp" (TCP always, loopback on one host), "mpi".
  std::string transport = "auto";
  TcpOptions tcp;
  // The cost model's numbers (BRAID_PROFILE, from `braid calibrate`). Without a profile, `auto`
  // keeps its measured rules; with one, it picks the algorithm the model predicts fastest.
  CostProfile profile = CostProfile::defaults();
  bool profileLoaded = false;
  std::string profileError;  // this rank could not read its profile (only rank 0's counts)
  std::string timelinePath;     // BRAID_TIMELINE
  // Tests only (BRAID_TEST_FAULT=bad_alloc@RANK:SEQ): the op with that sequence number on the
  // world fails on that rank with std::bad_alloc after its data started moving.
  int faultRank = -1;
  long long faultSeq = -1;
};

struct WorldInfo {
  int rank = 0, size = 1, localRank = 0, localSize = 1;
  int threadLevel = 0;
  std::string mpiLibrary;
  std::vector<std::string> hosts;  // per world rank, for messages
  std::string transport;           // what the world's point-to-point data goes over: "tcp" or "mpi"
  bool sharedMemory = false;       // the world has a shared-memory region (all ranks on one host)
};

// A communicator's ranks as hosts x local ranks, for the hierarchical algorithms: present when
// the ranks span several hosts with the same number (more than one) on each, and every host
// could make its shared-memory region.
struct Hierarchy {
  int hosts = 1, perHost = 1;       // H, L
  int hostIndex = 0, localIndex = 0;
  std::vector<int> rankOf;          // [host * L + local] -> communicator rank
  std::vector<int> hostOfRank, localOfRank;  // per communicator rank
  std::vector<std::string> hostNames;        // per host index, for messages
  MPI_Comm localComm = MPI_COMM_NULL, crossComm = MPI_COMM_NULL;
  std::unique_ptr<ShmTransport> local;   // this host's ranks
  std::unique_ptr<Transport> cross;      // this local index's ranks, one per host (TCP or MPI)
  Overlap overlap;                       // network steps beside shared-memory ones (TCP only)
  // The network step's algorithm for a slice: by the calibrated model where a profile is loaded
  // (`profile`: the engine's, the same on every rank; what `auto` and `braid plan` predict
  // with), else by the measured rule.
  bool networkDoubles(size_t sliceBytes, const CostProfile* profile) const;
  ~Hierarchy();
};

struct CommState {
  int id = 0;
  int rank = 0, size = 1;
  MPI_Comm control = MPI_COMM_NULL;  // negotiation traffic
  MPI_Comm base = MPI_COMM_NULL;     // what split() splits
  std::unique_ptr<MpiTransport> mpi;  // data traffic when there is no TCP transport; 'mpi'
  std::unique_ptr<TcpTransport> tcp;  // data traffic between hosts
  std::shared_ptr<PeerAgreement> agreement;  // the agreement over TCP, kept across a hand-off
  // What the point-to-point algorithms run on.
  Transport& network() { return tcp ? static_cast<Transport&>(*tcp) : *mpi; }
  std::unique_ptr<ShmTransport> shm;        // agreement and the 'shm' algorithm, when all ranks share a host
  std::string shmUnavailable;               // why there is none
  std::vector<std::string> hosts;  // per rank of this communicator
  std::unique_ptr<Hierarchy> hierarchy;
  std::unique_ptr<PointToPoint> p2p;  // send / recv in flight on this communicator
  std::string hierarchyUnavailable;  // why there is none
  // How long the last few all-reduces over TCP of each size (within a factor of two) took, the
  // fastest of 3, in microseconds: how long an awaited op would hold the calling thread
  // (Engine::inlineEligible). 0: none that size yet.
  struct TcpTimes {
    double us[3] = {0, 0, 0};
    uint32_t count = 0;
  };
  TcpTimes tcpTimes[48];
  static size_t sizeClass(size_t bytes) {
    size_t c = 0;
    while (bytes > 1 && c < 47) {
      bytes >>= 1;
      ++c;
    }
    return c;
  }
  void recordTcpUs(size_t bytes, double us) {
    TcpTimes& t = tcpTimes[sizeClass(bytes)];
    t.us[t.count++ % 3] = us;
  }
  double tcpUsLately(size_t bytes) const {
    double best = 0;
    for (double v : tcpTimes[sizeClass(bytes)].us)
      if (v > 0 && (best == 0 || v < best)) best = v;
    return best;
  }
  uint64_t seq = 0;
  bool closed = false;
  std::string brokenReason;  // set once an op left the communicator unusable
  // NCCL over this communicator's ranks, made by the first op on DeviceBuffers (nccl_ops.cc).
  std::unique_ptr<NcclCommunicator> nccl;
  // Set with `nccl` (on every rank: its making is collective); read by `auto` from the caller's
  // thread too, so that a calibrated profile may send host arrays through NCCL once it exists.
  std::atomic<bool> ncclMade{false};
};

class Engine {
 public:
  // The process's engine; started once (MPI cannot be initialised twice).
  static Engine& instance();

  // Starts the thread and MPI on it; blocks until MPI is up. Throws BraidException.
  WorldInfo start(const EngineOptions& options);
  bool started() const { return started_.load(); }
  const WorldInfo& world() const { return world_; }
  const EngineOptions& options() const { return options_; }

  // Queues an op; its onComplete runs on the engine thread. Returns false, with op->code and
  // op->message set and without calling onComplete, when the engine no longer takes ops (MPI is
  // finalized or being finalized): the caller settles the op itself.
  bool submit(OpRecord* op);
  // Runs `op` on the calling thread instead, when that needs no MPI call and cannot reorder it:
  // a shared-memory all-reduce or barrier, nothing queued or running, and no earlier MPI traffic
  // a peer may still need this process's MPI progress for. The caller saves the two thread
  // hand-offs that dominate small ops. `blocking` (a synchronous call): the caller waits as the
  // engine would. Otherwise only small ops are tried, and when the other ranks have not all
  // arrived within kInlineArrivalBudget, the op is handed to the engine thread, which goes on
  // from the barrier it was waiting at, and completes it as a submitted op.
  enum class InlineOutcome { kNotRun, kDone, kHandedOff };
  InlineOutcome runInline(OpRecord* op, bool blocking);
  bool onEngineThread() const { return std::this_thread::get_id() == engineThreadId_; }
  // Ends the engine at process exit: queued ops fail with ABORTED, the op under way runs to its
  // end or deadline, then MPI is finalized. Once a communicator is broken it waits 10 s at most
  // (MPI_Finalize can block for good on an unreachable peer); returns false when the thread had
  // not finished by then (it is left behind, and the caller should end the process).
  bool shutdown();
  // The process ends with an error: no MPI_Finalize (its peers may be waiting for it in a
  // collective it will never join, and would hold it there; mpirun ends the job when it exits
  // non-zero), and at most `bound` for an op under way. False when the thread was left behind.
  bool shutdownFailing(std::chrono::milliseconds bound);
  // How long shutdown() waits, from the options and whether a communicator broke.
  std::chrono::milliseconds shutdownBound() const;

 private:
  Engine() = default;
  void threadMain();
  void initMpi();
  void finalizeMpi();
  OpRecord* nextOp();
  // Point-to-point ops (engine/p2p.h): started when they reach the queue's head, then moved on
  // between ops and while the engine waits for the next one.
  void startPointToPoint(OpRecord* op);
  // The op's communicator, or ABORTED when it is closed or broken.
  CommState& usableComm(int commId);
  bool progressPointToPoint();  // true when one finished
  void progressWhileIdle();     // the same, claiming the engine (an inline op may hold it)
  void finishPointToPoint(std::vector<OpRecord*> finished);
  // False when the op was handed over (HandOff) instead of completed.
  bool run(OpRecord* op, std::chrono::steady_clock::time_point handOffAt = std::chrono::steady_clock::time_point::max());
  bool inlineEligible(const OpRecord& op, bool blocking);
  // Agreement (if on) and data over the TCP transport, none over MPI.
  bool tcpOnly(const CommState& comm) const;
  // Ops agreed over TCP, where the direct all-reduce's buffers can ride on the agreement.
  bool directCarriesAgreement(const CommState& comm) const;
  void negotiate(CommState& comm, OpRecord& op);
  // `fusedNegotiation`: the op was not negotiated yet; the shared-memory all-reduce does it in
  // its first barrier.
  struct OpMemory;
  void execute(CommState& comm, OpRecord& op, const NegotiationLimits* fusedNegotiation, OpMemory& memory);
  void executeOn(CommState& comm, OpRecord& op, const NegotiationLimits* fusedNegotiation, CollectiveArgs& args,
                 Algorithm allreduceAlgorithm);
  void split(CommState& comm, OpRecord& op, std::chrono::steady_clock::time_point deadline);
  void closeComm(CommState& comm);
  // After a failed op: the transports drop or keep (with `memory`) what it left posted.
  // `keepConnections`: TCP connections stay open (out of use) until closeConnections(comm), so a
  // rank that timed out asks who answers before its peers see them close.
  void abandonOp(CommState& comm, OpMemory&& memory, bool keepConnections = false);
  void closeConnections(CommState& comm);
  CommState& addComm(MPI_Comm base, std::chrono::steady_clock::time_point deadline);
  void addHierarchy(CommState& comm, std::chrono::steady_clock::time_point deadline);
  Algorithm chooseAllreduce(const CommState& comm, size_t bytes) const;
  // What an all-reduce described so sends after its descriptor in the agreement over TCP: its
  // whole buffer when it runs as the direct all-reduce there (agreement and data in one exchange),
  // else 0. The same on every rank for the same arguments.
  size_t carriedByAgreement(const CommState& comm, OpKind kind, Algorithm algorithm, DType dtype, size_t count) const;
  // `auto`'s pick (or the caller's) for broadcast, all-gather and reduce-scatter.
  Algorithm chooseAlgorithm(const CommState& comm, const OpRecord& op) const;
  // After a data-phase TIMEOUT: which ranks no longer answer, agreed by the ranks that do; when all
  // do, what else holds the op up (`onGpu`: it ran on NCCL, so a GPU rather than a link).
  std::string unansweringRanks(CommState& comm, bool onGpu);
  // The names of the ops queued on `commId` (for stall reports).
  std::string queuedOpNames(int commId);
  // Phase times are read only by the timeline; without one, no clock read per phase.
  double stamp() const { return timeline_ ? nowMicros() : 0.0; }

  EngineOptions options_;
  WorldInfo world_;
  std::atomic<bool> started_{false};
  std::atomic<bool> stopping_{false};
  // Set by shutdown(): queued ops are refused instead of run.
  std::atomic<bool> abandonQueued_{false};
  // Set once any op left a communicator unusable (TIMEOUT, ABORTED, an internal failure).
  std::atomic<bool> anyBroken_{false};
  std::atomic<bool> skipFinalize_{false};
  std::chrono::milliseconds failingBound_ = std::chrono::milliseconds::max();
  std::thread thread_;
  bool threadDone_ = false;   // under mutex_; the thread has finalized MPI and is about to return
  bool leftBehind_ = false;   // a shutdown() gave up waiting for the thread

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<OpRecord*> queue_;
  std::atomic<int> queued_{0};
  bool sleeping_ = false;
  bool exited_ = false;
  // An op is running, on the engine thread or inline; whoever sets it owns the engine-thread
  // state below until it clears it.
  bool busy_ = false;
  // Set after an op on a communicator spanning the whole world went through shared memory only:
  // every peer had then finished its earlier ops, so none waits on this process's MPI progress.
  // Cleared by any op that moves data or agreement through MPI.
  std::atomic<bool> mpiSettled_{false};
  std::thread::id engineThreadId_;

  // Start-up hand-off.
  std::mutex startMutex_;
  std::condition_variable startDone_;
  bool startFinished_ = false;
  std::string startError_;  // kept: a second start() fails the same way (MPI starts once)
  ErrorCode startCode_ = ErrorCode::kBackendUnavailable;

  // Engine-thread state.
  std::map<int, std::unique_ptr<CommState>> comms_;
  int p2pInFlight_ = 0;  // point-to-point ops started and not finished, over all communicators
  int nextCommId_ = 0;
  // Reused between ops; replaced when a failed op's unfinished MPI requests keep the old one.
  std::shared_ptr<std::vector<uint8_t>> scratch_ = std::make_shared<std::vector<uint8_t>>();
  std::unique_ptr<Timeline> timeline_;
};

}  // namespace braid
