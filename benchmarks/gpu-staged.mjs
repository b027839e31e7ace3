// Issue 14's staged target: an all-reduce of 64 MiB of host memory through NCCL (staged through
// pinned memory, algorithm 'nccl') against the copy bound, the time to move the same bytes to the
// GPU and back (DeviceBuffer upload + download, synchronous copies from pageable memory: a bound
// that staging through pinned memory can approach), medians of 10 after a warm-up, one rank.
// Without a GPU it says so. scripts/gpu-check.sh runs it.
//   node benchmarks/gpu-staged.mjs [--mib 64]
import { init } from '@braid/collectives';

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
const median = (a) => a.sort((x, y) => x - y)[a.length >> 1];
const timed = async (fn) => {
  await fn();
  const t = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    await fn();
    t.push(performance.now() - t0);
  }
  return median(t);
};
const stagedMs = await timed(() => comm.allReduce(host, { algorithm: 'nccl' }));
const copyMs = await timed(async () => {
  d.upload(host);
  d.download(host);
});
const deviceMs = await timed(() => comm.allReduce(d));
d.free();
console.log(JSON.stringify({ mib, stagedMs, copyBoundMs: copyMs, ratio: copyMs / stagedMs, deviceAllReduceMs: deviceMs, exact: host.every((v) => v === 1) }));
await comm.close();
