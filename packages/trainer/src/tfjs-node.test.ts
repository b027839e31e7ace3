// `braid setup tfjs-node` (tfjs-node built against a TensorFlow wheel's C library), selectBackend
// and the per-rank TensorFlow threads.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { tfjsNode } from '@braid/test-support/backend';
import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

import { UsageError } from './launch.js';
import { localRanks, tensorflowThreads } from './tensorflow-threads.js';
import { defaultCacheDir, findLibrary, parseSetupArgs, SetupError, setupTfjsNode } from './tfjs-node-setup.js';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');
const braid = (args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env) =>
  spawnSync(process.execPath, [cli, ...args], { cwd, encoding: 'utf8', env, timeout: 300_000 });

function project(): string {
  const dir = scratchDir('braid-setup-');
  writeFileSync(join(dir, 'package.json'), '{"name": "p", "version": "1.0.0", "private": true}\n');
  return dir;
}

describe('braid setup tfjs-node: options and errors', () => {
  it('parses its options and refuses bad ones with the usage', () => {
    const options = parseSetupArgs(['tfjs-node', '--wheel', 'tf.whl', '--cache', '/c', '--force'], {}, '/work');
    expect(options).toEqual({ wheel: '/work/tf.whl', gpu: false, cache: '/c', project: '/work', force: true });
    expect(parseSetupArgs(['tfjs-node', '--gpu'], { BRAID_CACHE_DIR: '/x' }, '/w')).toMatchObject({ gpu: true, cache: '/x' });
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/xdg' })).toBe('/xdg/braid');
    expect(() => parseSetupArgs([], {}, '/w')).toThrow(/setup: name what to set up \(braid setup tfjs-node\)/);
    expect(() => parseSetupArgs(['tfjs'], {}, '/w')).toThrow(/unknown target "tfjs"/);
    expect(() => parseSetupArgs(['tfjs-node', '--wheel'], {}, '/w')).toThrow(/--wheel takes a path/);
    expect(() => parseSetupArgs(['tfjs-node', '--wheel', 'a.whl', '--libtensorflow', 'd'], {}, '/w')).toThrow(/give --wheel or --libtensorflow, not both/);
    expect(() => parseSetupArgs(['tfjs-node', '--fast'], {}, '/w')).toThrow(UsageError);
  });

  it('finds a library laid out as the wheel does (tensorflow/) or as libtensorflow tarballs do (lib/, include/), and says what a folder lacks', () => {
    const wheelLike = scratchDir('braid-lib-');
    mkdirSync(join(wheelLike, 'tensorflow', 'include', 'tensorflow', 'c'), { recursive: true });
    for (const f of ['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2', 'include/tensorflow/c/c_api.h']) writeFileSync(join(wheelLike, 'tensorflow', f), '');
    expect(findLibrary(wheelLike)).toEqual({
      dir: join(wheelLike, 'tensorflow'),
      main: join(wheelLike, 'tensorflow', 'libtensorflow_cc.so.2'),
      framework: join(wheelLike, 'tensorflow', 'libtensorflow_framework.so.2'),
      include: join(wheelLike, 'tensorflow', 'include'),
    });
    const tarball = scratchDir('braid-lib-');
    mkdirSync(join(tarball, 'lib'));
    mkdirSync(join(tarball, 'include', 'tensorflow', 'c'), { recursive: true });
    for (const f of ['lib/libtensorflow.so.2', 'lib/libtensorflow_framework.so.2']) writeFileSync(join(tarball, f), '');
    expect(findLibrary(tarball)).toBe(`${join(tarball, 'lib')} has the libraries but no include/tensorflow/c/c_api.h beside them`);
    writeFileSync(join(tarball, 'include', 'tensorflow', 'c', 'c_api.h'), '');
    expect(findLibrary(tarball)).toMatchObject({ main: join(tarball, 'lib', 'libtensorflow.so.2'), include: join(tarball, 'include') });
    expect(findLibrary(join(tarball, 'nowhere'))).toBe(`${join(tarball, 'nowhere')} does not exist`);
  });

  it('says what to fix: no package.json, a missing or wrong wheel, a folder without the library, no python3', () => {
    const empty = scratchDir('braid-setup-');
    const options = { gpu: false, cache: scratchDir('braid-cache-'), project: empty, force: false };
    expect(() => setupTfjsNode(options, () => {})).toThrow(/has no package.json: run this in your project's folder \(or give --project DIR; `npm init -y` makes one\)/);
    const dir = project();
    expect(() => setupTfjsNode({ ...options, project: dir, wheel: '/nowhere/tf.whl' }, () => {})).toThrow(new SetupError('--wheel /nowhere/tf.whl: no such file'));
    writeFileSync(join(dir, 'tf.zip'), '');
    expect(() => setupTfjsNode({ ...options, project: dir, wheel: join(dir, 'tf.zip') }, () => {})).toThrow(/not a .whl file/);
    // A wheel that is a zip but not TensorFlow's.
    const fake = join(dir, 'tensorflow_cpu-9.9.9-py3-none-any.whl');
    spawnSync('python3', ['-c', `import zipfile; zipfile.ZipFile(${JSON.stringify(fake)}, 'w').writestr('x.txt', 'x')`]);
    expect(() => setupTfjsNode({ ...options, project: dir, wheel: fake }, () => {})).toThrow(/the wheel lacks tensorflow\/libtensorflow_cc.so.2, tensorflow\/libtensorflow_framework.so.2 \(is it a TensorFlow 2.x wheel for Linux\?\)/);
    expect(readdirSync(join(options.cache, 'libtensorflow'))).toEqual([]); // nothing half-unpacked left behind
    expect(() => setupTfjsNode({ ...options, project: dir, libtensorflow: dir }, () => {})).toThrow(/--libtensorflow: .* holds neither libtensorflow_cc.so.2/);
    // Without python3 (and pip) on PATH: the build's tools are named before anything is fetched.
    const bin = scratchDir('braid-bin-');
    for (const tool of ['g++', 'make']) symlinkSync('/bin/true', join(bin, tool));
    expect(() => setupTfjsNode({ ...options, project: dir }, () => {}, { PATH: bin })).toThrow(/the build needs python3 \(node-gyp runs on it\); on Debian\/Ubuntu: sudo apt-get install -y build-essential python3/);
    const result = braid(['setup', 'tfjs-node', '--libtensorflow', dir], dir);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^braid setup: --libtensorflow: /);
  });
});

