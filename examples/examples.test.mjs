// The examples, run as users run them: `braid run -np 2 ...`. The demo must reach the accuracy
// the README promises.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { tfjsNode } from '../packages/test-support/backend.mjs';
import { createHosts, netnsUnavailable } from '../packages/test-support/netns.mjs';
import { scratchDir } from '../packages/test-support/scratch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const braid = join(here, '..', 'packages', 'trainer', 'dist', 'cli.js');
const native = tfjsNode();
const run = (args) => spawnSync(process.execPath, [braid, 'run', '-np', '2', ...args], { encoding: 'utf8', env: { ...process.env, BRAID_PROGRESS: 'lines' }, timeout: 600_000 });

describe('examples', () => {
  it('the MNIST MLP demo reaches test accuracy >= 0.92 on 2 ranks and prints it', () => {
    const json = join(scratchDir('braid-demo-'), 'result.json');
    const result = run([join(here, 'mnist', 'mlp.mjs'), '--json', json]);
    expect(result.status, result.stderr).toBe(0);
    const line = result.stdout.split('\n').find((l) => l.startsWith('test accuracy: '));
    expect(line).toMatch(/^test accuracy: 0\.\d{4}$/);
    const summary = JSON.parse(readFileSync(json, 'utf8'));
    expect(summary.size).toBe(2);
    // Native TensorFlow when tfjs-node is built here (the default, --backend auto), else pure JS.
    expect(summary.backend).toBe(native.available ? 'tensorflow' : 'cpu');
    expect(summary.accuracy).toBeGreaterThanOrEqual(0.92);
    expect(Number(line.slice(15))).toBeCloseTo(summary.accuracy, 4);
    // One plain line per epoch in a log, from rank 0 only.
    expect(result.stdout.split('\n').filter((l) => l.startsWith('epoch ')).length).toBe(5);
  });

  it('the demo through an async parameter server (1 server, 2 workers) reaches test accuracy >= 0.92', () => {
    const json = join(scratchDir('braid-demo-ps-'), 'result.json');
    const result = spawnSync(process.execPath, [braid, 'run', '-np', '3', join(here, 'mnist', 'mlp.mjs'), '--parameter-server', 'async', '--json', json], {
      encoding: 'utf8',
      env: { ...process.env, BRAID_PROGRESS: 'lines' },
      timeout: 600_000,
    });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toContain('parameter server (async, 1 server(s), 2 worker(s))');
    const summary = JSON.parse(readFileSync(json, 'utf8'));
    expect(summary.parameterServer).toBe('async');
    expect(summary.accuracy).toBeGreaterThanOrEqual(0.92);
    // The first worker prints one line per epoch.
    expect(result.stdout.split('\n').filter((l) => l.startsWith('epoch ')).length).toBe(5);
  });

  it('the demo with DP-SGD at epsilon 8 spends at most that, says so, and learns (1,024 rows, 2 epochs)', () => {
    const result = run([join(here, 'mnist', 'mlp.mjs'), '--dp-epsilon', '8', '--epochs', '2', '--train-rows', '1024']);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/DP-SGD: clip 1, noise multiplier \d\.\d{3} for epsilon 8 at delta 0\.00001 \(32 steps, q = 0\.0625\)/);
    const spent = Number(result.stdout.match(/privacy spent: epsilon (\d+\.\d+) at delta 0\.00001/)[1]);
    expect(spent).toBeLessThanOrEqual(8);
    expect(spent).toBeGreaterThan(7.9);
    expect(Number(result.stdout.match(/test accuracy: (0\.\d+)/)[1])).toBeGreaterThan(0.5);
  });

  it('the custom loop trains with minimizeAsync', () => {
    const result = run([join(here, 'custom-loop.mjs'), '--epochs', '1']);
    expect(result.status, result.stderr).toBe(0);
    const accuracy = Number(result.stdout.match(/test accuracy (0\.\d+)/)[1]);
    expect(accuracy).toBeGreaterThan(0.8);
  });

  it.skipIf(!native.available)(`the demo on the pure-JS backend (--backend cpu) reaches the same accuracy as on tfjs-node${native.available ? '' : ` (skipped: ${native.reason})`}`, () => {
    const dir = scratchDir('braid-demo-');
    const summaries = ['cpu', 'node'].map((backend) => {
      const result = run([join(here, 'mnist', 'mlp.mjs'), '--backend', backend, '--epochs', '1', '--json', join(dir, `${backend}.json`)]);
      expect(result.status, result.stderr).toBe(0);
      return JSON.parse(readFileSync(join(dir, `${backend}.json`), 'utf8'));
    });
    expect(summaries.map((s) => s.backend)).toEqual(['cpu', 'tensorflow']);
    // Seeded: the same rows in the same order; the backends' kernels round differently, not more.
    expect(Math.abs(summaries[0].accuracy - summaries[1].accuracy)).toBeLessThan(0.01);
    // One epoch: 0.8887 on both here (the default five reach >= 0.92, the first test).
    expect(summaries[0].accuracy).toBeGreaterThan(0.85);
  });

  it('the CNN runs on the pure-JS backend (one step on each rank: its convolution gradients are slow there)', () => {
    const result = run([join(here, 'mnist', 'cnn.mjs'), '--backend', 'cpu', '--epochs', '1', '--train-rows', '16', '--test-rows', '16', '--batch', '8']);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/backend cpu/);
    expect(result.stdout).toMatch(/test accuracy: 0\.\d{4}/);
  });

  it.skipIf(!native.available)(`the CNN trains its default 8 epochs of 8,500 digits on tfjs-node to >= 0.95${native.available ? '' : ` (skipped: ${native.reason})`}`, () => {
    const json = join(scratchDir('braid-cnn-'), 'result.json');
    const result = run([join(here, 'mnist', 'cnn.mjs'), '--json', json]);
    expect(result.status, result.stderr).toBe(0);
    const summary = JSON.parse(readFileSync(json, 'utf8'));
    expect(summary.backend).toBe('tensorflow');
    expect(summary.history.val_acc).toHaveLength(8);
    // Dropout's masks are unseeded: 0.973, 0.979 and 0.981 in three runs here (the benchmark
    // figure in the README is >= 0.97); the test leaves room for a run's luck, not for a broken
    // model (ten classes: chance is 0.1).
    expect(summary.accuracy).toBeGreaterThanOrEqual(0.95);
  });
});

const unavailable = netnsUnavailable();
describe.skipIf(unavailable !== undefined)(`the demo on 2 hosts x 2 ranks (the namespace test bed)${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let hosts;
  beforeAll(() => {
    hosts = createHosts(2);
  });
  afterAll(() => hosts?.destroy());

  it('reaches test accuracy >= 0.92 with braid run -H h0:2,h1:2 --agent', () => {
    const json = join(scratchDir('braid-demo-hosts-'), 'result.json');
    const cmd = hosts.on(0, [process.execPath, braid, 'run', '-np', '4', ...hosts.braidRunArgs('h0:2,h1:2'), join(here, 'mnist', 'mlp.mjs'), '--json', json]);
    const result = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8', env: { ...process.env, BRAID_PROGRESS: 'lines' }, timeout: 600_000 });
    expect(result.status, result.stderr).toBe(0);
    const summary = JSON.parse(readFileSync(json, 'utf8'));
    expect(summary.size).toBe(4);
    expect(summary.accuracy).toBeGreaterThanOrEqual(0.92);
  });
});
