// The vitest settings every Braid package uses.
import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts'],
    // The addon allows one MPI world per process: every test file gets a process of its own.
    pool: 'forks',
    testTimeout: 180_000,
    hookTimeout: 60_000,
    // Removes each file's scratch folders (scratch.mjs) when it ends.
    setupFiles: [fileURLToPath(new URL('./vitest-setup.mjs', import.meta.url))],
  },
});
