// Secure aggregation's cost against the plain all-reduce it wraps (issue 16: target < 2x the
// all-reduce at 1M floats). Each size: the plain float32 all-reduce (sum) and the secure one
// (fixed point, pairwise AES-CTR masks, int32 all-reduce, unmasking), alternated, medians of the
// timed calls.
//   node benchmarks/secure-aggregation.mjs [--np 2] [--sizes 65536,1048576,4194304] [--iters 30] [--kernel native|js]
import { commandLine, median, runUnderBraid } from './common.mjs';

const { opt } = commandLine();
runUnderBraid(import.meta.url, opt);

const { init } = await import('@braid/collectives');
const { SecureAggregator } = await import('@braid/strategies');
const comm = await init();
const sizes = opt('--sizes', '65536,1048576,4194304').split(',').map(Number);
const iters = Number(opt('--iters', '30'));
const kernel = opt('--kernel', undefined);
const agg = new SecureAggregator(comm, { scale: 2 ** 16, ...(kernel ? { kernel } : {}) });
const rows = [];
for (const n of sizes) {
  const values = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.001 + comm.rank));
  const plain = new Float32Array(n);
  const secure = new Float32Array(n);
  const times = { plain: [], secure: [] };
  for (let i = 0; i < iters + 3; i++) {
    plain.set(values);
    await comm.barrier();
    let t = performance.now();
    await comm.allReduce(plain);
    const tPlain = performance.now() - t;
    secure.set(values);
    await comm.barrier();
    t = performance.now();
    await agg.allReduce(secure);
    const tSecure = performance.now() - t;
    if (i >= 3) {
      times.plain.push(tPlain);
      times.secure.push(tSecure);
    }
  }
  const [p, s] = [median(times.plain), median(times.secure)];
  rows.push({ floats: n, plainMs: p, secureMs: s, ratio: s / p });
}
if (comm.rank === 0) {
  console.log(`secure aggregation at np=${comm.size} (medians of ${iters} calls each, alternated with the plain all-reduce)`);
  console.log(`masking: ${agg.kernel}`);
  console.log('floats     plain ms  secure ms  ratio');
  for (const r of rows) console.log(`${String(r.floats).padEnd(10)} ${r.plainMs.toFixed(3).padStart(8)}  ${r.secureMs.toFixed(3).padStart(9)}  ${r.ratio.toFixed(2).padStart(5)}`);
}
await comm.close();
