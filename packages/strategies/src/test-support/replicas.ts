// What every 2 pipelines x 2 stages run must show, wherever its ranks are placed: each rank's
// weights and losses match one process's, and the two replicas of a stage are bitwise identical.
import { expect } from 'vitest';

export interface ReplicaResult {
  stage: number;
  diff: number;
  lossDiff: number;
  weights: string;
}

export function expectReplicasAgree(results: ReplicaResult[]): void {
  for (const r of results) {
    expect(r.diff).toBeLessThan(1e-5);
    expect(r.lossDiff).toBeLessThan(1e-5);
  }
  for (const stage of [0, 1]) {
    const replicas = results.filter((r) => r.stage === stage);
    expect(replicas).toHaveLength(2);
    expect(replicas[0]!.weights).toBe(replicas[1]!.weights);
  }
}
