// `braid calibrate`'s measurements, on the ranks it is started on (under mpirun, or braid run):
// the cost model's numbers (algorithms/cost_model.h) per link class, written as a profile.
//   mpirun -np N [-H a:2,b:2] braid_calibrate --out profile.json --braid-version 0.1.0 [--seconds 0.2]
// - network: rank 0 and the first rank on another host exchange messages both ways at once over
//   Braid's TCP transport (what an all-reduce step does): alpha is an 8-byte exchange, beta the
//   slope of exchange time over 256 KiB - 16 MiB (least squares);
// - local: the same between rank 0 and a rank on its host (loopback TCP);
// - shared memory: the ranks on rank 0's host pass barriers and copy into their slots;
// - gamma: rank 0 reduces float32 arrays (sum) with the kernels in use.
// A link class with no pair to measure keeps the default, and the profile says so.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "algorithms/cost_model.h"
#include "kernels/reduce.h"
#include "transport/shm_transport.h"
#include "transport/tcp_transport.h"

using namespace braid;

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Fit {
  double alphaUs = 0, betaUsPerByte = 0;
  std::vector<std::pair<double, double>> points;  // bytes, microseconds per exchange
};

// Exchanges of `bytes` both ways between the two ranks of `t`, timed by rank 0 of the pair.
double exchangeUs(Transport& t, std::vector<uint8_t>& out, std::vector<uint8_t>& in, size_t bytes, double budget, MPI_Comm pair) {
  const int peer = 1 - t.rank();
  for (int i = 0; i < 3; ++i) t.sendrecv(peer, out.data(), bytes, peer, in.data(), bytes);
  // The iteration count comes from rank 0's estimate, so both ranks loop alike.
  auto start = Clock::now();
  t.sendrecv(peer, out.data(), bytes, peer, in.data(), bytes);
  double once = seconds(start, Clock::now());
  MPI_Bcast(&once, 1, MPI_DOUBLE, 0, pair);
  const int iterations = std::max(3, std::min(20000, static_cast<int>(budget / std::max(once, 1e-7))));
  std::vector<double> rounds;
  for (int round = 0; round < 5; ++round) {
    start = Clock::now();
    for (int i = 0; i < iterations / 5 + 1; ++i) t.sendrecv(peer, out.data(), bytes, peer, in.data(), bytes);
    rounds.push_back(seconds(start, Clock::now()) / (iterations / 5 + 1) * 1e6);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[2];
}

Fit measureLink(Transport& t, MPI_Comm pair, double budget) {
  Fit fit;
  const std::vector<size_t> sizes = {8, 4096, 65536, 262144, 1 << 20, 4 << 20, 16 << 20};
  std::vector<uint8_t> out(sizes.back(), 1), in(sizes.back());
  for (size_t bytes : sizes) fit.points.push_back({static_cast<double>(bytes), exchangeUs(t, out, in, bytes, budget, pair)});
  fit.alphaUs = fit.points[0].second;
  // Least squares over the large sizes: time = a + m * beta.
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int k = 0;
  for (const auto& [m, us] : fit.points) {
    if (m < 262144) continue;
    sx += m;
    sy += us;
    sxx += m * m;
    sxy += m * us;
    ++k;
  }
  fit.betaUsPerByte = std::max(0.0, (k * sxy - sx * sy) / (k * sxx - sx * sx));
  return fit;
}

std::string pointsJson(const Fit& f) {
  std::string s = "[";
  for (size_t i = 0; i < f.points.size(); ++i) {
    char item[96];
    std::snprintf(item, sizeof item, "%s[%.0f, %.3f]", i ? ", " : "", f.points[i].first, f.points[i].second);
    s += item;
  }
  return s + "]";
}

// A barrier that sleeps while it waits: the ranks not measuring must leave the cores to those that
// are (MPI's own barrier polls, and on a machine with as many ranks as cores that slows the pair).
void sleepingBarrier() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  for (;;) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char* out = nullptr;
  const char* version = "unknown";
  double budget = 0.2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--braid-version") == 0) version = argv[i + 1];
    if (std::strcmp(argv[i], "--seconds") == 0) budget = std::atof(argv[i + 1]) / 5;
  }
  std::vector<char> names(static_cast<size_t>(MPI_MAX_PROCESSOR_NAME) * size, 0);
  {
    char mine[MPI_MAX_PROCESSOR_NAME] = {};
    int length = 0;
    MPI_Get_processor_name(mine, &length);
    MPI_Allgather(mine, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD);
  }
  std::vector<std::string> hosts;
  for (int r = 0; r < size; ++r) hosts.emplace_back(names.data() + static_cast<size_t>(MPI_MAX_PROCESSOR_NAME) * r);
  int networkPeer = -1, localPeer = -1;
  for (int r = 1; r < size; ++r) {
    if (hosts[r] != hosts[0] && networkPeer < 0) networkPeer = r;
    if (hosts[r] == hosts[0] && localPeer < 0) localPeer = r;
  }
  CostProfile profile = CostProfile::defaults();
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  std::string measured = "{";
  auto pairFit = [&](int peer, bool loopback, const char* name) -> bool {
    MPI_Comm pair;
    const bool in = rank == 0 || rank == peer;
    MPI_Comm_split(MPI_COMM_WORLD, in ? 1 : MPI_UNDEFINED, rank, &pair);
    if (pair == MPI_COMM_NULL) return false;
    TcpOptions options;
    options.loopback = loopback;
    if (const char* ifname = std::getenv("BRAID_SOCKET_IFNAME")) options.interfaces = ifname;
    std::vector<std::string> pairHosts = {hosts[0], hosts[peer]};
    auto transport = TcpTransport::create(pair, options, pairHosts, deadline);
    const Fit fit = measureLink(*transport, pair, budget);
    transport.reset();
    MPI_Comm_free(&pair);
    if (rank != 0) return true;
    LinkCost& link = std::string(name) == "network" ? profile.network : profile.local;
    link = {fit.alphaUs, fit.betaUsPerByte};
    char head[160];
    std::snprintf(head, sizeof head, "%s\"%s\": {\"hosts\": [\"%s\", \"%s\"], \"exchangeUs\": ", measured.size() > 1 ? ", " : "", name,
                  hosts[0].c_str(), hosts[peer].c_str());
    measured += head + pointsJson(fit) + "}";
    return true;
  };
  // Every rank knows both peers (the same host list), so every rank makes the same splits.
  sleepingBarrier();
  if (networkPeer >= 0) pairFit(networkPeer, false, "network");
  sleepingBarrier();
  if (localPeer >= 0) pairFit(localPeer, true, "local");
  sleepingBarrier();

  // Shared memory among the ranks on rank 0's host.
  {
    MPI_Comm local;
    MPI_Comm_split(MPI_COMM_WORLD, hosts[rank] == hosts[0] ? 0 : MPI_UNDEFINED, rank, &local);
    if (local != MPI_COMM_NULL) {
      int localSize = 1;
      MPI_Comm_size(local, &localSize);
      if (localSize > 1) {
        std::string why;
        auto shm = ShmTransport::create(local, profile.shmSlotBytes, &why, deadline);
        if (shm) {
          for (int i = 0; i < 1000; ++i) shm->barrier();
          auto start = Clock::now();
          const int barriers = 20000;
          for (int i = 0; i < barriers; ++i) shm->barrier();
          double barrierUs = seconds(start, Clock::now()) / barriers * 1e6;
          MPI_Bcast(&barrierUs, 1, MPI_DOUBLE, 0, local);
          // From a buffer larger than the caches, as an all-reduce of many MiB reads its input.
          const size_t half = shm->slotBytes() / 2;
          const size_t pieces = 64;
          std::vector<uint8_t> source(half * pieces, 3);
          for (size_t i = 0; i < pieces; ++i) std::memcpy(shm->slot(shm->rank()), source.data() + i * half, half);
          start = Clock::now();
          const int copies = 1024;
          for (int i = 0; i < copies; ++i) std::memcpy(shm->slot(shm->rank()) + (i & 1) * half, source.data() + (i % pieces) * half, half);
          const double copyUsPerByte = seconds(start, Clock::now()) * 1e6 / (static_cast<double>(copies) * half);
          shm->barrier();
          if (rank == 0) {
            profile.shmBarrierUs = barrierUs;
            profile.shmCopyUsPerByte = copyUsPerByte;
            char item[200];
            std::snprintf(item, sizeof item, "%s\"sharedMemory\": {\"ranks\": %d, \"barrierUs\": %.3f, \"copyGBps\": %.3f}", measured.size() > 1 ? ", " : "",
                          localSize, barrierUs, 1e-3 / copyUsPerByte);
            measured += item;
          }
        }
      }
      MPI_Comm_free(&local);
    }
  }

  sleepingBarrier();
  // The reduction kernels.
  if (rank == 0) {
    const size_t n = 1 << 20;
    std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n);
    for (int i = 0; i < 20; ++i) reduceInto(DType::kFloat32, RedOp::kSum, c.data(), a.data(), b.data(), n);
    const auto start = Clock::now();
    int runs = 0;
    while (seconds(start, Clock::now()) < budget) {
      reduceInto(DType::kFloat32, RedOp::kSum, c.data(), a.data(), b.data(), n);
      ++runs;
    }
    profile.gammaUsPerByte = seconds(start, Clock::now()) * 1e6 / (static_cast<double>(runs) * n * 4);
    char item[160];
    std::snprintf(item, sizeof item, "%s\"reduce\": {\"dtype\": \"float32\", \"op\": \"sum\", \"GBps\": %.3f}", measured.size() > 1 ? ", " : "",
                  1e-3 / profile.gammaUsPerByte);
    measured += item;
    measured += "}";
    // The fixed cost of an op: the agreement's exchange (across hosts) or barrier (one host).
    profile.opUs = networkPeer >= 0 ? profile.network.alphaUs : localPeer >= 0 ? profile.shmBarrierUs : 1.0;
    std::string hostList;
    std::vector<std::string> distinct;
    for (const auto& h : hosts)
      if (std::find(distinct.begin(), distinct.end(), h) == distinct.end()) distinct.push_back(h);
    for (size_t i = 0; i < distinct.size(); ++i) hostList += (i ? ", \"" : "\"") + distinct[i] + "\"";
    char created[64];
    const std::time_t now = std::time(nullptr);
    std::strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    char body[2048];
    std::snprintf(body, sizeof body,
                  "{\n \"format\": \"braid-profile\",\n \"version\": 1,\n \"braid\": \"%s\",\n \"created\": \"%s\",\n \"hosts\": [%s],\n \"ranks\": %d,\n"
                  " \"numbers\": {\n  \"networkAlphaUs\": %.4f,\n  \"networkBetaUsPerByte\": %.9g,\n  \"localAlphaUs\": %.4f,\n"
                  "  \"localBetaUsPerByte\": %.9g,\n  \"shmBarrierUs\": %.4f,\n  \"shmCopyUsPerByte\": %.9g,\n  \"gammaUsPerByte\": %.9g,\n"
                  "  \"opUs\": %.4f\n },\n \"defaulted\": [%s%s%s],\n \"measured\": ",
                  version, created, hostList.c_str(), size, profile.network.alphaUs, profile.network.betaUsPerByte, profile.local.alphaUs,
                  profile.local.betaUsPerByte, profile.shmBarrierUs, profile.shmCopyUsPerByte, profile.gammaUsPerByte, profile.opUs,
                  networkPeer < 0 ? "\"network\"" : "", networkPeer < 0 && localPeer < 0 ? ", " : "", localPeer < 0 ? "\"local\", \"sharedMemory\"" : "");
    const std::string json = std::string(body) + measured + "\n}\n";
    std::printf("%s", json.c_str());
    if (out != nullptr) {
      FILE* f = std::fopen(out, "w");
      if (f == nullptr) {
        std::fprintf(stderr, "braid calibrate: cannot write %s\n", out);
        MPI_Abort(MPI_COMM_WORLD, 2);
      }
      std::fputs(json.c_str(), f);
      std::fclose(f);
    }
  }
  sleepingBarrier();
  MPI_Finalize();
  return 0;
}
