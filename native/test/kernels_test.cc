// Kernel tests: the float16 / bfloat16 conversions against the hardware (F16C) and against their
// definition, every reduction variant against a plain reference and against each other, and
// the CUDA kernels against their CPU twins when a GPU is present. braid_kernels_test_emulated is
// this program linked with the CUDA sources compiled for the CPU (test/cuda_emulation), so the
// CUDA cases run on every machine.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "check.h"
#include "common/parallel_copy.h"
#include "kernels/compress.h"
#include "kernels/copy.h"
#include "kernels/cuda/compress_cuda.h"
#include "kernels/cuda/cuda_info.h"
#include "gpu/nccl_comm.h"
#include "kernels/half.h"
#include "kernels/reduce.h"

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("f16c"))) static uint16_t hwF32ToF16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) static float hwF16ToF32(uint16_t h) { return _cvtsh_ss(h); }
static bool haveF16C() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("f16c");
}
#endif

using namespace braid;
using braid_test::runCase;

namespace {

// float32 -> bfloat16 by its definition: the nearest bfloat16, ties to the even one.
uint16_t bf16Reference(float f) {
  uint32_t u = floatBits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);
  uint16_t lo = static_cast<uint16_t>(u >> 16);
  uint16_t hi = static_cast<uint16_t>(lo + 1);
  double dl = std::fabs(static_cast<double>(bf16ToF32(lo)) - f);
  double dh = std::fabs(static_cast<double>(bf16ToF32(hi)) - f);
  if ((lo & 0x7f80) == 0x7f80) return lo;  // inf stays inf
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo & 1) ? hi : lo;
}

template <class T>
std::vector<uint8_t> bytesOf(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Values whose sums, products, min and max are exact in every dtype; stored as that dtype.
std::vector<uint8_t> makeInput(DType t, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n * dtypeSize(t));
  for (size_t i = 0; i < n; ++i) {
    int v = static_cast<int>(rng() % 9) - 4;  // -4..4
    if (t == DType::kUint8) v += 4;
    switch (t) {
      case DType::kFloat32: { float x = static_cast<float>(v) * 0.5f; std::memcpy(&out[i * 4], &x, 4); break; }
      case DType::kFloat64: { double x = v * 0.25; std::memcpy(&out[i * 8], &x, 8); break; }
      case DType::kInt32: { int32_t x = v * 100000; std::memcpy(&out[i * 4], &x, 4); break; }
      case DType::kInt64: { int64_t x = static_cast<int64_t>(v) * (int64_t{1} << 20); std::memcpy(&out[i * 8], &x, 8); break; }
      case DType::kUint8: out[i] = static_cast<uint8_t>(v * 30); break;
      case DType::kInt8: out[i] = static_cast<uint8_t>(static_cast<int8_t>(v * 30)); break;
      case DType::kFloat16: { uint16_t h = f32ToF16(static_cast<float>(v) * 1.5f); std::memcpy(&out[i * 2], &h, 2); break; }
      case DType::kBFloat16: { uint16_t h = f32ToBf16(static_cast<float>(v) * 3.0f); std::memcpy(&out[i * 2], &h, 2); break; }
    }
  }
  return out;
}

// The reference: one element at a time, as the definition says.
double loadAsDouble(DType t, const uint8_t* p) {
  switch (t) {
    case DType::kFloat32: { float x; std::memcpy(&x, p, 4); return x; }
    case DType::kFloat64: { double x; std::memcpy(&x, p, 8); return x; }
    case DType::kInt32: { int32_t x; std::memcpy(&x, p, 4); return x; }
    case DType::kInt64: { int64_t x; std::memcpy(&x, p, 8); return static_cast<double>(x); }
    case DType::kUint8: return *p;
    case DType::kInt8: return static_cast<int8_t>(*p);
    case DType::kFloat16: { uint16_t h; std::memcpy(&h, p, 2); return f16ToF32(h); }
    case DType::kBFloat16: { uint16_t h; std::memcpy(&h, p, 2); return bf16ToF32(h); }
  }
  return 0;
}
void storeFromDouble(DType t, uint8_t* p, double v) {
  switch (t) {
    case DType::kFloat32: { float x = static_cast<float>(v); std::memcpy(p, &x, 4); break; }
    case DType::kFloat64: std::memcpy(p, &v, 8); break;
    case DType::kInt32: { int32_t x = static_cast<int32_t>(static_cast<int64_t>(v)); std::memcpy(p, &x, 4); break; }
    case DType::kInt64: { int64_t x = static_cast<int64_t>(v); std::memcpy(p, &x, 8); break; }
    case DType::kUint8: *p = static_cast<uint8_t>(static_cast<int64_t>(v)); break;
    case DType::kInt8: *p = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int64_t>(v))); break;
    case DType::kFloat16: { uint16_t h = f32ToF16(static_cast<float>(v)); std::memcpy(p, &h, 2); break; }
    case DType::kBFloat16: { uint16_t h = f32ToBf16(static_cast<float>(v)); std::memcpy(p, &h, 2); break; }
  }
}

