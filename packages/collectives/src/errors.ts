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
 * Turns an error from the addon into a BraidError. Called after an `await` in the public async
 * methods, so V8's async stack trace carries the stack on to the caller's line.
 */
export function fromNative(err: unknown): BraidError {
  if (err instanceof BraidError) return err;
  const e = err as { code?: string; message?: string };
  const code = (e?.code && e.code in byCode ? e.code : 'ABORTED') as BraidErrorCode;
  return new byCode[code](e?.message ?? String(err));
}
