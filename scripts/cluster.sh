#!/usr/bin/env bash
# A test bed of several hosts on this machine (root only), for multi-host tests and benchmarks:
#
#   scripts/cluster.sh up N [--rate 1gbit] [--delay 1ms] [--name braid] [--subnet 10.77]
#   scripts/cluster.sh exec HOST command...     run a command on a host (h0, h1, ...)
#   scripts/cluster.sh agent                    print the path of the rsh agent (for mpirun)
#   scripts/cluster.sh status | down
#
# Each host hI is a network namespace with the address <subnet>.0.(I+1)/24 on eth0, joined to the
# others through a bridge in a switch namespace of its own (nothing touches this machine's own
# network), plus a UTS namespace (its hostname is hI) and a mount namespace (its own /dev/shm, an
# /etc/hosts that names h0..hN-1, and /run/braid-host: a folder each host sees on its own, for
# files that must not be shared, as on machines without a shared file system; Open MPI's session
# folders go to another, /run/braid-mpi). `--rate` shapes every host's outgoing link with tbf;
# `--delay` adds netem delay where the kernel has netem. Start MPI jobs on h0:
#
#   scripts/cluster.sh exec h0 mpirun -H h0:2,h1:2 --mca plm_rsh_agent "$(scripts/cluster.sh agent)" ...
#   scripts/cluster.sh exec h0 npx braid run -H h0:2,h1:2 --agent "$(scripts/cluster.sh agent)" app.mjs
#
# `up` is idempotent (an existing test bed of that name is taken down first); `down` removes the
# namespaces and ends every process still running on a host. Traffic stays inside the namespaces.
set -euo pipefail

name=${BRAID_CLUSTER_NAME:-braid}
subnet=${BRAID_CLUSTER_SUBNET:-10.77}
command=${1:-status}
shift || true
count=0
rate=""
delay=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --subnet) subnet=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --delay) delay=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
state=/run/braid-cluster/$name
agent=$state/agent.sh

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "cluster.sh: the test bed needs root (network, UTS and mount namespaces)" >&2
    exit 2
  fi
}

hosts() { [ -f "$state/count" ] && seq 0 $(($(cat "$state/count") - 1)) || true; }

