// Magnitude pruning as the TensorFlow Model Optimization toolkit does it (Zhu and Gupta, "To prune,
// or not to prune", 2017): on a schedule, each pruned weight tensor's smallest-magnitude entries
// are masked to zero, and the masks are applied again after every optimizer step so that pruned
// weights stay zero while the rest train on.
//
// Under data parallelism every rank holds the same weights after each step, so the masks, which
// depend on the weights alone (ties broken by position), are the same everywhere. Given a
// communicator, each mask update also checks that (one 16-byte all-reduce), so a rank that
// drifted fails every rank instead of training a different network.
import { checkOptions, type Communicator, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

/** When masks are recomputed, and at which sparsity (the share of a tensor's entries that are zero). */
export interface PruningSchedule {
  /** The sparsity to prune to at `step` (global steps, counted from 1), or undefined if no update is due then. */
  sparsityAt(step: number): number | undefined;
  /** The sparsity of the last update due at or before `step` (0 before the first). */
  lastSparsityBefore(step: number): number;
  readonly description: string;
}

export interface ScheduleTiming {
  /** First step that prunes (default 0: from the start). */
  beginStep?: number;
  /** Last step that updates masks (-1: never stop; the default for constant sparsity). */
  endStep?: number;
  /** Masks are updated every this many steps between begin and end (default 100). */
  frequency?: number;
}

function fraction(what: string, value: unknown, allowOne = false): number {
  if (typeof value !== 'number' || !(value >= 0) || (allowOne ? value > 1 : value >= 1)) {
    throw new InvalidArgumentError(`pruning: ${what} must be in [0, ${allowOne ? '1]' : '1)'}; got ${JSON.stringify(value)}`);
  }
  return value;
}

function integer(what: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) throw new InvalidArgumentError(`pruning: ${what} must be an integer >= ${min}; got ${JSON.stringify(value)}`);
  return value;
}

function timing(options: ScheduleTiming, defaultEnd: number): { begin: number; end: number; frequency: number } {
  checkOptions('pruning schedule', options, ['beginStep', 'endStep', 'frequency', 'initialSparsity', 'finalSparsity', 'power']);
  const begin = integer('beginStep', options.beginStep, 0, 0);
  const end = integer('endStep', options.endStep, defaultEnd, -1);
  if (end !== -1 && end < begin) throw new InvalidArgumentError(`pruning: endStep (${end}) must be >= beginStep (${begin}), or -1`);
  return { begin, end, frequency: integer('frequency', options.frequency, 100, 1) };
}

function due(step: number, begin: number, end: number, frequency: number): boolean {
  return step >= begin && (end === -1 || step <= end) && (step - begin) % frequency === 0;
}

/** The last update step at or before `step` (undefined if none yet). */
function lastDue(step: number, begin: number, end: number, frequency: number): number | undefined {
  if (step < begin) return undefined;
  const upTo = end === -1 ? step : Math.min(step, end);
  return begin + Math.floor((upTo - begin) / frequency) * frequency;
}

/** Prune to `targetSparsity` at beginStep and keep it there (TF MOT's ConstantSparsity). */
export function constantSparsity(targetSparsity: number, options: ScheduleTiming = {}): PruningSchedule {
  const target = fraction('targetSparsity', targetSparsity);
  const { begin, end, frequency } = timing(options, -1);
  return {
    sparsityAt: (step) => (due(step, begin, end, frequency) ? target : undefined),
    lastSparsityBefore: (step) => (lastDue(step, begin, end, frequency) === undefined ? 0 : target),
    description: `constant ${target} from step ${begin}`,
  };
}

export interface PolynomialDecayOptions extends ScheduleTiming {
  /** Sparsity at beginStep (default 0). */
  initialSparsity?: number;
  finalSparsity: number;
  /** Required: the step at which finalSparsity is reached. */
  endStep: number;
  /** Default 3: prunes fast at first, when there are many redundant weights, then slowly. */
  power?: number;
}

