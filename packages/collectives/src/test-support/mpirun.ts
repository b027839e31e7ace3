import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { type MpiRun, mpirunScript } from '@braid/test-support/mpirun';

export type { MpiRun };
export const workerPath = join(dirname(fileURLToPath(import.meta.url)), 'worker.mjs');

/** `mpirun -np <np> node worker.mjs <scenario> <dir>`; see mpirunScript. */
export function mpirun(np: number, scenario: string, options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<MpiRun> {
  return mpirunScript(np, workerPath, [scenario], options);
}
