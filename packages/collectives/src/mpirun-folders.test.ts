// The test harness's own leftovers: a test process killed in the middle of an mpirun job (a run
// stopped with Ctrl-C) cannot remove the folder on /dev/shm that it gave Open MPI (8 MiB of PMIx
// stores, and the ranks' shared-memory segments); the next job removes it, and only it.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { removeOrphanedOpenMpiFolders } from '@braid/test-support/mpirun';
import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

const foldersOf = (pid: number) => readdirSync('/dev/shm').filter((f) => f.startsWith(`mpirun-test-${pid}-`));

describe.skipIf(!existsSync('/dev/shm'))('Open MPI folders on /dev/shm', () => {
  it("a killed test process's folder goes at the next job; a live process's stays", async () => {
    // A test process that starts a job of a rank that sleeps, killed with its whole process group.
    const sleeper = join(scratchDir('braid-sleeper-'), 'sleeper.mjs');
    // It ends once its mpirun is gone (Open MPI starts ranks in process groups of their own).
    writeFileSync(sleeper, 'const parent = process.ppid;\nsetInterval(() => process.ppid !== parent && process.exit(0), 50);\nsetTimeout(() => process.exit(0), 60_000);\n');
    const child = spawn(
      process.execPath,
      ['--input-type=module', '-e', `import { mpirunScript } from '@braid/test-support/mpirun'; await mpirunScript(1, ${JSON.stringify(sleeper)}, []);`],
      { detached: true, stdio: 'ignore' },
    );
    const pid = child.pid!;
    const ended = new Promise((resolve) => child.on('exit', resolve));
    for (let i = 0; i < 300 && foldersOf(pid).length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(foldersOf(pid)).toHaveLength(1);
    process.kill(-pid, 'SIGKILL');
    await ended;
    expect(foldersOf(pid)).toHaveLength(1);  // left behind

    const mine = join('/dev/shm', `mpirun-test-${process.pid}-alive`);
    mkdirSync(mine);
    try {
      removeOrphanedOpenMpiFolders();  // (a job of the other test lane may have been first)
      expect(foldersOf(pid)).toEqual([]);
      expect(existsSync(mine)).toBe(true);
    } finally {
      rmSync(mine, { recursive: true, force: true });
    }
  });

  it('takes only names of the form it makes', () => {
    const dir = scratchDir('braid-shm-folders-');
    const gone = 2 ** 22 + 17;  // above the default pid_max: never a live process
    for (const name of [`mpirun-test-${gone}-a`, `mpirun-test-${process.pid}-b`, 'mpirun-test-c', `braid-${gone}-1`]) mkdirSync(join(dir, name));
    expect(removeOrphanedOpenMpiFolders(dir)).toBe(1);
    expect(readdirSync(dir).sort()).toEqual([`braid-${gone}-1`, 'mpirun-test-c', `mpirun-test-${process.pid}-b`].sort());
  });
});
