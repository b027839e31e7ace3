// All-reduce benchmark over the MPI transport, without the engine or JS: each algorithm beside
// MPI_Allreduce itself, printing the nccl-tests columns. Run under mpirun:
//   mpirun -np 2 braid_allreduce_bench [--min-bytes 4] [--max-bytes 268435456] [--algorithms ring,tree,...]
//                                      [--rounds 5] [--json out.json] [--seconds-per-size 0.2]
// time: the mean per call over a round's iterations, the largest over ranks, and the median of
// the rounds (which interleave the algorithms); algbw = size/time;
// busbw = algbw * 2(n-1)/n; #wrong counts elements that differ from the exact answer in a
// separate checked call.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "algorithms/collective.h"
#include "kernels/half.h"
#include "kernels/reduce.h"
#include "transport/mpi_transport.h"
#include "transport/shm_transport.h"

using namespace braid;

namespace {

struct Algo {
  std::string name;
  void (*fn)(CollectiveArgs&, void*, size_t);
};

std::vector<std::string> splitList(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    size_t comma = s.find(',', at);
    if (comma == std::string::npos) comma = s.size();
    if (comma > at) out.push_back(s.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

double wtime() { return MPI_Wtime(); }

ShmTransport* gShm = nullptr;
void shmAllreduce(CollectiveArgs& args, void* buf, size_t count) { allreduceShm(args, *gShm, buf, count); }

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  size_t minBytes = 4, maxBytes = size_t{256} << 20;
  double secondsPerSize = 0.2;
  int rounds = 5;
  std::string algoList = "shm,ring,tree,recursive-doubling,mpi", jsonPath, segment, slot;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--min-bytes") minBytes = std::stoull(v);
    else if (k == "--max-bytes") maxBytes = std::stoull(v);
    else if (k == "--algorithms") algoList = v;
    else if (k == "--json") jsonPath = v;
    else if (k == "--seconds-per-size") secondsPerSize = std::stod(v);
    else if (k == "--segment-bytes") segment = v;
    else if (k == "--rounds") rounds = std::max(1, std::stoi(v));
    else if (k == "--shm-slot-bytes") slot = v;
  }
  const Algo all[] = {{"shm", shmAllreduce}, {"ring", allreduceRing}, {"tree", allreduceTree},
                      {"recursive-doubling", allreduceRecursiveDoubling}, {"mpi", allreduceMpi}};
  std::vector<Algo> algos;
  for (const std::string& name : splitList(algoList))
    for (const Algo& a : all)
      if (a.name == name) algos.push_back(a);

  int code = 0;
  {
    MPI_Comm dup;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    MpiTransport transport(dup);
    std::string why;
    std::unique_ptr<ShmTransport> shm = ShmTransport::create(dup, slot.empty() ? size_t{1} << 20 : std::stoull(slot), &why);
    gShm = shm.get();
    if (gShm) {
      // While a rank waits on shared-memory flags, MPI must still progress (see ShmTransport::setProgress).
      gShm->setProgress([dup] {
        int flag = 0;
        MPI_Iprobe(MPI_ANY_SOURCE, 32767, dup, &flag, MPI_STATUS_IGNORE);
      });
    }
    if (!gShm) {
      algos.erase(std::remove_if(algos.begin(), algos.end(), [](const Algo& a) { return a.name == "shm"; }), algos.end());
      if (rank == 0) std::printf("# shm skipped: %s\n", why.c_str());
    }
    std::vector<uint8_t> scratch;
    const DType dtype = DType::kFloat32;
    const RedOp op = RedOp::kSum;
    const double busFactor = size > 1 ? 2.0 * (size - 1) / size : 0.0;
    FILE* json = nullptr;
    if (rank == 0 && !jsonPath.empty()) {
      json = std::fopen(jsonPath.c_str(), "w");
      if (json) std::fprintf(json, "{\"ranks\":%d,\"isa\":\"%s\",\"results\":[\n", size, activeKernels().isa);
    }
    bool firstRow = true;
    if (rank == 0) {
      std::printf("# braid native all-reduce benchmark: %d ranks, float32 sum, kernels %s\n", size, activeKernels().isa);
      std::printf("#%19s %12s %10s %6s %6s %10s %10s %10s %7s\n", "algorithm", "size(B)", "count", "type", "redop",
                  "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
    }
    for (size_t bytes = minBytes; bytes <= maxBytes; bytes *= 2) {
      const size_t count = bytes / 4;
      std::vector<float> buf(count, 0.0f);
      CollectiveArgs args{transport, dtype, op, scratch, nullptr, segment.empty() ? size_t{1} << 20 : std::stoull(segment)};
      // Size each algorithm's timed loop from a warm-up (the same count on every rank).
      std::vector<long> iters(algos.size());
      for (size_t a = 0; a < algos.size(); ++a) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = wtime();
        for (int i = 0; i < 3; ++i) algos[a].fn(args, buf.data(), count);
        double estimate = (wtime() - t0) / 3;
        MPI_Allreduce(MPI_IN_PLACE, &estimate, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        iters[a] = std::max(3L, std::min(100000L, static_cast<long>(secondsPerSize / rounds / std::max(estimate, 1e-7))));
      }
      // Rounds interleave the algorithms, so that a slow patch of the machine hits all of them;
      // each algorithm's time is the median of its rounds.
      std::vector<std::vector<double>> times(algos.size());
      for (int round = 0; round < rounds; ++round) {
        for (size_t a = 0; a < algos.size(); ++a) {
          MPI_Barrier(MPI_COMM_WORLD);
          double t0 = wtime();
          for (long i = 0; i < iters[a]; ++i) algos[a].fn(args, buf.data(), count);
          double perCall = (wtime() - t0) / iters[a];
          MPI_Allreduce(MPI_IN_PLACE, &perCall, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
          times[a].push_back(perCall);
        }
      }
      for (size_t a = 0; a < algos.size(); ++a) {
        const Algo& algo = algos[a];
        std::sort(times[a].begin(), times[a].end());
        const double perCall = times[a][times[a].size() / 2];
        // Check: rank r holds (r + i % 7); the sum is exact in float32.
        std::vector<float> check(count);
        for (size_t i = 0; i < count; ++i) check[i] = static_cast<float>(rank + static_cast<int>(i % 7));
        algo.fn(args, check.data(), count);
        long wrong = 0;
        for (size_t i = 0; i < count; ++i) {
          float want = static_cast<float>(size * (size - 1) / 2 + size * static_cast<int>(i % 7));
          if (check[i] != want) ++wrong;
        }
        MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        if (wrong) code = 1;

        const double us = perCall * 1e6;
        const double algbw = bytes / perCall / 1e9;
        if (rank == 0) {
          std::printf(" %19s %12zu %10zu %6s %6s %10.2f %10.3f %10.3f %7ld\n", algo.name.c_str(), bytes, count, "float",
                      "sum", us, algbw, algbw * busFactor, wrong);
          std::fflush(stdout);
          if (json) {
            std::fprintf(json, "%s{\"algorithm\":\"%s\",\"bytes\":%zu,\"count\":%zu,\"type\":\"float32\",\"redop\":\"sum\","
                         "\"timeUs\":%.3f,\"algbw\":%.4f,\"busbw\":%.4f,\"wrong\":%ld,\"iterations\":%ld,\"rounds\":%d}",
                         firstRow ? "" : ",\n", algo.name.c_str(), bytes, count, us, algbw, algbw * busFactor, wrong,
                         iters[a], rounds);
            firstRow = false;
          }
        }
      }
    }
    if (json) {
      std::fprintf(json, "\n]}\n");
      std::fclose(json);
    }
  }
  MPI_Finalize();
  return code;
}
