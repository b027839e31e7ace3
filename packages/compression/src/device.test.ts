// allReduceCompressed on DeviceBuffers: here with BRAID_DEVICE=host (host memory standing in for
// the GPU: the same steps, with the CPU kernels and the host algorithms), where every result must
// be the Float32Array path's bits; the same worker runs through NCCL on GPUs where there are
// (the tests below, scripts/gpu-check.sh) and on the CUDA and NCCL emulation (scripts/test-emulated.sh).
import { buildInfo } from '@braid/collectives';
import { mpirunScript } from '@braid/test-support/mpirun';
import { describe, expect, it } from 'vitest';

const worker = new URL('./test-support/device-worker.mjs', import.meta.url).pathname;

interface Case {
  label: string;
  steps: string[];
  wrong: number;
}

function checkRun(run: Awaited<ReturnType<typeof mpirunScript>>, np: number, kind: 'host' | 'cuda') {
  expect(run.code, run.stderr).toBe(0);
  expect(run.results).toHaveLength(np);
  const [first] = run.results;
  // 11 compressor settings x sum/avg x with/without error feedback x awaited/blocking.
  expect(first.cases).toHaveLength(11 * 2 * 2 * 2);
  for (const r of run.results) {
    expect(r.kind).toBe(kind);
    // Each of three steps equals the same call on a Float32Array (bit for bit where the CPU promises it), residuals too.
    expect(r.cases.filter((c: Case) => c.wrong !== 0), `rank ${r.rank}`).toEqual([]);
    const exactBytes = kind === 'host' ? ['topk', 'randomk', 'qsgd/100', 'qsgd/1000', 'int8', 'sign'] : ['topk', 'randomk', 'int8'];
    for (const [name, p] of Object.entries(r.payloads as Record<string, { sameBytes: boolean; decodes: string }>)) {
      expect({ name, decodes: p.decodes }).toEqual({ name, decodes: exactBytes.includes(name) ? 'same values' : expect.not.stringMatching(/CORRUPT|INVALID/) });
      if (exactBytes.includes(name)) expect({ name, sameBytes: p.sameBytes }).toEqual({ name, sameBytes: true });
    }
    expect(r.corrupt).toEqual({
      intact: 'OK',
      flipped: `CORRUPT_PAYLOAD: rank ${np - 1}'s payload: the checksum does not match its contents (corrupted in transit?)`,
      otherOptions: `CORRUPT_PAYLOAD: rank ${np - 1}'s payload was made by 'qsgd' with other parameters than this rank's 'qsgd' (length 4097 against 4097); every rank must use the same compressor and options`,
    });
    expect(r.refusals).toEqual({
      float64: 'INVALID_ARGUMENT: allReduceCompressedSync: x must be a float32 DeviceBuffer; got float64',
      freed: 'INVALID_ARGUMENT: allReduceCompressedSync: the DeviceBuffer was freed; allocate a new one with comm.device.alloc()',
      algorithm: "INVALID_ARGUMENT: allReduceCompressedSync: 'algorithm' is for Float32Arrays; a DeviceBuffer goes by its device's (NCCL on a GPU)",
      mixed: 'INVALID_ARGUMENT: ErrorFeedback: one instance serves either Float32Arrays or DeviceBuffers; use one ErrorFeedback per gradient buffer',
    });
  }
  // Every rank got the same bits at every step.
  first.cases.forEach((c: Case, i: number) => {
    for (const r of run.results) expect({ label: c.label, rank: r.rank, steps: r.cases[i].steps }).toEqual({ label: c.label, rank: r.rank, steps: c.steps });
  });
}

describe('allReduceCompressed on DeviceBuffers over host memory (BRAID_DEVICE=host)', () => {
  it.each([1, 2, 3, 4])(
    'np=%i: every compressor, sum and avg, with and without error feedback, gives the Float32Array path its bits; payloads are the CPU format; corruption is named',
    async (np) => {
      checkRun(await mpirunScript(np, worker, [], { env: { BRAID_DEVICE: 'host' } }), np, 'host');
    },
  );
});

const gpus = buildInfo().nccl.available ? buildInfo().cuda.devices : 0;
describe('on GPUs with NCCL', () => {
  // Skipped without GPUs and NCCL (one rank a GPU): the BRAID_DEVICE=host runs above cover the same
  // steps with the CPU kernels. The CUDA kernels and NCCL run here on a GPU machine, in
  // scripts/gpu-check.sh, and in scripts/test-emulated.sh (this file with the addon built over the
  // CUDA and NCCL emulation, four emulated GPUs).
  for (const np of [1, 2, 3, 4]) {
    const needs = gpus < np ? ` (skipped: needs ${np} CUDA GPU${np > 1 ? 's' : ''} and NCCL; ${gpus} here)` : '';
    it.skipIf(gpus < np)(`np=${np}: compressed all-reduce on the device matches the Float32Array path${needs}`, async () => {
      checkRun(await mpirunScript(np, worker, [], {}), np, 'cuda');
    });
  }
});
