// Error codes shared with @braid/collectives (BraidError.code). The numeric values cross the
// addon boundary; keep them in sync with packages/collectives/src/errors.ts.
#pragma once
#include <stdexcept>
#include <string>

namespace braid {

enum class ErrorCode : int {
  kOk = 0,
  kInvalidArgument = 1,
  kMismatch = 2,
  kBackendUnavailable = 3,
  kCorruptPayload = 4,
  kTimeout = 5,
  kAborted = 6,
  kInternal = 7,
};

const char* errorCodeName(ErrorCode code);

// The one exception type the native side raises; the addon turns it into a BraidError.
class BraidException : public std::runtime_error {
 public:
  BraidException(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace braid
