// Pieces that need no MPI job: sharding, the mpirun command line, the progress display.
import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

import { packHeader, setMaxBufferBytesForTests, unpackCheckpoint } from './checkpoint.js';
import { fit } from './fit.js';
import { mpirunCommand, parseRunArgs, preflightCommand, preflightProblem, shellLine } from './launch.js';
import { formatDuration, Progress } from './progress.js';
import { epochBatches, permutation, validationRows } from './sharding.js';

describe('sharding', () => {
  it('permutations are seeded and complete', () => {
    const p = permutation(1000, 42);
    expect(Array.from(p).sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(Array.from(permutation(1000, 42))).toEqual(Array.from(p));
    expect(Array.from(permutation(1000, 43))).not.toEqual(Array.from(p));
  });

  it.each([
    [101, 3, 8],
    [100, 4, 10],
    [5, 4, 2],
    [1, 3, 4],
    [97, 2, 97],
  ])('%i rows, %i ranks, batch %i: same batch count and sizes on every rank, every row used', (rows, size, batchSize) => {
    const shards = Array.from({ length: size }, (_, rank) => epochBatches({ rows, rank, size, batchSize, seed: 7, epoch: 2, shuffle: true }));
    const shapes = shards.map((s) => s.map((b) => b.length));
    for (const s of shapes) expect(s).toEqual(shapes[0]);
    const seen = new Set(shards.flat().flatMap((b) => Array.from(b)));
    expect(seen.size).toBe(rows);
    const perRank = Math.ceil(rows / size);
    expect(shapes[0]!.reduce((a, b) => a + b, 0)).toBe(perRank);
    // Padding repeats at most size-1 rows.
    expect(shards.flat().reduce((n, b) => n + b.length, 0) - rows).toBeLessThan(size);
  });

  it('epochs differ, the same epoch repeats; dropRemainder drops the short batch', () => {
    const a = epochBatches({ rows: 50, rank: 0, size: 2, batchSize: 10, seed: 1, epoch: 0, shuffle: true });
    const b = epochBatches({ rows: 50, rank: 0, size: 2, batchSize: 10, seed: 1, epoch: 1, shuffle: true });
    const again = epochBatches({ rows: 50, rank: 0, size: 2, batchSize: 10, seed: 1, epoch: 0, shuffle: true });
    expect(a.map((x) => Array.from(x))).toEqual(again.map((x) => Array.from(x)));
    expect(a.map((x) => Array.from(x))).not.toEqual(b.map((x) => Array.from(x)));
    expect(a.map((x) => x.length)).toEqual([10, 10, 5]);
    expect(epochBatches({ rows: 50, rank: 1, size: 2, batchSize: 10, seed: 1, epoch: 0, shuffle: true, dropRemainder: true }).map((x) => x.length)).toEqual([10, 10]);
    expect(Array.from(epochBatches({ rows: 6, rank: 1, size: 2, batchSize: 3, seed: 1, epoch: 0, shuffle: false })[0]!)).toEqual([1, 3, 5]);
  });

  it('an epoch resumed on another number of ranks deals the rows not yet trained: every row once across both', () => {
    const rows = 120;
    const common = { rows, seed: 5, epoch: 1, shuffle: true };
    // 3 ranks x batches of 4: 2 batches trained, then 2 ranks x batches of 6 from there.
    const before = [0, 1, 2].flatMap((rank) => epochBatches({ ...common, rank, size: 3, batchSize: 4 }).slice(0, 2).flatMap((b) => Array.from(b)));
    const position = 2 * 4 * 3;
    const after = [0, 1].flatMap((rank) => epochBatches({ ...common, rank, size: 2, batchSize: 6, startPosition: position }).flatMap((b) => Array.from(b)));
    expect(before).toHaveLength(position);
    expect([...before, ...after].sort((a, b) => a - b)).toEqual(Array.from({ length: rows }, (_, i) => i));
    // From the position an uninterrupted run reached, on the same ranks: the batches it trains next.
    for (const rank of [0, 1, 2]) {
      const whole = epochBatches({ ...common, rank, size: 3, batchSize: 4 }).slice(2).map((b) => Array.from(b));
      expect(epochBatches({ ...common, rank, size: 3, batchSize: 4, startPosition: position }).map((b) => Array.from(b))).toEqual(whole);
    }
    expect(() => epochBatches({ ...common, rank: 0, size: 2, batchSize: 6, startPosition: rows })).toThrow(/startPosition must be an integer in \[0, 120\)/);
  });

  it('validation shards are disjoint and cover every row once', () => {
    const all = [0, 1, 2].flatMap((r) => Array.from(validationRows(10, r, 3)));
    expect(all.sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, i) => i));
  });
});

