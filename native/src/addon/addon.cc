// The JS <-> C++ boundary, and nothing else: read the JS call into a plain OpRecord (in one
// place, buildOp), keep every JS buffer referenced until its op completes, and turn completion
// into a resolved Promise or a returned value. Argument checks with friendly messages live in
// TypeScript (@braid/collectives); the checks here only keep bad calls from crashing the process.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <vector>

#include "addon/compress_binding.h"
#include "common/buffer_pool.h"
#include "common/status.h"
#include "engine/engine.h"
#include "gpu/device.h"
#include "gpu/device_compress.h"
#include "gpu/nccl_loader.h"
#include "kernels/cuda/cuda_info.h"
#include <mpi.h>
#include "kernels/reduce.h"
#include "kernels/secure_mask.h"
#include "kernels/secure_mask_transform.h"

namespace braid {
namespace {

struct PendingOp;
void resolveOnMainThread(Napi::Env env, Napi::Function, std::nullptr_t*, PendingOp* op);
using CompletionTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, PendingOp, resolveOnMainThread>;

// The op's numeric fields, in the order @braid/native's encodeOp writes them into an Int32Array:
// one typed-array read instead of a property lookup per field (those were a sixth of a small
// synchronous all-reduce).
enum SpecField { kComm, kKind, kDType, kOp, kAlgorithm, kRoot, kColor, kKey, kIterations, kPeer, kTag, kNumSpecFields };

// Per-environment addon state; touched on the JS thread only (except `alive`).
struct AddonState {
  CompletionTsfn tsfn;
  int inFlight = 0;
  // Byte ranges of buffers in flight: a buffer may back one op at a time.
  std::vector<std::pair<uintptr_t, uintptr_t>> busy;
  std::atomic<bool> alive{true};
};
AddonState* gState = nullptr;

// An awaited op's copies of its buffers. The JS thread runs on while the engine works, and an
// ArrayBuffer can be detached (transfer, postMessage) or shrunk (resize) meanwhile, freeing the
// memory under the engine; the engine therefore works on these, and the result is copied back
// on completion if the buffer is still there. Arrays over a SharedArrayBuffer (which can neither
// be detached nor shrunk) need no copy.
struct Copies {
  std::shared_ptr<uint8_t> data, out;  // from BufferPool
  size_t dataBytes = 0, outBytes = 0;
};

struct PendingOp {
  OpRecord record;
  Napi::Reference<Napi::Value> input, output;  // pinned until completion
  bool inputShared = true, outputShared = true;  // over a SharedArrayBuffer (or absent)
  std::shared_ptr<Copies> copies;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  std::optional<Napi::Promise::Deferred> deferred;
  // Synchronous callers wait on these.
  std::mutex mutex;
  std::condition_variable cv;
  std::atomic<bool> done{false};
};

Napi::Error makeError(Napi::Env env, ErrorCode code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, errorCodeName(code)));
  return err;
}

[[noreturn]] void throwBraid(Napi::Env env, ErrorCode code, const std::string& message) {
  throw makeError(env, code, message);
}

struct BufferView {
  void* data = nullptr;
  size_t bytes = 0;
  bool shared = false;  // over a SharedArrayBuffer: cannot be detached or shrunk
};

BufferView viewOf(Napi::Env env, Napi::Value value, const char* what) {
  if (!value.IsTypedArray()) throwBraid(env, ErrorCode::kInvalidArgument, std::string(what) + " must be a TypedArray");
  // Raw N-API: it also reads arrays over a SharedArrayBuffer, which Napi::ArrayBuffer refuses.
  napi_typedarray_type type;
  size_t length = 0, byteOffset = 0;
  void* data = nullptr;
  napi_value backing;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, &backing, &byteOffset) != napi_ok) {
    throwBraid(env, ErrorCode::kInvalidArgument, std::string(what) + " could not be read");
  }
  bool isArrayBuffer = false, detached = false;
  napi_is_arraybuffer(env, backing, &isArrayBuffer);
  if (isArrayBuffer) napi_is_detached_arraybuffer(env, backing, &detached);
  if (detached) throwBraid(env, ErrorCode::kInvalidArgument, std::string(what) + "'s ArrayBuffer is detached");
  BufferView view;
  view.data = data;  // already advanced by the byte offset
  view.bytes = value.As<Napi::TypedArray>().ByteLength();
  view.shared = !isArrayBuffer;
  return view;
}

// A DeviceBuffer's memory (gpu/device.h), behind a JS External: freed by free(), or when the
// External is collected if it never was.
struct DeviceMemory {
  void* pointer = nullptr;
  size_t bytes = 0;
};

// Marks Externals made by deviceAlloc, so that no other External is taken for device memory.
const napi_type_tag kDeviceMemoryTag = {0x6272616964646576ULL, 0x6d656d6f72793031ULL};

bool isDeviceMemory(Napi::Env env, Napi::Value value) {
  bool tagged = false;
  return value.IsExternal() && napi_check_object_type_tag(env, value, &kDeviceMemoryTag, &tagged) == napi_ok && tagged;
}

DeviceMemory* deviceMemoryOf(Napi::Env env, Napi::Value value, const char* what) {
  if (!isDeviceMemory(env, value)) throwBraid(env, ErrorCode::kInvalidArgument, std::string(what) + " is not a DeviceBuffer's memory");
  DeviceMemory* m = value.As<Napi::External<DeviceMemory>>().Data();
  if (m->pointer == nullptr) throwBraid(env, ErrorCode::kInvalidArgument, std::string(what) + ": the DeviceBuffer was freed");
  return m;
}

