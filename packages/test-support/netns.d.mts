export function netnsUnavailable(): string | undefined;
export interface Hosts {
  names: string[];
  name: string;
  on(i: number, argv: string[]): string[];
  mpirunArgs(np: number): string[];
  braidRunArgs(placement?: string): string[];
  mcaArgs(): string[];
  pids(i: number): number[];
  link(i: number, up: boolean): void;
  /** Host i dies: its link goes down, then every process on it is killed. */
  kill(i: number): void;
  address(i: number): string | undefined;
  destroy(): void;
}
export function createHosts(count: number, options?: { slots?: number; rate?: string }): Hosts;
