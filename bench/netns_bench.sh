#!/usr/bin/env bash
# ringxfer-bench between two network namespaces joined by a veth pair: two "hosts" on
# one machine. Creates the namespaces rx-bench-a (initiator, 10.77.0.1) and rx-bench-b
# (target, 10.77.0.2), runs iperf3 on the same path for reference, then ringxfer
# writes and reads, and removes everything on exit. Needs root.
# Usage: bench/netns_bench.sh [BUILD_DIR] [extra ringxfer-bench flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-release}
shift || true
bench=$build/tools/ringxfer-bench
[ -x "$bench" ] || { echo "no $bench: run tools/quickstart first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)" >&2; exit 77; }

A=rx-bench-a B=rx-bench-b
cleanup() {
  [ -n "${target_pid:-}" ] && kill "$target_pid" 2>/dev/null || true
  [ -n "${iperf_pid:-}" ] && kill "$iperf_pid" 2>/dev/null || true
  ip netns del $A 2>/dev/null || true
  ip netns del $B 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add $A
ip netns add $B
ip link add rxb-va type veth peer name rxb-vb
ip link set rxb-va netns $A
ip link set rxb-vb netns $B
ip -n $A addr add 10.77.0.1/24 dev rxb-va
ip -n $B addr add 10.77.0.2/24 dev rxb-vb
for ns in $A $B; do
  ip -n $ns link set lo up
done
ip -n $A link set rxb-va up
ip -n $B link set rxb-vb up

if command -v iperf3 >/dev/null; then
  echo "== iperf3 over the veth pair (1 MiB writes, 5 s)"
  ip netns exec $B iperf3 -s -1 -B 10.77.0.2 >/dev/null 2>&1 &
  iperf_pid=$!
  sleep 0.5
  ip netns exec $A iperf3 -c 10.77.0.2 -l 1M -t 5 -f g 2>&1 | grep -E 'sender|receiver' || true
  wait "$iperf_pid" 2>/dev/null || true
  iperf_pid=
fi

ip netns exec $B "$bench" --role=target --host=10.77.0.2 --port=40000 > /tmp/rx-netns-target.log 2>&1 &
target_pid=$!
for i in $(seq 50); do grep -q READY /tmp/rx-netns-target.log && break; sleep 0.1; done
for op in write read; do
  echo "== ringxfer $op, initiator in $A, target in $B"
  ip netns exec $A "$bench" --role=initiator --host=10.77.0.2 --port=40000 --op=$op "$@"
done
