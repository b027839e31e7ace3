#!/usr/bin/env node
// The packages as a user installs them: every package packed with `npm pack`, each tarball's
// files checked (LICENSE, README, what loads, no tests, source maps whose sources are there), then
// installed into a fresh project the way the README says, with npm as it comes and with
// --strict-allow-scripts, where the README's example trains on 2 ranks through `braid run`;
// `braid --version` and `braid doctor` answer, and a TypeScript file type-checks against the
// installed types. Ends with "packages: N passed, N failed, 0 skipped" (scripts/count-tests.mjs).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = dirname(dirname(fileURLToPath(import.meta.url)));
const packages = ['native', 'packages/collectives', 'packages/strategies', 'packages/compression', 'packages/trainer', 'packages/model-compression'];
const work = mkdtempSync(join(tmpdir(), 'braid-packages-'));
const tfjsVersion = JSON.parse(readFileSync(join(repo, 'packages/trainer/package.json'), 'utf8')).devDependencies['@tensorflow/tfjs'];
let passed = 0;
let failed = 0;

function check(what, ok, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${!ok && detail ? `\n     ${detail.replace(/\n/g, '\n     ')}` : ''}`);
}

function sh(cwd, program, args, env = {}) {
  const r = spawnSync(program, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_fund: 'false', npm_config_audit: 'false', ...env }, timeout: 600_000 });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, stdout: r.stdout ?? '' };
}

// 1. The tarballs and their files.
const tarballs = join(work, 'tarballs');
mkdirSync(tarballs);
const files = {};
for (const dir of packages) {
  const r = sh(join(repo, dir), 'npm', ['pack', '--json', '--pack-destination', tarballs]);
  const [info] = JSON.parse(r.stdout);
  files[dir] = { tarball: join(tarballs, info.filename), list: info.files.map((f) => f.path) };
}
for (const dir of packages) {
  const { tarball, list } = files[dir];
  const name = relative(repo, dir) || dir;
  check(`${name}: the tarball has LICENSE, README.md and package.json`, ['LICENSE', 'README.md', 'package.json'].every((f) => list.includes(f)), list.join(' '));
  check(`${name}: no tests or test helpers in the tarball`, !list.some((f) => /\.test\.|test-support|^test\/|^build/.test(f)), list.filter((f) => /\.test\.|test-support|^test\/|^build/.test(f)).join(' '));
  if (dir === 'native') {
    check('native: the tarball has what the build needs and no more', ['CMakeLists.txt', 'scripts/build.mjs', 'lib/index.js', 'bench/allreduce_bench.cc', 'bench/calibrate.cc', 'src/engine/engine.cc'].every((f) => list.includes(f)) &&
      !list.some((f) => /^bench\/(compress|tcp_streams|protocol)/.test(f)), list.filter((f) => !f.startsWith('src/')).join(' '));
    continue;
  }
  check(`${name}: the tarball has dist/index.js and its types`, list.includes('dist/index.js') && list.includes('dist/index.d.ts'));
  // Every source map's sources are in the tarball.
  const unpacked = join(work, 'unpacked', name.replace(/\//g, '-'));
  mkdirSync(unpacked, { recursive: true });
  execFileSync('tar', ['xzf', tarball, '-C', unpacked]);
  const dangling = [];
  for (const map of list.filter((f) => f.endsWith('.map'))) {
    const { sources } = JSON.parse(readFileSync(join(unpacked, 'package', map), 'utf8'));
    for (const source of sources) if (!existsSync(resolve(dirname(join(unpacked, 'package', map)), source))) dangling.push(`${map} -> ${source}`);
  }
  check(`${name}: every source map's sources are in the tarball`, dangling.length === 0, dangling.slice(0, 5).join('\n'));
}

