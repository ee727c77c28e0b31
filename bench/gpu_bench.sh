#!/usr/bin/env bash
# GPU staging against host memory (issue 12's targets) with the fake runtime
# (tests/gpu/libringxfer_fake_gpu.so), where the wire and not this machine's CPUs is the
# limit, as on a real NIC: two network namespaces joined by a veth pair whose rate
# tc tbf limits. ringxfer-bench moves 1 MiB x 256 batches, writes and reads, with host
# memory on both sides, then GPU memory on both sides with copies faster than the wire
# (no copy cost) and with copies as slow as the wire (the fake's copy rate = the tbf
# rate), and prints each with its ratio to host memory and its CPU cost per GB.
# The fake's copies are memcpy on this machine's CPUs (a GPU's copy engine costs the
# CPU nothing): its CPU-s/GB is an upper bound of the GPU path's. Needs root.
# Usage: bench/gpu_bench.sh [BUILD_DIR] [RATE_GBIT (8)] [ITERS (30)]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-release}
rate=${2:-8}
iters=${3:-30}
bench=$build/tools/ringxfer-bench
fake=$build/tests/gpu/libringxfer_fake_gpu.so
[ -x "$bench" ] && [ -e "$fake" ] || { echo "no $bench or $fake: build $build first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns, tc)" >&2; exit 77; }

A=rx-gpu-a B=rx-gpu-b
cleanup() {
  [ -n "${target_pid:-}" ] && kill "$target_pid" 2>/dev/null || true
  ip netns del $A 2>/dev/null || true
  ip netns del $B 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add $A
ip netns add $B
ip link add rxg-va type veth peer name rxg-vb
ip link set rxg-va netns $A
ip link set rxg-vb netns $B
ip -n $A addr add 10.78.0.1/24 dev rxg-va
ip -n $B addr add 10.78.0.2/24 dev rxg-vb
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set rxg-va up
ip -n $B link set rxg-vb up
# Both directions: writes leave A, read data leaves B.
ip netns exec $A tc qdisc add dev rxg-va root tbf rate "${rate}gbit" burst 4mb latency 100ms
ip netns exec $B tc qdisc add dev rxg-vb root tbf rate "${rate}gbit" burst 4mb latency 100ms
wire_gbps=$(awk -v r="$rate" 'BEGIN { printf "%.3f", r / 8 }')

# run MEM OP COPY_GBPS -> "GB/s cpu-s/GB"
run() {
  local mem=$1 op=$2 copy=$3 port=$((41000 + RANDOM % 1000))
  ip netns exec $B env RINGXFER_FAKE_GPU_COPY_GBPS="$copy" "$bench" --role=target \
    --host=10.78.0.2 --port=$port --mem="$mem" --gpu_runtime="$fake" \
    --max_size=1048576 > /tmp/rx-gpu-target.log 2>&1 &
  target_pid=$!
  for _ in $(seq 100); do grep -q READY /tmp/rx-gpu-target.log && break; sleep 0.1; done
  local out
  out=$(ip netns exec $A env RINGXFER_FAKE_GPU_COPY_GBPS="$copy" "$bench" --role=initiator \
    --host=10.78.0.2 --port=$port --mem="$mem" --gpu_runtime="$fake" --op="$op" \
    --min_size=1048576 --max_size=1048576 --iters="$iters" --warmup=4 --stats 2>&1)
  kill "$target_pid" 2>/dev/null || true
  wait "$target_pid" 2>/dev/null || true
  target_pid=
  local bw cpu
  bw=$(printf '%s\n' "$out" | awk -F'|' '/^\| +1048576 /{gsub(/ /,"",$6); print $6}')
  cpu=$(printf '%s\n' "$out" | sed -n 's/.*cpu-s per GB \([0-9.]*\) (both.*/\1/p')
  echo "${bw:-0} ${cpu:-0}"
}

echo "== ringxfer-bench 1 MiB x 256 over a veth pair limited to ${rate} Gbit/s (${wire_gbps} GB/s) by tbf"
echo "   $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-6s %-34s %8s %8s %10s\n' op memory "GB/s" ratio "cpu-s/GB"
for op in write read; do
  read -r host_bw host_cpu < <(run cpu "$op" 0)
  printf '%-6s %-34s %8s %8s %10s\n' "$op" "host" "$host_bw" "1.00" "$host_cpu"
  for copy in 0 "$wire_gbps"; do
    label="GPU, copies at $([ "$copy" = 0 ] && echo "memcpy speed" || echo "${copy} GB/s (the wire)")"
    read -r bw cpu < <(run gpu "$op" "$copy")
    ratio=$(awk -v a="$bw" -v b="$host_bw" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-6s %-34s %8s %8s %10s\n' "$op" "$label" "$bw" "$ratio" "$cpu"
  done
done
