export {
  type Compressed,
  type CompressContext,
  type Compressor,
  type CompressorName,
  type CompressorOptions,
  createCompressor,
  matrixShape,
} from './compressors.js';
export { ErrorFeedback } from './error-feedback.js';
export { allReduceCompressed, allReduceCompressedSync, type CompressedAllReduceOptions } from './allreduce.js';
export { KINDS as COMPRESSOR_NAMES } from './payload.js';

import { loadAddon } from '@braid/native';
/** The vector ISA the compression kernels run with ('avx512', 'avx2', 'generic'). */
export function kernelIsa(): string {
  return loadAddon().compress.isa;
}
