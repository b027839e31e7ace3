// The NCCL communicator (gpu/nccl_comm.h) on a real GPU, one rank (NCCL takes one rank per GPU, and
// the GPU check's machine has one): created from a unique id with the non-blocking config and
// polled to completion, then all-reduce (every op, the dtypes Braid maps) and broadcast on device
// memory, each giving back exactly what went in, as one rank's collectives must; a communicator
// whose second rank never comes is given up at its deadline (aborted, no hang). Skipped, saying
// why, where there is no NCCL or no GPU (scripts/gpu-check.sh runs it where there are), and
// the staged all-reduce of host memory over its chunks. braid_nccl_test_emulated runs the same
// cases on the CUDA and NCCL emulation (test/cuda_emulation), where a second, mirrored rank
// (contributing the same values) makes the staged sum twice its input, so a chunk that never
// comes back shows.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "gpu/nccl_comm.h"
#include "gpu/nccl_loader.h"
#include "kernels/cuda/cuda_info.h"

#if defined(BRAID_CUDA_EMULATION)
#include "nccl_emulation.h"
#endif

using namespace braid;

int main() {
#if defined(BRAID_CUDA_EMULATION)
  NcclLoad load;
  load.library = &braid_cuda_emulation::emulatedNccl();
  const char* suite = "nccl (CUDA and NCCL emulated)";
#else
  const NcclLoad& load = loadNccl();
  const char* suite = "nccl";
#endif
  if (load.library == nullptr) {
    braid_test::skip("NCCL communicator on the GPU", load.error);
    return braid_test::finish(suite);
  }
  std::printf("NCCL %s at %s\n", ncclVersionString(load.library->version).c_str(), load.library->path.c_str());
  const NcclLibrary& nccl = *load.library;
  braid_test::runCase("a unique id from NCCL's bootstrap (no GPU needed)", [&] {
    nccl::UniqueId a{}, b{};
    std::string error;
    CHECK_MSG(NcclCommunicator::uniqueId(nccl, a, error) && NcclCommunicator::uniqueId(nccl, b, error), error);
    CHECK(std::memcmp(&a, &b, sizeof a) != 0);  // each id names a new communicator
  });
  if (cudaDeviceCount() == 0) {
    braid_test::runCase("joining a communicator without a GPU fails at once with CUDA's reason", [&] {
      nccl::UniqueId id{};
      std::string error;
      bool timedOut = false;
      CHECK_MSG(NcclCommunicator::uniqueId(nccl, id, error), error);
      const auto started = std::chrono::steady_clock::now();
      auto none = NcclCommunicator::join(nccl, 0, 1, 0, id, std::chrono::steady_clock::now() + std::chrono::seconds(30), error, timedOut);
      CHECK(none == nullptr);
      CHECK(!timedOut);
      CHECK_MSG(error.rfind(cudaCompiled() ? "cudaSetDevice: " : "CUDA is not compiled", 0) == 0, error);
      CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
      std::printf("     (%s)\n", error.c_str());
    });
    braid_test::skip("NCCL collectives on the GPU", cudaCompiled() ? "no GPU visible" : "built without nvcc");
    return braid_test::finish(suite);
  }
  const auto deadline = [] { return std::chrono::steady_clock::now() + std::chrono::seconds(60); };
  std::unique_ptr<NcclCommunicator> comm;
  braid_test::runCase("a one-rank communicator from a unique id, non-blocking, polled to completion", [&] {
    nccl::UniqueId id{};
    std::string error;
    bool timedOut = false;
    CHECK_MSG(NcclCommunicator::uniqueId(nccl, id, error), error);
    comm = NcclCommunicator::join(nccl, 0, 1, 0, id, deadline(), error, timedOut);
    CHECK_MSG(comm != nullptr, error);
  });
  if (!comm) return braid_test::finish(suite);

  struct Type {
    const char* name;
    nccl::DataType type;
    size_t bytes;
  };
  const Type types[] = {{"float32", nccl::kFloat32, 4}, {"float64", nccl::kFloat64, 8}, {"int32", nccl::kInt32, 4}, {"int64", nccl::kInt64, 8},
                        {"float16", nccl::kFloat16, 2}, {"bfloat16", nccl::kBfloat16, 2}, {"uint8", nccl::kUint8, 1},   {"int8", nccl::kInt8, 1}};
  const nccl::RedOp ops[] = {nccl::kSum, nccl::kProd, nccl::kMax, nccl::kMin, nccl::kAvg};
  const char* opNames[] = {"sum", "prod", "max", "min", "avg"};
  std::mt19937 rng(7);
  braid_test::runCase("all-reduce on device memory: every op and dtype gives back its input bit for bit (one rank)", [&] {
    const size_t count = 1000003;
    for (const Type& t : types) {
      std::vector<uint8_t> host(count * t.bytes), back(count * t.bytes);
      for (auto& b : host) b = static_cast<uint8_t>(rng());
      // Finite values only: NaN payloads need not survive arithmetic.
      if (t.type == nccl::kFloat32) for (size_t i = 0; i < count; ++i) reinterpret_cast<uint32_t*>(host.data())[i] &= 0xbfffffffu;
      if (t.type == nccl::kFloat64) for (size_t i = 0; i < count; ++i) reinterpret_cast<uint64_t*>(host.data())[i] &= 0xbfffffffffffffffull;
      if (t.type == nccl::kFloat16 || t.type == nccl::kBfloat16) for (size_t i = 0; i < count; ++i) reinterpret_cast<uint16_t*>(host.data())[i] &= 0xbfffu;
      std::string error;
      void* d = gpuAlloc(host.size(), error);
      CHECK_MSG(d != nullptr, error);
      if (d == nullptr) return;
      for (size_t o = 0; o < 5; ++o) {
        bool timedOut = false;
        CHECK_MSG(gpuUpload(d, host.data(), host.size(), error), error);
        CHECK_MSG(comm->allReduce(d, count, t.type, ops[o], deadline(), error, timedOut), std::string(t.name) + " " + opNames[o] + ": " + error);
        CHECK_MSG(gpuDownload(back.data(), d, back.size(), error), error);
        CHECK_MSG(std::memcmp(host.data(), back.data(), host.size()) == 0, std::string(t.name) + " " + opNames[o] + ": the result differs from the input");
      }
      gpuFree(d);
    }
  });
  braid_test::runCase("broadcast on device memory from rank 0 (one rank)", [&] {
    std::vector<float> host(1 << 20), back(1 << 20);
    for (float& v : host) v = static_cast<float>(rng() % 1000) / 7.0f;
    std::string error;
    bool timedOut = false;
    void* d = gpuAlloc(host.size() * 4, error);
    CHECK_MSG(d != nullptr, error);
    if (d == nullptr) return;
    CHECK_MSG(gpuUpload(d, host.data(), host.size() * 4, error), error);
    CHECK_MSG(comm->broadcast(d, host.size(), nccl::kFloat32, 0, deadline(), error, timedOut), error);
    CHECK_MSG(gpuDownload(back.data(), d, back.size() * 4, error), error);
    CHECK(host == back);
    gpuFree(d);
  });
  braid_test::runCase("64 MiB float32 all-reduce on device memory (time printed)", [&] {
    const size_t count = 16u << 20;
    std::string error;
    bool timedOut = false;
    void* d = gpuAlloc(count * 4, error);
    CHECK_MSG(d != nullptr, error);
    if (d == nullptr) return;
    for (int i = 0; i < 3; ++i) CHECK_MSG(comm->allReduce(d, count, nccl::kFloat32, nccl::kSum, deadline(), error, timedOut), error);
    const auto t0 = std::chrono::steady_clock::now();
    const int reps = 20;
    for (int i = 0; i < reps; ++i) CHECK_MSG(comm->allReduce(d, count, nccl::kFloat32, nccl::kSum, deadline(), error, timedOut), error);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
#if defined(BRAID_CUDA_EMULATION)
    std::printf("64 MiB all-reduce, one rank, emulated: %.1f us per call (a CPU memmove: not a GPU figure)\n", us);
#else
    std::printf("64 MiB all-reduce, one rank: %.1f us per call (polled completion included)\n", us);
#endif
    gpuFree(d);
  });
  braid_test::runCase("a communicator whose other rank never joins times out at its deadline and is aborted, no hang", [&] {
    nccl::UniqueId id{};
    std::string error;
    bool timedOut = false;
    CHECK_MSG(NcclCommunicator::uniqueId(nccl, id, error), error);
    const auto started = std::chrono::steady_clock::now();
    auto alone = NcclCommunicator::join(nccl, 0, 2, 0, id, started + std::chrono::seconds(3), error, timedOut);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    CHECK(alone == nullptr);
    CHECK_MSG(timedOut, error);
    CHECK(seconds >= 2.9 && seconds < 20);
    std::printf("     (after %.1f s: %s)\n", seconds, error.c_str());
  });
  braid_test::runCase("the staged all-reduce of host memory: three whole 4 MiB chunks and a short fourth, in place", [&] {
    // On a GPU: this one-rank communicator (the sum is the input). Emulated: a second, mirrored
    // rank, so the sum is twice the input and every chunk must make the round trip.
    std::unique_ptr<NcclCommunicator> staged;
    float factor = 1.0f;
    std::string error;
    bool timedOut = false;
#if defined(BRAID_CUDA_EMULATION)
    staged = NcclCommunicator::join(nccl, 0, 2, 0, braid_cuda_emulation::mirroredId(), deadline(), error, timedOut);
    CHECK_MSG(staged != nullptr, error);
    if (!staged) return;
    factor = 2.0f;
#endif
    NcclCommunicator& c = staged ? *staged : *comm;
    const size_t count = 3 * (1u << 20) + 12345;  // 4 MiB chunks of float32
    std::vector<float> host(count), want(count);
    for (size_t i = 0; i < count; ++i) host[i] = static_cast<float>(static_cast<int>(rng() % 20001) - 10000) / 64.0f;
    for (size_t i = 0; i < count; ++i) want[i] = host[i] * factor;
    CHECK_MSG(c.allReduceStaged(host.data(), count, 4, nccl::kFloat32, nccl::kSum, deadline(), error, timedOut), error);
    CHECK(std::memcmp(host.data(), want.data(), count * 4) == 0);
    // Again, smaller than one chunk, on the staging buffers the first call left.
    std::vector<float> small(want.begin(), want.begin() + 1000), twice(small);
    for (float& v : twice) v *= factor;
    CHECK_MSG(c.allReduceStaged(small.data(), small.size(), 4, nccl::kFloat32, nccl::kSum, deadline(), error, timedOut), error);
    CHECK(small == twice);
  });
#if defined(BRAID_CUDA_EMULATION)
  braid_test::runCase("all-gather and reduce-scatter on device memory with a mirrored second rank", [&] {
    std::string error;
    bool timedOut = false;
    auto two = NcclCommunicator::join(nccl, 0, 2, 0, braid_cuda_emulation::mirroredId(), deadline(), error, timedOut);
    CHECK_MSG(two != nullptr, error);
    if (!two) return;
    const size_t count = 4099;
    std::vector<float> host(2 * count), back(2 * count);
    for (float& v : host) v = static_cast<float>(rng() % 1000) / 8.0f;
    void* d = gpuAlloc(host.size() * 4, error);
    void* out = gpuAlloc(host.size() * 4, error);
    CHECK(d != nullptr && out != nullptr && gpuUpload(d, host.data(), host.size() * 4, error));
    CHECK_MSG(two->allGather(d, out, count, nccl::kFloat32, deadline(), error, timedOut), error);
    CHECK(gpuDownload(back.data(), out, back.size() * 4, error));
    CHECK(std::memcmp(back.data(), host.data(), count * 4) == 0 && std::memcmp(back.data() + count, host.data(), count * 4) == 0);
    CHECK_MSG(two->reduceScatter(d, out, count, nccl::kFloat32, nccl::kSum, deadline(), error, timedOut), error);
    CHECK(gpuDownload(back.data(), out, count * 4, error));
    for (size_t i = 0; i < count; ++i) CHECK(back[i] == host[i] * 2.0f);
    // A host pointer is refused by NCCL (invalid argument) and the communicator aborted.
    CHECK(!two->allReduce(host.data(), count, nccl::kFloat32, nccl::kSum, deadline(), error, timedOut));
    CHECK_MSG(error.find("ncclAllReduce: invalid argument") == 0, error);
    CHECK(!two->usable());
    gpuFree(d);
    gpuFree(out);
  });
#endif
  comm.reset();
  return braid_test::finish(suite);
}
