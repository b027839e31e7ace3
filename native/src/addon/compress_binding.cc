// JS <-> C++ for the compression kernels: synchronous calls on the caller's thread (they touch
// no MPI). Arguments are checked in TypeScript (@braid/compression); here only that each buffer
// is the right kind of array and large enough, so a bad call is an error, never a wild write.
#include <napi.h>

#include <cmath>

#include <cstdint>
#include <string>

#include "addon/compress_binding.h"
#include "common/status.h"
#include "kernels/compress.h"
#include "kernels/secure_mask.h"

namespace braid {

namespace {

Napi::Error invalid(Napi::Env env, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, errorCodeName(ErrorCode::kInvalidArgument)));
  return err;
}

template <class T>
struct Span {
  T* data;
  size_t length;
};

template <class T>
Span<T> arrayArg(const Napi::CallbackInfo& info, size_t index, napi_typedarray_type type, const char* what) {
  Napi::Value v = info[index];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) throw invalid(info.Env(), std::string(what) + " has the wrong array type");
  // Raw N-API: it reads arrays over a SharedArrayBuffer too (DataParallel's buckets), which
  // Napi::TypedArray::ArrayBuffer() refuses.
  napi_typedarray_type actual;
  size_t length = 0;
  void* data = nullptr;
  napi_value backing;
  if (napi_get_typedarray_info(info.Env(), v, &actual, &length, &data, &backing, nullptr) != napi_ok)
    throw invalid(info.Env(), std::string(what) + " could not be read");
  bool isArrayBuffer = false, detached = false;
  napi_is_arraybuffer(info.Env(), backing, &isArrayBuffer);
  if (isArrayBuffer) napi_is_detached_arraybuffer(info.Env(), backing, &detached);
  if (detached) throw invalid(info.Env(), std::string(what) + "'s buffer is detached");
  return {static_cast<T*>(data), length};
}

size_t sizeArg(const Napi::CallbackInfo& info, size_t index) {
  const double v = info[index].As<Napi::Number>().DoubleValue();
  if (!(v >= 0) || v > 4294967295.0) throw invalid(info.Env(), "a size argument is out of range");
  return static_cast<size_t>(v);
}

uint32_t u32Arg(const Napi::CallbackInfo& info, size_t index) { return info[index].As<Napi::Number>().Uint32Value(); }
bool boolArg(const Napi::CallbackInfo& info, size_t index) { return info[index].ToBoolean().Value(); }

void need(Napi::Env env, bool ok, const char* what) {
  if (!ok) throw invalid(env, std::string("compression kernel: ") + what);
}

const CompressKernels& K() { return compressKernels(); }

Napi::Value CastToHalf(const Napi::CallbackInfo& info) {
  auto in = arrayArg<float>(info, 0, napi_float32_array, "input");
  auto out = arrayArg<uint16_t>(info, 1, napi_uint16_array, "output");
  need(info.Env(), out.length >= in.length, "output shorter than input");
  (boolArg(info, 2) ? K().toBfloat16 : K().toHalf)(in.data, out.data, in.length);
  return info.Env().Undefined();
}

Napi::Value CastFromHalf(const Napi::CallbackInfo& info) {
  auto in = arrayArg<uint16_t>(info, 0, napi_uint16_array, "input");
  auto out = arrayArg<float>(info, 1, napi_float32_array, "output");
  need(info.Env(), out.length >= in.length, "output shorter than input");
  (boolArg(info, 2) ? K().fromBfloat16 : K().fromHalf)(in.data, out.data, in.length, boolArg(info, 3));
  return info.Env().Undefined();
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  auto x = arrayArg<float>(info, 0, napi_float32_array, "input");
  return Napi::Number::New(info.Env(), K().sumSquares(x.data, x.length));
}

Napi::Value SumAbs(const Napi::CallbackInfo& info) {
  auto x = arrayArg<float>(info, 0, napi_float32_array, "input");
  return Napi::Number::New(info.Env(), K().sumAbs(x.data, x.length));
}

size_t blocks(size_t n, size_t block) { return block == 0 ? 0 : (n + block - 1) / block; }

