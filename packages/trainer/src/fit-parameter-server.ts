// fit() under a ParameterServer strategy. Servers serve the workers' pushes until every worker
// has finished; workers train on their share of the rows (dealt among the workers as DataParallel
// deals them among ranks): each step, the model's compiled loss (regularizers included) on the
// batch, its gradients pushed, the servers' weights pulled back into the model. Each epoch's
// metrics and validation are averaged over the workers; at the end every rank (servers too)
// holds the servers' weights (pullAll) and the same history.
import { type Communicator, InvalidArgumentError } from '@braid/collectives';
import type { ParameterServer } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs-core';

import type { Dataset, FitOptions, FitResult, TrainableModel } from './fit.js';
import { compiledParts } from './model-parts.js';
import { Progress, resolveProgressMode } from './progress.js';
import { epochBatches, validationRows } from './sharding.js';
import { strategyData } from './strategy-data.js';

const UNSUPPORTED: Array<keyof FitOptions> = ['earlyStopping', 'checkpointDir', 'checkpointEvery', 'commitEvery', 'keepCheckpoints', 'checkpointOnEveryHost', 'resume'];

export async function fitParameterServer(
  model: TrainableModel,
  data: Dataset,
  options: FitOptions,
  ps: ParameterServer,
  settings: { epochs: number; batchSize: number; seed: number },
): Promise<FitResult> {
  const { parts, compiled } = compiledParts(model);
  if (typeof parts.apply !== 'function' || !Array.isArray(compiled.lossFunctions) || compiled.lossFunctions.length !== 1) {
    throw new InvalidArgumentError('fit: with a ParameterServer strategy, pass a compiled tfjs LayersModel with one output (its loss is computed here, its gradients pushed to the servers)');
  }
  const variables = parts.trainableWeights.map((w) => w.read());
  if (variables.length !== ps.variables.length || variables.some((v, i) => v !== ps.variables[i])) {
    throw new InvalidArgumentError("fit: the ParameterServer must be made with this model's trainable variables (model.trainableWeights.map((w) => w.read()))");
  }
  const { x, y, validation } = await strategyData('ParameterServer', ps.comm, data, options, UNSUPPORTED, settings, "leave it out, and save the model after fit (every rank then holds the servers' weights)");
  const { batchSize } = settings;
  const comm = ps.comm;
  if (!ps.initialized) await ps.init();
  // The workers' own communicator, for their metrics (the servers are busy serving meanwhile).
  const split = await comm.split(ps.isServer ? 0 : 1, comm.rank);
  if (!split) throw new Error('fit: splitting the workers from the servers gave no communicator');
  const workers = split;
  try {
    let history: Record<string, number[]> = {};
    let globalStep = 0;
    let seconds = 0;
    let pushMs = 0;
    if (ps.isServer) {
      await ps.serve();
    } else {
      ({ history, globalStep, seconds, pushMs } = await trainWorker(model, { x, y }, validation, options, ps, workers, settings));
      await ps.finish();
    }
    // Every rank ends with the servers' weights and the first worker's history (the same on all).
    await ps.pullAll();
    history = await shareHistory(comm, ps.servers, history);
    const figures = new Float64Array([globalStep, seconds, pushMs]);
    await comm.broadcast(figures, { root: ps.servers });
    const [steps, time, push] = figures;
    const result: FitResult = {
      history,
      epochs: Array.from({ length: history.loss?.length ?? 0 }, (_, i) => i),
      globalStep: steps!,
      stoppedEarly: false,
      samplesPerSecond: time! > 0 ? (steps! * batchSize * ps.workers) / time! : 0,
      // The first worker's time in push (its gradients out, the weights back).
      communicationShare: time! > 0 ? push! / 1000 / time! : 0,
    };
    const callbacks = options.callbacks === undefined ? [] : Array.isArray(options.callbacks) ? options.callbacks : [options.callbacks];
    for (const cb of callbacks) await cb.onTrainEnd?.(result);
    return result;
  } finally {
    await workers.close();
  }
}

