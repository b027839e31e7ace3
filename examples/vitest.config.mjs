import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['**/*.test.mjs'],
    exclude: ['node_modules/**'],
    testTimeout: 600_000,
    // Removes each file's scratch folders when it ends (as the packages' shared settings do).
    setupFiles: [fileURLToPath(new URL('../packages/test-support/vitest-setup.mjs', import.meta.url))],
  },
});
