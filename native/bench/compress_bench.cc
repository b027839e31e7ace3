// Compression kernel throughput, GB/s of float32 input, beside memcpy of the same bytes in the
// same process; the median of several repetitions each.
//   braid_compress_bench [--elements 16777216] [--reps 7] [--json out.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/compress.h"

using namespace braid;

namespace {
double medianSeconds(int reps, const std::function<void()>& fn) {
  std::vector<double> t;
  fn();  // warm the caches and page tables
  for (int r = 0; r < reps; ++r) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  size_t n = 16u << 20;
  int reps = 7;
  std::string json;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--elements") n = std::stoull(argv[i + 1]);
    else if (k == "--reps") reps = std::stoi(argv[i + 1]);
    else if (k == "--json") json = argv[i + 1];
  }
  const CompressKernels& K = compressKernels();
  std::vector<float> x(n), y(n), z(n);
  uint32_t s = 12345;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1103515245u + 12345u;
    x[i] = (static_cast<float>(s >> 8) / 16777216.0f - 0.5f) * 2.0f;
  }
  std::vector<uint16_t> h(n);
  std::vector<int8_t> codes(n);
  std::vector<float> scales(n / 256 + 1);
  std::vector<uint8_t> bits(n / 8 + 1);
  const size_t k1 = n / 100, k01 = n / 1000;
  std::vector<uint32_t> idx(k1);
  std::vector<float> vals(k1);
  std::vector<uint8_t> bytes(n * 4);
  const size_t side = 4096;
  const size_t rank = 4;
  std::vector<float> pt(rank * side), qt(rank * side, 0.01f);

  struct Row {
    std::string name;
    double seconds;
  };
  std::vector<Row> rows;
  auto run = [&](const std::string& name, const std::function<void()>& fn) { rows.push_back({name, medianSeconds(reps, fn)}); };
  run("memcpy", [&] { std::memcpy(y.data(), x.data(), n * 4); });
  run("fp16 encode", [&] { K.toHalf(x.data(), h.data(), n); });
  run("fp16 decode", [&] { K.fromHalf(h.data(), y.data(), n, false); });
  run("bf16 encode", [&] { K.toBfloat16(x.data(), h.data(), n); });
  run("bf16 decode", [&] { K.fromBfloat16(h.data(), y.data(), n, false); });
  run("int8 encode", [&] { K.int8Encode(x.data(), n, 256, scales.data(), codes.data()); });
  run("int8 decode", [&] { K.int8Decode(codes.data(), scales.data(), n, 256, y.data(), false); });
  run("sign encode", [&] { K.signEncode(x.data(), n, bits.data()); });
  run("sign decode", [&] { K.signDecode(bits.data(), n, 0.5f, y.data(), false); });
  run("qsgd encode (s=127)", [&] { K.qsgdEncode8(x.data(), n, 1000.0f, 127, 1, 2, codes.data()); });
  run("qsgd decode", [&] { K.qsgdDecode8(codes.data(), n, 1000.0f, 127, y.data(), false); });
  run("top-k 1%", [&] { compress::topk(x.data(), n, k1, idx.data(), vals.data()); });
  run("top-k 0.1%", [&] { compress::topk(x.data(), n, k01, idx.data(), vals.data()); });
  run("random-k 1% + gather", [&] {
    compress::randomk(n, k1, 1, 2, idx.data());
    compress::gather(x.data(), idx.data(), k1, vals.data());
  });
  run("error feedback (x - sent)", [&] { K.subtract(x.data(), y.data(), z.data(), n); });
  run("checksum", [&] { (void)K.checksum(reinterpret_cast<const uint8_t*>(x.data()), n * 4); });
  const size_t m = std::min(n, side * side);
  run("powersgd r=4 (4096x4096)", [&] {
    compress::powerP(x.data(), side, m / side, qt.data(), rank, pt.data());
    compress::orthonormalize(pt.data(), rank, side);
    compress::powerQ(x.data(), side, m / side, pt.data(), rank, qt.data());
  });

  const double memcpySeconds = rows[0].seconds;
  std::printf("# compression kernels, %zu float32 (%.0f MiB), isa %s, median of %d\n", n, n * 4.0 / (1 << 20), K.isa, reps);
  std::printf("%-28s %10s %10s %10s\n", "kernel", "ms", "GB/s", "x memcpy");
  std::string out = "{\"elements\":" + std::to_string(n) + ",\"isa\":\"" + K.isa + "\",\"rows\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const double inputBytes = rows[i].name.find("decode") != std::string::npos ? 0 : n * 4.0;
    const double gbps = (inputBytes > 0 ? inputBytes : n * 4.0) / rows[i].seconds / 1e9;
    std::printf("%-28s %10.2f %10.2f %10.2f\n", rows[i].name.c_str(), rows[i].seconds * 1e3, gbps, memcpySeconds / rows[i].seconds);
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s{\"kernel\":\"%s\",\"ms\":%.4f,\"gbps\":%.3f,\"vsMemcpy\":%.4f}", i ? "," : "", rows[i].name.c_str(), rows[i].seconds * 1e3, gbps,
                  memcpySeconds / rows[i].seconds);
    out += buf;
  }
  out += "]}\n";
  if (!json.empty()) {
    if (FILE* f = std::fopen(json.c_str(), "w")) {
      std::fputs(out.c_str(), f);
      std::fclose(f);
    }
  }
  return 0;
}
