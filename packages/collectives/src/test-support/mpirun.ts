import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const workerPath = join(dirname(fileURLToPath(import.meta.url)), 'worker.mjs');

export interface MpiRun {
  code: number | null;
  stdout: string;
  stderr: string;
  results: Array<Record<string, any>>;
  ms: number;
}

/**
 * Starts `mpirun -np <np> node worker.mjs <scenario> <dir>` (oversubscribed, allowed as root) and
 * collects what every rank wrote to <dir>/rank-<r>.json, ordered by rank. Kills the job after
 * `timeoutMs`.
 */
export function mpirun(np: number, scenario: string, options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<MpiRun> {
  const dir = mkdtempSync(join(tmpdir(), `braid-${scenario}-`));
  const env = {
    ...process.env,
    OMPI_ALLOW_RUN_AS_ROOT: '1',
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1',
    OMPI_MCA_rmaps_base_oversubscribe: '1',
    ...options.env,
  };
  const exported = Object.keys(options.env ?? {}).flatMap((k) => ['-x', k]);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('mpirun', ['-np', String(np), '--oversubscribe', ...exported, process.execPath, workerPath, scenario, dir], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 150_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const results = [];
      for (let r = 0; r < np; r++) {
        const file = join(dir, `rank-${r}.json`);
        if (existsSync(file)) results.push(JSON.parse(readFileSync(file, 'utf8')));
      }
      resolve({ code, stdout, stderr, results, ms: Date.now() - started });
    });
  });
}
