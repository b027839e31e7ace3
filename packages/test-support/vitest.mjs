// The vitest settings every Braid package uses.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts'],
    // The addon allows one MPI world per process: every test file gets a process of its own.
    pool: 'forks',
    testTimeout: 180_000,
    hookTimeout: 60_000,
  },
});