// A typed array's bytes, or a DeviceBuffer's (`onDevice` set), for buildOp.
BufferView bufferOf(Napi::Env env, Napi::Value value, const char* what, bool& onDevice) {
  if (value.IsExternal()) {  // deviceMemoryOf refuses an External deviceAlloc did not make
    DeviceMemory* m = deviceMemoryOf(env, value, what);
    onDevice = true;
    BufferView view;
    view.data = m->pointer;
    view.bytes = m->bytes;
    view.shared = true;  // native memory: nothing can detach it
    return view;
  }
  return viewOf(env, value, what);
}

// For init's options, read once.
int intField(Napi::Object spec, const char* key, int fallback) {
  Napi::Value v = spec.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : fallback;
}

const int32_t* specFields(Napi::Env env, Napi::Value value) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (!value.IsTypedArray() ||
      napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok ||
      type != napi_int32_array || length < kNumSpecFields) {
    throwBraid(env, ErrorCode::kInvalidArgument, "submit needs the op's fields as an Int32Array (encodeOp)");
  }
  return static_cast<const int32_t*>(data);
}

// The one place where a JS call becomes an OpRecord.
std::unique_ptr<PendingOp> buildOp(Napi::Env env, const int32_t* spec, Napi::Value name, Napi::Value input, Napi::Value output) {
  auto pending = std::make_unique<PendingOp>();
  OpRecord& op = pending->record;
  op.commId = spec[kComm];
  int kind = spec[kKind];
  if (kind < 0 || kind > static_cast<int>(OpKind::kRecv)) throwBraid(env, ErrorCode::kInvalidArgument, "unknown op kind");
  op.kind = static_cast<OpKind>(kind);
  int dtype = spec[kDType];
  if (dtype < 0 || dtype >= kNumDTypes) throwBraid(env, ErrorCode::kInvalidArgument, "unknown dtype");
  op.dtype = static_cast<DType>(dtype);
  int redop = spec[kOp];
  if (redop < 0 || redop >= kNumRedOps) throwBraid(env, ErrorCode::kInvalidArgument, "unknown reduce op");
  op.redop = static_cast<RedOp>(redop);
  int algorithm = spec[kAlgorithm];
  if (algorithm < 0 || algorithm > static_cast<int>(Algorithm::kNccl)) throwBraid(env, ErrorCode::kInvalidArgument, "unknown algorithm");
  op.algorithm = static_cast<Algorithm>(algorithm);
  op.root = spec[kRoot];
  op.color = spec[kColor];
  op.key = spec[kKey];
  op.iterations = std::max(1, spec[kIterations]);
  op.peer = spec[kPeer];
  op.tag = spec[kTag];
  if (name.IsString()) op.name = name.As<Napi::String>().Utf8Value();

  const size_t es = dtypeSize(op.dtype);
  bool inputOnDevice = false, outputOnDevice = false;
  if (!input.IsUndefined() && !input.IsNull()) {
    BufferView in = bufferOf(env, input, "the buffer", inputOnDevice);
    if (in.bytes % es != 0) throwBraid(env, ErrorCode::kInvalidArgument, "buffer length does not fit the dtype");
    op.data = in.data;
    op.count = in.bytes / es;
    pending->inputShared = in.shared;
    pending->input = Napi::Persistent(input);
    pending->ranges.emplace_back(reinterpret_cast<uintptr_t>(in.data), reinterpret_cast<uintptr_t>(in.data) + in.bytes);
  }
  if (!output.IsUndefined() && !output.IsNull()) {
    BufferView out = bufferOf(env, output, "the output buffer", outputOnDevice);
    if (out.bytes % es != 0) throwBraid(env, ErrorCode::kInvalidArgument, "output length does not fit the dtype");
    op.out = out.data;
    op.outCount = out.bytes / es;
    pending->outputShared = out.shared;
    pending->output = Napi::Persistent(output);
    pending->ranges.emplace_back(reinterpret_cast<uintptr_t>(out.data), reinterpret_cast<uintptr_t>(out.data) + out.bytes);
  }
  // On the GPU only NCCL may touch the buffers; DeviceBuffers over host memory (BRAID_DEVICE=host)
  // go by the host algorithms. @braid/collectives passes the algorithm that fits.
  const bool hasInput = !input.IsUndefined() && !input.IsNull(), hasOutput = !output.IsUndefined() && !output.IsNull();
  const bool anyOnDevice = inputOnDevice || outputOnDevice;
  if (anyOnDevice && ((hasInput && !inputOnDevice) || (hasOutput && !outputOnDevice)))
    throwBraid(env, ErrorCode::kInvalidArgument, "an op's buffers must all be DeviceBuffers, or none");
  const DeviceState* device = openedDevice();
  const bool onGpu = anyOnDevice && device != nullptr && device->kind == DeviceKind::kCuda;
  op.onDevice = anyOnDevice;
  if (onGpu && op.algorithm != Algorithm::kNccl) throwBraid(env, ErrorCode::kInvalidArgument, "DeviceBuffers on the GPU go by algorithm 'nccl'");
  if (op.algorithm == Algorithm::kNccl && !onGpu && (anyOnDevice || op.kind != OpKind::kAllreduce)) {
    // Host arrays go through NCCL staged (all-reduce only); host-memory DeviceBuffers never do.
    throwBraid(env, ErrorCode::kInvalidArgument, "algorithm 'nccl' takes DeviceBuffers on the GPU, or host arrays in an all-reduce");
  }
  return pending;
}

void claimBuffers(Napi::Env env, PendingOp& op) {
  for (const auto& r : op.ranges) {
    if (r.first == r.second) continue;
    for (const auto& b : gState->busy) {
      if (r.first < b.second && b.first < r.second) {
        throwBraid(env, ErrorCode::kInvalidArgument,
                   "the buffer is already in use by a collective that has not completed; await it first "
                   "or pass a different buffer");
      }
    }
  }
  for (const auto& r : op.ranges) {
    if (r.first != r.second) gState->busy.push_back(r);
  }
}

