#include <chrono>
#include <cmath>
#include <thread>
// Every algorithm over the real MPI transport, run under `mpirun -np N`: exact results for every
// dtype and op on awkward sizes, and the same bits on every rank. Rank 0 prints the verdict.
#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "algorithms/collective.h"
#include "check.h"
#include "kernels/half.h"
#include "kernels/reduce.h"
#include "transport/mpi_transport.h"
#include "algorithms/store_choice.h"
#include "transport/shm_transport.h"
#include "transport/tcp_transport.h"

using namespace braid;

namespace {

// Rank r's element i: small integers (times a power of two) so that every reduction is exact.
double valueAt(DType t, int r, size_t i, RedOp op) {
  int v = static_cast<int>((r * 7 + i * 13) % 5);
  if (op == RedOp::kProd) return v % 3 == 0 ? 1 : (v % 3 == 1 ? 2 : (t == DType::kUint8 ? 3 : -1));
  return t == DType::kUint8 ? v : v - 2;
}

void store(DType t, uint8_t* p, double v) {
  switch (t) {
    case DType::kFloat32: { float x = static_cast<float>(v); std::memcpy(p, &x, 4); break; }
    case DType::kFloat64: std::memcpy(p, &v, 8); break;
    case DType::kInt32: { int32_t x = static_cast<int32_t>(v); std::memcpy(p, &x, 4); break; }
    case DType::kInt64: { int64_t x = static_cast<int64_t>(v); std::memcpy(p, &x, 8); break; }
    case DType::kUint8: *p = static_cast<uint8_t>(static_cast<int>(v) & 0xff); break;
    case DType::kInt8: *p = static_cast<uint8_t>(static_cast<int8_t>(v)); break;
    case DType::kFloat16: { uint16_t h = f32ToF16(static_cast<float>(v)); std::memcpy(p, &h, 2); break; }
    case DType::kBFloat16: { uint16_t h = f32ToBf16(static_cast<float>(v)); std::memcpy(p, &h, 2); break; }
  }
}

std::vector<uint8_t> fill(DType t, RedOp op, int r, size_t n) {
  std::vector<uint8_t> b(n * dtypeSize(t));
  for (size_t i = 0; i < n; ++i) store(t, &b[i * dtypeSize(t)], valueAt(t, r, i, op));
  return b;
}

std::vector<uint8_t> expected(DType t, RedOp op, int size, size_t n) {
  std::vector<uint8_t> b(n * dtypeSize(t));
  for (size_t i = 0; i < n; ++i) {
    double acc = valueAt(t, 0, i, op);
    for (int r = 1; r < size; ++r) {
      double v = valueAt(t, r, i, op);
      switch (op) {
        case RedOp::kSum: case RedOp::kAvg: acc += v; break;
        case RedOp::kProd: acc *= v; break;
        case RedOp::kMin: acc = std::min(acc, v); break;
        case RedOp::kMax: acc = std::max(acc, v); break;
      }
    }
    uint8_t* p = &b[i * dtypeSize(t)];
    if (op == RedOp::kAvg) {
      store(t, p, acc);  // the sum, exact in the type
      finishAverage(t, p, 1, size);
    } else {
      store(t, p, acc);
    }
  }
  return b;
}

bool sameOnAllRanks(const std::vector<uint8_t>& mine, MPI_Comm comm) {
  int size;
  MPI_Comm_size(comm, &size);
  std::vector<uint8_t> all(mine.size() * size);
  MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_BYTE, all.data(), static_cast<int>(mine.size()),
                MPI_BYTE, comm);
  if (mine.empty()) return true;
  for (int r = 1; r < size; ++r)
    if (std::memcmp(all.data(), all.data() + r * mine.size(), mine.size()) != 0) return false;
  return true;
}

