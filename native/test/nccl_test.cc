// The NCCL communicator (gpu/nccl_comm.h) on a real GPU, one rank (NCCL takes one rank per GPU, and
// the GPU check's machine has one): created from a unique id with the non-blocking config and
// polled to completion, then all-reduce (every op, the dtypes Braid maps) and broadcast on device
// memory, each giving back exactly what went in, as one rank's collectives must; a communicator
// whose second rank never comes is given up at its deadline (aborted, no hang). Skipped, saying
// why, where there is no NCCL or no GPU (scripts/gpu-check.sh runs it where there are).
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

using namespace braid;

int main() {
  const NcclLoad& load = loadNccl();
  if (load.library == nullptr) {
    braid_test::skip("NCCL communicator on the GPU", load.error);
    return braid_test::finish("nccl");
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
    return braid_test::finish("nccl");
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
  if (!comm) return braid_test::finish("nccl");

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
    std::printf("64 MiB all-reduce, one rank: %.1f us per call (polled completion included)\n", us);
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
  comm.reset();
  return braid_test::finish("nccl");
}
