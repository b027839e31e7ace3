// Keras's EarlyStopping, shared by fit under every strategy: watch one metric of the epoch's
// (rank-averaged) logs, stop after `patience` epochs without an improvement of more than
// `minDelta`, and keep a copy of the best epoch's weights when asked to put them back.
import { InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

import type { EarlyStoppingOptions } from './fit.js';

/** What a checkpoint keeps of early stopping (JSON turns an infinite best into null). */
export interface EarlyStoppingState {
  best: number | null;
  wait: number;
}

export class EarlyStopping {
  readonly monitor: string;
  readonly maximize: boolean;
  private best: number;
  private wait: number;
  private bestWeights: tf.Tensor[] | undefined;

  /** `metrics`: the names the epoch's logs will have, where known before training (checked now). */
  constructor(
    private readonly options: EarlyStoppingOptions,
    hasValidation: boolean,
    restored?: EarlyStoppingState,
    metrics?: string[],
  ) {
    this.monitor = options.monitor ?? (hasValidation ? 'val_loss' : 'loss');
    if (metrics && !metrics.includes(this.monitor)) {
      throw new InvalidArgumentError(`fit: earlyStopping.monitor '${this.monitor}' is not among the metrics (${metrics.join(', ')})`);
    }
    this.maximize = options.mode === 'max' || ((options.mode ?? 'auto') === 'auto' && /acc|auc|precision|recall/.test(this.monitor));
    this.best = restored?.best ?? (this.maximize ? -Infinity : Infinity);
    this.wait = restored?.wait ?? 0;
  }

  /**
   * Takes an epoch's logs; true when training should stop. `weights` gives copies of the weights
   * (called only when this epoch is the best and restoreBestWeights is on; kept until dispose).
   */
  observe(logs: Record<string, number>, weights: () => tf.Tensor[]): boolean {
    const value = logs[this.monitor];
    if (value === undefined) throw new InvalidArgumentError(`fit: earlyStopping.monitor '${this.monitor}' is not among the metrics (${Object.keys(logs).join(', ')})`);
    const delta = Math.abs(this.options.minDelta ?? 0);
    const improved = this.maximize ? value > this.best + delta : value < this.best - delta;
    if (improved) {
      this.best = value;
      this.wait = 0;
      if (this.options.restoreBestWeights) {
        tf.dispose(this.bestWeights ?? []);
        this.bestWeights = weights();
      }
      return false;
    }
    return ++this.wait > (this.options.patience ?? 0);
  }

  /** The best epoch's weights, when restoreBestWeights kept them (still owned by this object). */
  get bestWeightsKept(): tf.Tensor[] | undefined {
    return this.bestWeights;
  }

  get state(): EarlyStoppingState {
    return { best: this.best, wait: this.wait };
  }

  dispose(): void {
    tf.dispose(this.bestWeights ?? []);
    this.bestWeights = undefined;
  }
}
