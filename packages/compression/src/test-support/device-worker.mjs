// One rank of allReduceCompressed on DeviceBuffers: `mpirun -np N node device-worker.mjs <dir>`,
// with BRAID_DEVICE=host (host memory standing in for the GPU) or on a GPU (scripts/gpu-check.sh).
// Every compressor, sum and avg, with and without error feedback, three steps each (seeds,
// residuals and PowerSGD's warm start carry over), awaited and blocking; each step's result is
// compared with the same call on a Float32Array, and its bits across ranks by digest.
import { createHash } from 'node:crypto';

import { init } from '@braid/collectives';
import { report } from '@braid/test-support/mpirun';

import { loadAddon } from '@braid/native';

import { deviceHeaderOf } from '../../dist/compressors.js';
import { allReduceCompressed, allReduceCompressedSync, createCompressor, ErrorFeedback } from '../../dist/index.js';

const outDir = process.argv.at(-1);
const comm = await init();
const { rank, size } = comm;
const device = comm.device;

function input(n, r, step) {
  let s = (r * 7919 + step * 104729 + 13) >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return ((s >>> 8) / 16777216 - 0.5) * 4;
  });
}
const bytesOf = (x) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
const digest = (x) => createHash('sha256').update(bytesOf(x)).digest('hex').slice(0, 16);
const sameBits = (a, b) => a.length === b.length && Buffer.compare(bytesOf(a), bytesOf(b)) === 0;
const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const message = (err) => `${err.code ?? err.name}: ${err.message}`;

// Where the CPU promises the bits, the device gives them: everywhere on the host stand-in; on a
// GPU the sums behind QSGD's norm and sign's scale are the GPU's own (a fixed tree), and NCCL
// adds fp16 / bf16 half words in its own order.
const onGpu = device.kind === 'cuda';
const exactKinds = new Set(onGpu ? ['none', 'topk', 'randomk', 'int8', 'powersgd'] : ['none', 'fp16', 'bf16', 'topk', 'randomk', 'qsgd', 'int8', 'sign', 'powersgd']);
// The host stand-in's half-precision all-reduce is the host 'auto', which Float32Arrays get by asking for it.
const hostOptions = (name) => (name === 'fp16' || name === 'bf16' ? { algorithm: 'auto' } : {});

const cases = [];
const n = 4097; // 17 x 241: not a multiple of 8, 16 or int8's block; PowerSGD's near-square shape pads it
for (const [name, options] of [
  ['none', {}],
  ['fp16', {}],
  ['bf16', {}],
  ['topk', { ratio: 0.01 }],
  ['randomk', { ratio: 0.05, seed: 3 }],
  ['qsgd', { levels: 100, seed: rank + 1 }],
  ['qsgd', { levels: 1000, seed: 2 }],
  ['int8', { blockSize: 128 }],
  ['sign', {}],
  ['powersgd', { rank: 3, seed: 9 }],
  ['powersgd', { rank: 2, shape: [241, 17], seed: 4 }],
]) {
  for (const op of ['sum', 'avg']) {
    for (const feedback of [false, true]) {
      for (const blocking of [false, true]) {
        const wrap = (c) => (feedback ? new ErrorFeedback(c) : c);
        const onDevice = wrap(createCompressor(name, options));
        const onHost = wrap(createCompressor(name, options));
        const buffer = device.alloc('float32', n);
        const label = `${name}${options.levels ? `/${options.levels}` : ''}${options.shape ? '/shape' : ''} ${op}${feedback ? ' +ef' : ''}${blocking ? ' sync' : ''}`;
        const c = { label, steps: [], wrong: 0 };
        for (let step = 0; step < 3; step++) {
          const x = input(n, rank, step);
          buffer.upload(x);
          const result = blocking ? allReduceCompressedSync(comm, buffer, onDevice, { op }) : await allReduceCompressed(comm, buffer, onDevice, { op });
          if (result !== buffer) c.wrong++;
          const got = buffer.download();
          const want = await allReduceCompressed(comm, x, onHost, { op, ...hostOptions(name) });
          const exact = exactKinds.has(name);
          const close = maxDiff(got, want) <= (name === 'sign' || name === 'qsgd' ? 1e-3 : 2e-2) * Math.max(1, ...want.map(Math.abs));
          if (exact ? !sameBits(got, want) : !close) c.wrong++;
          if (feedback && name !== 'none') {
            const residual = onDevice.deviceResidual.download();
            if (exact ? !sameBits(residual, onHost.residual) : maxDiff(residual, onHost.residual) > 1e-2 * Math.max(1, ...x.map(Math.abs))) c.wrong++;
          }
          c.steps.push(digest(got));
        }
        buffer.free();
        if (feedback) onDevice.deviceResidual?.free();
        cases.push(c);
      }
    }
  }
}

