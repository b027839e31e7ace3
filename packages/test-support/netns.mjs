// The multi-host test bed (scripts/cluster.sh) from tests: hosts made of network, UTS and mount
// namespaces, each with its own address, hostname, /dev/shm and /etc/hosts, joined through a
// bridge in a switch namespace; mpirun reaches them through the test bed's rsh agent; each host
// sees its own /run/braid-host (no shared file system there). Each call of
// createHosts makes a test bed of its own name, removed by destroy(). Root only.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const script = join(dirname(dirname(dirname(fileURLToPath(import.meta.url)))), 'scripts', 'cluster.sh');

/** Why the test bed cannot run here, or undefined when it can. */
export function netnsUnavailable() {
  if (process.getuid?.() !== 0) return 'the multi-host test bed needs root (network namespaces)';
  const probe = `braid-probe-${process.pid}`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.status !== 0) return `ip netns add failed: ${(r.stderr || r.error?.message || '').trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  const unshare = spawnSync('unshare', ['--uts', '--mount', 'true']);
  if (unshare.status !== 0) return 'unshare --uts --mount is not permitted here';
  return undefined;
}

let made = 0;

/**
 * `count` hosts named h0, h1, ... (scripts/cluster.sh up). Options: `slots` per host in the
 * hostfile, `rate` (tbf shaping of every host's link).
 */
export function createHosts(count, { slots = 1, rate } = {}) {
  const name = `t${process.pid % 10000}${made}`;
  const subnet = `10.${100 + ((process.pid + made++) % 100)}`;
  const env = { ...process.env, BRAID_CLUSTER_NAME: name, BRAID_CLUSTER_SUBNET: subnet };
  const cluster = (...args) => execFileSync('bash', [script, ...args], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  cluster('up', String(count), ...(rate ? ['--rate', rate] : []));
  const state = `/run/braid-cluster/${name}`;
  const agent = join(state, 'agent.sh');
  const names = Array.from({ length: count }, (_, i) => `h${i}`);
  const hostfile = join(state, 'hostfile');
  writeFileSync(hostfile, names.map((n) => `${n} slots=${slots}`).join('\n') + '\n');
  const cidr = `${subnet}.0.0/24`;
  // The hosts share this machine's cores: no binding (see cluster.sh's exec).
  const mca = ['--mca', 'oob_tcp_if_include', cidr, '--mca', 'btl_tcp_if_include', cidr, '--mca', 'hwloc_base_binding_policy', 'none'];
  return {
    names,
    name,
    /** The command line that runs `argv` on host i (in its namespaces, in this directory). */
    on(i, argv) {
      return ['env', `BRAID_CLUSTER_NAME=${name}`, 'bash', script, 'exec', names[i], ...argv];
    },
    /** mpirun's arguments for `np` ranks spread over the hosts, one after the other. */
    mpirunArgs(np) {
      return [
        '--hostfile', hostfile, '-np', String(np), '--map-by', 'node', '--oversubscribe', '--mca', 'plm_rsh_agent', agent, ...mca,
        // As braid run does (MPIRUN_KEEPALIVE): notice a daemon cut off in ~16 s, not 8 min.
        '--mca', 'oob_tcp_keepalive_time', '10', '--mca', 'oob_tcp_keepalive_intvl', '2', '--mca', 'oob_tcp_keepalive_probes', '3',
      ];
    },
    /** mpirun's options that reach the hosts (the agent) and keep to their network. */
    mcaArgs() {
      return ['--mca', 'plm_rsh_agent', agent, ...mca];
    },
    /**
     * `braid run` options for the hosts: the hostfile (`slots` per host), or `placement`
     * (-H h0:2,h1:2), and the agent.
     */
    braidRunArgs(placement) {
      return [...(placement ? ['-H', placement] : ['--hostfile', hostfile]), '--agent', agent, '--mpi-args', mca.join(' ')];
    },
    /** The pids of the processes running on host i. */
    pids(i) {
      return (spawnSync('ip', ['netns', 'pids', `${name}-h${i}`], { encoding: 'utf8' }).stdout ?? '').split(/\s+/).filter(Boolean).map(Number);
    },
    /** Cuts (false) or restores (true) host i's link to the switch. */
    link(i, up) {
      execFileSync('ip', ['-n', `${name}-sw`, 'link', 'set', `${name}s${i}`, up ? 'up' : 'down']);
    },
    /**
     * Host i dies as a machine that loses power: its link goes down first (nothing it sends
     * reaches anyone), then every process on it is killed.
     */
    kill(i) {
      execFileSync('ip', ['-n', `${name}-sw`, 'link', 'set', `${name}s${i}`, 'down']);
      for (const pid of this.pids(i)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
    },
    /** The host's address. */
    address(i) {
      return readFileSync(join(state, 'hosts'), 'utf8').split('\n').find((l) => l.endsWith(` h${i}`))?.split(' ')[0];
    },
    destroy() {
      cluster('down');
    },
  };
}