void releaseBuffers(PendingOp& op) {
  for (const auto& r : op.ranges) {
    auto it = std::find(gState->busy.begin(), gState->busy.end(), r);
    if (it != gState->busy.end()) gState->busy.erase(it);
  }
  op.input.Reset();
  op.output.Reset();
}

// Points the record at copies of the buffers that could be detached; called before the engine
// thread may touch them.
void makeCopies(OpRecord& record, PendingOp& op) {
  if (op.copies || (op.inputShared && op.outputShared)) return;
  auto copies = std::make_shared<Copies>();
  const size_t es = dtypeSize(record.dtype);
  // A transform's op buffer over a SharedArrayBuffer needs no copy: the op runs over shared
  // memory only, where no MPI request can outlive it.
  if (record.data != nullptr && !(record.transform && op.inputShared)) {
    copies->dataBytes = record.count * es;
    copies->data = BufferPool::shared().take(copies->dataBytes);
    std::memcpy(copies->data.get(), record.data, copies->dataBytes);
    record.data = copies->data.get();
  }
  if (record.out != nullptr) {
    copies->outBytes = record.outCount * es;
    copies->out = BufferPool::shared().take(copies->outBytes);
    // A transform reads its second buffer as well as writing it.
    if (record.transform) std::memcpy(copies->out.get(), record.out, copies->outBytes);
    record.out = copies->out.get();
  }
  op.copies = copies;
  record.callerCopies = copies;
}

// The result back into the user's buffer, if it is still there as it was. Empty, or what went wrong.
std::string copyBack(Napi::Env env, PendingOp& op) {
  if (!op.copies || op.record.code != ErrorCode::kOk) return "";
  const OpKind kind = op.record.kind;
  const bool inPlace = kind == OpKind::kAllreduce || kind == OpKind::kBroadcast;
  // `bytes` of the buffer (of `total`, its length when the op began) from `from`.
  auto backPart = [&](Napi::Reference<Napi::Value>& ref, const uint8_t* from, size_t bytes, size_t total, const char* what) -> std::string {
    if (ref.IsEmpty() || bytes == 0) return "";
    napi_typedarray_type type;
    size_t length = 0, byteOffset = 0;
    void* data = nullptr;
    napi_value backing;
    Napi::Value value = ref.Value();
    if (napi_get_typedarray_info(env, value, &type, &length, &data, &backing, &byteOffset) != napi_ok) return std::string(what) + " could not be read";
    bool detached = false;
    napi_is_detached_arraybuffer(env, backing, &detached);
    if (detached || data == nullptr || value.As<Napi::TypedArray>().ByteLength() != total) {
      return std::string(what) + "'s ArrayBuffer was detached or resized while the operation ran (transfer, "
             "postMessage, structuredClone or resize); the result could not be written back. Keep the buffer "
             "as it is until the Promise settles";
    }
    std::memcpy(data, from, bytes);
    return "";
  };
  auto back = [&](Napi::Reference<Napi::Value>& ref, const uint8_t* from, size_t bytes, const char* what) {
    return backPart(ref, from, bytes, bytes, what);
  };
  if (inPlace && op.copies->data) {
    std::string e = back(op.input, op.copies->data.get(), op.copies->dataBytes, "the buffer");
    if (!e.empty()) return e;
  }
  if (kind == OpKind::kRecv) {
    // Only what arrived: the rest of the buffer keeps what the caller had there.
    if (op.record.matchedBytes == 0) return "";
    return backPart(op.output, op.copies->out.get(), op.record.matchedBytes, op.copies->outBytes, "the receive buffer");
  }
  return back(op.output, op.copies->out.get(), op.copies->outBytes, "the output buffer");
}

Napi::Value resultValue(Napi::Env env, const OpRecord& op) {
  if (op.kind == OpKind::kMpiLoop) return Napi::Number::New(env, op.loopUs);
  if (op.kind == OpKind::kRecv) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("source", op.matchedSource);
    r.Set("tag", op.tag);
    r.Set("length", static_cast<double>(op.matchedBytes / dtypeSize(op.dtype)));
    return r;
  }
  if (op.kind != OpKind::kSplit) return env.Undefined();
  if (op.newCommId < 0) return env.Null();
  Napi::Object r = Napi::Object::New(env);
  r.Set("comm", op.newCommId);
  r.Set("rank", op.newRank);
  r.Set("size", op.newSize);
  r.Set("transport", op.newTransport);
  r.Set("sharedMemory", op.newSharedMemory);
  return r;
}

void settle(Napi::Env env, PendingOp* op) {
  Napi::HandleScope scope(env);
  if (op->record.code == ErrorCode::kOk) {
    op->deferred->Resolve(resultValue(env, op->record));
  } else {
    op->deferred->Reject(makeError(env, op->record.code, op->record.message).Value());
  }
}

void resolveOnMainThread(Napi::Env env, Napi::Function, std::nullptr_t*, PendingOp* raw) {
  std::unique_ptr<PendingOp> op(raw);
  if (env == nullptr) {  // the environment is being torn down: nothing to resolve
    releaseBuffers(*op);
    return;
  }
  Napi::HandleScope scope(env);
  const std::string lost = copyBack(env, *op);
  if (!lost.empty()) {
    op->record.code = ErrorCode::kInvalidArgument;
    op->record.message = std::string(opKindName(op->record.kind)) + ": " + lost;
  }
  releaseBuffers(*op);
  if (--gState->inFlight == 0) gState->tsfn.Unref(env);
  settle(env, op.get());
}

