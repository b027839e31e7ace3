// Which checkpoint a job resumes from, and how every rank gets it. With one shared folder, rank 0
// reads its newest. With a copy on every host (checkpointOnEveryHost), the copies can differ: a
// host that joined late has none, or an older one; so each host's first rank says the step of its
// newest, and the rank holding the newest of all reads it for everyone (the lowest such rank).
import { agreeOnSuccess, InvalidArgumentError } from '@braid/collectives';
import type { DataParallel } from '@braid/strategies';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { latestCheckpoint, packCheckpoint } from './checkpoint.js';

export interface NewestCheckpoint {
  /** The packed checkpoint (empty when there is none anywhere), on every rank. */
  packed: Uint8Array;
  /** The folder it was read from, on the rank that read it (else ''). */
  folder: string;
  /** The rank that read it. */
  source: number;
}

/** The global step of the newest checkpoint in `dir` on this machine, or -1. */
function newestStep(dir: string): number {
  if (!existsSync(join(dir, 'latest'))) return -1;
  const folder = latestCheckpoint(dir)!;
  const step = Number(JSON.parse(readFileSync(join(folder, 'state.json'), 'utf8')).globalStep);
  if (!Number.isSafeInteger(step) || step < 0) throw new InvalidArgumentError(`checkpoint: ${folder}/state.json has no valid globalStep; remove ${dir} to start over`);
  return step;
}

export async function readNewestCheckpoint(strategy: DataParallel, dir: string, onEveryHost: boolean, what: string): Promise<NewestCheckpoint> {
  const comm = strategy.comm;
  let source = 0;
  if (onEveryHost) {
    const mine = await agreeOnSuccess(comm, `${what}: finding the newest checkpoint`, () => (comm.localRank === 0 ? newestStep(dir) : -1));
    const steps = (await comm.allGather(new Float64Array([mine]))) as Float64Array;
    let best = -1;
    steps.forEach((step, rank) => {
      if (step > best) [best, source] = [step, rank];
    });
    if (best < 0) return { packed: new Uint8Array(0), folder: '', source: 0 };
  }
  let folder = '';
  const packed = await agreeOnSuccess(comm, `${what}: reading the checkpoint`, () => {
    if (comm.rank !== source) return new Uint8Array(0);
    const found = latestCheckpoint(dir);
    if (!found) return new Uint8Array(0);
    folder = found;
    return packCheckpoint(found);
  });
  return { packed: await strategy.broadcastBytes(packed, source), folder, source };
}
