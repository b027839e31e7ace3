// What every benchmark script reads its command line with, and the median its figures are.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** `opt('--np', '2')`: the value after a flag, or the fallback; `args`: the arguments themselves. */
export function commandLine(argv = process.argv.slice(2)) {
  const opt = (name, fallback) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : fallback;
  };
  return { args: argv, opt };
}

/** The middle value (the upper one of the two middle values for an even count). */
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The median of `runs` timed calls of the async `fn` (milliseconds), after one warm-up call. */
export async function medianMs(fn, runs = 10) {
  await fn();
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return median(times);
}

/**
 * For a script that is its own MPI job: started plainly, it runs itself under `braid run -np
 * <--np, default 2>` and exits with the job's status; started by mpirun, it returns.
 */
export function runUnderBraid(scriptUrl, opt) {
  if (process.env.OMPI_COMM_WORLD_SIZE) return;
  const here = fileURLToPath(scriptUrl);
  const cli = join(dirname(dirname(here)), 'packages', 'trainer', 'dist', 'cli.js');
  const r = spawnSync(process.execPath, [cli, 'run', '-np', opt('--np', '2'), here, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
