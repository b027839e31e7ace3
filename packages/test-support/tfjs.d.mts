/** @tensorflow/tfjs, loaded with require (one instance with what the packages import). */
export const tf: typeof import('@tensorflow/tfjs');