Napi::Value Int8Encode(const Napi::CallbackInfo& info) {
  auto x = arrayArg<float>(info, 0, napi_float32_array, "input");
  const size_t block = sizeArg(info, 1);
  auto scales = arrayArg<float>(info, 2, napi_float32_array, "scales");
  auto codes = arrayArg<int8_t>(info, 3, napi_int8_array, "codes");
  need(info.Env(), block > 0 && scales.length >= blocks(x.length, block) && codes.length >= x.length, "int8 buffers too small");
  K().int8Encode(x.data, x.length, block, scales.data, codes.data);
  return info.Env().Undefined();
}

Napi::Value Int8Decode(const Napi::CallbackInfo& info) {
  auto codes = arrayArg<int8_t>(info, 0, napi_int8_array, "codes");
  auto scales = arrayArg<float>(info, 1, napi_float32_array, "scales");
  const size_t block = sizeArg(info, 2);
  auto out = arrayArg<float>(info, 3, napi_float32_array, "output");
  need(info.Env(), block > 0 && codes.length >= out.length && scales.length >= blocks(out.length, block), "int8 payload too small");
  K().int8Decode(codes.data, scales.data, out.length, block, out.data, boolArg(info, 4));
  return info.Env().Undefined();
}

Napi::Value SignEncode(const Napi::CallbackInfo& info) {
  auto x = arrayArg<float>(info, 0, napi_float32_array, "input");
  auto bits = arrayArg<uint8_t>(info, 1, napi_uint8_array, "bits");
  need(info.Env(), bits.length >= (x.length + 7) / 8, "bit buffer too small");
  K().signEncode(x.data, x.length, bits.data);
  return info.Env().Undefined();
}

Napi::Value SignDecode(const Napi::CallbackInfo& info) {
  auto bits = arrayArg<uint8_t>(info, 0, napi_uint8_array, "bits");
  const float scale = static_cast<float>(info[1].As<Napi::Number>().DoubleValue());
  auto out = arrayArg<float>(info, 2, napi_float32_array, "output");
  need(info.Env(), bits.length >= (out.length + 7) / 8, "sign payload too small");
  K().signDecode(bits.data, out.length, scale, out.data, boolArg(info, 3));
  return info.Env().Undefined();
}

Napi::Value QsgdEncode(const Napi::CallbackInfo& info) {
  auto x = arrayArg<float>(info, 0, napi_float32_array, "input");
  const float norm = static_cast<float>(info[1].As<Napi::Number>().DoubleValue());
  const int32_t levels = static_cast<int32_t>(u32Arg(info, 2));
  const uint32_t seedA = u32Arg(info, 3), seedB = u32Arg(info, 4);
  Napi::TypedArray codes = info[5].As<Napi::TypedArray>();
  if (codes.TypedArrayType() == napi_int8_array) {
    auto c = arrayArg<int8_t>(info, 5, napi_int8_array, "codes");
    need(info.Env(), c.length >= x.length && levels <= 127, "qsgd codes too small");
    K().qsgdEncode8(x.data, x.length, norm, levels, seedA, seedB, c.data);
  } else {
    auto c = arrayArg<int16_t>(info, 5, napi_int16_array, "codes");
    need(info.Env(), c.length >= x.length && levels <= 32767, "qsgd codes too small");
    K().qsgdEncode16(x.data, x.length, norm, levels, seedA, seedB, c.data);
  }
  return info.Env().Undefined();
}

Napi::Value QsgdDecode(const Napi::CallbackInfo& info) {
  const float norm = static_cast<float>(info[1].As<Napi::Number>().DoubleValue());
  const int32_t levels = static_cast<int32_t>(u32Arg(info, 2));
  auto out = arrayArg<float>(info, 3, napi_float32_array, "output");
  const bool accumulate = boolArg(info, 4);
  Napi::TypedArray codes = info[0].As<Napi::TypedArray>();
  if (codes.TypedArrayType() == napi_int8_array) {
    auto c = arrayArg<int8_t>(info, 0, napi_int8_array, "codes");
    need(info.Env(), c.length >= out.length, "qsgd payload too small");
    K().qsgdDecode8(c.data, out.length, norm, levels, out.data, accumulate);
  } else {
    auto c = arrayArg<int16_t>(info, 0, napi_int16_array, "codes");
    need(info.Env(), c.length >= out.length, "qsgd payload too small");
    K().qsgdDecode16(c.data, out.length, norm, levels, out.data, accumulate);
  }
  return info.Env().Undefined();
}

