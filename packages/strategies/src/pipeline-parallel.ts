// Pipeline model parallelism (GPipe, Huang et al. 2019; 1F1B, Narayanan et al., PipeDream 2019):
// a model's layers (a Sequential's, or a functional model's where one tensor passes each cut) are
// split into stages, one per rank; each batch is split into micro-batches that flow forward
// through the stages (activations sent to the next rank) and backward (gradients sent to the
// previous one), and each stage applies its own optimizer step once the batch's micro-batches are
// through.
//
// The backward pass recomputes the stage's forward from the stashed stage input (GPipe's
// re-materialization): a stage keeps one input tensor per micro-batch in flight, not the whole
// tape. 'gpipe' runs every forward, then every backward (M inputs stashed); '1f1b' runs S - s - 1
// forwards, then alternates one forward and one backward, so stage s never holds more than S - s.
// The gradients are those of the whole batch's mean loss, as one process computes them.
import { checkOptions, type Communicator, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

import type { DataParallel } from './data-parallel.js';

/** The parts of a tfjs layer a pipeline stage uses. */
export interface PipelineLayer {
  name: string;
  apply(inputs: tf.Tensor | tf.Tensor[], kwargs?: { training?: boolean }): tf.Tensor | tf.Tensor[] | unknown;
  readonly trainableWeights: Array<{ read(): tf.Variable }>;
  readonly outputShape: unknown;
  countParams(): number;
  getClassName(): string;
  getWeights(): tf.Tensor[];
  setWeights(weights: tf.Tensor[]): void;
  readonly weights: Array<{ shape: number[] }>;
  dispose(): unknown;
}

const RECOMPUTE_UNSAFE = new Set(['Dropout', 'SpatialDropout1D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout', 'BatchNormalization']);

/** A built tfjs model: a Sequential, or a functional model with one input and one output. */
export interface PipelineModel {
  readonly layers: PipelineLayer[];
  /** A functional model's input and output tensors (tf.model's inputs and outputs). */
  readonly inputs?: Array<{ id: number; shape: Array<number | null> }>;
  readonly outputs?: Array<{ id: number; shape: Array<number | null> }>;
}

interface SymbolicTensorLike {
  id: number;
  shape: Array<number | null>;
}

// One entry of model.layers as a step of the model's graph: the tensors it reads and writes.
interface GraphStep {
  layer: PipelineLayer;
  isInput: boolean;
  inputs: number[];
  outputs: number[];
}

/** A model's layers as a graph over tensor ids (a Sequential's or a plain layer list: a chain). */
export interface ModelGraph {
  steps: GraphStep[];
  inputId: number;
  outputId: number;
  /** Each tensor's shape without the batch axis (-1 where unknown). */
  shapes: Map<number, number[]>;
}

export type PipelineLoss = 'categoricalCrossentropy' | 'meanSquaredError' | ((yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor);

export interface PipelineOptions {
  /** This stage's optimizer (each rank makes its own; it updates only its stage's weights). */
  optimizer: tf.Optimizer;
  /** The loss, on the last stage's output: a name, or (yTrue, yPred) => per-example losses or their mean. */
  loss: PipelineLoss;
  /**
   * Where stages 1.. begin, as layer indices (S - 1 increasing numbers). Default: the layers
   * split into comm.size stages with about equal parameter counts.
   */
  boundaries?: number[];
  /** Micro-batches per batch (default: the number of stages). */
  microBatches?: number;
  /** Default '1f1b'. */
  schedule?: 'gpipe' | '1f1b';
  /**
   * Pipeline and data parallelism together: a DataParallel over this stage's replicas (the ranks
   * holding the same stage in the other pipelines, e.g. from comm.split by stage). Each stage's
   * gradients are averaged across its replicas before its optimizer step; each pipeline trains
   * on its own rows.
   */
  replicas?: DataParallel;
}

export interface PipelineStats {
  steps: number;
  /** The most micro-batch inputs this stage held at once (1F1B: at most stages - stage). */
  maxStashed: number;
  /** Milliseconds this stage spent waiting to receive (the pipeline's bubble, and transfers). */
  waitingMs: number;
  /** Milliseconds of the steps in all. */
  stepMs: number;
}

const EPSILON = 1e-7;
const BACKWARD_TAG = 16384; // tags: forward micro-batch m is m, backward m is 16384 + m

function lossFunction(loss: PipelineLoss): (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor {
  if (typeof loss === 'function') return loss;
  if (loss === 'categoricalCrossentropy') return (y, p) => tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(p, EPSILON, 1 - EPSILON))), -1));
  if (loss === 'meanSquaredError') return (y, p) => tf.mean(tf.square(tf.sub(y, p)), -1);
  throw new InvalidArgumentError(`PipelineParallel: loss must be 'categoricalCrossentropy', 'meanSquaredError' or a function (yTrue, yPred) => losses; got ${JSON.stringify(loss)}`);
}

