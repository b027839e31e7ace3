// fit() under a ParameterServer strategy. Servers serve the workers' pushes until every worker
// has finished; workers train on their share of the rows (dealt among the workers as DataParallel
// deals them among ranks): each step, the model's compiled loss (regularizers included) on the
// batch, its gradients pushed, the servers' weights pulled back into the model. Each epoch's
// metrics and validation are averaged over the workers; at the end every rank (servers too)
// holds the servers' weights (pullAll) and the same history. Checkpoints: the workers pause at the
// same step and each server writes its shard (server-checkpoint.ts); a resumed run's servers take
// their shards back and the workers go on from the step it was taken at.
import { type Communicator, InvalidArgumentError } from '@braid/collectives';
import type { ParameterServer } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs-core';

import type { Dataset, FitOptions, FitResult, TrainableModel } from './fit.js';
import { compiledParts } from './model-parts.js';
import { EarlyStopping } from './early-stopping.js';
import { Progress, resolveProgressMode } from './progress.js';
import { epochBatches, validationRows } from './sharding.js';
import { broadcastJson, restoreServerCheckpoint, SERVER_CHECKPOINT_VERSION, type ServerCheckpointState, writeServerCheckpoint } from './server-checkpoint.js';
import { strategyData } from './strategy-data.js';

const UNSUPPORTED: Array<keyof FitOptions> = ['commitEvery', 'checkpointOnEveryHost'];

export interface ServerFitSettings {
  epochs: number;
  batchSize: number;
  seed: number;
  keep: number;
  everySteps: number;
  everyEpochs: number;
}

