// Cost profiles: what `braid calibrate` measured (latency and bandwidth per link class, the
// reduction kernels' speed), read by init() so that `auto` chooses by the calibrated model, and by
// `braid plan`. A profile is JSON:
//   { "format": "braid-profile", "version": 2, "braid": "0.1.0", "created": "...",
//     "hosts": [...], "numbers": { networkAlphaUs, ..., calibratedPerHost }, "measured": {...} }
// (PROFILE_FIELDS lists the numbers; native/src/algorithms/cost_model.h says what each is.)
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import type { ProfileNumbers } from '@braid/native';

import { InvalidArgumentError } from './errors.js';

export type { ProfileNumbers } from '@braid/native';

export const PROFILE_FORMAT = 'braid-profile';
export const PROFILE_VERSION = 2;
export const PROFILE_FIELDS: ReadonlyArray<keyof ProfileNumbers> = [
  'networkAlphaUs',
  'networkBetaUsPerByte',
  'localAlphaUs',
  'localBetaUsPerByte',
  'ringStepAlphaUs',
  'ringStepBetaUsPerByte',
  'crossAllAlphaUs',
  'crossAllBetaUsPerByte',
  'localAllAlphaUs',
  'localAllBetaUsPerByte',
  'shmBarrierUs',
  'shmCopyUsPerByte',
  'gammaUsPerByte',
  'opUs',
  'overlap',
  'calibratedHosts',
  'calibratedPerHost',
];

/**
 * The measured times the model interpolates: the links' exchanges (measured.<link>.exchangeUs),
 * and the staged NCCL all-reduce's whole op (measured.ncclStaged.allReduceUs, where calibrate
 * found a GPU and NCCL on every rank).
 */
const CURVES = [
  ['ringStep', 'exchangeUs'],
  ['crossAll', 'exchangeUs'],
  ['localAll', 'exchangeUs'],
  ['ncclStaged', 'allReduceUs'],
  ['allPeers', 'exchangeUs'],
] as const;
const MAX_CURVE_POINTS = 8; // LinkCost::kMaxPoints (cost_model.h)

/** The Braid version profiles are made by and for. */
export const BRAID_VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export interface Profile {
  format: typeof PROFILE_FORMAT;
  version: number;
  braid: string;
  created: string;
  hosts: string[];
  numbers: ProfileNumbers;
  measured?: unknown;
}

/**
 * Reads and checks a profile; throws InvalidArgumentError naming the file and what to fix: a
 * missing or unreadable file, JSON that is not a Braid profile, a field that is not a positive
 * number, or a profile from another Braid version.
 */
export function readProfile(path: string): Profile {
  const again = `run \`braid calibrate --out ${path}\` to make one`;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InvalidArgumentError(
      `the cost profile ${path} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (err as Error).message})`}; ${again}, or unset BRAID_PROFILE`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`the cost profile ${path} is not JSON (${(err as Error).message}); ${again}`);
  }
  const p = parsed as Partial<Profile> | null;
  if (p === null || typeof p !== 'object' || p.format !== PROFILE_FORMAT) {
    throw new InvalidArgumentError(`${path} is not a Braid cost profile (its "format" is not "${PROFILE_FORMAT}"); ${again}`);
  }
  if (p.version !== PROFILE_VERSION || p.braid !== BRAID_VERSION) {
    throw new InvalidArgumentError(
      `the cost profile ${path} was made by Braid ${String(p.braid)} (profile version ${String(p.version)}); this is Braid ${BRAID_VERSION} (profile version ${PROFILE_VERSION}): ${again} again`,
    );
  }
  const numbers = p.numbers as Partial<ProfileNumbers> | undefined;
  if (numbers === undefined || typeof numbers !== 'object') throw new InvalidArgumentError(`the cost profile ${path} has no "numbers"; ${again}`);
  for (const field of PROFILE_FIELDS) {
    const value = numbers[field];
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new InvalidArgumentError(`the cost profile ${path}: numbers.${field} must be a non-negative number; got ${JSON.stringify(value)}; ${again}`);
    }
  }
  // The measured times, which the model interpolates.
  const measured = (p.measured ?? {}) as Record<string, Record<string, unknown> | undefined>;
  for (const [link, key] of CURVES) {
    const points = measured[link]?.[key];
    if (points === undefined) continue;
    const ok =
      Array.isArray(points) &&
      points.length <= MAX_CURVE_POINTS &&
      points.every((q, i) => Array.isArray(q) && q.length === 2 && q.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0) &&
        (i === 0 || (q[0] as number) > (points[i - 1] as number[])[0]!));
    if (!ok) {
      throw new InvalidArgumentError(
        `the cost profile ${path}: measured.${link}.${key} must be up to ${MAX_CURVE_POINTS} [bytes, microseconds] pairs of non-negative numbers, bytes ascending; ${again}`,
      );
    }
    numbers[`${link}Curve`] = points as Array<[number, number]>;
  }
  return p as Profile;
}