// 2. A fresh project, installed as the README says, in both of npm 11's modes.
const example = /```js\n(\/\/ train\.mjs[\s\S]*?)```/.exec(readFileSync(join(repo, 'packages/trainer/README.md'), 'utf8'))?.[1];
check('trainer README: has a complete example (train.mjs)', example !== undefined);
const pruneExample = /```js\n(\/\/ prune\.mjs[\s\S]*?)```/.exec(readFileSync(join(repo, 'packages/model-compression/README.md'), 'utf8'))?.[1];
check('model-compression README: has a complete example (prune.mjs)', pruneExample !== undefined);
for (const mode of ['as-it-comes', 'strict']) {
  const project = join(work, mode);
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: `braid-user-${mode}`, version: '1.0.0', private: true, type: 'module' }, null, 2));
  if (mode === 'strict') writeFileSync(join(project, '.npmrc'), 'strict-allow-scripts=true\n');
  const ours = packages.map((dir) => files[dir].tarball);
  const started = Date.now();
  const steps = [
    ['npm', ['install', '--ignore-scripts', ...ours, `@tensorflow/tfjs@${tfjsVersion}`, '@types/node@^20']],
    ['npm', ['install-scripts', 'approve', '@braid/native']],
    ['npm', ['install-scripts', 'deny', 'core-js']],
  ];
  let ok = true;
  for (const [program, args] of steps) {
    const r = sh(project, program, args);
    if (r.status !== 0) {
      check(`${mode}: ${program} ${args.slice(0, 2).join(' ')} succeeds`, false, r.out.slice(-1500));
      ok = false;
      break;
    }
  }
  if (!ok) continue;
  const buildStarted = Date.now();
  const rebuild = sh(project, 'npm', ['rebuild', '@braid/native']);
  const buildSeconds = (Date.now() - buildStarted) / 1000;
  const addon = join(project, 'node_modules/@braid/native/build/Release/braid_native.node');
  check(`${mode}: npm rebuild @braid/native builds the addon (${buildSeconds.toFixed(0)} s)`, rebuild.status === 0 && existsSync(addon), rebuild.out.slice(-1500));
  check(`${mode}: the user build leaves the native tests and CUDA kernels out`, !existsSync(join(project, 'node_modules/@braid/native/build/Release/braid_kernels_test')));
  if (mode === 'strict') {
    // Everything with an install script is approved or denied: a strict install goes through.
    const again = sh(project, 'npm', ['install']);
    check('strict: npm install --strict-allow-scripts goes through after approve/deny', again.status === 0, again.out.slice(-1500));
  }
  console.log(`     (${mode}: installed in ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  const braid = (...args) => sh(project, 'npx', ['--no-install', 'braid', ...args], { BRAID_PROGRESS: 'lines' });
  const version = braid('--version');
  check(`${mode}: braid --version`, version.status === 0 && /^braid 0\.1\.0 /.test(version.stdout), version.out);
  writeFileSync(join(project, 'train.mjs'), example);
  const trained = braid('run', '-np', '2', 'train.mjs');
  const accuracy = Number(/accuracy (\d\.\d+)/.exec(trained.stdout)?.[1]);
  check(`${mode}: the README's example trains on 2 ranks through braid run (accuracy ${accuracy})`, trained.status === 0 && accuracy >= 0.9, trained.out.slice(-2000));
  const rerun = braid('run', '-np', '2', 'train.mjs');
  check(`${mode}: run again, it says the checkpoint is from a finished run and how to start over`, rerun.status === 0 && /nothing to train: the checkpoint in ckpt is from a finished run \(5 of 5 epochs done\); to train again from the start, remove that folder or pass resume: false/.test(rerun.out), rerun.out.slice(-1500));
  if (mode !== 'strict') {
    writeFileSync(join(project, 'prune.mjs'), pruneExample);
    const pruned = braid('run', '-np', '2', 'prune.mjs');
    check(`${mode}: the model-compression README's example prunes on 2 ranks and writes a uint8 model`, pruned.status === 0 && /dense_Dense\d+\/kernel: 80% zeros/.test(pruned.stdout) && existsSync(join(project, 'pruned-uint8', 'model.json')), pruned.out.slice(-2000));
    continue;
  }
  const doctor = braid('doctor', '--json');
  const checks = doctor.status === 0 || doctor.status === 1 ? JSON.parse(doctor.stdout) : [];
  const byName = Object.fromEntries(checks.map((c) => [c.name, c]));
  check('braid doctor: the addon built, MPI and tfjs found', byName['@braid/native']?.status === 'ok' && byName.mpirun?.status === 'ok' && checks.some((c) => /tfjs|TensorFlow/.test(c.name) && c.status === 'ok'), doctor.out.slice(-1500));
  // The addon missing (as when its install script never ran): doctor says how to build it.
  rmSync(addon);
  const missing = JSON.parse(braid('doctor', '--json').stdout).find((c) => c.name === '@braid/native');
  check('braid doctor without the addon built says to approve and rebuild it', missing?.status === 'missing' && /npm install-scripts approve @braid\/native && npm rebuild @braid\/native/.test(missing.fix ?? ''), JSON.stringify(missing));
  // TypeScript against the installed types, declaration files included (tsc from the
  // repository; tfjs-core as the packages' types use it: tfjs-layers' own declarations do not
  // pass a strict check).
  writeFileSync(
    join(project, 'check.ts'),
    `import { init, type Communicator, BraidError } from '@braid/collectives';
import { DataParallel } from '@braid/strategies';
import { createCompressor, ErrorFeedback } from '@braid/compression';
import { fit, ElasticState, type FitOptions } from '@braid/trainer';
import { distillationLoss, MagnitudePruning, polynomialDecay, quantizeModel } from '@braid/model-compression';
import * as tf from '@tensorflow/tfjs-core';
export async function main(): Promise<number> {
  const comm: Communicator = await init();
  const dp = new DataParallel(comm, { compression: () => new ErrorFeedback(createCompressor('topk', { ratio: 0.01 })) });
  const options: FitOptions = { epochs: 1, strategy: dp, commitEvery: 10 };
  const w = tf.variable(tf.zeros([2]));
  const state = new ElasticState(dp, { step: 0 }, { dir: 'commits', variables: [w] });
  state.values.step += 1;
  const privateDp = new DataParallel(comm, { privacy: { clipNorm: 1, noiseMultiplier: 1.1, secureAggregation: true } });
  const spent: number = privateDp.differentialPrivacy!.epsilon(0.01).epsilon;
  void fit; void options; void BraidError; void spent;
  void MagnitudePruning; void polynomialDecay({ finalSparsity: 0.9, endStep: 100 }); void quantizeModel; void distillationLoss;
  return comm.size;
}
`,
  );
  writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({ compilerOptions: { target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, skipLibCheck: false }, files: ['check.ts'] }));
  const tsc = sh(project, process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json']);
  check('TypeScript: a file using every package type-checks against the installed types', tsc.status === 0, tsc.out.slice(-2000));
}

rmSync(work, { recursive: true, force: true });
console.log(`packages: ${passed} passed, ${failed} failed, 0 skipped`);
process.exit(failed === 0 ? 0 : 1);
