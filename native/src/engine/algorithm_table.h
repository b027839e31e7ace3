// One table of (collective, algorithm) -> implementation: what can run where, and how. The
// engine picks a row (the caller's algorithm, or `auto`'s choice) and runs it; a new transport or
// algorithm is a file under algorithms/ (its cost model at the top, and in cost_model.h) plus a
// row here, never a new switch in the engine.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "algorithms/collective.h"
#include "algorithms/cost_model.h"
#include "engine/negotiation.h"
#include "engine/op.h"

namespace braid {

struct CommState;

struct AlgorithmContext {
  CommState& comm;
  OpRecord& op;
  CollectiveArgs& args;  // over the communicator's network transport
  // The shared-memory all-reduce's first barrier doubles as the agreement when this is set.
  const NegotiationLimits* fusedNegotiation;
  std::function<void()> negotiated;  // marks the end of the agreement (the timeline's phase)
};

struct AlgorithmRow {
  OpKind kind;
  Algorithm algorithm;
  // Empty when the row can run on `comm`; otherwise why not (for the BACKEND_UNAVAILABLE message).
  std::string (*unavailable)(const CommState& comm);
  void (*run)(AlgorithmContext& context);
  // Its cost model (cost_model.h), for `auto` with a calibrated profile; modeled = false: `auto`
  // never picks it by the model (MPI's own all-reduce, which the model does not describe).
  bool modeled = false;
  ModelAlgorithm model = ModelAlgorithm::kRing;
};

// The row for (kind, algorithm); nullptr if there is none.
const AlgorithmRow* findAlgorithm(OpKind kind, Algorithm algorithm);
// Every row of `kind`, in the table's order.
std::vector<const AlgorithmRow*> rowsOf(OpKind kind);
// The algorithms `kind` has, for messages ("'ring', 'tree' or 'hierarchical'").
std::string algorithmsOf(OpKind kind);

// Measured rules (benchmarks/README.md), used by `auto` when no profile is loaded.
size_t recursiveDoublingMaxBytes(int ranks);
// Up to where the direct all-reduce, carrying the agreement, beats recursive doubling and the ring.
size_t directMaxBytes(int ranks);

constexpr size_t kBroadcastBinomialMaxBytes = 128 * 1024;

}  // namespace braid
