// The optimizer DataParallel hands out: gradients are averaged across ranks, then the wrapped
// optimizer applies them. `minimize` / `applyGradients` block (what LayersModel.fit needs);
// `minimizeAsync` / `applyGradientsAsync` overlap reading out one bucket with reducing another.
import * as tf from '@tensorflow/tfjs-core';

import type { GradientReducer } from './reducer.js';

type NamedTensor = { name: string; tensor: tf.Tensor };
type VariableGradients = tf.NamedTensorMap | NamedTensor[];

export interface DistributedOptimizerOptions {
  /** Average the gradients of this many local steps, then apply once (1: every step). */
  accumulationSteps: number;
  /** Apply local gradients every step and average the weights every this many steps (0: off). */
  localSgdSteps: number;
}

const BRAND = Symbol.for('braid.DistributedOptimizer');

export class DistributedOptimizer extends tf.Optimizer {
  // tfjs's Optimizer answers `instanceof` by duck typing, which every subclass inherits: without
  // this, any tfjs optimizer would pass for a DistributedOptimizer.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }

  readonly [BRAND] = true;
  /** Steps seen by applyGradients, communicating or not. */
  localSteps = 0;
  private accumulated: Float32Array[] | null = null;
  // The layout the accumulators were made for: the dense warm-up layout and the compressed one
  // have the same tensors (the same key) but different buckets.
  private accumulatedFor: object | null = null;

  /**
   * `exact` averages weights (local SGD): never through a lossy compressor or half precision,
   * which would zero or round the weights themselves.
   */
  constructor(
    readonly inner: tf.Optimizer,
    private readonly reducer: GradientReducer,
    private readonly options: DistributedOptimizerOptions,
    private readonly exact: GradientReducer = reducer,
  ) {
    super();
  }

  override applyGradients(variableGradients: VariableGradients): void {
    const named = toNamedList(variableGradients);
    this.localSteps++;
    if (this.options.localSgdSteps > 0) {
      this.inner.applyGradients(named);
      if (this.localSteps % this.options.localSgdSteps === 0) this.averageVariablesSync(named.map((g) => g.name));
      return;
    }
    const tensors = named.map((g) => g.tensor);
    let averaged: tf.Tensor[];
    if (this.options.accumulationSteps > 1) {
      const layout = this.reducer.layoutFor(tensors);
      this.reducer.gatherSync(layout, tensors);
      if (this.accumulatedFor !== layout || !this.accumulated) {
        // A new layout starts with an empty window (layouts change only between reductions).
        this.accumulated = layout.flat.map((f) => new Float32Array(f.length));
        this.accumulatedFor = layout;
      }
      layout.flat.forEach((f, b) => addInto(this.accumulated![b]!, f));
      if (this.localSteps % this.options.accumulationSteps !== 0) return;
      const scale = 1 / this.options.accumulationSteps;
      layout.flat.forEach((f, b) => {
        const acc = this.accumulated![b]!;
        for (let i = 0; i < f.length; i++) f[i] = acc[i]! * scale;
        acc.fill(0);
      });
      this.reducer.reduceBucketsSync(layout);
      this.reducer.stats.reductions++;
      averaged = this.reducer.scatter(layout, tensors.map((t) => t.dtype), { lend: true });
    } else {
      // Lent: the inner optimizer only reads them in its ops, and they are disposed right after.
      averaged = this.reducer.reduceSync(tensors, { lend: true });
    }
    try {
      this.inner.applyGradients(named.map((g, i) => ({ name: g.name, tensor: averaged[i]! })));
    } finally {
      tf.dispose(averaged);
    }
  }

  /**
   * For custom training loops: averages the gradients without blocking the event loop, then
   * applies them. Gradient accumulation and local SGD take the synchronous path.
   */
  async applyGradientsAsync(variableGradients: VariableGradients): Promise<void> {
    if (this.options.localSgdSteps > 0 || this.options.accumulationSteps > 1) {
      this.applyGradients(variableGradients);
      return;
    }
    const named = toNamedList(variableGradients);
    this.localSteps++;
    const averaged = await this.reducer.reduce(named.map((g) => g.tensor), { lend: true });
    try {
      this.inner.applyGradients(named.map((g, i) => ({ name: g.name, tensor: averaged[i]! })));
    } finally {
      tf.dispose(averaged);
    }
  }

  /** `minimize` for custom loops: computes the gradients, averages them asynchronously, applies them. */
  async minimizeAsync(f: () => tf.Scalar, returnCost = false, varList?: tf.Variable[]): Promise<tf.Scalar | null> {
    const { value, grads } = this.computeGradients(f, varList);
    try {
      const list = varList ? varList.map((v) => ({ name: v.name, tensor: grads[v.name]! })) : grads;
      await this.applyGradientsAsync(list);
    } catch (err) {
      value.dispose();
      throw err;
    } finally {
      tf.dispose(grads);
    }
    if (returnCost) return value;
    value.dispose();
    return null;
  }

  /** Local SGD's averaging step: every listed variable becomes the mean over ranks. */
  private averageVariablesSync(names: string[]): void {
    const variables = names.map((name) => {
      const variable = tf.engine().registeredVariables[name];
      if (!variable) throw new Error(`local SGD: variable ${name} is not registered with tfjs`);
      return variable;
    });
    const averaged = this.exact.reduceSync(variables, { lend: true });
    variables.forEach((v, i) => v.assign(averaged[i]!));
    tf.dispose(averaged);
  }

  override get iterations(): number {
    return this.inner.iterations;
  }

  /** The wrapped optimizer's learning rate (read and set, e.g. by a warm-up schedule). */
  get learningRate(): number {
    return (this.inner as unknown as { learningRate: number }).learningRate;
  }

  set learningRate(value: number) {
    const inner = this.inner as unknown as { learningRate: number; setLearningRate?: (lr: number) => void };
    if (typeof inner.setLearningRate === 'function') inner.setLearningRate(value);
    else inner.learningRate = value;
  }

  override getWeights(): Promise<NamedTensor[]> {
    return this.inner.getWeights();
  }

  override setWeights(weightValues: NamedTensor[]): Promise<void> {
    return this.inner.setWeights(weightValues);
  }

  // Saved models record the wrapped optimizer, so they load anywhere without Braid.
  override getClassName(): string {
    return this.inner.getClassName();
  }

  override getConfig(): tf.serialization.ConfigDict {
    return this.inner.getConfig();
  }

  override dispose(): void {
    this.inner.dispose();
  }
}

function toNamedList(gradients: VariableGradients): NamedTensor[] {
  if (Array.isArray(gradients)) return gradients;
  return Object.keys(gradients).map((name) => ({ name, tensor: gradients[name]! }));
}

function addInto(acc: Float32Array, values: Float32Array): void {
  for (let i = 0; i < acc.length; i++) acc[i]! += values[i]!;
}
