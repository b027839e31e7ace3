// Element types and reduce operations. The numeric values cross the addon boundary; keep them in
// sync with packages/collectives/src/codes.ts.
#pragma once
#include <cstddef>
#include <cstdint>

namespace braid {

enum class DType : int {
  kFloat32 = 0,
  kFloat64 = 1,
  kInt32 = 2,
  kInt64 = 3,
  kUint8 = 4,
  kInt8 = 5,
  kFloat16 = 6,
  kBFloat16 = 7,
};
constexpr int kNumDTypes = 8;

enum class RedOp : int { kSum = 0, kProd = 1, kMin = 2, kMax = 3, kAvg = 4 };
constexpr int kNumRedOps = 5;

inline size_t dtypeSize(DType t) {
  switch (t) {
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kUint8: return 1;
    case DType::kInt8: return 1;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
  }
  return 0;
}

inline bool isFloating(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat64 || t == DType::kFloat16 ||
         t == DType::kBFloat16;
}

const char* dtypeName(DType t);
const char* redOpName(RedOp op);

}  // namespace braid