Napi::Value TopK(const Napi::CallbackInfo& info) {
  auto x = arrayArg<float>(info, 0, napi_float32_array, "input");
  const size_t k = sizeArg(info, 1);
  auto indices = arrayArg<uint32_t>(info, 2, napi_uint32_array, "indices");
  auto values = arrayArg<float>(info, 3, napi_float32_array, "values");
  const size_t take = k < x.length ? k : x.length;
  need(info.Env(), indices.length >= take && values.length >= take, "top-k outputs too small");
  compress::topk(x.data, x.length, take, indices.data, values.data);
  return info.Env().Undefined();
}

Napi::Value RandomK(const Napi::CallbackInfo& info) {
  const size_t n = sizeArg(info, 0), k = sizeArg(info, 1);
  auto indices = arrayArg<uint32_t>(info, 4, napi_uint32_array, "indices");
  const size_t take = k < n ? k : n;
  need(info.Env(), indices.length >= take, "random-k output too small");
  compress::randomk(n, take, u32Arg(info, 2), u32Arg(info, 3), indices.data);
  return info.Env().Undefined();
}

Napi::Value Gather(const Napi::CallbackInfo& info) {
  auto x = arrayArg<float>(info, 0, napi_float32_array, "input");
  auto indices = arrayArg<uint32_t>(info, 1, napi_uint32_array, "indices");
  auto values = arrayArg<float>(info, 2, napi_float32_array, "values");
  need(info.Env(), values.length >= indices.length, "gather output too small");
  for (size_t i = 0; i < indices.length; ++i) need(info.Env(), indices.data[i] < x.length, "gather index out of range");
  compress::gather(x.data, indices.data, indices.length, values.data);
  return info.Env().Undefined();
}

Napi::Value Scatter(const Napi::CallbackInfo& info) {
  auto indices = arrayArg<uint32_t>(info, 0, napi_uint32_array, "indices");
  auto values = arrayArg<float>(info, 1, napi_float32_array, "values");
  auto out = arrayArg<float>(info, 2, napi_float32_array, "output");
  need(info.Env(), values.length >= indices.length, "scatter values too short");
  const bool ok = compress::scatter(indices.data, values.data, indices.length, out.data, out.length, boolArg(info, 3));
  return Napi::Boolean::New(info.Env(), ok);
}

Napi::Value Elementwise(const Napi::CallbackInfo& info, bool subtract) {
  auto a = arrayArg<float>(info, 0, napi_float32_array, "a");
  auto b = arrayArg<float>(info, 1, napi_float32_array, "b");
  auto out = arrayArg<float>(info, 2, napi_float32_array, "output");
  need(info.Env(), b.length >= a.length && out.length >= a.length, "arrays of different lengths");
  (subtract ? K().subtract : K().add)(a.data, b.data, out.data, a.length);
  return info.Env().Undefined();
}
Napi::Value Subtract(const Napi::CallbackInfo& info) { return Elementwise(info, true); }
Napi::Value Add(const Napi::CallbackInfo& info) { return Elementwise(info, false); }

Napi::Value Checksum(const Napi::CallbackInfo& info) {
  auto bytes = arrayArg<uint8_t>(info, 0, napi_uint8_array, "bytes");
  return Napi::Number::New(info.Env(), K().checksum(bytes.data, bytes.length));
}

// powerP(m, rows, cols, qt, r, pt) / powerQ(m, rows, cols, pt, r, qt)
Napi::Value Power(const Napi::CallbackInfo& info, bool p) {
  auto m = arrayArg<float>(info, 0, napi_float32_array, "matrix");
  const size_t rows = sizeArg(info, 1), cols = sizeArg(info, 2), r = sizeArg(info, 4);
  auto in = arrayArg<float>(info, 3, napi_float32_array, p ? "qt" : "pt");
  auto out = arrayArg<float>(info, 5, napi_float32_array, p ? "pt" : "qt");
  need(info.Env(), m.length >= rows * cols && in.length >= r * (p ? cols : rows) && out.length >= r * (p ? rows : cols), "PowerSGD buffers too small");
  if (p) compress::powerP(m.data, rows, cols, in.data, r, out.data);
  else compress::powerQ(m.data, rows, cols, in.data, r, out.data);
  return info.Env().Undefined();
}
Napi::Value PowerP(const Napi::CallbackInfo& info) { return Power(info, true); }
Napi::Value PowerQ(const Napi::CallbackInfo& info) { return Power(info, false); }

