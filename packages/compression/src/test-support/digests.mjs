// Prints a digest of every compressor's payload for fixed inputs, with the kernels BRAID_ISA
// selects: the test runs it once per ISA and expects the same bits from all.
import { createHash } from 'node:crypto';

import { createCompressor, kernelIsa } from '../../dist/index.js';

let s = 7;
const x = Float32Array.from({ length: 100_003 }, () => {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  return ((s >>> 8) / 16777216 - 0.5) * 10 ** ((s & 7) - 3);
});
x[5] = NaN;
x[6] = -0;
x[7] = Infinity;
const out = { isa: kernelIsa() };
for (const [name, options] of [['fp16', {}], ['bf16', {}], ['topk', { ratio: 0.01 }], ['randomk', { ratio: 0.01, seed: 1 }], ['qsgd', { levels: 100, seed: 2 }], ['qsgd', { levels: 1000, seed: 2 }], ['int8', {}], ['sign', {}], ['powersgd', { rank: 3, seed: 4 }]]) {
  const c = createCompressor(name, options);
  const finite = name === 'powersgd' || name === 'qsgd' || name === 'sign' ? x.map((v) => (Number.isFinite(v) ? v : 0)) : x;
  const { payload } = c.compress(finite);
  const back = c.decompress(payload);
  out[`${name}/${options.levels ?? ''}`] = createHash('sha256').update(payload).update(new Uint8Array(back.buffer)).digest('hex').slice(0, 16);
}
console.log(JSON.stringify(out));