// A profile's numbers (profile.ts has checked them) over the model's; fields it lacks keep theirs.
void readProfileNumbers(const Napi::Object& from, CostProfile& into) {
  const auto fields = profileFields(into);
  for (size_t i = 0; i < kProfileFields; ++i) {
    Napi::Value v = from.Get(profileFieldNames()[i]);
    if (v.IsNumber()) *fields[i] = v.As<Napi::Number>().DoubleValue();
  }
  // <link>Curve: [[bytes, us], ...] ascending (profile.ts has checked them).
  const auto curves = curvedLinks(into);
  for (size_t c = 0; c < kCurvedLinks; ++c) {
    Napi::Value v = from.Get(std::string(curvedLinkNames()[c]) + "Curve");
    if (!v.IsArray()) continue;
    Napi::Array points = v.As<Napi::Array>();
    LinkCost& link = *curves[c];
    link.points = 0;
    for (uint32_t i = 0; i < points.Length() && link.points < LinkCost::kMaxPoints; ++i) {
      Napi::Value point = points.Get(i);
      if (!point.IsArray() || point.As<Napi::Array>().Length() != 2) continue;
      const Napi::Value m = point.As<Napi::Array>().Get(0u), us = point.As<Napi::Array>().Get(1u);
      if (!m.IsNumber() || !us.IsNumber()) continue;
      link.bytes[link.points] = m.As<Napi::Number>().DoubleValue();
      link.us[link.points] = us.As<Napi::Number>().DoubleValue();
      ++link.points;
    }
  }
}

Napi::Value Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].IsObject() ? info[0].As<Napi::Object>() : Napi::Object::New(env);
  EngineOptions options;
  options.timeoutMs = intField(o, "timeoutMs", options.timeoutMs);
  options.stallWarningMs = intField(o, "stallWarningMs", options.stallWarningMs);
  options.stallShutdownMs = intField(o, "stallShutdownMs", options.stallShutdownMs);
  options.segmentBytes = static_cast<size_t>(intField(o, "segmentBytes", static_cast<int>(options.segmentBytes)));
  Napi::Value sharedMemory = o.Get("sharedMemory");
  if (sharedMemory.IsBoolean()) options.sharedMemory = sharedMemory.As<Napi::Boolean>().Value();
  Napi::Value negotiate = o.Get("negotiate");
  if (negotiate.IsBoolean()) options.negotiate = negotiate.As<Napi::Boolean>().Value();
  Napi::Value transport = o.Get("transport");
  if (transport.IsString()) options.transport = transport.As<Napi::String>().Utf8Value();
  Napi::Value socketInterfaces = o.Get("socketInterfaces");
  if (socketInterfaces.IsString()) options.tcp.interfaces = socketInterfaces.As<Napi::String>().Utf8Value();
  options.tcp.streams = intField(o, "socketStreams", options.tcp.streams);
  Napi::Value profile = o.Get("profile");
  if (profile.IsObject()) {
    readProfileNumbers(profile.As<Napi::Object>(), options.profile);
    options.profileLoaded = true;
  }
  Napi::Value profileError = o.Get("profileError");
  if (profileError.IsString()) options.profileError = profileError.As<Napi::String>().Utf8Value();
  Napi::Value timeline = o.Get("timeline");
  if (timeline.IsString()) options.timelinePath = timeline.As<Napi::String>().Utf8Value();
  WorldInfo world;
  try {
    world = Engine::instance().start(options);
  } catch (const BraidException& e) {
    throwBraid(env, e.code(), e.what());
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("rank", world.rank);
  r.Set("size", world.size);
  r.Set("localRank", world.localRank);
  r.Set("localSize", world.localSize);
  r.Set("threadLevel", world.threadLevel);
  r.Set("mpiLibrary", world.mpiLibrary);
  r.Set("negotiate", Engine::instance().options().negotiate);
  r.Set("sharedMemory", Engine::instance().options().sharedMemory);
  r.Set("transport", world.transport);
  r.Set("commSharedMemory", world.sharedMemory);
  return r;
}

