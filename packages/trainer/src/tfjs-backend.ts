// Choosing TensorFlow.js's backend for a rank: native TensorFlow (tfjs-node, built by `braid setup
// tfjs-node`) when it loads, else the pure-JS CPU backend, with the rank's share of the host's
// cores. TensorFlow sizes its thread pools once, from TF_NUM_INTRAOP_THREADS and
// TF_NUM_INTEROP_THREADS, when tfjs-node is first loaded: N ranks on a host each taking every core
// would oversubscribe it N times over, so the share is set before the import.
import { createRequire } from 'node:module';

import * as tf from '@tensorflow/tfjs-core';

import { applyTensorflowThreads, tensorflowThreads, type ThreadOptions } from './tensorflow-threads.js';

export type BackendChoice = 'auto' | 'node' | 'cpu';

export interface BackendOptions extends ThreadOptions {
  /** 'node': tfjs-node (or tfjs-node-gpu) or an error; 'cpu': pure JS; 'auto' (default): node when it loads. */
  backend?: BackendChoice;
}

export interface BackendInfo {
  /** tfjs's backend name: 'tensorflow' or 'cpu'. */
  backend: string;
  /** The package that provides it. */
  package: string;
  /** TensorFlow's thread pools (tfjs-node only); `applied` is false when tfjs-node was loaded before this call. */
  threads?: { intraOp: number; interOp: number; applied: boolean };
  /** Why 'auto' chose the pure-JS backend. */
  fallback?: string;
}

/** tfjs's pure-JS backend (registered by @tensorflow/tfjs; imported here when only tfjs-core was). */
async function useCpu(): Promise<void> {
  if (tf.findBackendFactory('cpu') === null) {
    const name = '@tensorflow/tfjs-backend-cpu';
    try {
      await import(name);
    } catch {
      throw new Error(`tfjs's cpu backend is not registered and ${name} does not load: install and import @tensorflow/tfjs`);
    }
  }
  await tf.setBackend('cpu');
}

// tfjs-node is CommonJS: required, not imported, because Node's ESM loader would first scan it and
// the tfjs bundles it re-exports for their export names (a fifth of a second of CPU in every rank).
const requireFromHere = createRequire(import.meta.url);

async function importNative(): Promise<{ name: string } | { error: string }> {
  const errors: string[] = [];
  for (const name of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      requireFromHere(name);
      return { name };
    } catch (err) {
      const { code, message } = err as { code?: string; message: string };
      // Not installed: try the next. Installed but not built (its binding missing, or its library gone): say so.
      if (code === 'MODULE_NOT_FOUND' && message.startsWith(`Cannot find module '${name}'`)) continue;
      errors.push(`${name} is installed but does not load (${message.split('\n')[0]}); build it with \`braid setup tfjs-node${name.endsWith('-gpu') ? ' --gpu' : ''}\``);
    }
  }
  return { error: errors[0] ?? 'neither @tensorflow/tfjs-node nor @tensorflow/tfjs-node-gpu is installed; `braid setup tfjs-node` installs and builds it' };
}

/**
 * Makes tfjs use native TensorFlow when asked (or, with 'auto', when it loads), with this rank's
 * share of the cores. Call it before any tensor is made and before anything imports tfjs-node.
 */
export async function selectBackend(options: BackendOptions = {}): Promise<BackendInfo> {
  const choice = options.backend ?? 'auto';
  if (!['auto', 'node', 'cpu'].includes(choice)) {
    throw new RangeError(`backend must be 'auto', 'node' or 'cpu'; got ${JSON.stringify(choice)}`);
  }
  if (choice === 'cpu') {
    await useCpu();
    return { backend: 'cpu', package: '@tensorflow/tfjs-backend-cpu' };
  }
  const threads = tensorflowThreads(options);
  const alreadyLoaded = tf.findBackendFactory('tensorflow') !== null;
  if (!alreadyLoaded) {
    applyTensorflowThreads(threads);
  }
  const native = await importNative();
  if ('error' in native) {
    if (choice === 'node') throw new Error(`backend 'node': ${native.error}`);
    await useCpu();
    return { backend: 'cpu', package: '@tensorflow/tfjs-backend-cpu', fallback: native.error };
  }
  if (!(await tf.setBackend('tensorflow'))) throw new Error(`${native.name} loaded but tfjs could not switch to its 'tensorflow' backend`);
  if (alreadyLoaded) {
    const applied = String(threads.intraOp) === process.env.TF_NUM_INTRAOP_THREADS && String(threads.interOp) === process.env.TF_NUM_INTEROP_THREADS;
    return { backend: 'tensorflow', package: native.name, threads: { ...threads, applied } };
  }
  return { backend: 'tensorflow', package: native.name, threads: { ...threads, applied: true } };
}