describe('braid run', () => {
  it('builds the mpirun command: root, oversubscription, hosts, timeline, environment', () => {
    const plan = parseRunArgs(['-np', '4', '--timeline', '/tmp/t.json', 'train.mjs', '--epochs', '3']);
    const cmd = mpirunCommand(plan, { PATH: '/usr/bin', BRAID_SHM: 'off', HOME: '/root' }, { isRoot: true, isTTY: true, cores: 2, node: '/usr/bin/node' });
    // A Node.js script runs after the module that gives TensorFlow the rank's share of the cores.
    const preload = new URL('./preload-threads.js', import.meta.url).href;
    expect(shellLine(cmd)).toBe(
      `mpirun -np 4 --oversubscribe --bind-to none --map-by slot --mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3 -x BRAID_PROGRESS -x BRAID_SHM -x BRAID_TIMELINE -x PATH /usr/bin/node --import ${preload} train.mjs --epochs 3`,
    );
    expect(cmd.env.OMPI_ALLOW_RUN_AS_ROOT).toBe('1');
    expect(cmd.env.OMPI_ALLOW_RUN_AS_ROOT_CONFIRM).toBe('1');
    expect(cmd.env.BRAID_TIMELINE).toBe('/tmp/t.json');
    expect(cmd.env.BRAID_PROGRESS).toBe('bar');

    // Asked for, --oversubscribe goes to mpirun once, with hosts too.
    const asked = mpirunCommand(parseRunArgs(['-np', '6', '-H', 'a:2,b:2', '--oversubscribe', 'x.mjs']), {}, { isRoot: false, isTTY: false, cores: 2, node: '/usr/bin/node' });
    expect(asked.args.filter((a) => a === '--oversubscribe')).toHaveLength(1);
    expect(mpirunCommand(parseRunArgs(['-np', '4', '--oversubscribe', 'x.mjs']), {}, { isRoot: false, isTTY: false, cores: 2, node: '/usr/bin/node' }).args.filter((a) => a === '--oversubscribe')).toHaveLength(1);
    const hosts = mpirunCommand(parseRunArgs(['-np', '8', '-H', 'a:4,b:4', 'python3', 'x.py']), {}, { isRoot: false, isTTY: false, cores: 2 });
    expect(hosts.args).toEqual(['-np', '8', '-H', 'a:4,b:4', '--bind-to', 'none', '--map-by', 'slot', '--mca', 'oob_tcp_keepalive_time', '10', '--mca', 'oob_tcp_keepalive_intvl', '2', '--mca', 'oob_tcp_keepalive_probes', '3', '-x', 'BRAID_PROGRESS', 'python3', 'x.py']);
    expect(hosts.env.OMPI_ALLOW_RUN_AS_ROOT).toBeUndefined();
    expect(hosts.env.BRAID_PROGRESS).toBe('lines');  // braid run's output goes to a log
    expect(mpirunCommand(plan, { BRAID_PROGRESS: 'none' }, { isRoot: false, isTTY: true, cores: 2 }).env.BRAID_PROGRESS).toBe('none');
    const file = mpirunCommand(parseRunArgs(['-np', '2', '--hostfile', 'hosts.txt', '--mpi-args', '--mca btl self,vader', 'a.js']), {}, { isRoot: false, isTTY: false, cores: 2, node: 'node' });
    expect(file.args).toEqual(['-np', '2', '--hostfile', 'hosts.txt', '--bind-to', 'none', '--map-by', 'slot', '--mca', 'oob_tcp_keepalive_time', '10', '--mca', 'oob_tcp_keepalive_intvl', '2', '--mca', 'oob_tcp_keepalive_probes', '3', '-x', 'BRAID_PROGRESS', '--mca', 'btl', 'self,vader', 'node', '--import', expect.stringMatching(/^file:.*\/preload-threads.js$/), 'a.js']);
  });

  it('preflight: checks Node.js and the script on every host, and says which host lacks which', () => {
    const plan = parseRunArgs(['-np', '4', '-H', 'a:2,b:2', 'train.mjs', '--epochs', '3']);
    const command = preflightCommand(plan, ['a', 'b'], {}, { isRoot: false, node: '/opt/node/bin/node' });
    expect(command.args.slice(-3)).toEqual(['sh', '/opt/node/bin/node', 'train.mjs']);
    expect(preflightCommand(parseRunArgs(['-np', '2', '-H', 'a:2', 'python3', 'x.py']), ['a'], {}, { isRoot: false, node: 'n' }).args.slice(-2)).toEqual(['n', '']);
    const out = (a: string, b: string) => `braid-preflight ${a} a\nbraid-preflight ${b} b\n`;
    expect(preflightProblem(['a', 'b'], 0, out('ok', 'ok'), '', '/opt/node/bin/node', 'train.mjs')).toBeUndefined();
    expect(preflightProblem(['a', 'b'], 0, out('ok', 'no-script'), '', '/opt/node/bin/node', '/data/train.mjs')).toBe(
      'the script /data/train.mjs is not on host b: every rank runs it by the same path, so copy it there or put it on a folder every host shares',
    );
    expect(preflightProblem(['a', 'b'], 0, out('no-script', 'no-script'), '', '/opt/node/bin/node', 'train.mjs')).toBe(
      `the script train.mjs is not on hosts a, b: every rank runs it by the same path (from the folder braid run starts in, ${process.cwd()}), so copy it there or put it on a folder every host shares`,
    );
    // Node.js missing comes first: without it the script cannot run either.
    expect(preflightProblem(['a', 'b'], 0, out('missing', 'no-script'), '', '/opt/node/bin/node', 'train.mjs')).toMatch(/^Node.js is not at \/opt\/node\/bin\/node on host a:/);
  });

  it('says what is wrong with the arguments', () => {
    expect(() => parseRunArgs(['train.mjs'])).toThrow(/-np N/);
    expect(() => parseRunArgs(['-np', 'two', 'x.js'])).toThrow(/positive integer; got "two"/);
    expect(() => parseRunArgs(['-np', '2'])).toThrow(/name the script/);
    expect(() => parseRunArgs(['-np', '2', '--bogus', 'x.js'])).toThrow(/unknown option --bogus/);
    expect(() => parseRunArgs(['-np', '2', '-H', 'a:2', '--hostfile', 'f', 'x.js'])).toThrow(/either -H or --hostfile/);
    expect(() => parseRunArgs(['-np', '2', '-H', 'a:two', 'x.js'])).toThrow(/host:slots/);
    expect(() => parseRunArgs(['-np'])).toThrow(/-np needs a value/);
    expect(() => parseRunArgs(['-np', '2', '--bind-to', 'banana', 'x.js'])).toThrow(/--bind-to takes none, core/);
    expect(mpirunCommand(parseRunArgs(['-np', '2', '--bind-to', 'core', 'x.js']), {}, { isRoot: false, isTTY: false, cores: 2, node: 'node' }).args).toContain('core');
  });
});

