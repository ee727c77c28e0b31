#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time on a fresh seed corpus and prints its
# executions per second. Usage: run_fuzz.sh FUZZER SEED_MAKER SECONDS
# A crash or a failed property makes the fuzzer exit non-zero, and so this script.
set -euo pipefail
fuzzer=$1
seeds=$2
seconds=${RX_FUZZ_SECONDS:-$3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
"$seeds" "$work/corpus"
# -rss_limit_mb bounds memory; -timeout flags a single input that runs over 10 s.
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus" >"$work/log" 2>&1 || {
  status=$?
  tail -n 60 "$work/log"
  for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-*; do
    [ -e "$f" ] && { echo "input that failed ($f):"; od -A d -t x1 "$f" | head -n 20; }
  done
  exit "$status"
}
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
rate=$(grep -o 'exec/s: [0-9]*' "$work/log" | tail -n 1 | cut -d' ' -f2)
cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -n 1 | cut -d' ' -f2)
echo "$(basename "$fuzzer"): ${runs:-?} runs in ${seconds} s, ${rate:-?} exec/s, coverage ${cov:-?} edges"
