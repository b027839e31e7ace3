// The all-reduce cost model that `auto` chooses by and `braid plan` predicts with: the alpha-beta
// terms of each algorithm file's header, made concrete per link class. A message of m bytes over a
// link costs alpha + m * beta; reducing m bytes costs m * gamma. The numbers come from a profile
// that `braid calibrate` measures (init loads it: BRAID_PROFILE), or from the defaults below,
// measured on the development VM (2 vCPUs; hosts made of network namespaces).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>

namespace braid {

struct LinkCost {
  double alphaUs = 0;        // per message (one-way latency plus the software's own turn)
  double betaUsPerByte = 0;  // per byte, both directions of an exchange moving at once
  // Where calibrated under load: the exchange's measured times, interpolated between sizes and
  // extended past the largest with the last stretch's slope. Under load the cost per byte is not
  // one number (on the test bed 1.3 GB/s at 256 KiB, 0.7 at 16 MiB): one alpha and beta fitted
  // to all sizes were 40% off at 512 KiB-1 MiB.
  static constexpr int kMaxPoints = 8;
  int points = 0;
  double bytes[kMaxPoints] = {};
  double us[kMaxPoints] = {};

  double timeUs(double m) const {
    if (points < 2) return alphaUs + m * betaUsPerByte;
    if (m <= bytes[0]) return us[0];
    int i = 1;
    while (i < points - 1 && m > bytes[i]) ++i;
    const double slope = (us[i] - us[i - 1]) / (bytes[i] - bytes[i - 1]);
    // Past the largest point: from it, at the last stretch's slope or beta, whichever is steeper.
    if (m > bytes[points - 1]) return us[points - 1] + (m - bytes[points - 1]) * std::max(slope, betaUsPerByte);
    return us[i - 1] + (m - bytes[i - 1]) * slope;
  }
};

// Where the ranks are: n = hosts * perHost when the hosts are even; perHost is the largest
// count on any host otherwise.
struct Topology {
  int ranks = 1;
  int hosts = 1;
  int perHost = 1;
  bool sharedMemory = false;  // one host with its shared-memory region
  bool hierarchy = false;     // several hosts, the same number of ranks (>1) on each
  // The agreement rides on the direct all-reduce's one exchange (ranks on several hosts, over
  // Braid's TCP transport): that algorithm pays no separate agreement exchange.
  bool directCarriesAgreement = false;
  // Every rank has its GPU and NCCL, and the communicator's NCCL is made (an earlier op on
  // DeviceBuffers or with algorithm 'nccl' made it): the staged NCCL all-reduce can run.
  bool ncclReady = false;
};

struct CostProfile {
  LinkCost network;   // between hosts (the TCP transport), one pair alone
  LinkCost local;     // point-to-point between ranks of one host (MPI or loopback TCP), one pair alone
  // The exchanges each algorithm's steps make, measured with every rank moving data at once on
  // the placement `braid calibrate` ran on (calibratedHosts x calibratedPerHost); zero where not
  // measured. On separate machines these come out near the pair's numbers (times the ranks
  // sharing a host's link); where hosts share cores (the test bed: 4 ranks on 2 cores) they
  // carry that too, which no pair measurement shows (predictions 3-10x optimistic without them).
  LinkCost ringStep;  // each rank to the next in rank order, ranks host by host: a ring's step
  LinkCost crossAll;  // each rank to the rank of its local index on the next host
  LinkCost localAll;  // each rank to the next on its own host
  // Each rank to every other at once, m to each (the direct all-reduce's exchange; the agreement
  // over TCP sends its descriptors so): a measured curve only, no numbers of its own.
  LinkCost allPeers;
  // Not a link: the staged NCCL all-reduce of host arrays (NcclCommunicator::allReduceStaged:
  // copies to the GPU, NCCL, copies back, pipelined), whole-op times that `braid calibrate`
  // measures where every rank has a GPU and NCCL. No points: never measured, and `auto` never
  // picks it for host arrays.
  LinkCost ncclStaged;
  double shmBarrierUs = 0.6;         // one shared-memory barrier
  // Moving bytes through the shared region, per byte of the buffer: each rank writes its share
  // into its slot, and after a barrier reads the others' shares (one local phase's pass).
  double shmCopyUsPerByte = 1.0 / 6000;
  double gammaUsPerByte = 1.0 / 8000;    // reducing float32 (8 GB/s)
  double opUs = 3;                   // fixed cost of an op (the agreement's software, the call)
  // The share of the shorter of a pipelined hierarchical all-reduce's two phases (network,
  // shared memory) that running them at once hides: 1 where they use different resources, near
  // 0 where both need the same busy cores.
  double overlap = 1;
  double calibratedHosts = 0, calibratedPerHost = 0;  // 0: not from a calibration
  size_t shmSlotBytes = 1 << 20;     // per rank (init's shmSlotBytes)
  static CostProfile defaults() {
    CostProfile p;
    p.network = {4.0, 1.0 / 2600};  // namespace hosts: 3.8 us one way, 2.6 GB/s busbw
    p.local = {1.0, 1.0 / 4000};
    return p;
  }
  // A loaded link's numbers hold for the placement they were measured on.
  bool measuredOn(const Topology& t, const LinkCost& loaded) const {
    return calibratedHosts == t.hosts && calibratedPerHost == t.perHost && (loaded.alphaUs > 0 || loaded.betaUsPerByte > 0 || loaded.points >= 2);
  }
};

// The links a profile may give measured curves for (the loaded ones), by name.
constexpr size_t kCurvedLinks = 5;
inline const char* const* curvedLinkNames() {
  static const char* const names[kCurvedLinks] = {"ringStep", "crossAll", "localAll", "ncclStaged", "allPeers"};
  return names;
}
inline std::array<LinkCost*, kCurvedLinks> curvedLinks(CostProfile& p) {
  return {&p.ringStep, &p.crossAll, &p.localAll, &p.ncclStaged, &p.allPeers};
}

// A profile file's version: 2 added the loaded links, overlap and the calibrated placement.
constexpr int kProfileVersion = 2;

// The profile's numbers by name, in the one order the profile file, the addon and the start-up
// broadcast use.
constexpr size_t kProfileFields = 17;
inline const char* const* profileFieldNames() {
  static const char* const names[kProfileFields] = {
      "networkAlphaUs", "networkBetaUsPerByte", "localAlphaUs",     "localBetaUsPerByte", "ringStepAlphaUs",
      "ringStepBetaUsPerByte", "crossAllAlphaUs", "crossAllBetaUsPerByte", "localAllAlphaUs", "localAllBetaUsPerByte",
      "shmBarrierUs",   "shmCopyUsPerByte",     "gammaUsPerByte",   "opUs",               "overlap",
      "calibratedHosts", "calibratedPerHost"};
  return names;
}
inline std::array<double*, kProfileFields> profileFields(CostProfile& p) {
  return {&p.network.alphaUs, &p.network.betaUsPerByte, &p.local.alphaUs,  &p.local.betaUsPerByte, &p.ringStep.alphaUs,
          &p.ringStep.betaUsPerByte, &p.crossAll.alphaUs, &p.crossAll.betaUsPerByte, &p.localAll.alphaUs, &p.localAll.betaUsPerByte,
          &p.shmBarrierUs,  &p.shmCopyUsPerByte,   &p.gammaUsPerByte, &p.opUs,               &p.overlap,
          &p.calibratedHosts, &p.calibratedPerHost};
}

// The largest direct all-reduce whose buffers ride on the agreement over TCP; larger ones are
// agreed first, then sent. A carried buffer is sent from a copy of its own (it must outlive a
// hand-off of the op to the engine thread), which at 256 KiB-1 MiB cost more than the agreement's
// exchange saved; and a MISMATCH drops what was sent.
constexpr size_t kDirectCarriedMaxBytes = 64 * 1024;

enum class ModelAlgorithm { kRing, kRecursiveDoubling, kTree, kShm, kHierarchical, kDirect, kNcclStaged };

namespace cost {

inline int ceilLog2(int n) {
  int steps = 0;
  while ((1 << steps) < n) ++steps;
  return steps;
}

// Reducing m bytes.
inline double reduceUs(const CostProfile& p, double m) { return m * p.gammaUsPerByte; }

// The link a flat algorithm's step crosses: the network as soon as the ranks span hosts.
inline LinkCost flatLink(const Topology& t, const CostProfile& p) { return t.hosts > 1 ? p.network : p.local; }

// allreduce_ring.cc: 2(n-1) steps of m/n bytes; (n-1)/n * m reduced. With ranks placed host by
// host, each host has one ring edge leaving it, so no link is shared.
inline double ring(const Topology& t, const CostProfile& p, double m) {
  const int n = t.ranks;
  if (n <= 1) return 0;
  const LinkCost l = p.measuredOn(t, p.ringStep) ? p.ringStep : flatLink(t, p);
  return 2.0 * (n - 1) * l.timeUs(m / n) + (n - 1.0) * reduceUs(p, m / n);
}

// allreduce_recursive_doubling.cc: log2(p) exchanges of the whole buffer (two more steps when n
// is not a power of two). The first log2(perHost) stay on a host; in the others every rank of a
// host crosses the network at once, sharing the host's link (measured so, where calibrated).
inline double recursiveDoubling(const Topology& t, const CostProfile& p, double m) {
  const int n = t.ranks;
  if (n <= 1) return 0;
  int pow2 = 1, steps = 0;
  while (pow2 * 2 <= n) {
    pow2 *= 2;
    ++steps;
  }
  const int localSteps = t.hosts > 1 ? std::min(steps, ceilLog2(t.perHost)) : steps;
  const LinkCost net = flatLink(t, p);
  LinkCost crossing = net;
  if (t.hosts > 1 && p.measuredOn(t, p.crossAll)) {
    crossing = p.crossAll;
  } else if (t.hosts > 1) {
    crossing.betaUsPerByte *= std::max(1, t.perHost);
  }
  const LinkCost& within = t.hosts > 1 && p.measuredOn(t, p.localAll) ? p.localAll : p.local;
  double us = localSteps * (within.timeUs(m) + reduceUs(p, m)) + (steps - localSteps) * (crossing.timeUs(m) + reduceUs(p, m));
  if (pow2 != n) us += 2 * net.timeUs(m);
  return us;
}

// allreduce_direct.cc: one step in which each rank sends the whole buffer to the n-1 others, the
// sends at once: across hosts each rank's n-L messages share its host's link with the host's other
// L-1 ranks (measured so where calibrated: every rank crossing at once), while its L-1 messages
// within the host move beside them; then n-1 reductions of m.
inline double direct(const Topology& t, const CostProfile& p, double m) {
  const int n = t.ranks;
  if (n <= 1) return 0;
  // Where the exchange itself was measured (every rank to every other at once), its time.
  if (t.hosts > 1 && p.measuredOn(t, p.allPeers)) return p.allPeers.timeUs(m) + (n - 1.0) * reduceUs(p, m);
  const int perHost = t.hosts > 1 ? std::max(1, t.perHost) : n;
  double within = 0, across = 0;
  if (perHost > 1) {
    const LinkCost& l = t.hosts > 1 && p.measuredOn(t, p.localAll) ? p.localAll : p.local;
    within = l.timeUs((perHost - 1.0) * m);
  }
  if (t.hosts > 1) {
    const double remote = static_cast<double>(n - perHost) * m;
    across = p.measuredOn(t, p.crossAll) ? p.crossAll.timeUs(remote)
                                         : p.network.alphaUs + remote * perHost * p.network.betaUsPerByte;
  }
  return std::max(within, across) + (n - 1.0) * reduceUs(p, m);
}

// allreduce_tree.cc: 2 ceil(log2 n) steps of the whole buffer, ceil(log2 n) reductions.
inline double tree(const Topology& t, const CostProfile& p, double m) {
  const int n = t.ranks;
  if (n <= 1) return 0;
  const LinkCost l = flatLink(t, p);
  const int depth = ceilLog2(n);
  return 2.0 * depth * l.timeUs(m) + depth * reduceUs(p, m);
}

// allreduce_shm.cc: per chunk of half a slot, two barriers; every byte copied in, 1/n of it
// reduced over n slots and published, (n-1)/n copied out.
inline double shm(const Topology& t, const CostProfile& p, double m) {
  const int n = t.ranks;
  if (n <= 1) return 0;
  const double chunk = std::max<double>(1, p.shmSlotBytes / 2.0);
  const double rounds = std::ceil(m / chunk);
  return 2 * rounds * p.shmBarrierUs + 2 * m * p.shmCopyUsPerByte + (n - 1.0) / n * m * p.gammaUsPerByte;
}

// hierarchical.cc's network step: the all-reduce of a slice among the H ranks of one local
// index, one per host, every local rank crossing at once (measured so where calibrated).
struct HierarchyNetwork {
  Topology cross;
  CostProfile shared;
};
inline HierarchyNetwork hierarchyNetwork(const Topology& t, const CostProfile& p) {
  HierarchyNetwork h;
  h.cross.ranks = t.hosts;
  h.cross.hosts = t.hosts;
  h.cross.perHost = 1;
  h.shared = p;
  h.shared.calibratedHosts = 0;  // the ranks among hosts are not the placement calibrated
  if (p.measuredOn(t, p.crossAll)) {
    h.shared.network = p.crossAll;
  } else {
    h.shared.network = {p.network.alphaUs, p.network.betaUsPerByte * std::max(1, t.perHost)};  // the host's link carries L flows
  }
  return h;
}

// Whether that step takes recursive doubling (else the ring) for a slice: whichever this model
// predicts quicker. The engine asks the same where a profile is loaded, so that the prediction
// is of the algorithm that runs.
inline bool hierarchyNetworkDoubles(const Topology& t, const CostProfile& p, double slice) {
  const HierarchyNetwork h = hierarchyNetwork(t, p);
  return recursiveDoubling(h.cross, h.shared, slice) < ring(h.cross, h.shared, slice);
}

// Below this measured overlap the hierarchical all-reduce runs its phases one after the other,
// without its pipeline thread: where the network step and the copies need the same busy cores,
// the thread hides nothing and costs. On the test bed (4 ranks on 2 cores, overlap measured 0),
// 32-64 MiB took 46-64 and 76-106 ms without it against 63-80 and 86-157 ms with it (4 pairs).
constexpr double kOverlapWorthAThread = 0.1;
inline bool hierarchyPipelines(const CostProfile& p) { return p.overlap >= kOverlapWorthAThread; }

// hierarchical.cc: local reduce-scatter and all-gather through shared memory (each a barrier per
// half slot, every byte copied once), the network all-reduce of m/L among H ranks (above); from
// 2 MiB segments on, where it pipelines, the network step of one segment runs beside the
// shared-memory steps of the next, hiding `overlap` of the shorter phase.
inline double hierarchical(const Topology& t, const CostProfile& p, double m, bool overlapped) {
  const int perHost = std::max(1, t.perHost);
  const double chunk = std::max<double>(1, p.shmSlotBytes / 2.0);
  const double rounds = std::ceil(m / chunk);
  const double local = 2 * rounds * p.shmBarrierUs + 2 * m * p.shmCopyUsPerByte + (perHost - 1.0) / perHost * m * p.gammaUsPerByte;
  const HierarchyNetwork h = hierarchyNetwork(t, p);
  const double slice = m / perHost;
  const double net = std::min(ring(h.cross, h.shared, slice), recursiveDoubling(h.cross, h.shared, slice));
  if (!overlapped || !hierarchyPipelines(p)) return local + net;
  const double segments = std::max(1.0, std::ceil(m / (2.0 * 1024 * 1024)));
  const double hidden = std::clamp(p.overlap, 0.0, 1.0) * std::min(local, net) * (1 - 1 / segments);
  return local + net - hidden;
}

}  // namespace cost

// Predicted time of one all-reduce of `bytes`, in microseconds, the fixed per-op cost included;
// infinity where the algorithm cannot run on `t`.
inline double predictAllreduceUs(ModelAlgorithm a, const Topology& t, const CostProfile& p, size_t bytes,
                                 bool overlapped = true) {
  const double m = static_cast<double>(bytes);
  const double inf = std::numeric_limits<double>::infinity();
  if (t.ranks <= 1) return p.opUs;
  switch (a) {
    case ModelAlgorithm::kRing: return p.opUs + cost::ring(t, p, m);
    case ModelAlgorithm::kRecursiveDoubling: return p.opUs + cost::recursiveDoubling(t, p, m);
    case ModelAlgorithm::kTree: return p.opUs + cost::tree(t, p, m);
    case ModelAlgorithm::kShm: return t.sharedMemory ? p.opUs + cost::shm(t, p, m) : inf;
    case ModelAlgorithm::kHierarchical: return t.hierarchy ? p.opUs + cost::hierarchical(t, p, m, overlapped) : inf;
    case ModelAlgorithm::kDirect:
      return (t.directCarriesAgreement && bytes <= kDirectCarriedMaxBytes ? 0 : p.opUs) + cost::direct(t, p, m);
    case ModelAlgorithm::kNcclStaged:
      // Measured only, on the placement calibrated: nothing here says what PCIe, the GPUs and
      // NCCL's network do elsewhere.
      return t.ncclReady && p.ncclStaged.points >= 2 && p.calibratedHosts == t.hosts && p.calibratedPerHost == t.perHost
                 ? p.opUs + p.ncclStaged.timeUs(m)
                 : inf;
  }
  return inf;
}

}  // namespace braid
