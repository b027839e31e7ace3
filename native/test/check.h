// A minimal test harness for the native tests: named cases, exact checks, and the closing line
// "N passed, N failed" that CI reads.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace braid_test {

struct Registry {
  int passed = 0, failed = 0, skipped = 0;
  bool current = true;
  std::string name;
};
inline Registry& registry() {
  static Registry r;
  return r;
}

inline void fail(const char* file, int line, const std::string& what) {
  Registry& r = registry();
  if (r.current) std::fprintf(stderr, "FAIL %s (%s:%d): %s\n", r.name.c_str(), file, line, what.c_str());
  r.current = false;
}

inline void runCase(const std::string& name, const std::function<void()>& body, bool quiet = false) {
  Registry& r = registry();
  r.name = name;
  r.current = true;
  body();
  if (r.current) {
    ++r.passed;
    if (!quiet) std::printf("ok   %s\n", name.c_str());
  } else {
    ++r.failed;
  }
}

inline void skip(const std::string& name, const std::string& reason) {
  ++registry().skipped;
  std::printf("skip %s: %s\n", name.c_str(), reason.c_str());
}

inline int finish(const char* suite) {
  Registry& r = registry();
  std::printf("%s: %d passed, %d failed, %d skipped\n", suite, r.passed, r.failed, r.skipped);
  return r.failed == 0 ? 0 : 1;
}

}  // namespace braid_test

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) braid_test::fail(__FILE__, __LINE__, "check failed: " #cond); \
  } while (0)
#define CHECK_MSG(cond, msg)                                        \
  do {                                                              \
    if (!(cond)) braid_test::fail(__FILE__, __LINE__, (msg));       \
  } while (0)
