// NCCL loaded at run time: the loader's search and its refusals, against small stand-in libraries
// built here with g++ (every entry point Braid calls, or one missing, at a chosen version), and
// against a real libnccl.so.2 where this machine has one.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { loadAddon } from '@braid/native';
import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

const ENTRY_POINTS = [
  'ncclGetVersion',
  'ncclGetErrorString',
  'ncclGetUniqueId',
  'ncclCommInitRank',
  'ncclCommInitRankConfig',
  'ncclCommAbort',
  'ncclCommDestroy',
  'ncclCommGetAsyncError',
  'ncclAllReduce',
  'ncclBroadcast',
  'ncclAllGather',
  'ncclReduceScatter',
  'ncclGroupStart',
  'ncclGroupEnd',
];

const dir = scratchDir('braid-nccl-');

/** A shared library exporting `symbols` (ncclGetVersion reports `version`), as NCCL would. */
function standIn(name: string, version: number, symbols = ENTRY_POINTS): string {
  const source = join(dir, `${name}.c`);
  const body = symbols
    .map((s) => (s === 'ncclGetVersion' ? `int ncclGetVersion(int* v) { *v = ${version}; return 0; }` : s === 'ncclGetErrorString' ? 'const char* ncclGetErrorString(int r) { return "stand-in"; }' : `int ${s}(void) { return 0; }`))
    .join('\n');
  writeFileSync(source, body);
  const library = join(dir, `${name}.so`);
  execFileSync('gcc', ['-shared', '-fPIC', '-o', library, source]);
  return library;
}

const addon = loadAddon();
const good = standIn('good', 23007);
const old = standIn('old', 2708); // 2.7.8, in the version code NCCL used before 2.9
const partial = standIn('partial', 23007, ENTRY_POINTS.filter((s) => s !== 'ncclCommGetAsyncError'));
const real = addon.ncclProbe();

describe('the NCCL loader', () => {
  it('takes a library with every entry point at 2.14 or later, and reports its version and path', () => {
    expect(addon.ncclProbe([good])).toEqual({ available: true, version: '2.30.7', versionCode: 23007, path: good, searched: [good] });
  });

  it('refuses a library that is not NCCL, one that lacks an entry point, and one older than 2.14, saying why', () => {
    const libm = addon.ncclProbe(['/lib/x86_64-linux-gnu/libm.so.6']);
    expect(libm.available).toBe(false);
    expect(libm.error).toMatch(/^NCCL is not available: no usable library \(\/lib\/x86_64-linux-gnu\/libm\.so\.6 is not a usable NCCL: it has no ncclGetVersion\)\. Searched: \/lib\/x86_64-linux-gnu\/libm\.so\.6\. Install NCCL 2\.14 or later/);
    expect(addon.ncclProbe([partial]).error).toContain(`${partial} is not a usable NCCL: it has no ncclCommGetAsyncError`);
    expect(addon.ncclProbe([old]).error).toContain(`${old} is NCCL 2.7.8, older than the 2.14.0 Braid needs`);
  });

  it('goes on past refused libraries to the first usable one, and names every refusal when none is', () => {
    expect(addon.ncclProbe([join(dir, 'missing.so'), old, good])).toMatchObject({ available: true, path: good, searched: [join(dir, 'missing.so'), old, good] });
    const none = addon.ncclProbe([old, partial]);
    expect(none.error).toContain(`(${old} is NCCL 2.7.8, older than the 2.14.0 Braid needs; ${partial} is not a usable NCCL: it has no ncclCommGetAsyncError)`);
  });

  it('looks only where BRAID_NCCL_LIB points when it is set, else in the usual places; a missing file there is named', () => {
    const run = (env: Record<string, string>) =>
      spawnSync(process.execPath, ['--input-type=module', '-e', "import('@braid/native').then((m) => console.log(JSON.stringify(m.loadAddon().info().nccl)))"], {
        cwd: join(import.meta.dirname, '..'),
        env: { ...process.env, ...env },
        encoding: 'utf8',
      });
    const forced = JSON.parse(run({ BRAID_NCCL_LIB: good }).stdout);
    expect(forced).toMatchObject({ available: true, version: '2.30.7', path: good, searched: [`BRAID_NCCL_LIB=${good}`] });
    const missing = JSON.parse(run({ BRAID_NCCL_LIB: join(dir, 'nope.so') }).stdout);
    expect(missing.available).toBe(false);
    expect(missing.error).toContain(`no usable library (${join(dir, 'nope.so')}: cannot open shared object file`);
    expect(missing.searched).toEqual([`BRAID_NCCL_LIB=${join(dir, 'nope.so')}`]);
    // pip's nvidia-nccl wheel in a virtual environment is among the usual places.
    const wheel = join(dir, 'lib', 'python3.11', 'site-packages', 'nvidia', 'nccl', 'lib');
    mkdirSync(wheel, { recursive: true });
    copyFileSync(good, join(wheel, 'libnccl.so.2'));
    const usual = JSON.parse(run({ BRAID_NCCL_LIB: '', VIRTUAL_ENV: dir }).stdout);
    expect(usual.searched[0]).toBe("libnccl.so.2 (LD_LIBRARY_PATH and the system's library cache)");
    // (Where this machine has its own NCCL, the search stops there, first.)
    if (!real.available) {
      expect(usual.searched).toContain('/usr/local/cuda/lib64/libnccl.so.2');
      expect(usual).toMatchObject({ available: true, path: join(wheel, 'libnccl.so.2') });
    }
  });

  it("looks last in Braid's cache, where scripts/setup.sh --nccl unpacks the wheel's library", () => {
    const cache = join(dir, 'cache');
    const unpacked = join(cache, 'braid', 'nccl', 'nvidia_nccl_cu13-2.30.7-py3-none-manylinux_2_18_x86_64', 'nvidia', 'nccl', 'lib');
    mkdirSync(unpacked, { recursive: true });
    copyFileSync(good, join(unpacked, 'libnccl.so.2'));
    const probe = spawnSync(process.execPath, ['--input-type=module', '-e', "import('@braid/native').then((m) => console.log(JSON.stringify(m.loadAddon().info().nccl)))"], {
      cwd: join(import.meta.dirname, '..'),
      env: { ...process.env, BRAID_NCCL_LIB: '', XDG_CACHE_HOME: cache, VIRTUAL_ENV: '', CONDA_PREFIX: '' },
      encoding: 'utf8',
    });
    const found = JSON.parse(probe.stdout);
    // A library the user installed (a system or pip NCCL on this machine) comes first.
    if (found.available && !found.searched.includes(join(unpacked, 'libnccl.so.2'))) return;
    expect(found.searched.at(-1)).toBe(join(unpacked, 'libnccl.so.2'));
    expect(found).toMatchObject({ available: true, version: '2.30.7', path: join(unpacked, 'libnccl.so.2') });
  });

  it.skipIf(!real.available)(`loads this machine's own NCCL (${real.available ? real.path : 'none here: no libnccl.so.2 on the search path; bash scripts/setup.sh --nccl (or pip install nvidia-nccl-cu13) to run this'})`, () => {
    expect(real.versionCode).toBeGreaterThanOrEqual(21400);
    expect(real.version).toMatch(/^2\.\d+\.\d+$/);
  });
});
