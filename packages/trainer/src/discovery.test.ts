// Host discovery for elastic jobs: real scripts run as the launcher runs them.
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { scratchDir } from '@braid/test-support/scratch';
import { describe, expect, it } from 'vitest';

import { discoverHosts, parseDiscovery } from './discovery.js';

function script(body: string, executable = true): string {
  const path = join(scratchDir('braid-discovery-'), 'hosts.sh');
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  if (executable) chmodSync(path, 0o755);
  return path;
}

// Names this test treats as known, without depending on the machine's resolver.
const known = async (host: string) => ['localhost', 'node1', 'node2', 'node3'].includes(host);

describe('host discovery', () => {
  it('reads host and host:slots lines, skipping blank lines and comments', async () => {
    const path = script('echo "# available now"\necho node1:4\necho\necho "node2   # no slots given"\necho node3:1');
    expect(await discoverHosts(path, { slotsPerHost: 2, resolves: known })).toEqual([
      { host: 'node1', slots: 4 },
      { host: 'node2', slots: 2 },
      { host: 'node3', slots: 1 },
    ]);
  });

  it('an empty list is an answer: no host is available now', async () => {
    expect(await discoverHosts(script('true'), { resolves: known })).toEqual([]);
  });

  it('resolves names through the system by default (localhost)', async () => {
    expect(await discoverHosts(script('echo localhost:2'))).toEqual([{ host: 'localhost', slots: 2 }]);
  });

  it('a script that fails is named, with its exit code and the end of its stderr', async () => {
    const path = script('echo "cloud API unreachable" >&2\nexit 3');
    await expect(discoverHosts(path, { resolves: known })).rejects.toThrow(
      new RegExp(`the host discovery script ${path} exited with code 3: cloud API unreachable`),
    );
  });

  it('a missing or non-executable script is named, with the fix', async () => {
    await expect(discoverHosts('/nonexistent/hosts.sh')).rejects.toThrow(/the host discovery script \/nonexistent\/hosts.sh does not exist or is not executable \(chmod \+x it\)/);
    const path = script('echo node1', false);
    await expect(discoverHosts(path)).rejects.toThrow(new RegExp(`${path} does not exist or is not executable`));
  });

  it('garbage is named by line number and content', async () => {
    const path = script('echo node1:4\necho "Traceback (most recent call last):"');
    await expect(discoverHosts(path, { resolves: known })).rejects.toThrow(
      /printed "Traceback \(most recent call last\):" on line 2; it must print one "host" or "host:slots" per line/,
    );
    expect(() => parseDiscovery('s', 'node1:0')).toThrow(/gave node1 0 slots on line 1; slots must be a positive integer/);
    expect(() => parseDiscovery('s', 'node1:2\nnode1:2')).toThrow(/listed node1 twice \(line 2\)/);
    expect(() => parseDiscovery('s', 'node1:two')).toThrow(/on line 1/);
  });

  it('hosts that do not resolve are named', async () => {
    const path = script('echo node1:2\necho ghost-7:2\necho ghost-8');
    await expect(discoverHosts(path, { resolves: known })).rejects.toThrow(/listed hosts this machine cannot resolve: ghost-7, ghost-8/);
    await expect(discoverHosts(script('echo no-such-host-braid.invalid:1'))).rejects.toThrow(/cannot resolve: no-such-host-braid.invalid/);
  });

  it('a script that hangs is killed at the timeout and named', async () => {
    const path = script('sleep 30');
    const started = Date.now();
    await expect(discoverHosts(path, { timeoutMs: 300, resolves: known })).rejects.toThrow(new RegExp(`${path} did not finish within 300 ms`));
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
