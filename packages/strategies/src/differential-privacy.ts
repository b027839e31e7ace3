// DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", 2016), as TF Privacy and Opacus
// run it, over ranks: every microbatch's gradient is clipped to clipNorm (L2, all variables
// together), the clipped gradients are summed, Gaussian noise of std noiseMultiplier x clipNorm is
// added to the sum once across all ranks, and the noisy sum is averaged over the global batch.
//
// Each rank adds an independent share N(0, (sigma C)^2 / n) to its own sum, so the sum over n ranks
// carries exactly N(0, (sigma C)^2). A rank knows its own share, so against that rank the total
// carries a (n-1)/n share of the variance; with secure aggregation no rank sees another's
// noisy sum at all, only the total (the usual distributed DP-SGD arrangement).
//
// The noise comes from node:crypto's generator (Box-Muller over 53-bit uniforms), not from
// tfjs's seeded one: noise an observer could predict would protect nothing. Floating-point
// Gaussian samplers leak through their low bits in theory (Mironov, CCS 2012); like Opacus
// outside its secure mode, this one does not defend against that.
import { randomFillSync } from 'node:crypto';

import { checkOptions, type Communicator, InvalidArgumentError } from '@braid/collectives';
import * as tf from '@tensorflow/tfjs-core';

import { computeEpsilon, type PrivacySpent } from './privacy-accountant.js';

export interface DifferentialPrivacyOptions {
  /** Every microbatch's gradient is scaled down to at most this L2 norm (all variables together). */
  clipNorm: number;
  /** The noise's std over the clip norm (sigma). 0 clips without noise (and epsilon is Infinity). */
  noiseMultiplier: number;
  /** Examples per clipped gradient (default 1: per-example clipping, the usual DP-SGD). */
  microbatchSize?: number;
  /** The delta that epsilon is reported at (default 1e-5; keep it below 1 / the number of examples). */
  delta?: number;
}

export interface ClippedSum {
  /** Per variable, the sum over microbatches of the clipped gradients. */
  sums: tf.Tensor[];
  /** Microbatches summed. */
  microbatches: number;
  /** Of those, how many had a norm above clipNorm. */
  clipped: number;
  /** The mean of the microbatches' losses. */
  loss: number;
}

function positive(what: string, value: unknown, allowZero = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw new InvalidArgumentError(`DataParallel: privacy.${what} must be a ${allowZero ? 'number >= 0' : 'positive number'}; got ${JSON.stringify(value)}`);
  }
  return value;
}

export class DifferentialPrivacy {
  readonly clipNorm: number;
  readonly noiseMultiplier: number;
  readonly microbatchSize: number;
  readonly delta: number;
  /** Noisy steps taken (each one a step of the sampled Gaussian mechanism). */
  steps = 0;
  // Box-Muller gives normals in pairs; the unused one waits here.
  private spare: number | undefined;
  private readonly random = new Uint32Array(1024);
  private randomAt = this.random.length;

  constructor(
    private readonly comm: Communicator,
    options: DifferentialPrivacyOptions,
  ) {
    checkOptions('DataParallel: privacy', options, ['clipNorm', 'noiseMultiplier', 'microbatchSize', 'delta']);
    if (options.clipNorm === undefined || options.noiseMultiplier === undefined) {
      throw new InvalidArgumentError('DataParallel: differential privacy needs both privacy.clipNorm (e.g. 1) and privacy.noiseMultiplier (e.g. 1.1, or noiseMultiplierFor({ targetEpsilon, ... }))');
    }
    this.clipNorm = positive('clipNorm', options.clipNorm);
    this.noiseMultiplier = positive('noiseMultiplier', options.noiseMultiplier, true);
    const microbatch = options.microbatchSize ?? 1;
    if (!Number.isInteger(microbatch) || microbatch < 1) {
      throw new InvalidArgumentError(`DataParallel: privacy.microbatchSize must be an integer >= 1; got ${JSON.stringify(options.microbatchSize)}`);
    }
    this.microbatchSize = microbatch;
    this.delta = options.delta ?? 1e-5;
    if (typeof this.delta !== 'number' || !(this.delta > 0 && this.delta < 1)) {
      throw new InvalidArgumentError(`DataParallel: privacy.delta must be in (0, 1), typically below 1 / the number of examples; got ${JSON.stringify(options.delta)}`);
    }
  }

