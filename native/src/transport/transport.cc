#include "transport/transport.h"

#include <cstdio>

#include "common/status.h"

namespace braid {

void Transport::checkSlowWait(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point slowSince,
                              const std::string& what) {
  if (!stallReported_ && stallWarningMs_ > 0 && now - slowSince > std::chrono::milliseconds(stallWarningMs_)) {
    stallReported_ = true;
    const std::string op = describeOp_ ? describeOp_() : std::string("an operation");
    std::fprintf(stderr,
                 "braid: stall: %s has waited %d ms in %s for %s; the data stopped moving (that rank may have stopped, "
                 "or the link to its host is down)\n",
                 who(rank()).c_str(), stallWarningMs_, op.c_str(), what.c_str());
  }
  if (now > deadline_) {
    throw BraidException(ErrorCode::kTimeout,
                         what + " did not complete before the operation's timeout; that rank may have stopped, its host "
                                "may be unreachable, or it may be stuck (raise `timeoutMs` in init() if it is just slow)");
  }
}

}  // namespace braid