/**
 * The layers split into `stages` runs whose largest parameter count is as small as it can be,
 * cut only where `cutPoints` allow (layer indices where a stage may begin; default: between any
 * two layers). Ties go to the earlier cut.
 */
export function balancedBoundaries(paramCounts: readonly number[], stages: number, cutPoints?: readonly number[]): number[] {
  const candidates = cutPoints ?? Array.from({ length: Math.max(0, paramCounts.length - 1) }, (_, i) => i + 1);
  if (stages <= 1 || candidates.length < stages - 1) return candidates.slice(0, Math.max(0, stages - 1));
  const points = [0, ...candidates, paramCounts.length];
  const prefix = [0];
  for (const c of paramCounts) prefix.push(prefix.at(-1)! + c);
  const between = (i: number, j: number) => prefix[points[j]!]! - prefix[points[i]!]!;
  // best[k][j]: the smallest largest stage over k stages covering layers [0, points[j]); from[k][j]: where the last began.
  const best = Array.from({ length: stages + 1 }, () => new Array<number>(points.length).fill(Infinity));
  const from = Array.from({ length: stages + 1 }, () => new Array<number>(points.length).fill(-1));
  for (let j = 1; j < points.length; j++) best[1]![j] = between(0, j);
  for (let k = 2; k <= stages; k++) {
    for (let j = k; j < points.length; j++) {
      for (let i = k - 1; i < j; i++) {
        const worst = Math.max(best[k - 1]![i]!, between(i, j));
        if (worst < best[k]![j]!) {
          best[k]![j] = worst;
          from[k]![j] = i;
        }
      }
    }
  }
  const boundaries: number[] = [];
  for (let k = stages, j = points.length - 1; k > 1; k--) {
    j = from[k]![j]!;
    boundaries.unshift(points[j]!);
  }
  return boundaries;
}

function shapeWithoutBatch(shape: unknown, what: string): number[] {
  if (!Array.isArray(shape) || Array.isArray(shape[0])) throw new InvalidArgumentError(`PipelineParallel: ${what} has several outputs; stages are cut at single-tensor layers`);
  return (shape as Array<number | null>).slice(1).map((d) => d ?? -1);
}

/**
 * The model as a graph: a functional model's layers with the tensors each reads and writes (from
 * its inbound node), or a Sequential's or a plain list's layers as a chain.
 */
