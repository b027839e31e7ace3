#include "kernels/reduce.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace braid {

const ReduceKernels& genericKernels();
#if defined(BRAID_HAVE_X86_VARIANTS)
const ReduceKernels& avx2Kernels();
const ReduceKernels& avx512Kernels();
#endif

const char* dtypeName(DType t) {
  static const char* names[] = {"float32", "float64", "int32", "int64",
                                "uint8",   "int8",    "float16", "bfloat16"};
  int i = static_cast<int>(t);
  return i >= 0 && i < kNumDTypes ? names[i] : "unknown";
}

const char* redOpName(RedOp op) {
  static const char* names[] = {"sum", "prod", "min", "max", "avg"};
  int i = static_cast<int>(op);
  return i >= 0 && i < kNumRedOps ? names[i] : "unknown";
}

const ReduceKernels* kernelsFor(const char* isa) {
  if (std::strcmp(isa, "generic") == 0) return &genericKernels();
#if defined(BRAID_HAVE_X86_VARIANTS)
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx2") == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"))
    return &avx2Kernels();
  if (std::strcmp(isa, "avx512") == 0 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("f16c"))
    return &avx512Kernels();
#endif
  return nullptr;
}

static const ReduceKernels& pickKernels() {
  if (const char* forced = std::getenv("BRAID_ISA")) {
    if (const ReduceKernels* k = kernelsFor(forced)) return *k;
  }
  for (const char* isa : {"avx512", "avx2"}) {
    if (const ReduceKernels* k = kernelsFor(isa)) return *k;
  }
  return genericKernels();
}

const ReduceKernels& activeKernels() {
  static const ReduceKernels& k = pickKernels();
  return k;
}

void finishAverage(DType t, void* buf, size_t n, int ranks) {
  ScaleFn fn = activeKernels().divide[static_cast<int>(t)];
  if (fn != nullptr && n > 0) fn(buf, n, static_cast<double>(ranks));
}

}  // namespace braid
