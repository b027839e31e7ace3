// Element-wise reductions, chosen at run time for the CPU's widest vector unit (AVX-512, AVX2, or
// the baseline x86-64 / portable build). All variants produce the same bits: IEEE add, multiply,
// min and max are exact per element, and float16 / bfloat16 are widened to float32, combined,
// and rounded to nearest even the same way in every variant.
#pragma once
#include <cstddef>

#include "kernels/dtype.h"

namespace braid {

// out[i] = a[i] (op) b[i]; out may alias a or b. 'avg' combines as 'sum'; finishAverage divides.
using ReduceFn = void (*)(void* out, const void* a, const void* b, size_t n);
// buf[i] = buf[i] / divisor, rounded once in the element type (float16/bfloat16 via float32).
using ScaleFn = void (*)(void* buf, size_t n, double divisor);

struct ReduceKernels {
  const char* isa;
  ReduceFn reduce[kNumDTypes][kNumRedOps];
  ScaleFn divide[kNumDTypes];  // null for integer types
};

// The kernels in use: picked once from the CPU's features; BRAID_ISA=generic|avx2|avx512 forces
// a variant (for tests and benchmarks; an unsupported one falls back to the best available).
const ReduceKernels& activeKernels();
// A specific variant, or nullptr when this CPU or build lacks it.
const ReduceKernels* kernelsFor(const char* isa);

inline void reduceInto(DType t, RedOp op, void* out, const void* a, const void* b, size_t n) {
  activeKernels().reduce[static_cast<int>(t)][static_cast<int>(op)](out, a, b, n);
}
void finishAverage(DType t, void* buf, size_t n, int ranks);

}  // namespace braid
