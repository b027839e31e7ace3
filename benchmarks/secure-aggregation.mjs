// Secure aggregation's cost against the plain all-reduce it wraps (issue 16: target < 2x the
// all-reduce at 1M floats). Each size: the plain float32 all-reduce (sum), the secure one as
// SecureAggregator runs it by default (masking fused into the shared-memory all-reduce's chunks
// where it can) and unfused (fixed point and pairwise AES-CTR masks over the whole vector, int32
// all-reduce, unmasking), alternated, medians of the timed calls.
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
const unfused = new SecureAggregator(comm, { scale: 2 ** 16, fuse: false, ...(kernel ? { kernel } : {}) });
const rows = [];
for (const n of sizes) {
  const values = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.001 + comm.rank));
  const buffer = new Float32Array(n);
  const times = { plain: [], secure: [], unfused: [] };
  const timed = async (call) => {
    buffer.set(values);
    await comm.barrier();
    const t = performance.now();
    await call(buffer);
    return performance.now() - t;
  };
  for (let i = 0; i < iters + 3; i++) {
    const tPlain = await timed((b) => comm.allReduce(b));
    const tSecure = await timed((b) => agg.allReduce(b));
    const tUnfused = await timed((b) => unfused.allReduce(b));
    if (i >= 3) {
      times.plain.push(tPlain);
      times.secure.push(tSecure);
      times.unfused.push(tUnfused);
    }
  }
  const [p, s, u] = [median(times.plain), median(times.secure), median(times.unfused)];
  rows.push({ floats: n, plainMs: p, secureMs: s, unfusedMs: u });
}
if (comm.rank === 0) {
  console.log(`secure aggregation at np=${comm.size} (medians of ${iters} calls each, alternated with the plain all-reduce)`);
  console.log(`masking: ${agg.kernel}, ${agg.fused ? 'fused into the shared-memory all-reduce' : 'not fused (no shared memory or JS kernel)'}`);
  console.log('floats     plain ms  secure ms  ratio  unfused ms  ratio');
  for (const r of rows) {
    const cells = [r.plainMs.toFixed(3).padStart(8), r.secureMs.toFixed(3).padStart(9), (r.secureMs / r.plainMs).toFixed(2).padStart(5), r.unfusedMs.toFixed(3).padStart(10), (r.unfusedMs / r.plainMs).toFixed(2).padStart(5)];
    console.log(`${String(r.floats).padEnd(10)} ${cells.join('  ')}`);
  }
}
await comm.close();
