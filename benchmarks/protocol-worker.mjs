// One rank of the OSU-protocol run through @braid/collectives (started by osu.mjs under mpirun):
// the protocol of braid_osu_allreduce (OSU's osu_allreduce) with `await comm.allReduce(buf)`
// (auto) or allReduceSync in place of MPI_Allreduce, each call timed alone, a barrier after
// each. Nothing runs before the first size's warm-up: what a fresh process gets.
//   node osu-worker.mjs --json out.json [--max-bytes 67108864] [--sync]
import { writeFileSync } from 'node:fs';

import { init } from '@braid/collectives';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const maxBytes = Number(opt('--max-bytes', 64 * 2 ** 20));
const sync = args.includes('--sync');
const comm = await init();
const now = () => Number(process.hrtime.bigint()) / 1e3;
const rows = [];
for (let bytes = 4; bytes <= maxBytes; bytes *= 2) {
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
  const mine = new Float64Array([total / iterations]);
  comm.allReduceSync(mine, { algorithm: 'mpi' });
  rows.push({ bytes, avgUs: mine[0] / comm.size });
}
if (comm.rank === 0) writeFileSync(opt('--json'), JSON.stringify({ ranks: comm.size, sync, results: rows }));
await comm.close();
