// Built when nvcc is absent: the CUDA entry points report that there is no CUDA.
#include "kernels/cuda/cuda_info.h"

namespace braid {
bool cudaCompiled() { return false; }
int cudaDeviceCount() { return 0; }
bool cudaSumFloat32(float*, const float*, const float*, size_t) { return false; }
}  // namespace braid

#include "kernels/cuda/compress_cuda.h"

namespace braid {
bool cudaEncodeHalf(const float*, uint16_t*, size_t, bool) { return false; }
bool cudaDecodeHalf(const uint16_t*, float*, size_t, bool) { return false; }
bool cudaEncodeInt8(const float*, size_t, size_t, float*, int8_t*) { return false; }
bool cudaDecodeInt8(const int8_t*, const float*, size_t, size_t, float*) { return false; }
bool cudaEncodeSign(const float*, size_t, uint8_t*) { return false; }
bool cudaDecodeSign(const uint8_t*, size_t, float, float*) { return false; }
bool cudaEncodeQsgd(const float*, size_t, float, int32_t, uint32_t, uint32_t, int16_t*) { return false; }
bool cudaDecodeQsgd(const int16_t*, size_t, float, int32_t, float*) { return false; }
bool cudaTopk(const float*, size_t, size_t, uint32_t*, float*) { return false; }
bool cudaGather(const float*, size_t, const uint32_t*, size_t, float*) { return false; }
bool cudaErrorFeedback(const float*, const float*, float*, size_t) { return false; }
bool cudaPowerP(const float*, size_t, size_t, const float*, size_t, float*) { return false; }
bool cudaPowerQ(const float*, size_t, size_t, const float*, size_t, float*) { return false; }
namespace gpu {
bool encodeHalf(const float*, uint16_t*, size_t, bool, void*) { return false; }
bool decodeHalf(const uint16_t*, float*, size_t, bool, void*) { return false; }
bool encodeInt8(const float*, size_t, size_t, float*, int8_t*, void*) { return false; }
bool decodeInt8(const int8_t*, const float*, size_t, size_t, float*, void*) { return false; }
bool encodeSign(const float*, size_t, uint8_t*, void*) { return false; }
bool decodeSign(const uint8_t*, size_t, float, float*, void*) { return false; }
bool encodeQsgd(const float*, size_t, float, int32_t, uint32_t, uint32_t, int16_t*, void*) { return false; }
bool decodeQsgd(const int16_t*, size_t, float, float*, void*) { return false; }
bool topk(const float*, size_t, size_t, uint32_t*, float*, void*, void*) { return false; }
size_t topkWorkspaceBytes(size_t) { return 0; }
bool gather(const float*, const uint32_t*, size_t, float*, void*) { return false; }
bool errorFeedback(const float*, const float*, float*, size_t, void*) { return false; }
bool powerP(const float*, size_t, size_t, const float*, size_t, float*, void*) { return false; }
bool powerQ(const float*, size_t, size_t, const float*, size_t, float*, void*) { return false; }
bool decodeHalfInto(const uint16_t*, float*, size_t, bool, bool, void*) { return false; }
bool decodeInt8Into(const int8_t*, const float*, size_t, size_t, float*, bool, void*) { return false; }
bool decodeSignInto(const uint8_t*, size_t, float, float*, bool, void*) { return false; }
bool encodeQsgdCodes(const float*, size_t, float, int32_t, uint32_t, uint32_t, void*, int, void*) { return false; }
bool decodeQsgdInto(const void*, int, size_t, float, float*, bool, void*) { return false; }
bool scatterInto(const uint32_t*, const float*, size_t, float*, size_t, bool, uint32_t*, void*) { return false; }
bool add(const float*, const float*, float*, size_t, void*) { return false; }
bool scale(float*, size_t, double, void*) { return false; }
bool powerReconstruct(const float*, const float*, size_t, size_t, size_t, float*, bool, void*) { return false; }
bool sumSquares(const float*, size_t, double*, void*) { return false; }
bool sumAbs(const float*, size_t, double*, void*) { return false; }
bool checksums(const uint8_t*, size_t, size_t, size_t, uint32_t*, void*) { return false; }
bool zero(void*, size_t, void*) { return false; }
bool copy(void*, const void*, size_t, void*) { return false; }
bool synchronize(void*) { return false; }
}  // namespace gpu
}  // namespace braid
