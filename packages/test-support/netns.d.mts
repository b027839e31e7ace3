export function netnsUnavailable(): string | undefined;
export interface Hosts {
  names: string[];
  dir: string;
  on(i: number, argv: string[]): string[];
  mpirunArgs(np: number): string[];
  braidRunArgs(): string[];
  mcaArgs(): string[];
  link(i: number, up: boolean): void;
  pids(i: number): number[];
  destroy(): void;
}
export function createHosts(count: number, options?: { subnet?: number; slots?: number }): Hosts;
