export {
  type Dataset,
  type EarlyStoppingOptions,
  fit,
  type FitOptions,
  type FitResult,
  type StepInfo,
  type TrainableModel,
  type TrainerCallbacks,
} from './fit.js';
export { checkpointLoader, latestCheckpoint, type TrainerState } from './checkpoint.js';
export type { PipelineState } from './stage-checkpoint.js';
export { assembleServerCheckpoint, type ServerCheckpointState } from './server-checkpoint.js';
export { epochBatches, permutation, seededRandom, validationRows } from './sharding.js';
export type { ProgressMode } from './progress.js';
export { ElasticState, type CommittedValue, type ElasticStateOptions, type ResetInfo } from './elastic-state.js';
export { selectBackend, type BackendChoice, type BackendInfo, type BackendOptions } from './tfjs-backend.js';
export { localRanks, tensorflowThreads, type ThreadOptions } from './tensorflow-threads.js';