describe('progress', () => {
  it('draws a bar in place and ends each epoch with a full line', () => {
    let out = '';
    const p = new Progress('bar', 2, 64, (t) => void (out += t));
    p.epochBegin();
    p.step(0, 1, 4, { loss: 0.5 });
    p.step(0, 4, 4, { loss: 0.25 });
    p.epochEnd(0, 4, { loss: 0.25, acc: 0.9 });
    expect(out).toMatch(/^\r\x1b\[Kepoch 1\/2 \[={5}>\s{18}\] 1\/4  \d+ samples\/s  loss 0\.5000  ETA \d+:\d\d/);
    expect(out).toMatch(/\[={24}\] 4\/4 .* ETA 0:00/);
    expect(out.endsWith('loss 0.2500  acc 0.9000\n')).toBe(true);
  });

  it('prints only epoch lines in a log, and nothing when off', () => {
    let out = '';
    const lines = new Progress('lines', 3, 10, (t) => void (out += t));
    lines.epochBegin();
    lines.step(0, 1, 2, { loss: 1 });
    lines.epochEnd(0, 2, { loss: 1 });
    expect(out).toMatch(/^epoch 1\/3  2 steps  [\d.]+ s  \d+ samples\/s  loss 1\.0000\n$/);
    let none = '';
    const off = new Progress('none', 3, 10, (t) => void (none += t));
    off.epochBegin();
    off.epochEnd(0, 2, { loss: 1 });
    expect(none).toBe('');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(65)).toBe('1:05');
  });
});

