export {
  type Broadcastable,
  DataParallel,
  type DataParallelOptions,
  DEFAULT_BUCKET_BYTES,
  type PrivateGradients,
  type PrivateGradientsOptions,
} from './data-parallel.js';
export { type ClippedSum, DifferentialPrivacy, type DifferentialPrivacyOptions } from './differential-privacy.js';
export { DistributedOptimizer } from './distributed-optimizer.js';
export type { CommunicationStats, Compression } from './reducer.js';
export { linearWarmup, scaleLearningRate, type WarmupOptions } from './schedules.js';
export {
  averageMetricsOnEpochEnd,
  broadcastOnTrainBegin,
  dataParallelCallbacks,
  type FitCallback,
  learningRateWarmup,
  type WarmupCallbackOptions,
} from './callbacks.js';
export { planBuckets, type Bucket } from './buckets.js';
export { SecureAggregator, type SecureAggregationOptions } from './secure-aggregation.js';
export { computeEpsilon, DEFAULT_RDP_ORDERS, noiseMultiplierFor, type PrivacySpent, RdpAccountant, sampledGaussianRdp } from './privacy-accountant.js';
export { balancedBoundaries, type PipelineLayer, type PipelineLoss, type PipelineModel, type PipelineOptions, PipelineParallel, type PipelineStats } from './pipeline-parallel.js';
export { ParameterServer, type ParameterServerOptions, type ServerStats } from './parameter-server.js';
