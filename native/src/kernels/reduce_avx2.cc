// AVX2 + F16C variant; this file alone is compiled with -mavx2 -mf16c (see CMakeLists.txt).
#define BRAID_ISA_NS isa_avx2
#define BRAID_USE_F16C 1
#include "kernels/reduce_impl.h"

namespace braid {
const ReduceKernels& avx2Kernels() {
  static const ReduceKernels k = isa_avx2::makeKernels("avx2");
  return k;
}
}  // namespace braid
