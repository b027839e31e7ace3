// AVX-512 (F + BW) variant; this file alone is compiled with -mavx512f -mavx512bw (CMakeLists.txt).
#define BRAID_ISA_NS isa_avx512
#define BRAID_USE_F16C 1
#include "kernels/reduce_impl.h"

namespace braid {
const ReduceKernels& avx512Kernels() {
  static const ReduceKernels k = isa_avx512::makeKernels("avx512");
  return k;
}
}  // namespace braid