describe('TensorFlow threads per rank', () => {
  it('share the host\'s cores among its ranks unless told otherwise', () => {
    expect(localRanks({ OMPI_COMM_WORLD_LOCAL_SIZE: '4' })).toBe(4);
    expect(localRanks({ MPI_LOCALNRANKS: '3' })).toBe(3);
    expect(localRanks({})).toBe(1);
    expect(tensorflowThreads({}, { OMPI_COMM_WORLD_LOCAL_SIZE: '4' }, 16)).toEqual({ intraOp: 4, interOp: 4 });
    expect(tensorflowThreads({}, { OMPI_COMM_WORLD_LOCAL_SIZE: '4' }, 2)).toEqual({ intraOp: 1, interOp: 1 });
    expect(tensorflowThreads({}, { OMPI_COMM_WORLD_LOCAL_SIZE: '2', TF_NUM_INTRAOP_THREADS: '3' }, 16)).toEqual({ intraOp: 3, interOp: 3 });
    expect(tensorflowThreads({ intraOpThreads: 2, interOpThreads: 1 }, { TF_NUM_INTRAOP_THREADS: '3' }, 16)).toEqual({ intraOp: 2, interOp: 1 });
    expect(() => tensorflowThreads({ intraOpThreads: 0 })).toThrow('intraOpThreads must be a positive integer; got 0');
  });
});

