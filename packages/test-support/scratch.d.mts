/** A fresh folder under the system's temporary folder (mkdtemp of `prefix`), removed when the test file ends. */
export function scratchDir(prefix: string): string;

/** Removes every folder scratchDir made in this process (the shared vitest setup calls it after each file). */
export function removeScratchDirs(): void;
