// Gradient-compression kernels (the CPU side; CUDA twins in cuda/compress.cu follow the same
// rules from compress_scalar.h). The element-wise loops are compiled per ISA and picked at run
// time with the reductions' choice (BRAID_ISA); selection and orthogonalization sit on top.
#pragma once
#include <cstddef>
#include <cstdint>

namespace braid {

struct CompressKernels {
  const char* isa;
  void (*toHalf)(const float* in, uint16_t* out, size_t n);
  void (*fromHalf)(const uint16_t* in, float* out, size_t n, bool accumulate);
  void (*toBfloat16)(const float* in, uint16_t* out, size_t n);
  void (*fromBfloat16)(const uint16_t* in, float* out, size_t n, bool accumulate);
  double (*sumSquares)(const float* x, size_t n);
  double (*sumAbs)(const float* x, size_t n);
  void (*int8Encode)(const float* x, size_t n, size_t block, float* scales, int8_t* codes);
  void (*int8Decode)(const int8_t* codes, const float* scales, size_t n, size_t block, float* out, bool accumulate);
  void (*signEncode)(const float* x, size_t n, uint8_t* bits);
  void (*signDecode)(const uint8_t* bits, size_t n, float scale, float* out, bool accumulate);
  void (*qsgdEncode8)(const float* x, size_t n, float norm, int32_t levels, uint32_t seedA, uint32_t seedB, int8_t* codes);
  void (*qsgdEncode16)(const float* x, size_t n, float norm, int32_t levels, uint32_t seedA, uint32_t seedB, int16_t* codes);
  void (*qsgdDecode8)(const int8_t* codes, size_t n, float norm, int32_t levels, float* out, bool accumulate);
  void (*qsgdDecode16)(const int16_t* codes, size_t n, float norm, int32_t levels, float* out, bool accumulate);
  // Indices (ascending) of the elements with |x| > threshold, at most `cap`; returns how many
  // there are in all (which may exceed cap: then only cap were written).
  size_t (*selectAbove)(const float* x, size_t n, float threshold, uint32_t* indices, size_t cap);
  // out = a - b and out = a + b (error feedback).
  void (*subtract)(const float* a, const float* b, float* out, size_t n);
  void (*add)(const float* a, const float* b, float* out, size_t n);
  float (*dot)(const float* a, const float* b, size_t n);
  void (*axpy)(float alpha, const float* x, float* y, size_t n);  // y += alpha * x
  uint32_t (*checksum)(const uint8_t* bytes, size_t n);
};

const CompressKernels& compressKernels();

namespace compress {

// Exactly k indices (ascending) of the largest |x|, ties to the lower index; NaN never chosen
// (k larger than the non-NaN count takes NaN positions last, lowest first). O(n): a sampled
// threshold, one vectorized filtering pass, then a selection among the survivors.
void topk(const float* x, size_t n, size_t k, uint32_t* indices, float* values);
// k distinct indices (ascending) drawn uniformly from [0, n) by (seedA, seedB).
void randomk(size_t n, size_t k, uint32_t seedA, uint32_t seedB, uint32_t* indices);
void gather(const float* x, const uint32_t* indices, size_t k, float* values);
// out[indices[i]] (+)= values[i]; false when an index is >= n or the indices do not ascend.
bool scatter(const uint32_t* indices, const float* values, size_t k, float* out, size_t n, bool accumulate);
// PowerSGD (Vogels et al. 2019) on M (rows x cols, row-major), rank r, with P and Q kept
// transposed (pt: r x rows, qt: r x cols) so every inner loop runs along contiguous memory.
void powerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt);     // P = M Q
void powerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt);     // Q = M^T P
void orthonormalize(float* pt, size_t r, size_t rows);                                         // columns of P
void powerReconstruct(const float* pt, const float* qt, size_t r, size_t rows, size_t cols, float* out, bool accumulate);

}  // namespace compress
}  // namespace braid
