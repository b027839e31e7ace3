#!/usr/bin/env node
// The `braid` command: run (a job through mpirun), doctor (what is installed), bench (all-reduce).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve as resolvePath } from 'node:path';

import { diagnose, formatChecks } from './doctor.js';
import { formatPlan, parsePlanArgs, PLAN_USAGE, planNumbers, planRows } from './plan.js';
import { launchElastic } from './elastic-launch.js';
import { preflight, startJob } from './job.js';
import { mpirunCommand, NODE_SCRIPT, parseRunArgs, type RunPlan, RUN_USAGE, shellLine, UsageError } from './launch.js';
import { parseSetupArgs, SetupError, SETUP_USAGE, setupTfjsNode } from './tfjs-node-setup.js';

const CALIBRATE_USAGE = `usage: braid calibrate [-np N] [-H host1:slots,host2:slots | --hostfile FILE] [--agent A] [--mpi-args "..."]
                       [--out braid-profile.json] [--seconds 1]
  Measures, on the ranks it starts (default 2 here; give hosts with two ranks on at least one to
  measure every link class), latency and bandwidth between hosts (TCP) and within a host, shared
  memory's barrier and copy speed and the reduction kernels' speed, and writes a cost profile.
  init() reads it from BRAID_PROFILE (or its profile option): auto then chooses by the model, and
  braid plan --profile predicts with it.`;

const USAGE = `usage: braid <command> [options]

commands (braid --version prints the version):
  run      start a training script on N ranks through mpirun (like horovodrun)
  doctor   report MPI, the native addon, CUDA, NCCL and TensorFlow.js, and how to fix what is missing
  setup    setup tfjs-node: build @tensorflow/tfjs-node from source against a TensorFlow wheel's C library
  plan     predict a training step's all-reduce time and scaling efficiency per algorithm and compressor
  calibrate  measure this cluster's links and kernels into a cost profile (init reads it: BRAID_PROFILE)
  bench    run a benchmark: allreduce (native, every algorithm beside MPI_Allreduce; the default)
           or training (the MNIST MLP at np=1 and 2; needs a clone of the Braid repository)

${RUN_USAGE}

${PLAN_USAGE}

${CALIBRATE_USAGE}

${SETUP_USAGE}

usage: braid doctor [--json]
usage: braid bench [allreduce] [-np N] [-- options of braid_allreduce_bench, e.g. --max-bytes 16777216]
       braid bench training [options of benchmarks/training.mjs, e.g. --quick]`;

async function launch(plan: RunPlan): Promise<number> {
  // On this host alone, a missing script is known now (on several hosts the preflight tells).
  const script = plan.command[0]!;
  if (!plan.hosts && !plan.hostfile && !plan.elastic && !plan.dryRun && NODE_SCRIPT.test(script) && !existsSync(script)) {
    throw new UsageError(`the script ${script} does not exist${isAbsolute(script) ? '' : ` in ${process.cwd()}`}`);
  }
  if (plan.elastic) return launchElastic(plan);
  const command = mpirunCommand(plan, process.env, { isRoot: process.getuid?.() === 0, isTTY: Boolean(process.stdout.isTTY) });
  if (plan.dryRun) {
    process.stdout.write(`${shellLine(command)}\n`);
    return 0;
  }
  if (plan.hosts || plan.hostfile) {
    const problem = preflight(plan);
    if (problem) {
      process.stderr.write(`braid run: ${problem}\n`);
      return 1;
    }
  }
  const job = startJob(plan);
  const forward = (signal: NodeJS.Signals) => job.child?.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  const end = await job.done;
  if (end.notStarted) {
    process.stderr.write(`braid run: ${end.notStarted}\n`);
    return end.status;
  }
  if (end.status !== 0) process.stderr.write(`braid run: the job failed (exit code ${end.status})${end.failure ? `: ${end.failure}` : ''}\n`);
  return end.status;
}

async function plan(argv: string[]): Promise<number> {
  const args = parsePlanArgs(argv);
  const { loadAddon } = await import('@braid/native');
  const addon = loadAddon();
  const { numbers, note } = planNumbers(args, addon.costDefaults());
  const rows = planRows(args, numbers, (q) => addon.predict(q));
  process.stdout.write(args.json ? `${JSON.stringify({ ...args, numbers, rows }, null, 1)}\n` : `${formatPlan(args, rows, note)}\n`);
  return 0;
}

