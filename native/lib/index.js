// Loads the compiled addon. The API is @braid/collectives; this package is its native half.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** Folder holding the addon and the native test and benchmark programs. */
export const buildDir = join(dirname(dirname(fileURLToPath(import.meta.url))), 'build', 'Release');

let addon;
/** The addon; throws an Error with code 'BACKEND_UNAVAILABLE' saying how to build it. */
export function loadAddon() {
  if (addon) return addon;
  try {
    addon = require(join(buildDir, 'braid_native.node'));
  } catch (cause) {
    const err = new Error(
      `@braid/native could not be loaded (${cause.message.split('\n')[0]}). ` +
        'Build it with `npm rebuild @braid/native`; it needs MPI (Debian/Ubuntu: apt-get install -y libopenmpi-dev openmpi-bin), ' +
        'CMake and a C++ compiler.',
      { cause },
    );
    err.code = 'BACKEND_UNAVAILABLE';
    throw err;
  }
  return addon;
}
