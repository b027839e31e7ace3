// Built when nvcc is absent: every GPU call says CUDA is not compiled in.
#include "gpu/nccl_comm.h"

namespace braid {

namespace {
const char* kNoCuda = "CUDA is not compiled into this build of @braid/native (no nvcc when it was built)";
}

bool gpuSelect(int, std::string& error) {
  error = kNoCuda;
  return false;
}
void* gpuAlloc(size_t, std::string& error) {
  error = kNoCuda;
  return nullptr;
}
void gpuFree(void*) {}
bool gpuUpload(void*, const void*, size_t, std::string& error) {
  error = kNoCuda;
  return false;
}
bool gpuDownload(void*, const void*, size_t, std::string& error) {
  error = kNoCuda;
  return false;
}
bool NcclCommunicator::uniqueId(const NcclLibrary& nccl, nccl::UniqueId& id, std::string& error) {
  const nccl::Result r = nccl.getUniqueId(&id);
  if (r == nccl::kSuccess) return true;
  error = std::string("ncclGetUniqueId: ") + nccl.getErrorString(r);
  return false;
}
std::unique_ptr<NcclCommunicator> NcclCommunicator::join(const NcclLibrary&, int, int, int, const nccl::UniqueId&, Deadline, std::string& error,
                                                         bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return nullptr;
}
NcclCommunicator::~NcclCommunicator() = default;
bool NcclCommunicator::allReduce(void*, size_t, nccl::DataType, nccl::RedOp, Deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return false;
}
bool NcclCommunicator::broadcast(void*, size_t, nccl::DataType, int, Deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return false;
}
bool NcclCommunicator::allGather(const void*, void*, size_t, nccl::DataType, Deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return false;
}
bool NcclCommunicator::reduceScatter(const void*, void*, size_t, nccl::DataType, nccl::RedOp, Deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return false;
}
bool NcclCommunicator::allReduceStaged(void*, size_t, size_t, nccl::DataType, nccl::RedOp, Deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return false;
}
bool NcclCommunicator::waitEvent(const char*, void*, Deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return false;
}
bool NcclCommunicator::run(const char*, const std::function<nccl::Result()>&, Deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return false;
}
bool NcclCommunicator::wait(const char*, Deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  error = kNoCuda;
  return false;
}
void NcclCommunicator::abort() { aborted_ = true; }

}  // namespace braid
