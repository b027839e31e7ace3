// Gradient fusion: consecutive tensors are packed into buckets of at most `bucketBytes` (a tensor
// larger than that gets a bucket to itself), so one training step makes a few large all-reduces
// instead of one small one per variable.

export interface BucketSlot {
  /** Index of the tensor in the step's gradient list. */
  tensor: number;
  /** Element offset inside the bucket. */
  offset: number;
  length: number;
}

export interface Bucket {
  length: number;
  slots: BucketSlot[];
}

export function planBuckets(lengths: readonly number[], bucketBytes: number, bytesPerElement = 4): Bucket[] {
  const capacity = Math.max(1, Math.floor(bucketBytes / bytesPerElement));
  const buckets: Bucket[] = [];
  let current: Bucket | undefined;
  lengths.forEach((length, tensor) => {
    if (!current || (current.length > 0 && current.length + length > capacity)) {
      current = { length: 0, slots: [] };
      buckets.push(current);
    }
    current.slots.push({ tensor, offset: current.length, length });
    current.length += length;
  });
  return buckets;
}

/** A key that changes when the list of gradient sizes does. */
export function layoutKey(lengths: readonly number[]): string {
  return lengths.join(',');
}
