// AVX2 + F16C compression kernels; compiled with -mavx2 -mf16c (see CMakeLists.txt).
#define BRAID_ISA_NS isa_avx2
#define BRAID_USE_F16C 1
#include "kernels/compress_impl.h"

namespace braid {
CompressKernels avx2CompressKernels() { return isa_avx2::makeCompressKernels("avx2"); }
}  // namespace braid
