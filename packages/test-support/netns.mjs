// Several hosts on one machine, for tests (root only): each host is a network namespace with its
// own address, joined to the others through a bridge in a switch namespace of its own, and its
// processes get their own hostname (a UTS namespace). mpirun runs on host 0 and starts the other
// hosts' daemons through an rsh agent that enters their namespace. Links can be cut and shaped
// (`tc`) per host. Traffic stays inside these namespaces; everything is removed by destroy().
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function ip(...args) {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Why the test bed cannot run here, or undefined when it can. */
export function netnsUnavailable() {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  const probe = `braid-probe-${process.pid}`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.status !== 0) return `ip netns add failed: ${(r.stderr || r.error?.message || '').trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  const unshare = spawnSync('unshare', ['--uts', 'true']);
  if (unshare.status !== 0) return 'unshare --uts is not permitted here';
  return undefined;
}

/**
 * `count` hosts named h0, h1, ... with addresses 10.<subnet>.0.(i+1)/24. Returns the names, a
 * function running a command on a host, link controls, the mpirun arguments that place ranks on
 * them, and destroy().
 */
export function createHosts(count, { subnet = 200 + (process.pid % 50), slots = 1 } = {}) {
  const id = `b${process.pid % 100000}`;
  const sw = `${id}-sw`;
  const names = Array.from({ length: count }, (_, i) => `h${i}`);
  const ns = (i) => `${id}-h${i}`;
  const created = [];
  // Processes left in a host (an Open MPI daemon cut off from mpirun waits for its link) end
  // with it.
  const destroy = () => {
    for (const n of created.reverse()) {
      const pids = spawnSync('ip', ['netns', 'pids', n], { encoding: 'utf8' }).stdout?.split(/\s+/).filter(Boolean) ?? [];
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone already
        }
      }
      spawnSync('ip', ['netns', 'del', n]);
    }
    created.length = 0;
  };
  try {
    ip('netns', 'add', sw);
    created.push(sw);
    ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', sw, 'link', 'set', 'br0', 'up');
    ip('-n', sw, 'link', 'set', 'lo', 'up');
    for (let i = 0; i < count; i++) {
      ip('netns', 'add', ns(i));
      created.push(ns(i));
      ip('-n', ns(i), 'link', 'set', 'lo', 'up');
      ip('link', 'add', `${id}v${i}`, 'type', 'veth', 'peer', 'name', `${id}s${i}`);
      ip('link', 'set', `${id}v${i}`, 'netns', ns(i));
      ip('link', 'set', `${id}s${i}`, 'netns', sw);
      ip('-n', ns(i), 'link', 'set', `${id}v${i}`, 'name', 'eth0');
      ip('-n', ns(i), 'addr', 'add', `10.${subnet}.0.${i + 1}/24`, 'dev', 'eth0');
      ip('-n', ns(i), 'link', 'set', 'eth0', 'up');
      ip('-n', sw, 'link', 'set', `${id}s${i}`, 'master', 'br0');
      ip('-n', sw, 'link', 'set', `${id}s${i}`, 'up');
    }
  } catch (err) {
    destroy();
    throw err;
  }
  // The rsh agent mpirun uses for the other hosts: `agent <host> <command...>` runs the command
  // in that host's namespaces, under its hostname.
  const dir = mkdtempSync(join(tmpdir(), 'braid-hosts-'));
  const agent = join(dir, 'agent.sh');
  writeFileSync(
    agent,
    `#!/bin/sh
host="$1"; shift
exec ip netns exec "${id}-$host" unshare --uts sh -c 'hostname "$0"; exec sh -c "$*"' "$host" "$@"
`,
  );
  chmodSync(agent, 0o755);
  const hostfile = join(dir, 'hosts');
  writeFileSync(hostfile, names.map((n) => `${n} slots=${slots}`).join('\n') + '\n');
  const cidr = `10.${subnet}.0.0/24`;
  return {
    names,
    dir,
    /** The command line that runs `argv` on host i (its namespace and hostname). */
    on(i, argv) {
      return ['ip', 'netns', 'exec', ns(i), 'unshare', '--uts', 'sh', '-c', 'hostname "$0"; exec "$@"', names[i], ...argv];
    },
    /** mpirun's arguments for `np` ranks spread over the hosts, one after the other. */
    mpirunArgs(np) {
      return [
        '--hostfile', hostfile, '-np', String(np), '--map-by', 'node', '--oversubscribe', ...this.mcaArgs(),
        // As braid run does (MPIRUN_KEEPALIVE): notice a daemon cut off in ~16 s, not 8 min.
        '--mca', 'oob_tcp_keepalive_time', '10', '--mca', 'oob_tcp_keepalive_intvl', '2', '--mca', 'oob_tcp_keepalive_probes', '3',
      ];
    },
    /** `braid run` options for the hosts (a hostfile of `slots` per host, and the MCA settings). */
    braidRunArgs() {
      return ['--hostfile', hostfile, '--mpi-args', this.mcaArgs().join(' ')];
    },
    /** What mpirun needs to reach the hosts and keep to their network. */
    mcaArgs() {
      return [
        '--mca', 'plm_rsh_agent', agent,
        '--mca', 'oob_tcp_if_include', cidr,
        '--mca', 'btl_tcp_if_include', cidr,
        '--mca', 'btl', 'self,vader,tcp',
      ];
    },
    /** The pids of the processes running on host i. */
    pids(i) {
      return (spawnSync('ip', ['netns', 'pids', ns(i)], { encoding: 'utf8' }).stdout ?? '').split(/\s+/).filter(Boolean).map(Number);
    },
    /** Cuts (false) or restores (true) host i's link to the switch. */
    link(i, up) {
      ip('-n', sw, 'link', 'set', `${id}s${i}`, up ? 'up' : 'down');
    },
    destroy,
  };
}
