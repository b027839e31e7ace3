// The protocol of OSU's osu_allreduce (OSU Micro-Benchmarks), written out beside ours so the JS
// side can be run the same way (benchmarks/osu.mjs): for each size, warm-up calls (200 up to
// 8 KiB, 10 above), then timed ones (1000 up to 8 KiB, 100 above), each MPI_Allreduce timed
// alone with MPI_Wtime and followed by a barrier; the latency is the mean per call, averaged
// over the ranks. float32 sum, MPI_COMM_WORLD.
//   mpirun -np 2 braid_osu_allreduce [--max-bytes 67108864] [--json out.json]
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  size_t maxBytes = size_t{64} << 20;
  const char* json = nullptr;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--max-bytes") == 0) maxBytes = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--json") == 0) json = argv[i + 1];
  }
  std::vector<float> send(maxBytes / 4, 1.0f), recv(maxBytes / 4);
  std::string rows;
  if (rank == 0) std::printf("# OSU allreduce protocol, MPI_Allreduce, %d ranks\n# %10s %14s\n", size, "size(B)", "avg lat(us)");
  for (size_t bytes = 4; bytes <= maxBytes; bytes *= 2) {
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
    double mine = total * 1e6 / iterations, sum = 0;
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
    std::fprintf(f, "{\"ranks\": %d, \"results\": [%s]}\n", size, rows.c_str());
    std::fclose(f);
  }
  MPI_Finalize();
  return 0;
}
