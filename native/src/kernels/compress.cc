// Dispatch for the compression kernels, and the parts built on top of the element-wise loops:
// top-k selection, random-k sampling, sparse gather/scatter and PowerSGD's linear algebra.
#include "kernels/compress.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_set>
#include <vector>

#include "kernels/compress_scalar.h"
#include "kernels/reduce.h"

namespace braid {

CompressKernels genericCompressKernels();
#if defined(BRAID_HAVE_X86_VARIANTS)
CompressKernels avx2CompressKernels();
CompressKernels avx512CompressKernels();
#endif

// The same variant as the reductions (so BRAID_ISA forces both).
const CompressKernels& compressKernels() {
  static const CompressKernels kernels = [] {
    const char* isa = activeKernels().isa;
#if defined(BRAID_HAVE_X86_VARIANTS)
    if (std::strcmp(isa, "avx512") == 0) return avx512CompressKernels();
    if (std::strcmp(isa, "avx2") == 0) return avx2CompressKernels();
#endif
    (void)isa;
    return genericCompressKernels();
  }();
  return kernels;
}

namespace compress {

namespace {
// |x| with NaN ordered below everything, so a NaN is chosen only when nothing else is left.
inline float magnitude(float v) { return std::isnan(v) ? -1.0f : std::fabs(v); }
}  // namespace

void topk(const float* x, size_t n, size_t k, uint32_t* indices, float* values) {
  if (k == 0) return;
  if (k >= n) {
    for (size_t i = 0; i < n; ++i) {
      indices[i] = static_cast<uint32_t>(i);
      values[i] = x[i];
    }
    return;
  }
  const CompressKernels& kernels = compressKernels();
  // 1. A threshold from a strided sample, aimed at keeping about 1.5 k (+ slack) candidates.
  const size_t sampleSize = std::min<size_t>(n, 65536);
  std::vector<float> sample(sampleSize);
  for (size_t s = 0; s < sampleSize; ++s) sample[s] = magnitude(x[(s * n) / sampleSize]);
  const double keepShare = std::min(1.0, (1.5 * static_cast<double>(k) + 256.0) / static_cast<double>(n));
  size_t rank = static_cast<size_t>(keepShare * static_cast<double>(sampleSize));
  rank = std::min(rank, sampleSize - 1);
  std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(rank), sample.end(), std::greater<float>());
  float threshold = sample[rank];
  // 2. Candidates: every index with |x| > threshold (all of the top k when there are >= k).
  const size_t cap = std::min(n, 3 * k + 4096);
  std::vector<uint32_t> candidates(cap);
  size_t count = 0;
  for (int attempt = 0;; ++attempt) {
    if (threshold < 0 || attempt >= 8) {
      // Too few elements above any positive threshold (zeros, NaNs): everyone is a candidate.
      candidates.resize(n);
      for (size_t i = 0; i < n; ++i) candidates[i] = static_cast<uint32_t>(i);
      count = n;
      break;
    }
    count = kernels.selectAbove(x, n, threshold, candidates.data(), cap);
    if (count >= k && count <= cap) break;
    // Too many: raise the bar; too few: lower it.
    threshold = count > cap ? (threshold > 0 ? threshold * 2 : 1e-30f) : (threshold > 1e-30f ? threshold / 4 : -1.0f);
  }
  // 3. The k-th largest magnitude among the candidates; take everything above it, then ties
  //    in index order.
  std::vector<float> mags(count);
  for (size_t c = 0; c < count; ++c) mags[c] = magnitude(x[candidates[c]]);
  std::vector<float> order(mags);
  std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k - 1), order.end(), std::greater<float>());
  const float kth = order[k - 1];
  size_t above = 0;
  for (size_t c = 0; c < count; ++c) above += mags[c] > kth ? 1 : 0;
  size_t tiesLeft = k - above;
  size_t out = 0;
  for (size_t c = 0; c < count && out < k; ++c) {
    const bool take = mags[c] > kth || (mags[c] == kth && tiesLeft > 0);
    if (!take) continue;
    if (!(mags[c] > kth)) --tiesLeft;
    indices[out] = candidates[c];
    values[out] = x[candidates[c]];
    ++out;
  }
}

