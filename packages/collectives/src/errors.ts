/** What went wrong, stable across versions: match on `code`, not on the message. */
export type BraidErrorCode =
  | 'INVALID_ARGUMENT'
  | 'MISMATCH'
  | 'BACKEND_UNAVAILABLE'
  | 'CORRUPT_PAYLOAD'
  | 'TIMEOUT'
  | 'ABORTED';

/** Every error Braid raises. The message says what to do about it. */
export class BraidError extends Error {
  readonly code: BraidErrorCode;
  constructor(code: BraidErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A call's arguments are wrong; nothing was sent. */
export class InvalidArgumentError extends BraidError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}
/** Ranks submitted different operations; none of them ran it. */
export class MismatchError extends BraidError {
  constructor(message: string) {
    super('MISMATCH', message);
  }
}
/** A backend (the addon, MPI, NCCL, CUDA) is missing or was not built. */
export class BackendUnavailableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BACKEND_UNAVAILABLE', message, options);
  }
}
/** A compressed payload failed its checks. */
export class CorruptPayloadError extends BraidError {
  constructor(message: string) {
    super('CORRUPT_PAYLOAD', message);
  }
}
/** An operation did not complete in time (a rank stopped or never made the call). */
export class TimeoutError extends BraidError {
  constructor(message: string) {
    super('TIMEOUT', message);
  }
}
/** A peer failed or the communicator was closed. */
export class AbortedError extends BraidError {
  constructor(message: string) {
    super('ABORTED', message);
  }
}

const byCode: Record<BraidErrorCode, new (message: string) => BraidError> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  MISMATCH: MismatchError,
  BACKEND_UNAVAILABLE: BackendUnavailableError,
  CORRUPT_PAYLOAD: CorruptPayloadError,
  TIMEOUT: TimeoutError,
  ABORTED: AbortedError,
};

/**
 * Turns an error from the addon into a BraidError whose stack is the caller's: `site` is an
 * object whose stack was captured where the user called us, so a native failure points at the
 * user's line rather than at a Promise callback.
 */
export function fromNative(err: unknown, site?: { stack?: string }): BraidError {
  if (err instanceof BraidError) return err;
  const e = err as { code?: string; message?: string };
  const code = (e?.code && e.code in byCode ? e.code : 'ABORTED') as BraidErrorCode;
  const message = e?.message ?? String(err);
  const out = new byCode[code](message);
  if (site?.stack) {
    const frames = site.stack.split('\n').slice(1).join('\n');
    out.stack = `${out.name}: ${message}\n${frames}`;
  }
  return out;
}
