// Built when nvcc is absent: the CUDA entry points report that there is no CUDA.
#include "kernels/cuda/cuda_info.h"

namespace braid {
bool cudaCompiled() { return false; }
int cudaDeviceCount() { return 0; }
bool cudaSumFloat32(float*, const float*, const float*, size_t) { return false; }
}  // namespace braid
