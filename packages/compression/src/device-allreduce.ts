// allReduceCompressed on DeviceBuffers (issue 14): the same steps as on Float32Arrays, on the
// device. Payloads are made where the values are (the addon's deviceEncode: CUDA kernels on a
// GPU), all-gathered as a uint8 DeviceBuffer (NCCL on a GPU), checked and summed in rank order
// on the device (deviceDecodeSum); fp16 / bf16 go through the device all-reduce as half words;
// PowerSGD's products run on the device, its small factors' orthonormalization on the host (r
// columns of `rows` values: a download and an upload). With BRAID_DEVICE=host every step runs
// on host memory with the CPU kernels and gives the Float32Array path's bits.
import { type Communicator, DeviceBuffer, InvalidArgumentError } from '@braid/collectives';
import { loadAddon } from '@braid/native';

import { type Compressor, deviceHeaderOf, PowerSgdCompressor } from './compressors.js';
import { ErrorFeedback } from './error-feedback.js';
import { kernels } from './payload.js';

export type DeviceCollective = { kind: 'allReduce'; buf: DeviceBuffer; op: 'sum' | 'avg' } | { kind: 'allGather'; buf: DeviceBuffer };

export function checkDeviceInput(method: string, x: DeviceBuffer): void {
  if (x.dtype !== 'float32') throw new InvalidArgumentError(`${method}: x must be a float32 DeviceBuffer; got ${x.dtype}`);
  x.memoryFor(method); // refuses a freed buffer by name
}

export function* deviceSteps(comm: Communicator, x: DeviceBuffer, compressor: Compressor, op: 'sum' | 'avg'): Generator<DeviceCollective, DeviceBuffer, DeviceBuffer | undefined> {
  const addon = loadAddon();
  const feedback = compressor instanceof ErrorFeedback ? compressor : undefined;
  const inner = feedback ? feedback.inner : compressor;
  const device = comm.device;
  const n = x.length;
  const mem = (b: DeviceBuffer) => b.memoryFor('allReduceCompressed');
  const residual = feedback && inner.name !== 'none' ? feedback.residualOn(device, x) : undefined;
  const temporaries: DeviceBuffer[] = [];
  const temporary = (dtype: 'float32' | 'uint8' | 'float16' | 'bfloat16', length: number) => {
    const b = device.alloc(dtype, length);
    temporaries.push(b);
    return b;
  };

  try {
    if (inner.name === 'none') {
      if (feedback) feedback.residualOn(device, x); // sized, and stays zero: nothing is lost
      yield { kind: 'allReduce', buf: x, op };
      return x;
    }

    if (inner.name === 'fp16' || inner.name === 'bf16') {
      const bf16 = inner.name === 'bf16';
      const wire = temporary(bf16 ? 'bfloat16' : 'float16', n);
      addon.deviceCastHalf(mem(x), n, mem(wire), bf16, false, residual ? mem(residual) : null);
      yield { kind: 'allReduce', buf: wire, op };
      addon.deviceCastHalf(mem(x), n, mem(wire), bf16, true, null);
      return x;
    }

    if (inner instanceof PowerSgdCompressor) {
      if (n === 0) return x;
      const { rows, cols, r } = inner.dims(n);
      if (residual) addon.deviceElementwise('add', mem(x), mem(residual), mem(x), n); // x is now the corrected input
      let m = x;
      if (rows * cols !== n) {
        m = temporary('float32', rows * cols);
        addon.deviceElementwise('zero', mem(m), m.byteLength);
        addon.deviceElementwise('copy', mem(m), mem(x), x.byteLength);
      }
      const pt = temporary('float32', r * rows);
      const qt = temporary('float32', r * cols).upload(inner.startQ(r, cols));
      addon.devicePower('p', mem(m), rows, cols, r, mem(qt), mem(pt));
      yield { kind: 'allReduce', buf: pt, op: 'avg' };
      const ptHost = pt.download(new Float32Array(r * rows));
      kernels().orthonormalize(ptHost, r, rows);
      pt.upload(ptHost);
      addon.devicePower('q', mem(m), rows, cols, r, mem(pt), mem(qt));
      yield { kind: 'allReduce', buf: qt, op: 'avg' };
      inner.keepQ(qt.download(new Float32Array(r * cols)));
      // Every rank now holds the same P and Q: the approximation of the ranks' mean.
      if (residual) addon.deviceElementwise('copy', mem(residual), mem(x), x.byteLength); // the corrected input, before x is overwritten
      addon.devicePower('reconstruct', mem(pt), rows, cols, r, mem(qt), mem(x), n);
      if (residual) addon.deviceElementwise('subtract', mem(residual), mem(x), mem(residual), n);
      if (op === 'sum') addon.deviceElementwise('scale', mem(x), n, comm.size);
      return x;
    }

    const header = deviceHeaderOf(inner, n);
    if (!header) throw new InvalidArgumentError(`allReduceCompressed: DeviceBuffers take the compressors of createCompressor(); '${inner.name}' is not one`);
    const bytes = inner.payloadBytes(n);
    const payload = temporary('uint8', bytes);
    addon.deviceEncode(header, mem(x), n, residual ? mem(residual) : null, mem(payload), bytes);
    const all = yield { kind: 'allGather', buf: payload };
    temporaries.push(all!);
    addon.deviceDecodeSum(header, mem(all!), comm.size, bytes, mem(x), n, op === 'avg' ? 1 / comm.size : 1);
    return x;
  } finally {
    for (const b of temporaries) b.free();
  }
}

export function isDeviceBuffer(x: unknown): x is DeviceBuffer {
  return x instanceof DeviceBuffer;
}
