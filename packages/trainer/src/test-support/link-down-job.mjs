// A steady loop of ring all-reduces across hosts (the namespace test bed) while the test cuts a
// host's link, briefly or for good: node link-down-job.mjs <out-dir>, with TIMEOUT_MS and
// ITERATIONS in the environment. Ends with exit code 4 after an error.
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

import { init } from '@braid/collectives';

const outDir = process.argv[2];
const comm = await init({ timeoutMs: Number(process.env.TIMEOUT_MS), stallWarningMs: 1000 });
writeFileSync(join(outDir, `pid-${comm.rank}`), String(process.pid));
const buf = new Float32Array(1 << 14);
const iterations = Number(process.env.ITERATIONS);
let outcome = { code: 'OK' };
let wrong = 0;
let i = 0;
for (; i < iterations; i++) {
  if (i === 10) writeFileSync(join(outDir, `ready-${comm.rank}`), String(Date.now()));
  try {
    await comm.allReduce(buf.fill(comm.rank + 1), { algorithm: 'ring', name: 'grads' });
  } catch (err) {
    outcome = { code: err.code, message: err.message, at: Date.now() };
    break;
  }
  if (buf[0] !== (comm.size * (comm.size + 1)) / 2) wrong++;
  await new Promise((resolve) => setTimeout(resolve, 20));
}
writeFileSync(join(outDir, `rank-${comm.rank}.json`), JSON.stringify({ rank: comm.rank, outcome, iterations: i, wrong, host: hostname() }));
if (outcome.code !== 'OK') process.exit(4);
await comm.close();
