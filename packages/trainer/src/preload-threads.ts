// Loaded by `braid run` before the training script (node --import): this rank's TensorFlow threads.
import { applyTensorflowThreads } from './tensorflow-threads.js';

applyTensorflowThreads();
