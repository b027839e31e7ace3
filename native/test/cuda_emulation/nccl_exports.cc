// NCCL's C entry points over nccl_emulation.h, exported from the addon built with
// -DBRAID_CUDA_EMULATION_ADDON=ON (scripts/test-emulated.sh): BRAID_NCCL_LIB names the addon itself,
// so the addon's own loader finds these, and the engine's NCCL path runs on the CUDA emulation.
#include "nccl_emulation.h"

namespace e = braid_cuda_emulation;
namespace nccl = braid::nccl;

#define BRAID_EXPORT extern "C" __attribute__((visibility("default")))

BRAID_EXPORT nccl::Result ncclGetVersion(int* version) { return e::ncclGetVersionEmulated(version); }
BRAID_EXPORT const char* ncclGetErrorString(nccl::Result r) { return e::ncclGetErrorStringEmulated(r); }
BRAID_EXPORT nccl::Result ncclGetUniqueId(nccl::UniqueId* id) { return e::ncclGetUniqueIdEmulated(id); }
BRAID_EXPORT nccl::Result ncclCommInitRank(nccl::Comm* comm, int nranks, nccl::UniqueId id, int rank) {
  return e::ncclCommInitRankEmulated(comm, nranks, id, rank);
}
BRAID_EXPORT nccl::Result ncclCommInitRankConfig(nccl::Comm* comm, int nranks, nccl::UniqueId id, int rank, nccl::Config* config) {
  return e::ncclCommInitRankConfigEmulated(comm, nranks, id, rank, config);
}
BRAID_EXPORT nccl::Result ncclCommAbort(nccl::Comm comm) { return e::ncclCommAbortEmulated(comm); }
BRAID_EXPORT nccl::Result ncclCommDestroy(nccl::Comm comm) { return e::ncclCommAbortEmulated(comm); }
BRAID_EXPORT nccl::Result ncclCommGetAsyncError(nccl::Comm comm, nccl::Result* state) { return e::ncclCommGetAsyncErrorEmulated(comm, state); }
BRAID_EXPORT nccl::Result ncclAllReduce(const void* send, void* recv, size_t count, nccl::DataType type, nccl::RedOp op, nccl::Comm comm, nccl::Stream s) {
  return e::ncclAllReduceEmulated(send, recv, count, type, op, comm, s);
}
BRAID_EXPORT nccl::Result ncclBroadcast(const void* send, void* recv, size_t count, nccl::DataType type, int root, nccl::Comm comm, nccl::Stream s) {
  return e::ncclBroadcastEmulated(send, recv, count, type, root, comm, s);
}
BRAID_EXPORT nccl::Result ncclAllGather(const void* send, void* recv, size_t count, nccl::DataType type, nccl::Comm comm, nccl::Stream s) {
  return e::ncclAllGatherEmulated(send, recv, count, type, comm, s);
}
BRAID_EXPORT nccl::Result ncclReduceScatter(const void* send, void* recv, size_t count, nccl::DataType type, nccl::RedOp op, nccl::Comm comm,
                                            nccl::Stream s) {
  return e::ncclReduceScatterEmulated(send, recv, count, type, op, comm, s);
}
BRAID_EXPORT nccl::Result ncclGroupStart() { return e::ncclGroupEmulated(); }
BRAID_EXPORT nccl::Result ncclGroupEnd() { return e::ncclGroupEmulated(); }