export function modelGraph(model: PipelineModel): ModelGraph {
  const layers = model.layers;
  type Noded = PipelineLayer & { inboundNodes?: Array<{ inputTensors: SymbolicTensorLike[]; outputTensors: SymbolicTensorLike[] }> };
  const functional = Array.isArray(model.inputs) && Array.isArray(model.outputs) && layers.some((l) => l.getClassName() === 'InputLayer');
  if (!functional) {
    // A chain: layer i reads tensor i and writes tensor i + 1.
    const shapes = new Map<number, number[]>();
    layers.forEach((layer, i) => shapes.set(i + 1, shapeWithoutBatch(layer.outputShape, `layer '${layer.name}'`)));
    return { steps: layers.map((layer, i) => ({ layer, isInput: false, inputs: [i], outputs: [i + 1] })), inputId: 0, outputId: layers.length, shapes };
  }
  if (model.inputs!.length !== 1 || model.outputs!.length !== 1) {
    throw new InvalidArgumentError(`PipelineParallel: the model has ${model.inputs!.length} inputs and ${model.outputs!.length} outputs; a pipeline takes models with one of each`);
  }
  const shapes = new Map<number, number[]>();
  const steps = layers.map((layer: Noded) => {
    const nodes = layer.inboundNodes ?? [];
    if (nodes.length !== 1) {
      throw new InvalidArgumentError(`PipelineParallel: layer '${layer.name}' is applied ${nodes.length} times (a shared layer); a pipeline stage owns each layer once`);
    }
    const node = nodes[0]!;
    const isInput = layer.getClassName() === 'InputLayer';
    for (const t of node.outputTensors) shapes.set(t.id, shapeWithoutBatch(t.shape, `layer '${layer.name}'`));
    return { layer, isInput, inputs: isInput ? [] : node.inputTensors.map((t) => t.id), outputs: node.outputTensors.map((t) => t.id) };
  });
  return { steps, inputId: model.inputs![0]!.id, outputId: model.outputs![0]!.id, shapes };
}

/** The tensors made before layer `cut` and read from it on (what a stage beginning there must receive). */
function crossing(graph: ModelGraph, cut: number): number[] {
  const made = new Set<number>([graph.inputId, ...graph.steps.slice(0, cut).flatMap((s) => s.outputs)]);
  const needed = new Set<number>([graph.outputId, ...graph.steps.slice(cut).flatMap((s) => s.inputs)]);
  return [...made].filter((id) => needed.has(id));
}

/** Where a stage may begin: the layer indices with real layers before them and one tensor, made by a layer, crossing. */
export function cutPoints(graph: ModelGraph): number[] {
  const points: number[] = [];
  for (let cut = 1; cut < graph.steps.length; cut++) {
    if (!graph.steps.slice(0, cut).some((s) => !s.isInput) || graph.steps[cut]!.isInput) continue;
    const across = crossing(graph, cut);
    if (across.length === 1 && across[0] !== graph.inputId) points.push(cut);
  }
  return points;
}

