// allReduceCompressed on DeviceBuffers (issue 14): the steps between the collectives, on the
// device's memory. @braid/compression drives them: encode a rank's payload where its values
// are, all-gather the payloads with the DeviceBuffer all-gather (NCCL on a GPU), then check and
// decode them in rank order into the result. The payloads are byte for byte the CPU's format
// (payload.ts: header, sections, checksum), so `download()` of one decodes with decompress().
//
// On a GPU the CUDA kernels run (cuda/compress.cu's namespace gpu), on the host stand-in
// (BRAID_DEVICE=host) the CPU ones: the same steps, so the stand-in tests the orchestration and
// gives the host path's bits. Every call returns when its work is done.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace braid {
namespace devicecompress {

constexpr size_t kHeaderBytes = 32;

// The payload header's fields (payload.ts): the kind is the index in its KINDS list.
enum Kind : uint8_t { kNone = 0, kFp16, kBf16, kTopk, kRandomk, kQsgd, kInt8, kSign, kPowerSgd };

struct Failure {
  ErrorCode code = ErrorCode::kOk;
  std::string message;
};

// Writes x's payload (`payloadBytes` long; `header` is its first 28 bytes from payload.ts) into
// `payload`. With `residual` (error feedback): x += residual first, and afterwards residual =
// x - what the payload carries, as ErrorFeedback does.
bool encode(const uint8_t* header, float* x, size_t n, float* residual, uint8_t* payload, size_t payloadBytes, Failure& failure);

// `ranks` payloads of `payloadBytes`, end to end in `gathered`: each checked (the header's fixed
// fields against `header`, the checksum, the norm or scale) and decoded, in rank order, into
// out = sum; then out *= factor where factor != 1. A bad payload is CORRUPT_PAYLOAD naming the rank.
bool decodeSum(const uint8_t* header, const uint8_t* gathered, size_t ranks, size_t payloadBytes, float* out, size_t n, double factor,
               Failure& failure);

// fp16 / bf16 travel as half words through the all-reduce: x -> wire, and back with `fromWire`.
// With `residual` on the way there: x += residual, residual = x - decode(wire).
bool castHalf(float* x, size_t n, uint16_t* wire, bool bfloat16, bool fromWire, float* residual, Failure& failure);

// PowerSGD's products on device memory (compress.h's powerP, powerQ, powerReconstruct).
bool powerP(const float* m, size_t rows, size_t cols, const float* qt, size_t r, float* pt, Failure& failure);
bool powerQ(const float* m, size_t rows, size_t cols, const float* pt, size_t r, float* qt, Failure& failure);
bool powerReconstruct(const float* pt, const float* qt, size_t r, size_t rows, size_t cols, float* out, size_t n, Failure& failure);

// Element-wise steps: out = a + b, out = a - b, out *= factor (in double, rounded to float), zero.
bool add(const float* a, const float* b, float* out, size_t n, Failure& failure);
bool subtract(const float* a, const float* b, float* out, size_t n, Failure& failure);
bool scale(float* out, size_t n, double factor, Failure& failure);
bool copy(void* to, const void* from, size_t bytes, Failure& failure);
bool zero(void* p, size_t bytes, Failure& failure);
// Waits for the steps above (they are asynchronous on a GPU; the others here wait themselves).
bool synchronize(Failure& failure);

}  // namespace devicecompress
}  // namespace braid
