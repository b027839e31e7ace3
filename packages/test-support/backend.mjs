// The tfjs backend a test runs on: tfjs's pure-JS 'cpu', or native TensorFlow through tfjs-node
// ('tensorflow') where `braid setup tfjs-node` has built it. Tests that train run on both.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

let native;
let inUse;

/** The backend useTestBackend chose in this rank (runScenario reports it), or undefined. */
export function backendInUse() {
  return inUse;
}

/** Whether tfjs-node loads here (checked once, in a child process), and if not, why. */
export function tfjsNode() {
  if (native) return native;
  const child = spawnSync(process.execPath, ['-e', "require('@tensorflow/tfjs-node')"], { encoding: 'utf8', env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' }, timeout: 60_000 });
  const why = child.stderr.includes("Cannot find module '@tensorflow/tfjs-node'")
    ? 'tfjs-node is not installed'
    : `tfjs-node does not load (${child.stderr.split('\n').find((l) => /Error/.test(l))?.trim() ?? `exit ${child.status}`})`;
  native = child.status === 0 ? { available: true } : { available: false, reason: `${why}; bash scripts/setup.sh --tfjs-node builds it` };
  return native;
}

/** The backends to run a training test on, each with the environment that selects it in the ranks. */
export function testBackends() {
  const node = tfjsNode();
  return [
    { name: 'cpu', env: { BRAID_TEST_BACKEND: 'cpu' }, skip: undefined },
    { name: 'tensorflow', env: { BRAID_TEST_BACKEND: 'tensorflow' }, skip: node.available ? undefined : node.reason },
  ];
}

/** In a rank: switches tfjs to the backend BRAID_TEST_BACKEND names (one TensorFlow thread per rank: the tests oversubscribe). */
export async function useTestBackend(tf) {
  if (process.env.BRAID_TEST_BACKEND === 'tensorflow') {
    process.env.TF_NUM_INTRAOP_THREADS ??= '1';
    process.env.TF_NUM_INTEROP_THREADS ??= '1';
    process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
    // Required, not imported: the ESM loader would scan its CommonJS bundles for export names first.
    createRequire(import.meta.url)('@tensorflow/tfjs-node');
    if (!(await tf.setBackend('tensorflow'))) throw new Error('tfjs-node loaded but the tensorflow backend did not start');
  }
  inUse = tf.getBackend();
  return inUse;
}
