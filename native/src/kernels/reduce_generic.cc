// Baseline variant: whatever the build's default target is (SSE2 on x86-64), and the only one
// on other architectures.
#define BRAID_ISA_NS isa_generic
#include "kernels/reduce_impl.h"

namespace braid {
const ReduceKernels& genericKernels() {
  static const ReduceKernels k = isa_generic::makeKernels("generic");
  return k;
}
}  // namespace braid
