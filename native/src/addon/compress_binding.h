#pragma once
#include <napi.h>

namespace braid {
// Adds `compress` (the compression kernels) to the addon's exports.
void initCompressBinding(Napi::Env env, Napi::Object exports);
}  // namespace braid
