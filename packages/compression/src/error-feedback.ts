// Error feedback (Seide et al. 2014; Karimireddy et al. 2019): what compression loses at one
// step is added back at the next, so nothing is lost for good. Kept apart from the compressors,
// as GRACE keeps its "memory": any compressor can be wrapped.
import { type Device, type DeviceBuffer, InvalidArgumentError } from '@braid/collectives';
import { loadAddon } from '@braid/native';

import type { Compressed, Compressor } from './compressors.js';
import { kernels } from './payload.js';

export class ErrorFeedback implements Compressor {
  /** What has not been sent yet: corrected input minus what the payload carries. */
  residual = new Float32Array(0);
  // Reused from call to call: a gradient-sized allocation per step costs more than the kernels.
  private correctedScratch = new Float32Array(0);
  private sentScratch = new Float32Array(0);
  #onDevice: DeviceBuffer | undefined;

  constructor(readonly inner: Compressor) {
    if (!inner || typeof inner.compress !== 'function' || typeof inner.decompress !== 'function') {
      throw new InvalidArgumentError('ErrorFeedback: wrap a compressor from createCompressor()');
    }
  }

  get name() {
    return this.inner.name;
  }

  payloadBytes(length: number): number {
    return this.inner.payloadBytes(length);
  }

  /**
   * x + residual, in a buffer this object reuses (valid until its next call); the residual starts
   * at zero and must keep x's length.
   */
  corrected(x: Float32Array): Float32Array {
    if (!(x instanceof Float32Array)) throw new InvalidArgumentError('ErrorFeedback.compress: x must be a Float32Array');
    if (this.#onDevice) throw mixed();
    if (this.residual.length !== x.length) {
      if (this.residual.length !== 0) {
        throw new InvalidArgumentError(`ErrorFeedback: the input length changed from ${this.residual.length} to ${x.length}; use one ErrorFeedback per gradient buffer`);
      }
      this.residual = new Float32Array(x.length);
    }
    if (this.correctedScratch.length !== x.length) this.correctedScratch = new Float32Array(x.length);
    kernels().add(x, this.residual, this.correctedScratch);
    return this.correctedScratch;
  }

  /** The residual of a DeviceBuffer's all-reduces (allReduceCompressed), on the device; undefined before. */
  get deviceResidual(): DeviceBuffer | undefined {
    return this.#onDevice;
  }

  /** @internal The residual for DeviceBuffer `x` on `device` (zero at first), kept from call to call. */
  residualOn(device: Device, x: DeviceBuffer): DeviceBuffer {
    if (this.residual.length !== 0) throw mixed();
    if (this.#onDevice && this.#onDevice.length !== x.length) {
      throw new InvalidArgumentError(`ErrorFeedback: the input length changed from ${this.#onDevice.length} to ${x.length}; use one ErrorFeedback per gradient buffer`);
    }
    if (!this.#onDevice || this.#onDevice.freed) {
      const residual = device.alloc('float32', x.length);
      loadAddon().deviceElementwise('zero', residual.memoryFor('ErrorFeedback'), residual.byteLength);
      this.#onDevice = residual;
    }
    return this.#onDevice;
  }

  /** residual = corrected - sent. */
  remember(corrected: Float32Array, sent: Float32Array): void {
    kernels().subtract(corrected, sent, this.residual);
  }

  compress(x: Float32Array): Compressed {
    const corrected = this.corrected(x);
    const compressed = this.inner.compress(corrected);
    if (this.sentScratch.length !== x.length) this.sentScratch = new Float32Array(x.length);
    this.remember(corrected, this.inner.decompress(compressed.payload, this.sentScratch));
    return compressed;
  }

  decompress(payload: Uint8Array, into?: Float32Array, accumulate?: boolean): Float32Array {
    return this.inner.decompress(payload, into, accumulate);
  }
}

function mixed(): InvalidArgumentError {
  return new InvalidArgumentError('ErrorFeedback: one instance serves either Float32Arrays or DeviceBuffers; use one ErrorFeedback per gradient buffer');
}