// The payloads made on the device are the CPU's format: byte for byte where the CPU promises the
// bits, and always ones decompress() takes (header, sections, checksum).
const addon = loadAddon();
const payloads = {};
{
  const x = input(n, rank, 7);
  const buffer = device.alloc('float32', n).upload(x);
  for (const [name, options] of [['topk', { ratio: 0.01 }], ['randomk', { ratio: 0.05, seed: 3 }], ['qsgd', { levels: 100, seed: 1 }], ['qsgd', { levels: 1000, seed: 1 }], ['int8', { blockSize: 128 }], ['sign', {}]]) {
    const cpu = createCompressor(name, options).compress(x).payload;
    const made = createCompressor(name, options);
    const bytes = made.payloadBytes(n);
    const payload = device.alloc('uint8', bytes);
    addon.deviceEncode(deviceHeaderOf(made, n), buffer.memoryFor('test'), n, null, payload.memoryFor('test'), bytes);
    const back = payload.download();
    payload.free();
    let decodes;
    try {
      decodes = sameBits(made.decompress(back), createCompressor(name, options).decompress(cpu)) ? 'same values' : 'other values';
    } catch (err) {
      decodes = message(err);
    }
    payloads[`${name}${options.levels ? `/${options.levels}` : ''}`] = { sameBytes: sameBits(back, cpu), decodes };
  }
  buffer.free();
}

// A payload altered after it was made, or made with other options, fails the sum by name.
const corrupt = {};
{
  const x = input(n, rank, 8);
  const buffer = device.alloc('float32', n).upload(x);
  const made = createCompressor('qsgd', { levels: 100 });
  const header = deviceHeaderOf(made, n);
  const bytes = made.payloadBytes(n);
  const payload = device.alloc('uint8', bytes);
  addon.deviceEncode(header, buffer.memoryFor('test'), n, null, payload.memoryFor('test'), bytes);
  const gathered = await comm.allGather(payload);
  const last = size - 1;
  const sum = () => {
    try {
      addon.deviceDecodeSum(header, gathered.memoryFor('test'), size, bytes, buffer.memoryFor('test'), n, 1);
      return 'OK';
    } catch (err) {
      return message(err);
    }
  };
  corrupt.intact = sum();
  const original = gathered.download(new Uint8Array(bytes), last * bytes);
  const flipped = original.slice();
  flipped[40] ^= 4;
  gathered.upload(flipped, last * bytes);
  corrupt.flipped = sum();
  const other = createCompressor('qsgd', { levels: 101 });
  addon.deviceEncode(deviceHeaderOf(other, n), buffer.memoryFor('test'), n, null, payload.memoryFor('test'), bytes);
  gathered.upload(payload.download(), last * bytes);
  corrupt.otherOptions = sum();
  for (const b of [buffer, payload, gathered]) b.free();
}

// Misuse, refused by name before any collective.
const refusals = {};
const f64 = device.alloc('float64', 4);
const freed = device.alloc('float32', 4);
freed.free();
const f32 = device.alloc('float32', 4);
const mixed = new ErrorFeedback(createCompressor('topk'));
await allReduceCompressed(comm, new Float32Array(4), mixed);
for (const [key, call] of [
  ['float64', () => allReduceCompressedSync(comm, f64, createCompressor('topk'))],
  ['freed', () => allReduceCompressedSync(comm, freed, createCompressor('topk'))],
  ['algorithm', () => allReduceCompressedSync(comm, f32, createCompressor('fp16'), { algorithm: 'ring' })],
  ['mixed', () => allReduceCompressedSync(comm, f32, mixed)],
]) {
  try {
    call();
    refusals[key] = 'OK';
  } catch (err) {
    refusals[key] = message(err);
  }
}
f64.free();
f32.free();

report(outDir, { rank, size, kind: device.kind, cases, payloads, corrupt, refusals });
await comm.close();
