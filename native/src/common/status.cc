#include "common/status.h"

namespace braid {

const char* errorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "OK";
    case ErrorCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case ErrorCode::kMismatch: return "MISMATCH";
    case ErrorCode::kBackendUnavailable: return "BACKEND_UNAVAILABLE";
    case ErrorCode::kCorruptPayload: return "CORRUPT_PAYLOAD";
    case ErrorCode::kTimeout: return "TIMEOUT";
    case ErrorCode::kAborted: return "ABORTED";
    case ErrorCode::kInternal: return "INTERNAL";
  }
  return "INTERNAL";
}

}  // namespace braid