describe('checkpoint packing', () => {
  it('keeps lengths above 4 GiB (64-bit), where 32 bits wrapped', () => {
    const five = 5 * 2 ** 30 + 3;
    const header = packHeader([five, 1, 2 ** 32]);
    const view = new DataView(header.buffer);
    expect(Number(view.getBigUint64(0, true))).toBe(five);
    expect(Number(view.getBigUint64(16, true))).toBe(2 ** 32);
    // A header claiming 5 GiB does not fit a small buffer: refused, not read as (5 GiB mod 2^32).
    const packed = new Uint8Array(24 + 3 + 1 + 2);
    packed.set(packHeader([five, 1, 2]));
    expect(() => unpackCheckpoint(packed)).toThrow(/truncated or its lengths do not add up/);
  });

  it('refuses a checkpoint larger than one buffer with a clear error', async () => {
    const { writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { packCheckpoint } = await import('./checkpoint.js');
    const dir = scratchDir('braid-pack-');
    for (const f of ['model.json', 'weights.bin', 'state.json']) writeFileSync(join(dir, f), '0123456789');
    setMaxBufferBytesForTests(40);
    try {
      expect(() => packCheckpoint(dir)).toThrow(/holds 54 bytes, more than one buffer can hold/);
    } finally {
      setMaxBufferBytesForTests(2 ** 32);
    }
    expect(packCheckpoint(dir).length).toBe(54);
  });
});

describe('fit options', () => {
  it('refuses unknown keys, nested ones too, naming the nearest known one', async () => {
    const model = {} as never;
    const data = {} as never;
    await expect(fit(model, data, { epoch: 2 } as never)).rejects.toThrow(/fit: unknown option 'epoch'; did you mean 'epochs'\?/);
    await expect(fit(model, data, { earlyStopping: { patiance: 2 } } as never)).rejects.toThrow(/fit: earlyStopping: unknown option 'patiance'; did you mean 'patience'\?/);
    await expect(fit(model, data, { checkpointEvery: { step: 2 } } as never)).rejects.toThrow(/did you mean 'steps'\?/);
    await expect(fit(model, data, { progress: 'off' } as never)).rejects.toThrow("fit: progress must be one of 'auto', 'bar', 'lines', 'none'; got \"off\"");
  });
});
