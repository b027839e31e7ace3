export interface TestBackend {
  /** tfjs's backend name. */
  name: 'cpu' | 'tensorflow';
  /** What to pass to the ranks (mpirunScript's env) so that useTestBackend picks it. */
  env: Record<string, string>;
  /** Why it cannot run here (tfjs-node not built), or undefined. */
  skip: string | undefined;
}

/** Whether tfjs-node loads here (checked once, in a child process), and if not, why. */
export function tfjsNode(): { available: true } | { available: false; reason: string };

/** The backends to run a training test on: cpu always, tensorflow with a skip reason where tfjs-node is not built. */
export function testBackends(): TestBackend[];

/** In a rank: switches tfjs to the backend BRAID_TEST_BACKEND names and returns tfjs's backend name. */
export function useTestBackend(tf: { setBackend(name: string): Promise<boolean>; getBackend(): string }): Promise<string>;
