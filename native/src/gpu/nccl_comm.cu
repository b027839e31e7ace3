#include "gpu/nccl_comm.h"

#include <cuda_runtime.h>

#include <thread>

namespace braid {

namespace {

bool cudaOk(cudaError_t status, const char* what, std::string& error) {
  if (status == cudaSuccess) return true;
  error = std::string(what) + ": " + cudaGetErrorString(status);
  cudaGetLastError();  // clear it: the next call starts clean
  return false;
}

std::string ncclText(const NcclLibrary& nccl, nccl::Result r) {
  return std::string(nccl.getErrorString(r)) + " (NCCL error " + std::to_string(static_cast<int>(r)) + ")";
}

}  // namespace

bool gpuSelect(int device, std::string& error) { return cudaOk(cudaSetDevice(device), "cudaSetDevice", error); }

void* gpuAlloc(size_t bytes, std::string& error) {
  void* p = nullptr;
  if (!cudaOk(cudaMalloc(&p, bytes > 0 ? bytes : 1), "cudaMalloc", error)) return nullptr;
  return p;
}

void gpuFree(void* pointer) {
  if (pointer != nullptr) cudaFree(pointer);
}

bool gpuUpload(void* device, const void* host, size_t bytes, std::string& error) {
  return cudaOk(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (host to device)", error);
}

bool gpuDownload(void* host, const void* device, size_t bytes, std::string& error) {
  return cudaOk(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (device to host)", error);
}

bool NcclCommunicator::uniqueId(const NcclLibrary& nccl, nccl::UniqueId& id, std::string& error) {
  const nccl::Result r = nccl.getUniqueId(&id);
  if (r == nccl::kSuccess) return true;
  error = "ncclGetUniqueId: " + ncclText(nccl, r);
  return false;
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::join(const NcclLibrary& nccl, int device, int ranks, int rank, const nccl::UniqueId& id,
                                                         Deadline deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  if (!gpuSelect(device, error)) return nullptr;
  cudaStream_t stream = nullptr;
  if (!cudaOk(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate", error)) return nullptr;
  nccl::Config config = nccl::nonBlockingConfig();
  nccl::Comm comm = nullptr;
  const nccl::Result r = nccl.commInitRankConfig(&comm, ranks, id, rank, &config);
  if (r != nccl::kSuccess && r != nccl::kInProgress) {
    error = "ncclCommInitRankConfig: " + ncclText(nccl, r);
    if (comm != nullptr) nccl.commAbort(comm);
    cudaStreamDestroy(stream);
    return nullptr;
  }
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(nccl, comm, stream));
  if (!c->wait("creating the NCCL communicator", deadline, error, timedOut)) return nullptr;
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (!aborted_) nccl_.commDestroy(comm_);
  cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

void NcclCommunicator::abort() {
  if (aborted_) return;
  aborted_ = true;
  nccl_.commAbort(comm_);
}

bool NcclCommunicator::wait(const char* what, Deadline deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  auto pause = std::chrono::microseconds(1);
  for (;;) {
    nccl::Result state = nccl::kSuccess;
    const nccl::Result r = nccl_.commGetAsyncError(comm_, &state);
    if (r != nccl::kSuccess || (state != nccl::kSuccess && state != nccl::kInProgress)) {
      error = std::string(what) + ": " + ncclText(nccl_, r != nccl::kSuccess ? r : state);
      abort();
      return false;
    }
    if (state == nccl::kSuccess) {
      const cudaError_t q = cudaStreamQuery(static_cast<cudaStream_t>(stream_));
      if (q == cudaSuccess) return true;
      if (q != cudaErrorNotReady) {
        cudaOk(q, what, error);
        abort();
        return false;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      error = std::string(what) + ": the deadline passed before NCCL finished; the communicator was aborted";
      timedOut = true;
      abort();
      return false;
    }
    // Short waits first (a collective is often microseconds), longer ones later.
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

bool NcclCommunicator::allReduce(void* data, size_t count, nccl::DataType type, nccl::RedOp op, Deadline deadline, std::string& error, bool& timedOut) {
  return run("ncclAllReduce", [&] { return nccl_.allReduce(data, data, count, type, op, comm_, static_cast<nccl::Stream>(stream_)); }, deadline, error, timedOut);
}

bool NcclCommunicator::broadcast(void* data, size_t count, nccl::DataType type, int root, Deadline deadline, std::string& error, bool& timedOut) {
  return run("ncclBroadcast", [&] { return nccl_.broadcast(data, data, count, type, root, comm_, static_cast<nccl::Stream>(stream_)); }, deadline, error, timedOut);
}

bool NcclCommunicator::allGather(const void* data, void* out, size_t count, nccl::DataType type, Deadline deadline, std::string& error,
                                 bool& timedOut) {
  return run("ncclAllGather", [&] { return nccl_.allGather(data, out, count, type, comm_, static_cast<nccl::Stream>(stream_)); }, deadline, error, timedOut);
}

bool NcclCommunicator::reduceScatter(const void* data, void* out, size_t outCount, nccl::DataType type, nccl::RedOp op, Deadline deadline,
                                     std::string& error, bool& timedOut) {
  return run("ncclReduceScatter", [&] { return nccl_.reduceScatter(data, out, outCount, type, op, comm_, static_cast<nccl::Stream>(stream_)); },
             deadline, error, timedOut);
}

bool NcclCommunicator::run(const char* what, const std::function<nccl::Result()>& launch, Deadline deadline, std::string& error, bool& timedOut) {
  timedOut = false;
  if (aborted_) {
    error = std::string(what) + ": the communicator was aborted by an earlier failure";
    return false;
  }
  const nccl::Result r = launch();
  if (r != nccl::kSuccess && r != nccl::kInProgress) {
    error = std::string(what) + ": " + ncclText(nccl_, r);
    abort();
    return false;
  }
  return wait(what, deadline, error, timedOut);
}

}  // namespace braid
