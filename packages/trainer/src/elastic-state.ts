// Commit and restore for custom training loops (issue 11), as Horovod Elastic's State: the
// variables, the optimizer's state and the loop's own values (epoch, batch, ...) are committed
// to a folder in the checkpoint layout fit uses, and a job restarted by `braid run --elastic`
// (on the same hosts or others, with as many ranks or not) restores the newest commit. Under the
// elastic launcher a commit is also where the job stops when asked to grow.
import { agreeOnSuccess, InvalidArgumentError } from '@braid/collectives';
import type { DataParallel } from '@braid/strategies';
import * as tf from '@tensorflow/tfjs-core';

import { appendOptimizerWeights, restoreCheckpoint, type TrainerState, unpackCheckpoint, writeCheckpoint } from './checkpoint.js';
import { readNewestCheckpoint } from './commits.js';
import { joinElasticRun, reportStep, resizeAgreed, stopForResize, underElasticLauncher } from './elastic-worker.js';

export type CommittedValue = number | string | boolean | null | CommittedValue[] | { [key: string]: CommittedValue };

export interface ElasticStateOptions {
  /** The folder of the commits: one every host reads, or a folder on each host with onEveryHost. */
  dir: string;
  /** The trained variables (the model's weights), the same list on every rank. */
  variables: tf.Variable[];
  /** The optimizer whose state (moments, step count) is committed with them. */
  optimizer?: tf.Optimizer;
  /** Every host's first rank writes each commit to its own disk (as fit's checkpointOnEveryHost). */
  onEveryHost?: boolean;
  /** Commits kept (default 2). */
  keep?: number;
}

export interface ResetInfo {
  /** This run's ranks. */
  size: number;
  /** The ranks of the run that made the commit restored. */
  previousSize: number;
  /** The loop's values as committed. */
  values: Record<string, CommittedValue>;
}

const STATE_KIND = 'elastic-state';
const ELASTIC_STATE_VERSION = 1;

interface CommittedState extends TrainerState {
  kind: typeof STATE_KIND;
  values: Record<string, CommittedValue>;
}

/**
 * `state.values` holds the loop's own position (JSON values; a numeric `step` is what the
 * launcher's messages name a commit by); `restore()` once before the loop, `commit()` where the
 * loop may be resumed from (every N steps, every epoch).
 */
export class ElasticState<V extends Record<string, CommittedValue>> {
  values: V;
  /** Commits made so far in this job (restored ones included): the commits' names. */
  commits = 0;
  private readonly resetCallbacks: Array<(info: ResetInfo) => void | Promise<void>> = [];
  private readonly elastic = underElasticLauncher();

  constructor(
    private readonly strategy: DataParallel,
    values: V,
    private readonly options: ElasticStateOptions,
  ) {
    if (!options || typeof options.dir !== 'string' || options.dir === '') throw new InvalidArgumentError('ElasticState: options.dir must name the commits\' folder');
    if (!Array.isArray(options.variables) || options.variables.length === 0 || options.variables.some((v) => !(v instanceof tf.Variable))) {
      throw new InvalidArgumentError('ElasticState: options.variables must be a non-empty list of tf.Variable (the model\'s weights)');
    }
    if (options.keep !== undefined && (!Number.isInteger(options.keep) || options.keep < 1)) throw new InvalidArgumentError(`ElasticState: keep must be an integer >= 1; got ${options.keep}`);
    JSON.stringify(values); // a value JSON cannot hold fails here, not at the first commit
    this.values = structuredClone(values);
  }

  /** Called by restore() when the commit restored was made by another number of ranks (rescale the learning rate here). */
  onReset(callback: (info: ResetInfo) => void | Promise<void>): void {
    this.resetCallbacks.push(callback);
  }

  /**
   * Puts back the newest commit (weights, optimizer state, values) on every rank, or, when there
   * is none, gives every rank rank 0's variables. Returns whether a commit was restored.
   */
  async restore(): Promise<boolean> {
    const comm = this.strategy.comm;
    const { packed } = await readNewestCheckpoint(this.strategy, this.options.dir, this.options.onEveryHost === true, 'ElasticState.restore');
    let restored: CommittedState | undefined;
    if (packed.length > 0) {
      restored = await agreeOnSuccess(comm, 'ElasticState.restore', async () => {
        const loaded = unpackCheckpoint(packed);
        const state = loaded.state as CommittedState;
        if (state.kind !== STATE_KIND || state.version !== ELASTIC_STATE_VERSION) {
          throw new InvalidArgumentError(`ElasticState: ${this.options.dir} holds checkpoints of another kind (fit's, or another version); give ElasticState a folder of its own`);
        }
        await restoreCheckpoint(this.model(), loaded);
        return state;
      });
      this.values = structuredClone(restored.values) as V;
      this.commits = restored.globalStep;
    } else {
      await this.strategy.broadcastVariables(this.options.variables, 0);
    }
    if (this.elastic) {
      joinElasticRun();
      reportStep(comm, this.stepLabel(), 'resumed');
    }
    if (restored && restored.size !== comm.size) {
      for (const cb of this.resetCallbacks) await cb({ size: comm.size, previousSize: restored.size, values: structuredClone(restored.values) });
    }
    return restored !== undefined;
  }

  /**
   * Writes a commit (rank 0, or every host's first rank) and, under `braid run --elastic`, stops
   * the job here for a larger restart when the launcher asked for one. Every rank calls it.
   */
  async commit(): Promise<void> {
    const comm = this.strategy.comm;
    if (this.elastic) joinElasticRun();
    this.commits++;
    const state: CommittedState = {
      version: ELASTIC_STATE_VERSION,
      kind: STATE_KIND,
      epoch: 0,
      batchInEpoch: 0,
      globalStep: this.commits,
      seed: 0,
      size: comm.size,
      batchSize: 0,
      epochSums: [],
      history: {},
      values: structuredClone(this.values),
    };
    await agreeOnSuccess(comm, 'ElasticState.commit', async () => {
      if (this.options.onEveryHost ? comm.localRank !== 0 : comm.rank !== 0) return;
      await writeCheckpoint(this.options.dir, this.model(), state, this.options.keep ?? 2);
    });
    if (this.elastic) {
      reportStep(comm, this.stepLabel(), 'commit');
      if (await resizeAgreed(comm)) stopForResize(comm, this.stepLabel());
    }
  }

  // What the launcher's messages call a commit: the loop's own `step` value when it keeps one.
  private stepLabel(): number {
    const step = this.values.step;
    return typeof step === 'number' && Number.isSafeInteger(step) && step >= 0 ? step : this.commits;
  }

  // The variables and optimizer as the checkpoint code sees a model.
  private model() {
    const { variables, optimizer } = this.options;
    return {
      optimizer,
      getWeights: () => variables as tf.Tensor[],
      setWeights: (weights: tf.Tensor[]) => variables.forEach((v, i) => v.assign(weights[i]!)),
      save: async (handler: tf.io.IOHandler) => {
        const { data, specs } = await tf.io.encodeWeights(variables.map((v, i) => ({ name: `variable_${i}`, tensor: v })));
        const artifacts: tf.io.ModelArtifacts = { format: STATE_KIND, generatedBy: 'braid', weightSpecs: specs, weightData: data };
        if (optimizer) await appendOptimizerWeights(artifacts, optimizer);
        return handler.save!(artifacts);
      },
    };
  }
}
