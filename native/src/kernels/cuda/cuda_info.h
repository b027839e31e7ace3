// What the CUDA side of the build offers at run time. Without nvcc at build time these report
// "not compiled" (cuda_stub.cc); with it, the CUDA runtime is linked statically and finds the
// driver, if any, when first asked.
#pragma once
#include <cstddef>

namespace braid {

bool cudaCompiled();
// Visible devices; 0 when CUDA is not compiled in, or there is no driver or GPU.
int cudaDeviceCount();
// out[i] = a[i] + b[i] on the first GPU, through device buffers it allocates. Returns false when
// no device is usable. The first GPU kernel; the CPU kernels are its reference.
bool cudaSumFloat32(float* out, const float* a, const float* b, size_t n);

}  // namespace braid