export class PipelineParallel {
  readonly stage: number;
  readonly stages: number;
  readonly microBatches: number;
  readonly schedule: 'gpipe' | '1f1b';
  /** Where each stage begins and ends (indices into model.layers, a functional model's InputLayer included), for every stage. */
  readonly ranges: Array<[number, number]>;
  /** This stage's layers (the other stages' were disposed on this rank). */
  readonly layers: PipelineLayer[];
  readonly stats: PipelineStats = { steps: 0, maxStashed: 0, waitingMs: 0, stepMs: 0 };
  /** This stage's optimizer (its state is part of the stage's checkpoint). */
  readonly optimizer: tf.Optimizer;
  private readonly replicas: DataParallel | undefined;
  private readonly loss: (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor;
  private readonly variables: tf.Variable[];
  private readonly inputShape: number[];
  private readonly outputShape: number[];
  private readonly finalShape: number[];
  // Every layer's weight shapes, in the model's order (for gatherWeights on rank 0).
  private readonly weightShapes: number[][][];
  // Each stage's layers as a run of the model's layers without its InputLayer ([first, end)).
  private readonly stageLayerOffsets: Array<[number, number]>;
  // This stage's part of the model's graph: its layers, the tensor it receives and the one it sends.
  private readonly steps: GraphStep[];
  private readonly inputId: number;
  private readonly outputId: number;

  constructor(
    readonly comm: Communicator,
    model: PipelineModel,
    options: PipelineOptions,
  ) {
    checkOptions('PipelineParallel', options, ['optimizer', 'loss', 'boundaries', 'microBatches', 'schedule', 'replicas']);
    if (!model || !Array.isArray(model.layers) || model.layers.length === 0) {
      throw new InvalidArgumentError('PipelineParallel: pass a built tfjs model, Sequential or functional (its layers are split into stages)');
    }
    if (!options?.optimizer || typeof options.optimizer.applyGradients !== 'function') {
      throw new InvalidArgumentError('PipelineParallel: options.optimizer must be a tfjs optimizer (each stage applies its own)');
    }
    this.optimizer = options.optimizer;
    this.replicas = options.replicas;
    if (this.replicas !== undefined && typeof this.replicas.averageTensors !== 'function') {
      throw new InvalidArgumentError('PipelineParallel: replicas must be a DataParallel over this stage\'s replicas');
    }
    this.loss = lossFunction(options.loss);
    this.stages = comm.size;
    this.stage = comm.rank;
    const graph = modelGraph(model);
    const layers = model.layers;
    const points = cutPoints(graph);
    if (points.length < this.stages - 1) {
      throw new InvalidArgumentError(
        `PipelineParallel: ${this.stages} stages need ${this.stages - 1} places to cut the model where one tensor passes from a stage to the next; it has ${points.length}${points.length > 0 ? ` (before layers ${points.join(', ')})` : ''}`,
      );
    }
    const boundaries = options.boundaries ?? balancedBoundaries(layers.map((l) => l.countParams()), this.stages, points);
    const valid =
      Array.isArray(boundaries) &&
      boundaries.length === this.stages - 1 &&
      boundaries.every((b, i) => Number.isInteger(b) && b > (i === 0 ? 0 : boundaries[i - 1]!) && b < layers.length);
    if (!valid) {
      throw new InvalidArgumentError(
        `PipelineParallel: boundaries must be ${this.stages - 1} increasing layer indices in [1, ${layers.length - 1}] (where stages 1..${this.stages - 1} begin); got ${JSON.stringify(boundaries)}`,
      );
    }
    for (const b of boundaries) {
      if (points.includes(b)) continue;
      const across = crossing(graph, b);
      const named = across.map((id) => {
        const maker = graph.steps.find((s) => s.outputs.includes(id));
        return maker && !maker.isInput ? `'${maker.layer.name}'` : "the model's input";
      });
      throw new InvalidArgumentError(
        `PipelineParallel: a stage cannot begin at layer ${b} ('${layers[b]!.name}'): the outputs of ${named.join(', ')} pass that point, and stages are cut where one tensor made by a layer does; cut at one of ${points.join(', ')}`,
      );
    }
    const starts = [0, ...boundaries];
    this.ranges = starts.map((start, s) => [start, s + 1 < starts.length ? starts[s + 1]! : layers.length]);
    const [begin, end] = this.ranges[this.stage]!;
    this.steps = graph.steps.slice(begin, end).filter((s) => !s.isInput);
    this.layers = this.steps.map((s) => s.layer);
    this.inputId = begin === 0 ? graph.inputId : crossing(graph, begin)[0]!;
    this.outputId = end === layers.length ? graph.outputId : crossing(graph, end)[0]!;
    const shapeOf = (id: number) => graph.shapes.get(id) ?? shapeWithoutBatch(model.inputs?.[0]?.shape, "the model's input");
    this.inputShape = begin === 0 ? [] : shapeOf(this.inputId);
    this.outputShape = shapeOf(this.outputId);
    this.finalShape = shapeOf(graph.outputId);
    this.weightShapes = graph.steps.filter((s) => !s.isInput).map((s) => s.layer.weights.map((w) => [...w.shape]));
    this.stageLayerOffsets = this.ranges.map(([b, e]) => [graph.steps.slice(0, b).filter((s) => !s.isInput).length, graph.steps.slice(0, e).filter((s) => !s.isInput).length]);
    // The backward pass recomputes each stage's forward: layers whose forward is random or
    // depends on the micro-batch's statistics would not give the gradients of the forward sent on.
    const unsupported = layers.find((l) => RECOMPUTE_UNSAFE.has(l.getClassName()));
    if (unsupported) {
      throw new InvalidArgumentError(`PipelineParallel: layer '${unsupported.name}' (${unsupported.getClassName()}) is not supported: the backward pass recomputes the forward, which must give the same result`);
    }
    // This rank holds only its stage: the other layers' weights are freed.
    layers.forEach((layer, i) => {
      if (i < begin || i >= end) layer.dispose();
    });
    this.variables = this.layers.flatMap((l) => l.trainableWeights.map((w) => w.read()));
    const micro = options.microBatches ?? this.stages;
    if (!Number.isInteger(micro) || micro < 1 || micro >= BACKWARD_TAG) {
      throw new InvalidArgumentError(`PipelineParallel: microBatches must be an integer from 1 to ${BACKWARD_TAG - 1}; got ${JSON.stringify(options.microBatches)}`);
    }
    this.microBatches = micro;
    this.schedule = options.schedule ?? '1f1b';
    if (this.schedule !== 'gpipe' && this.schedule !== '1f1b') {
      throw new InvalidArgumentError(`PipelineParallel: schedule must be 'gpipe' or '1f1b'; got ${JSON.stringify(options.schedule)}`);
    }
  }

  get isFirst(): boolean {
    return this.stage === 0;
  }

  get isLast(): boolean {
    return this.stage === this.stages - 1;
  }

  /** Which pipeline this rank's is among the replicas (0 without replicas): the rows it trains on. */
  get replicaIndex(): number {
    return this.replicas?.comm.rank ?? 0;
  }

  /** The communicator of this stage's replicas (the same stage in every pipeline), or undefined. */
  get replicaComm(): Communicator | undefined {
    return this.replicas?.comm;
  }

  /** How many pipelines train side by side (1 without replicas). */
  get replicaCount(): number {
    return this.replicas?.comm.size ?? 1;
  }

  /** Copies of this stage's weights, in its layers' order (the caller disposes them). */
  stageWeights(): tf.Tensor[] {
    // A layer's getWeights() hands out its variables themselves: copy them.
    return this.layers.flatMap((l) => l.getWeights().map((w) => w.clone()));
  }

  /** Puts weights (as stageWeights gives them) into this stage's layers. */
  setStageWeights(weights: tf.Tensor[]): void {
    let at = 0;
    for (const layer of this.layers) {
      const count = layer.weights.length;
      const mine = weights.slice(at, at + count);
      const expected = layer.weights.map((w) => w.shape.join('x'));
      if (mine.length !== count || mine.some((w, i) => w.shape.join('x') !== expected[i])) {
        throw new InvalidArgumentError(`PipelineParallel: the weights given do not fit stage ${this.stage}'s layer '${layer.name}' (${expected.map((e) => `[${e}]`).join(' ')})`);
      }
      layer.setWeights(mine);
      at += count;
    }
    if (at !== weights.length) throw new InvalidArgumentError(`PipelineParallel: ${weights.length} weights given for stage ${this.stage}, which holds ${at}`);
  }

  /** Sums `values` over the pipelines side by side (nothing to do without replicas). */
  async sumOverReplicas(values: Float64Array): Promise<void> {
    if (this.replicas) await this.replicas.comm.allReduce(values, { op: 'sum' });
  }

  /**
   * The loss (summed over rows) and, for one-hot targets, the rows whose largest output is the
   * target's, of this pipeline on x and y, in batches of `batchSize` rows. Every rank of the
   * pipeline calls it with the same x and y and gets the same sums.
   */
  async evaluate(x: tf.Tensor, y: tf.Tensor, batchSize = 32): Promise<{ lossSum: number; correct: number; rows: number }> {
    const rows = x.shape[0]!;
    if (y.shape[0] !== rows) throw new InvalidArgumentError(`PipelineParallel.evaluate: x has ${rows} rows but y has ${y.shape[0]}`);
    let lossSum = 0;
    let correct = 0;
    for (let begin = 0; begin < rows; begin += batchSize) {
      const count = Math.min(batchSize, rows - begin);
      const xb = tf.slice(x, begin, count);
      const output = await this.predict(xb);
      xb.dispose();
      [lossSum, correct] = tf.tidy(() => {
        const yb = tf.slice(y, begin, count);
        const perExample = this.loss(yb, output);
        const sum = perExample.rank === 0 ? tf.mul(perExample, count) : tf.sum(perExample);
        const hits = yb.rank === 2 && yb.shape[1]! > 1 ? tf.sum(tf.equal(tf.argMax(yb, 1), tf.argMax(output, 1))).dataSync()[0]! : 0;
        return [lossSum + sum.dataSync()[0]!, correct + hits];
      });
      output.dispose();
    }
    return { lossSum, correct, rows };
  }

  /**
   * One training step on a batch (every rank passes the same x and y; the first stage reads x,
   * the last y). Resolves to the batch's mean loss on every rank.
   */
  async trainStep(x: tf.Tensor, y: tf.Tensor): Promise<number> {
    const started = performance.now();
    const rows = x.shape[0]!;
    if (y.shape[0] !== rows) throw new InvalidArgumentError(`PipelineParallel.trainStep: x has ${rows} rows but y has ${y.shape[0]}`);
    const m = Math.min(this.microBatches, rows);
    const bounds = Array.from({ length: m + 1 }, (_, i) => Math.round((i * rows) / m));
    const sizeOf = (k: number) => bounds[k + 1]! - bounds[k]!;
    const stash = new Map<number, tf.Tensor>();
    const sends: Array<Promise<void>> = [];
    const grads: tf.Tensor[] = this.variables.map((v) => tf.zerosLike(v));
    let lossSum = 0;
    try {
      const forward = async (k: number) => {
        const input = this.isFirst ? tf.slice(x, bounds[k]!, sizeOf(k)) : await this.receive([sizeOf(k), ...this.inputShape], this.stage - 1, k);
        stash.set(k, input);
        this.stats.maxStashed = Math.max(this.stats.maxStashed, stash.size);
        if (this.isLast) return; // the last stage runs its forward inside the backward
        const output = tf.tidy(() => this.run(input, true));
        sends.push(this.transmit(output, this.stage + 1, k));
      };
      const backward = async (k: number) => {
        const input = stash.get(k)!;
        const dy = this.isLast ? undefined : await this.receive([sizeOf(k), ...this.outputShape], this.stage + 1, BACKWARD_TAG + k);
        const inputVariable = this.isFirst ? undefined : tf.variable(input, true);
        const yk = this.isLast ? tf.slice(y, bounds[k]!, sizeOf(k)) : undefined;
        const list = inputVariable ? [...this.variables, inputVariable] : this.variables;
        const { value, grads: g } = tf.variableGrads(() => {
          const out = this.run(inputVariable ?? input, true);
          if (this.isLast) {
            // This micro-batch's share of the batch's mean loss.
            const perExample = this.loss(yk!, out);
            return tf.mul(tf.sum(perExample.rank === 0 ? tf.mul(perExample, sizeOf(k)) : perExample), 1 / rows) as tf.Scalar;
          }
          return tf.sum(tf.mul(out, dy!)) as tf.Scalar;
        }, list);
        if (this.isLast) lossSum += value.dataSync()[0]!;
        this.variables.forEach((v, i) => {
          const next = tf.add(grads[i]!, g[v.name] ?? tf.zerosLike(v));
          grads[i]!.dispose();
          grads[i] = next;
        });
        if (inputVariable) sends.push(this.transmit(g[inputVariable.name]!, this.stage - 1, BACKWARD_TAG + k));
        tf.dispose([value, ...Object.values(g), ...(inputVariable ? [inputVariable] : []), ...(yk ? [yk] : []), ...(dy ? [dy] : [])]);
        stash.delete(k);
        input.dispose();
      };
      if (this.schedule === 'gpipe') {
        for (let k = 0; k < m; k++) await forward(k);
        for (let k = m - 1; k >= 0; k--) await backward(k);
      } else {
        const warmup = Math.min(this.stages - this.stage - 1, m);
        for (let k = 0; k < warmup; k++) await forward(k);
        for (let k = warmup; k < m; k++) {
          await forward(k);
          await backward(k - warmup);
        }
        for (let k = m - warmup; k < m; k++) await backward(k);
      }
      await Promise.all(sends);
      if (this.replicas) {
        const averaged = await this.replicas.averageTensors(grads);
        tf.dispose(grads.splice(0, grads.length, ...averaged));
      }
      this.optimizer.applyGradients(Object.fromEntries(this.variables.map((v, i) => [v.name, grads[i]!])));
    } finally {
      tf.dispose([...grads, ...stash.values()]);
    }
    // Every rank learns the loss (the last stage's; with replicas, their mean).
    const loss = Float64Array.of(this.isLast ? lossSum : 0);
    await this.comm.broadcast(loss, { root: this.stages - 1 });
    if (this.replicas) await this.replicas.comm.allReduce(loss, { op: 'avg' });
    this.stats.steps++;
    this.stats.stepMs += performance.now() - started;
    return loss[0]!;
  }

  /** The model's output for x on every rank (forward through the stages, broadcast from the last). */
  async predict(x: tf.Tensor): Promise<tf.Tensor> {
    const rows = x.shape[0]!;
    const input = this.isFirst ? x.clone() : await this.receive([rows, ...this.inputShape], this.stage - 1, 0);
    const output = tf.tidy(() => this.run(input, false));
    input.dispose();
    if (!this.isLast) await this.transmit(output, this.stage + 1, 0);
    const values = new Float32Array(rows * this.finalShape.reduce((a, b) => a * b, 1));
    if (this.isLast) values.set(output.dataSync() as Float32Array);
    output.dispose();
    await this.comm.broadcast(values, { root: this.stages - 1 });
    return tf.tensor(values, [rows, ...this.finalShape]);
  }

  /**
   * The whole model's weights on rank 0, in the model's order (for `model.setWeights` on a full
   * model built there, or a checkpoint); undefined on the other ranks. Every rank must call it.
   */
  async gatherWeights(): Promise<tf.Tensor[] | undefined> {
    const GATHER_TAG = 32000;
    if (this.stage !== 0) {
      for (const w of this.layers.flatMap((l) => l.getWeights())) await this.comm.send(Float32Array.from(w.dataSync() as Float32Array), 0, { tag: GATHER_TAG });
      return undefined;
    }
    const out: tf.Tensor[] = this.layers.flatMap((l) => l.getWeights().map((w) => w.clone()));
    for (let s = 1; s < this.stages; s++) {
      const [begin, end] = this.stageLayerOffsets[s]!;
      for (const shape of this.weightShapes.slice(begin, end).flat()) out.push(await this.receive(shape, s, GATHER_TAG));
    }
    return out;
  }

  // This stage's forward: its layers in the model's order, each on the tensors it reads.
  private run(input: tf.Tensor, training: boolean): tf.Tensor {
    const values = new Map<number, tf.Tensor>([[this.inputId, input]]);
    for (const { layer, inputs, outputs } of this.steps) {
      const args = inputs.map((id) => values.get(id)!);
      const out = layer.apply(args.length === 1 ? args[0]! : args, { training });
      const list = Array.isArray(out) ? out : [out];
      if (list.length !== outputs.length || list.some((t) => !(t instanceof tf.Tensor))) throw new InvalidArgumentError(`PipelineParallel: layer '${layer.name}' did not give ${outputs.length} tensor(s)`);
      outputs.forEach((id, k) => values.set(id, list[k] as tf.Tensor));
    }
    return values.get(this.outputId)!;
  }

  private async transmit(t: tf.Tensor, to: number, tag: number): Promise<void> {
    const values = Float32Array.from(t.dataSync() as Float32Array);
    t.dispose();
    await this.comm.send(values, to, { tag });
  }

  private async receive(shape: number[], from: number, tag: number): Promise<tf.Tensor> {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const waited = performance.now();
    const got = await this.comm.recv(values, from, { tag });
    this.stats.waitingMs += performance.now() - waited;
    if (got.length !== values.length) {
      throw new InvalidArgumentError(`PipelineParallel: stage ${this.stage} expected ${values.length} values from stage ${from}, got ${got.length}; every rank must build the same model and pass the same batch`);
    }
    return tf.tensor(values, shape);
  }
}
