// The part of NCCL's C ABI Braid calls, declared here so that the addon builds without NCCL's
// headers and loads the library at run time (nccl_loader.h). NCCL keeps this ABI stable across
// 2.x: the enum values, the 128-byte unique id and the entry points' signatures below are those
// of every release since 2.14 (the first with non-blocking communicator initialization).
#pragma once
#include <cstddef>

namespace braid::nccl {

enum Result : int {
  kSuccess = 0,
  kUnhandledCudaError = 1,
  kSystemError = 2,
  kInternalError = 3,
  kInvalidArgument = 4,
  kInvalidUsage = 5,
  kRemoteError = 6,
  kInProgress = 7,
};

enum RedOp : int { kSum = 0, kProd = 1, kMax = 2, kMin = 3, kAvg = 4 };

enum DataType : int {
  kInt8 = 0,
  kUint8 = 1,
  kInt32 = 2,
  kUint32 = 3,
  kInt64 = 4,
  kUint64 = 5,
  kFloat16 = 6,
  kFloat32 = 7,
  kFloat64 = 8,
  kBfloat16 = 9,
};

struct UniqueId {
  char internal[128];
};

using Comm = struct OpaqueComm*;
using Stream = struct OpaqueStream*;  // a cudaStream_t

// The communicator configuration as NCCL 2.14 laid it out. NCCL reads `size` and `version` to
// know which fields a caller's struct has, so this prefix works with every later release.
struct Config {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char* netName;
};
constexpr unsigned int kConfigMagic = 0xcafebeef;
constexpr int kConfigUndefined = -2147483647 - 1;  // INT_MIN: "NCCL's default"

// A Config with NCCL's defaults, non-blocking (calls return kInProgress; completion is polled).
inline Config nonBlockingConfig() {
  return Config{sizeof(Config), kConfigMagic, 21400, 0, kConfigUndefined, kConfigUndefined, kConfigUndefined, nullptr};
}

// The oldest NCCL Braid accepts: 2.14.0, in NCCL's version code (major * 10000 + minor * 100 + patch).
constexpr int kMinimumVersion = 21400;

using GetVersionFn = Result (*)(int* version);
using GetErrorStringFn = const char* (*)(Result result);
using GetUniqueIdFn = Result (*)(UniqueId* id);
using CommInitRankFn = Result (*)(Comm* comm, int nranks, UniqueId id, int rank);
using CommInitRankConfigFn = Result (*)(Comm* comm, int nranks, UniqueId id, int rank, Config* config);
using CommFn = Result (*)(Comm comm);
using CommGetAsyncErrorFn = Result (*)(Comm comm, Result* asyncError);
using AllReduceFn = Result (*)(const void* send, void* recv, size_t count, DataType type, RedOp op, Comm comm, Stream stream);
using BroadcastFn = Result (*)(const void* send, void* recv, size_t count, DataType type, int root, Comm comm, Stream stream);
using AllGatherFn = Result (*)(const void* send, void* recv, size_t sendCount, DataType type, Comm comm, Stream stream);
using ReduceScatterFn = Result (*)(const void* send, void* recv, size_t recvCount, DataType type, RedOp op, Comm comm, Stream stream);
using GroupFn = Result (*)();

// NCCL's version code as "major.minor.patch" (codes below 2.9 used major * 1000 + minor * 100 + patch).
inline void decodeVersion(int code, int& major, int& minor, int& patch) {
  if (code >= 10000) {
    major = code / 10000;
    minor = (code % 10000) / 100;
  } else {
    major = code / 1000;
    minor = (code % 1000) / 100;
  }
  patch = code % 100;
}

}  // namespace braid::nccl
