// The linear scaling rule with gradual warm-up (Goyal et al., 2017, "Accurate, Large Minibatch
// SGD"): with N ranks the global batch is N times larger, so the learning rate is scaled by N; to
// keep the first steps stable it ramps linearly from the single-process rate to the scaled one.
import { checkOptions, InvalidArgumentError } from '@braid/collectives';

/** The learning rate for `size` ranks: baseLr * size. */
export function scaleLearningRate(baseLr: number, size: number): number {
  if (!Number.isFinite(baseLr) || baseLr <= 0) throw new InvalidArgumentError(`scaleLearningRate: baseLr must be a positive number; got ${baseLr}`);
  if (!Number.isInteger(size) || size < 1) throw new InvalidArgumentError(`scaleLearningRate: size must be a positive integer; got ${size}`);
  return baseLr * size;
}

export interface WarmupOptions {
  /** The rate after warm-up (usually scaleLearningRate(baseLr, size)). */
  targetLr: number;
  /** Ranks; the warm-up starts at targetLr / size. */
  size: number;
  /** Steps over which the rate ramps up (Goyal et al. use 5 epochs' worth). */
  warmupSteps: number;
}

/** lr(step): targetLr/size at step 0, rising linearly to targetLr at warmupSteps, then flat. */
export function linearWarmup(options: WarmupOptions): (step: number) => number {
  checkOptions('linearWarmup', options, ['targetLr', 'size', 'warmupSteps']);
  const { targetLr, size, warmupSteps } = options;
  if (!Number.isFinite(targetLr) || targetLr <= 0) throw new InvalidArgumentError(`linearWarmup: targetLr must be a positive number; got ${targetLr}`);
  if (!Number.isInteger(size) || size < 1) throw new InvalidArgumentError(`linearWarmup: size must be a positive integer; got ${size}`);
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0) throw new InvalidArgumentError(`linearWarmup: warmupSteps must be an integer >= 0; got ${warmupSteps}`);
  const start = targetLr / size;
  return (step: number) => {
    if (warmupSteps === 0 || step >= warmupSteps) return targetLr;
    return start + ((targetLr - start) * Math.max(0, step)) / warmupSteps;
  };
}