async function calibrate(argv: string[]): Promise<number> {
  let out = 'braid-profile.json';
  let seconds = '1';
  const runArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') out = argv[++i] ?? out;
    else if (argv[i] === '--seconds') seconds = argv[++i] ?? seconds;
    else runArgs.push(argv[i]!);
  }
  if (!/^\d+(\.\d+)?$/.test(seconds)) throw new UsageError(`calibrate: --seconds takes a number; got ${JSON.stringify(seconds)}\n${CALIBRATE_USAGE}`);
  if (!runArgs.some((a) => a === '-np' || a === '-n' || a === '--np')) runArgs.unshift('-np', '2');
  const { buildDir } = await import('@braid/native');
  const { BRAID_VERSION } = await import('@braid/collectives');
  const program = join(buildDir, 'braid_calibrate');
  if (!existsSync(program)) throw new UsageError(`calibrate: ${program} is missing; rebuild the addon with \`npm rebuild @braid/native\``);
  const target = resolvePath(out);
  const status = await launch(parseRunArgs([...runArgs, program, '--out', target, '--braid-version', BRAID_VERSION, '--seconds', seconds]));
  if (status === 0) process.stderr.write(`braid calibrate: wrote ${target}; use it with BRAID_PROFILE=${target} (rank 0's host reads it) or braid plan --profile ${target}\n`);
  return status;
}

async function bench(argv: string[]): Promise<number> {
  if (argv[0] === 'training') {
    // The training benchmark uses the repository's examples (MNIST) and benchmarks folders.
    let dir = process.cwd();
    while (!existsSync(join(dir, 'benchmarks', 'training.mjs')) && dirname(dir) !== dir) dir = dirname(dir);
    const script = join(dir, 'benchmarks', 'training.mjs');
    if (!existsSync(script)) throw new UsageError('bench training: run it from a clone of the Braid repository (it needs benchmarks/training.mjs and examples/)');
    const child = spawnSync(process.execPath, [script, ...argv.slice(1)], { stdio: 'inherit' });
    return child.status ?? 1;
  }
  if (argv[0] === 'allreduce') argv = argv.slice(1);
  let np = 2;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-np' || argv[i] === '-n' || argv[i] === '--np') np = Number(argv[++i]);
    else if (argv[i] === '--') rest.push(...argv.slice(i + 1)), (i = argv.length);
    else rest.push(argv[i]!);
  }
  if (!Number.isInteger(np) || np < 1) throw new UsageError('bench: -np must be a positive integer');
  const { buildDir } = await import('@braid/native');
  const program = join(buildDir, 'braid_allreduce_bench');
  if (!existsSync(program)) throw new UsageError(`bench: ${program} is missing; rebuild the addon with \`npm rebuild @braid/native\``);
  return launch({ np, bindTo: 'none', dryRun: false, verbose: false, mpiArgs: [], command: [program, ...rest] });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return launch(parseRunArgs(rest));
    case 'doctor': {
      const checks = await diagnose();
      process.stdout.write(rest.includes('--json') ? `${JSON.stringify(checks, null, 2)}\n` : `${formatChecks(checks)}\n`);
      return checks.some((c) => c.status === 'missing') ? 1 : 0;
    }
    case 'setup':
      try {
        setupTfjsNode(parseSetupArgs(rest));
        return 0;
      } catch (err) {
        if (!(err instanceof SetupError)) throw err;
        process.stderr.write(`braid setup: ${err.message}\n`);
        return 1;
      }
    case 'bench':
      return bench(rest);
    case 'plan':
      return plan(rest);
    case 'calibrate':
      return calibrate(rest);
    case '--version':
    case '-V':
    case 'version': {
      const own = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
      process.stdout.write(`braid ${own.version} (@braid/trainer; Node.js ${process.version})\n`);
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 1 : 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    // A bad profile is the user's to fix, like a bad option: its message says how.
    const usage = err instanceof UsageError || (err as { code?: string }).code === 'INVALID_ARGUMENT';
    process.stderr.write(`braid: ${usage ? (err as Error).message : (err as Error).stack}\n`);
    process.exit(usage ? 2 : 1);
  },
);
