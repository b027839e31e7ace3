// Error feedback (Seide et al. 2014; Karimireddy et al. 2019): what compression loses at one
// step is added back at the next, so nothing is lost for good. Kept apart from the compressors,
// as GRACE keeps its "memory": any compressor can be wrapped.
import { InvalidArgumentError } from '@braid/collectives';

import type { Compressed, Compressor } from './compressors.js';
import { kernels } from './payload.js';

export class ErrorFeedback implements Compressor {
  /** What has not been sent yet: corrected input minus what the payload carries. */
  residual = new Float32Array(0);
  // Reused from call to call: a gradient-sized allocation per step costs more than the kernels.
  private correctedScratch = new Float32Array(0);
  private sentScratch = new Float32Array(0);

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
