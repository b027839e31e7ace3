// Shared settings: packages/test-support/vitest.mjs.
export { default } from '@braid/test-support/vitest';
