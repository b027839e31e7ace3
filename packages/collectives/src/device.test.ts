// DeviceBuffers (comm.device): here with BRAID_DEVICE=host, host memory standing in for the GPU
// (the same API, checks and engine paths as on a GPU, but the host algorithms instead of NCCL);
// the same scenario runs on a GPU with NCCL where there is one (scripts/gpu-check.sh).
import { spawnSync } from 'node:child_process';

import { buildInfo, init } from '@braid/collectives';
import { mpirunScript } from '@braid/test-support/mpirun';
import { describe, expect, it } from 'vitest';

const worker = new URL('./test-support/device-worker.mjs', import.meta.url).pathname;
const HOST = { BRAID_DEVICE: 'host' };

function checkRun(run: Awaited<ReturnType<typeof mpirunScript>>, np: number, kind: string) {
  expect(run.code, run.stderr).toBe(0);
  expect(run.results).toHaveLength(np);
  const [first] = run.results;
  // allReduce: 4 float dtypes x 5 ops + 4 integer dtypes x 4 ops, at 5 lengths; then broadcast,
  // allGather and reduceScatter in each of the 8 dtypes.
  expect(first.cases.length).toBe((4 * 5 + 4 * 4) * 5 + 8 * 3);
  for (const r of run.results) {
    expect(r.kind).toBe(kind);
    // Host arrays with algorithm 'nccl': staged through pinned memory on a GPU; refused alike on every rank without one.
    expect(r.staged).toEqual(
      kind === 'cuda'
        ? { result: 'OK', wrong: 0, after: true }
        : { result: "BACKEND_UNAVAILABLE: algorithm 'nccl': it needs a GPU, and this process's device is host memory (BRAID_DEVICE=host)", wrong: -1, after: true },
    );
    expect(r.index).toBe(r.localRank);
    expect(r.cases.filter((c: { wrong: number }) => c.wrong !== 0), `rank ${r.rank}`).toEqual([]);
    expect(r.refusals).toEqual({
      uploadType: 'INVALID_ARGUMENT: upload: a float32 DeviceBuffer takes a Float32Array; got Int32Array',
      uploadPastEnd: "INVALID_ARGUMENT: upload: 4 values from element 6 run past the DeviceBuffer's 8; pass a shorter array or a smaller offset",
      algorithm: "INVALID_ARGUMENT: allReduce: a DeviceBuffer goes by NCCL: algorithm 'auto' or 'nccl'; got \"ring\"",
      dtype: 'INVALID_ARGUMENT: allReduce: dtype "float64" does not fit a float32 DeviceBuffer; drop the dtype option',
      allocDtype: 'INVALID_ARGUMENT: alloc: unknown dtype "complex64"; use one of float32, float64, int32, int64, uint8, int8, float16, bfloat16',
      allocLength: 'INVALID_ARGUMENT: alloc: length must be a whole number of values, 0 or more; got -1',
      afterFree: 'INVALID_ARGUMENT: allReduce: the DeviceBuffer was freed; allocate a new one with comm.device.alloc()',
      downloadAfterFree: 'INVALID_ARGUMENT: download: the DeviceBuffer was freed; allocate a new one with comm.device.alloc()',
      freeInFlight: 'INVALID_ARGUMENT: free: the DeviceBuffer is in use by a collective that has not completed; await it first',
      downloadInFlight: 'INVALID_ARGUMENT: download: the DeviceBuffer is in use by a collective that has not completed; await it first',
      afterInFlight: 'OK',
    });
  }
  for (let i = 0; i < first.cases.length; i++) {
    if (first.cases[i].digest === 'per-rank') continue;
    expect(new Set(run.results.map((r: { cases: { digest: string }[] }) => r.cases[i].digest)).size, first.cases[i].what).toBe(1);
  }
}

describe('DeviceBuffers over host memory (BRAID_DEVICE=host)', () => {
  it.each([1, 2, 3, 4])('np=%i: every collective on DeviceBuffers is exact, in every dtype and op, the same bits on every rank; misuse is refused by name', async (np) => {
    checkRun(await mpirunScript(np, worker, ['device'], { env: HOST }), np, 'host');
  });
});

