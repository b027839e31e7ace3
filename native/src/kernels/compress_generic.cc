// Baseline compression kernels (see compress_impl.h).
#define BRAID_ISA_NS isa_generic
#include "kernels/compress_impl.h"

namespace braid {
CompressKernels genericCompressKernels() { return isa_generic::makeCompressKernels("generic"); }
}  // namespace braid