describe('selectBackend', () => {
  it("selectBackend: 'cpu' stays pure JS; an unknown backend is refused", () => {
    const dir = project();
    writeFileSync(join(dir, 'check.mjs'), `
      import { selectBackend } from ${JSON.stringify(join(dirname(cli), 'index.js'))};
      const out = { cpu: await selectBackend({ backend: 'cpu' }) };
      try { await selectBackend({ backend: 'gpu' }); } catch (err) { out.bad = err.message; }
      console.log(JSON.stringify(out));`);
    const ran = spawnSync(process.execPath, [join(dir, 'check.mjs')], { cwd: dir, encoding: 'utf8' });
    expect(ran.status, ran.stderr).toBe(0);
    expect(JSON.parse(ran.stdout.trim().split('\n').pop()!)).toEqual({
      cpu: { backend: 'cpu', package: '@tensorflow/tfjs-backend-cpu' },
      bad: `backend must be 'auto', 'node' or 'cpu'; got "gpu"`,
    });
  });

  it("without tfjs-node, or with one whose binding is missing: 'auto' falls back to pure JS saying why, 'node' is an error saying what to do", () => {
    // The backend chooser, copied beside node_modules that hold tfjs-core and its CPU backend only:
    // it resolves tfjs-node from where it sits, as it does in a user's project.
    const dir = project();
    writeFileSync(join(dir, 'package.json'), '{"name": "p", "version": "1.0.0", "private": true, "type": "module"}\n');
    mkdirSync(join(dir, 'lib'));
    for (const file of ['tfjs-backend.js', 'tensorflow-threads.js']) copyFileSync(join(dirname(cli), file), join(dir, 'lib', file));
    mkdirSync(join(dir, 'node_modules', '@tensorflow'), { recursive: true });
    const repoModules = join(dirname(cli), '..', '..', '..', 'node_modules', '@tensorflow');
    for (const name of ['tfjs-core', 'tfjs-backend-cpu']) symlinkSync(join(repoModules, name), join(dir, 'node_modules', '@tensorflow', name));
    writeFileSync(join(dir, 'check.mjs'), `
      import { selectBackend } from './lib/tfjs-backend.js';
      const out = {};
      for (const backend of ['auto', 'node']) {
        try { out[backend] = await selectBackend({ backend }); } catch (err) { out[backend] = err.message; }
      }
      console.log(JSON.stringify(out));`);
    const check = () => {
      const ran = spawnSync(process.execPath, [join(dir, 'check.mjs')], { cwd: dir, encoding: 'utf8' });
      expect(ran.status, ran.stderr).toBe(0);
      return JSON.parse(ran.stdout.trim().split('\n').pop()!);
    };
    const missing = 'neither @tensorflow/tfjs-node nor @tensorflow/tfjs-node-gpu is installed; `braid setup tfjs-node` installs and builds it';
    expect(check()).toEqual({
      auto: { backend: 'cpu', package: '@tensorflow/tfjs-backend-cpu', fallback: missing },
      node: `backend 'node': ${missing}`,
    });
    // Installed, but its native binding was never built (npm skipped its install script).
    const tfjsNodeDir = join(dir, 'node_modules', '@tensorflow', 'tfjs-node');
    mkdirSync(tfjsNodeDir);
    writeFileSync(join(tfjsNodeDir, 'package.json'), '{"name": "@tensorflow/tfjs-node", "version": "4.22.0", "main": "index.js"}\n');
    writeFileSync(join(tfjsNodeDir, 'index.js'), "require('./lib/napi-v8/tfjs_binding.node');\n");
    const broken = "@tensorflow/tfjs-node is installed but does not load (Cannot find module './lib/napi-v8/tfjs_binding.node'); build it with `braid setup tfjs-node`";
    expect(check()).toEqual({
      auto: { backend: 'cpu', package: '@tensorflow/tfjs-backend-cpu', fallback: broken },
      node: `backend 'node': ${broken}`,
    });
  });
});

const native = tfjsNode();
describe.skipIf(!native.available)(`tfjs-node built here${native.available ? '' : ` (skipped: ${native.reason})`}`, () => {
  it('braid setup tfjs-node installs and builds it in a fresh project from the cached wheel, a second run only checks, and braid doctor says where libtensorflow came from', () => {
    const dir = project();
    const cache = defaultCacheDir();
    const first = braid(['setup', 'tfjs-node', '--cache', cache], dir);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/installing @tensorflow\/tfjs-node@4\.22\.0 \(its install script downloads a library that is gone; it is skipped\)/);
    expect(first.stderr).toMatch(/@tensorflow\/tfjs-node 4\.22\.0 built: tensorflow backend, TensorFlow \d+\.\d+\.\d+/);
    const again = braid(['setup', 'tfjs-node', '--cache', cache], dir);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/is already built against wheel tensorflow_cpu-[\w.-]+\.whl \(tensorflow backend, TensorFlow/);
    const doctor = braid(['doctor', '--json'], dir);
    const tfjs = JSON.parse(doctor.stdout).find((c: { name: string }) => c.name === 'TensorFlow.js');
    expect(tfjs.status).toBe('ok');
    expect(tfjs.detail).toMatch(/^@tensorflow\/tfjs-node 4\.22\.0: 'tensorflow' backend, TensorFlow [\d.]+, libtensorflow from wheel tensorflow_cpu-/);
    // A program in that project trains on native TensorFlow through selectBackend, with its thread share.
    writeFileSync(join(dir, 'check.mjs'), `
      import { selectBackend } from ${JSON.stringify(join(dirname(cli), 'index.js'))};
      const info = await selectBackend({ backend: 'node' });
      const tf = await import('@tensorflow/tfjs-node');
      console.log(JSON.stringify({ ...info, sum: tf.tensor1d([1, 2, 3]).sum().dataSync()[0], env: process.env.TF_NUM_INTRAOP_THREADS }));`);
    const ran = spawnSync(process.execPath, [join(dir, 'check.mjs')], { cwd: dir, encoding: 'utf8', env: { ...process.env, OMPI_COMM_WORLD_LOCAL_SIZE: '64' } });
    expect(ran.status, ran.stderr).toBe(0);
    expect(JSON.parse(ran.stdout.trim().split('\n').pop()!)).toEqual({ backend: 'tensorflow', package: '@tensorflow/tfjs-node', threads: { intraOp: 1, interOp: 1, applied: true }, sum: 6, env: '1' });
  }, 300_000);
});
