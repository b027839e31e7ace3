#include "engine/p2p.h"

#include <cstdint>
#include <algorithm>
#include <cstring>

#include "kernels/dtype.h"
#include "transport/mpi_transport.h"

namespace braid {

// The receiver's answer to a message: its length when taken, or -(room + 1) when the receive
// buffer (room bytes) was too small and the message was dropped.
using Answer = int64_t;

struct PointToPoint::Transfer {
  OpRecord* op = nullptr;
  std::chrono::steady_clock::time_point deadline;
  std::shared_ptr<void> memory;
  size_t bytes = 0;  // send: the message; recv: the room in the buffer
  // send: the message, then the answer. recv: the matched message, then the answer sent back.
  MPI_Request message = MPI_REQUEST_NULL, answer = MPI_REQUEST_NULL;
  Answer answerValue = 0;
  bool matched = false;   // recv: a message was matched by the probe
  bool taken = false;     // recv: the message is in (the buffer or, too long, the drain)
  std::shared_ptr<std::vector<uint8_t>> drain;  // recv: where a message too long goes
  int source = -1;
  size_t length = 0;
};

PointToPoint::PointToPoint(MPI_Comm data, MPI_Comm answers, const std::vector<std::string>* hosts)
    : data_(data), answers_(answers), hosts_(hosts) {
  MPI_Comm_set_errhandler(data_, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(answers_, MPI_ERRORS_RETURN);
}

PointToPoint::~PointToPoint() {
  fail(ErrorCode::kAborted, "the communicator was closed while this point-to-point message was under way");
  MPI_Comm_free(&data_);
  MPI_Comm_free(&answers_);
}

std::string PointToPoint::peerName(int rank) const {
  std::string s = "rank " + std::to_string(rank);
  if (hosts_ && rank >= 0 && static_cast<size_t>(rank) < hosts_->size()) s += " (host " + (*hosts_)[rank] + ")";
  return s;
}

void PointToPoint::start(OpRecord* op, std::chrono::steady_clock::time_point deadline, std::shared_ptr<void> memory) {
  auto t = std::make_unique<Transfer>();
  t->op = op;
  t->deadline = deadline;
  t->memory = std::move(memory);
  const size_t es = dtypeSize(op->dtype);
  if (op->kind == OpKind::kSend) {
    t->bytes = op->count * es;
    int rc = MPI_Isend(op->data, static_cast<int>(t->bytes), MPI_BYTE, op->peer, op->tag, data_, &t->message);
    if (rc == MPI_SUCCESS) rc = MPI_Irecv(&t->answerValue, 1, MPI_INT64_T, op->peer, op->tag, answers_, &t->answer);
    if (rc != MPI_SUCCESS) {
      orphanRequests({t->message, t->answer}, t->memory);
      throw BraidException(ErrorCode::kAborted, "MPI refused a send to " + peerName(op->peer));
    }
  } else {
    t->bytes = op->outCount * es;
  }
  transfers_.push_back(std::move(t));
}

static bool done(MPI_Request& r) {
  if (r == MPI_REQUEST_NULL) return true;
  int flag = 0;
  MPI_Test(&r, &flag, MPI_STATUS_IGNORE);
  return flag != 0;
}

// True when the transfer finished (op->code set).
// A message for `op`, matched (MPI_Improbe), unless a receive posted before it that is still
// unmatched (`unmatched`: its source, -1 for any, and tag) could take that message: MPI's order
// holds for receives in the order posted, and a probe that found nothing must not let a later
// one take what arrives next. A receive from any rank probes the sources no earlier receive
// waits for, one by one, when some are.
void PointToPoint::probe(const OpRecord& op, const std::vector<std::pair<int, int>>& unmatched, int* flag, MPI_Message* message,
                         MPI_Status* status) {
  *flag = 0;
  std::vector<int> blocked;
  for (const auto& [source, tag] : unmatched) {
    if (tag != op.tag) continue;
    if (source < 0) return;  // an earlier receive from any rank comes first for every source
    blocked.push_back(source);
  }
  auto isBlocked = [&](int source) { return std::find(blocked.begin(), blocked.end(), source) != blocked.end(); };
  if (op.peer >= 0) {
    if (!isBlocked(op.peer)) MPI_Improbe(op.peer, op.tag, data_, flag, message, status);
    return;
  }
  if (blocked.empty()) {
    MPI_Improbe(MPI_ANY_SOURCE, op.tag, data_, flag, message, status);
    return;
  }
  int size = 0;
  MPI_Comm_size(data_, &size);
  for (int source = 0; source < size && !*flag; ++source) {
    if (!isBlocked(source)) MPI_Improbe(source, op.tag, data_, flag, message, status);
  }
}

bool PointToPoint::advance(Transfer& t, std::chrono::steady_clock::time_point now, std::string* outOfStep,
                           std::vector<std::pair<int, int>>& unmatched) {
  OpRecord& op = *t.op;
  const std::string tag = "tag " + std::to_string(op.tag);
  if (op.kind == OpKind::kSend) {
    const bool sent = done(t.message);
    if (done(t.answer) && sent) {
      if (t.answerValue < 0) {
        const Answer room = -t.answerValue - 1;
        op.code = ErrorCode::kInvalidArgument;
        op.message = "send to " + peerName(op.peer) + " (" + tag + "): the message has " + std::to_string(t.bytes) +
                     " bytes but that rank's receive buffer holds " + std::to_string(room) +
                     "; it was not delivered (give recv a buffer at least as long as the message)";
      }
      return true;
    }
    if (now < t.deadline) return false;
    op.code = ErrorCode::kTimeout;
    op.message = "send to " + peerName(op.peer) + " (" + tag + ") was not received before the operation's timeout: that rank has not called recv for this tag, or it stopped, or its host is unreachable (raise timeoutMs in init() if it is just late)";
    // Its message may still be taken later, and its answer then meet the next send's: the
    // messages between these ranks cannot be told apart any more.
    *outOfStep = std::string(sent ? "a send timed out before its receiver took it" : "a send timed out with its message still in flight") +
                 " (" + peerName(op.peer) + ", " + tag + ")";
    orphanRequests({t.message, t.answer}, t.memory);
    t.message = t.answer = MPI_REQUEST_NULL;
    return true;
  }
  // A receive: match, take, answer.
  if (!t.matched) {
    int flag = 0;
    MPI_Message message;
    MPI_Status status;
    probe(op, unmatched, &flag, &message, &status);
    if (!flag) {
      unmatched.emplace_back(op.peer, op.tag);
      if (now < t.deadline) return false;
      op.code = ErrorCode::kTimeout;
      op.message = "recv (" + tag + ") from " + (op.peer < 0 ? std::string("any rank") : peerName(op.peer)) +
                   ": no message arrived before the operation's timeout (the sender has not sent it, stopped, or its host is unreachable; raise timeoutMs in init() if it is just late)";
      return true;  // nothing was posted: the communicator stays in step
    }
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    t.matched = true;
    t.source = status.MPI_SOURCE;
    t.length = static_cast<size_t>(count);
    void* into = op.out;
    if (t.length > t.bytes) {
      // Taken into a drain so that the sender's next message on this tag is next in line.
      t.drain = std::make_shared<std::vector<uint8_t>>(t.length);
      into = t.drain->data();
    }
    MPI_Imrecv(into, count, MPI_BYTE, &message, &t.message);
  }
  if (!t.taken) {
    if (!done(t.message)) {
      if (now < t.deadline) return false;
      op.code = ErrorCode::kTimeout;
      op.message = "recv (" + tag + ") from " + peerName(t.source) + ": the message started but did not finish arriving before the operation's timeout";
      *outOfStep = op.message;
      orphanRequests({t.message}, t.drain ? std::shared_ptr<void>(t.drain) : t.memory);
      t.message = MPI_REQUEST_NULL;
      return true;
    }
    t.taken = true;
    t.answerValue = t.length > t.bytes ? -static_cast<Answer>(t.bytes) - 1 : static_cast<Answer>(t.length);
    MPI_Isend(&t.answerValue, 1, MPI_INT64_T, t.source, op.tag, answers_, &t.answer);
  }
  if (!done(t.answer)) {
    if (now < t.deadline) return false;
    // The answer is eight bytes, sent eagerly: this only happens if the sender vanished.
    orphanRequests({t.answer}, nullptr);
    t.answer = MPI_REQUEST_NULL;
  }
  op.matchedSource = t.source;
  op.matchedBytes = t.length;
  if (t.drain) {
    op.code = ErrorCode::kInvalidArgument;
    op.message = "recv (" + tag + ") from " + peerName(t.source) + ": the message has " + std::to_string(t.length) +
                 " bytes but the receive buffer holds " + std::to_string(t.bytes) +
                 "; it was dropped (the sender is told too). Give recv a buffer at least as long as the message";
  }
  return true;
}

std::vector<OpRecord*> PointToPoint::progress(std::string* outOfStep) {
  std::vector<OpRecord*> finished;
  const auto now = std::chrono::steady_clock::now();
  // In the order they were posted: two receives that could match the same message take it in
  // that order, as MPI's own receives would.
  std::vector<std::pair<int, int>> unmatched;
  for (size_t i = 0; i < transfers_.size();) {
    if (advance(*transfers_[i], now, outOfStep, unmatched)) {
      finished.push_back(transfers_[i]->op);
      transfers_.erase(transfers_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  return finished;
}

std::vector<OpRecord*> PointToPoint::fail(ErrorCode code, const std::string& message) {
  std::vector<OpRecord*> finished;
  for (auto& t : transfers_) {
    orphanRequests({t->message, t->answer}, t->drain ? std::shared_ptr<void>(t->drain) : t->memory);
    t->op->code = code;
    t->op->message = message;
    finished.push_back(t->op);
  }
  transfers_.clear();
  return finished;
}

}  // namespace braid