// Secure aggregation's masking around a shared-memory all-reduce (kernels/secure_mask_transform.h):
// input the int32 masked vector (n + 1), output the n float32 values. `m`: { scale, clip, limit,
// keys (16 bytes a peer), signs (Int8Array, a peer each), call, divisor }; @braid/strategies
// has checked the values.
void attachSecureMask(Napi::Env env, OpRecord& op, Napi::Object m) {
  auto refuse = [&](const char* why) { throwBraid(env, ErrorCode::kInvalidArgument, std::string("masked all-reduce: ") + why); };
  if (op.kind != OpKind::kAllreduce || op.dtype != DType::kInt32 || op.redop != RedOp::kSum || op.algorithm != Algorithm::kShm)
    refuse("needs an int32 sum over the 'shm' algorithm");
  if (op.out == nullptr || op.outCount + 1 != op.count) refuse("needs n + 1 words and n float32 values");
  auto number = [&](const char* key) {
    Napi::Value v = m.Get(key);
    if (!v.IsNumber()) refuse("a parameter is not a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  auto bytesOf = [&](const char* key) {
    Napi::Value v = m.Get(key);
    const BufferView view = viewOf(env, v, key);
    const uint8_t* p = static_cast<const uint8_t*>(view.data);
    return std::vector<uint8_t>(p, p + view.bytes);
  };
  SecureMaskTransform::Params p;
  p.scale = number("scale");
  p.clip = number("clip");
  p.divisor = number("divisor");
  p.limit = static_cast<int32_t>(number("limit"));
  p.call = static_cast<uint64_t>(number("call"));
  p.keys = bytesOf("keys");
  const std::vector<uint8_t> signs = bytesOf("signs");
  p.signs.assign(signs.begin(), signs.end());
  p.values = op.outCount;
  if (p.keys.size() != 16 * p.signs.size()) refuse("needs 16 key bytes for every sign");
  if (!secureMaskAvailable()) refuse("needs AES-NI and AVX2");
  op.transform = std::make_shared<SecureMaskTransform>(std::move(p));
}

// submit(fields, name, input, output, sync, mask?): a Promise, or (sync) the result itself.
Napi::Value Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Engine::instance().started()) throwBraid(env, ErrorCode::kAborted, "Braid is not initialised; call init() first");
  const bool sync = info[4].ToBoolean().Value();
  std::unique_ptr<PendingOp> op = buildOp(env, specFields(env, info[0]), info[1], info[2], info[3]);
  if (info.Length() > 5 && info[5].IsObject()) attachSecureMask(env, op->record, info[5].As<Napi::Object>());
  claimBuffers(env, *op);
  PendingOp* raw = op.get();

  if (sync) {
    raw->record.onComplete = [raw](OpRecord*) {
      std::lock_guard<std::mutex> lock(raw->mutex);
      raw->done.store(true, std::memory_order_release);
      raw->cv.notify_one();
    };
    if (Engine::instance().runInline(&raw->record, true) == Engine::InlineOutcome::kNotRun &&
        !Engine::instance().submit(&raw->record)) {
      raw->done.store(true, std::memory_order_release);  // refused: code and message are set
    }
    // Small ops finish in microseconds: poll, yielding the core (the engine thread may need
    // it), for up to a millisecond before sleeping.
    const auto pollUntil = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
    while (!raw->done.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < pollUntil) {
      std::this_thread::yield();
    }
    {
      std::unique_lock<std::mutex> lock(raw->mutex);
      raw->cv.wait(lock, [raw] { return raw->done.load(std::memory_order_acquire); });
    }
    releaseBuffers(*raw);
    if (raw->record.code != ErrorCode::kOk) throwBraid(env, raw->record.code, raw->record.message);
    return resultValue(env, raw->record);
  }

  raw->deferred.emplace(Napi::Promise::Deferred::New(env));
  Napi::Promise promise = raw->deferred->Promise();
  raw->record.onComplete = [raw](OpRecord*) {
    // Finished on this (the JS) thread by runInline: settled below, without the event loop.
    if (!Engine::instance().onEngineThread()) return;
    if (!gState->alive.load()) return;  // the environment is gone; nothing to resolve
    gState->tsfn.NonBlockingCall(raw);
  };
  // Run on this thread, an op needs no copies; handed to the engine thread, it does.
  raw->record.beforeHandOff = [raw](OpRecord& record) { makeCopies(record, *raw); };
  // Copying costs about as much as a shared-memory all-reduce itself: an op that would need
  // copies is first tried here, where the buffer cannot be detached under it.
  raw->record.inlineAnySize = !(raw->inputShared && raw->outputShared);
  const Engine::InlineOutcome outcome = Engine::instance().runInline(&raw->record, false);
  if (outcome == Engine::InlineOutcome::kDone) {
    releaseBuffers(*raw);
    settle(env, raw);
    return promise;
  }
  if (outcome == Engine::InlineOutcome::kNotRun) {
    makeCopies(raw->record, *raw);
    if (!Engine::instance().submit(&raw->record)) {
      // The engine has stopped (the world was closed): settle now, or the Promise never would.
      releaseBuffers(*raw);
      settle(env, raw);
      return promise;
    }
  }
  if (gState->inFlight++ == 0) gState->tsfn.Ref(env);
  op.release();  // owned by the completion from here on
  return promise;
}

// predict({algorithm, ranks, hosts, perHost, sharedMemory, hierarchy, directCarriesAgreement, overlapped, bytes,
// profile}):
// the cost model's all-reduce time in microseconds (for `braid plan`; no MPI involved).
Napi::Value Predict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throwBraid(env, ErrorCode::kInvalidArgument, "predict takes an object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto number = [&](Napi::Object from, const char* key, double fallback) {
    Napi::Value v = from.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
  };
  Topology t;
  t.ranks = static_cast<int>(number(o, "ranks", 1));
  t.hosts = static_cast<int>(number(o, "hosts", 1));
  t.perHost = static_cast<int>(number(o, "perHost", 1));
  t.sharedMemory = o.Get("sharedMemory").ToBoolean().Value();
  t.hierarchy = o.Get("hierarchy").ToBoolean().Value();
  t.directCarriesAgreement = o.Get("directCarriesAgreement").ToBoolean().Value();
  t.ncclReady = o.Get("ncclReady").ToBoolean().Value();
  CostProfile c = CostProfile::defaults();
  if (o.Get("profile").IsObject()) readProfileNumbers(o.Get("profile").As<Napi::Object>(), c);
  const std::string name = o.Get("algorithm").IsString() ? o.Get("algorithm").As<Napi::String>().Utf8Value() : "";
  ModelAlgorithm a;
  if (name == "ring") a = ModelAlgorithm::kRing;
  else if (name == "recursive-doubling") a = ModelAlgorithm::kRecursiveDoubling;
  else if (name == "tree") a = ModelAlgorithm::kTree;
  else if (name == "shm") a = ModelAlgorithm::kShm;
  else if (name == "hierarchical") a = ModelAlgorithm::kHierarchical;
  else if (name == "direct") a = ModelAlgorithm::kDirect;
  else if (name == "nccl") a = ModelAlgorithm::kNcclStaged;
  else throwBraid(env, ErrorCode::kInvalidArgument, "predict: unknown algorithm '" + name + "'");
  const double bytes = number(o, "bytes", 0);
  const bool overlapped = !o.Get("overlapped").IsBoolean() || o.Get("overlapped").As<Napi::Boolean>().Value();
  return Napi::Number::New(env, predictAllreduceUs(a, t, c, static_cast<size_t>(bytes), overlapped));
}

// The cost model's numbers when no profile gives them.
Napi::Value CostDefaults(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CostProfile c = CostProfile::defaults();
  Napi::Object r = Napi::Object::New(env);
  const auto fields = profileFields(c);
  for (size_t f = 0; f < kProfileFields; ++f) r.Set(profileFieldNames()[f], *fields[f]);
  return r;
}

