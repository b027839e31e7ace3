// What rank 0 shows while training: on a terminal a progress bar redrawn in place (steps,
// samples/s, loss, ETA); in a log one plain line per epoch. `braid run` tells the ranks which of
// the two its own stdout is (BRAID_PROGRESS): under mpirun a rank's stdout is a pseudo-terminal
// even when the job's output goes to a file.

export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';

export function resolveProgressMode(mode: ProgressMode, rank: number): 'bar' | 'lines' | 'none' {
  if (rank !== 0 || mode === 'none') return 'none';
  if (mode === 'bar' || mode === 'lines') return mode;
  const env = process.env.BRAID_PROGRESS;
  if (env === 'bar' || env === 'lines' || env === 'none') return env;
  return process.stdout.isTTY ? 'bar' : 'lines';
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

function formatMetrics(logs: Record<string, number>): string {
  return Object.entries(logs)
    .map(([k, v]) => `${k} ${Math.abs(v) >= 1000 ? v.toFixed(1) : v.toFixed(4)}`)
    .join('  ');
}

export class Progress {
  private lastDraw = 0;
  private epochStarted = 0;

  constructor(
    private readonly mode: 'bar' | 'lines' | 'none',
    private readonly epochs: number,
    /** Samples per step over all ranks. */
    private readonly globalBatch: number,
    private readonly write: (text: string) => void = (text) => void process.stdout.write(text),
    private readonly width = 24,
  ) {}

  epochBegin(): void {
    this.epochStarted = performance.now();
    this.lastDraw = 0;
  }

  /** After each step; redraws the bar at most 10 times a second. */
  step(epoch: number, done: number, total: number, logs: Record<string, number>, stepsBefore = 0): void {
    if (this.mode !== 'bar') return;
    const now = performance.now();
    if (done < total && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const seconds = (now - this.epochStarted) / 1000;
    const stepsHere = done - stepsBefore;
    const rate = stepsHere > 0 ? (stepsHere * this.globalBatch) / seconds : 0;
    const eta = stepsHere > 0 ? ((total - done) * seconds) / stepsHere : Number.NaN;
    const filled = total > 0 ? Math.round((this.width * done) / total) : this.width;
    const bar = '='.repeat(Math.max(0, filled - 1)) + (filled > 0 ? (done < total ? '>' : '=') : '') + ' '.repeat(this.width - filled);
    this.write(
      `\r\x1b[Kepoch ${epoch + 1}/${this.epochs} [${bar}] ${done}/${total}  ${rate.toFixed(0)} samples/s  ${formatMetrics(logs)}  ETA ${formatDuration(eta)}`,
    );
  }

  /** One line per epoch (also ends the bar's line). */
  epochEnd(epoch: number, steps: number, logs: Record<string, number>, stepsBefore = 0): void {
    if (this.mode === 'none') return;
    const seconds = (performance.now() - this.epochStarted) / 1000;
    const rate = ((steps - stepsBefore) * this.globalBatch) / seconds;
    const line = `epoch ${epoch + 1}/${this.epochs}  ${steps} steps  ${seconds.toFixed(1)} s  ${rate.toFixed(0)} samples/s  ${formatMetrics(logs)}`;
    this.write(this.mode === 'bar' ? `\r\x1b[K${line}\n` : `${line}\n`);
  }

  message(text: string): void {
    if (this.mode !== 'none') this.write(`${text}\n`);
  }
}
