// Secure aggregation (issue 16), after Bonawitz et al.: no rank, and nobody reading the wire or
// shared memory, sees another rank's values; only their sum comes out. Every pair of ranks agrees
// on a secret once (X25519), and each step expands it with AES-128-CTR into a mask; each rank
// turns its values into fixed point (int32), adds the masks of the pairs where it is the lower
// rank and subtracts those where it is the higher, in the integers mod 2^32. The masks cancel in
// the sum, so a plain int32 all-reduce (which wraps mod 2^32, as two's complement does) yields
// the exact sum of the fixed-point values, whatever algorithm moved the partial sums.
//
// Threat model: honest-but-curious ranks (they follow the protocol and may read all they get), an
// eavesdropper on the links or in shared memory; the public keys are exchanged over the job's
// own collectives, unauthenticated (an active attacker inside the job is out of scope). Fail-stop:
// a rank that dies ends the step with an error on every rank; there is no dropout recovery (the
// survivors' masks would not cancel).
import { createCipheriv, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync } from 'node:crypto';

import { checkOptions, type Communicator, InvalidArgumentError } from '@braid/collectives';
import { loadAddon } from '@braid/native';

export interface SecureAggregationOptions {
  /**
   * Fixed-point scale: a value v travels as floor(v x scale + 0.5) (default 2^20: steps of about 1e-6).
   * Each rank's values must stay within +-(2^31 - 1) / (size x scale) so that the sum cannot
   * overflow; a value beyond is an error on every rank (never a silent wrap).
   */
  scale?: number;
  /** Clip each value to [-clip, clip] before it is scaled (default: no clipping). */
  clip?: number;
  /**
   * Who masks: 'native' (the addon's AES-NI kernel, one pass; the default where the CPU has
   * AES-NI) or 'js' (node:crypto's AES-128-CTR and JavaScript loops). Both give the same bits.
   */
  kernel?: 'native' | 'js';
  /**
   * Mask inside the shared-memory all-reduce, chunk by chunk, while each chunk is in the cache
   * (default: true where the ranks share memory and the kernel is native; elsewhere it is off).
   * false masks the whole vector, all-reduces it, then unmasks it: the same bits, two more passes
   * over memory. With it, `values` are undefined after a failed call (they are being summed in
   * place); without it they are left as they were.
   */
  fuse?: boolean;
}

// The PKCS#8 / SPKI wrappers of a raw X25519 key (RFC 8410): the raw 32 bytes follow them.
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const KEY_BYTES = 32;
// AES-128 masks: X25519 gives about 128 bits of security, so a longer key would add rounds, not strength.
const MASK_KEY_BYTES = 16;

/** The pairwise-masked sum of Float32Arrays across the communicator's ranks. */
export class SecureAggregator {
  readonly scale: number;
  readonly clip: number | undefined;
  /** Largest |round(v x scale)| one rank may send: size of them still fit in an int32. */
  readonly limit: number;
  // One key per peer, packed in rank order, and +1 where this rank is the lower of the pair.
  private packedKeys = new Uint8Array(0);
  private signs = new Int8Array(0);
  private keyed = false;
  private readonly native: ReturnType<typeof loadAddon>['compress'] | undefined;
  private calls = 0;
  private zeros = Buffer.alloc(0);
  // Masked vectors handed back after unmasking, for the next call of that length: a fresh 4 MiB
  // array each step costs page faults worth as much as the masking.
  private readonly spare: Int32Array[] = [];
  private ready: Promise<void> | undefined;
  private readonly fuse: boolean;

