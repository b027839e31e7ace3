import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { backendInUse } from './backend.mjs';

// What an MPI init in this process (a test's own world of one) leaves in its environment: passed
// on, it makes the mpirun started here believe it runs inside that singleton's job, and it exits
// at once.
const SINGLETON_ENV = /^(PMIX_|OMPI_APP_CTX_|OMPI_MCA_(ess|pmix|orte_launch|orte_ess_num_procs|orte_precondition_transports)$|ORTE_SCHIZO_DETECTION$)/;

export function inheritedEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !SINGLETON_ENV.test(k)));
}

// Open MPI 4 leaves its shared-memory segments (vader_segment.*) behind when a rank is killed, as
// the crash tests do on purpose, and a killed mpirun its session folder (8 MiB of PMIx stores):
// each job keeps both in a folder of its own on /dev/shm, removed when the job ends. A test
// process killed itself (a run stopped with Ctrl-C) cannot remove its folders, so their names
// carry its pid and the next job removes those whose process is gone, and only those.
function openMpiFolder() {
  try {
    removeOrphanedOpenMpiFolders();
    return mkdtempSync(`/dev/shm/mpirun-test-${process.pid}-`);
  } catch {
    return undefined;  // no /dev/shm: Open MPI picks its own place
  }
}

export function removeOrphanedOpenMpiFolders(dir = '/dev/shm') {
  let removed = 0;
  for (const name of readdirSync(dir)) {
    const owner = /^mpirun-test-(\d+)-/.exec(name);
    if (owner === null || processExists(Number(owner[1]))) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

function processExists(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code !== 'ESRCH';
  }
}

export function mpirunScript(np, script, args, options = {}) {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), `braid-${basename(script).replace(/\W+/g, '-')}-`));
  const openMpi = openMpiFolder();
  const env = {
    ...inheritedEnv(),
    OMPI_ALLOW_RUN_AS_ROOT: '1',
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1',
    OMPI_MCA_rmaps_base_oversubscribe: '1',
    ...(openMpi ? { OMPI_MCA_btl_vader_backing_directory: openMpi, OMPI_MCA_orte_tmpdir_base: openMpi } : {}),
    ...options.env,
  };
  const exported = Object.keys(options.env ?? {}).flatMap((k) => ['-x', k]);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('mpirun', ['-np', String(np), '--oversubscribe', ...exported, process.execPath, script, ...args, dir], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 150_000);
    child.on('error', (err) => {
      if (openMpi) rmSync(openMpi, { recursive: true, force: true });
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const results = [];
      for (let r = 0; r < np; r++) {
        const file = join(dir, `rank-${r}.json`);
        if (existsSync(file)) results.push(JSON.parse(readFileSync(file, 'utf8')));
      }
      // A folder made here held only the ranks' reports, now read.
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
      if (openMpi) rmSync(openMpi, { recursive: true, force: true });
      resolve({ code, signal, stdout, stderr, results, dir, ms: Date.now() - started });
    });
  });
}

export function report(dir, result) {
  writeFileSync(join(dir, `rank-${result.rank}.json`), JSON.stringify(result));
}

export async function runScenario(comm, dir, name, scenarios) {
  const started = Date.now();
  const base = { rank: comm.rank, size: comm.size, scenario: name, backend: backendInUse() };
  try {
    if (typeof scenarios[name] !== 'function') throw new Error(`unknown scenario ${name}`);
    const result = await scenarios[name]();
    report(dir, { ...base, ok: true, ms: Date.now() - started, ...result });
  } catch (err) {
    report(dir, { ...base, ok: false, code: err.code, message: err.message, stack: err.stack });
  }
  await comm.close();
}

/** sha256 (16 hex digits) of typed arrays or tensors' data, in order: equal bits, equal digest. */
export function digest(values) {
  const hash = createHash('sha256');
  for (const v of values) {
    const a = typeof v.dataSync === 'function' ? v.dataSync() : v;
    hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }
  return hash.digest('hex').slice(0, 16);
}

/** A seeded uniform generator in [0, 1) (mulberry32), the same stream on every rank. */
export function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
