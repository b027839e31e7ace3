// The engine itself, without Node: ops submitted to the engine thread and ops run on the
// caller's thread (Engine::runInline, blocking and awaited with hand-off), interleaved, from a
// second thread standing in for JavaScript. Built plainly for the test suite and under TSan by
// `npm run test:sanitize` (the inline path shares the engine's state between two threads).
//   mpirun -np N braid_engine_test
#include <fcntl.h>
#include <mpi.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "engine/engine.h"
#include "transport/shm_transport.h"

using namespace braid;

namespace {

// One op and the caller's wait for it, as the addon's synchronous path does.
struct Call {
  OpRecord record;
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  std::vector<float> data;

  Call(OpKind kind, Algorithm algorithm, size_t count, float value) : data(count, value) {
    record.commId = 0;
    record.kind = kind;
    record.algorithm = algorithm;
    record.dtype = DType::kFloat32;
    record.redop = RedOp::kSum;
    record.data = data.data();
    record.count = count;
    record.onComplete = [this](OpRecord*) {
      std::lock_guard<std::mutex> lock(mutex);
      done = true;
      cv.notify_all();
    };
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex);
    cv.wait(lock, [this] { return done; });
  }
};

// Runs `call` the way the addon would: inline when the engine allows it, else queued.
void issue(Call& call, bool blocking) {
  Engine& engine = Engine::instance();
  if (engine.runInline(&call.record, blocking) == Engine::InlineOutcome::kNotRun && !engine.submit(&call.record)) {
    std::lock_guard<std::mutex> lock(call.mutex);
    call.done = true;
  }
}

}  // namespace

int main() {
  EngineOptions options;
  options.timeoutMs = 60000;
  WorldInfo world = Engine::instance().start(options);
  const int n = world.size, rank = world.rank;
  const float sum = static_cast<float>(n * (n + 1) / 2);

  // Another job's set-up sweeps /dev/shm while this one runs: it must take only the names it
  // makes, of creators that are gone (the CUDA emulation's NCCL segments, "braid-nccl-...", were
  // once swept away mid-collective, hanging that job).
  braid_test::runCase("shared memory: the stale-region sweep takes braid-<pid>-<n> names of gone processes only", [&] {
    CHECK(ShmTransport::regionCreator("braid-123-4") == 123);
    for (const char* other : {"braid-nccl-emulated-123-1-ab-3", "braid-123", "braid-123-", "braid--4", "braid-0-4", "braid-12x-4",
                              "braid-123-4.tmp", "braid-", "vader_segment.vm.0.1", "xbraid-123-4"}) {
      CHECK_MSG(ShmTransport::regionCreator(other) == -1, other);
    }
    const std::string gone = "/braid-" + std::to_string(4194304 + 17 + rank) + "-0";  // above any pid_max: never a process
    const std::string live = "/braid-" + std::to_string(getpid()) + "-" + std::to_string(900 + rank);
    const std::string foreign = "/braid-nccl-emulated-" + std::to_string(getpid()) + "-1";
    for (const std::string& name : {gone, live, foreign}) {
      const int fd = shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
      CHECK_MSG(fd >= 0, name);
      if (fd >= 0) close(fd);
    }
    ShmTransport::removeStaleRegions();
    const auto exists = [](const std::string& name) { return access(("/dev/shm" + name).c_str(), F_OK) == 0; };
    CHECK_MSG(!exists(gone), gone + " (its creator is gone) was left");
    CHECK_MSG(exists(live), live + " (its creator runs) was removed");
    CHECK_MSG(exists(foreign), foreign + " (not a Braid region) was removed");
    shm_unlink(live.c_str());
    shm_unlink(foreign.c_str());
  }, rank != 0);

  // The caller's thread: what JavaScript does, on a thread that is not the engine's.
  std::thread caller([&] {
    braid_test::runCase("engine np=" + std::to_string(n) + ": inline, handed-off and queued ops interleave, exact and in order", [&] {
      for (int round = 0; round < 300; ++round) {
        // A synchronous small op (inline when nothing is queued), an awaited small one (inline or
        // handed off when a peer is late), and a ring op that goes through the engine thread, all
        // in flight together.
        Call sync(OpKind::kAllreduce, Algorithm::kAuto, 64 + round % 7, static_cast<float>(rank + 1));
        Call awaited(OpKind::kAllreduce, Algorithm::kAuto, 1000, static_cast<float>(rank + 1));
        Call ring(OpKind::kAllreduce, Algorithm::kRing, 5000, static_cast<float>(rank + 1));
        if (round % n == rank) std::this_thread::sleep_for(std::chrono::microseconds(200));  // late now and then
        issue(awaited, false);
        issue(ring, false);
        issue(sync, true);
        sync.wait();
        awaited.wait();
        ring.wait();
        for (Call* c : {&sync, &awaited, &ring}) {
          CHECK_MSG(c->record.code == ErrorCode::kOk, c->record.message);
          CHECK_MSG(c->data.front() == sum && c->data.back() == sum, "round " + std::to_string(round));
        }
      }
    }, rank != 0);
    Call close(OpKind::kCloseComm, Algorithm::kAuto, 0, 0);
    issue(close, false);
    close.wait();
    braid_test::runCase("engine: after the world closed, an op is refused at once", [&] {
      Call late(OpKind::kAllreduce, Algorithm::kAuto, 4, 1);
      issue(late, false);
      late.wait();
      CHECK(late.record.code == ErrorCode::kAborted);
    }, rank != 0);
  });
  caller.join();
  Engine::instance().shutdown();
  return rank == 0 ? braid_test::finish(("engine np=" + std::to_string(n)).c_str()) : (braid_test::registry().failed == 0 ? 0 : 1);
}