  /**
   * The sum of the clipped gradients of `loss` over the microbatches of `rows` rows: `loss(begin,
   * end)` gives the mean loss of rows [begin, end) of the batch (a tf.Scalar), once per microbatch.
   */
  clippedGradientSum(loss: (begin: number, end: number) => tf.Scalar, rows: number, variables: tf.Variable[]): ClippedSum {
    if (!Number.isInteger(rows) || rows < 1) throw new InvalidArgumentError(`differential privacy: a batch needs at least one row; got ${rows}`);
    if (variables.length === 0) throw new InvalidArgumentError('differential privacy: there are no trainable variables to compute gradients for');
    let sums: tf.Tensor[] = variables.map((v) => tf.zerosLike(v));
    let clipped = 0;
    let lossSum = 0;
    let microbatches = 0;
    try {
      for (let begin = 0; begin < rows; begin += this.microbatchSize) {
        const end = Math.min(rows, begin + this.microbatchSize);
        const { value, grads } = tf.variableGrads(() => loss(begin, end), variables);
        const next = tf.tidy(() => {
          const list = variables.map((v) => grads[v.name] ?? tf.zerosLike(v));
          const squares = list.map((g) => tf.sum(tf.square(g)));
          const norm = Math.sqrt(tf.addN(squares).dataSync()[0]!);
          if (norm > this.clipNorm) clipped++;
          const scale = norm > this.clipNorm ? this.clipNorm / norm : 1;
          return list.map((g, i) => tf.add(sums[i]!, scale === 1 ? g : tf.mul(g, scale)));
        });
        lossSum += value.dataSync()[0]!;
        tf.dispose([value, ...Object.values(grads), ...sums]);
        sums = next;
        microbatches++;
      }
    } catch (err) {
      tf.dispose(sums);
      throw err;
    }
    return { sums, microbatches, clipped, loss: lossSum / microbatches };
  }

  /**
   * This rank's part of a noisy average: (its clipped sums + its share of the noise) / expected
   * microbatches per rank, as float32 arrays ready for an averaging all-reduce (the average over n
   * ranks then divides by the global number of microbatches). Dividing by the expected count (the
   * nominal batch), not the count this step happened to have, keeps every example's influence
   * bounded by clipNorm / (global microbatches), as Opacus does with Poisson sampling.
   */
  noisyShare(sums: readonly tf.Tensor[], expectedMicrobatches: number): tf.Tensor[] {
    if (!Number.isFinite(expectedMicrobatches) || expectedMicrobatches <= 0) {
      throw new InvalidArgumentError(`differential privacy: the expected microbatches per rank must be positive; got ${expectedMicrobatches}`);
    }
    const std = (this.noiseMultiplier * this.clipNorm) / Math.sqrt(this.comm.size);
    const out = sums.map((s) => {
      const values = Float32Array.from(s.dataSync() as Float32Array);
      for (let i = 0; i < values.length; i++) values[i] = (values[i]! + std * this.normal()) / expectedMicrobatches;
      return tf.tensor(values, s.shape, 'float32');
    });
    this.steps++;
    return out;
  }

  /**
   * Privacy spent by the noisy steps so far, each one sampling a share `samplingRate` of the
   * examples (the global batch over the data set's rows), at `delta` (default: the option's).
   */
  epsilon(samplingRate: number, delta = this.delta): PrivacySpent {
    if (this.noiseMultiplier === 0) return { epsilon: this.steps === 0 ? 0 : Infinity, order: 0 };
    return computeEpsilon({ samplingRate, noiseMultiplier: this.noiseMultiplier, steps: this.steps, delta });
  }

  /** A standard normal sample from the operating system's cryptographic generator. */
  private normal(): number {
    if (this.spare !== undefined) {
      const z = this.spare;
      this.spare = undefined;
      return z;
    }
    // u1 in (0, 1] (its log must be finite), u2 in [0, 1).
    const u1 = 1 - this.uniform();
    const u2 = this.uniform();
    const radius = Math.sqrt(-2 * Math.log(u1));
    this.spare = radius * Math.sin(2 * Math.PI * u2);
    return radius * Math.cos(2 * Math.PI * u2);
  }

  /** A uniform double in [0, 1) with 53 random bits. */
  private uniform(): number {
    if (this.randomAt + 2 > this.random.length) {
      randomFillSync(this.random);
      this.randomAt = 0;
    }
    const high = this.random[this.randomAt++]! >>> 5; // 27 bits
    const low = this.random[this.randomAt++]! >>> 6; // 26 bits
    return (high * 67108864 + low) / 9007199254740992;
  }
}
