#!/usr/bin/env bash
# A cluster of N "nodes" on one machine, for multi-node tests: N network namespaces, each with its own address on a
# private subnet, joined by veth pairs to a bridge that lives in a hub namespace of its own, so that nothing touches
# the host's network; each node runs its processes with its own hostname (a UTS namespace). Processes enter only the
# node's network namespace (nsenter --net, not `ip netns exec`, which would remount /sys and hide the cgroup
# hierarchy slurmd needs), with a /tmp of their own (/run/PREFIX/nodeI/tmp bound over it in a mount namespace: nodes
# do not share /tmp, and Slurm's PMIx and Open MPI keep per-node files there). So the files a test shares between
# nodes must not be under /tmp. Needs root.
#
#   netns_cluster.sh up PREFIX N        make PREFIX-hub and PREFIX-node0..N-1 (10.231.X.10+i/24, X from PREFIX)
#   netns_cluster.sh down PREFIX        remove them (every process left in them is killed first)
#   netns_cluster.sh run PREFIX I CMD   run CMD on node I (its namespace, hostname PREFIX-nodeI)
#   netns_cluster.sh rsh PREFIX HOST CMD...
#                                       what Open MPI's launcher calls in place of ssh (plm_rsh_agent): runs the
#                                       command line on the node whose address or name is HOST
#   netns_cluster.sh addr PREFIX I      node I's address
# Open MPI between the nodes: mpirun on node 0 with a hostfile of the nodes' addresses, --mca plm_rsh_agent
# "netns_cluster.sh rsh PREFIX", and its TCP transports kept to the subnet (btl self,tcp; oob and btl tcp_if_include).
set -euo pipefail

subnet() {  # 10.231.X: X from the prefix, so that two clusters at once do not share a subnet
  local sum
  sum=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
  echo "10.$((200 + sum % 50)).$(((sum / 50) % 250))"
}

cmd=${1:?usage: netns_cluster.sh up|down|run|rsh|addr PREFIX ...}
prefix=${2:?PREFIX}
net=$(subnet "$prefix")
hub="$prefix-hub"

case $cmd in
  up)
    n=${3:?N}
    ip netns add "$hub"
    ip netns exec "$hub" ip link set lo up
    ip netns exec "$hub" ip link add br0 type bridge
    ip netns exec "$hub" ip link set br0 up
    for ((i = 0; i < n; i++)); do
      node="$prefix-node$i"
      ip netns add "$node"
      # The pair is made inside the node's namespace (its name is then the node's own), one end moved to the hub.
      ip netns exec "$node" ip link add eth0 type veth peer name "p$i"
      ip netns exec "$node" ip link set "p$i" netns "$hub"
      ip netns exec "$hub" ip link set "p$i" master br0
      ip netns exec "$hub" ip link set "p$i" up
      ip netns exec "$node" ip link set lo up
      ip netns exec "$node" ip addr add "$net.$((10 + i))/24" dev eth0
      ip netns exec "$node" ip link set eth0 up
    done
    # Bounded wait: each node reaches node 0 (the bridge forwards once its ports are up).
    for ((i = 1; i < n; i++)); do
      for ((t = 0; t < 50; t++)); do
        ip netns exec "$prefix-node$i" ping -c1 -W1 "$net.10" >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
    ;;
  down)
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$prefix-(node[0-9]+|hub)$" || true); do
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "/run/$prefix"
    ;;
  addr)
    echo "$net.$((10 + ${3:?I}))"
    ;;
  run)
    i=${3:?I}
    shift 3
    mkdir -p "/run/$prefix/node$i/tmp"
    exec nsenter --net="/run/netns/$prefix-node$i" unshare --uts --mount --propagation private sh -c \
      'hostname "$0"; mount --bind "$1" /tmp; shift 2; exec "$@"' "$prefix-node$i" "/run/$prefix/node$i/tmp" -- "$@"
    ;;
  rsh)
    host=${3:?HOST}
    shift 3
    case $host in
      "$net".*) i=$((${host##*.} - 10)) ;;
      "$prefix"-node*) i=${host#"$prefix"-node} ;;
      *) echo "netns_cluster.sh rsh: $host is not a node of $prefix" >&2; exit 255 ;;
    esac
    # ssh hands the remote shell its arguments joined by spaces; so does this.
    mkdir -p "/run/$prefix/node$i/tmp"
    exec nsenter --net="/run/netns/$prefix-node$i" unshare --uts --mount --propagation private sh -c \
      'hostname "$0"; mount --bind "$1" /tmp; eval "$2"' "$prefix-node$i" "/run/$prefix/node$i/tmp" "$*"
    ;;
  *)
    echo "netns_cluster.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
