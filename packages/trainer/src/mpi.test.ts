// Multi-process tests: real `mpirun` jobs of test-support/worker.mjs training through fit().
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { computeEpsilon } from '@braid/strategies';
import { testBackends } from '@braid/test-support/backend';
import { mpirunScript } from '@braid/test-support/mpirun';
import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'worker.mjs');

async function run(np: number, args: string[], expectExit = 0, env: Record<string, string> = {}) {
  const job = await mpirunScript(np, worker, args, { env });
  if (expectExit === 0) {
    expect(job.results.filter((r) => !r.ok).map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
    expect(job.code, job.stderr).toBe(0);
    expect(job.results).toHaveLength(np);
  }
  return job;
}

function same(results: Array<Record<string, any>>, key: string) {
  for (const r of results) expect(r[key]).toEqual(results[0]![key]);
  return results[0]![key];
}

function expectFit(np: number, job: Awaited<ReturnType<typeof run>>) {
  const history = same(job.results, 'history');
  same(job.results, 'weights');
  const stepsPerEpoch = Math.ceil(Math.ceil(101 / np) / 8);
  expect(job.results.map((r) => r.globalStep)).toEqual(new Array(np).fill(4 * stepsPerEpoch));
  expect(job.results.map((r) => r.steps)).toEqual(new Array(np).fill(4 * stepsPerEpoch));
  expect(Object.keys(history)).toEqual(['loss', 'acc', 'val_loss', 'val_acc']);
  expect(history.loss[3]).toBeLessThan(history.loss[0]);
  expect(history.val_acc[3]).toBeGreaterThan(0.9);
  const lines = job.stdout.split('\n').filter((l) => l.startsWith('epoch '));
  expect(lines.map((l) => l.split('  ')[0])).toEqual(['epoch 1/4', 'epoch 2/4', 'epoch 3/4', 'epoch 4/4']);
  expect(lines[3]).toMatch(new RegExp(`^epoch 4/4  ${stepsPerEpoch} steps  [\\d.]+ s  \\d+ samples/s  loss [\\d.]+  acc [\\d.]+  val_loss [\\d.]+  val_acc [\\d.]+$`));
}

async function expectResumeBitwise(np: number, optimizer: string, env: Record<string, string> = {}) {
  const straight = scratchDir('braid-ckpt-a-');
  const crashed = scratchDir('braid-ckpt-b-');
  const a = await run(np, ['resume', optimizer, straight], 0, env);
  const stepsPerEpoch = Math.ceil(Math.ceil(90 / np) / 4);
  const crashAt = stepsPerEpoch + 3; // inside the second epoch
  const b = await run(np, ['resume', optimizer, crashed, String(crashAt)], 137, env);
  expect(b.code).not.toBe(0);
  expect(b.results).toHaveLength(0);
  // Nothing half-written: only complete checkpoints and the pointer.
  expect(readdirSync(crashed).filter((f) => !/^ckpt-\d{9}$/.test(f) && f !== 'latest')).toEqual([]);
  const c = await run(np, ['resume', optimizer, crashed], 0, env);
  const resumedAt = Math.floor((crashAt - 1) / 5) * 5; // the crash comes before that step's checkpoint
  expect(c.results[0]!.resumedFrom).toBe(join(crashed, `ckpt-${String(resumedAt).padStart(9, '0')}`));
  expect(same(c.results, 'weights')).toBe(same(a.results, 'weights'));
  expect(c.results[0]!.history).toEqual(a.results[0]!.history);
  expect(c.results[0]!.globalStep).toBe(a.results[0]!.globalStep);
  // The last checkpoint loads with tf.loadLayersModel and holds the final weights.
  expect(a.results[0]!.reloaded.weights).toBe(a.results[0]!.weights);
  const folder = a.results[0]!.reloaded.folder;
  const modelJson = JSON.parse(readFileSync(join(folder, 'model.json'), 'utf8'));
  expect(modelJson.format).toBe('layers-model');
  expect(modelJson.weightsManifest[0].paths).toEqual(['weights.bin']);
  const groups = new Set(modelJson.weightsManifest[0].weights.map((w: { group?: string }) => w.group ?? 'model'));
  expect(groups).toEqual(new Set(['model', 'optimizer']));
  expect(existsSync(join(folder, 'state.json'))).toBe(true);
  if (np === 2 && optimizer === 'sgd') {
    // Run again on the finished checkpoint: nothing is trained, and rank 0 says so and how to start over.
    const again = await run(np, ['resume', optimizer, straight], 0, env);
    expect(again.results[0]!.globalStep).toBe(a.results[0]!.globalStep);
    expect(again.results[0]!.messages.join('')).toContain(`nothing to train: the checkpoint in ${straight} is from a finished run (3 of 3 epochs done); to train again from the start, remove that folder or pass resume: false`);
  }
}

describe.each([2, 3, 4])('np=%i', (np) => {
  it('fit: 101 rows, batch 8: same steps everywhere, identical weights and averaged metrics, one progress line per epoch from rank 0', async () => {
    expectFit(np, await run(np, ['fit']));
  });
});

// Which optimizers resume at each rank count. The rank count changes the rows, the steps and the
// step the run resumes at; the optimizer changes the state saved with the weights. Adam (two
// slots and its bias-correction powers) runs at every count: at 4 ranks it resumes at step 5, where
// tfjs's own restore of those powers (pow instead of the step-by-step product) was off in the last
// bit (rebuildAdamPowers). Plain SGD (no state) and momentum (one slot) run at 2 (and SGD at 3).
const RESUMED_OPTIMIZERS: Record<number, string[]> = { 2: ['sgd', 'momentum', 'adam'], 3: ['sgd', 'adam'], 4: ['adam'] };

describe.each([2, 3, 4])('np=%i', (np) => {
  it.each(RESUMED_OPTIMIZERS[np]!)('a run killed mid-epoch and resumed ends bitwise where an uninterrupted one does (%s)', async (optimizer) => {
    await expectResumeBitwise(np, optimizer);
  });

  it('early stopping and model.stopTraining on one rank stop every rank at the same epoch', async () => {
    const job = await run(np, ['stopping']);
    expect(same(job.results, 'early')).toEqual({ epochs: 2, stopped: true });
    expect(same(job.results, 'oneRank')).toEqual({ epochs: 2, stopped: true });
  });

  it('a checkpoint that rank 0 alone cannot write or read fails every rank within seconds, and the ranks stay in step', async () => {
    const job = await run(np, ['checkpoint-errors']);
    for (const r of job.results) {
      expect(r.after).toBe(np);
      for (const kind of ['write', 'read']) {
        const f = r.failures[kind];
        expect(f.code, `${kind} on rank ${r.rank}`).not.toBe('OK');
        expect(f.ms).toBeLessThan(5000);
        if (r.rank === 0) continue;
        expect(f.code).toBe('ABORTED');
        expect(f.message).toMatch(kind === 'write' ? /fit: writing a checkpoint failed on rank 0 \(.*\)/ : /fit: reading the checkpoint failed on rank 0 \(.*not a complete checkpoint/);
      }
    }
  });

  it('ranks given different data all fail with INVALID_ARGUMENT, nothing hangs', async () => {
    const job = await run(np, ['mismatch']);
    const error = same(job.results, 'error');
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toMatch(/number of training rows differs between ranks .*whole data set/);
  });
});

describe('an epoch resumed on another number of ranks (an elastic restart)', () => {
  it('trains every row of the epoch exactly once across the two runs, and the next epoch whole', async () => {
    const dir = scratchDir('braid-ckpt-rows-');
    // 3 ranks x batches of 5: 20 rows each, 4 steps; killed at step 3, after the step-2 commit
    // (30 rows of the epoch trained).
    const crashed = await run(3, ['countRows', dir, '3', '5'], 137);
    expect(crashed.code).not.toBe(0);
    // 2 ranks resume from there: the other 30 rows, 15 each, 3 steps; then the second epoch on 2
    // ranks from its start: 30 rows each, 6 steps.
    const resumed = await run(2, ['countRows', dir, '0', '5']);
    expect(resumed.results[0]!.resumedFrom).toBe(join(dir, `ckpt-${String(2).padStart(9, '0')}`));
    expect(resumed.results[0]!.globalStep).toBe(2 + 3 + 6);
    // onTrainBegin says the size changed (where a learning rate would be rescaled).
    expect(resumed.results.map((r) => r.began)).toEqual([{ size: 2, resumedSize: 3 }, { size: 2, resumedSize: 3 }]);
    const weights = same(resumed.results, 'weights') as number[];
    // The first epoch trained on 3 ranks adds 1/15 to w_i, on 2 ranks 1/10; the second epoch
    // 1/10 to every row. A row skipped or trained twice lands elsewhere.
    const count = (w: number) => (Math.abs(w - (1 / 15 + 1 / 10)) < 1e-6 ? 'three' : Math.abs(w - 2 / 10) < 1e-6 ? 'two' : `other ${w}`);
    const tally: Record<string, number> = {};
    for (const w of weights) tally[count(w)] = (tally[count(w)] ?? 0) + 1;
    expect(tally).toEqual({ three: 30, two: 30 });
  });
});

describe.each([2, 3])('differential privacy, np=%i', (np) => {
  it.each(['0', '1'])('fit with DP-SGD (secure aggregation %s): identical weights on every rank, epsilon per epoch from the accountant, and it still learns', async (secure) => {
    const job = await mpirunScript(np, worker, ['private'], { env: { SECURE: secure } });
    expect(job.results.filter((r) => !r.ok).map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
    expect(job.code, job.stderr).toBe(0);
    const results = job.results;
    same(results, 'weights');
    same(results, 'history');
    const stepsPerEpoch = Math.ceil(Math.ceil(96 / np) / 8);
    expect(results[0]!.steps).toBe(3 * stepsPerEpoch);
    const q = (8 * np) / 96;
    const history = results[0]!.history;
    expect(history.epsilon).toEqual([1, 2, 3].map((e) => computeEpsilon({ samplingRate: q, noiseMultiplier: 0.8, steps: e * stepsPerEpoch, delta: 1e-5 }).epsilon));
    // Three well-separated blobs: even noisy, clipped steps get most of them right.
    expect(history.val_acc.at(-1)).toBeGreaterThan(0.6);
    // Rank 0's epoch lines carry epsilon.
    expect(job.stdout).toMatch(/epoch 3\/3 .*epsilon/);
  });
});

// fit and resuming on native TensorFlow (tfjs-node), where `bash scripts/setup.sh --tfjs-node`
// built it: the same assertions, every rank reporting the 'tensorflow' backend.
const tensorflow = testBackends().find((b) => b.name === 'tensorflow')!;
describe.skipIf(tensorflow.skip !== undefined).each([2, 3])(`native TensorFlow (tfjs-node)${tensorflow.skip ? `, skipped: ${tensorflow.skip}` : ''}, np=%i`, (np) => {
  it('fit: identical weights and averaged metrics on every rank', async () => {
    const job = await run(np, ['fit'], 0, tensorflow.env);
    expect(job.results.map((r) => r.backend)).toEqual(new Array(np).fill('tensorflow'));
    expectFit(np, job);
  });

  // SGD at 2 ranks, Adam at both (RESUMED_OPTIMIZERS' reasons).
  it.each(np === 2 ? ['sgd', 'adam'] : ['adam'])('a run killed mid-epoch and resumed ends bitwise where an uninterrupted one does (%s)', async (optimizer) => {
    await expectResumeBitwise(np, optimizer, tensorflow.env);
  });
});

describe.each([[2, 1], [3, 1], [4, 2]])('fit with a PipelineParallel strategy, np=%i, %i pipeline(s)', (np, replicas) => {
  it('trains the stages to one process\'s weights on the same batches, with its losses and validation metrics on every rank, one progress line per epoch, nothing leaked', async () => {
    const job = await mpirunScript(np, worker, ['pipeline-fit'], { env: { REPLICAS: String(replicas) } });
    expect(job.results.filter((r) => !r.ok).map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
    expect(job.code, job.stderr).toBe(0);
    const stages = np / replicas;
    // 96 rows, batch 8 per pipeline: 12 / replicas steps an epoch, 3 epochs.
    same(job.results, 'history');
    expect(Object.keys(job.results[0]!.history)).toEqual(['loss', 'val_loss', 'val_acc']);
    for (const r of job.results) {
      expect(r.globalStep).toBe((3 * 12) / replicas);
      expect(r.diff, `stage ${r.stage} of pipeline ${r.replica}`).toBeLessThan(1e-5);
      expect(r.lossDiff).toBeLessThan(1e-5);
      expect(r.valLossDiff).toBeLessThan(1e-5);
      expect(r.valAccDiff).toBe(0);
      expect(r.leaked).toBe(0);
      // Rank 0 alone prints, one line per epoch.
      expect(r.epochLines).toHaveLength(r.rank === 0 ? 3 : 0);
    }
    // The replicas of a stage hold the same bits.
    for (let s = 0; s < stages; s++) {
      const copies = job.results.filter((r) => r.stage === s);
      expect(new Set(copies.map((r) => r.weights)).size).toBe(1);
    }
    expect(job.results[0]!.history.val_acc[2]).toBeGreaterThan(0.8);
    expect(job.results[0]!.epochLines[2]).toMatch(/^epoch 3\/3  \d+ steps  [\d.]+ s  \d+ samples\/s  loss [\d.]+  val_loss [\d.]+  val_acc [\d.]+$/);
  });
});

describe.each([[2, 1], [3, 1], [4, 2]])('fit with a PipelineParallel strategy and checkpoints, np=%i, %i pipeline(s)', (np, replicas) => {
  // Every layout with Adam (the state each stage saves beside its weights), SGD on 2 ranks.
  it.each(np === 2 ? ['sgd', 'adam'] : ['adam'])('each stage writes its part; a run stopped mid-epoch and resumed ends bitwise where an uninterrupted one does (%s)', async (optimizer) => {
    const pipelineJob = async (dir: string, crashAt = 0) => {
      const job = await mpirunScript(np, worker, ['pipeline-resume', optimizer, dir], { env: { REPLICAS: String(replicas), CRASH_AT: String(crashAt) } });
      expect(job.results.filter((r) => !r.ok).map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
      expect(job.code, job.stderr).toBe(0);
      return job.results;
    };
    const straight = scratchDir('braid-pipe-a-');
    const stopped = scratchDir('braid-pipe-b-');
    const a = await pipelineJob(straight);
    // 96 rows, batch 8 per pipeline: 12 / replicas steps an epoch; checkpoints every 4 steps and
    // at each epoch's end. Stopped inside the second epoch, after a mid-epoch checkpoint.
    const [crashAt, resumeAt] = replicas === 1 ? [18, 16] : [11, 8];
    const b = await pipelineJob(stopped, crashAt);
    for (const r of b) expect(r.error).toMatch(new RegExp(`stopped at step ${crashAt}`));
    const c = await pipelineJob(stopped);
    for (const r of c) {
      expect(r.resumedFrom).toBe(join(stopped, `ckpt-${String(resumeAt).padStart(9, '0')}`));
      const twin = a.find((x) => x.rank === r.rank)!;
      expect(r.weights, `stage ${r.stage} of pipeline ${r.replica}`).toBe(twin.weights);
      expect(r.history).toEqual(twin.history);
      expect(r.globalStep).toBe(twin.globalStep);
    }
    // One folder per checkpoint: every stage's part beside state.json.
    const folder = join(straight, readFileSync(join(straight, 'latest'), 'utf8').trim());
    expect(readdirSync(folder).sort()).toEqual([...Array.from({ length: np / replicas }, (_, s) => [`stage-${s}.bin`, `stage-${s}.json`]).flat(), 'state.json'].sort());
    expect(JSON.parse(readFileSync(join(folder, 'state.json'), 'utf8'))).toMatchObject({ kind: 'pipeline', stages: np / replicas, replicas, epoch: 3, globalStep: (3 * 12) / replicas });
  });
});

describe.each([['pipeline', 3], ['ps', 3]])('early stopping under %s, np=%i', (kind, np) => {
  it('stops every rank at the same epoch and puts back the best epoch\'s weights; a monitor that is not a metric is an error on every rank', async () => {
    const job = await run(np, ['stop-early'], 0, { KIND: kind });
    for (const r of job.results) {
      expect(r.stoppedEarly).toBe(true);
      expect(r.epochs).toBe(2);
      expect(r.restored, `rank ${r.rank}`).toBe(r.firstEpoch);
      expect(r.error.code).toBe('INVALID_ARGUMENT');
      expect(r.error.message).toMatch(/^fit: earlyStopping.monitor 'val_accuracy' is not among the metrics \(loss/);
    }
  });
});

describe.each([[3, 1], [4, 2]])('fit with a ParameterServer strategy, np=%i, %i server(s)', (np, servers) => {
  it('sync: the workers train their rows to one process\'s weights and losses on the same batches; every rank ends with the servers\' weights and the same history', async () => {
    const job = await mpirunScript(np, worker, ['ps-fit'], { env: { SERVERS: String(servers), MODE: 'sync' } });
    expect(job.results.filter((r) => !r.ok).map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
    expect(job.code, job.stderr).toBe(0);
    same(job.results, 'weights');
    same(job.results, 'history');
    expect(Object.keys(job.results[0]!.history)).toEqual(['loss', 'acc', 'val_loss', 'val_acc']);
    for (const r of job.results) {
      // 96 rows over 2 workers, batch 8: 6 steps an epoch.
      expect(r.globalStep).toBe(18);
      expect(r.diff).toBeLessThan(1e-5);
      expect(r.lossDiff).toBeLessThan(1e-5);
      // The first worker prints, one line per epoch.
      expect(r.epochLines).toHaveLength(r.rank === servers ? 3 : 0);
    }
    expect(job.results[0]!.history.val_acc[2]).toBeGreaterThan(0.8);
  });

  it.each(['sgd', 'adam'])('sync with checkpoints: each server writes its shard; a run whose worker is killed mid-epoch resumes and ends bitwise where an uninterrupted one does (%s)', async (optimizer) => {
    const straight = scratchDir('braid-ps-ckpt-a-');
    const killed = scratchDir('braid-ps-ckpt-b-');
    const a = await run(np, ['ps-resume', optimizer, straight], 0, { SERVERS: String(servers), MODE: 'sync' });
    same(a.results, 'weights');
    // 6 steps an epoch: every 4 steps, and at the end.
    for (const r of a.results) expect(r.checkpoints.map(([, step]: [string, number]) => step)).toEqual([4, 8, 12, 16, 18]);
    // The last checkpoint's shards, put end to end, are the weights every rank ends with.
    expect(a.results[0]!.assembled).toBe(a.results[0]!.weights);
    const folder = join(straight, readFileSync(join(straight, 'latest'), 'utf8').trim());
    expect(readdirSync(folder).sort()).toEqual([...Array.from({ length: servers }, (_, j) => [`shard-${j}.bin`, `shard-${j}.json`]).flat(), 'state.json'].sort());
    expect(JSON.parse(readFileSync(join(folder, 'state.json'), 'utf8'))).toMatchObject({ kind: 'parameter-server', servers, workers: np - servers, mode: 'sync', epoch: 3, globalStep: 18 });
    // Worker 0 killed after step 11: mpirun ends the job; the step-8 checkpoint is the newest.
    const b = await run(np, ['ps-resume', optimizer, killed], 137, { SERVERS: String(servers), MODE: 'sync', KILL_AT: '11' });
    expect(b.code).not.toBe(0);
    expect(readdirSync(killed).filter((f) => !/^ckpt-\d{9}$/.test(f) && f !== 'latest')).toEqual([]);
    const c = await run(np, ['ps-resume', optimizer, killed], 0, { SERVERS: String(servers), MODE: 'sync' });
    for (const r of c.results) {
      expect(r.resumedFrom).toBe(join(killed, 'ckpt-000000008'));
      expect(r.checkpoints.map(([, step]: [string, number]) => step)).toEqual([12, 16, 18]);
    }
    expect(same(c.results, 'weights')).toBe(a.results[0]!.weights);
    expect(same(c.results, 'history')).toEqual(a.results[0]!.history);
    expect(c.results[0]!.globalStep).toBe(18);
    // The first worker says where it resumed.
    expect(c.results.find((r) => r.rank === servers)!.messages).toContain(`resumed from ${join(killed, 'ckpt-000000008')} at epoch 2, step 8`);
    if (servers === 1 && optimizer === 'sgd') {
      // Again on the finished checkpoint: nothing is trained, and the first worker says so.
      const again = await run(np, ['ps-resume', optimizer, straight], 0, { SERVERS: String(servers), MODE: 'sync' });
      expect(same(again.results, 'weights')).toBe(a.results[0]!.weights);
      expect(again.results.find((r) => r.rank === servers)!.messages).toContain('nothing to train');
      // Resumed with another split of servers and workers: every rank says what to do.
      const other = await run(np, ['ps-resume', optimizer, straight], 0, { SERVERS: '2', MODE: 'sync' });
      const error = same(other.results, 'error');
      expect(error.code).toBe('INVALID_ARGUMENT');
      expect(error.message).toContain(`ckpt-000000018 was taken with 1 server(s) and ${np - 1} worker(s); this job has 2 and ${np - 2}`);
    }
  });

  it('async with checkpoints: a killed run resumes from its newest checkpoint and trains on to the end', async () => {
    const dir = scratchDir('braid-ps-ckpt-async-');
    const b = await run(np, ['ps-resume', 'sgd', dir], 137, { SERVERS: String(servers), MODE: 'async', KILL_AT: '11' });
    expect(b.code).not.toBe(0);
    const c = await run(np, ['ps-resume', 'sgd', dir], 0, { SERVERS: String(servers), MODE: 'async' });
    same(c.results, 'weights');
    same(c.results, 'history');
    for (const r of c.results) expect(r.resumedFrom).toBe(join(dir, 'ckpt-000000008'));
    expect(c.results[0]!.globalStep).toBe(18);
    expect(c.results[0]!.assembled).toBe(c.results[0]!.weights);
    expect(c.results[0]!.history.val_acc[2]).toBeGreaterThan(0.8);
  });

  // (Async: the other worker may be waiting for the failed one in the epoch's metrics instead of
  // on a server; that wait ends at the communicator's deadline, so it is not timed here.)
  it('sync: a worker whose training throws stops the servers and the other workers with ABORTED within seconds', async () => {
    const job = await run(np, ['ps-worker-fails'], 0, { SERVERS: String(servers), MODE: 'sync', FAIL_WORKER: '1' });
    for (const r of job.results) {
      expect(r.error, `rank ${r.rank}`).not.toBeNull();
      expect(r.ms).toBeLessThan(10_000);
      if (r.rank === servers + 1) expect(r.error.message).toBe('a bug in worker code');
      else if (r.rank < servers) expect(r.error).toEqual({ code: 'ABORTED', message: `ParameterServer: worker 1 (rank ${servers + 1}) failed (its rank's output says why); server ${r.rank} (rank ${r.rank}) stopped serving` });
      else expect(r.error.message).toMatch(new RegExp(`^ParameterServer: server \\d \\(rank \\d\\) stopped serving at worker 0's step \\d+: another worker failed`));
    }
  });

  it('async: the workers learn at their own pace; every rank ends with the servers\' weights', async () => {
    const job = await mpirunScript(np, worker, ['ps-fit'], { env: { SERVERS: String(servers), MODE: 'async' } });
    expect(job.results.filter((r) => !r.ok).map((r) => `${r.rank}: ${r.stack}`)).toEqual([]);
    expect(job.code, job.stderr).toBe(0);
    same(job.results, 'weights');
    same(job.results, 'history');
    expect(job.results[0]!.history.val_acc[2]).toBeGreaterThan(0.8);
  });
});
