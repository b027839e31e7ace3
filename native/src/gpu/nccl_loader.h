// NCCL, found and loaded at run time (dlopen), so that one addon binary serves machines with and
// without it. Where to look, in order: BRAID_NCCL_LIB alone when it is set; else libnccl.so.2 by
// the dynamic loader's own search (LD_LIBRARY_PATH, the system's library cache); else the usual
// CUDA locations, pip's nvidia/nccl/lib under the Python environments it can see, and last what
// `scripts/setup.sh --nccl` unpacked into ~/.cache/braid/nccl. A library
// that lacks an entry point Braid calls, or is older than 2.14, is not used; what was searched,
// and why each library found was refused, goes into the error.
#pragma once
#include <string>
#include <vector>

#include "gpu/nccl_api.h"

namespace braid {

struct NcclLibrary {
  std::string path;
  int version = 0;  // NCCL's version code
  nccl::GetVersionFn getVersion = nullptr;
  nccl::GetErrorStringFn getErrorString = nullptr;
  nccl::GetUniqueIdFn getUniqueId = nullptr;
  nccl::CommInitRankFn commInitRank = nullptr;
  nccl::CommInitRankConfigFn commInitRankConfig = nullptr;
  nccl::CommFn commAbort = nullptr;
  nccl::CommFn commDestroy = nullptr;
  nccl::CommGetAsyncErrorFn commGetAsyncError = nullptr;
  nccl::AllReduceFn allReduce = nullptr;
  nccl::BroadcastFn broadcast = nullptr;
  nccl::AllGatherFn allGather = nullptr;
  nccl::ReduceScatterFn reduceScatter = nullptr;
  nccl::GroupFn groupStart = nullptr;
  nccl::GroupFn groupEnd = nullptr;
};

struct NcclLoad {
  // Null when no usable library was found; `error` then says why.
  const NcclLibrary* library = nullptr;
  std::string error;
  // Every place looked at, in order ("BRAID_NCCL_LIB=...", "libnccl.so.2 (LD_LIBRARY_PATH and the
  // system's library cache)", then files).
  std::vector<std::string> searched;
};

// Where loadNccl looks, from the environment as it is now.
std::vector<std::string> ncclCandidates();

// Tries `candidates` in order (each a path, or a bare soname for the dynamic loader's search) and
// keeps the first usable library (never unloaded). Not cached: for tests and `braid doctor`.
NcclLoad loadNcclFrom(const std::vector<std::string>& candidates);

// The process's NCCL: searched once (the result, found or not, is kept).
const NcclLoad& loadNccl();

// "2.30.7" for NCCL's version code.
std::string ncclVersionString(int code);

}  // namespace braid
