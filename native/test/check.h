// A minimal test harness for the native tests: named cases, exact checks, and the closing line
// "N passed, N failed" that CI reads.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace braid_test {

struct Registry {
  int passed = 0, failed = 0, skipped = 0, unselected = 0;
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

// BRAID_TEST_CASES="part,part": only the cases whose names contain one of the parts run (the TSan
// run picks the cases with threads); the others are neither run nor counted.
inline bool selected(const std::string& name) {
  const char* filter = std::getenv("BRAID_TEST_CASES");
  if (filter == nullptr || *filter == '\0') return true;
  std::string parts = filter;
  for (size_t start = 0; start <= parts.size();) {
    size_t end = parts.find(',', start);
    if (end == std::string::npos) end = parts.size();
    if (end > start && name.find(parts.substr(start, end - start)) != std::string::npos) return true;
    start = end + 1;
  }
  return false;
}

inline void runCase(const std::string& name, const std::function<void()>& body, bool quiet = false) {
  Registry& r = registry();
  if (!selected(name)) {
    ++r.unselected;
    return;
  }
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
  if (r.unselected > 0) std::printf("(%d cases not selected by BRAID_TEST_CASES)\n", r.unselected);
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
