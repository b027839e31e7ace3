// One rank of a compressed all-reduce test: `mpirun -np N node worker.mjs <dir>`.
import { createHash } from 'node:crypto';

import { init } from '@braid/collectives';
import { report } from '@braid/test-support/mpirun';

import { allReduceCompressed, allReduceCompressedSync, createCompressor, ErrorFeedback } from '../../dist/index.js';

const outDir = process.argv.at(-1);
const comm = await init();
const { rank, size } = comm;

function input(n, r) {
  let s = (r * 7919 + 13) >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return ((s >>> 8) / 16777216 - 0.5) * 4;
  });
}
const digest = (x) => createHash('sha256').update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength)).digest('hex').slice(0, 16);

const n = 10_001;
const exact = new Float64Array(n);
for (let r = 0; r < size; r++) input(n, r).forEach((v, i) => (exact[i] += v));
const cases = {};
for (const [name, options] of [
  ['none', {}],
  ['fp16', {}],
  ['bf16', {}],
  ['topk', { ratio: 0.01 }],
  ['topk', { ratio: 1 }],
  ['randomk', { ratio: 0.05, seed: 3 }],
  ['qsgd', { levels: 64, seed: rank + 1 }],
  ['int8', { blockSize: 128 }],
  ['sign', {}],
  ['powersgd', { rank: 4, seed: 9 }],
]) {
  for (const op of ['sum', 'avg']) {
    for (const feedback of [false, true]) {
      const compressor = createCompressor(name, options);
      const x = input(n, rank);
      await allReduceCompressed(comm, x, feedback ? new ErrorFeedback(compressor) : compressor, { op });
      // The blocking form, from a fresh compressor of the same options, gives the same bits.
      const y = input(n, rank);
      const again = createCompressor(name, options);
      allReduceCompressedSync(comm, y, feedback ? new ErrorFeedback(again) : again, { op });
      const want = Float64Array.from(exact, (v) => (op === 'avg' ? v / size : v));
      let err = 0;
      let ref = 0;
      x.forEach((v, i) => {
        err += (v - want[i]) ** 2;
        ref += want[i] ** 2;
      });
      cases[`${name}${options.ratio === 1 ? '(ratio 1)' : ''} ${op}${feedback ? ' +ef' : ''}`] = { digest: digest(x), syncDigest: digest(y), relativeError: Math.sqrt(err / ref), maxExact: Math.max(...x.map((v, i) => Math.abs(v - want[i]))) };
    }
  }
}
report(outDir, { rank, size, cases });
await comm.close();
