// Copies whose destination another core reads next.
#pragma once
#include <cstddef>

namespace braid {

// memcpy with non-temporal (streaming) stores for the bulk: the bytes go to memory instead of
// this core's cache, so a reader on another core fetches them from memory rather than from this
// core's cache. On the development VM's EPYC that reader is sometimes on another die, where the
// cache-to-cache path ran at 1.5 GB/s against 5-8 GB/s through memory (benchmarks/README.md).
// Falls back to memcpy for small copies and off x86-64. The bytes are the same either way.
void copyStreaming(void* dst, const void* src, size_t bytes);

// copyStreaming or memcpy, as a StoreChoice (algorithms/store_choice.h) decided for the op.
void copyWithStores(bool streaming, void* dst, const void* src, size_t bytes);

}  // namespace braid
