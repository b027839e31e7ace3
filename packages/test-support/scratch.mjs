import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Kept on globalThis: the setup file and a test may load this module as two instances.
const made = (globalThis[Symbol.for('braid.scratchDirs')] ??= []);

/** A fresh folder under the system's temporary folder, removed when the test file ends. */
export function scratchDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Removes every folder scratchDir made in this process. */
export function removeScratchDirs() {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}