Napi::Object ncclStatus(Napi::Env env, const NcclLoad& load) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("available", load.library != nullptr);
  if (load.library != nullptr) {
    r.Set("version", ncclVersionString(load.library->version));
    r.Set("versionCode", load.library->version);
    r.Set("path", load.library->path);
  } else {
    r.Set("error", load.error);
  }
  Napi::Array searched = Napi::Array::New(env, load.searched.size());
  for (size_t i = 0; i < load.searched.size(); ++i) searched.Set(static_cast<uint32_t>(i), load.searched[i]);
  r.Set("searched", searched);
  return r;
}

// ncclProbe(candidates?): NCCL looked for afresh (the process's own search, or these paths).
// deviceOpen(localRank, requested): this process's device, opened once (gpu/device.h):
// { kind: 'cuda' | 'host' | 'none', index, count, error? }.
Napi::Value DeviceOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int localRank = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  const int requested = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : -1;
  const DeviceState& d = openDevice(localRank, requested);
  Napi::Object r = Napi::Object::New(env);
  r.Set("kind", d.kind == DeviceKind::kCuda ? "cuda" : d.kind == DeviceKind::kHost ? "host" : "none");
  r.Set("index", d.index);
  r.Set("count", d.count);
  if (!d.error.empty()) r.Set("error", d.error);
  return r;
}

// Refuses to touch device memory an op in flight is using.
void checkNotBusy(Napi::Env env, const DeviceMemory& m, const char* what) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(m.pointer), hi = lo + m.bytes;
  for (const auto& b : gState->busy) {
    if (lo < b.second && b.first < hi) {
      throwBraid(env, ErrorCode::kInvalidArgument,
                 std::string(what) + ": the DeviceBuffer is in use by a collective that has not completed; await it first");
    }
  }
}

// deviceAlloc(bytes): the memory of a new DeviceBuffer (an External).
Napi::Value DeviceAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double bytes = info[0].As<Napi::Number>().DoubleValue();
  if (!(bytes >= 0) || bytes > 9007199254740991.0) throwBraid(env, ErrorCode::kInvalidArgument, "deviceAlloc: bad size");
  std::string error;
  void* p = deviceAlloc(static_cast<size_t>(bytes), error);
  if (p == nullptr) {
    const DeviceState* d = openedDevice();
    throwBraid(env, d != nullptr && d->kind != DeviceKind::kNone ? ErrorCode::kInvalidArgument : ErrorCode::kBackendUnavailable,
               "could not allocate " + std::to_string(static_cast<size_t>(bytes)) + " bytes on the device: " + error);
  }
  auto* m = new DeviceMemory{p, static_cast<size_t>(bytes)};
  Napi::External<DeviceMemory> handle = Napi::External<DeviceMemory>::New(env, m, [](Napi::Env, DeviceMemory* dm) {
    deviceFree(dm->pointer);
    delete dm;
  });
  napi_type_tag_object(env, handle, &kDeviceMemoryTag);
  return handle;
}

// deviceFree(memory): frees it now (a no-op the second time).
Napi::Value DeviceFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!isDeviceMemory(env, info[0])) throwBraid(env, ErrorCode::kInvalidArgument, "deviceFree takes a DeviceBuffer's memory");
  DeviceMemory* m = info[0].As<Napi::External<DeviceMemory>>().Data();
  if (m->pointer == nullptr) return env.Undefined();
  checkNotBusy(env, *m, "free");
  deviceFree(m->pointer);
  m->pointer = nullptr;
  return env.Undefined();
}

// deviceCopy(memory, typedArray, byteOffset, toDevice): upload (toDevice) or download the typed
// array's bytes at byteOffset of the device memory; synchronous.
Napi::Value DeviceCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool toDevice = info[3].ToBoolean().Value();
  DeviceMemory* m = deviceMemoryOf(env, info[0], toDevice ? "upload" : "download");
  const BufferView host = viewOf(env, info[1], toDevice ? "the array to upload" : "the array to download into");
  const double offset = info[2].As<Napi::Number>().DoubleValue();
  if (!(offset >= 0) || offset + static_cast<double>(host.bytes) > static_cast<double>(m->bytes)) {
    throwBraid(env, ErrorCode::kInvalidArgument, "the copy runs past the DeviceBuffer's end");
  }
  checkNotBusy(env, *m, toDevice ? "upload" : "download");
  std::string error;
  uint8_t* at = static_cast<uint8_t*>(m->pointer) + static_cast<size_t>(offset);
  const bool ok = deviceCopy(at, host.data, host.bytes, toDevice, error);
  if (!ok) throwBraid(env, ErrorCode::kInternal, std::string(toDevice ? "upload" : "download") + " failed: " + error);
  return env.Undefined();
}

// --- allReduceCompressed on DeviceBuffers (gpu/device_compress.h); @braid/compression checks
// the arguments' meaning, these their bounds. ---

// A DeviceBuffer's memory that no op holds, of at least `bytes`; null for JS null (when `optional`).
void* memoryArg(const Napi::CallbackInfo& info, size_t i, const char* what, double bytes, bool optional = false) {
  Napi::Env env = info.Env();
  if (optional && (info[i].IsNull() || info[i].IsUndefined())) return nullptr;
  DeviceMemory* m = deviceMemoryOf(env, info[i], what);
  checkNotBusy(env, *m, what);
  if (!(bytes >= 0) || bytes > static_cast<double>(m->bytes)) {
    throwBraid(env, ErrorCode::kInvalidArgument, std::string(what) + ": " + std::to_string(static_cast<size_t>(bytes)) +
                                                     " bytes needed, the DeviceBuffer has " + std::to_string(m->bytes));
  }
  return m->pointer;
}

size_t countArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  const double v = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
  if (!(v >= 0) || v > 4294967295.0 || v != std::floor(v)) throwBraid(info.Env(), ErrorCode::kInvalidArgument, std::string(what) + " must be a count");
  return static_cast<size_t>(v);
}