std::vector<uint8_t> reference(DType t, RedOp op, const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  const size_t es = dtypeSize(t), n = a.size() / es;
  std::vector<uint8_t> out(a.size());
  for (size_t i = 0; i < n; ++i) {
    double x = loadAsDouble(t, &a[i * es]), y = loadAsDouble(t, &b[i * es]), r = 0;
    switch (op) {
      case RedOp::kSum: case RedOp::kAvg: r = x + y; break;
      case RedOp::kProd: r = x * y; break;
      case RedOp::kMin: r = std::min(x, y); break;
      case RedOp::kMax: r = std::max(x, y); break;
    }
    // Integer sums and products wrap like two's complement.
    if (!isFloating(t)) {
      const int bits = static_cast<int>(es * 8);
      int64_t w = static_cast<int64_t>(r);
      if (bits < 64) {
        uint64_t mask = (uint64_t{1} << bits) - 1;
        uint64_t u = static_cast<uint64_t>(w) & mask;
        if (t != DType::kUint8 && (u >> (bits - 1))) w = static_cast<int64_t>(u | ~mask); else w = static_cast<int64_t>(u);
      }
      r = static_cast<double>(w);
    }
    storeFromDouble(t, &out[i * es], r);
  }
  return out;
}

// The GPU's top-k of x (through device buffers) is the CPU's, indices and values bit for bit.
void checkTopkMatchesCpu(const std::vector<float>& x, size_t k) {
  const size_t n = x.size();
  std::vector<uint32_t> gi(k), ci(k);
  std::vector<float> gv(k), cv(k);
  CHECK(cudaTopk(x.data(), n, k, gi.data(), gv.data()));
  compress::topk(x.data(), n, k, ci.data(), cv.data());
  CHECK(gi == ci);
  CHECK(std::memcmp(gv.data(), cv.data(), k * 4) == 0);
}

}  // namespace

