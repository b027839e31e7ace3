// The training benchmark's peer for a synchronous job: ranks that do the same fixed work per step,
// once each on its own ("apart", the sum of their rates) and once waiting for each other after
// every step ("lockstep", an MPI_Barrier per step, as data-parallel training waits in its
// all-reduce). Phases take turns, so both figures come from the same minute. On a machine whose
// cores keep a steady speed the two match; where each core's speed moves on its own (a shared
// VM), a lockstep job runs at the slower core's pace every step, and no synchronous training job
// can beat lockstep's share of apart. Started like the training job:
//   braid run -np 2 --bind-to core braid_lockstep_bench [--step-ms 5] [--steps 20] [--rounds 60] [--json out.json]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A step's work: passes over 256 KiB of floats (the core's L2), as a small model's step touches
// its weights and activations.
std::vector<float> workArea(1 << 16, 1.0f);
volatile float sink;

void work(long passes) {
  float* a = workArea.data();
  for (long p = 0; p < passes; p++) {
    for (size_t i = 0; i < workArea.size(); i++) a[i] = a[i] * 0.999f + 1.0f;
  }
  sink = a[passes % workArea.size()];
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const char* option(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; i++) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

double positive(const char* name, const char* text) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(v > 0)) {
    std::fprintf(stderr, "braid_lockstep_bench: %s takes a positive number; got '%s'\n", name, text);
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const double stepMs = positive("--step-ms", option(argc, argv, "--step-ms", "5"));
  const int steps = static_cast<int>(positive("--steps", option(argc, argv, "--steps", "20")));
  const int rounds = static_cast<int>(positive("--rounds", option(argc, argv, "--rounds", "60")));
  const char* jsonPath = option(argc, argv, "--json", nullptr);
  if (size < 2) {
    if (rank == 0) std::fprintf(stderr, "braid_lockstep_bench: needs 2 or more ranks (braid run -np 2); got %d\n", size);
    MPI_Finalize();
    return 2;
  }

  // Passes per step: rank 0 times a probe (the fastest of 5), and every rank does the same work.
  long passes = 0;
  if (rank == 0) {
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
      auto t0 = Clock::now();
      work(64);
      best = std::min(best, secondsSince(t0));
    }
    passes = std::max(1L, static_cast<long>(64 * (stepMs / 1000) / best));
  }
  MPI_Bcast(&passes, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  work(passes * 20);  // warm-up

  std::vector<double> apartRates, lockstepRates, ratios;
  // Pooled over all rounds: the job's steps per second in each mode, over the time spent in it.
  // With short phases taking turns, a slow spell of the machine falls on both modes alike.
  double apartSeconds = 0;
  double lockstepSeconds = 0;
  for (int round = 0; round < rounds; round++) {
    double apart = 0;
    double lockstep = 0;
    for (int phase = 0; phase < 2; phase++) {
      const bool together = (phase + round) % 2 == 1;
      MPI_Barrier(MPI_COMM_WORLD);
      auto t0 = Clock::now();
      for (int s = 0; s < steps; s++) {
        work(passes);
        if (together) MPI_Barrier(MPI_COMM_WORLD);
      }
      const double mine = steps / secondsSince(t0);  // steps per second on this rank
      double sum = 0;
      MPI_Allreduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      // Apart, the ranks' rates add up; in lockstep every rank ran at the job's rate (their times
      // differ only by the last barrier's exit), so the job's is the sum as well.
      (together ? lockstep : apart) = sum;
      (together ? lockstepSeconds : apartSeconds) += size * steps / sum;
    }
    apartRates.push_back(apart);
    lockstepRates.push_back(lockstep);
    ratios.push_back(lockstep / apart);
  }
  const double pooled = apartSeconds / lockstepSeconds;
  if (rank == 0) {
    std::printf("lockstep reaches %.1f%% of apart over all %d rounds (per round: median %.1f%%, %.1f-%.1f%%; %d ranks, %d steps of %.1f ms per phase)\n", 100 * pooled, rounds, 100 * median(ratios),
                100 * *std::min_element(ratios.begin(), ratios.end()), 100 * *std::max_element(ratios.begin(), ratios.end()), size, steps, stepMs);
    if (jsonPath) {
      FILE* f = std::fopen(jsonPath, "w");
      if (!f) {
        std::fprintf(stderr, "braid_lockstep_bench: cannot write %s\n", jsonPath);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      std::fprintf(f, "{\"ranks\": %d, \"stepMs\": %.3f, \"steps\": %d, \"rounds\": %d, \"lockstepShareOfApart\": %.5f, \"medianRoundRatio\": %.5f, \"ratios\": [", size, stepMs, steps, rounds, pooled, median(ratios));
      for (size_t i = 0; i < ratios.size(); i++) std::fprintf(f, "%s%.5f", i ? ", " : "", ratios[i]);
      std::fprintf(f, "], \"apartStepsPerSecond\": [");
      for (size_t i = 0; i < apartRates.size(); i++) std::fprintf(f, "%s%.2f", i ? ", " : "", apartRates[i]);
      std::fprintf(f, "], \"lockstepStepsPerSecond\": [");
      for (size_t i = 0; i < lockstepRates.size(); i++) std::fprintf(f, "%s%.2f", i ? ", " : "", lockstepRates[i]);
      std::fprintf(f, "]}\n");
      std::fclose(f);
    }
  }
  MPI_Finalize();
  return 0;
}
