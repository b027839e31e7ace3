import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

export function mpirunScript(np, script, args, options = {}) {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), `braid-${basename(script).replace(/\W+/g, '-')}-`));
  const env = {
    ...process.env,
    OMPI_ALLOW_RUN_AS_ROOT: '1',
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1',
    OMPI_MCA_rmaps_base_oversubscribe: '1',
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
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const results = [];
      for (let r = 0; r < np; r++) {
        const file = join(dir, `rank-${r}.json`);
        if (existsSync(file)) results.push(JSON.parse(readFileSync(file, 'utf8')));
      }
      resolve({ code, signal, stdout, stderr, results, dir, ms: Date.now() - started });
    });
  });
}

export function report(dir, result) {
  writeFileSync(join(dir, `rank-${result.rank}.json`), JSON.stringify(result));
}

export async function runScenario(comm, dir, name, scenarios) {
  const started = Date.now();
  const base = { rank: comm.rank, size: comm.size, scenario: name };
  try {
    if (typeof scenarios[name] !== 'function') throw new Error(`unknown scenario ${name}`);
    const result = await scenarios[name]();
    report(dir, { ...base, ok: true, ms: Date.now() - started, ...result });
  } catch (err) {
    report(dir, { ...base, ok: false, code: err.code, message: err.message, stack: err.stack });
  }
  await comm.close();
}