int main() {
#if defined(__x86_64__)
  if (haveF16C()) {
    runCase("float16 -> float32 matches F16C for all 65536 values", [] {
      for (uint32_t h = 0; h < 65536; ++h) {
        uint32_t sw = floatBits(f16ToF32(static_cast<uint16_t>(h)));
        uint32_t hw = floatBits(hwF16ToF32(static_cast<uint16_t>(h)));
        CHECK_MSG(sw == hw, "h=" + std::to_string(h));
      }
    });
    runCase("float32 -> float16 matches F16C (specials, every f16 midpoint, 4M random)", [] {
      std::vector<uint32_t> values = {0, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                                      0xffc12345u, 0x477fefffu, 0x477ff000u, 0x33000000u, 0x33000001u, 0x387fc000u};
      for (uint32_t h = 0; h < 0x7c00; ++h) {  // halfway between neighbouring float16 values
        uint32_t a = floatBits(f16ToF32(static_cast<uint16_t>(h))), b = floatBits(f16ToF32(static_cast<uint16_t>(h + 1)));
        values.push_back(floatBits((bitsFloat(a) + bitsFloat(b)) * 0.5f));
        values.push_back(a + 1);
        values.push_back(b - 1);
      }
      std::mt19937 rng(1);
      for (int i = 0; i < 4000000; ++i) values.push_back(rng());
      for (uint32_t u : values) {
        uint16_t sw = f32ToF16(bitsFloat(u)), hw = hwF32ToF16(bitsFloat(u));
        CHECK_MSG(sw == hw, "bits=" + std::to_string(u) + " sw=" + std::to_string(sw) + " hw=" + std::to_string(hw));
      }
    });
  } else {
    braid_test::skip("float16 vs F16C", "this CPU has no F16C instructions");
  }
#endif
  runCase("streaming copy: the same bytes as memcpy at every alignment and awkward sizes, nothing outside touched", [] {
    std::mt19937 rng(7);
    std::vector<uint8_t> src(70000), dst(70200), want(70200);
    for (auto& b : src) b = static_cast<uint8_t>(rng());
    for (size_t bytes : {size_t{0}, size_t{1}, size_t{63}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{65536 + 77}}) {
      for (size_t dOff = 0; dOff < 17; ++dOff) {
        for (size_t sOff : {size_t{0}, size_t{3}, size_t{16}}) {
          std::fill(dst.begin(), dst.end(), 0xAB);
          std::fill(want.begin(), want.end(), 0xAB);
          std::memcpy(want.data() + dOff, src.data() + sOff, bytes);
          copyStreaming(dst.data() + dOff, src.data() + sOff, bytes);
          CHECK_MSG(dst == want, "bytes=" + std::to_string(bytes) + " dst+" + std::to_string(dOff) + " src+" + std::to_string(sOff));
        }
      }
    }
  });
  runCase("parallel copy: the same bytes as memcpy with 0-3 helpers, across the threshold, odd sizes and offsets, many copies in a row", [] {
    std::mt19937 rng(11);
    const size_t most = 5 * ParallelCopy::kMinParallelBytes + 12345;
    std::vector<uint8_t> src(most + 64), dst(most + 128), want(most + 128);
    for (auto& b : src) b = static_cast<uint8_t>(rng());
    for (int helpers : {0, 1, 2, 3}) {
      ParallelCopy copier(helpers);
      CHECK(copier.helpers() == helpers);
      const size_t min = ParallelCopy::kMinParallelBytes;
      for (size_t bytes : {size_t{0}, size_t{4097}, min - 1, min, min + 1, 3 * min + 4095, most}) {
        for (size_t dOff : {size_t{0}, size_t{5}, size_t{64}}) {
          const size_t sOff = (dOff * 7) % 61;
          std::fill(dst.begin(), dst.end(), 0xCD);
          std::fill(want.begin(), want.end(), 0xCD);
          std::memcpy(want.data() + dOff, src.data() + sOff, bytes);
          copier.copy(dst.data() + dOff, src.data() + sOff, bytes);
          CHECK_MSG(dst == want, "helpers=" + std::to_string(helpers) + " bytes=" + std::to_string(bytes) + " dst+" + std::to_string(dOff));
        }
      }
      // Back to back, as the staged all-reduce does chunk after chunk: no copy may see a stale job.
      for (int round = 0; round < 200; ++round) {
        const size_t bytes = min + static_cast<size_t>(rng() % (4 * min));
        src[static_cast<size_t>(round)] ^= 0xFF;
        copier.copy(dst.data(), src.data(), bytes);
        CHECK_MSG(std::memcmp(dst.data(), src.data(), bytes) == 0, "round " + std::to_string(round));
      }
    }
    CHECK(ParallelCopy::defaultHelpers() >= 0 && ParallelCopy::defaultHelpers() <= 3);
  });
  runCase("float16 round trip is exact for every non-NaN value", [] {
    for (uint32_t h = 0; h < 65536; ++h) {
      float f = f16ToF32(static_cast<uint16_t>(h));
      if (std::isnan(f)) {
        CHECK(std::isnan(f16ToF32(f32ToF16(f))));
        continue;
      }
      CHECK_MSG(f32ToF16(f) == h, "h=" + std::to_string(h));
    }
  });
  runCase("bfloat16 rounds to nearest even and keeps inf and NaN", [] {
    std::mt19937 rng(2);
    for (int i = 0; i < 2000000; ++i) {
      uint32_t u = rng();
      if (i % 3 == 0) u = (u & 0xffff0000u) | 0x8000u;  // exact ties
      float f = bitsFloat(u);
      uint16_t got = f32ToBf16(f), want = bf16Reference(f);
      if (std::isnan(f)) {
        CHECK(std::isnan(bf16ToF32(got)));
        continue;
      }
      // Values that round past the largest finite bfloat16 become inf.
      if (std::isinf(bf16ToF32(got)) && !std::isinf(f)) continue;
      CHECK_MSG(got == want, "bits=" + std::to_string(u));
    }
    CHECK(f32ToBf16(bitsFloat(0x7f800000u)) == 0x7f80);
    CHECK(f32ToBf16(bitsFloat(0xff800000u)) == 0xff80);
  });

  const DType dtypes[] = {DType::kFloat32, DType::kFloat64, DType::kInt32, DType::kInt64,
                          DType::kUint8,   DType::kInt8,    DType::kFloat16, DType::kBFloat16};
  const RedOp ops[] = {RedOp::kSum, RedOp::kProd, RedOp::kMin, RedOp::kMax};
  const size_t sizes[] = {0, 1, 7, 8, 9, 31, 64, 100, 1023, 100003};
  for (const char* isa : {"generic", "avx2", "avx512"}) {
    const ReduceKernels* k = kernelsFor(isa);
    if (k == nullptr) {
      braid_test::skip(std::string("reduce ") + isa, std::string("this CPU or build has no ") + isa);
      continue;
    }
    runCase(std::string("reduce ") + isa + ": every dtype x op matches the reference", [&] {
      for (DType t : dtypes)
        for (RedOp op : ops)
          for (size_t n : sizes) {
            auto a = makeInput(t, n, 10 + static_cast<uint32_t>(n)), b = makeInput(t, n, 99 + static_cast<uint32_t>(n));
            auto want = reference(t, op, a, b);
            std::vector<uint8_t> got(a.size());
            k->reduce[static_cast<int>(t)][static_cast<int>(op)](got.data(), a.data(), b.data(), n);
            CHECK_MSG(got == want, std::string(dtypeName(t)) + " " + redOpName(op) + " n=" + std::to_string(n));
            // In place (out aliases b, or a) gives the same.
            std::vector<uint8_t> intoB = b;
            k->reduce[static_cast<int>(t)][static_cast<int>(op)](intoB.data(), a.data(), intoB.data(), n);
            CHECK_MSG(intoB == want, std::string("in place of b ") + dtypeName(t) + " " + redOpName(op));
            k->reduce[static_cast<int>(t)][static_cast<int>(op)](a.data(), a.data(), b.data(), n);
            CHECK_MSG(a == want, std::string("in place ") + dtypeName(t) + " " + redOpName(op));
          }
    });
  }
  // Where both operands are NaN, which payload survives is the hardware's (and the compiler's
  // operand order's) choice, so two NaNs count as equal; everything else must match bit for bit.
  auto sameF32 = [](const std::vector<float>& x, const std::vector<float>& y) {
    for (size_t i = 0; i < x.size(); ++i)
      if (floatBits(x[i]) != floatBits(y[i]) && !(std::isnan(x[i]) && std::isnan(y[i]))) return false;
    return true;
  };
  auto sameHalf = [](DType t, const std::vector<uint16_t>& x, const std::vector<uint16_t>& y) {
    for (size_t i = 0; i < x.size(); ++i) {
      float fx = t == DType::kFloat16 ? f16ToF32(x[i]) : bf16ToF32(x[i]);
      float fy = t == DType::kFloat16 ? f16ToF32(y[i]) : bf16ToF32(y[i]);
      if (x[i] != y[i] && !(std::isnan(fx) && std::isnan(fy))) return false;
    }
    return true;
  };
  runCase("all variants give the same bits on random floats, NaN and signed zeros", [&] {
    std::mt19937 rng(3);
    const size_t n = 4099;
    std::vector<float> a(n), b(n);
    std::vector<uint16_t> ha(n), hb(n);
    for (size_t i = 0; i < n; ++i) {
      a[i] = bitsFloat(rng());
      b[i] = (i % 17 == 0) ? -0.0f : bitsFloat(rng());
      ha[i] = static_cast<uint16_t>(rng());
      hb[i] = static_cast<uint16_t>(rng());
    }
    const ReduceKernels* g = kernelsFor("generic");
    for (const char* isa : {"avx2", "avx512"}) {
      const ReduceKernels* k = kernelsFor(isa);
      if (k == nullptr) continue;
      for (int op = 0; op < 4; ++op) {
        std::vector<float> x(n), y(n);
        g->reduce[0][op](x.data(), a.data(), b.data(), n);
        k->reduce[0][op](y.data(), a.data(), b.data(), n);
        CHECK_MSG(sameF32(x, y), std::string(isa) + " float32 op " + std::to_string(op));
        for (DType t : {DType::kFloat16, DType::kBFloat16}) {
          std::vector<uint16_t> hx(n), hy(n);
          g->reduce[static_cast<int>(t)][op](hx.data(), ha.data(), hb.data(), n);
          k->reduce[static_cast<int>(t)][op](hy.data(), ha.data(), hb.data(), n);
          CHECK_MSG(sameHalf(t, hx, hy), std::string(isa) + " " + dtypeName(t) + " op " + std::to_string(op));
        }
      }
    }
  });
  runCase("min and max propagate NaN", [] {
    float a[2] = {NAN, 1.0f}, b[2] = {1.0f, NAN}, out[2];
    reduceInto(DType::kFloat32, RedOp::kMin, out, a, b, 2);
    CHECK(std::isnan(out[0]) && std::isnan(out[1]));
    reduceInto(DType::kFloat32, RedOp::kMax, out, a, b, 2);
    CHECK(std::isnan(out[0]) && std::isnan(out[1]));
  });
  runCase("average divides once, rounded in the element type", [] {
    uint16_t h[3] = {f32ToF16(3.0f), f32ToF16(1.0f), f32ToF16(-6.0f)};
    finishAverage(DType::kFloat16, h, 3, 3);
    CHECK(h[0] == f32ToF16(1.0f) && h[1] == f32ToF16(1.0f / 3.0f) && h[2] == f32ToF16(-2.0f));
    double d[2] = {1.0, 2.0};
    finishAverage(DType::kFloat64, d, 2, 4);
    CHECK(d[0] == 0.25 && d[1] == 0.5);
  });

#if defined(BRAID_CUDA_EMULATION)
  std::printf("CUDA: emulated on the CPU (test/cuda_emulation: kernels on threads, device memory trapped outside device work)\n");
#endif
  if (cudaDeviceCount() > 0) {
    runCase("CUDA float32 sum matches the CPU bit for bit", [] {
      std::mt19937 rng(4);
      const size_t n = 1000003;
      std::vector<float> a(n), b(n), gpu(n), cpu(n);
      for (size_t i = 0; i < n; ++i) {
        a[i] = bitsFloat(rng() & 0xbfffffffu);
        b[i] = bitsFloat(rng() & 0xbfffffffu);
      }
      CHECK(cudaSumFloat32(gpu.data(), a.data(), b.data(), n));
      reduceInto(DType::kFloat32, RedOp::kSum, cpu.data(), a.data(), b.data(), n);
      CHECK(std::memcmp(gpu.data(), cpu.data(), n * 4) == 0);
    });
    runCase("CUDA compression kernels match the CPU kernels bit for bit", [] {
      std::mt19937 rng(9);
      const size_t n = 1000003;
      std::vector<float> x(n);
      for (size_t i = 0; i < n; ++i) x[i] = bitsFloat(rng() & 0xbfffffffu) * 1e-30f;
      for (size_t i = 0; i < n; i += 997) x[i] = std::nanf("");
      for (size_t i = 5; i < n; i += 1009) x[i] = x[i - 1];  // ties for top-k
      const CompressKernels& K = compressKernels();
      for (bool bf16 : {false, true}) {
        std::vector<uint16_t> g(n), c(n);
        CHECK(cudaEncodeHalf(x.data(), g.data(), n, bf16));
        (bf16 ? K.toBfloat16 : K.toHalf)(x.data(), c.data(), n);
        CHECK(g == c);
        std::vector<float> gd(n), cd(n);
        CHECK(cudaDecodeHalf(c.data(), gd.data(), n, bf16));
        (bf16 ? K.fromBfloat16 : K.fromHalf)(c.data(), cd.data(), n, false);
        CHECK(std::memcmp(gd.data(), cd.data(), n * 4) == 0);
      }
      std::vector<float> finite(x);
      for (float& v : finite) v = std::isnan(v) ? 0.5f : v * 1e30f;
      std::vector<float> gs(n / 256 + 1), cs(n / 256 + 1), gd(n), cd(n);
      std::vector<int8_t> gc(n), cc(n);
      CHECK(cudaEncodeInt8(finite.data(), n, 256, gs.data(), gc.data()));
      K.int8Encode(finite.data(), n, 256, cs.data(), cc.data());
      CHECK(gs == cs && gc == cc);
      CHECK(cudaDecodeInt8(cc.data(), cs.data(), n, 256, gd.data()));
      K.int8Decode(cc.data(), cs.data(), n, 256, cd.data(), false);
      CHECK(std::memcmp(gd.data(), cd.data(), n * 4) == 0);
      std::vector<uint8_t> gb(n / 8 + 1), cb(n / 8 + 1);
      CHECK(cudaEncodeSign(x.data(), n, gb.data()));
      K.signEncode(x.data(), n, cb.data());
      CHECK(gb == cb);
      const float norm = static_cast<float>(std::sqrt(K.sumSquares(finite.data(), n)));
      std::vector<int16_t> gq(n), cq(n);
      CHECK(cudaEncodeQsgd(finite.data(), n, norm, 1000, 3, 4, gq.data()));
      K.qsgdEncode16(finite.data(), n, norm, 1000, 3, 4, cq.data());
      CHECK(gq == cq);
      for (size_t k : {size_t(1), n / 1000, n / 100, n}) checkTopkMatchesCpu(x, k);
      std::vector<float> gr(n), cr(n);
      CHECK(cudaErrorFeedback(finite.data(), x.data(), gr.data(), n));
      K.subtract(finite.data(), x.data(), cr.data(), n);
      CHECK(std::memcmp(gr.data(), cr.data(), n * 4) == 0);
      const size_t rows = 500, cols = 300, r = 4;
      std::vector<float> qt(r * cols), gp(r * rows), cp(r * rows), gq2(r * cols), cq2(r * cols);
      for (float& v : qt) v = static_cast<float>(rng() % 1000) / 500.0f - 1.0f;
      CHECK(cudaPowerP(finite.data(), rows, cols, qt.data(), r, gp.data()));
      compress::powerP(finite.data(), rows, cols, qt.data(), r, cp.data());
      CHECK(std::memcmp(gp.data(), cp.data(), gp.size() * 4) == 0);
      CHECK(cudaPowerQ(finite.data(), rows, cols, cp.data(), r, gq2.data()));
      compress::powerQ(finite.data(), rows, cols, cp.data(), r, cq2.data());
      CHECK(std::memcmp(gq2.data(), cq2.data(), gq2.size() * 4) == 0);
    });
    runCase("CUDA top-k with many ties: k ending a group of equal magnitudes, one past it, inside it", [] {
      // Nine magnitudes (and NaN, the lowest) over 100003 values: every group's first and last
      // rank and their neighbours as k, so the select meets a bin whose keys are exactly the ones
      // still wanted, and the scan places larger values after ties that are not taken.
      std::mt19937 rng(12);
      const size_t n = 100003;
      std::vector<float> x(n);
      for (float& v : x) {
        const uint32_t r = rng();
        v = r % 10 == 9 ? std::nanf("") : static_cast<float>(r % 10) * ((r >> 8) & 1 ? 0.75f : -0.75f);
      }
      std::vector<float> magnitudes;
      for (float v : x) magnitudes.push_back(std::isnan(v) ? -1.0f : std::fabs(v));
      std::sort(magnitudes.begin(), magnitudes.end(), std::greater<float>());
      std::vector<size_t> ks = {1, n - 1, n};
      for (size_t i = 1; i < n; ++i)
        if (magnitudes[i] != magnitudes[i - 1])
          for (size_t k : {i - 1, i, i + 1}) ks.push_back(k);
      CHECK(ks.size() == 3 + 3 * 9);
      for (size_t k : ks) checkTopkMatchesCpu(x, k);
    });
    runCase("CUDA kernels of the compressed all-reduce on DeviceBuffers match the CPU", [] {
      // On device memory, as gpu/device_compress.cc calls them: decoders adding into a sum,
      // QSGD's 1-byte codes, the checked scatter, the payload checksum, the scale, PowerSGD's
      // reconstruction; the sums behind a norm are the GPU's own tree (the same bits each call).
      std::string error;
      auto on = [&](const void* host, size_t bytes) {
        void* d = gpuAlloc(bytes, error);
        CHECK(d != nullptr && gpuUpload(d, host, bytes, error));
        return d;
      };
      auto back = [&](void* host, const void* d, size_t bytes) { CHECK(gpuDownload(host, d, bytes, error)); };
      std::mt19937 rng(21);
      const size_t n = 100003;
      std::vector<float> x(n), sum(n);
      for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(static_cast<int>(rng() % 20001) - 10000) / 997.0f;
      for (size_t i = 0; i < n; ++i) sum[i] = static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 31.0f;
      const CompressKernels& K = compressKernels();
      float* dx = static_cast<float*>(on(x.data(), n * 4));
      std::vector<float> cpu(n), gpu(n);
      auto sumOnDevice = [&]() { return static_cast<float*>(on(sum.data(), n * 4)); };
      auto same = [&](float* d) {
        back(gpu.data(), d, n * 4);
        gpuFree(d);
        return std::memcmp(gpu.data(), cpu.data(), n * 4) == 0;
      };
      {  // half words added into a sum
        std::vector<uint16_t> h(n);
        K.toHalf(x.data(), h.data(), n);
        void* dh = on(h.data(), n * 2);
        float* d = sumOnDevice();
        CHECK(gpu::decodeHalfInto(static_cast<uint16_t*>(dh), d, n, false, true, nullptr));
        cpu = sum;
        K.fromHalf(h.data(), cpu.data(), n, true);
        CHECK(same(d));
        gpuFree(dh);
      }
      {  // int8 codes and scales added into a sum
        std::vector<float> scales(n / 128 + 1);
        std::vector<int8_t> codes(n);
        K.int8Encode(x.data(), n, 128, scales.data(), codes.data());
        void* dc = on(codes.data(), n);
        void* ds = on(scales.data(), scales.size() * 4);
        float* d = sumOnDevice();
        CHECK(gpu::decodeInt8Into(static_cast<int8_t*>(dc), static_cast<float*>(ds), n, 128, d, true, nullptr));
        cpu = sum;
        K.int8Decode(codes.data(), scales.data(), n, 128, cpu.data(), true);
        CHECK(same(d));
        gpuFree(dc);
        gpuFree(ds);
      }
      {  // sign bits added into a sum
        std::vector<uint8_t> bits(n / 8 + 1);
        K.signEncode(x.data(), n, bits.data());
        void* db = on(bits.data(), bits.size());
        float* d = sumOnDevice();
        CHECK(gpu::decodeSignInto(static_cast<uint8_t*>(db), n, 0.375f, d, true, nullptr));
        cpu = sum;
        K.signDecode(bits.data(), n, 0.375f, cpu.data(), true);
        CHECK(same(d));
        gpuFree(db);
      }
      {  // QSGD with 1-byte codes, there and back into a sum
        const float norm = static_cast<float>(std::sqrt(K.sumSquares(x.data(), n)));
        std::vector<int8_t> codes(n), gcodes(n);
        K.qsgdEncode8(x.data(), n, norm, 100, 5, 6, codes.data());
        void* dc = gpuAlloc(n, error);
        CHECK(gpu::encodeQsgdCodes(dx, n, 100.0f / norm, 100, 5, 6, dc, 1, nullptr) && gpu::synchronize(nullptr));
        back(gcodes.data(), dc, n);
        CHECK(gcodes == codes);
        float* d = sumOnDevice();
        CHECK(gpu::decodeQsgdInto(dc, 1, n, norm / 100.0f, d, true, nullptr));
        cpu = sum;
        K.qsgdDecode8(codes.data(), n, norm, 100, cpu.data(), true);
        CHECK(same(d));
        gpuFree(dc);
      }
      {  // the checked scatter: ascending indices added; a repeated one flagged
        const size_t k = n / 100;
        std::vector<uint32_t> indices(k);
        std::vector<float> values(k);
        compress::topk(x.data(), n, k, indices.data(), values.data());
        void* di = on(indices.data(), k * 4);
        void* dv = on(values.data(), k * 4);
        uint32_t flag = 0;
        uint32_t* bad = static_cast<uint32_t*>(on(&flag, 4));
        float* d = sumOnDevice();
        CHECK(gpu::scatterInto(static_cast<uint32_t*>(di), static_cast<float*>(dv), k, d, n, true, bad, nullptr));
        back(&flag, bad, 4);
        CHECK(flag == 0);
        cpu = sum;
        CHECK(compress::scatter(indices.data(), values.data(), k, cpu.data(), n, true));
        CHECK(same(d));
        indices[k / 2] = indices[k / 2 - 1];
        CHECK(gpuUpload(di, indices.data(), k * 4, error));
        d = sumOnDevice();
        CHECK(gpu::scatterInto(static_cast<uint32_t*>(di), static_cast<float*>(dv), k, d, n, true, bad, nullptr));
        back(&flag, bad, 4);
        CHECK(flag == 1);
        gpuFree(d);
        for (void* p : {di, dv, static_cast<void*>(bad)}) gpuFree(p);
      }
      // The payload checksum over three runs of bytes: nothing, a tail alone, one whole row, one
      // whole chunk, chunks with a short last one (rows and a tail), 65 chunks (more than a block's).
      for (size_t bytes : {size_t(0), size_t(63), size_t(64), size_t(16384), size_t(40001), size_t(65 * 16384 + 100)}) {
        const size_t stride = (bytes + 3) / 4 * 4 + 4;
        std::vector<uint8_t> runs(3 * stride);
        for (auto& b : runs) b = static_cast<uint8_t>(rng());
        void* dr = on(runs.data(), runs.size());
        uint32_t sums[3];
        CHECK(gpu::checksums(static_cast<uint8_t*>(dr), stride, 3, bytes, sums, nullptr));
        for (size_t r = 0; r < 3; ++r) CHECK_MSG(sums[r] == K.checksum(runs.data() + r * stride, bytes), std::to_string(bytes) + " bytes, run " + std::to_string(r));
        gpuFree(dr);
      }
      {  // the average's scale: JavaScript's rounding of x * (1 / 3)
        float* d = static_cast<float*>(on(x.data(), n * 4));
        CHECK(gpu::scale(d, n, 1.0 / 3.0, nullptr));
        for (size_t i = 0; i < n; ++i) cpu[i] = static_cast<float>(static_cast<double>(x[i]) * (1.0 / 3.0));
        CHECK(same(d));
      }
      {  // PowerSGD's reconstruction, P Q^T
        const size_t rows = 300, cols = 333, r = 3;
        std::vector<float> pt(r * rows), qt(r * cols);
        for (float& v : pt) v = static_cast<float>(rng() % 1000) / 500.0f - 1.0f;
        for (float& v : qt) v = static_cast<float>(rng() % 1000) / 500.0f - 1.0f;
        void* dp = on(pt.data(), pt.size() * 4);
        void* dq = on(qt.data(), qt.size() * 4);
        float* d = static_cast<float*>(gpuAlloc(n * 4, error));
        CHECK(gpu::powerReconstruct(static_cast<float*>(dp), static_cast<float*>(dq), r, rows, cols, d, false, nullptr));
        std::fill(cpu.begin(), cpu.end(), 0.0f);
        compress::powerReconstruct(pt.data(), qt.data(), r, rows, cols, cpu.data(), false);
        back(gpu.data(), d, rows * cols * 4);
        CHECK(std::memcmp(gpu.data(), cpu.data(), rows * cols * 4) == 0);
        for (void* p : {dp, dq, static_cast<void*>(d)}) gpuFree(p);
      }
      {  // the norm's sum: the same bits on every call, within rounding of the CPU's
        double a = 0, b = 0;
        CHECK(gpu::sumSquares(dx, n, &a, nullptr) && gpu::sumSquares(dx, n, &b, nullptr));
        CHECK(a == b);
        CHECK(std::fabs(a - K.sumSquares(x.data(), n)) <= 1e-12 * a);
        CHECK(gpu::sumAbs(dx, n, &a, nullptr));
        CHECK(std::fabs(a - K.sumAbs(x.data(), n)) <= 1e-12 * a);
      }
      gpuFree(dx);
    });
  } else {
    const std::string why = std::string(cudaCompiled() ? "CUDA is compiled in but this machine has no GPU" : "built without nvcc") +
                            "; braid_kernels_test_emulated runs this case's CUDA source on the CPU";
    braid_test::skip("CUDA float32 sum", why);
    braid_test::skip("CUDA kernels of the compressed all-reduce on DeviceBuffers", why);
    braid_test::skip("CUDA compression kernels vs CPU", why);
  }
  std::printf("active kernels: %s\n", activeKernels().isa);
#if defined(BRAID_CUDA_EMULATION)
  return braid_test::finish("kernels (CUDA emulated)");
#else
  return braid_test::finish("kernels");
#endif
}
