// gpu/device_compress's steps (allReduceCompressed on DeviceBuffers) on device memory, against
// payloads and sums built here from the CPU kernels and the payload format (payload.ts): every
// compressor's payload byte for byte, error feedback's residual, the rank-ordered sum of three
// payloads with its average, a corrupted payload named by rank, the half casts and PowerSGD's
// products. On a GPU the CUDA kernels run; braid_device_compress_test_emulated runs the same CUDA
// sources on the CPU (test/cuda_emulation); without either, the host stand-in (BRAID_DEVICE=host).
// QSGD's norm and sign's scale come from the device's own fixed-order sum there: the test takes
// them from the device's payload (within 1e-6 of the CPU's) and asks for everything else exactly.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "gpu/device.h"
#include "gpu/device_compress.h"
#include "kernels/compress.h"
#include "kernels/cuda/compress_cuda.h"
#include "kernels/cuda/cuda_info.h"
#if defined(BRAID_CUDA_EMULATION)
#include <cuda_runtime.h>
#endif

using namespace braid;
using braid_test::runCase;
namespace dc = braid::devicecompress;

namespace {

const CompressKernels& K() { return compressKernels(); }

// Every cudaMalloc, also those that bypass deviceAlloc (Thrust's, a kernel wrapper's own), on the
// emulation; 0 elsewhere.
size_t cudaMallocs() {
#if defined(BRAID_CUDA_EMULATION)
  return braid_cuda_emulation::mallocCount();
#else
  return 0;
#endif
}

// Device memory holding a copy of host bytes, freed on scope exit.
struct OnDevice {
  void* p = nullptr;
  size_t bytes = 0;
  OnDevice(const void* host, size_t n) : bytes(n) {
    std::string error;
    p = deviceAlloc(n, error);
    CHECK(p != nullptr);
    if (host != nullptr) CHECK(deviceCopy(p, const_cast<void*>(host), n, true, error));
  }
  ~OnDevice() { deviceFree(p); }
  OnDevice(const OnDevice&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
  template <class T>
  std::vector<T> back() const {
    std::vector<T> out(bytes / sizeof(T));
    std::string error;
    CHECK(deviceCopy(p, out.data(), bytes, false, error));
    return out;
  }
};

size_t padded(size_t bytes) { return (bytes + 3) & ~size_t{3}; }
size_t ceilDiv(size_t a, size_t b) { return (a + b - 1) / b; }

struct Settings {
  const char* name;
  dc::Kind kind;
  uint32_t param0, param1;
};

std::vector<uint8_t> headerOf(const Settings& s, size_t n, uint32_t seedA, uint32_t seedB) {
  std::vector<uint8_t> h(28, 0);
  const uint32_t magic = 0x315a5242, fields[6] = {static_cast<uint32_t>(n), s.param0, s.param1, seedA, seedB, 0};
  std::memcpy(h.data(), &magic, 4);
  h[4] = 2;  // payload.ts's format version
  h[5] = s.kind;
  std::memcpy(h.data() + 8, fields, 20);
  return h;
}

size_t bodyBytes(const Settings& s, size_t n) {
  switch (s.kind) {
    case dc::kTopk: return 8 * s.param0;
    case dc::kRandomk: return 4 * s.param0;
    case dc::kQsgd: return 4 + s.param1 * n;
    case dc::kInt8: return 4 * ceilDiv(n, s.param0) + n;
    case dc::kSign: return 4 + ceilDiv(n, 8);
    default: return 0;
  }
}

float floatAt(const std::vector<uint8_t>& bytes, size_t at) {
  float f;
  std::memcpy(&f, bytes.data() + at, 4);
  return f;
}

// The payload the CPU makes of x (payload.ts's layout and checksum). QSGD's norm and sign's scale
// are `deviceNumber` (the device's, checked against the CPU's first).
std::vector<uint8_t> cpuPayload(const Settings& s, const std::vector<uint8_t>& header, const std::vector<float>& x, float deviceNumber) {
  const size_t n = x.size();
  std::vector<uint8_t> p(32 + padded(bodyBytes(s, n)), 0);
  std::memcpy(p.data(), header.data(), 28);
  uint8_t* body = p.data() + 32;
  uint32_t seedA, seedB;
  std::memcpy(&seedA, header.data() + 20, 4);
  std::memcpy(&seedB, header.data() + 24, 4);
  switch (s.kind) {
    case dc::kTopk:
      compress::topk(x.data(), n, s.param0, reinterpret_cast<uint32_t*>(body + 4 * s.param0), reinterpret_cast<float*>(body));
      break;
    case dc::kRandomk: {
      std::vector<uint32_t> idx(s.param0);
      compress::randomk(n, s.param0, seedA, seedB, idx.data());
      compress::gather(x.data(), idx.data(), s.param0, reinterpret_cast<float*>(body));
      break;
    }
    case dc::kQsgd: {
      const float norm = static_cast<float>(std::sqrt(K().sumSquares(x.data(), n)));
      CHECK(std::fabs(deviceNumber - norm) <= 1e-6f * norm);
      std::memcpy(body, &deviceNumber, 4);
      if (s.param1 == 1) K().qsgdEncode8(x.data(), n, deviceNumber, static_cast<int32_t>(s.param0), seedA, seedB, reinterpret_cast<int8_t*>(body + 4));
      else K().qsgdEncode16(x.data(), n, deviceNumber, static_cast<int32_t>(s.param0), seedA, seedB, reinterpret_cast<int16_t*>(body + 4));
      break;
    }
    case dc::kInt8:
      K().int8Encode(x.data(), n, s.param0, reinterpret_cast<float*>(body), reinterpret_cast<int8_t*>(body + 4 * ceilDiv(n, s.param0)));
      break;
    case dc::kSign: {
      const float scale = static_cast<float>(K().sumAbs(x.data(), n) / static_cast<double>(n));
      CHECK(std::fabs(deviceNumber - scale) <= 1e-6f * scale);
      std::memcpy(body, &deviceNumber, 4);
      K().signEncode(x.data(), n, body + 4);
      break;
    }
    default: break;
  }
  const uint32_t head = K().checksum(p.data(), 28);
  const uint32_t sum = ((head ^ 0x9e3779b9u) * 0x85ebca6bu) ^ K().checksum(body, p.size() - 32);
  std::memcpy(p.data() + 28, &sum, 4);
  return p;
}

// What a payload carries, added into out (the CPU decoders).
void cpuDecodeInto(const Settings& s, const std::vector<uint8_t>& p, size_t n, std::vector<float>& out) {
  const uint8_t* body = p.data() + 32;
  uint32_t seedA, seedB;
  std::memcpy(&seedA, p.data() + 20, 4);
  std::memcpy(&seedB, p.data() + 24, 4);
  switch (s.kind) {
    case dc::kTopk:
      CHECK(compress::scatter(reinterpret_cast<const uint32_t*>(body + 4 * s.param0), reinterpret_cast<const float*>(body), s.param0, out.data(), n, true));
      break;
    case dc::kRandomk: {
      std::vector<uint32_t> idx(s.param0);
      compress::randomk(n, s.param0, seedA, seedB, idx.data());
      CHECK(compress::scatter(idx.data(), reinterpret_cast<const float*>(body), s.param0, out.data(), n, true));
      break;
    }
    case dc::kQsgd:
      if (s.param1 == 1) K().qsgdDecode8(reinterpret_cast<const int8_t*>(body + 4), n, floatAt(p, 32), static_cast<int32_t>(s.param0), out.data(), true);
      else K().qsgdDecode16(reinterpret_cast<const int16_t*>(body + 4), n, floatAt(p, 32), static_cast<int32_t>(s.param0), out.data(), true);
      break;
    case dc::kInt8:
      K().int8Decode(reinterpret_cast<const int8_t*>(body + 4 * ceilDiv(n, s.param0)), reinterpret_cast<const float*>(body), n, s.param0, out.data(), true);
      break;
    case dc::kSign: K().signDecode(body + 4, n, floatAt(p, 32), out.data(), true); break;
    default: break;
  }
}

std::vector<float> randomValues(std::mt19937& rng, size_t n) {
  std::vector<float> x(n);
  for (float& v : x) v = static_cast<float>(static_cast<int>(rng() % 200001) - 100000) / 7919.0f;
  return x;
}

bool sameBits(const std::vector<float>& a, const std::vector<float>& b) { return a.size() == b.size() && std::memcmp(a.data(), b.data(), 4 * a.size()) == 0; }

const Settings kSettings[] = {
    {"top-k", dc::kTopk, 101, 0},        {"random-k", dc::kRandomk, 257, 0}, {"QSGD 1-byte codes", dc::kQsgd, 127, 1},
    {"QSGD 2-byte codes", dc::kQsgd, 1000, 2}, {"int8", dc::kInt8, 128, 0},  {"sign", dc::kSign, 0, 0},
};

}  // namespace

int main() {
#if defined(BRAID_CUDA_EMULATION)
  const bool emulated = true;
#else
  const bool emulated = false;
#endif
  if (cudaDeviceCount() == 0) setenv("BRAID_DEVICE", "host", 1);
  const DeviceState& device = openDevice(0, -1);
  if (device.kind == DeviceKind::kNone) {
    std::printf("FAIL the device did not open: %s\n", device.error.c_str());
    return 1;
  }
  std::printf("device: %s\n", device.kind == DeviceKind::kHost ? "the host stand-in (BRAID_DEVICE=host; no GPU here)"
                                                               : (emulated ? "CUDA, emulated on the CPU (test/cuda_emulation)" : "CUDA GPU 0"));
  const size_t n = 10007;

  for (const Settings& s : kSettings) {
    for (bool feedback : {false, true}) {
      runCase(std::string("encode: ") + s.name + (feedback ? " with error feedback" : "") + ", the CPU's payload byte for byte", [&] {
        std::mt19937 rng(7 + s.kind);
        const std::vector<float> x = randomValues(rng, n), residual = randomValues(rng, n);
        const std::vector<uint8_t> header = headerOf(s, n, 11, 12);
        OnDevice dx(x.data(), 4 * n), dr(residual.data(), 4 * n), payload(nullptr, 32 + padded(bodyBytes(s, n)));
        dc::Failure failure;
        CHECK(dc::encode(header.data(), dx.as<float>(), n, feedback ? dr.as<float>() : nullptr, payload.as<uint8_t>(), payload.bytes, failure));
        CHECK(failure.message.empty());
        const std::vector<uint8_t> made = payload.back<uint8_t>();
        std::vector<float> corrected = x;
        if (feedback) K().add(x.data(), residual.data(), corrected.data(), n);
        const std::vector<uint8_t> want = cpuPayload(s, header, corrected, floatAt(made, 32));
        CHECK(made == want);
        CHECK(sameBits(dx.back<float>(), corrected));  // x becomes the corrected input
        if (feedback) {
          std::vector<float> sent(n, 0.0f), left(n);
          cpuDecodeInto(s, want, n, sent);
          K().subtract(corrected.data(), sent.data(), left.data(), n);
          CHECK(sameBits(dr.back<float>(), left));
        }
      });
    }
    runCase(std::string("decodeSum: three ") + s.name + " payloads added in rank order and averaged; a flipped byte names its rank", [&] {
      std::mt19937 rng(31 + s.kind);
      const size_t bytes = 32 + padded(bodyBytes(s, n));
      std::vector<uint8_t> gathered;
      std::vector<std::vector<uint8_t>> payloads;
      for (uint32_t r = 0; r < 3; ++r) {
        const std::vector<float> x = randomValues(rng, n);
        const std::vector<uint8_t> header = headerOf(s, n, 100 + r, 200 + r);  // each rank's own seeds
        OnDevice dx(x.data(), 4 * n), payload(nullptr, bytes);
        dc::Failure failure;
        CHECK(dc::encode(header.data(), dx.as<float>(), n, nullptr, payload.as<uint8_t>(), bytes, failure));
        payloads.push_back(payload.back<uint8_t>());
        gathered.insert(gathered.end(), payloads.back().begin(), payloads.back().end());
      }
      const std::vector<uint8_t> mine = headerOf(s, n, 100, 200);
      std::vector<float> want(n, 0.0f);
      for (const auto& p : payloads) cpuDecodeInto(s, p, n, want);
      for (float& v : want) v = static_cast<float>(static_cast<double>(v) * (1.0 / 3.0));
      OnDevice all(gathered.data(), gathered.size()), out(nullptr, 4 * n);
      dc::Failure failure;
      CHECK(dc::decodeSum(mine.data(), all.as<uint8_t>(), 3, bytes, out.as<float>(), n, 1.0 / 3.0, failure));
      CHECK(sameBits(out.back<float>(), want));
      gathered[2 * bytes + 32 + bodyBytes(s, n) / 2] ^= 0x10;
      OnDevice bad(gathered.data(), gathered.size());
      CHECK(!dc::decodeSum(mine.data(), bad.as<uint8_t>(), 3, bytes, out.as<float>(), n, 1.0, failure));
      CHECK(failure.code == ErrorCode::kCorruptPayload);
      CHECK(failure.message.find("rank 2's payload: the checksum does not match") != std::string::npos);
    });
  }

  runCase("castHalf: fp16 and bf16 words with error feedback, and back from the wire", [] {
    std::mt19937 rng(5);
    for (bool bf16 : {false, true}) {
      const std::vector<float> x = randomValues(rng, n), residual = randomValues(rng, n);
      OnDevice dx(x.data(), 4 * n), dr(residual.data(), 4 * n), wire(nullptr, 2 * n);
      dc::Failure failure;
      CHECK(dc::castHalf(dx.as<float>(), n, wire.as<uint16_t>(), bf16, false, dr.as<float>(), failure));
      std::vector<float> corrected(n), back(n), left(n);
      K().add(x.data(), residual.data(), corrected.data(), n);
      std::vector<uint16_t> words(n);
      (bf16 ? K().toBfloat16 : K().toHalf)(corrected.data(), words.data(), n);
      CHECK(wire.back<uint16_t>() == words);
      (bf16 ? K().fromBfloat16 : K().fromHalf)(words.data(), back.data(), n, false);
      K().subtract(corrected.data(), back.data(), left.data(), n);
      CHECK(sameBits(dr.back<float>(), left));
      CHECK(dc::castHalf(dx.as<float>(), n, wire.as<uint16_t>(), bf16, true, nullptr, failure));
      CHECK(sameBits(dx.back<float>(), back));
    }
  });

  // The casts take four values a thread where the pointers are aligned for it, one elsewhere.
  const std::string castCase = "half casts on the GPU: aligned (four a thread) and misaligned (one) pointers, decodes that add, the CPU's bits";
  if (device.kind != DeviceKind::kCuda) {
    braid_test::skip(castCase, "needs CUDA (a GPU, or braid_device_compress_test_emulated); the host stand-in has no CUDA kernels");
  } else {
    runCase(castCase, [] {
      std::mt19937 rng(12);
      const size_t m = 1003;
      const std::vector<float> x = randomValues(rng, m + 1), base = randomValues(rng, m + 1);
      for (bool bf16 : {false, true}) {
        for (size_t offset : {0, 1}) {
          OnDevice dx(x.data(), 4 * (m + 1)), wire(nullptr, 2 * (m + 1)), sum(base.data(), 4 * (m + 1));
          CHECK(gpu::encodeHalf(dx.as<float>() + offset, wire.as<uint16_t>() + offset, m, bf16, nullptr));
          CHECK(gpu::decodeHalfInto(wire.as<uint16_t>() + offset, sum.as<float>() + offset, m, bf16, true, nullptr));
          CHECK(gpu::synchronize(nullptr));
          std::vector<uint16_t> words(m);
          (bf16 ? K().toBfloat16 : K().toHalf)(x.data() + offset, words.data(), m);
          const std::vector<uint16_t> madeWords = wire.back<uint16_t>();
          CHECK(std::vector<uint16_t>(madeWords.begin() + offset, madeWords.begin() + offset + m) == words);
          std::vector<float> want = base;
          (bf16 ? K().fromBfloat16 : K().fromHalf)(words.data(), want.data() + offset, m, true);
          CHECK(sameBits(sum.back<float>(), want));
        }
      }
    });
  }

  runCase("PowerSGD: P = M Q, Q = M^T P and a padded reconstruction's first n values, ranks 3 and 6", [] {
    std::mt19937 rng(6);
    // Rank 6: the GPU's Q takes four columns a thread, so a second, partial group.
    for (size_t r : {size_t(3), size_t(6)}) {
      const size_t rows = 97, cols = 104, used = rows * cols - 50;
      const std::vector<float> m = randomValues(rng, rows * cols), qt = randomValues(rng, r * cols);
      OnDevice dm(m.data(), 4 * m.size()), dq(qt.data(), 4 * qt.size()), dp(nullptr, 4 * r * rows), dq2(nullptr, 4 * r * cols), out(nullptr, 4 * used);
      dc::Failure failure;
      std::vector<float> pt(r * rows), qt2(r * cols), full(rows * cols);
      CHECK(dc::powerP(dm.as<float>(), rows, cols, dq.as<float>(), r, dp.as<float>(), failure));
      compress::powerP(m.data(), rows, cols, qt.data(), r, pt.data());
      CHECK(sameBits(dp.back<float>(), pt));
      CHECK(dc::powerQ(dm.as<float>(), rows, cols, dp.as<float>(), r, dq2.as<float>(), failure));
      compress::powerQ(m.data(), rows, cols, pt.data(), r, qt2.data());
      CHECK(sameBits(dq2.back<float>(), qt2));
      CHECK(dc::powerReconstruct(dp.as<float>(), dq2.as<float>(), r, rows, cols, out.as<float>(), used, failure));
      compress::powerReconstruct(pt.data(), qt2.data(), r, rows, cols, full.data(), false);
      full.resize(used);
      CHECK(sameBits(out.back<float>(), full));
    }
  });

  runCase("scratch: a released block comes back for its exact size only, and repeated steps allocate no device memory (no cudaFree per call)", [] {
    std::string error;
    void* a = deviceScratch(1000, error);
    CHECK(a != nullptr);
    releaseScratch(a, 1000);
    const size_t start = deviceAllocations();
    void* again = deviceScratch(1000, error);
    CHECK(again == a);
    CHECK(deviceAllocations() == start);
    void* other = deviceScratch(1004, error);
    CHECK(other != nullptr && other != a);
    CHECK(deviceAllocations() == start + 1);
    releaseScratch(again, 1000);
    releaseScratch(other, 1004);

    // A padded PowerSGD reconstruction (scratch for the whole matrix) and a top-k encode and sum
    // (on a GPU, scratch for the selection's workspace and the bounds flag), each twice: the second
    // time nothing is allocated (on the emulation, no cudaMalloc at all), and the bits are the same.
    std::mt19937 rng(8);
    const size_t rows = 31, cols = 33, r = 2, used = rows * cols - 7;
    const std::vector<float> pt = randomValues(rng, r * rows), qt = randomValues(rng, r * cols);
    const Settings& s = kSettings[0];
    const size_t bytes = 32 + padded(bodyBytes(s, n));
    const std::vector<float> x = randomValues(rng, n);
    const std::vector<uint8_t> header = headerOf(s, n, 5, 6);
    OnDevice dp(pt.data(), 4 * pt.size()), dq(qt.data(), 4 * qt.size()), out(nullptr, 4 * used), dx(x.data(), 4 * n), payload(nullptr, bytes),
        sum(nullptr, 4 * n);
    dc::Failure failure;
    std::vector<std::vector<float>> results;
    size_t afterFirst = 0, mallocsAfterFirst = 0;
    for (int call = 0; call < 2; ++call) {
      CHECK(dc::powerReconstruct(dp.as<float>(), dq.as<float>(), r, rows, cols, out.as<float>(), used, failure));
      CHECK(dc::encode(header.data(), dx.as<float>(), n, nullptr, payload.as<uint8_t>(), bytes, failure));
      CHECK(dc::decodeSum(header.data(), payload.as<uint8_t>(), 1, bytes, sum.as<float>(), n, 1.0, failure));
      std::vector<float> got = out.back<float>(), summed = sum.back<float>();
      got.insert(got.end(), summed.begin(), summed.end());
      results.push_back(std::move(got));
      if (call == 0) {
        afterFirst = deviceAllocations();
        mallocsAfterFirst = cudaMallocs();
      }
    }
    CHECK(deviceAllocations() == afterFirst);
    CHECK(cudaMallocs() == mallocsAfterFirst);
    CHECK(sameBits(results[0], results[1]));
  });

  runCase("refusals: a payload buffer of the wrong size, a header for another length", [] {
    const Settings& s = kSettings[0];
    const std::vector<float> x(n, 1.0f);
    const std::vector<uint8_t> header = headerOf(s, n, 1, 2);
    OnDevice dx(x.data(), 4 * n), payload(nullptr, 32 + padded(bodyBytes(s, n)) + 4);
    dc::Failure failure;
    CHECK(!dc::encode(header.data(), dx.as<float>(), n, nullptr, payload.as<uint8_t>(), payload.bytes, failure));
    CHECK(failure.code == ErrorCode::kInvalidArgument && failure.message.find("the payload buffer is") != std::string::npos);
    CHECK(!dc::encode(header.data(), dx.as<float>(), n - 1, nullptr, payload.as<uint8_t>(), payload.bytes - 4, failure));
    CHECK(failure.message.find("the header's length is not the buffer's") != std::string::npos);
  });

  return braid_test::finish(emulated ? "device compress (CUDA emulated)" : "device compress");
}