export async function fitParameterServer(
  model: TrainableModel,
  data: Dataset,
  options: FitOptions,
  ps: ParameterServer,
  settings: ServerFitSettings,
): Promise<FitResult> {
  const { parts, compiled } = compiledParts(model);
  if (typeof parts.apply !== 'function' || !Array.isArray(compiled.lossFunctions) || compiled.lossFunctions.length !== 1) {
    throw new InvalidArgumentError('fit: with a ParameterServer strategy, pass a compiled tfjs LayersModel with one output (its loss is computed here, its gradients pushed to the servers)');
  }
  const variables = parts.trainableWeights.map((w) => w.read());
  if (variables.length !== ps.variables.length || variables.some((v, i) => v !== ps.variables[i])) {
    throw new InvalidArgumentError("fit: the ParameterServer must be made with this model's trainable variables (model.trainableWeights.map((w) => w.read()))");
  }
  const { x, y, validation } = await strategyData('ParameterServer', ps.comm, data, options, UNSUPPORTED, settings);
  const { batchSize, seed, keep } = settings;
  const comm = ps.comm;
  if (!ps.initialized) await ps.init();
  // Checked on every rank (servers too) before anyone trains: an error here is everyone's.
  const metrics = [...model.metricsNames, ...(validation ? model.metricsNames.map((n) => `val_${n}`) : [])];
  if (options.earlyStopping) new EarlyStopping(options.earlyStopping, validation !== undefined, undefined, metrics).dispose();
  const dir = options.checkpointDir;
  let start: ServerCheckpointState = {
    version: SERVER_CHECKPOINT_VERSION,
    kind: 'parameter-server',
    servers: ps.servers,
    workers: ps.workers,
    mode: ps.mode,
    values: ps.totalSize,
    epoch: 0,
    batchInEpoch: 0,
    globalStep: 0,
    seed,
    batchSize,
    sums: [],
    history: {},
  };
  let resumedFrom: string | undefined;
  if (dir && options.resume !== false) {
    const restored = await restoreServerCheckpoint(dir, ps);
    if (restored) {
      if (restored.state.batchSize !== batchSize || restored.state.seed !== seed || restored.state.mode !== ps.mode) {
        throw new InvalidArgumentError(
          `fit: ${restored.folder} was taken with batchSize ${restored.state.batchSize}, seed ${restored.state.seed}, mode '${restored.state.mode}'; a parameter server resumes with the same (or use another checkpointDir)`,
        );
      }
      start = restored.state;
      resumedFrom = restored.folder;
      // The workers take the restored shards.
      await ps.pullAll();
    }
  }
  const callbacks = options.callbacks === undefined ? [] : Array.isArray(options.callbacks) ? options.callbacks : [options.callbacks];
  // Every rank (servers too) writes its part and then tells its onCheckpoint callbacks.
  const checkpoint = dir
    ? async (state: ServerCheckpointState | undefined) => {
        const written = await writeServerCheckpoint(dir, ps, state, keep);
        for (const cb of callbacks) await cb.onCheckpoint?.(written.folder, written.state);
      }
    : undefined;
  // The workers' own communicator, for their metrics (the servers are busy serving meanwhile).
  const split = await comm.split(ps.isServer ? 0 : 1, comm.rank);
  if (!split) throw new Error('fit: splitting the workers from the servers gave no communicator');
  const workers = split;
  try {
    let history: Record<string, number[]> = {};
    let globalStep = 0;
    let seconds = 0;
    let pushMs = 0;
    let stoppedEarly = false;
    let bestWeights: tf.Tensor[] | undefined;
    if (ps.isServer) {
      await ps.serve({ onPause: checkpoint && (() => checkpoint(undefined)) });
    } else {
      try {
        ({ history, globalStep, seconds, pushMs, stoppedEarly, bestWeights } = await trainWorker(model, { x, y }, validation, options, ps, workers, settings, start, resumedFrom, checkpoint));
      } catch (err) {
        // The servers stop at once and tell the other workers, instead of waiting for their deadlines.
        await ps.abort();
        throw err;
      }
      await ps.finish();
    }
    // Every rank ends with the servers' weights and the first worker's history (the same on all).
    await ps.pullAll();
    history = await broadcastJson(comm, ps.servers, history);
    const figures = new Float64Array([globalStep, seconds, pushMs, globalStep - start.globalStep, stoppedEarly ? 1 : 0, bestWeights ? 1 : 0]);
    await comm.broadcast(figures, { root: ps.servers });
    const [steps, time, push, stepsRun, stopped, kept] = figures;
    // Stopped early with restoreBestWeights: every rank takes the first worker's weights of the best epoch.
    if (stopped === 1 && kept === 1) await shareWeights(comm, ps.servers, model, bestWeights);
    tf.dispose(bestWeights ?? []);
    const result: FitResult = {
      history,
      epochs: Array.from({ length: history.loss?.length ?? 0 }, (_, i) => i),
      globalStep: steps!,
      stoppedEarly: stopped === 1,
      resumedFrom,
      samplesPerSecond: time! > 0 ? (stepsRun! * batchSize * ps.workers) / time! : 0,
      // The first worker's time in push (its gradients out, the weights back).
      communicationShare: time! > 0 ? push! / 1000 / time! : 0,
    };
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
  settings: ServerFitSettings,
  start: ServerCheckpointState,
  resumedFrom: string | undefined,
  checkpoint: ((state: ServerCheckpointState | undefined) => Promise<void>) | undefined,
): Promise<{ history: Record<string, number[]>; globalStep: number; seconds: number; pushMs: number; stoppedEarly: boolean; bestWeights: tf.Tensor[] | undefined }> {
  const { epochs, batchSize, seed, everySteps, everyEpochs } = settings;
  const { parts, compiled } = compiledParts(model);
  const lossFunction = compiled.lossFunctions![0]!;
  const metricFunctions = (compiled.metricsTensors ?? []).map(([metric]) => metric);
  const names = model.metricsNames;
  const callbacks = options.callbacks === undefined ? [] : Array.isArray(options.callbacks) ? options.callbacks : [options.callbacks];
  const progress = new Progress(resolveProgressMode(options.progress ?? 'auto', ps.index), epochs, batchSize * ps.workers, options.write);
  const history = start.history;
  let globalStep = start.globalStep;
  // The workers' epoch logs are the same on every worker, so they decide alike (and agree all the
  // same). Best weights: the first worker's at the best epoch's end (async: the ones it last pulled).
  const early = options.earlyStopping ? new EarlyStopping(options.earlyStopping, validation !== undefined, start.earlyStopping) : undefined;
  let stoppedEarly = false;
  let pushMs = 0;
  const started = performance.now();
  // Every worker pauses, and every rank writes its part; the first worker carries the state.
  const takeCheckpoint = async (epoch: number, batchInEpoch: number, sums: Float64Array) => {
    if (!checkpoint) return;
    const all = await workers.allGather(Float64Array.from(sums));
    await ps.pause();
    const perWorker = Array.from({ length: ps.workers }, (_, w) => [...all.subarray(w * sums.length, (w + 1) * sums.length)]);
    await checkpoint(ps.index === 0 ? { ...start, epoch, batchInEpoch, globalStep, sums: perWorker, history, ...(early ? { earlyStopping: early.state } : {}) } : undefined);
  };
  if (resumedFrom) progress.message(`resumed from ${resumedFrom} at epoch ${start.epoch + 1}, step ${start.globalStep}`);
  for (const cb of callbacks) await cb.onTrainBegin?.({ resumedFrom, epoch: start.epoch, globalStep, size: ps.workers });
  for (let epoch = start.epoch; epoch < epochs; epoch++) {
    const batches = epochBatches({ rows: data.x.shape[0]!, rank: ps.index, size: ps.workers, batchSize, seed, epoch, shuffle: options.shuffle ?? true, dropRemainder: options.dropRemainder });
    const firstBatch = epoch === start.epoch ? start.batchInEpoch : 0;
    for (const cb of callbacks) await cb.onEpochBegin?.(epoch);
    progress.epochBegin();
    const sums = new Float64Array(names.length);
    // Resumed mid-epoch: each worker's sums go on from its own (the same additions as a run not stopped).
    if (firstBatch > 0) sums.set((start.sums[ps.index] ?? []).slice(0, names.length));
    for (let b = firstBatch; b < batches.length; b++) {
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
      progress.step(epoch, b + 1, batches.length, logs, firstBatch);
      for (const cb of callbacks) await cb.onBatchEnd?.({ epoch, batch: b, globalStep, rows: batches[b]! }, logs);
      // A step checkpoint on an epoch's last batch is taken after the epoch's metrics.
      if (everySteps > 0 && globalStep % everySteps === 0 && b + 1 < batches.length) await takeCheckpoint(epoch, b + 1, sums);
    }
    // The epoch's means over the workers' steps (every worker took as many).
    const totals = Float64Array.from([...sums, batches.length]);
    await workers.allReduce(totals, { op: 'sum' });
    const logs: Record<string, number> = Object.fromEntries(names.map((n, i) => [n, totals[names.length]! > 0 ? totals[i]! / totals[names.length]! : 0]));
    if (validation) Object.assign(logs, await validate(model, names, validation, ps, workers, options.validationBatchSize ?? batchSize));
    for (const [k, v] of Object.entries(logs)) (history[k] ??= []).push(v);
    for (const cb of callbacks) await cb.onEpochEnd?.(epoch, logs);
    progress.epochEnd(epoch, batches.length, logs, firstBatch);
    // A callback may have set model.stopTraining on one worker only: stop together or not at all.
    const stop = Float64Array.of((early?.observe(logs, () => model.getWeights().map((w) => w.clone())) ?? false) || model.stopTraining ? 1 : 0);
    await workers.allReduce(stop, { op: 'max' });
    stoppedEarly = stop[0] === 1;
    const finished = epoch + 1 === epochs || stoppedEarly;
    if (finished || (everyEpochs > 0 && (epoch + 1) % everyEpochs === 0) || (everySteps > 0 && globalStep % everySteps === 0)) await takeCheckpoint(epoch + 1, 0, new Float64Array(names.length));
    if (stoppedEarly) break;
  }
  if (resumedFrom && start.epoch >= epochs && globalStep === start.globalStep) {
    progress.message(`nothing to train: the checkpoint in ${options.checkpointDir} is from a finished run (${start.epoch} of ${epochs} epochs done); to train again from the start, remove that folder or pass resume: false`);
  }
  // The best weights go to the caller (the first worker's are shared with every rank).
  const bestWeights = stoppedEarly && ps.index === 0 ? early?.bestWeightsKept?.map((w) => w.clone()) : undefined;
  early?.dispose();
  return { history, globalStep, seconds: (performance.now() - started) / 1000, pushMs, stoppedEarly, bestWeights };
}

/** `root`'s weights (given there) into the model on every rank. */
async function shareWeights(comm: Communicator, root: number, model: TrainableModel, weights: tf.Tensor[] | undefined): Promise<void> {
  const current = model.getWeights();
  const flat = new Float32Array(current.reduce((n, w) => n + w.size, 0));
  if (comm.rank === root) {
    let at = 0;
    for (const w of weights!) {
      flat.set(w.dataSync() as Float32Array, at);
      at += w.size;
    }
  }
  await comm.broadcast(flat, { root });
  let at = 0;
  const tensors = current.map((w) => {
    const t = tf.tensor(flat.subarray(at, at + w.size), w.shape, 'float32');
    at += w.size;
    return t;
  });
  model.setWeights(tensors);
  tf.dispose(tensors);
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