bool allOk(bool mine, MPI_Comm comm) {
  int in = mine ? 1 : 0, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, comm);
  return out == 1;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int code = 0;
  {
  // `braid_algorithms_test tcp`: the same cases over Braid's TCP transport (loopback), which the
  // engine uses between hosts.
  const bool overTcp = argc > 1 && std::string(argv[1]) == "tcp";
  MpiTransport mpiTransport(dup);
  MPI_Comm bootstrap;
  MPI_Comm_dup(MPI_COMM_WORLD, &bootstrap);
  std::unique_ptr<TcpTransport> tcpTransport;
  if (overTcp) {
    TcpOptions options;
    options.loopback = true;
    options.streams = 2;  // so that large messages are striped
    tcpTransport = TcpTransport::create(bootstrap, options, {}, std::chrono::steady_clock::now() + std::chrono::seconds(60));
  }
  Transport& transport = overTcp ? static_cast<Transport&>(*tcpTransport) : mpiTransport;
  std::vector<uint8_t> scratch;
  auto quietCase = [&](const std::string& name, const std::function<void()>& body) {
    braid_test::runCase(name, body, rank != 0);
  };

  std::vector<DType> dtypes = {DType::kFloat32, DType::kFloat64, DType::kInt32, DType::kInt64,
                               DType::kUint8,   DType::kInt8,    DType::kFloat16, DType::kBFloat16};
  // BRAID_TEST_DTYPES=float32,float16 keeps those (the TSan run: races do not depend on the
  // element type, and every dtype costs it as much as the algorithm's threads).
  if (const char* only = std::getenv("BRAID_TEST_DTYPES")) {
    const std::string wanted = std::string(",") + only + ",";
    std::vector<DType> kept;
    for (DType t : dtypes)
      if (wanted.find(std::string(",") + dtypeName(t) + ",") != std::string::npos) kept.push_back(t);
    CHECK_MSG(!kept.empty(), std::string("BRAID_TEST_DTYPES names no dtype: ") + only);
    if (!kept.empty()) dtypes = kept;
  }
  const RedOp ops[] = {RedOp::kSum, RedOp::kProd, RedOp::kMin, RedOp::kMax, RedOp::kAvg};
  std::vector<size_t> sizes = {0, 1, static_cast<size_t>(size > 1 ? size - 1 : 1), static_cast<size_t>(size + 1), 13, 1009, 65537};
  // A small slot (two chunks of 96 bytes) so that these sizes run through many chunks.
  std::string why;
  static std::unique_ptr<ShmTransport> shm = ShmTransport::create(dup, 192, &why);
  CHECK_MSG(shm != nullptr, "shared memory: " + why);
  // While a rank waits on shared-memory flags, MPI must still progress (see ShmTransport::setProgress).
  if (shm) shm->setProgress([dup] {
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, 32767, dup, &flag, MPI_STATUS_IGNORE);
  });
  using Fn = void (*)(CollectiveArgs&, void*, size_t);
  struct Named { const char* name; Fn fn; };
  std::vector<Named> algorithms = {{"ring", allreduceRing}, {"tree", allreduceTree},
                                   {"recursive-doubling", allreduceRecursiveDoubling}, {"direct", allreduceDirect},
                                   {"mpi", allreduceMpi},
                                   {"shm", [](CollectiveArgs& a, void* b, size_t c) { allreduceShm(a, *shm, b, c); }}};
  // 'mpi' is MPI's own all-reduce and 'shm' never uses the transport: they run over MPI only.
  if (overTcp) algorithms.resize(4);

  for (const Named& algo : algorithms) {
    quietCase(std::string("allreduce ") + algo.name + " over " + transport.name() + " np=" + std::to_string(size) + ": every dtype x op x size exact and identical", [&] {
      for (DType t : dtypes)
        for (RedOp op : ops) {
          if (op == RedOp::kAvg && !isFloating(t)) continue;
          for (size_t n : sizes) {
            auto buf = fill(t, op, rank, n);
            // Small segments so that even these sizes exercise the ring's pipeline.
            CollectiveArgs args{transport, t, op, scratch, nullptr, 64};
            algo.fn(args, buf.data(), n);
            bool ok = buf == expected(t, op, size, n);
            CHECK_MSG(allOk(ok, MPI_COMM_WORLD), std::string(dtypeName(t)) + " " + redOpName(op) + " n=" + std::to_string(n));
            CHECK_MSG(sameOnAllRanks(buf, MPI_COMM_WORLD), "ranks differ");
          }
        }
    });
  }

  quietCase("allreduce on random floats: every algorithm gives the same bits on every rank, within rounding of the exact sum", [&] {
    auto randomFloats = [](int r, size_t n) {
      std::mt19937 rng(100 + r);
      std::vector<float> v(n);
      for (float& x : v) x = std::uniform_real_distribution<float>(-1, 1)(rng);
      return v;
    };
    for (const Named& algo : algorithms)
      for (size_t n : {size_t{3}, size_t{1000}, size_t{300001}}) {
        std::vector<float> v = randomFloats(rank, n);
        CollectiveArgs args{transport, DType::kFloat32, RedOp::kSum, scratch, nullptr, 4096};
        algo.fn(args, v.data(), n);
        std::vector<uint8_t> bytes(n * 4);
        std::memcpy(bytes.data(), v.data(), n * 4);
        CHECK_MSG(sameOnAllRanks(bytes, MPI_COMM_WORLD), std::string(algo.name) + " n=" + std::to_string(n));
        // Every rank regenerates the others' values: the float32 sum is within size-1 roundings
        // (each at most 2^-24 of a sum <= size) of the exact one.
        std::vector<double> exact(n, 0.0);
        for (int r = 0; r < size; ++r) {
          std::vector<float> other = randomFloats(r, n);
          for (size_t i = 0; i < n; ++i) exact[i] += other[i];
        }
        const double tolerance = static_cast<double>(size) * size * std::ldexp(1.0, -24);
        size_t wrong = 0;
        for (size_t i = 0; i < n; ++i) wrong += !(std::fabs(v[i] - exact[i]) <= tolerance);
        CHECK_MSG(wrong == 0, std::string(algo.name) + " n=" + std::to_string(n) + ": " + std::to_string(wrong) + " sums off");
      }
  });

  quietCase("StoreChoice times both kinds, keeps the faster, and notices when the regime turns", [&] {
    StoreChoice choice;
    const size_t mib = 1 << 20;
    CHECK(!choice.streaming(StoreChoice::kMinBytes - 1));
    // Simulated costs per kind, seconds per MiB: streaming first slower, then faster.
    double cost[2] = {1.0, 2.0};
    auto run = [&](int ops) {
      int streamed = 0;
      for (int i = 0; i < ops; ++i) {
        const bool s = choice.streaming(mib);
        streamed += s;
        choice.record(mib, s, cost[s ? 1 : 0]);
      }
      return streamed;
    };
    const int first = run(4);
    CHECK_MSG(first == 2, "each kind is timed once, the slower once more, then plain kept: " + std::to_string(first));
    int streamed = run(320);
    CHECK_MSG(streamed == 10, "plain kept, streaming tried once in 32: " + std::to_string(streamed));
    cost[0] = 4.0;  // the slow minutes: plain stores now cost twice streaming's
    run(64);        // three slow timings of plain are enough to switch
    streamed = run(320);
    CHECK_MSG(streamed == 310, "streaming kept, plain tried once in 32: " + std::to_string(streamed));
    // Another size is chosen on its own timings, and a slow first op (a first touch, a
    // preempted rank) does not hold the choice: the next ones decide.
    const size_t big = 8 * mib;
    CHECK(!choice.streaming(big));
    choice.record(big, false, 20.0);
    CHECK(choice.streaming(big));
    choice.record(big, true, 1.5);
    int plain = 0;
    for (int i = 0; i < 20; ++i) {
      const bool s = choice.streaming(big);
      plain += !s;
      choice.record(big, s, s ? 1.5 : 1.0);
    }
    CHECK_MSG(plain >= 18, "plain chosen once timed at its speed: " + std::to_string(plain) + " of 20");
  });

  quietCase("shm with plain and streaming stores (full-size slots, 64 KiB-2 MiB): exact and identical", [&] {
    std::string slotWhy;
    std::unique_ptr<ShmTransport> big = ShmTransport::create(dup, 1 << 20, &slotWhy);
    CHECK_MSG(big != nullptr, "shared memory: " + slotWhy);
    if (!big) return;
    // StoreChoice times each kind once before it trusts either: four ops of a size use both.
    // 1 MiB: three chunks, an odd tail; 64 KiB and 300 KiB (a training bucket's size): one chunk.
    for (size_t bytes : {size_t{1} << 20, StoreChoice::kMinBytes, size_t{300} << 10})
      for (DType t : {DType::kFloat32, DType::kFloat64}) {
        const size_t n = bytes / dtypeSize(t) + 3;
        for (int op = 0; op < 4; ++op) {
          auto buf = fill(t, RedOp::kSum, rank, n);
          CollectiveArgs args{transport, t, RedOp::kSum, scratch, nullptr, size_t{1} << 20};
          allreduceShm(args, *big, buf.data(), n);
          CHECK_MSG(allOk(buf == expected(t, RedOp::kSum, size, n), MPI_COMM_WORLD),
                    std::string(dtypeName(t)) + " " + std::to_string(bytes) + " B op " + std::to_string(op));
        }
      }
  });

  quietCase("broadcast binomial and pipeline from every root", [&] {
    for (int root = 0; root < size; ++root)
      for (size_t bytes : {size_t{0}, size_t{1}, size_t{1000}, size_t{1 << 20}}) {
        for (int which = 0; which < 2; ++which) {
          std::vector<uint8_t> buf(bytes);
          for (size_t i = 0; i < bytes; ++i) buf[i] = static_cast<uint8_t>(rank == root ? (i * 31 + root) : 0xee);
          CollectiveArgs args{transport, DType::kUint8, RedOp::kSum, scratch, nullptr, 4096};
          if (which == 0) broadcastBinomial(args, buf.data(), bytes, root); else broadcastPipeline(args, buf.data(), bytes, root);
          bool ok = true;
          for (size_t i = 0; i < bytes; ++i) ok = ok && buf[i] == static_cast<uint8_t>(i * 31 + root);
          CHECK_MSG(allOk(ok, MPI_COMM_WORLD), "root=" + std::to_string(root) + " bytes=" + std::to_string(bytes));
        }
      }
  });

  quietCase("ring all-gather and reduce-scatter, uneven blocks", [&] {
    for (size_t count : {size_t{0}, size_t{1}, static_cast<size_t>(size), size_t{1001}}) {
      BlockLayout layout = BlockLayout::even(count, size);
      std::vector<int32_t> buf(count, -1);
      for (size_t i = layout.offset[rank]; i < layout.offset[rank + 1]; ++i) buf[i] = static_cast<int32_t>(i * 3);
      CollectiveArgs args{transport, DType::kInt32, RedOp::kSum, scratch, nullptr, 64};
      ringAllgather(args, reinterpret_cast<uint8_t*>(buf.data()), layout);
      bool ok = true;
      for (size_t i = 0; i < count; ++i) ok = ok && buf[i] == static_cast<int32_t>(i * 3);
      CHECK_MSG(allOk(ok, MPI_COMM_WORLD), "allgather count=" + std::to_string(count));

      std::vector<int32_t> rs(count);
      for (size_t i = 0; i < count; ++i) rs[i] = static_cast<int32_t>(i) + rank;
      ringReduceScatter(args, reinterpret_cast<uint8_t*>(rs.data()), layout);
      ok = true;
      for (size_t i = layout.offset[rank]; i < layout.offset[rank + 1]; ++i)
        ok = ok && rs[i] == static_cast<int32_t>(i) * size + size * (size - 1) / 2;
      CHECK_MSG(allOk(ok, MPI_COMM_WORLD), "reduce-scatter count=" + std::to_string(count));
    }
  });

  // A barrier holds every rank until the last one arrives: the last rank comes 200 ms late, and
  // nobody may leave before it came (a barrier that returned at once would fail here).
  // The hierarchical collectives on one machine: the ranks split into two "hosts" (first half,
  // second half), shared memory within each, TCP between (the network step on the overlap thread,
  // as between real hosts). The same code runs across hosts on the namespace test bed.
  if (overTcp && size >= 4 && size % 2 == 0) {
    const int perHost = size / 2, host = rank / perHost, local = rank % perHost;
    MPI_Comm localComm, crossComm;
    MPI_Comm_split(MPI_COMM_WORLD, host, local, &localComm);
    MPI_Comm_split(MPI_COMM_WORLD, local, host, &crossComm);
    std::string why;
    auto localShm = ShmTransport::create(localComm, 4096, &why);
    CHECK_MSG(localShm != nullptr, "shared memory: " + why);
    TcpOptions options;
    options.loopback = true;
    auto cross = TcpTransport::create(crossComm, options, {}, std::chrono::steady_clock::now() + std::chrono::seconds(60));
    std::vector<int> rankOf(size);
    for (int r = 0; r < size; ++r) rankOf[(r / perHost) * perHost + r % perHost] = r;
    Overlap overlap;
    std::vector<uint8_t> crossScratch;
    quietCase("hierarchical all-reduce (2 hosts of shared memory, TCP between), sequential and pipelined: every dtype x op exact and identical", [&] {
      for (Overlap* o : {static_cast<Overlap*>(nullptr), &overlap})
        for (DType t : dtypes)
          for (RedOp op : ops) {
            if (op == RedOp::kAvg && !isFloating(t)) continue;
            // With 4 KiB slots and 2 MiB segments: many shared-memory rounds, several segments.
            for (size_t n : {size_t{0}, size_t{1}, size_t{13}, size_t{1009}, size_t{(3 << 20) / dtypeSize(t) + 7}}) {
              auto buf = fill(t, op, rank, n);
              CollectiveArgs args{*cross, t, op, crossScratch, nullptr, 4096};
              allreduceHierarchical(args, *localShm, buf.data(), n, n * dtypeSize(t) / perHost > 65536 ? allreduceRing : allreduceRecursiveDoubling, o);
              bool ok = buf == expected(t, op, size, n);
              CHECK_MSG(allOk(ok, MPI_COMM_WORLD), std::string(o ? "pipelined " : "") + dtypeName(t) + " " + redOpName(op) + " n=" + std::to_string(n));
              CHECK_MSG(sameOnAllRanks(buf, MPI_COMM_WORLD), "ranks differ");
            }
          }
    });
    quietCase("hierarchical broadcast from every root and all-gather in rank order", [&] {
      for (int root = 0; root < size; ++root)
        for (size_t n : {size_t{1}, size_t{5000}, size_t{200001}}) {
          std::vector<uint8_t> buf(n);
          for (size_t i = 0; i < n; ++i) buf[i] = static_cast<uint8_t>(rank == root ? i * 7 + root : 0);
          CollectiveArgs args{*cross, DType::kUint8, RedOp::kSum, crossScratch, nullptr, 4096};
          broadcastHierarchical(args, *localShm, buf.data(), n, root / perHost, root % perHost, n > 100000 ? broadcastPipeline : broadcastBinomial);
          bool ok = true;
          for (size_t i = 0; i < n; ++i) ok = ok && buf[i] == static_cast<uint8_t>(i * 7 + root);
          CHECK_MSG(allOk(ok, MPI_COMM_WORLD), "broadcast root " + std::to_string(root) + " n=" + std::to_string(n));
        }
      for (size_t n : {size_t{1}, size_t{999}, size_t{70001}}) {
        std::vector<int32_t> mine(n), all(n * size);
        for (size_t i = 0; i < n; ++i) mine[i] = static_cast<int32_t>(rank * 1000000 + i);
        CollectiveArgs args{*cross, DType::kInt32, RedOp::kSum, crossScratch, nullptr, 4096};
        allgatherHierarchical(args, *localShm, mine.data(), n * 4, all.data(), rankOf);
        bool ok = true;
        for (int r = 0; r < size; ++r)
          for (size_t i = 0; i < n; ++i) ok = ok && all[r * n + i] == static_cast<int32_t>(r * 1000000 + i);
        CHECK_MSG(allOk(ok, MPI_COMM_WORLD), "all-gather n=" + std::to_string(n));
      }
    });
    cross.reset();
    localShm.reset();
    MPI_Comm_free(&localComm);
    MPI_Comm_free(&crossComm);
  }

  quietCase("barrier holds every rank until the last arrives", [&] {
    barrierDissemination(transport);  // start together
    const auto start = std::chrono::steady_clock::now();
    if (rank == size - 1) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    barrierDissemination(transport);
    const double waited = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (size > 1) CHECK_MSG(waited >= 190, "rank " + std::to_string(rank) + " left the barrier after " + std::to_string(waited) + " ms");
  });

  if (rank == 0) {
    code = braid_test::finish(("algorithms np=" + std::to_string(size) + " over " + transport.name()).c_str());
  } else {
    code = braid_test::registry().failed == 0 ? 0 : 1;
  }
  shm.reset();
  tcpTransport.reset();
  MPI_Comm_free(&bootstrap);
  }  // the transports let go of their communicator and region before MPI_Finalize
  MPI_Finalize();
  return code;
}
