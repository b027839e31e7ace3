// The reduction loops, written plainly so that the compiler vectorizes them for whatever ISA the
// including file is compiled for. Each including file defines BRAID_ISA_NS first: the templates
// must live in a namespace of their own per ISA, or the linker would keep one copy for all.
#pragma once
#ifndef BRAID_ISA_NS
#error "define BRAID_ISA_NS before including reduce_impl.h"
#endif
#include <cstdint>

#include "kernels/half.h"
#include "kernels/reduce.h"

#if defined(BRAID_USE_F16C)
#include <immintrin.h>
#endif

namespace braid {
namespace BRAID_ISA_NS {

struct OpSum {
  template <class T> static T apply(T a, T b) { return a + b; }
};
struct OpProd {
  template <class T> static T apply(T a, T b) { return a * b; }
};
// NaN propagates (a NaN operand wins), as numpy.minimum / maximum do.
struct OpMin {
  template <class T> static T apply(T a, T b) { return (a < b || a != a) ? a : b; }
};
struct OpMax {
  template <class T> static T apply(T a, T b) { return (a > b || a != a) ? a : b; }
};

// Integer sums and products wrap (two's complement), computed unsigned to avoid signed overflow.
template <class T> struct Unsigned { using type = T; };
template <> struct Unsigned<int32_t> { using type = uint32_t; };
template <> struct Unsigned<int64_t> { using type = uint64_t; };
template <> struct Unsigned<int8_t> { using type = uint8_t; };

// The algorithms reduce in place (out == a or out == b) as often as not: each case gets a loop
// whose pointers are truly unaliased, so that the vectorizer needs no overlap check (which an
// in-place call would fail, falling back to scalar code) and no pointer is declared __restrict
// while it aliases another.
template <class T, class Op>
void reduceLoop(void* out, const void* a, const void* b, size_t n) {
  if (out == a && out != b) {
    T* __restrict o = static_cast<T*>(out);
    const T* __restrict y = static_cast<const T*>(b);
    for (size_t i = 0; i < n; ++i) o[i] = Op::apply(o[i], y[i]);
  } else if (out == b && out != a) {
    T* __restrict o = static_cast<T*>(out);
    const T* __restrict x = static_cast<const T*>(a);
    for (size_t i = 0; i < n; ++i) o[i] = Op::apply(x[i], o[i]);
  } else if (out != a) {
    T* __restrict o = static_cast<T*>(out);
    const T* __restrict x = static_cast<const T*>(a);
    const T* __restrict y = static_cast<const T*>(b);
    for (size_t i = 0; i < n; ++i) o[i] = Op::apply(x[i], y[i]);
  } else {
    T* o = static_cast<T*>(out);  // out == a == b
    for (size_t i = 0; i < n; ++i) o[i] = Op::apply(o[i], o[i]);
  }
}

template <class T, class Op>
void reduceIntLoop(void* out, const void* a, const void* b, size_t n) {
  using U = typename Unsigned<T>::type;
  T* o = static_cast<T*>(out);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = static_cast<T>(Op::apply(static_cast<U>(x[i]), static_cast<U>(y[i])));
}

template <class T>
void reduceIntMin(void* out, const void* a, const void* b, size_t n) {
  T* o = static_cast<T*>(out);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = x[i] < y[i] ? x[i] : y[i];
}
template <class T>
void reduceIntMax(void* out, const void* a, const void* b, size_t n) {
  T* o = static_cast<T*>(out);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = x[i] > y[i] ? x[i] : y[i];
}

// float16: widen, combine in float32, round to nearest even.
template <class Op>
void reduceF16(void* out, const void* a, const void* b, size_t n) {
  uint16_t* o = static_cast<uint16_t*>(out);
  const uint16_t* x = static_cast<const uint16_t*>(a);
  const uint16_t* y = static_cast<const uint16_t*>(b);
  size_t i = 0;
#if defined(BRAID_USE_F16C)
  for (; i + 8 <= n; i += 8) {
    __m256 fx = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    __m256 fy = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y + i)));
    alignas(32) float tx[8], ty[8], tr[8];
    _mm256_store_ps(tx, fx);
    _mm256_store_ps(ty, fy);
    for (int k = 0; k < 8; ++k) tr[k] = Op::apply(tx[k], ty[k]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                     _mm256_cvtps_ph(_mm256_load_ps(tr), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
  for (; i < n; ++i) o[i] = f32ToF16(Op::apply(f16ToF32(x[i]), f16ToF32(y[i])));
}

template <class Op>
void reduceBF16(void* out, const void* a, const void* b, size_t n) {
  uint16_t* o = static_cast<uint16_t*>(out);
  const uint16_t* x = static_cast<const uint16_t*>(a);
  const uint16_t* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = f32ToBf16(Op::apply(bf16ToF32(x[i]), bf16ToF32(y[i])));
}

template <class T>
void divideLoop(void* buf, size_t n, double divisor) {
  T* p = static_cast<T*>(buf);
  const T d = static_cast<T>(divisor);
  for (size_t i = 0; i < n; ++i) p[i] = p[i] / d;
}
inline void divideF16(void* buf, size_t n, double divisor) {
  uint16_t* p = static_cast<uint16_t*>(buf);
  const float d = static_cast<float>(divisor);
  for (size_t i = 0; i < n; ++i) p[i] = f32ToF16(f16ToF32(p[i]) / d);
}
inline void divideBF16(void* buf, size_t n, double divisor) {
  uint16_t* p = static_cast<uint16_t*>(buf);
  const float d = static_cast<float>(divisor);
  for (size_t i = 0; i < n; ++i) p[i] = f32ToBf16(bf16ToF32(p[i]) / d);
}

template <class T>
constexpr void fillFloat(ReduceFn* row) {
  row[0] = reduceLoop<T, OpSum>;
  row[1] = reduceLoop<T, OpProd>;
  row[2] = reduceLoop<T, OpMin>;
  row[3] = reduceLoop<T, OpMax>;
  row[4] = reduceLoop<T, OpSum>;
}
template <class T>
constexpr void fillInt(ReduceFn* row) {
  row[0] = reduceIntLoop<T, OpSum>;
  row[1] = reduceIntLoop<T, OpProd>;
  row[2] = reduceIntMin<T>;
  row[3] = reduceIntMax<T>;
  row[4] = reduceIntLoop<T, OpSum>;  // never reached: 'avg' on integers is refused earlier
}

inline ReduceKernels makeKernels(const char* isa) {
  ReduceKernels k{};
  k.isa = isa;
  fillFloat<float>(k.reduce[static_cast<int>(DType::kFloat32)]);
  fillFloat<double>(k.reduce[static_cast<int>(DType::kFloat64)]);
  fillInt<int32_t>(k.reduce[static_cast<int>(DType::kInt32)]);
  fillInt<int64_t>(k.reduce[static_cast<int>(DType::kInt64)]);
  fillInt<uint8_t>(k.reduce[static_cast<int>(DType::kUint8)]);
  fillInt<int8_t>(k.reduce[static_cast<int>(DType::kInt8)]);
  ReduceFn* f16 = k.reduce[static_cast<int>(DType::kFloat16)];
  f16[0] = reduceF16<OpSum>; f16[1] = reduceF16<OpProd>; f16[2] = reduceF16<OpMin>;
  f16[3] = reduceF16<OpMax>; f16[4] = reduceF16<OpSum>;
  ReduceFn* bf16 = k.reduce[static_cast<int>(DType::kBFloat16)];
  bf16[0] = reduceBF16<OpSum>; bf16[1] = reduceBF16<OpProd>; bf16[2] = reduceBF16<OpMin>;
  bf16[3] = reduceBF16<OpMax>; bf16[4] = reduceBF16<OpSum>;
  k.divide[static_cast<int>(DType::kFloat32)] = divideLoop<float>;
  k.divide[static_cast<int>(DType::kFloat64)] = divideLoop<double>;
  k.divide[static_cast<int>(DType::kFloat16)] = divideF16;
  k.divide[static_cast<int>(DType::kBFloat16)] = divideBF16;
  return k;
}

}  // namespace BRAID_ISA_NS
}  // namespace braid
