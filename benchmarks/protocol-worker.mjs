// One rank of a protocol run through @braid/collectives (started by protocols.mjs under mpirun):
// the protocol of braid_protocol_allreduce (OSU's osu_allreduce, or nccl-tests' all_reduce_perf)
// with `await comm.allReduce(buf)` (auto) or allReduceSync in place of MPI_Allreduce. Nothing runs
// before the protocol's own warm-up: what a fresh process gets.
//   node protocol-worker.mjs --json out.json [--protocol osu|nccl-tests] [--min-bytes 4]
//                            [--max-bytes 67108864] [--sync]
import { writeFileSync } from 'node:fs';

import { init } from '@braid/collectives';

import { commandLine } from './common.mjs';

const { args, opt } = commandLine();
const protocol = opt('--protocol', 'osu');
const minBytes = Number(opt('--min-bytes', 4));
const maxBytes = Number(opt('--max-bytes', 64 * 2 ** 20));
const sync = args.includes('--sync');
// The constants of braid_protocol_allreduce (native/bench/protocol_allreduce.cc).
const NCCL_TESTS_WARMUP = 5;
const NCCL_TESTS_ITERATIONS = 20;

const comm = await init();
const now = () => Number(process.hrtime.bigint()) / 1e3;

async function osuSize(bytes) {
  const buf = new Float32Array(bytes / 4).fill(1);
  const small = bytes <= 8192;
  const warmup = small ? 200 : 10;
  const iterations = small ? 1000 : 100;
  let total = 0;
  await comm.barrier();
  for (let i = 0; i < warmup + iterations; i++) {
    const start = now();
    if (sync) comm.allReduceSync(buf);
    else await comm.allReduce(buf);
    const elapsed = now() - start;
    if (i >= warmup) total += elapsed;
    await comm.barrier();
  }
  return total / iterations;
}

// In place, as braid_protocol_allreduce's nccl-tests protocol: zeros, which stay zeros.
const inPlace = new Float32Array(maxBytes / 4);
async function inPlaceCalls(bytes, calls) {
  const buf = inPlace.subarray(0, bytes / 4);
  if (sync) for (let i = 0; i < calls; i++) comm.allReduceSync(buf);
  else for (let i = 0; i < calls; i++) await comm.allReduce(buf);
}
async function ncclTestsSize(bytes) {
  await comm.barrier();
  const start = now();
  await inPlaceCalls(bytes, NCCL_TESTS_ITERATIONS);
  return (now() - start) / NCCL_TESTS_ITERATIONS;
}

if (protocol === 'nccl-tests') {
  await inPlaceCalls(maxBytes, NCCL_TESTS_WARMUP);
  await inPlaceCalls(minBytes, NCCL_TESTS_WARMUP);
} else if (protocol !== 'osu') {
  throw new Error(`--protocol must be osu or nccl-tests; got ${protocol}`);
}
const rows = [];
for (let bytes = minBytes; bytes <= maxBytes; bytes *= 2) {
  const mine = new Float64Array([protocol === 'osu' ? await osuSize(bytes) : await ncclTestsSize(bytes)]);
  comm.allReduceSync(mine, { algorithm: 'mpi' });
  rows.push({ bytes, avgUs: mine[0] / comm.size });
}
if (comm.rank === 0) writeFileSync(opt('--json'), JSON.stringify({ ranks: comm.size, protocol, sync, results: rows }));
await comm.close();
