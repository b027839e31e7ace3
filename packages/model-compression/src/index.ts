export {
  constantSparsity,
  MagnitudePruning,
  magnitudeMask,
  polynomialDecay,
  type PolynomialDecayOptions,
  type PrunableModel,
  type PrunedWeight,
  type PruningOptions,
  type PruningSchedule,
  type ScheduleTiming,
} from './pruning.js';
export { quantizeModel, quantizeValues, type QuantizationDtype, type QuantizedModel, type QuantizeOptions, type SavableModel, writeModelFolder } from './quantization.js';
export { BATCH_AWARE_LOSS, type DistillationLoss, type DistillationOptions, distillationLoss } from './distillation.js';
