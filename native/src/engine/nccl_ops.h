// The collectives on DeviceBuffers (Algorithm::kNccl): NCCL over the communicator's ranks. One
// NCCL communicator per Braid communicator (a split's has its own), made by the first such op on
// the engine thread from rank 0's unique id sent over MPI, on the GPU gpu/device.h opened; every
// op waits for NCCL against the op's deadline and aborts the NCCL communicator when it passes.
//
// Cost: NCCL's own (ring or tree over NVLink, PCIe or the network); Braid adds the wait's polling
// (1 us at first, doubling to 1 ms) and nothing else: the buffers never leave the GPU. An
// all-reduce of host arrays with 'nccl' is staged (NcclCommunicator::allReduceStaged): per 4 MiB
// chunk a memcpy into pinned memory, H2D, NCCL, D2H and a memcpy back, three chunks in flight on
// three streams, so its bound is max(H2D + D2H copy time, NCCL time) plus the first and last
// chunk's latency.
#pragma once
#include "engine/algorithm_table.h"

namespace braid {

void runNcclAllreduce(AlgorithmContext& c);
void runNcclBroadcast(AlgorithmContext& c);
void runNcclAllgather(AlgorithmContext& c);
void runNcclReduceScatter(AlgorithmContext& c);

}  // namespace braid
