// Point-to-point messages (send, recv, sendRecv) on real mpirun jobs (test-support/p2p-worker.mjs).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { mpirunScript } from '@braid/test-support/mpirun';
import { describe, expect, it } from 'vitest';

const worker = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'p2p-worker.mjs');
const run = (np: number, scenario: string, env: Record<string, string> = {}) => mpirunScript(np, worker, [scenario], { env, timeoutMs: 60_000 });

describe.each([
  [2, {}],
  [3, {}],
  [4, {}],
  [3, { BRAID_SHM: 'off', BRAID_TRANSPORT: 'tcp' }],
])('np=%i %o', (np, env) => {
  it('ring shifts, order per (source, tag), 16 MiB and empty and short messages, dtypes, ANY_SOURCE, sync calls, 64 in flight, a message beside collectives: all exact', async () => {
    const job = await run(np, 'messages', env);
    expect(job.code, job.stderr).toBe(0);
    expect(job.results).toHaveLength(np);
    for (const r of job.results) {
      expect(r.crashed).toBeUndefined();
      expect(r.wrong).toEqual([]);
      expect(r.sum).toBe((np * (np - 1)) / 2);
    }
    expect(job.results[0]!.sources).toEqual(Array.from({ length: np - 1 }, (_, i) => i + 1));
    expect(job.results[np - 1]!.late).toBe(7);
    // A message longer than the receive buffer: refused on both sides, naming both lengths.
    for (const r of job.results) {
      const prev = (r.rank - 1 + np) % np;
      const next = (r.rank + 1) % np;
      expect(r.tooLong).toEqual([
        {
          code: 'INVALID_ARGUMENT',
          message: expect.stringContaining(`send to rank ${next} (host `) && expect.stringMatching(/\(tag 15\): the message has 32 bytes but that rank's receive buffer holds 16; it was not delivered/),
        },
        {
          code: 'INVALID_ARGUMENT',
          message: expect.stringMatching(new RegExp(`^recv \\(tag 15\\) from rank ${prev} \\(host \\S+\\): the message has 32 bytes but the receive buffer holds 16; it was dropped`)),
        },
      ]);
    }
  });
});

describe('point-to-point deadlines and bad arguments', () => {
  it('a receive nobody sends to times out naming the peer (or any rank) and leaves the communicator usable; a send nobody receives times out and leaves it unusable', async () => {
    const job = await run(2, 'deadlines');
    const zero = job.results.find((r) => r.rank === 0)!;
    expect(zero.crashed).toBeUndefined();
    expect(zero.recv.code).toBe('TIMEOUT');
    expect(zero.recv.message).toMatch(/^recv \(tag 3\) from rank 1 \(host \S+\): no message arrived before the operation's timeout/);
    expect(zero.recv.ms).toBeLessThan(1500 + 1000);
    expect(zero.recvAny.code).toBe('TIMEOUT');
    expect(zero.recvAny.message).toMatch(/^recv \(tag 4\) from any rank: no message arrived/);
    expect(zero.stillUsable.code).toBe('OK');
    expect(zero.stillUsable.value).toEqual({ source: 1, tag: 21, length: 1 });
    expect(zero.send.code).toBe('TIMEOUT');
    expect(zero.send.message).toMatch(/^send to rank 1 \(host \S+\) \(tag 5\) was not received before the operation's timeout/);
    expect(zero.after.code).toBe('ABORTED');
    expect(zero.after.message).toMatch(/unusable since an earlier failure: a send timed out .*rank 1 .*tag 5/);
  });

  it('refuses a bad peer, tag, option or buffer, naming it', async () => {
    const job = await run(2, 'refused');
    expect(job.code, job.stderr).toBe(0);
    expect(job.results[0]!.errors).toEqual([
      "INVALID_ARGUMENT: send: dest must be an integer rank from 0 to 1 (the communicator has 2 ranks); got 2",
      'INVALID_ARGUMENT: recv: source (or ANY_SOURCE) must be an integer rank from 0 to 1 (the communicator has 2 ranks); got -2',
      'INVALID_ARGUMENT: send: tag must be an integer from 0 to 32767; got 40000',
      expect.stringMatching(/^INVALID_ARGUMENT: send: unknown option 'tga'; did you mean 'tag'\?/),
      expect.stringMatching(/^INVALID_ARGUMENT: recv: /),
      'INVALID_ARGUMENT: sendSync: dest must be an integer rank from 0 to 1 (the communicator has 2 ranks); got -1',
    ]);
  });
});
