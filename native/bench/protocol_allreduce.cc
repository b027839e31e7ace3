// Two published all-reduce benchmark protocols written out in C over MPI_Allreduce, so that the
// JS side (benchmarks/protocol-worker.mjs) can be run the same way beside it
// (benchmarks/protocols.mjs). float32 sum over MPI_COMM_WORLD; the figure per size is the mean
// time per call, averaged over the ranks.
//
// --protocol osu (OSU's osu_allreduce): for each size, warm-up calls (200 up to 8 KiB, 10 above),
//   then timed ones (1000 up to 8 KiB, 100 above), each call timed alone with MPI_Wtime and
//   followed by a barrier; out of place.
// --protocol nccl-tests (nccl-tests' all_reduce_perf, its defaults -w 5 -n 20): 5 warm-up calls
//   at the largest size and 5 at the smallest, once; then for each size a barrier and 20 calls
//   back to back timed together; in place (nccl-tests' in-place column; Braid's allReduce is in
//   place). Every size but the two warmed ones is timed from its first call.
//
//   mpirun -np 2 braid_protocol_allreduce [--protocol osu] [--min-bytes 4] [--max-bytes 67108864]
//                                         [--json out.json]
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int kNcclTestsWarmup = 5;
constexpr int kNcclTestsIterations = 20;

double osuSize(std::vector<float>& send, std::vector<float>& recv, size_t bytes) {
  const int count = static_cast<int>(bytes / 4);
  const bool small = bytes <= 8192;
  const int warmup = small ? 200 : 10, iterations = small ? 1000 : 100;
  double total = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  for (int i = 0; i < warmup + iterations; ++i) {
    const double start = MPI_Wtime();
    MPI_Allreduce(send.data(), recv.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    const double elapsed = MPI_Wtime() - start;
    if (i >= warmup) total += elapsed;
    MPI_Barrier(MPI_COMM_WORLD);
  }
  return total * 1e6 / iterations;
}

void inPlace(std::vector<float>& data, size_t bytes, int calls) {
  for (int i = 0; i < calls; ++i) {
    MPI_Allreduce(MPI_IN_PLACE, data.data(), static_cast<int>(bytes / 4), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  }
}

double ncclTestsSize(std::vector<float>& data, size_t bytes) {
  MPI_Barrier(MPI_COMM_WORLD);
  const double start = MPI_Wtime();
  inPlace(data, bytes, kNcclTestsIterations);
  return (MPI_Wtime() - start) * 1e6 / kNcclTestsIterations;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  size_t minBytes = 4, maxBytes = size_t{64} << 20;
  const char* json = nullptr;
  std::string protocol = "osu";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--min-bytes") == 0) minBytes = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--max-bytes") == 0) maxBytes = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--json") == 0) json = argv[i + 1];
    if (std::strcmp(argv[i], "--protocol") == 0) protocol = argv[i + 1];
  }
  if ((protocol != "osu" && protocol != "nccl-tests") || minBytes < 4 || minBytes > maxBytes) {
    if (rank == 0) std::fprintf(stderr, "usage: braid_protocol_allreduce [--protocol osu|nccl-tests] [--min-bytes B>=4] [--max-bytes B>=min]\n");
    MPI_Finalize();
    return 2;
  }
  const bool osu = protocol == "osu";
  // In place, ones would double with every call and overflow: zeros stay zeros.
  std::vector<float> send(maxBytes / 4, 1.0f), recv(maxBytes / 4, osu ? 1.0f : 0.0f);
  if (!osu) {
    inPlace(recv, maxBytes, kNcclTestsWarmup);
    inPlace(recv, minBytes, kNcclTestsWarmup);
  }
  std::string rows;
  if (rank == 0) std::printf("# %s protocol, MPI_Allreduce, %d ranks\n# %10s %14s\n", protocol.c_str(), size, "size(B)", "avg lat(us)");
  for (size_t bytes = minBytes; bytes <= maxBytes; bytes *= 2) {
    double mine = osu ? osuSize(send, recv, bytes) : ncclTestsSize(recv, bytes);
    double sum = 0;
    MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      const double avg = sum / size;
      std::printf("  %10zu %14.2f\n", bytes, avg);
      char row[96];
      std::snprintf(row, sizeof row, "%s{\"bytes\": %zu, \"avgUs\": %.3f}", rows.empty() ? "" : ", ", bytes, avg);
      rows += row;
    }
  }
  if (rank == 0 && json != nullptr) {
    FILE* f = std::fopen(json, "w");
    std::fprintf(f, "{\"ranks\": %d, \"protocol\": \"%s\", \"results\": [%s]}\n", size, protocol.c_str(), rows.c_str());
    std::fclose(f);
  }
  MPI_Finalize();
  return 0;
}
