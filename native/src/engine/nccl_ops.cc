#include "engine/nccl_ops.h"

#include <mpi.h>

#include <string>

#include "engine/engine.h"
#include "gpu/device.h"
#include "gpu/nccl_loader.h"

namespace braid {

namespace {

// Every error names the algorithm, so that the caller knows which option it is about.
constexpr const char* kWhat = "algorithm 'nccl': ";

nccl::DataType ncclType(DType t) {
  switch (t) {
    case DType::kFloat32: return nccl::kFloat32;
    case DType::kFloat64: return nccl::kFloat64;
    case DType::kInt32: return nccl::kInt32;
    case DType::kInt64: return nccl::kInt64;
    case DType::kUint8: return nccl::kUint8;
    case DType::kInt8: return nccl::kInt8;
    case DType::kFloat16: return nccl::kFloat16;
    case DType::kBFloat16: return nccl::kBfloat16;
  }
  return nccl::kFloat32;
}

nccl::RedOp ncclOp(RedOp op) {
  switch (op) {
    case RedOp::kSum: return nccl::kSum;
    case RedOp::kProd: return nccl::kProd;
    case RedOp::kMin: return nccl::kMin;
    case RedOp::kMax: return nccl::kMax;
    case RedOp::kAvg: return nccl::kAvg;
  }
  return nccl::kSum;
}

// The communicator's NCCL, made on first use. Every rank first learns whether all can take part
// (one rank failing alone would leave the others waiting for an id that never comes).
NcclCommunicator& ncclFor(CommState& comm, Deadline deadline) {
  if (comm.nccl) {
    if (!comm.nccl->usable()) {
      throw BraidException(ErrorCode::kAborted, std::string(kWhat) + "NCCL on this communicator was aborted after an earlier failure; create a new communicator");
    }
    return *comm.nccl;
  }
  std::string why;
  const DeviceState* device = openedDevice();
  const NcclLoad& load = loadNccl();
  if (device == nullptr || device->kind != DeviceKind::kCuda) {
    why = device == nullptr                       ? "the GPU is not open (comm.device opens it)"
          : device->kind == DeviceKind::kHost ? "it needs a GPU, and this process's device is host memory (BRAID_DEVICE=host)"
                                              : device->error;
  } else if (load.library == nullptr) {
    why = load.error;
  } else {
    deviceBindThread(why);
  }
  int firstFailing = why.empty() ? comm.size : comm.rank;
  MPI_Allreduce(MPI_IN_PLACE, &firstFailing, 1, MPI_INT, MPI_MIN, comm.control);
  if (firstFailing < comm.size) {
    throw BraidException(ErrorCode::kBackendUnavailable, std::string(kWhat) + (!why.empty() ? why
                                                                                          : "rank " + std::to_string(firstFailing) +
                                                                                                " cannot run NCCL (its error says why)"));
  }
  nccl::UniqueId id{};
  std::string idError;
  int haveId = comm.rank == 0 ? NcclCommunicator::uniqueId(*load.library, id, idError) : 1;
  MPI_Bcast(&haveId, 1, MPI_INT, 0, comm.control);
  if (!haveId) {
    throw BraidException(ErrorCode::kBackendUnavailable, kWhat + (comm.rank == 0 ? idError : std::string("rank 0 could not make NCCL's unique id")));
  }
  MPI_Bcast(id.internal, sizeof(id.internal), MPI_BYTE, 0, comm.control);
  bool timedOut = false;
  comm.nccl = NcclCommunicator::join(*load.library, device->index, comm.size, comm.rank, id, deadline, why, timedOut);
  if (!comm.nccl) throw BraidException(timedOut ? ErrorCode::kTimeout : ErrorCode::kBackendUnavailable, kWhat + why);
  comm.ncclMade.store(true);
  return *comm.nccl;
}

// Runs `call` on the communicator's NCCL against the op's deadline.
template <class Call>
void onNccl(AlgorithmContext& c, Call call) {
  const Deadline deadline = c.comm.mpi->deadline();
  NcclCommunicator& n = ncclFor(c.comm, deadline);
  std::string error;
  bool timedOut = false;
  if (!call(n, deadline, error, timedOut)) throw BraidException(timedOut ? ErrorCode::kTimeout : ErrorCode::kAborted, error);
}

}  // namespace

void runNcclAllreduce(AlgorithmContext& c) {
  if (c.op.count == 0) return;
  onNccl(c, [&](NcclCommunicator& n, Deadline d, std::string& e, bool& t) {
    // Host arrays: staged through pinned memory, chunk by chunk.
    if (!c.op.onDevice) return n.allReduceStaged(c.op.data, c.op.count, dtypeSize(c.op.dtype), ncclType(c.op.dtype), ncclOp(c.op.redop), d, e, t);
    return n.allReduce(c.op.data, c.op.count, ncclType(c.op.dtype), ncclOp(c.op.redop), d, e, t);
  });
}

void runNcclBroadcast(AlgorithmContext& c) {
  if (c.op.count == 0) return;
  onNccl(c, [&](NcclCommunicator& n, Deadline d, std::string& e, bool& t) {
    return n.broadcast(c.op.data, c.op.count, ncclType(c.op.dtype), c.op.root, d, e, t);
  });
}

void runNcclAllgather(AlgorithmContext& c) {
  if (c.op.count == 0) return;
  onNccl(c, [&](NcclCommunicator& n, Deadline d, std::string& e, bool& t) {
    return n.allGather(c.op.data, c.op.out, c.op.count, ncclType(c.op.dtype), d, e, t);
  });
}

void runNcclReduceScatter(AlgorithmContext& c) {
  if (c.op.outCount == 0) return;
  onNccl(c, [&](NcclCommunicator& n, Deadline d, std::string& e, bool& t) {
    // NCCL has no average for reduce-scatter before 2.10; 2.14+ (Braid's minimum) has ncclAvg.
    return n.reduceScatter(c.op.data, c.op.out, c.op.outCount, ncclType(c.op.dtype), ncclOp(c.op.redop), d, e, t);
  });
}

}  // namespace braid