Napi::Value Orthonormalize(const Napi::CallbackInfo& info) {
  auto pt = arrayArg<float>(info, 0, napi_float32_array, "pt");
  const size_t r = sizeArg(info, 1), rows = sizeArg(info, 2);
  need(info.Env(), pt.length >= r * rows, "PowerSGD P too small");
  compress::orthonormalize(pt.data, r, rows);
  return info.Env().Undefined();
}

// powerReconstruct(pt, qt, r, rows, cols, out, accumulate)
Napi::Value PowerReconstruct(const Napi::CallbackInfo& info) {
  auto pt = arrayArg<float>(info, 0, napi_float32_array, "pt");
  auto qt = arrayArg<float>(info, 1, napi_float32_array, "qt");
  const size_t r = sizeArg(info, 2), rows = sizeArg(info, 3), cols = sizeArg(info, 4);
  auto out = arrayArg<float>(info, 5, napi_float32_array, "output");
  need(info.Env(), pt.length >= r * rows && qt.length >= r * cols && out.length >= rows * cols, "PowerSGD buffers too small");
  compress::powerReconstruct(pt.data, qt.data, r, rows, cols, out.data, boolArg(info, 6));
  return info.Env().Undefined();
}

// secureMask's and secureMaskRange's first eight arguments: values, out, scale, clip (0: none),
// limit, keys (16 bytes a peer: AES-128), signs (+1 / -1 a peer), call.
struct MaskArgs {
  Span<const float> values;
  Span<int32_t> out;
  double scale, clip, limit, call;
  Span<const uint8_t> keys;
  Span<const int8_t> signs;
};

MaskArgs maskArgs(const Napi::CallbackInfo& info, const char* name) {
  Napi::Env env = info.Env();
  const std::string unavailable = std::string(name) + " needs AES-NI and AVX2 (check secureMaskAvailable first)";
  need(env, secureMaskAvailable(), unavailable.c_str());
  MaskArgs a{arrayArg<const float>(info, 0, napi_float32_array, "values"), arrayArg<int32_t>(info, 1, napi_int32_array, "out"),
             info[2].As<Napi::Number>().DoubleValue(), info[3].As<Napi::Number>().DoubleValue(), info[4].As<Napi::Number>().DoubleValue(),
             info[7].As<Napi::Number>().DoubleValue(), arrayArg<const uint8_t>(info, 5, napi_uint8_array, "keys"),
             arrayArg<const int8_t>(info, 6, napi_int8_array, "signs")};
  need(env, a.keys.length == 16 * a.signs.length, "keys must hold 16 bytes (an AES-128 key) for each sign");
  need(env, a.scale > 0 && a.clip >= 0 && a.limit >= 1 && a.limit <= 2147483647.0, "scale, clip or limit out of range");
  need(env, a.call >= 0 && a.call <= 9007199254740991.0, "call out of range");
  return a;
}

}  // namespace

// secureMask(values: Float32Array, out: Int32Array (n + 1), scale, clip, limit, keys, signs,
// call): the count beyond range.
Napi::Value SecureMask(const Napi::CallbackInfo& info) {
  const MaskArgs a = maskArgs(info, "secureMask");
  need(info.Env(), a.out.length == a.values.length + 1, "out must hold one element more than values");
  const uint32_t beyond = secureMask(a.values.data, a.out.data, a.values.length, a.scale, a.clip, static_cast<int32_t>(a.limit), a.keys.data,
                                     a.signs.data, a.signs.length, static_cast<uint64_t>(a.call));
  return Napi::Number::New(info.Env(), beyond);
}