/**
 * From initialSparsity at beginStep to finalSparsity at endStep along
 * s(t) = s_f + (s_i - s_f) (1 - (t - begin) / (end - begin))^power (TF MOT's PolynomialDecay).
 */
export function polynomialDecay(options: PolynomialDecayOptions): PruningSchedule {
  if (!options || typeof options !== 'object') throw new InvalidArgumentError('pruning: polynomialDecay takes { finalSparsity, endStep, ... }');
  const initial = fraction('initialSparsity', options.initialSparsity ?? 0);
  const final = fraction('finalSparsity', options.finalSparsity);
  if (options.endStep === undefined || options.endStep === -1) throw new InvalidArgumentError('pruning: polynomialDecay needs endStep, the step at which finalSparsity is reached');
  const { begin, end, frequency } = timing(options, options.endStep);
  if (end === begin) throw new InvalidArgumentError(`pruning: polynomialDecay needs endStep > beginStep; got ${begin} and ${end}`);
  const power = options.power ?? 3;
  if (typeof power !== 'number' || !(power > 0)) throw new InvalidArgumentError(`pruning: power must be a positive number; got ${JSON.stringify(power)}`);
  const at = (step: number) => {
    const progress = Math.min(1, Math.max(0, (step - begin) / (end - begin)));
    return final + (initial - final) * (1 - progress) ** power;
  };
  return {
    // The last step always updates, so the final sparsity is reached whatever the frequency.
    sparsityAt: (step) => (due(step, begin, end, frequency) || step === end ? at(step) : undefined),
    lastSparsityBefore: (step) => {
      if (step < begin) return 0;
      if (step >= end) return final;
      return at(lastDue(step, begin, end, frequency)!);
    },
    description: `polynomial ${initial} -> ${final} over steps ${begin}-${end} (power ${power})`,
  };
}

/** The parts of a tfjs LayersModel pruning uses. */
export interface PrunableModel {
  readonly weights: Array<{ name: string; shape: number[]; trainable?: boolean; read(): tf.Tensor; write(value: tf.Tensor): unknown }>;
}

export interface PruningOptions {
  /** Which weights to prune (default: every kernel, i.e. a name ending in '/kernel': Dense and Conv weights, not biases). */
  prune?: (weight: { name: string; shape: number[] }) => boolean;
  /** Checks at every mask update that every rank computed the same masks. */
  comm?: Communicator;
}

export interface PrunedWeight {
  name: string;
  size: number;
  /** Entries that are zero now. */
  zeros: number;
  sparsity: number;
}

const isKernel = (w: { name: string }) => /(^|\/)kernel$/.test(w.name);

export class MagnitudePruning {
  private readonly targets: PrunableModel['weights'];
  private masks: tf.Tensor[] | undefined;
  private maskHash = 0;
  /** The sparsity the masks were last made at (0: no masks yet). */
  currentSparsity = 0;
  private stripped = false;

  constructor(
    readonly model: PrunableModel,
    readonly schedule: PruningSchedule,
    private readonly options: PruningOptions = {},
  ) {
    checkOptions('MagnitudePruning', options, ['prune', 'comm']);
    if (!model || !Array.isArray(model.weights)) throw new InvalidArgumentError('MagnitudePruning: pass a tfjs LayersModel (build it first: its weights must exist)');
    if (!schedule || typeof schedule.sparsityAt !== 'function') {
      throw new InvalidArgumentError('MagnitudePruning: pass a schedule, e.g. polynomialDecay({ finalSparsity: 0.9, endStep: 1000 }) or constantSparsity(0.5)');
    }
    const choose = options.prune ?? isKernel;
    this.targets = model.weights.filter((w) => choose({ name: w.name, shape: [...w.shape] }));
    if (this.targets.length === 0) {
      throw new InvalidArgumentError(`MagnitudePruning: no weight to prune (the model's are ${model.weights.map((w) => w.name).join(', ')}); pass prune: (w) => ... to choose`);
    }
  }

