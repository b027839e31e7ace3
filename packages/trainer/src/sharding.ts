// Which rows each rank trains on: one seeded permutation per epoch, the same on every rank, dealt
// out round-robin. When the rows do not divide by the number of ranks the permutation is padded
// with its own first rows (as PyTorch's DistributedSampler does), so every rank gets the same
// number of rows and therefore the same number of steps: no rank is left waiting in a collective.

/** A small, fast, seeded generator (mulberry32); the same seed gives the same stream everywhere. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A permutation of 0..n-1 (Fisher-Yates) drawn from `seed`. */
export function permutation(n: number, seed: number): Int32Array {
  const out = Int32Array.from({ length: n }, (_, i) => i);
  const random = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = out[i]!;
    out[i] = out[j]!;
    out[j] = t;
  }
  return out;
}

export interface ShardOptions {
  rows: number;
  rank: number;
  size: number;
  batchSize: number;
  seed: number;
  epoch: number;
  shuffle: boolean;
  /** Drop the last, smaller batch (default false: keep it; it has the same size on every rank). */
  dropRemainder?: boolean;
  /**
   * Rows of this epoch's order already trained, by all ranks together (default 0). The ranks deal
   * the order round-robin, so the rows trained after b batches of B rows on S ranks are the
   * order's first b*B*S: a job resumed on another number of ranks deals the rest from there, and
   * every row of the epoch is trained once across the two.
   */
  startPosition?: number;
}

/** This rank's batches for one epoch, as row indices. Every rank gets the same count and sizes. */
export function epochBatches(o: ShardOptions): Int32Array[] {
  if (o.rows === 0) return [];
  const from = o.startPosition ?? 0;
  if (!Number.isInteger(from) || from < 0 || from >= o.rows) throw new RangeError(`epochBatches: startPosition must be an integer in [0, ${o.rows}); got ${from}`);
  // Mix the epoch into the seed so every epoch has its own order.
  const order = o.shuffle ? permutation(o.rows, (o.seed * 0x9e3779b1 + o.epoch * 0x85ebca6b) >>> 0) : Int32Array.from({ length: o.rows }, (_, i) => i);
  const perRank = Math.ceil((o.rows - from) / o.size);
  const mine = new Int32Array(perRank);
  for (let k = 0; k < perRank; k++) mine[k] = order[(from + k * o.size + o.rank) % o.rows]!;
  const batches: Int32Array[] = [];
  for (let start = 0; start < perRank; start += o.batchSize) {
    const end = Math.min(perRank, start + o.batchSize);
    if (end - start < o.batchSize && o.dropRemainder && (batches.length > 0 || from > 0)) break;
    batches.push(mine.subarray(start, end));
  }
  return batches;
}

/** Disjoint validation shards (no padding, so every row counts once): rows rank, rank+size, ... */
export function validationRows(rows: number, rank: number, size: number): Int32Array {
  const out: number[] = [];
  for (let i = rank; i < rows; i += size) out.push(i);
  return Int32Array.from(out);
}
