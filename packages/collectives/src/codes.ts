// Numbers that cross into the addon; they mirror native/src/kernels/dtype.h and engine/op.h.

export type DType = 'float32' | 'float64' | 'int32' | 'int64' | 'uint8' | 'int8' | 'float16' | 'bfloat16';
export type ReduceOp = 'sum' | 'prod' | 'min' | 'max' | 'avg';
export type AllReduceAlgorithm = 'auto' | 'shm' | 'ring' | 'tree' | 'recursive-doubling' | 'mpi' | 'hierarchical' | 'direct' | 'nccl';
export type BroadcastAlgorithm = 'auto' | 'tree' | 'ring' | 'hierarchical';
export type AllGatherAlgorithm = 'auto' | 'ring' | 'hierarchical';

export const DTYPE_CODES: Record<DType, number> = {
  float32: 0,
  float64: 1,
  int32: 2,
  int64: 3,
  uint8: 4,
  int8: 5,
  float16: 6,
  bfloat16: 7,
};

export const REDUCE_OP_CODES: Record<ReduceOp, number> = { sum: 0, prod: 1, min: 2, max: 3, avg: 4 };

export const ALGORITHM_CODES: Record<AllReduceAlgorithm, number> = {
  auto: 0,
  ring: 1,
  tree: 2,
  'recursive-doubling': 3,
  mpi: 4,
  shm: 5,
  hierarchical: 6,
  direct: 7,
  // DeviceBuffers on a GPU, for every collective (native engine/nccl_ops.h).
  nccl: 8,
};

export const OP_KIND = {
  allReduce: 0,
  broadcast: 1,
  allGather: 2,
  reduceScatter: 3,
  barrier: 4,
  split: 5,
  close: 6,
  send: 8,
  recv: 9,
} as const;
