// The privacy of DP-SGD (issue 16), as TF Privacy's and Opacus's RDP accountants count it: each
// step is the sampled Gaussian mechanism (every example in the batch with probability q, the sum
// of clipped gradients plus Gaussian noise of std noiseMultiplier x clipNorm). Its Rényi DP at an
// integer order a is log(A_a) / (a - 1), with (Mironov, Talwar and Zhang, "Rényi Differential
// Privacy of the Sampled Gaussian Mechanism", 2019, Sec. 3.3)
//   A_a = sum_{i=0..a} C(a, i) (1 - q)^(a - i) q^i exp((i^2 - i) / (2 sigma^2)),
// RDP adds up over steps, and (epsilon, delta)-DP follows from the best order:
//   epsilon = min_a RDP(a) + log(1 / delta) / (a - 1)   (Mironov, "Rényi Differential Privacy", 2017, Prop. 3).
import { InvalidArgumentError } from '@braid/collectives';

/** The orders tried: the integers 2..256 (fractional orders move epsilon by well under 1% here). */
export const DEFAULT_RDP_ORDERS: readonly number[] = Array.from({ length: 255 }, (_, i) => i + 2);

function logAdd(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const m = Math.max(a, b);
  return m + Math.log(Math.exp(a - m) + Math.exp(b - m));
}

/** The sampled Gaussian mechanism's RDP at integer order `order`, one step. */
export function sampledGaussianRdp(samplingRate: number, noiseMultiplier: number, order: number): number {
  const q = samplingRate;
  const variance = noiseMultiplier * noiseMultiplier;
  if (q === 0) return 0;
  if (q === 1) return order / (2 * variance);
  let logA = -Infinity;
  let logBinomial = 0; // log C(order, i), built term by term
  for (let i = 0; i <= order; i++) {
    if (i > 0) logBinomial += Math.log(order - i + 1) - Math.log(i);
    logA = logAdd(logA, logBinomial + i * Math.log(q) + (order - i) * Math.log1p(-q) + (i * i - i) / (2 * variance));
  }
  return logA / (order - 1);
}

function check(what: string, value: number, ok: (v: number) => boolean, want: string): void {
  if (typeof value !== 'number' || !ok(value)) throw new InvalidArgumentError(`privacy accountant: ${what} must be ${want}; got ${JSON.stringify(value)}`);
}

export interface PrivacySpent {
  epsilon: number;
  /** The Rényi order that gave it. */
  order: number;
}

/** Rényi DP accountant: record DP-SGD steps, ask for epsilon at a delta. */
export class RdpAccountant {
  private readonly rdp: Float64Array;

  constructor(readonly orders: readonly number[] = DEFAULT_RDP_ORDERS) {
    if (!Array.isArray(orders) || orders.length === 0 || orders.some((a) => !Number.isInteger(a) || a < 2)) {
      throw new InvalidArgumentError('privacy accountant: orders must be integers >= 2');
    }
    this.rdp = new Float64Array(orders.length);
  }

  /** `steps` steps of the sampled Gaussian mechanism: sampling rate q = batch / examples. */
  step(samplingRate: number, noiseMultiplier: number, steps = 1): void {
    check('the sampling rate', samplingRate, (v) => v >= 0 && v <= 1, 'in [0, 1] (the batch over the number of examples)');
    check('the noise multiplier', noiseMultiplier, (v) => v > 0 && Number.isFinite(v), 'a positive number');
    check('steps', steps, (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0');
    this.orders.forEach((order, k) => (this.rdp[k]! += steps * sampledGaussianRdp(samplingRate, noiseMultiplier, order)));
  }

  /** The smallest epsilon over the orders for which the steps so far are (epsilon, delta)-DP. */
  epsilon(delta: number): PrivacySpent {
    check('delta', delta, (v) => v > 0 && v < 1, 'in (0, 1)');
    let best: PrivacySpent = { epsilon: Infinity, order: this.orders[0]! };
    this.orders.forEach((order, k) => {
      const epsilon = this.rdp[k]! + Math.log(1 / delta) / (order - 1);
      if (epsilon < best.epsilon) best = { epsilon, order };
    });
    return best;
  }
}

/** Epsilon after `steps` steps at sampling rate q and this noise multiplier. */
export function computeEpsilon(o: { samplingRate: number; noiseMultiplier: number; steps: number; delta: number; orders?: readonly number[] }): PrivacySpent {
  const accountant = new RdpAccountant(o.orders);
  accountant.step(o.samplingRate, o.noiseMultiplier, o.steps);
  return accountant.epsilon(o.delta);
}

/**
 * The smallest noise multiplier (to 0.1%) that keeps `steps` steps at sampling rate q within
 * (targetEpsilon, delta): what to train with for a privacy budget.
 */
export function noiseMultiplierFor(o: { targetEpsilon: number; samplingRate: number; steps: number; delta: number; orders?: readonly number[] }): number {
  check('the target epsilon', o.targetEpsilon, (v) => v > 0 && Number.isFinite(v), 'a positive number');
  const epsilonAt = (sigma: number) => computeEpsilon({ ...o, noiseMultiplier: sigma }).epsilon;
  let low = 0.05;
  let high = 1;
  while (epsilonAt(high) > o.targetEpsilon) {
    high *= 2;
    if (high > 1e4) throw new InvalidArgumentError(`privacy accountant: no noise multiplier up to 10^4 reaches epsilon ${o.targetEpsilon} in ${o.steps} steps`);
  }
  if (epsilonAt(low) <= o.targetEpsilon) return low;
  while ((high - low) / high > 1e-3) {
    const mid = (low + high) / 2;
    if (epsilonAt(mid) > o.targetEpsilon) low = mid;
    else high = mid;
  }
  return high;
}