// secureMaskRange(values, out (to - from words), scale, clip, limit, keys, signs, call, from, to,
// beyondBefore): words [from, to) of what secureMask writes for `values` (what the masked
// all-reduce makes chunk by chunk); the count beyond range among them.
Napi::Value SecureMaskRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const MaskArgs a = maskArgs(info, "secureMaskRange");
  const double from = info[8].As<Napi::Number>().DoubleValue();
  const double to = info[9].As<Napi::Number>().DoubleValue();
  const double beyondBefore = info[10].As<Napi::Number>().DoubleValue();
  need(env, from >= 0 && from <= to && to <= static_cast<double>(a.values.length) + 1 && from == std::floor(from) && to == std::floor(to),
       "from and to must be whole numbers with 0 <= from <= to <= values.length + 1");
  need(env, a.out.length == static_cast<size_t>(to - from), "out must hold to - from elements");
  need(env, beyondBefore >= 0 && beyondBefore <= 4294967295.0, "beyondBefore out of range");
  const uint32_t beyond = secureMaskRange(a.values.data, a.out.data, a.values.length, static_cast<size_t>(from), static_cast<size_t>(to), a.scale,
                                          a.clip, static_cast<int32_t>(a.limit), a.keys.data, a.signs.data, a.signs.length,
                                          static_cast<uint64_t>(a.call), static_cast<uint32_t>(beyondBefore));
  return Napi::Number::New(env, beyond);
}

// secureUnmask(sum: Int32Array, values: Float32Array, divisor): values[i] = sum[i] / divisor.
Napi::Value SecureUnmask(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  need(env, secureMaskAvailable(), "secureUnmask needs AES-NI and AVX2 (check secureMaskAvailable first)");
  auto sum = arrayArg<const int32_t>(info, 0, napi_int32_array, "sum");
  auto values = arrayArg<float>(info, 1, napi_float32_array, "values");
  const double divisor = info[2].As<Napi::Number>().DoubleValue();
  need(env, sum.length >= values.length, "sum must hold at least as many elements as values");
  need(env, divisor > 0, "divisor must be positive");
  secureUnmask(sum.data, values.data, values.length, divisor);
  return env.Undefined();
}

void initCompressBinding(Napi::Env env, Napi::Object exports) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("isa", Napi::String::New(env, compressKernels().isa));
  c.Set("castToHalf", Napi::Function::New(env, CastToHalf));
  c.Set("secureMaskAvailable", Napi::Boolean::New(env, secureMaskAvailable()));
  c.Set("secureMask", Napi::Function::New(env, SecureMask));
  c.Set("secureUnmask", Napi::Function::New(env, SecureUnmask));
  c.Set("secureMaskRange", Napi::Function::New(env, SecureMaskRange));
  c.Set("castFromHalf", Napi::Function::New(env, CastFromHalf));
  c.Set("sumSquares", Napi::Function::New(env, SumSquares));
  c.Set("sumAbs", Napi::Function::New(env, SumAbs));
  c.Set("int8Encode", Napi::Function::New(env, Int8Encode));
  c.Set("int8Decode", Napi::Function::New(env, Int8Decode));
  c.Set("signEncode", Napi::Function::New(env, SignEncode));
  c.Set("signDecode", Napi::Function::New(env, SignDecode));
  c.Set("qsgdEncode", Napi::Function::New(env, QsgdEncode));
  c.Set("qsgdDecode", Napi::Function::New(env, QsgdDecode));
  c.Set("topk", Napi::Function::New(env, TopK));
  c.Set("randomk", Napi::Function::New(env, RandomK));
  c.Set("gather", Napi::Function::New(env, Gather));
  c.Set("scatter", Napi::Function::New(env, Scatter));
  c.Set("subtract", Napi::Function::New(env, Subtract));
  c.Set("add", Napi::Function::New(env, Add));
  c.Set("checksum", Napi::Function::New(env, Checksum));
  c.Set("powerP", Napi::Function::New(env, PowerP));
  c.Set("powerQ", Napi::Function::New(env, PowerQ));
  c.Set("orthonormalize", Napi::Function::New(env, Orthonormalize));
  c.Set("powerReconstruct", Napi::Function::New(env, PowerReconstruct));
  exports.Set("compress", c);
}

}  // namespace braid
