#include "gpu/nccl_comm.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>

#include "common/parallel_copy.h"

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
  return waitEvent(what, nullptr, deadline, error, timedOut);
}

// `event` null: the communicator's stream.
bool NcclCommunicator::waitEvent(const char* what, void* event, Deadline deadline, std::string& error, bool& timedOut) {
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
      const cudaError_t q = event != nullptr ? cudaEventQuery(static_cast<cudaEvent_t>(event)) : cudaStreamQuery(static_cast<cudaStream_t>(stream_));
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

namespace {

// The staged all-reduce's buffers: pinned host and device memory for each chunk in flight, two
// copy streams (in and out, so that copying chunk k + 1 in overlaps chunk k's reduction and chunk
// k - 1's return) and the events that order them; freed on scope exit. The copies between the
// caller's memory and the pinned buffers, the host's share of the work, run on a few threads.
struct Staging {
  ParallelCopy copier{ParallelCopy::defaultHelpers()};
  static constexpr int kSlots = 3;
  void* pinned[kSlots] = {};
  void* device[kSlots] = {};
  cudaEvent_t copiedIn[kSlots] = {}, reduced[kSlots] = {}, copiedOut[kSlots] = {};
  cudaStream_t in = nullptr, out = nullptr;
  bool make(size_t bytes, std::string& error) {
    if (!cudaOk(cudaStreamCreateWithFlags(&in, cudaStreamNonBlocking), "cudaStreamCreate", error) ||
        !cudaOk(cudaStreamCreateWithFlags(&out, cudaStreamNonBlocking), "cudaStreamCreate", error))
      return false;
    for (int s = 0; s < kSlots; ++s) {
      if (!cudaOk(cudaHostAlloc(&pinned[s], bytes, cudaHostAllocDefault), "cudaHostAlloc", error) ||
          !cudaOk(cudaMalloc(&device[s], bytes), "cudaMalloc", error) ||
          !cudaOk(cudaEventCreateWithFlags(&copiedIn[s], cudaEventDisableTiming), "cudaEventCreate", error) ||
          !cudaOk(cudaEventCreateWithFlags(&reduced[s], cudaEventDisableTiming), "cudaEventCreate", error) ||
          !cudaOk(cudaEventCreateWithFlags(&copiedOut[s], cudaEventDisableTiming), "cudaEventCreate", error))
        return false;
    }
    return true;
  }
  ~Staging() {
    if (in != nullptr) cudaStreamSynchronize(in);
    if (out != nullptr) cudaStreamSynchronize(out);
    for (int s = 0; s < kSlots; ++s) {
      if (pinned[s] != nullptr) cudaFreeHost(pinned[s]);
      if (device[s] != nullptr) cudaFree(device[s]);
      for (cudaEvent_t e : {copiedIn[s], reduced[s], copiedOut[s]})
        if (e != nullptr) cudaEventDestroy(e);
    }
    if (in != nullptr) cudaStreamDestroy(in);
    if (out != nullptr) cudaStreamDestroy(out);
  }
};

// 4 MiB chunks: large enough for NCCL's bandwidth, small enough that three stay cheap to pin.
constexpr size_t kStagedChunkBytes = 4u << 20;

}  // namespace

bool NcclCommunicator::allReduceStaged(void* host, size_t count, size_t elementBytes, nccl::DataType type, nccl::RedOp op, Deadline deadline,
                                       std::string& error, bool& timedOut) {
  timedOut = false;
  if (aborted_) {
    error = "ncclAllReduce (staged): the communicator was aborted by an earlier failure";
    return false;
  }
  if (count == 0) return true;
  const size_t chunk = std::max<size_t>(1, kStagedChunkBytes / elementBytes);
  const size_t chunks = (count + chunk - 1) / chunk;
  const size_t slotBytes = std::min(count, chunk) * elementBytes;
  if (!staging_ || stagingBytes_ < slotBytes) {
    staging_.reset();
    auto made = std::make_shared<Staging>();
    // Sized for a whole chunk, so that later calls of any size reuse it.
    if (!made->make(chunk * elementBytes, error)) return false;
    staging_ = made;
    stagingBytes_ = chunk * elementBytes;
  }
  Staging& st = *static_cast<Staging*>(staging_.get());
  uint8_t* data = static_cast<uint8_t*>(host);
  auto span = [&](size_t k) { return std::min(chunk, count - k * chunk); };
  // Chunk k's result, back in the caller's memory once its copy out is done.
  auto finish = [&](size_t k) {
    const int s = static_cast<int>(k % Staging::kSlots);
    if (!waitEvent("ncclAllReduce (staged): copying back", st.copiedOut[s], deadline, error, timedOut)) return false;
    st.copier.copy(data + k * chunk * elementBytes, st.pinned[s], span(k) * elementBytes);
    return true;
  };
  for (size_t k = 0; k < chunks; ++k) {
    const int s = static_cast<int>(k % Staging::kSlots);
    if (k >= Staging::kSlots && !finish(k - Staging::kSlots)) return false;
    const size_t bytes = span(k) * elementBytes;
    st.copier.copy(st.pinned[s], data + k * chunk * elementBytes, bytes);
    if (!cudaOk(cudaMemcpyAsync(st.device[s], st.pinned[s], bytes, cudaMemcpyHostToDevice, st.in), "cudaMemcpyAsync (to the GPU)", error) ||
        !cudaOk(cudaEventRecord(st.copiedIn[s], st.in), "cudaEventRecord", error) ||
        !cudaOk(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream_), st.copiedIn[s], 0), "cudaStreamWaitEvent", error)) {
      abort();
      return false;
    }
    const nccl::Result r = nccl_.allReduce(st.device[s], st.device[s], span(k), type, op, comm_, static_cast<nccl::Stream>(stream_));
    if (r != nccl::kSuccess && r != nccl::kInProgress) {
      error = "ncclAllReduce (staged): " + ncclText(nccl_, r);
      abort();
      return false;
    }
    if (!cudaOk(cudaEventRecord(st.reduced[s], static_cast<cudaStream_t>(stream_)), "cudaEventRecord", error) ||
        !cudaOk(cudaStreamWaitEvent(st.out, st.reduced[s], 0), "cudaStreamWaitEvent", error) ||
        !cudaOk(cudaMemcpyAsync(st.pinned[s], st.device[s], bytes, cudaMemcpyDeviceToHost, st.out), "cudaMemcpyAsync (from the GPU)", error) ||
        !cudaOk(cudaEventRecord(st.copiedOut[s], st.out), "cudaEventRecord", error)) {
      abort();
      return false;
    }
  }
  for (size_t k = chunks > Staging::kSlots ? chunks - Staging::kSlots : 0; k < chunks; ++k)
    if (!finish(k)) return false;
  return true;
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
