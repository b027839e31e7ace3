// Issue 14's staged target: an all-reduce of 64 MiB of host memory through NCCL (staged through
// pinned memory, algorithm 'nccl') against the copy bound, the time to move the same bytes to the
// GPU and back (DeviceBuffer upload + download, synchronous copies from pageable memory: a bound
// that staging through pinned memory can approach), medians of 10 after a warm-up, one rank.
// Without a GPU it says so. scripts/gpu-check.sh runs it.
//   node benchmarks/gpu-staged.mjs [--mib 64]
import { init } from '@braid/collectives';

import { medianMs } from './common.mjs';

const mibArg = process.argv.indexOf('--mib');
const mib = mibArg > 0 ? Number(process.argv[mibArg + 1]) : 64;
const comm = await init();
const device = comm.device;
if (device.kind !== 'cuda') {
  console.log(JSON.stringify({ gpu: false, why: device.reason ?? `the device is ${device.kind}` }));
  await comm.close();
  process.exit(0);
}
const n = (mib << 20) / 4;
const host = new Float32Array(n).fill(1);
const d = device.alloc('float32', n);
const stagedMs = await medianMs(() => comm.allReduce(host, { algorithm: 'nccl' }));
const copyMs = await medianMs(async () => {
  d.upload(host);
  d.download(host);
});
const deviceMs = await medianMs(() => comm.allReduce(d));
d.free();
console.log(JSON.stringify({ mib, stagedMs, copyBoundMs: copyMs, ratio: copyMs / stagedMs, deviceAllReduceMs: deviceMs, exact: host.every((v) => v === 1) }));
await comm.close();
