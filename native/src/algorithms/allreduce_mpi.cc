// The transport library's own all-reduce (MPI_Allreduce over MPI), kept as the yardstick that
// the benchmarks put ours beside.
//
// Cost: whatever the library picks (Open MPI's tuned component chooses among recursive doubling,
// ring and Rabenseifner by size). Float16 / bfloat16 use user-defined MPI ops over our kernels.
// Bitwise agreement across ranks is the library's: Open MPI's algorithms combine commutative ops
// so that all ranks agree for ordinary values.
#include "algorithms/collective.h"

namespace braid {

void allreduceMpi(CollectiveArgs& args, void* buf, size_t count) {
  args.transport.nativeAllreduce(buf, count, args.dtype, args.op);
}

}  // namespace braid
