// Chrome trace writer (chrome://tracing, Perfetto): one complete event per op and one per phase
// (queued, negotiating, communicating, reducing), written by world rank 0 as ops finish.
#pragma once
#include <cstdio>
#include <string>

#include "engine/op.h"

namespace braid {

class Timeline {
 public:
  // Opens (truncates) `path`; throws BraidException(INVALID_ARGUMENT) when it cannot.
  explicit Timeline(const std::string& path);
  ~Timeline();
  void record(const OpRecord& op);
  void close();

 private:
  void event(const char* name, const char* cat, int tid, double start, double end, const std::string& args);
  FILE* file_ = nullptr;
  double origin_ = 0;
  bool first_ = true;
};

}  // namespace braid