describe('without a GPU or BRAID_DEVICE', () => {
  it('comm.device says why there is none, and alloc fails with BACKEND_UNAVAILABLE naming it, as does algorithm nccl on host arrays', async () => {
    const comm = await init();
    const device = comm.device;
    if (device.kind === 'cuda') return; // a GPU machine: the GPU test below covers it
    expect(device.kind).toBe('none');
    expect(device.available).toBe(false);
    const cuda = buildInfo().cuda;
    expect(device.reason).toMatch(cuda.compiled ? /no CUDA GPU is visible to this process.*BRAID_DEVICE=host/ : /has no CUDA \(nvcc was not found/);
    expect(() => device.alloc('float32', 4)).toThrow(expect.objectContaining({ code: 'BACKEND_UNAVAILABLE', message: `alloc: no device: ${device.reason}` }));
    // Host arrays through NCCL (staged): NCCL's set-up says why not, and the communicator stays usable.
    expect(() => comm.allReduceSync(new Float32Array(2), { algorithm: 'nccl' })).toThrow(expect.objectContaining({ code: 'BACKEND_UNAVAILABLE', message: `algorithm 'nccl': ${device.reason}` }));
    expect(Array.from(comm.allReduceSync(Float32Array.of(5)))).toEqual([5]);
    expect(comm.device).toBe(device); // opened once
  });

  it('init({ device }) takes a GPU index, 0 or more', async () => {
    await expect(init({ device: -1 })).rejects.toThrow(/init: device must be a GPU index, 0 or more; got -1/);
  });
});

const gpus = buildInfo().nccl.available ? buildInfo().cuda.devices : 0;
describe('on GPUs with NCCL', () => {
  // Skipped without GPUs and NCCL (one rank a GPU): the BRAID_DEVICE=host runs above cover the
  // same API and engine paths. The NCCL calls run here on a GPU machine, in scripts/gpu-check.sh,
  // and in scripts/test-emulated.sh (this file with the addon built over the CUDA and NCCL
  // emulation, four emulated GPUs).
  for (const np of [1, 2, 3, 4]) {
    const needs = gpus < np ? ` (skipped: needs ${np} CUDA GPU${np > 1 ? 's' : ''} and NCCL; ${gpus} here)` : '';
    it.skipIf(gpus < np)(`np=${np}: every collective on DeviceBuffers is exact through NCCL; misuse is refused by name${needs}`, async () => {
      checkRun(await mpirunScript(np, worker, ['device'], {}), np, 'cuda');
    });
  }

  // A GPU that never finishes its part: only the NCCL emulation can make one on demand
  // (BRAID_NCCL_EMULATION_STALL_RANK), so this runs in scripts/test-emulated.sh.
  const emulated = process.env.BRAID_CUDA_EMULATION_DEVICES !== undefined && gpus >= 3;
  it.skipIf(!emulated)(
    `np=3, rank 1's NCCL never finishes: every rank fails with TIMEOUT at its deadline (NCCL aborted), and the communicator is ABORTED afterwards${emulated ? '' : ' (skipped: needs the NCCL emulation, scripts/test-emulated.sh)'}`,
    async () => {
      const run = await mpirunScript(3, worker, ['stall'], { env: { BRAID_NCCL_EMULATION_STALL_RANK: '1' } });
      expect(run.results, run.stderr).toHaveLength(3);
      for (const r of run.results) {
        expect(r.first).toMatch(/^TIMEOUT: Every other rank still answers: the GPU work did not finish in time .*this rank timed out on ncclAllReduce: the deadline passed before NCCL finished; the communicator was aborted/);
        expect(r.seconds).toBeGreaterThanOrEqual(1.9); // timeoutMs: 2000
        expect(r.seconds).toBeLessThan(10);
        expect(r.next).toMatch(/^ABORTED: the communicator is unusable since an earlier failure/);
        expect(r.host).toMatch(/^ABORTED: the communicator is unusable since an earlier failure/);
      }
    },
  );
});

// The plain `node` run of a device script is a world of one.
describe('a plain node run', () => {
  it('BRAID_DEVICE=host works without mpirun', () => {
    const script = `import { init } from '@braid/collectives';
      const comm = await init();
      const d = comm.device.alloc('int32', 3).upload(Int32Array.of(1, 2, 3));
      await comm.allReduce(d);
      console.log(comm.device.kind, Array.from(d.download()).join(','));
      await comm.close();`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...HOST }, encoding: 'utf8', cwd: new URL('.', import.meta.url).pathname });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('host 1,2,3');
  });
});
