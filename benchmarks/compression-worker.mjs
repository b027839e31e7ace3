// One rank of the compressed all-reduce benchmark: a 64 MiB float32 gradient (16M values)
// reduced with each compressor and uncompressed, in alternating rounds; median times.
import { writeFileSync } from 'node:fs';

import { init } from '@braid/collectives';
import { allReduceCompressed, createCompressor, ErrorFeedback } from '@braid/compression';

import { median } from './common.mjs';

const json = process.argv[2];
const rounds = Number(process.argv[3] ?? 5);
const comm = await init();
const n = 16 << 20;
const source = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.001 + comm.rank) * 0.01);
const configs = [
  ['uncompressed (allReduce)', null],
  ['fp16', createCompressor('fp16')],
  ['bf16', createCompressor('bf16')],
  ['topk 1% + EF', new ErrorFeedback(createCompressor('topk', { ratio: 0.01 }))],
  ['topk 0.1% + EF', new ErrorFeedback(createCompressor('topk', { ratio: 0.001 }))],
  ['randomk 1%', createCompressor('randomk', { ratio: 0.01, seed: 1 })],
  ['qsgd s=127', createCompressor('qsgd', { levels: 127, seed: 2 })],
  ['int8', createCompressor('int8')],
  ['sign + EF', new ErrorFeedback(createCompressor('sign'))],
  ['powersgd r=4 + EF', new ErrorFeedback(createCompressor('powersgd', { rank: 4, seed: 3 }))],
];
const times = configs.map(() => []);
const x = new Float32Array(n);
for (let round = 0; round < rounds; round++) {
  for (let c = 0; c < configs.length; c++) {
    x.set(source);
    await comm.barrier();
    const t0 = performance.now();
    if (configs[c][1] === null) await comm.allReduce(x, { op: 'avg' });
    else await allReduceCompressed(comm, x, configs[c][1], { op: 'avg' });
    times[c].push(performance.now() - t0);
  }
}
// Bytes this rank puts on the wire per call: what the collective moves for it.
const wire = (name, compressor) => {
  if (compressor === null) return (2 * (comm.size - 1) / comm.size) * n * 4;
  if (name.startsWith('fp16') || name.startsWith('bf16')) return (2 * (comm.size - 1) / comm.size) * n * 2;
  if (name.startsWith('powersgd')) {
    const rows = Math.ceil(Math.sqrt(n));
    const cols = Math.ceil(n / rows);
    return (2 * (comm.size - 1) / comm.size) * 4 * 4 * (rows + cols);
  }
  return (comm.size - 1) * compressor.payloadBytes(n); // all-gather: its payload to every other rank
};
const rows = configs.map(([name, compressor], c) => ({ name, ms: median(times[c]), wireBytes: wire(name, compressor) }));
if (comm.rank === 0 && json) writeFileSync(json, JSON.stringify({ size: comm.size, elements: n, rounds, rows }, null, 1));
await comm.close();