const uint8_t* headerArg(const Napi::CallbackInfo& info, size_t i) {
  const BufferView h = viewOf(info.Env(), info[i], "the payload header");
  if (h.bytes < 28) throwBraid(info.Env(), ErrorCode::kInvalidArgument, "the payload header must hold 28 bytes");
  return static_cast<const uint8_t*>(h.data);
}

void check(Napi::Env env, bool ok, const devicecompress::Failure& failure) {
  if (!ok) throwBraid(env, failure.code == ErrorCode::kOk ? ErrorCode::kInternal : failure.code, failure.message);
}

// deviceEncode(header, x, n, residual | null, payload, payloadBytes)
Napi::Value DeviceEncode(const Napi::CallbackInfo& info) {
  const uint8_t* header = headerArg(info, 0);
  const size_t n = countArg(info, 2, "n");
  float* x = static_cast<float*>(memoryArg(info, 1, "x", 4.0 * n));
  float* residual = static_cast<float*>(memoryArg(info, 3, "the residual", 4.0 * n, true));
  const size_t payloadBytes = countArg(info, 5, "payloadBytes");
  uint8_t* payload = static_cast<uint8_t*>(memoryArg(info, 4, "the payload", static_cast<double>(payloadBytes)));
  devicecompress::Failure failure;
  check(info.Env(), devicecompress::encode(header, x, n, residual, payload, payloadBytes, failure), failure);
  return info.Env().Undefined();
}

// deviceDecodeSum(header, gathered, ranks, payloadBytes, out, n, factor)
Napi::Value DeviceDecodeSum(const Napi::CallbackInfo& info) {
  const uint8_t* header = headerArg(info, 0);
  const size_t ranks = countArg(info, 2, "ranks"), payloadBytes = countArg(info, 3, "payloadBytes"), n = countArg(info, 5, "n");
  const uint8_t* gathered = static_cast<const uint8_t*>(memoryArg(info, 1, "the gathered payloads", static_cast<double>(ranks) * payloadBytes));
  float* out = static_cast<float*>(memoryArg(info, 4, "x", 4.0 * n));
  const double factor = info[6].As<Napi::Number>().DoubleValue();
  devicecompress::Failure failure;
  check(info.Env(), devicecompress::decodeSum(header, gathered, ranks, payloadBytes, out, n, factor, failure), failure);
  return info.Env().Undefined();
}

// deviceCastHalf(x, n, wire, bfloat16, fromWire, residual | null)
Napi::Value DeviceCastHalf(const Napi::CallbackInfo& info) {
  const size_t n = countArg(info, 1, "n");
  float* x = static_cast<float*>(memoryArg(info, 0, "x", 4.0 * n));
  uint16_t* wire = static_cast<uint16_t*>(memoryArg(info, 2, "the half-precision buffer", 2.0 * n));
  float* residual = static_cast<float*>(memoryArg(info, 5, "the residual", 4.0 * n, true));
  devicecompress::Failure failure;
  check(info.Env(), devicecompress::castHalf(x, n, wire, info[3].ToBoolean(), info[4].ToBoolean(), residual, failure), failure);
  return info.Env().Undefined();
}

// devicePower('p' | 'q' | 'reconstruct', m | pt, rows, cols, r, qt | pt | qt, out, n): PowerSGD's
// products: P = M Q (m, qt -> pt), Q = M^T P (m, pt -> qt), out = P Q^T (pt, qt -> first n of out).
Napi::Value DevicePower(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string step = info[0].ToString().Utf8Value();
  const size_t rows = countArg(info, 2, "rows"), cols = countArg(info, 3, "cols"), r = countArg(info, 4, "r");
  devicecompress::Failure failure;
  bool ok = false;
  if (step == "p" || step == "q") {
    const float* m = static_cast<const float*>(memoryArg(info, 1, "the matrix", 4.0 * rows * cols));
    const float* factor = static_cast<const float*>(memoryArg(info, 5, "the factor in", 4.0 * r * (step == "p" ? cols : rows)));
    float* out = static_cast<float*>(memoryArg(info, 6, "the factor out", 4.0 * r * (step == "p" ? rows : cols)));
    ok = step == "p" ? devicecompress::powerP(m, rows, cols, factor, r, out, failure) : devicecompress::powerQ(m, rows, cols, factor, r, out, failure);
  } else if (step == "reconstruct") {
    const size_t n = countArg(info, 7, "n");
    if (n > rows * cols) throwBraid(env, ErrorCode::kInvalidArgument, "reconstruct: n exceeds rows x cols");
    const float* pt = static_cast<const float*>(memoryArg(info, 1, "P", 4.0 * r * rows));
    const float* qt = static_cast<const float*>(memoryArg(info, 5, "Q", 4.0 * r * cols));
    float* out = static_cast<float*>(memoryArg(info, 6, "x", 4.0 * n));
    ok = devicecompress::powerReconstruct(pt, qt, r, rows, cols, out, n, failure);
  } else {
    throwBraid(env, ErrorCode::kInvalidArgument, "devicePower: step must be 'p', 'q' or 'reconstruct'");
  }
  check(env, ok, failure);
  return env.Undefined();
}

