// tfjs for the test ranks, required rather than imported: Node's ESM loader would first scan tfjs's
// CommonJS bundles for their export names, a fifth of a second of CPU in every rank of every job.
import { createRequire } from 'node:module';

export const tf = createRequire(import.meta.url)('@tensorflow/tfjs');