down() {
  for i in $(hosts); do
    for pid in $(ip netns pids "$name-h$i" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$name-h$i" 2>/dev/null || true
  done
  ip netns del "$name-sw" 2>/dev/null || true
  rm -rf "$state"
}

run_on() {
  local host=$1
  shift
  if ! [ -f "$state/$host.pid" ]; then
    echo "cluster.sh: no host $host in test bed '$name' (scripts/cluster.sh up N first)" >&2
    exit 2
  fi
  # Every host of the test bed runs on this machine's cores: if mpirun bound each host's ranks to
  # "its" cores, the ranks of all hosts would pile onto the same ones (measured: an 8-byte MPI
  # ping-pong between two hosts took 8 ms bound, 8.5 us unbound). A command line's --bind-to wins.
  # Open MPI's session folders (mpirun's and each host's daemon's) go to the host's own tmpfs,
  # which goes with the host at `down`: a killed job's would otherwise stay in the shared /tmp.
  exec env OMPI_MCA_hwloc_base_binding_policy="${OMPI_MCA_hwloc_base_binding_policy:-none}" \
    OMPI_MCA_orte_tmpdir_base="${OMPI_MCA_orte_tmpdir_base:-/run/braid-mpi}" \
    nsenter --target "$(cat "$state/$host.pid")" --net --uts --mount --wd="$PWD" -- "$@"
}

case "$command" in
  up)
    need_root
    count=${args[0]:-}
    if ! [[ "$count" =~ ^[1-9][0-9]*$ ]] || [ "$count" -gt 32 ]; then
      echo "usage: scripts/cluster.sh up N (1-32 hosts) [--rate 1gbit] [--delay 1ms] [--name NAME] [--subnet A.B]" >&2
      exit 2
    fi
    if [ -n "$delay" ]; then
      # netem is a kernel module that some kernels lack: find out before making anything.
      probe="$name-probe"
      ip netns add "$probe"
      if ! ip netns exec "$probe" tc qdisc add dev lo root netem delay "$delay" 2>/dev/null; then
        ip netns del "$probe"
        echo "cluster.sh: this kernel has no netem (sch_netem), so --delay cannot be had here; use --rate alone" >&2
        exit 2
      fi
      ip netns del "$probe"
    fi
    down
    # A failure half-way takes down what was made.
    trap 'echo "cluster.sh: up failed; taking the test bed down" >&2; down' ERR
    mkdir -p "$state" /run/braid-host /run/braid-mpi
    echo "$count" >"$state/count"
    {
      echo "127.0.0.1 localhost"
      for i in $(seq 0 $((count - 1))); do echo "$subnet.0.$((i + 1)) h$i"; done
    } >"$state/hosts"
    ip netns add "$name-sw"
    ip -n "$name-sw" link set lo up
    ip -n "$name-sw" link add br0 type bridge
    ip -n "$name-sw" link set br0 up
    for i in $(seq 0 $((count - 1))); do
      ns="$name-h$i"
      ip netns add "$ns"
      ip -n "$ns" link set lo up
      ip link add "${name}v$i" type veth peer name "${name}s$i"
      ip link set "${name}v$i" netns "$ns"
      ip link set "${name}s$i" netns "$name-sw"
      ip -n "$ns" link set "${name}v$i" name eth0
      ip -n "$ns" addr add "$subnet.0.$((i + 1))/24" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$name-sw" link set "${name}s$i" master br0
      ip -n "$name-sw" link set "${name}s$i" up
      if [ -n "$delay" ] && [ -n "$rate" ]; then
        ip netns exec "$ns" tc qdisc add dev eth0 root handle 1: netem delay "$delay" rate "$rate"
      elif [ -n "$delay" ]; then
        ip netns exec "$ns" tc qdisc add dev eth0 root netem delay "$delay"
      elif [ -n "$rate" ]; then
        ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 50ms
      fi
      # The host's own hostname, /dev/shm and /etc/hosts: namespaces held by one idle process
      # per host, which the agent and `exec` enter (nsenter --target).
      setsid ip netns exec "$ns" unshare --uts --mount --propagation private \
        sh -c "hostname h$i && mount -t tmpfs -o size=2g,mode=1777 tmpfs /dev/shm && mount -t tmpfs -o size=1g tmpfs /run/braid-host && mount -t tmpfs -o size=512m tmpfs /run/braid-mpi && mount --bind '$state/hosts' /etc/hosts && echo \$\$ >'$state/h$i.pid' && exec sleep infinity" \
        </dev/null >/dev/null 2>&1 &
      for _ in $(seq 100); do [ -s "$state/h$i.pid" ] && break; sleep 0.05; done
      [ -s "$state/h$i.pid" ] || { echo "cluster.sh: host h$i did not start" >&2; down; exit 1; }
    done
    cat >"$agent" <<EOF
#!/bin/sh
# rsh agent for mpirun (plm_rsh_agent): "agent.sh HOST command..." runs the command on that host.
host="\$1"; shift
exec env OMPI_MCA_orte_tmpdir_base="\${OMPI_MCA_orte_tmpdir_base:-/run/braid-mpi}" nsenter --target "\$(cat "$state/\$host.pid")" --net --uts --mount -- sh -c "\$*"
EOF
    chmod +x "$agent"
    trap - ERR
    echo "cluster.sh: $count host(s) up: $(for i in $(seq 0 $((count - 1))); do printf 'h%s=%s.0.%s ' "$i" "$subnet" $((i + 1)); done)${rate:+rate $rate }${delay:+delay $delay}"
    ;;
  exec)
    need_root
    [ ${#args[@]} -ge 2 ] || { echo "usage: scripts/cluster.sh exec HOST command..." >&2; exit 2; }
    run_on "${args[@]}"
    ;;
  agent)
    [ -x "$agent" ] || { echo "cluster.sh: test bed '$name' is not up" >&2; exit 2; }
    echo "$agent"
    ;;
  status)
    if [ ! -f "$state/count" ]; then
      echo "cluster.sh: test bed '$name' is down"
      exit 0
    fi
    for i in $(hosts); do
      printf 'h%s %s processes: %s\n' "$i" "$(ip -n "$name-h$i" -br addr show eth0 2>/dev/null | awk '{print $3}')" "$(ip netns pids "$name-h$i" 2>/dev/null | wc -l)"
    done
    ;;
  down)
    need_root
    down
    echo "cluster.sh: test bed '$name' is down"
    ;;
  *)
    echo "usage: scripts/cluster.sh up N [--rate R] [--delay D] | exec HOST cmd... | agent | status | down" >&2
    exit 2
    ;;
esac
