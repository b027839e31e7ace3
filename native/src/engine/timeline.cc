#include "engine/timeline.h"

#include <cerrno>
#include <cstring>

#include "algorithms/collective.h"

namespace braid {

Timeline::Timeline(const std::string& path) {
  file_ = std::fopen(path.c_str(), "w");
  if (file_ == nullptr) {
    throw BraidException(ErrorCode::kInvalidArgument,
                         "cannot write the timeline file '" + path + "': " + std::strerror(errno) +
                             " (BRAID_TIMELINE / init's timeline); give a path rank 0 can write");
  }
  origin_ = nowMicros();
  std::fputs("[\n", file_);
  std::fflush(file_);
}

Timeline::~Timeline() { close(); }

void Timeline::event(const char* name, const char* cat, int tid, double start, double end, const std::string& args) {
  std::fprintf(file_, "%s{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":0,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f%s%s}",
               first_ ? "" : ",\n", name, cat, tid, start - origin_, end > start ? end - start : 0.0,
               args.empty() ? "" : ",\"args\":", args.c_str());
  first_ = false;
}

void Timeline::record(const OpRecord& op) {
  if (file_ == nullptr) return;
  std::string label = std::string(opKindName(op.kind)) + " #" + std::to_string(op.seq);
  std::string escapedName;
  for (char c : op.name) {
    if (c == '"' || c == '\\') escapedName += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) escapedName += c;
  }
  std::string args = "{\"comm\":" + std::to_string(op.commId) + ",\"name\":\"" + escapedName + "\",\"dtype\":\"" +
                     dtypeName(op.dtype) + "\",\"count\":" + std::to_string(op.count) + ",\"algorithm\":\"" +
                     algorithmName(op.ranAlgorithm) + "\"" +
                     (op.ranAcrossHosts == Algorithm::kAuto ? "" : std::string(",\"acrossHosts\":\"") + algorithmName(op.ranAcrossHosts) + "\"") +
                     ",\"status\":\"" + errorCodeName(op.code) +
                     "\",\"thread\":\"" + (op.ranInline ? "caller" : op.resumeEpoch != 0 ? "handed-off" : "engine") + "\"}";
  const int tid = op.commId;
  event(label.c_str(), "op", tid, op.tQueued, op.tDone, args);
  event("queued", "phase", tid, op.tQueued, op.tStart, "");
  event("negotiating", "phase", tid, op.tStart, op.tNegotiated, "");
  event("communicating", "phase", tid, op.tNegotiated, op.tDone, "");
  for (const auto& [start, end] : op.reduceSpans) event("reducing", "phase", tid, start, end, "");
  std::fprintf(file_, ",\n{\"name\":\"done\",\"cat\":\"phase\",\"ph\":\"i\",\"s\":\"t\",\"pid\":0,\"tid\":%d,\"ts\":%.3f}",
               tid, op.tDone - origin_);
  std::fflush(file_);
}

void Timeline::close() {
  if (file_ == nullptr) return;
  std::fputs("\n]\n", file_);
  std::fclose(file_);
  file_ = nullptr;
}

}  // namespace braid
