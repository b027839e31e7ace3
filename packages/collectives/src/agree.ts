// One-sided failures made shared: a step that can fail on some ranks only (reading a file on
// rank 0, a check on the others) is followed by an agreement, so every rank fails together
// within milliseconds instead of the others waiting for a collective that never comes.
import type { Communicator } from './communicator.js';
import { AbortedError, BraidError } from './errors.js';

const MESSAGE_BYTES = 1024;

function rankList(ranks: number[]): string {
  return `${ranks.length === 1 ? 'rank' : 'ranks'} ${ranks.join(', ')}`;
}

/**
 * Runs `work` on this rank, then learns from every rank of `comm` whether theirs succeeded. If
 * any failed, every rank throws: the failing ranks their own error, the others an AbortedError
 * that names the failing ranks and the first one's message. Every rank must call it, in the
 * same order as its other collectives.
 */
export async function agreeOnSuccess<T>(comm: Communicator, what: string, work: () => T | Promise<T>): Promise<T> {
  let result: T | undefined;
  let failure: unknown;
  let failed = false;
  try {
    result = await work();
  } catch (err) {
    failure = err;
    failed = true;
  }
  const flags = await comm.allGather(new Uint8Array([failed ? 1 : 0]), { name: `${what}: agree` });
  const failing = [...flags.keys()].filter((r) => flags[r] === 1);
  if (failing.length === 0) return result as T;
  // Everyone learns the first failing rank's message.
  const mine = new Uint8Array(MESSAGE_BYTES);
  if (failed) mine.set(new TextEncoder().encode(String((failure as Error)?.message ?? failure)).subarray(0, MESSAGE_BYTES));
  const messages = await comm.allGather(mine, { name: `${what}: reasons` });
  const first = failing[0]!;
  const firstMessage = new TextDecoder().decode(messages.subarray(first * MESSAGE_BYTES, (first + 1) * MESSAGE_BYTES)).replace(/\0+$/, '');
  if (failed) {
    if (failure instanceof BraidError || failure instanceof Error) throw failure;
    throw new AbortedError(`${what} failed on this rank: ${String(failure)}`);
  }
  throw new AbortedError(`${what} failed on ${rankList(failing)} (${firstMessage}); every rank stops here`);
}
