// The communication engine: one thread per process that owns every MPI call. JS calls become
// OpRecords queued to it; it negotiates each op with the other ranks, runs the algorithm over the
// transport and reports completion through the record's callback.
#pragma once
#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "algorithms/collective.h"
#include "engine/negotiation.h"
#include "engine/op.h"
#include "engine/timeline.h"
#include "transport/mpi_transport.h"
#include "transport/shm_transport.h"

namespace braid {

struct EngineOptions {
  int timeoutMs = 120000;       // an op not finished by then fails with TIMEOUT
  int stallWarningMs = 30000;   // rank 0 names the ranks it is still waiting for
  bool negotiate = true;        // BRAID_NEGOTIATION=off skips the agreement step (benchmarks)
  size_t segmentBytes = 1 << 20;
  bool sharedMemory = true;       // BRAID_SHM=off: MPI only, even on one host
  size_t shmSlotBytes = 1 << 20;  // per rank; holds two chunks
  std::string timelinePath;     // BRAID_TIMELINE
};

struct WorldInfo {
  int rank = 0, size = 1, localRank = 0, localSize = 1;
  int threadLevel = 0;
  std::string mpiLibrary;
};

struct CommState {
  int id = 0;
  int rank = 0, size = 1;
  MPI_Comm control = MPI_COMM_NULL;  // negotiation traffic
  MPI_Comm base = MPI_COMM_NULL;     // what split() splits
  std::unique_ptr<MpiTransport> transport;  // data traffic
  std::unique_ptr<ShmTransport> shm;        // agreement and the 'shm' algorithm, when all ranks share a host
  std::string shmUnavailable;               // why there is none
  uint64_t seq = 0;
  bool closed = false;
  std::string brokenReason;  // set once an op left the communicator unusable
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

  // Queues an op; its onComplete runs on the engine thread.
  void submit(OpRecord* op);
  // Finishes queued ops, finalizes MPI and joins the thread. Idempotent.
  void shutdown();

 private:
  Engine() = default;
  void threadMain();
  void initMpi();
  OpRecord* nextOp();
  void run(OpRecord* op);
  void negotiate(CommState& comm, OpRecord& op);
  // `fusedNegotiation`: the op was not negotiated yet; the shared-memory all-reduce does it in
  // its first barrier.
  void execute(CommState& comm, OpRecord& op, const NegotiationLimits* fusedNegotiation);
  void split(CommState& comm, OpRecord& op);
  void closeComm(CommState& comm);
  CommState& addComm(MPI_Comm base);
  Algorithm chooseAllreduce(const CommState& comm, size_t bytes) const;

  EngineOptions options_;
  WorldInfo world_;
  std::atomic<bool> started_{false};
  std::atomic<bool> stopping_{false};
  std::thread thread_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<OpRecord*> queue_;
  std::atomic<int> queued_{0};
  bool sleeping_ = false;
  bool exited_ = false;

  // Start-up hand-off.
  std::mutex startMutex_;
  std::condition_variable startDone_;
  bool startFinished_ = false;
  std::string startError_;

  // Engine-thread state.
  std::map<int, std::unique_ptr<CommState>> comms_;
  int nextCommId_ = 0;
  std::vector<uint8_t> scratch_;
  std::unique_ptr<Timeline> timeline_;
};

}  // namespace braid