  constructor(
    private readonly comm: Communicator,
    options: SecureAggregationOptions = {},
  ) {
    checkOptions('secure aggregation', options, ['scale', 'clip', 'kernel', 'fuse']);
    const scale = options.scale ?? 2 ** 20;
    if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0) throw new InvalidArgumentError(`secure aggregation: scale must be a positive number; got ${JSON.stringify(options.scale)}`);
    if (options.clip !== undefined && (typeof options.clip !== 'number' || !(options.clip > 0) || !Number.isFinite(options.clip))) {
      throw new InvalidArgumentError(`secure aggregation: clip must be a positive number; got ${JSON.stringify(options.clip)}`);
    }
    this.scale = scale;
    this.clip = options.clip;
    this.limit = Math.floor(0x7fffffff / comm.size);
    if (options.kernel !== undefined && options.kernel !== 'native' && options.kernel !== 'js') {
      throw new InvalidArgumentError(`secure aggregation: kernel must be 'native' or 'js'; got ${JSON.stringify(options.kernel)}`);
    }
    const compress = loadAddon().compress;
    if (options.kernel === 'native' && !compress.secureMaskAvailable) throw new InvalidArgumentError("secure aggregation: kernel 'native' needs a CPU with AES-NI");
    this.native = options.kernel !== 'js' && compress.secureMaskAvailable ? compress : undefined;
    if (options.fuse !== undefined && typeof options.fuse !== 'boolean') throw new InvalidArgumentError(`secure aggregation: fuse must be true or false; got ${JSON.stringify(options.fuse)}`);
    this.fuse = options.fuse !== false && this.native !== undefined && (comm.sharedMemory || comm.size === 1);
  }

  // Unfused, over the shared-memory all-reduce where the fused op would run: ranks masking in
  // JavaScript (never fused) and ranks masking natively (fused) then make the same exchange.
  private get algorithm(): 'shm' | 'auto' {
    return this.comm.sharedMemory && this.comm.size > 1 ? 'shm' : 'auto';
  }

  /** Whether masking runs inside the shared-memory all-reduce (the `fuse` option, where it can). */
  get fused(): boolean {
    return this.fuse;
  }

  /** Who masks here: 'native' or 'js'. */
  get kernel(): 'native' | 'js' {
    return this.native ? 'native' : 'js';
  }

  /**
   * Once: this rank's key pair (its public key to all-gather) and, from all the public keys, one
   * key per peer (packed, 16 bytes each, in rank order) with +1 where this rank is the lower.
   */
  private keyPair(): { mine: Uint8Array; derive: (publicKeys: Uint8Array) => void } {
    const { rank, size } = this.comm;
    const { publicKey, privateKey } = generateKeyPairSync('x25519');
    const mine = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length));
    const derive = (publicKeys: Uint8Array) => {
      const peers = [...Array(size).keys()].filter((p) => p !== rank);
      this.packedKeys = new Uint8Array(MASK_KEY_BYTES * peers.length);
      peers.forEach((peer, i) => {
        const raw = publicKeys.subarray(peer * KEY_BYTES, (peer + 1) * KEY_BYTES);
        const theirs = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
        const secret = diffieHellman({ privateKey, publicKey: theirs });
        const [low, high] = rank < peer ? [rank, peer] : [peer, rank];
        this.packedKeys.set(new Uint8Array(hkdfSync('sha256', secret, 'braid-secure-aggregation', `pair ${low}-${high}`, MASK_KEY_BYTES)), MASK_KEY_BYTES * i);
      });
      this.signs = Int8Array.from(peers, (p) => (rank < p ? 1 : -1));
      this.keyed = true;
    };
    return { mine, derive };
  }

  /**
   * This rank's masked fixed-point vector for `values` (what it puts on the wire), and how many of
   * its values were beyond the range, as the last element (masked too: only the total comes out).
   */
  mask(values: Float32Array): Int32Array {
    const n = values.length;
    const out = this.maskedVector(n);
    if (this.native) {
      this.native.secureMask(values, out, this.scale, this.clip ?? 0, this.limit, this.packedKeys, this.signs, this.calls++);
      return out;
    }
    let beyond = 0;
    const { scale, clip, limit } = this;
    // Rounded half up (floor(x + 0.5): a third of Math.round's time here, the same result for
    // every product of a float32 and a power-of-two scale).
    if (clip === undefined) {
      for (let i = 0; i < n; i++) {
        const q = Math.floor(values[i]! * scale + 0.5);
        if (q > limit || q < -limit || q !== q) {
          beyond++; // NaN too: counted, and the step fails on every rank
          out[i] = q > 0 ? limit : -limit;
        } else out[i] = q;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        const q = Math.floor((v > clip ? clip : v < -clip ? -clip : v) * scale + 0.5);
        if (q > limit || q < -limit || q !== q) {
          beyond++;
          out[i] = q > 0 ? limit : -limit;
        } else out[i] = q;
      }
    }
    out[n] = beyond;
    const bytes = (n + 1) * 4;
    if (this.zeros.length < bytes) this.zeros = Buffer.alloc(bytes);
    // Fresh masks for every call: the calls' count (the same on every rank, as collectives are
    // called in the same order) starts the counter block, the low 64 bits count blocks.
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64BE(BigInt(this.calls++), 0);
    this.signs.forEach((sign, p) => {
      const stream = createCipheriv('aes-128-ctr', this.packedKeys.subarray(MASK_KEY_BYTES * p, MASK_KEY_BYTES * (p + 1)), iv).update(this.zeros.subarray(0, bytes));
      const m = new Int32Array(stream.buffer, stream.byteOffset, n + 1);
      // Int32Array stores wrap mod 2^32: the lower rank of the pair adds, the higher subtracts.
      if (sign > 0) for (let i = 0; i <= n; i++) out[i] = out[i]! + m[i]!;
      else for (let i = 0; i <= n; i++) out[i] = out[i]! - m[i]!;
    });
    return out;
  }

  // A vector for n values and the count word: one handed back by an earlier call if there is one.
  // Over a SharedArrayBuffer: an awaited all-reduce works on it in place (an ordinary buffer is
  // copied in and out).
  private maskedVector(n: number): Int32Array {
    const reused = this.spare.findIndex((a) => a.length === n + 1);
    return reused >= 0 ? this.spare.splice(reused, 1)[0]! : new Int32Array(new SharedArrayBuffer(4 * (n + 1)));
  }

  private checkCount(sum: Int32Array, n: number): void {
    if (sum[n] !== 0) {
      throw new InvalidArgumentError(
        `secure aggregation: ${sum[n] >>> 0} value(s) were beyond the fixed-point range +-${this.limit / this.scale} (scale ${this.scale}, ${this.comm.size} ranks); ` +
          'lower the scale, clip the values (clip option), or check for NaN / Infinity',
      );
    }
  }

  private unmask(sum: Int32Array, values: Float32Array, op: 'sum' | 'avg'): void {
    const n = values.length;
    this.checkCount(sum, n);
    const divide = op === 'avg' ? this.scale * this.comm.size : this.scale;
    if (this.native) this.native.secureUnmask(sum, values, divide);
    else for (let i = 0; i < n; i++) values[i] = sum[i]! / divide;
    this.handBack(sum);
  }

  /** The sum (or average) of `values` over all ranks, in place; every rank must call it. */
  async allReduce(values: Float32Array, options: { op?: 'sum' | 'avg'; name?: string } = {}): Promise<Float32Array> {
    if (!(values instanceof Float32Array)) throw new InvalidArgumentError('secure aggregation: values must be a Float32Array');
    if (!this.keyed) this.ready ??= (async () => {
      const { mine, derive } = this.keyPair();
      derive((await this.comm.allGather(mine, { name: 'secure aggregation: public keys' })) as Uint8Array);
    })();
    await this.ready;
    if (this.fuse && values.length > 0) {
      const masked = this.maskedVector(values.length);
      try {
        await this.comm.maskedAllReduce(masked, values, this.maskParams(options.op ?? 'sum'), false, options.name);
        this.checkCount(masked, values.length);
      } finally {
        this.handBack(masked);
      }
      return values;
    }
    const masked = this.mask(values);
    await this.comm.allReduce(masked, { op: 'sum', name: options.name, algorithm: this.algorithm });
    this.unmask(masked, values, options.op ?? 'sum');
    return values;
  }

  // What the fused op masks and unmasks with; the call's count goes up as mask()'s does.
  private maskParams(op: 'sum' | 'avg') {
    return {
      scale: this.scale,
      clip: this.clip ?? 0,
      limit: this.limit,
      keys: this.packedKeys,
      signs: this.signs,
      call: this.calls++,
      divisor: op === 'avg' ? this.scale * this.comm.size : this.scale,
    };
  }

  private handBack(masked: Int32Array): void {
    if (this.spare.length < 8) this.spare.push(masked);
  }

  allReduceSync(values: Float32Array, options: { op?: 'sum' | 'avg'; name?: string } = {}): Float32Array {
    if (!(values instanceof Float32Array)) throw new InvalidArgumentError('secure aggregation: values must be a Float32Array');
    if (!this.keyed) {
      const { mine, derive } = this.keyPair();
      derive(this.comm.allGatherSync(mine, { name: 'secure aggregation: public keys' }) as Uint8Array);
    }
    if (this.fuse && values.length > 0) {
      const masked = this.maskedVector(values.length);
      try {
        this.comm.maskedAllReduce(masked, values, this.maskParams(options.op ?? 'sum'), true, options.name);
        this.checkCount(masked, values.length);
      } finally {
        this.handBack(masked);
      }
      return values;
    }
    const masked = this.mask(values);
    this.comm.allReduceSync(masked, { op: 'sum', name: options.name, algorithm: this.algorithm });
    this.unmask(masked, values, options.op ?? 'sum');
    return values;
  }

}
