// A parameter server (Li et al., "Scaling Distributed Machine Learning with the Parameter
// Server", OSDI 2014; BytePS and ps-lite today): the first `servers` ranks hold the model's
// weights in shards, the others are workers. A worker pushes its gradients to every server and
// pulls the new weights back; a server applies its optimizer to its shard.
//
// 'sync': each server waits for every worker's push of a step, averages them in worker order
// (so the result does not depend on arrival order) and answers every worker with the same
// weights: DataParallel's averaging, through servers. 'async': a server applies each push as it
// arrives and answers that worker at once, so each worker runs at its own speed; `staleness: s`
// holds back the answer to a worker more than s steps ahead of the slowest one still training.
//
// Messages go with comm.send / comm.recv (through MPI: shared memory among ranks on one host).
import { AbortedError, checkOptions, type Communicator, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

export interface ParameterServerOptions {
  /** How many ranks (the first ones) serve; at least 1, and fewer than the communicator's size. */
  servers: number;
  /** The servers' optimizer (each server applies it to its own shard). */
  optimizer: tf.Optimizer;
  /** Default 'sync'. */
  mode?: 'sync' | 'async';
  /** 'async': the most steps a worker may be ahead of the slowest training worker (default: no bound). */
  staleness?: number;
}

export interface ServerStats {
  /** Pushes applied. */
  pushes: number;
  /** The largest lead (in steps) a worker had over the slowest one when it was answered. */
  maxLead: number;
  /** Answers held back by the staleness bound. */
  heldBack: number;
}

const PUSH = 1;
const PULL = 2;
// Control messages are one negative value (a push carries its step, counted from 1, last).
const DONE = -1; // the worker has finished
const PAUSE = -2; // the worker waits for pause(): see serve's onPause
const ABORT = -3; // the worker failed: the servers stop, telling the other workers
const ABORT_WAIT_MS = 2000;

/** A received message's control code, or undefined for a push. */
function controlCode(buf: Float32Array, length: number): number | undefined {
  return length === 1 && buf[0]! < 0 ? buf[0]! : undefined;
}

export class ParameterServer {
  readonly servers: number;
  readonly workers: number;
  readonly mode: 'sync' | 'async';
  readonly staleness: number;
  readonly isServer: boolean;
  /** This rank's index among the servers or among the workers. */
  readonly index: number;
  readonly stats: ServerStats = { pushes: 0, maxLead: 0, heldBack: 0 };
  /** The servers' optimizer (on a server, its state is the shard's: part of a checkpoint). */
  readonly optimizer: tf.Optimizer;
  private readonly sizes: number[];
  // Shard j covers [bounds[j], bounds[j + 1]) of the flat weights.
  private readonly bounds: number[];
  private shard: tf.Variable | undefined;
  private steps = 0;
  private ready = false;
  // A server told this worker to stop: no abort() goes back to it.
  private stoppedByServer = false;

  constructor(
    readonly comm: Communicator,
    readonly variables: tf.Variable[],
    options: ParameterServerOptions,
  ) {
    checkOptions('ParameterServer', options, ['servers', 'optimizer', 'mode', 'staleness']);
    const servers = options?.servers;
    if (typeof servers !== 'number' || !Number.isInteger(servers) || servers < 1 || servers >= comm.size) {
      throw new InvalidArgumentError(
        `ParameterServer: servers must be an integer from 1 to ${comm.size - 1} (the rest of the ${comm.size} ranks are workers); got ${JSON.stringify(servers)}`,
      );
    }
    if (!options.optimizer || typeof options.optimizer.applyGradients !== 'function') throw new InvalidArgumentError('ParameterServer: optimizer must be a tfjs optimizer (the servers apply it)');
    if (!Array.isArray(variables) || variables.length === 0 || variables.some((v) => !(v instanceof tf.Variable) || v.dtype !== 'float32')) {
      throw new InvalidArgumentError('ParameterServer: pass the model\'s float32 variables (the same list on every rank)');
    }
    this.mode = options.mode ?? 'sync';
    if (this.mode !== 'sync' && this.mode !== 'async') throw new InvalidArgumentError(`ParameterServer: mode must be 'sync' or 'async'; got ${JSON.stringify(options.mode)}`);
    this.staleness = options.staleness ?? Infinity;
    if (typeof this.staleness !== 'number' || !(this.staleness >= 0)) throw new InvalidArgumentError(`ParameterServer: staleness must be a number >= 0; got ${JSON.stringify(options.staleness)}`);
    this.servers = servers;
    this.workers = comm.size - servers;
    this.isServer = comm.rank < servers;
    this.index = this.isServer ? comm.rank : comm.rank - servers;
    this.optimizer = options.optimizer;
    this.sizes = variables.map((v) => v.size);
    const total = this.sizes.reduce((a, b) => a + b, 0);
    // Balanced by bytes: the flat weights cut into `servers` nearly equal runs.
    this.bounds = Array.from({ length: servers + 1 }, (_, j) => Math.round((j * total) / servers));
  }

  /** Whether init() has run. */
  get initialized(): boolean {
    return this.ready;
  }

  /** Every rank starts from rank 0's weights; each server takes its shard. Every rank calls it first. */
  async init(): Promise<void> {
    const flat = this.flatten(this.variables);
    await this.comm.broadcast(flat, { root: 0 });
    this.assign(flat);
    if (this.isServer) {
      const [begin, end] = [this.bounds[this.index]!, this.bounds[this.index + 1]!];
      this.shard = tf.variable(tf.tensor1d(flat.subarray(begin, end)), true, `braid-ps-shard-${this.index}-${Date.now()}`);
    }
    this.ready = true;
  }

  /**
   * A worker's step: its gradients (in the variables' order, or by variable name) to every server,
   * the new weights back into the variables.
   */
  async push(gradients: tf.Tensor[] | tf.NamedTensorMap): Promise<void> {
    if (!this.ready) throw new InvalidArgumentError('ParameterServer: call init() on every rank first');
    if (this.isServer) throw new InvalidArgumentError(`ParameterServer: rank ${this.comm.rank} is a server; serve() there, push() on the workers`);
    const list = Array.isArray(gradients) ? gradients : this.variables.map((v) => gradients[v.name] ?? tf.zerosLike(v));
    if (list.length !== this.variables.length) throw new InvalidArgumentError(`ParameterServer.push: ${list.length} gradients for ${this.variables.length} variables`);
    const flat = this.flatten(list);
    this.steps++;
    await this.exchange(flat, this.steps);
    this.assign(flat);
  }

  /** A worker is done training: the servers stop counting it (call it once, after the last push). */
  async finish(): Promise<void> {
    if (this.isServer) throw new InvalidArgumentError('ParameterServer: finish() is for workers');
    await this.control(DONE);
  }

  /**
   * A worker stops pushing until every server has run serve's onPause: once every training worker
   * has paused, the servers call onPause, which takes part with the workers in whatever they do
   * next on every rank (a checkpoint, say). Every worker pauses at the same point of its training.
   */
  async pause(): Promise<void> {
    if (!this.ready) throw new InvalidArgumentError('ParameterServer: call init() on every rank first');
    if (this.isServer) throw new InvalidArgumentError('ParameterServer: pause() is for workers');
    await this.control(PAUSE);
  }

  /**
   * A worker that failed tells the servers (best effort): each answers the workers it hears from
   * next with a stop, so they fail with ABORTED instead of waiting for their deadline, and serve()
   * rejects with ABORTED naming this worker. Call it where the worker's training threw.
   */
  async abort(): Promise<void> {
    if (this.isServer || !this.ready || this.stoppedByServer) return;
    // A send completes when the server takes it: one that has stopped listening would hold the
    // caller's own error back until the deadline, so the wait is bounded.
    const sent = this.control(ABORT).catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([sent, new Promise<void>((resolve) => (timer = setTimeout(resolve, ABORT_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /** Where this server's shard lies in the flat weights (the variables' values end to end). */
  get shardRange(): [number, number] {
    return [this.bounds[this.index]!, this.bounds[this.index + 1]!];
  }

  /** The model's size in values. */
  get totalSize(): number {
    return this.bounds[this.servers]!;
  }

  /** A copy of this server's shard of the weights. */
  shardValues(): Float32Array {
    if (!this.isServer || !this.shard) throw new InvalidArgumentError('ParameterServer: only an initialized server holds a shard');
    return Float32Array.from(this.shard.dataSync() as Float32Array);
  }

  /** Puts values into this server's shard (a checkpoint's; the workers see them at their next pull). */
  setShard(values: Float32Array): void {
    if (!this.isServer || !this.shard) throw new InvalidArgumentError('ParameterServer: only an initialized server holds a shard');
    if (values.length !== this.shard.size) throw new InvalidArgumentError(`ParameterServer: server ${this.index}'s shard holds ${this.shard.size} values; got ${values.length}`);
    const t = tf.tensor1d(values);
    this.shard.assign(t);
    t.dispose();
  }

  /**
   * A server's loop: applies pushes until every worker has finished. `onPause` runs each time
   * every training worker has paused (pause()); serving goes on when it resolves.
   */
  async serve(options: { onPause?: () => Promise<void> } = {}): Promise<void> {
    if (!this.ready) throw new InvalidArgumentError('ParameterServer: call init() on every rank first');
    if (!this.isServer) throw new InvalidArgumentError(`ParameterServer: rank ${this.comm.rank} is a worker; push() there, serve() on the servers`);
    const length = this.bounds[this.index + 1]! - this.bounds[this.index]!;
    const done = new Set<number>();
    const paused = new Set<number>();
    const steps = new Array<number>(this.workers).fill(0);
    const heldBack: number[] = [];
    const answer = async (worker: number) => {
      const training = steps.filter((_, w) => !done.has(w));
      const lead = steps[worker]! - Math.min(...(training.length > 0 ? training : [steps[worker]!]));
      this.stats.maxLead = Math.max(this.stats.maxLead, lead);
      // A copy per answer: answers to several workers are in flight at once.
      await this.comm
        .send(Float32Array.from(this.shard!.dataSync() as Float32Array), this.servers + worker, { tag: PULL })
        .catch((err: unknown) => this.failed(err, `server ${this.index} (rank ${this.comm.rank}) could not answer worker ${worker} (rank ${this.servers + worker})`));
    };
    // Answers held back by the staleness bound go out once the slowest worker catches up.
    const release = async () => {
      const training = steps.filter((_, w) => !done.has(w));
      const slowest = training.length > 0 ? Math.min(...training) : Infinity;
      for (let i = 0; i < heldBack.length; ) {
        const w = heldBack[i]!;
        if (steps[w]! - slowest <= this.staleness) {
          heldBack.splice(i, 1);
          await answer(w);
        } else {
          i++;
        }
      }
    };
    const pending = new Map<number, Float32Array>(); // sync: this step's pushes by worker
    while (done.size < this.workers) {
      const buf = new Float32Array(length + 1);
      const got = await this.comm.recv(buf, -1, { tag: PUSH }).catch((err: unknown) => {
        const waiting = Array.from({ length: this.workers }, (_, w) => w).filter((w) => !done.has(w) && !pending.has(w));
        return this.failed(err, `server ${this.index} (rank ${this.comm.rank}) waited for pushes from worker(s) ${waiting.join(', ')} (rank(s) ${waiting.map((w) => w + this.servers).join(', ')})`);
      });
      const worker = got.source - this.servers;
      const control = controlCode(buf, got.length);
      if (control === undefined && got.length !== length + 1) {
        throw new InvalidArgumentError(`ParameterServer: worker ${worker} pushed ${got.length - 1} values to server ${this.index}, which holds ${length}; build the same model on every rank`);
      }
      if (control === DONE || control === PAUSE) {
        (control === DONE ? done : paused).add(worker);
        if (paused.size > 0 && paused.size === this.workers - done.size) {
          // No push is pending: a worker pauses only after its last step's answer.
          paused.clear();
          if (options.onPause) await options.onPause();
        }
        if (this.mode === 'async') await release();
        continue;
      }
      if (control === ABORT) await this.stopServing(worker, [...pending.keys(), ...heldBack], done);
      if (control !== undefined) throw new InvalidArgumentError(`ParameterServer: worker ${worker} sent server ${this.index} an unknown control message (${control})`);
      const step = buf[length]!;
      steps[worker] = step;
      if (this.mode === 'sync') {
        pending.set(worker, buf);
        if (pending.size < this.workers - done.size) continue;
        // Every training worker's push of this step: their mean, summed in worker order.
        const sum = new Float32Array(length);
        for (const w of [...pending.keys()].sort((a, b) => a - b)) {
          const g = pending.get(w)!;
          for (let i = 0; i < length; i++) sum[i]! += g[i]!;
        }
        const scale = 1 / pending.size;
        for (let i = 0; i < length; i++) sum[i]! *= scale;
        this.apply(sum);
        const answered = [...pending.keys()];
        pending.clear();
        await Promise.all(answered.map((w) => answer(w)));
      } else {
        this.apply(buf.subarray(0, length));
        const training = steps.filter((_, w) => !done.has(w));
        if (steps[worker]! - Math.min(...training) > this.staleness) {
          this.stats.heldBack++;
          heldBack.push(worker);
        } else {
          await answer(worker);
        }
        await release();
      }
    }
  }

  // A worker failed: every other worker still training gets an empty answer (a stop) to its
  // waiting or next push, then serve() rejects. Workers that never push again (waiting elsewhere)
  // are left to their deadlines.
  private async stopServing(failed: number, waiting: number[], done: Set<number>): Promise<never> {
    const stopped = new Set<number>([failed, ...done]);
    const stop = async (w: number) => {
      stopped.add(w);
      await this.comm.send(new Float32Array(0), this.servers + w, { tag: PULL }).catch(() => undefined);
    };
    for (const w of new Set(waiting)) await stop(w);
    const length = this.bounds[this.index + 1]! - this.bounds[this.index]!;
    while (stopped.size < this.workers) {
      const buf = new Float32Array(length + 1);
      const got = await this.comm.recv(buf, -1, { tag: PUSH }).catch(() => undefined);
      if (!got) break;
      const w = got.source - this.servers;
      const control = controlCode(buf, got.length);
      if (control === DONE || control === ABORT) stopped.add(w);
      else await stop(w);
    }
    throw new AbortedError(`ParameterServer: worker ${failed} (rank ${this.servers + failed}) failed (its rank's output says why); server ${this.index} (rank ${this.comm.rank}) stopped serving`);
  }

  /** The weights as one model sees them, gathered from the servers onto every rank. */
  async pullAll(): Promise<void> {
    const flat = new Float32Array(this.bounds[this.servers]!);
    if (this.isServer) flat.set(this.shard!.dataSync() as Float32Array, this.bounds[this.index]!);
    for (let j = 0; j < this.servers; j++) await this.comm.broadcast(flat.subarray(this.bounds[j]!, this.bounds[j + 1]!), { root: j });
    this.assign(flat);
  }

  // A control message to every server.
  private async control(code: number): Promise<void> {
    await Promise.all(Array.from({ length: this.servers }, (_, j) => this.comm.send(Float32Array.of(code), j, { tag: PUSH })));
  }

  private apply(gradient: Float32Array): void {
    const g = tf.tensor1d(gradient);
    this.optimizer.applyGradients({ [this.shard!.name]: g });
    g.dispose();
    this.stats.pushes++;
  }

  // Push every server its slice (with the step), then take the servers' weights into `flat`.
  private async exchange(flat: Float32Array, step: number): Promise<void> {
    const exchanges: Array<Promise<unknown>> = [];
    for (let j = 0; j < this.servers; j++) {
      const [begin, end] = [this.bounds[j]!, this.bounds[j + 1]!];
      const message = new Float32Array(end - begin + 1);
      message.set(flat.subarray(begin, end));
      message[end - begin] = step;
      const about = (what: string) => (err: unknown) => this.failed(err, `worker ${this.index} (rank ${this.comm.rank}) ${what} server ${j} (rank ${j}) at step ${step}`);
      exchanges.push(this.comm.send(message, j, { tag: PUSH }).catch(about('could not push its gradients to')));
      exchanges.push(
        this.comm.recv(flat.subarray(begin, end), j, { tag: PULL }).then(
          (got) => {
            if (got.length === 0 && end > begin) {
              this.stoppedByServer = true;
              throw new AbortedError(`ParameterServer: server ${j} (rank ${j}) stopped serving at worker ${this.index}'s step ${step}: another worker failed (its rank's output says why)`);
            }
          },
          about('got no weights back from'),
        ),
      );
    }
    // Every message settles before the first failure is thrown: their buffers are this call's.
    const settled = await Promise.allSettled(exchanges);
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failure) throw failure.reason;
  }

  // A failed message, said from the parameter server's side (the code and class kept): which
  // worker, which server, which step; the message's own error (TIMEOUT naming the silent rank and
  // its host, ABORTED) follows.
  private failed(err: unknown, context: string): never {
    if (err instanceof Error) {
      err.message = `ParameterServer: ${context}: ${err.message}`;
      throw err;
    }
    throw new Error(`ParameterServer: ${context}: ${String(err)}`);
  }

  private flatten(tensors: tf.Tensor[]): Float32Array {
    const flat = new Float32Array(this.sizes.reduce((a, b) => a + b, 0));
    let at = 0;
    tensors.forEach((t, i) => {
      if (t.size !== this.sizes[i]) throw new InvalidArgumentError(`ParameterServer: tensor ${i} has ${t.size} values; its variable has ${this.sizes[i]}`);
      flat.set(t.dataSync() as Float32Array, at);
      at += t.size;
    });
    return flat;
  }

  private assign(flat: Float32Array): void {
    let at = 0;
    this.variables.forEach((v) => {
      const t = tf.tensor(flat.subarray(at, at + v.size), v.shape, 'float32');
      v.assign(t);
      t.dispose();
      at += v.size;
    });
  }
}
