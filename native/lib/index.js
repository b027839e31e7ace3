// Loads the compiled addon. The API is @braid/collectives; this package is its native half.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/**
 * Folder holding the addon and the native test and benchmark programs; BRAID_NATIVE_DIR loads
 * another build (the sanitizer builds of `npm run test:sanitize`).
 */
export const buildDir = process.env.BRAID_NATIVE_DIR || join(dirname(dirname(fileURLToPath(import.meta.url))), 'build', 'Release');

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

// One array reused by every call: submit() reads it before returning, and reading eleven
// integers from one typed array costs a fraction of eleven property lookups on an object. The
// order is the addon's (src/addon/addon.cc, SpecField).
const encoded = new Int32Array(11);

/** The numeric fields of `spec` as submit() takes them (valid until the next call). */
export function encodeOp(spec) {
  encoded[0] = spec.comm;
  encoded[1] = spec.kind;
  encoded[2] = spec.dtype ?? 0;
  encoded[3] = spec.op ?? 0;
  encoded[4] = spec.algorithm ?? 0;
  encoded[5] = spec.root ?? 0;
  encoded[6] = spec.color ?? 0;
  encoded[7] = spec.key ?? 0;
  encoded[8] = spec.iterations ?? 1;
  encoded[9] = spec.peer ?? 0;
  encoded[10] = spec.tag ?? 0;
  return encoded;
}