async function trainWorker(
  model: TrainableModel,
  data: { x: tf.Tensor; y: tf.Tensor },
  validation: { x: tf.Tensor; y: tf.Tensor } | undefined,
  options: FitOptions,
  ps: ParameterServer,
  workers: Communicator,
  settings: { epochs: number; batchSize: number; seed: number },
): Promise<{ history: Record<string, number[]>; globalStep: number; seconds: number; pushMs: number }> {
  const { epochs, batchSize, seed } = settings;
  const { parts, compiled } = compiledParts(model);
  const lossFunction = compiled.lossFunctions![0]!;
  const metricFunctions = (compiled.metricsTensors ?? []).map(([metric]) => metric);
  const names = model.metricsNames;
  const callbacks = options.callbacks === undefined ? [] : Array.isArray(options.callbacks) ? options.callbacks : [options.callbacks];
  const progress = new Progress(resolveProgressMode(options.progress ?? 'auto', ps.index), epochs, batchSize * ps.workers, options.write);
  const history: Record<string, number[]> = {};
  let globalStep = 0;
  let pushMs = 0;
  const started = performance.now();
  for (const cb of callbacks) await cb.onTrainBegin?.({ epoch: 0, globalStep: 0, size: ps.workers });
  for (let epoch = 0; epoch < epochs; epoch++) {
    const batches = epochBatches({ rows: data.x.shape[0]!, rank: ps.index, size: ps.workers, batchSize, seed, epoch, shuffle: options.shuffle ?? true, dropRemainder: options.dropRemainder });
    for (const cb of callbacks) await cb.onEpochBegin?.(epoch);
    progress.epochBegin();
    const sums = new Float64Array(names.length);
    for (let b = 0; b < batches.length; b++) {
      const indices = tf.tensor1d(batches[b]!, 'int32');
      const [xb, yb] = [tf.gather(data.x, indices), tf.gather(data.y, indices)];
      let values: number[];
      try {
        let prediction: tf.Tensor | undefined;
        const { value, grads } = tf.variableGrads(() => {
          prediction = tf.keep(parts.apply(xb, { training: true }) as tf.Tensor);
          let total = tf.mean(lossFunction(yb, prediction)) as tf.Scalar;
          for (const penalty of compiled.calculateLosses?.() ?? []) total = tf.add(total, penalty);
          return total;
        }, ps.variables);
        values = [value.dataSync()[0]!, ...tf.tidy(() => metricFunctions.map((metric) => tf.mean(metric(yb, prediction!)).dataSync()[0]!))];
        const pushed = performance.now();
        try {
          await ps.push(grads);
        } finally {
          pushMs += performance.now() - pushed;
          tf.dispose([value, prediction!, ...Object.values(grads)]);
        }
      } finally {
        tf.dispose([indices, xb, yb]);
      }
      values.forEach((v, i) => (sums[i]! += v));
      globalStep++;
      const logs = Object.fromEntries(names.map((n, i) => [n, values[i]!]));
      progress.step(epoch, b + 1, batches.length, logs, 0);
      for (const cb of callbacks) await cb.onBatchEnd?.({ epoch, batch: b, globalStep, rows: batches[b]! }, logs);
    }
    // The epoch's means over the workers' steps (every worker took as many).
    const totals = Float64Array.from([...sums, batches.length]);
    await workers.allReduce(totals, { op: 'sum' });
    const logs: Record<string, number> = Object.fromEntries(names.map((n, i) => [n, totals[names.length]! > 0 ? totals[i]! / totals[names.length]! : 0]));
    if (validation) Object.assign(logs, await validate(model, names, validation, ps, workers, options.validationBatchSize ?? batchSize));
    for (const [k, v] of Object.entries(logs)) (history[k] ??= []).push(v);
    for (const cb of callbacks) await cb.onEpochEnd?.(epoch, logs);
    progress.epochEnd(epoch, batches.length, logs, 0);
  }
  return { history, globalStep, seconds: (performance.now() - started) / 1000, pushMs };
}

/** val_* over the validation rows, each worker evaluating its share with the weights it holds. */
async function validate(model: TrainableModel, names: string[], data: { x: tf.Tensor; y: tf.Tensor }, ps: ParameterServer, workers: Communicator, batchSize: number): Promise<Record<string, number>> {
  const mine = validationRows(data.x.shape[0]!, ps.index, ps.workers);
  const sums = new Float64Array(names.length + 1);
  if (mine.length > 0) {
    const indices = tf.tensor1d(mine, 'int32');
    const [x, y] = [tf.gather(data.x, indices), tf.gather(data.y, indices)];
    try {
      const scalars = model.evaluate(x, y, { batchSize });
      const list = Array.isArray(scalars) ? scalars : [scalars];
      list.forEach((s, i) => (sums[i] = (typeof s === 'number' ? s : s.dataSync()[0]!) * mine.length));
      tf.dispose(list.filter((s): s is tf.Scalar => typeof s !== 'number'));
    } finally {
      tf.dispose([indices, x, y]);
    }
    sums[names.length] = mine.length;
  }
  await workers.allReduce(sums, { op: 'sum' });
  return Object.fromEntries(names.map((n, i) => [`val_${n}`, sums[i]! / sums[names.length]!]));
}

/** The first worker's history on every rank (JSON, broadcast). */
async function shareHistory(comm: Communicator, root: number, history: Record<string, number[]>): Promise<Record<string, number[]>> {
  const bytes = new TextEncoder().encode(comm.rank === root ? JSON.stringify(history) : '');
  const length = Float64Array.of(bytes.length);
  await comm.broadcast(length, { root });
  const buffer = new Uint8Array(length[0]!);
  if (comm.rank === root) buffer.set(bytes);
  await comm.broadcast(buffer, { root });
  return JSON.parse(new TextDecoder().decode(buffer)) as Record<string, number[]>;
}
