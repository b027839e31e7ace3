#include "engine/algorithm_table.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/engine.h"
#include "engine/nccl_ops.h"
#include "kernels/reduce.h"

namespace braid {

namespace {

// Measured at np=2: recursive doubling up to 64 KiB.
constexpr size_t kRecursiveDoublingMaxBytesTwoRanks = 64 * 1024;
// alpha/beta (per-message latency over per-byte time) measured at np=2: ~0.6 us * ~7 GB/s.
constexpr double kAlphaOverBetaBytes = 4096;

std::string always(const CommState&) { return ""; }

std::string needsSharedMemory(const CommState& comm) {
  if (comm.size <= 1 || comm.shm) return "";
  return comm.shmUnavailable + "; use 'auto' or 'ring'";
}

std::string needsHierarchy(const CommState& comm) {
  if (comm.size <= 1 || comm.hierarchy) return "";
  return comm.hierarchyUnavailable + "; it needs ranks on several hosts, the same number on each";
}

// The op's arguments over the hierarchy's network transport (the ranks of this local index).
CollectiveArgs crossArgs(const AlgorithmContext& c) {
  return {*c.comm.hierarchy->cross, c.args.dtype, c.args.op, c.args.scratch, c.args.recorder, c.args.segmentBytes};
}

// --- all-reduce ---------------------------------------------------------------------------------
void allreduceOver(AlgorithmContext& c, CollectiveFn fn) { fn(c.args, c.op.data, c.op.count); }

void runRing(AlgorithmContext& c) { allreduceOver(c, allreduceRing); }
void runTree(AlgorithmContext& c) { allreduceOver(c, allreduceTree); }
void runRecursiveDoubling(AlgorithmContext& c) { allreduceOver(c, allreduceRecursiveDoubling); }

void runDirect(AlgorithmContext& c) {
  if (c.op.dataCarried) {
    // The agreement brought every rank's buffer already (negotiation.h).
    reduceInRankOrder(c.args, c.op.data, agreedBuffers(*c.comm.agreement), c.op.count);
    return;
  }
  allreduceOver(c, allreduceDirect);
}

void runMpi(AlgorithmContext& c) {
  // MPI's own all-reduce, on the MPI transport whatever carries the other algorithms.
  CollectiveArgs onMpi{*c.comm.mpi, c.args.dtype, c.args.op, c.args.scratch, c.args.recorder, c.args.segmentBytes};
  allreduceMpi(onMpi, c.op.data, c.op.count);
}

void runShm(AlgorithmContext& c) {
  if (c.comm.size == 1) {
    if (c.op.transform && c.op.count > 0) {
      uint8_t* chunk = c.op.transform->chunkBuffer(c.op.count * dtypeSize(c.op.dtype));
      c.op.transform->in(chunk, c.op.out, 0, c.op.count);
      c.op.transform->out(chunk, c.op.data, c.op.out, 0, c.op.count);
    }
    return;
  }
  ShmTransport& shm = *c.comm.shm;
  FirstBarrier first;
  if (c.fusedNegotiation != nullptr) {
    first = [&c, &shm](const std::function<void()>& copyIn) {
      negotiateOpShm(shm, c.op, *c.fusedNegotiation, copyIn);
      c.negotiated();
    };
  }
  allreduceShm(c.args, shm, c.op.data, c.op.count, first, c.op.resumeEpoch != 0, c.op.transform.get(), c.op.out);
}

void runHierarchicalAllreduce(AlgorithmContext& c) {
  if (c.comm.size == 1) return;
  Hierarchy& h = *c.comm.hierarchy;
  CollectiveArgs cross = crossArgs(c);
  const size_t slice = c.op.count * dtypeSize(c.op.dtype) / static_cast<size_t>(h.perHost);
  // Read at the op, not when the hierarchy was made: the world's is made before rank 0's profile
  // reaches the other ranks.
  const EngineOptions& options = Engine::instance().options();
  const CostProfile* profile = options.profileLoaded ? &options.profile : nullptr;
  const bool doubles = h.networkDoubles(slice, profile);
  c.op.ranAcrossHosts = doubles ? Algorithm::kRecursiveDoubling : Algorithm::kRing;
  const CollectiveFn inter = doubles ? allreduceRecursiveDoubling : allreduceRing;
  // The overlap thread may make the network calls only when they are not MPI's, and is worth it
  // only where the profile (if loaded) measured that it hides something.
  const bool pipelined = c.comm.tcp && (profile == nullptr || cost::hierarchyPipelines(*profile));
  allreduceHierarchical(cross, *h.local, c.op.data, c.op.count, inter, pipelined ? &h.overlap : nullptr);
}

// --- broadcast ------------------------------------------------------------------------------------
void runBinomial(AlgorithmContext& c) { broadcastBinomial(c.args, c.op.data, c.op.count * dtypeSize(c.op.dtype), c.op.root); }
void runPipeline(AlgorithmContext& c) { broadcastPipeline(c.args, c.op.data, c.op.count * dtypeSize(c.op.dtype), c.op.root); }

void runHierarchicalBroadcast(AlgorithmContext& c) {
  if (c.comm.size == 1) return;
  Hierarchy& h = *c.comm.hierarchy;
  const size_t bytes = c.op.count * dtypeSize(c.op.dtype);
  CollectiveArgs cross = crossArgs(c);
  broadcastHierarchical(cross, *h.local, c.op.data, bytes, h.hostOfRank[c.op.root], h.localOfRank[c.op.root],
                        bytes > kBroadcastBinomialMaxBytes ? broadcastPipeline : broadcastBinomial);
}

// --- all-gather -----------------------------------------------------------------------------------
void runRingAllgather(AlgorithmContext& c) {
  const size_t es = dtypeSize(c.op.dtype);
  uint8_t* out = static_cast<uint8_t*>(c.op.out);
  if (c.op.count > 0) std::memcpy(out + c.comm.rank * c.op.count * es, c.op.data, c.op.count * es);
  ringAllgather(c.args, out, BlockLayout::even(c.op.count * c.comm.size, c.comm.size));
}

void runHierarchicalAllgather(AlgorithmContext& c) {
  const size_t es = dtypeSize(c.op.dtype);
  if (c.comm.size == 1) {
    if (c.op.count > 0) std::memcpy(c.op.out, c.op.data, c.op.count * es);
    return;
  }
  Hierarchy& h = *c.comm.hierarchy;
  CollectiveArgs cross = crossArgs(c);
  allgatherHierarchical(cross, *h.local, c.op.data, c.op.count * es, c.op.out, h.rankOf);
}

// --- reduce-scatter -------------------------------------------------------------------------------
void runRingReduceScatter(AlgorithmContext& c) {
  // The ring works in place on op.data, a copy (the engine's or the caller's): the caller's
  // input stays as it was.
  const size_t es = dtypeSize(c.op.dtype);
  uint8_t* work = static_cast<uint8_t*>(c.op.data);
  BlockLayout layout = BlockLayout::even(c.op.count, c.comm.size);
  ringReduceScatter(c.args, work, layout);
  uint8_t* mine = work + layout.offset[c.comm.rank] * es;
  if (c.op.redop == RedOp::kAvg) finishAverage(c.op.dtype, mine, layout.count(c.comm.rank), c.comm.size);
  if (c.op.outCount > 0) std::memcpy(c.op.out, mine, c.op.outCount * es);
}

const std::vector<AlgorithmRow>& table() {
  static const std::vector<AlgorithmRow> rows = {
      {OpKind::kAllreduce, Algorithm::kRing, always, runRing, true, ModelAlgorithm::kRing},
      {OpKind::kAllreduce, Algorithm::kTree, always, runTree, true, ModelAlgorithm::kTree},
      {OpKind::kAllreduce, Algorithm::kRecursiveDoubling, always, runRecursiveDoubling, true, ModelAlgorithm::kRecursiveDoubling},
      {OpKind::kAllreduce, Algorithm::kMpi, always, runMpi},
      {OpKind::kAllreduce, Algorithm::kShm, needsSharedMemory, runShm, true, ModelAlgorithm::kShm},
      {OpKind::kAllreduce, Algorithm::kHierarchical, needsHierarchy, runHierarchicalAllreduce, true, ModelAlgorithm::kHierarchical},
      {OpKind::kAllreduce, Algorithm::kDirect, always, runDirect, true, ModelAlgorithm::kDirect},
      {OpKind::kBroadcast, Algorithm::kTree, always, runBinomial},
      {OpKind::kBroadcast, Algorithm::kRing, always, runPipeline},
      {OpKind::kBroadcast, Algorithm::kHierarchical, needsHierarchy, runHierarchicalBroadcast},
      {OpKind::kAllgather, Algorithm::kRing, always, runRingAllgather},
      {OpKind::kAllgather, Algorithm::kHierarchical, needsHierarchy, runHierarchicalAllgather},
      {OpKind::kReduceScatter, Algorithm::kRing, always, runRingReduceScatter},
      // DeviceBuffers: every rank checks NCCL and its GPU, and all agree, when the first op makes
      // the NCCL communicator (nccl_ops.cc), so the row itself is always there.
      // `auto` picks it for host arrays only by a calibrated profile's measured times, once
      // the communicator's NCCL exists (cost_model.h's kNcclStaged).
      {OpKind::kAllreduce, Algorithm::kNccl, always, runNcclAllreduce, true, ModelAlgorithm::kNcclStaged},
      {OpKind::kBroadcast, Algorithm::kNccl, always, runNcclBroadcast},
      {OpKind::kAllgather, Algorithm::kNccl, always, runNcclAllgather},
      {OpKind::kReduceScatter, Algorithm::kNccl, always, runNcclReduceScatter},
  };
  return rows;
}

}  // namespace

const AlgorithmRow* findAlgorithm(OpKind kind, Algorithm algorithm) {
  for (const AlgorithmRow& row : table())
    if (row.kind == kind && row.algorithm == algorithm) return &row;
  return nullptr;
}

std::vector<const AlgorithmRow*> rowsOf(OpKind kind) {
  std::vector<const AlgorithmRow*> rows;
  for (const AlgorithmRow& row : table())
    if (row.kind == kind) rows.push_back(&row);
  return rows;
}

std::string algorithmsOf(OpKind kind) {
  std::vector<std::string> names;
  for (const AlgorithmRow& row : table())
    if (row.kind == kind) names.push_back(std::string("'") + algorithmName(row.algorithm) + "'");
  std::string out = "'auto'";
  for (size_t i = 0; i < names.size(); ++i) out += (i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

// Where the direct all-reduce stops beating the others, by the same alpha-beta terms: direct is one
// exchange carrying the agreement and (n-1)*m bytes; recursive doubling is the agreement's
// exchange plus L of m; the ring the agreement plus 2(n-1) of m/n. Direct wins while
// alpha*L > (n-1-L)*m*beta, and alpha*2(n-1) > ((n-1) - 2(n-1)/n)*m*beta. Capped by the two-rank
// measurement where doubling took over from the tree.
size_t directMaxBytes(int n) {
  const double cap = static_cast<double>(kRecursiveDoublingMaxBytesTwoRanks);
  if (n <= 2) return kRecursiveDoublingMaxBytesTwoRanks;  // the same exchange as doubling, agreement included
  int p = 1, steps = 0;
  while (p * 2 <= n) {
    p *= 2;
    ++steps;
  }
  if (p != n) steps += 2;
  double limit = cap;
  if (n - 1 > steps) limit = std::min(limit, kAlphaOverBetaBytes * steps / (n - 1.0 - steps));
  const double ringShare = 2.0 * (n - 1) / n;
  limit = std::min(limit, kAlphaOverBetaBytes * 2.0 * (n - 1) / ((n - 1.0) - ringShare));
  return static_cast<size_t>(limit);
}

// Where recursive doubling stops beating the ring for n > 2 ranks, from the two cost models
// (allreduce_recursive_doubling.cc, allreduce_ring.cc): doubling takes L = log2(p) exchanges of
// the whole message, plus 2 when n is not a power of two; the ring 2(n-1) steps of m/n. Equal
// at m = (alpha/beta) * (2(n-1) - L) / (L - 2(n-1)/n). These counts cannot be measured on the
// 2-core development machine, so the model decides, capped by the two-rank measurement.
size_t recursiveDoublingMaxBytes(int n) {
  if (n <= 2) return kRecursiveDoublingMaxBytesTwoRanks;
  int p = 1, steps = 0;
  while (p * 2 <= n) {
    p *= 2;
    ++steps;
  }
  if (p != n) steps += 2;
  const double ringSteps = 2.0 * (n - 1);
  const double ringShare = 2.0 * (n - 1) / n;
  if (steps <= ringShare) return kRecursiveDoublingMaxBytesTwoRanks;
  const double crossover = kAlphaOverBetaBytes * (ringSteps - steps) / (steps - ringShare);
  return static_cast<size_t>(std::min(crossover, static_cast<double>(kRecursiveDoublingMaxBytesTwoRanks)));
}

}  // namespace braid
