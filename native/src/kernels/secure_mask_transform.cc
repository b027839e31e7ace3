#include "kernels/secure_mask_transform.h"

#include <algorithm>
#include <string>

#include "common/status.h"
#include "kernels/secure_mask.h"

namespace braid {

void SecureMaskTransform::in(void* at, const void* second, size_t from, size_t to) {
  if (from != maskedUpTo_) {
    throw BraidException(ErrorCode::kInternal, "secure aggregation: chunks must be masked in order (asked for " + std::to_string(from) +
                                                   ", next is " + std::to_string(maskedUpTo_) + ")");
  }
  beyond_ += secureMaskRange(static_cast<const float*>(second), static_cast<int32_t*>(at), p_.values, from, to, p_.scale, p_.clip,
                             p_.limit, p_.keys.data(), p_.signs.data(), p_.signs.size(), p_.call, beyond_);
  maskedUpTo_ = to;
}

void SecureMaskTransform::out(const void* at, void* buf, void* second, size_t from, size_t to) {
  const int32_t* sum = static_cast<const int32_t*>(at);
  const size_t end = std::min(to, p_.values);
  if (end > from) secureUnmask(sum, static_cast<float*>(second) + from, end - from, p_.divisor);
  // The count word: how many values were beyond the range, summed over the ranks.
  if (to == p_.values + 1 && to > from) static_cast<int32_t*>(buf)[p_.values] = sum[p_.values - from];
}

}  // namespace braid