void randomk(size_t n, size_t k, uint32_t seedA, uint32_t seedB, uint32_t* indices) {
  if (k >= n) {
    for (size_t i = 0; i < n; ++i) indices[i] = static_cast<uint32_t>(i);
    return;
  }
  uint32_t draw = 0;
  auto uniformBelow = [&](uint64_t bound) {
    // 48 random bits scaled to [0, bound): bias below 2^-16 for bounds up to 2^32.
    const uint64_t hi = rules::mix32(rules::mix32(draw ^ seedA) + seedB);
    const uint64_t lo = rules::mix32(rules::mix32(draw ^ seedB) + seedA) >> 16;
    ++draw;
    return static_cast<uint64_t>((static_cast<unsigned __int128>((hi << 16) | lo) * bound) >> 48);
  };
  if (k * 16 <= n) {
    // Floyd's algorithm: k draws, no rejection loop.
    std::unordered_set<uint32_t> chosen;
    chosen.reserve(k * 2);
    for (size_t j = n - k; j < n; ++j) {
      const uint32_t t = static_cast<uint32_t>(uniformBelow(j + 1));
      chosen.insert(chosen.count(t) ? static_cast<uint32_t>(j) : t);
    }
    size_t out = 0;
    for (uint32_t v : chosen) indices[out++] = v;
    std::sort(indices, indices + k);
    return;
  }
  // Selection sampling (Knuth's algorithm S): one pass, exactly k, already in order.
  size_t out = 0;
  for (size_t i = 0; i < n && out < k; ++i) {
    if (uniformBelow(n - i) < k - out) indices[out++] = static_cast<uint32_t>(i);
  }
}

void gather(const float* x, const uint32_t* indices, size_t k, float* values) {
  for (size_t i = 0; i < k; ++i) values[i] = x[indices[i]];
}

bool scatter(const uint32_t* indices, const float* values, size_t k, float* out, size_t n, bool accumulate) {
  for (size_t i = 0; i < k; ++i) {
    if (indices[i] >= n || (i > 0 && indices[i] <= indices[i - 1])) return false;
  }
  if (accumulate) {
    for (size_t i = 0; i < k; ++i) out[indices[i]] += values[i];
  } else {
    for (size_t i = 0; i < k; ++i) out[indices[i]] = values[i];
  }
  return true;
}

void powerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt) {
  const CompressKernels& kernels = compressKernels();
  for (size_t i = 0; i < rows; ++i)
    for (size_t c = 0; c < r; ++c) pt[c * rows + i] = kernels.dot(m + i * cols, qt + c * cols, cols);
}

void powerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt) {
  const CompressKernels& kernels = compressKernels();
  std::fill(qt, qt + r * cols, 0.0f);
  for (size_t i = 0; i < rows; ++i)
    for (size_t c = 0; c < r; ++c) kernels.axpy(pt[c * rows + i], m + i * cols, qt + c * cols, cols);
}

void orthonormalize(float* pt, size_t r, size_t rows) {
  // Modified Gram-Schmidt; a column that vanishes stays zero (its share of M is then dropped).
  const CompressKernels& kernels = compressKernels();
  for (size_t c = 0; c < r; ++c) {
    float* col = pt + c * rows;
    for (size_t prev = 0; prev < c; ++prev) {
      const float* p = pt + prev * rows;
      kernels.axpy(-kernels.dot(col, p, rows), p, col, rows);
    }
    const float norm = std::sqrt(kernels.dot(col, col, rows));
    if (norm > 1e-30f) {
      const float inverse = 1.0f / norm;
      for (size_t i = 0; i < rows; ++i) col[i] *= inverse;
    } else {
      std::fill(col, col + rows, 0.0f);
    }
  }
}

void powerReconstruct(const float* pt, const float* qt, size_t r, size_t rows, size_t cols, float* out, bool accumulate) {
  const CompressKernels& kernels = compressKernels();
  for (size_t i = 0; i < rows; ++i) {
    float* row = out + i * cols;
    if (!accumulate) std::fill(row, row + cols, 0.0f);
    for (size_t c = 0; c < r; ++c) kernels.axpy(pt[c * rows + i], qt + c * cols, row, cols);
  }
}

}  // namespace compress
}  // namespace braid