  /** After the optimizer step that made `globalStep` (counted from 1): update the masks if due, then apply them. */
  step(globalStep: number): void {
    if (this.stripped) return;
    const sparsity = this.schedule.sparsityAt(globalStep);
    if (sparsity !== undefined) this.updateMasks(sparsity);
    this.applyMasks();
  }

  /**
   * On resuming at `globalStep` (a checkpoint): the masks of the last update before it. Pruned
   * weights were saved as zeros, the smallest magnitudes, so the same entries are masked again.
   */
  resume(globalStep: number): void {
    const sparsity = this.schedule.lastSparsityBefore(globalStep);
    if (sparsity > 0) {
      this.updateMasks(sparsity);
      this.applyMasks();
    }
  }

  /** Callbacks for @braid/trainer's fit: masks after every step, restored on resume. */
  callbacks(): { onTrainBegin: (info: { globalStep: number }) => void; onBatchEnd: (step: { globalStep: number }) => void } {
    return {
      onTrainBegin: ({ globalStep }) => this.resume(globalStep),
      onBatchEnd: ({ globalStep }) => this.step(globalStep),
    };
  }

  /** Each pruned weight's zeros now. */
  summary(): PrunedWeight[] {
    return this.targets.map((w) => {
      const values = w.read().dataSync();
      let zeros = 0;
      for (let i = 0; i < values.length; i++) if (values[i] === 0) zeros++;
      return { name: w.name, size: values.length, zeros, sparsity: zeros / values.length };
    });
  }

  /** Stops pruning: masks applied one last time and released; the model keeps its zeros and trains or saves as any other. */
  strip(): PrunedWeight[] {
    if (!this.stripped) {
      this.applyMasks();
      tf.dispose(this.masks ?? []);
      this.masks = undefined;
      this.stripped = true;
    }
    return this.summary();
  }

  private updateMasks(sparsity: number): void {
    const masks = this.targets.map((w) => magnitudeMask(w.read(), sparsity));
    tf.dispose(this.masks ?? []);
    this.masks = masks.map((m) => m.mask);
    this.currentSparsity = sparsity;
    this.maskHash = masks.reduce((h, m) => mix(h, m.hash), 0);
    const comm = this.options.comm;
    if (comm && comm.size > 1) {
      // max of (h, -h) over ranks: equal on every rank exactly when every rank's h is the same.
      const check = new Float64Array([this.maskHash, -this.maskHash]);
      comm.allReduceSync(check, { op: 'max' });
      if (check[0] !== -check[1]!) {
        throw new InvalidArgumentError(
          `pruning: the ranks computed different masks at sparsity ${sparsity} (their weights differ); train with a DataParallel strategy so every rank holds the same weights`,
        );
      }
    }
  }

  private applyMasks(): void {
    if (!this.masks) return;
    this.targets.forEach((w, i) => {
      const masked = tf.mul(w.read(), this.masks![i]!);
      w.write(masked);
      masked.dispose();
    });
  }
}

/** A 0/1 mask zeroing the round(sparsity x size) smallest |w| (ties: the earlier position first), and its hash. */
export function magnitudeMask(weight: tf.Tensor, sparsity: number): { mask: tf.Tensor; hash: number } {
  const values = weight.dataSync();
  const n = values.length;
  const k = Math.round(sparsity * n);
  const mask = new Float32Array(n).fill(1);
  if (k > 0) {
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => Math.abs(values[a]!) - Math.abs(values[b]!) || a - b);
    for (let i = 0; i < k; i++) mask[order[i]!] = 0;
  }
  let hash = 0;
  for (let i = 0; i < n; i++) if (mask[i] === 0) hash = mix(hash, i);
  return { mask: tf.tensor(mask, weight.shape, 'float32'), hash };
}

// A 32-bit mixing step (FNV-1a style): exact in doubles, so equal hashes compare equal after an all-reduce.
function mix(hash: number, value: number): number {
  return Math.imul((hash ^ value) >>> 0, 16777619) >>> 0;
}
