#include "gpu/device_compress.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "gpu/device.h"
#include "kernels/compress.h"
#include "kernels/cuda/compress_cuda.h"

namespace braid {
namespace devicecompress {

namespace {

const CompressKernels& K() { return compressKernels(); }

bool onGpu() {
  const DeviceState* d = openedDevice();
  return d != nullptr && d->kind == DeviceKind::kCuda;
}

bool fail(Failure& failure, ErrorCode code, std::string message) {
  failure.code = code;
  failure.message = std::move(message);
  return false;
}

// A GPU step's result: a launch or copy that fails is INTERNAL, naming the step.
bool gpuOk(bool ok, Failure& failure, const char* step) {
  return ok || fail(failure, ErrorCode::kInternal, std::string("the GPU step '") + step + "' failed (a CUDA launch or copy error)");
}

// Device memory for the duration of a call (host memory on the stand-in), from the scratch cache
// (device.h: no cudaFree, which would wait for the whole GPU, per call).
class Scratch {
 public:
  Scratch(size_t bytes, Failure& failure) : bytes_(bytes) {
    if (bytes == 0) return;  // nothing asked: ok, and never dereferenced
    std::string error;
    pointer_ = deviceScratch(bytes, error);
    ok_ = pointer_ != nullptr || fail(failure, ErrorCode::kInternal, "could not allocate " + std::to_string(bytes) + " bytes of scratch on the device: " + error);
  }
  ~Scratch() { releaseScratch(pointer_, bytes_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  bool ok() const { return ok_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(pointer_);
  }

 private:
  void* pointer_ = nullptr;
  size_t bytes_ = 0;
  bool ok_ = true;
};

bool bind(Failure& failure) {
  std::string error;
  return deviceBindThread(error) || fail(failure, ErrorCode::kBackendUnavailable, "the device could not be used: " + error);
}

// Host <-> device copies that work on the stand-in too.
bool toHost(void* host, const void* device, size_t bytes, Failure& failure) {
  std::string error;
  return deviceCopy(const_cast<void*>(device), host, bytes, false, error) || fail(failure, ErrorCode::kInternal, "a download failed: " + error);
}
bool toDevice(void* device, const void* host, size_t bytes, Failure& failure) {
  std::string error;
  return deviceCopy(device, const_cast<void*>(host), bytes, true, error) || fail(failure, ErrorCode::kInternal, "an upload failed: " + error);
}

uint32_t read32(const uint8_t* at) {
  uint32_t v;
  std::memcpy(&v, at, 4);
  return v;
}

size_t padded(size_t bytes) { return (bytes + 3) & ~size_t{3}; }
size_t ceilDiv(size_t a, size_t b) { return (a + b - 1) / b; }

const char* kKindNames[] = {"none", "fp16", "bf16", "topk", "randomk", "qsgd", "int8", "sign", "powersgd"};

// A header's fields, and where its sections lie (offsets from the payload's start).
struct Layout {
  Kind kind;
  size_t length, param0, param1;
  uint32_t seedA, seedB;
  size_t bodyBytes = 0;
  size_t second = 0;  // the second section's offset (top-k's indices, QSGD's and sign's codes, int8's codes)
};

bool layoutOf(const uint8_t* header, Layout& l, Failure& failure) {
  l.kind = static_cast<Kind>(header[5]);
  l.length = read32(header + 8);
  l.param0 = read32(header + 12);
  l.param1 = read32(header + 16);
  l.seedA = read32(header + 20);
  l.seedB = read32(header + 24);
  const size_t n = l.length;
  switch (l.kind) {
    case kTopk:
      if (l.param0 > n) return fail(failure, ErrorCode::kInvalidArgument, "top-k: k is larger than the length");
      l.bodyBytes = 8 * l.param0;
      l.second = kHeaderBytes + 4 * l.param0;
      return true;
    case kRandomk:
      if (l.param0 > n) return fail(failure, ErrorCode::kInvalidArgument, "random-k: k is larger than the length");
      l.bodyBytes = 4 * l.param0;
      return true;
    case kQsgd:
      if (l.param0 < 1 || l.param0 > 32767 || l.param1 != (l.param0 <= 127 ? 1u : 2u))
        return fail(failure, ErrorCode::kInvalidArgument, "QSGD: bad levels or code size");
      l.bodyBytes = 4 + l.param1 * n;
      l.second = kHeaderBytes + 4;
      return true;
    case kInt8:
      if (l.param0 < 1) return fail(failure, ErrorCode::kInvalidArgument, "int8: block size 0");
      l.bodyBytes = 4 * ceilDiv(n, l.param0) + n;
      l.second = kHeaderBytes + 4 * ceilDiv(n, l.param0);
      return true;
    case kSign:
      l.bodyBytes = 4 + ceilDiv(n, 8);
      l.second = kHeaderBytes + 4;
      return true;
    default:
      return fail(failure, ErrorCode::kInvalidArgument,
                  std::string("compressor '") + (header[5] < 9 ? kKindNames[header[5]] : "?") + "' has no payload steps on the device");
  }
}

// The payload checksum (payload.ts's checksumOf): the header's first 28 bytes and the body, combined.
uint32_t combine(const uint8_t* header, uint32_t body) {
  const uint32_t head = K().checksum(header, 28);
  return ((head ^ 0x9e3779b9u) * 0x85ebca6bu) ^ body;
}

// random-k's indices from the header's seeds, where the values are (uploaded on a GPU).
bool randomIndices(const Layout& l, std::vector<uint32_t>& host, Scratch& device, Failure& failure) {
  host.resize(l.param0);
  compress::randomk(l.length, l.param0, l.seedA, l.seedB, host.data());
  return !onGpu() || toDevice(device.as<uint32_t>(), host.data(), 4 * l.param0, failure);
}

// One payload's values into out (added with `accumulate`; else out is written whole).
bool decodeOne(const Layout& l, const uint8_t* payload, float* out, bool accumulate, int rank, Failure& failure) {
  const bool gpu = onGpu();
  const size_t n = l.length;
  const std::string whose = rank >= 0 ? "rank " + std::to_string(rank) + "'s " : "the ";
  switch (l.kind) {
    case kTopk:
    case kRandomk: {
      const size_t k = l.param0;
      const float* values = reinterpret_cast<const float*>(payload + kHeaderBytes);
      Scratch indexSpace(l.kind == kRandomk && gpu ? 4 * k : 0, failure);
      if (!indexSpace.ok()) return false;
      std::vector<uint32_t> drawn;
      const uint32_t* indices = reinterpret_cast<const uint32_t*>(payload + l.second);
      if (l.kind == kRandomk) {
        if (!randomIndices(l, drawn, indexSpace, failure)) return false;
        indices = gpu ? indexSpace.as<uint32_t>() : drawn.data();
      }
      if (!accumulate && !zero(out, 4 * n, failure)) return false;
      if (!gpu) {
        if (!compress::scatter(indices, values, k, out, n, true))
          return fail(failure, ErrorCode::kCorruptPayload, whose + "top-k payload holds indices out of range or out of order");
        return true;
      }
      Scratch bad(4, failure);
      uint32_t flag = 0;
      if (!bad.ok() || !gpuOk(gpu::zero(bad.as<uint32_t>(), 4, nullptr), failure, "zero") ||
          !gpuOk(gpu::scatterInto(indices, values, k, out, n, true, bad.as<uint32_t>(), nullptr), failure, "scatter") ||
          !toHost(&flag, bad.as<uint32_t>(), 4, failure))
        return false;
      return flag == 0 || fail(failure, ErrorCode::kCorruptPayload, whose + "top-k payload holds indices out of range or out of order");
    }
    case kQsgd: {
      float norm;
      if (!toHost(&norm, payload + kHeaderBytes, 4, failure)) return false;
      if (!std::isfinite(norm) || norm < 0) return fail(failure, ErrorCode::kCorruptPayload, whose + "QSGD payload holds an invalid norm");
      const int32_t levels = static_cast<int32_t>(l.param0);
      const void* codes = payload + l.second;
      if (gpu) {
        const float unit = norm / static_cast<float>(levels);
        return gpuOk(gpu::decodeQsgdInto(codes, static_cast<int>(l.param1), n, unit, out, accumulate, nullptr), failure, "QSGD decode");
      }
      if (l.param1 == 1) K().qsgdDecode8(static_cast<const int8_t*>(codes), n, norm, levels, out, accumulate);
      else K().qsgdDecode16(static_cast<const int16_t*>(codes), n, norm, levels, out, accumulate);
      return true;
    }
    case kInt8: {
      const float* scales = reinterpret_cast<const float*>(payload + kHeaderBytes);
      const int8_t* codes = reinterpret_cast<const int8_t*>(payload + l.second);
      if (gpu) return gpuOk(gpu::decodeInt8Into(codes, scales, n, l.param0, out, accumulate, nullptr), failure, "int8 decode");
      K().int8Decode(codes, scales, n, l.param0, out, accumulate);
      return true;
    }
    case kSign: {
      float scale;
      if (!toHost(&scale, payload + kHeaderBytes, 4, failure)) return false;
      if (!std::isfinite(scale)) return fail(failure, ErrorCode::kCorruptPayload, whose + "sign payload holds an invalid scale");
      const uint8_t* bits = payload + l.second;
      if (gpu) return gpuOk(gpu::decodeSignInto(bits, n, scale, out, accumulate, nullptr), failure, "sign decode");
      K().signDecode(bits, n, scale, out, accumulate);
      return true;
    }
    default:
      return fail(failure, ErrorCode::kInvalidArgument, "no device decoder for this compressor");
  }
}

bool fill(const Layout& l, const float* x, uint8_t* payload, Failure& failure) {
  const bool gpu = onGpu();
  const size_t n = l.length;
  switch (l.kind) {
    case kTopk: {
      float* values = reinterpret_cast<float*>(payload + kHeaderBytes);
      uint32_t* indices = reinterpret_cast<uint32_t*>(payload + l.second);
      if (l.param0 == 0) return true;
      if (gpu) {
        Scratch workspace(gpu::topkWorkspaceBytes(n), failure);
        return workspace.ok() && gpuOk(gpu::topk(x, n, l.param0, indices, values, nullptr, workspace.as<void>()), failure, "top-k");
      }
      compress::topk(x, n, l.param0, indices, values);
      return true;
    }
    case kRandomk: {
      float* values = reinterpret_cast<float*>(payload + kHeaderBytes);
      Scratch indexSpace(gpu ? 4 * l.param0 : 0, failure);
      if (!indexSpace.ok()) return false;
      std::vector<uint32_t> drawn;
      if (!randomIndices(l, drawn, indexSpace, failure)) return false;
      if (gpu) return gpuOk(gpu::gather(x, indexSpace.as<uint32_t>(), l.param0, values, nullptr), failure, "gather");
      compress::gather(x, drawn.data(), l.param0, values);
      return true;
    }
    case kQsgd: {
      double squares = 0;
      if (!gpu) squares = K().sumSquares(x, n);
      else if (!gpuOk(gpu::sumSquares(x, n, &squares, nullptr), failure, "sum of squares")) return false;
      const float norm = static_cast<float>(std::sqrt(squares));  // Math.fround(Math.sqrt(...)), as payload.ts
      if (!toDevice(payload + kHeaderBytes, &norm, 4, failure)) return false;
      const int32_t levels = static_cast<int32_t>(l.param0);
      void* codes = payload + l.second;
      if (gpu) {
        const float scale = norm > 0 ? static_cast<float>(levels) / norm : 0.0f;
        return gpuOk(gpu::encodeQsgdCodes(x, n, scale, levels, l.seedA, l.seedB, codes, static_cast<int>(l.param1), nullptr), failure, "QSGD");
      }
      if (l.param1 == 1) K().qsgdEncode8(x, n, norm, levels, l.seedA, l.seedB, static_cast<int8_t*>(codes));
      else K().qsgdEncode16(x, n, norm, levels, l.seedA, l.seedB, static_cast<int16_t*>(codes));
      return true;
    }
    case kInt8: {
      float* scales = reinterpret_cast<float*>(payload + kHeaderBytes);
      int8_t* codes = reinterpret_cast<int8_t*>(payload + l.second);
      if (gpu) return gpuOk(gpu::encodeInt8(x, n, l.param0, scales, codes, nullptr), failure, "int8");
      K().int8Encode(x, n, l.param0, scales, codes);
      return true;
    }
    case kSign: {
      double absolute = 0;
      if (!gpu) absolute = K().sumAbs(x, n);
      else if (!gpuOk(gpu::sumAbs(x, n, &absolute, nullptr), failure, "sum of |x|")) return false;
      const float scale = n > 0 ? static_cast<float>(absolute / static_cast<double>(n)) : 0.0f;
      if (!toDevice(payload + kHeaderBytes, &scale, 4, failure)) return false;
      uint8_t* bits = payload + l.second;
      if (gpu) return gpuOk(gpu::encodeSign(x, n, bits, nullptr), failure, "sign");
      K().signEncode(x, n, bits);
      return true;
    }
    default:
      return fail(failure, ErrorCode::kInvalidArgument, "no device encoder for this compressor");
  }
}

bool finish(Failure& failure) { return !onGpu() || gpuOk(gpu::synchronize(nullptr), failure, "synchronize"); }

}  // namespace

bool add(const float* a, const float* b, float* out, size_t n, Failure& failure) {
  if (onGpu()) return gpuOk(gpu::add(a, b, out, n, nullptr), failure, "add");
  K().add(a, b, out, n);
  return true;
}

bool subtract(const float* a, const float* b, float* out, size_t n, Failure& failure) {
  if (onGpu()) return gpuOk(gpu::errorFeedback(a, b, out, n, nullptr), failure, "subtract");
  K().subtract(a, b, out, n);
  return true;
}

bool scale(float* out, size_t n, double factor, Failure& failure) {
  if (onGpu()) return gpuOk(gpu::scale(out, n, factor, nullptr), failure, "scale");
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<double>(out[i]) * factor);
  return true;
}

bool copy(void* to, const void* from, size_t bytes, Failure& failure) {
  if (onGpu()) return gpuOk(gpu::copy(to, from, bytes, nullptr), failure, "copy");
  if (bytes > 0) std::memmove(to, from, bytes);
  return true;
}

bool zero(void* p, size_t bytes, Failure& failure) {
  if (onGpu()) return gpuOk(gpu::zero(p, bytes, nullptr), failure, "zero");
  if (bytes > 0) std::memset(p, 0, bytes);
  return true;
}

bool synchronize(Failure& failure) { return finish(failure); }

bool encode(const uint8_t* header, float* x, size_t n, float* residual, uint8_t* payload, size_t payloadBytes, Failure& failure) {
  if (!bind(failure)) return false;
  Layout l;
  if (!layoutOf(header, l, failure)) return false;
  if (l.length != n) return fail(failure, ErrorCode::kInvalidArgument, "the header's length is not the buffer's");
  if (payloadBytes != kHeaderBytes + padded(l.bodyBytes))
    return fail(failure, ErrorCode::kInvalidArgument,
                "the payload buffer is " + std::to_string(payloadBytes) + " bytes; this payload takes " + std::to_string(kHeaderBytes + padded(l.bodyBytes)));
  // Error feedback: x becomes the corrected input (x + residual), as ErrorFeedback.corrected.
  if (residual != nullptr && !add(x, residual, x, n, failure)) return false;
  // Padding and all: the CPU's payloads start zeroed, and the checksum covers every byte.
  if (!zero(payload + kHeaderBytes, payloadBytes - kHeaderBytes, failure) || !fill(l, x, payload, failure)) return false;
  // residual = corrected - what the payload carries.
  if (residual != nullptr && (!decodeOne(l, payload, residual, false, -1, failure) || !subtract(x, residual, residual, n, failure))) return false;
  uint32_t body = 0;
  if (onGpu()) {
    if (!gpuOk(gpu::checksums(payload + kHeaderBytes, 0, 1, payloadBytes - kHeaderBytes, &body, nullptr), failure, "checksum")) return false;
  } else {
    body = K().checksum(payload + kHeaderBytes, payloadBytes - kHeaderBytes);
  }
  uint8_t full[kHeaderBytes];
  std::memcpy(full, header, 28);
  const uint32_t sum = combine(header, body);
  std::memcpy(full + 28, &sum, 4);
  return toDevice(payload, full, kHeaderBytes, failure) && finish(failure);
}

bool decodeSum(const uint8_t* header, const uint8_t* gathered, size_t ranks, size_t payloadBytes, float* out, size_t n, double factor,
               Failure& failure) {
  if (!bind(failure)) return false;
  Layout mine;
  if (!layoutOf(header, mine, failure)) return false;
  if (mine.length != n || payloadBytes != kHeaderBytes + padded(mine.bodyBytes))
    return fail(failure, ErrorCode::kInvalidArgument, "the payloads' size does not follow from the header");
  const size_t bodyBytes = payloadBytes - kHeaderBytes;
  std::vector<uint8_t> headers(ranks * kHeaderBytes);
  for (size_t r = 0; r < ranks; ++r) {
    if (!toHost(headers.data() + r * kHeaderBytes, gathered + r * payloadBytes, kHeaderBytes, failure)) return false;
  }
  std::vector<uint32_t> bodies(ranks);
  if (onGpu()) {
    if (!gpuOk(gpu::checksums(gathered + kHeaderBytes, payloadBytes, ranks, bodyBytes, bodies.data(), nullptr), failure, "checksum")) return false;
  } else {
    for (size_t r = 0; r < ranks; ++r) bodies[r] = K().checksum(gathered + r * payloadBytes + kHeaderBytes, bodyBytes);
  }
  std::vector<Layout> layouts(ranks);
  for (size_t r = 0; r < ranks; ++r) {
    const uint8_t* h = headers.data() + r * kHeaderBytes;
    const std::string who = "rank " + std::to_string(r) + "'s payload";
    if (read32(h + 28) != combine(h, bodies[r]))
      return fail(failure, ErrorCode::kCorruptPayload, who + ": the checksum does not match its contents (corrupted in transit?)");
    if (std::memcmp(h, header, 20) != 0) {
      const std::string kind = h[5] < 9 ? kKindNames[h[5]] : "an unknown compressor";
      return fail(failure, ErrorCode::kCorruptPayload,
                  who + " was made by '" + kind + "' with other parameters than this rank's '" + kKindNames[mine.kind] + "' (length " +
                      std::to_string(read32(h + 8)) + " against " + std::to_string(n) + "); every rank must use the same compressor and options");
    }
    layouts[r] = mine;
    layouts[r].seedA = read32(h + 20);
    layouts[r].seedB = read32(h + 24);
  }
  // The CPU's order: zero, then every rank's values added in turn.
  if (!zero(out, 4 * n, failure)) return false;
  for (size_t r = 0; r < ranks; ++r) {
    if (!decodeOne(layouts[r], gathered + r * payloadBytes, out, true, static_cast<int>(r), failure)) return false;
  }
  if (factor != 1.0 && !scale(out, n, factor, failure)) return false;
  return finish(failure);
}

bool castHalf(float* x, size_t n, uint16_t* wire, bool bfloat16, bool fromWire, float* residual, Failure& failure) {
  if (!bind(failure)) return false;
  const bool gpu = onGpu();
  if (fromWire) {
    if (gpu) return gpuOk(gpu::decodeHalfInto(wire, x, n, bfloat16, false, nullptr), failure, "half decode") && finish(failure);
    (bfloat16 ? K().fromBfloat16 : K().fromHalf)(wire, x, n, false);
    return true;
  }
  if (residual != nullptr && !add(x, residual, x, n, failure)) return false;
  if (gpu) {
    if (!gpuOk(gpu::encodeHalf(x, wire, n, bfloat16, nullptr), failure, "half encode")) return false;
    if (residual != nullptr && !gpuOk(gpu::decodeHalfInto(wire, residual, n, bfloat16, false, nullptr), failure, "half decode")) return false;
  } else {
    (bfloat16 ? K().toBfloat16 : K().toHalf)(x, wire, n);
    if (residual != nullptr) (bfloat16 ? K().fromBfloat16 : K().fromHalf)(wire, residual, n, false);
  }
  if (residual != nullptr && !subtract(x, residual, residual, n, failure)) return false;
  return finish(failure);
}

bool powerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt, Failure& failure) {
  if (!bind(failure)) return false;
  if (onGpu()) return gpuOk(gpu::powerP(m, rows, cols, qt, r, pt, nullptr), failure, "PowerSGD P") && finish(failure);
  compress::powerP(m, rows, cols, qt, r, pt);
  return true;
}

bool powerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt, Failure& failure) {
  if (!bind(failure)) return false;
  if (onGpu()) return gpuOk(gpu::powerQ(m, rows, cols, pt, r, qt, nullptr), failure, "PowerSGD Q") && finish(failure);
  compress::powerQ(m, rows, cols, pt, r, qt);
  return true;
}

bool powerReconstruct(const float* pt, const float* qt, size_t r, size_t rows, size_t cols, float* out, size_t n, Failure& failure) {
  if (!bind(failure)) return false;
  const bool gpu = onGpu();
  // Padded matrices (rows x cols > n) are built whole, then their first n values kept, as reconstruct() does.
  Scratch full(rows * cols == n ? 0 : 4 * rows * cols, failure);
  if (!full.ok()) return false;
  float* target = rows * cols == n ? out : full.as<float>();
  if (gpu) {
    if (!gpuOk(gpu::powerReconstruct(pt, qt, r, rows, cols, target, false, nullptr), failure, "PowerSGD reconstruct")) return false;
  } else {
    compress::powerReconstruct(pt, qt, r, rows, cols, target, false);
  }
  if (target != out && !copy(out, target, 4 * n, failure)) return false;
  return finish(failure);
}

}  // namespace devicecompress
}  // namespace braid