// deviceElementwise('add' | 'subtract', a, b, out, n) | ('scale', out, n, factor) |
// ('copy', to, from, bytes) | ('zero', p, bytes): float32 element-wise steps, and byte copies.
Napi::Value DeviceElementwise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = info[0].ToString().Utf8Value();
  devicecompress::Failure failure;
  std::string error;
  if (!deviceBindThread(error)) throwBraid(env, ErrorCode::kBackendUnavailable, "the device could not be used: " + error);
  bool ok = false;
  if (op == "add" || op == "subtract") {
    const size_t n = countArg(info, 4, "n");
    const float* a = static_cast<const float*>(memoryArg(info, 1, "a", 4.0 * n));
    const float* b = static_cast<const float*>(memoryArg(info, 2, "b", 4.0 * n));
    float* out = static_cast<float*>(memoryArg(info, 3, "out", 4.0 * n));
    ok = op == "add" ? devicecompress::add(a, b, out, n, failure) : devicecompress::subtract(a, b, out, n, failure);
  } else if (op == "scale") {
    const size_t n = countArg(info, 2, "n");
    ok = devicecompress::scale(static_cast<float*>(memoryArg(info, 1, "out", 4.0 * n)), n, info[3].As<Napi::Number>().DoubleValue(), failure);
  } else if (op == "copy") {
    const size_t bytes = countArg(info, 3, "bytes");
    ok = devicecompress::copy(memoryArg(info, 1, "to", static_cast<double>(bytes)), memoryArg(info, 2, "from", static_cast<double>(bytes)), bytes, failure);
  } else if (op == "zero") {
    const size_t bytes = countArg(info, 2, "bytes");
    ok = devicecompress::zero(memoryArg(info, 1, "the buffer", static_cast<double>(bytes)), bytes, failure);
  } else {
    throwBraid(env, ErrorCode::kInvalidArgument, "deviceElementwise: unknown step '" + op + "'");
  }
  // Done before returning: the next use may be a collective on NCCL's own stream.
  check(env, ok && devicecompress::synchronize(failure), failure);
  return env.Undefined();
}

Napi::Value NcclProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> candidates;
  if (info.Length() > 0 && info[0].IsArray()) {
    Napi::Array list = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); ++i) {
      if (!list.Get(i).IsString()) throwBraid(env, ErrorCode::kInvalidArgument, "ncclProbe: candidates must be strings");
      candidates.push_back(list.Get(i).As<Napi::String>().Utf8Value());
    }
  } else {
    candidates = ncclCandidates();
  }
  return ncclStatus(env, loadNcclFrom(candidates));
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  r.Set("isa", activeKernels().isa);
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", cudaCompiled());
  cuda.Set("devices", cudaDeviceCount());
  r.Set("cuda", cuda);
  // MPI allows both calls before MPI_Init: `braid doctor` reports the library without starting it.
  char library[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  int major = 0, minor = 0;
  MPI_Get_library_version(library, &length);
  MPI_Get_version(&major, &minor);
  Napi::Object mpi = Napi::Object::New(env);
  mpi.Set("library", std::string(library, strnlen(library, static_cast<size_t>(length))));
  mpi.Set("standard", std::to_string(major) + "." + std::to_string(minor));
  r.Set("mpi", mpi);
  r.Set("nccl", ncclStatus(env, loadNccl()));
  return r;
}

// When MPI cannot be finalized in time (a peer or its host stopped answering), the process must
// still end: say so and leave without it. mpirun then reports the rank, and the job fails.
[[noreturn]] void exitWithoutFinalize(int code) {
  std::fprintf(stderr,
               "braid: MPI could not be finalized within %lld ms (a peer process or host stopped answering); "
               "exiting without it\n",
               static_cast<long long>(Engine::instance().shutdownBound().count()));
  std::fflush(stderr);
  std::_Exit(code != 0 ? code : 1);
}

// shutdown(exitCode?): ends the engine and finalizes MPI (process exit). With an exit code (the
// 'exit' hook), a finalization that cannot finish in time ends the process with that code, or 1.
// A non-zero exit code skips MPI_Finalize (Engine::shutdownFailing): a failing rank must not wait
// for peers that wait for it.
Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  const int code = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  if (code != 0) {
    if (!Engine::instance().shutdownFailing(std::chrono::milliseconds(2000))) {
      std::fflush(stderr);
      std::_Exit(code);
    }
    return Napi::Boolean::New(info.Env(), true);
  }
  const bool finished = Engine::instance().shutdown();
  if (!finished && info[0].IsNumber()) exitWithoutFinalize(code);
  return Napi::Boolean::New(info.Env(), finished);
}

void cleanup(void*) {
  if (gState != nullptr) gState->alive.store(false);
  if (!Engine::instance().shutdown()) exitWithoutFinalize(1);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (gState != nullptr) {
    throwBraid(env, ErrorCode::kBackendUnavailable,
               "@braid/native can be loaded by one thread of a process only (MPI allows one initialisation)");
  }
  gState = new AddonState();
  gState->tsfn = CompletionTsfn::New(env, "braid-completion", 0, 1, nullptr);
  gState->tsfn.Unref(env);
  napi_add_env_cleanup_hook(env, cleanup, nullptr);
  exports.Set("predict", Napi::Function::New(env, Predict));
  exports.Set("costDefaults", Napi::Function::New(env, CostDefaults));
  exports.Set("start", Napi::Function::New(env, Start));
  exports.Set("submit", Napi::Function::New(env, Submit));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("ncclProbe", Napi::Function::New(env, NcclProbe));
  exports.Set("deviceOpen", Napi::Function::New(env, DeviceOpen));
  exports.Set("deviceAlloc", Napi::Function::New(env, DeviceAlloc));
  exports.Set("deviceFree", Napi::Function::New(env, DeviceFree));
  exports.Set("deviceCopy", Napi::Function::New(env, DeviceCopy));
  exports.Set("deviceEncode", Napi::Function::New(env, DeviceEncode));
  exports.Set("deviceDecodeSum", Napi::Function::New(env, DeviceDecodeSum));
  exports.Set("deviceCastHalf", Napi::Function::New(env, DeviceCastHalf));
  exports.Set("devicePower", Napi::Function::New(env, DevicePower));
  exports.Set("deviceElementwise", Napi::Function::New(env, DeviceElementwise));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown));
  initCompressBinding(env, exports);
  return exports;
}

}  // namespace
}  // namespace braid

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return braid::Init(env, exports); }
NODE_API_MODULE(braid_native, InitModule)
