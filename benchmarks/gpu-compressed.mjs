// allReduceCompressed on a DeviceBuffer against the same call on a Float32Array, one rank: what
// making, gathering and summing the payloads where the gradient lives saves over the CPU path
// (which would first have to download the gradient: that copy is counted too, upload and
// download, as a training step on a GPU would pay it). Medians of 10 after a warm-up, per
// compressor, 16M floats by default. Runs on a GPU (scripts/gpu-check.sh) or, with
// BRAID_DEVICE=host, on host memory (where the two do the same work).
//   node benchmarks/gpu-compressed.mjs [--floats 16777216]
import { init } from '@braid/collectives';
import { allReduceCompressed, createCompressor } from '@braid/compression';

import { medianMs } from './common.mjs';

const floatsArg = process.argv.indexOf('--floats');
const n = floatsArg > 0 ? Number(process.argv[floatsArg + 1]) : 16 << 20;
const comm = await init();
const device = comm.device;
if (device.kind === 'none') {
  console.log(JSON.stringify({ gpu: false, why: device.reason }));
  await comm.close();
  process.exit(0);
}
let s = 11;
const values = Float32Array.from({ length: n }, () => {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  return (s >>> 8) / 16777216 - 0.5;
});
const buffer = device.alloc('float32', n);
const host = new Float32Array(n);
const rows = [];
for (const [name, options] of [['topk', { ratio: 0.01 }], ['int8', {}], ['qsgd', { levels: 127 }], ['fp16', {}]]) {
  const onDevice = createCompressor(name, options);
  const onHost = createCompressor(name, options);
  const deviceMs = await medianMs(async () => {
    buffer.upload(values);
    await allReduceCompressed(comm, buffer, onDevice, { op: 'avg' });
  });
  const hostMs = await medianMs(async () => {
    buffer.upload(values);
    buffer.download(host);
    await allReduceCompressed(comm, host, onHost, { op: 'avg' });
    buffer.upload(host);
  });
  rows.push({ compressor: name, deviceMs, hostMs, speedup: hostMs / deviceMs });
}
buffer.free();
console.log(JSON.stringify({ device: device.kind, floats: n, rows }));
await comm.close();
