// AVX-512 compression kernels; compiled with -mavx512f -mavx512bw (see CMakeLists.txt).
#define BRAID_ISA_NS isa_avx512
#define BRAID_USE_F16C 1
#define BRAID_USE_AVX512 1
#include "kernels/compress_impl.h"

namespace braid {
CompressKernels avx512CompressKernels() { return isa_avx512::makeCompressKernels("avx512"); }
}  // namespace braid
