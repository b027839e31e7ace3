#include <chrono>

#include "algorithms/collective.h"
#include "kernels/reduce.h"

namespace braid {

double nowMicros() {
  using namespace std::chrono;
  return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}

void reduceTimed(CollectiveArgs& args, void* out, const void* a, const void* b, size_t n) {
  if (args.recorder == nullptr) {
    reduceInto(args.dtype, args.op, out, a, b, n);
    return;
  }
  double start = nowMicros();
  reduceInto(args.dtype, args.op, out, a, b, n);
  args.recorder->reduceSpan(start, nowMicros());
}

BlockLayout BlockLayout::even(size_t count, int blocks) {
  BlockLayout layout;
  layout.offset.resize(static_cast<size_t>(blocks) + 1);
  size_t base = count / blocks, extra = count % blocks, at = 0;
  for (int i = 0; i < blocks; ++i) {
    layout.offset[i] = at;
    at += base + (static_cast<size_t>(i) < extra ? 1 : 0);
  }
  layout.offset[blocks] = at;
  return layout;
}

}  // namespace braid
