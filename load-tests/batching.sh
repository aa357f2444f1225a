#!/usr/bin/env bash
# Batching off (max_batch_size = 0) against eager batching (max_batch_size = 64, no delay) on the bundled mlp model,
# on one core: each run on a fresh server pinned to core 0, the load generator pinned to core 1, closed loop, one
# row per request. Each round measures, per protocol, both modes at concurrency 64, then both at concurrency 1,
# back to back (off first in odd rounds, on first in even ones), so slow drifts of the machine hit both modes alike;
# the summary gives the medians over the rounds and the median of the per-round ratios (load-tests/batching.py).
#   load-tests/batching.sh [seconds per run] [rounds] [protocol ...]
#   protocols: rest-binary rest-json grpc (default), grpc-stream
# Runs ONNX Runtime when ORT_DYLIB_PATH is set or the test environment (.venv) has it, tract otherwise.
# Results go to target/perf/batching.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
protocols=("$@")
[ ${#protocols[@]} -gt 0 ] || protocols=(rest-binary rest-json grpc)
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  for lib in .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.*; do
    if [ -f "$lib" ]; then export ORT_DYLIB_PATH=$PWD/$lib; fi
  done
fi
cargo build --release --quiet --bin infergate && cargo build --release --quiet -p infergate-load-tests --bin loadgen
out=target/perf
mkdir -p "$out"
results=$out/batching.jsonl
: > "$results"
root=$(mktemp -d)
servers=()
cleanup() {
  if [ ${#servers[@]} -gt 0 ]; then kill "${servers[@]}" 2>/dev/null || true; fi
  rm -rf "$root"
}
trap cleanup EXIT
for mode in off on; do
  mkdir -p "$root/$mode/mlp/1"
  cp models/mlp/1/model.onnx "$root/$mode/mlp/1/"
done
echo 'max_batch_size = 0' > "$root/off/mlp/model.toml"
printf 'max_batch_size = 64\n[batching]\nmax_queue_delay_us = 0\nmax_queue_size = 1024\n' > "$root/on/mlp/model.toml"

# Starts a server for mode $1 on core 0, each on a port of its own; sets port and adds the pid to servers.
next_port=$((18100 + RANDOM % 400))
start() {
  port=$next_port
  next_port=$((18100 + (next_port - 18100 + 1) % 800))
  taskset -c 0 target/release/infergate --host 127.0.0.1 --http-port "$port" --grpc-port "$((port + 1000))" \
    --metrics-port 0 --model-repository "$root/$1" --log-level warn &
  servers+=($!)
  local ready=
  for _ in $(seq 200); do
    kill -0 "${servers[-1]}" 2>/dev/null || break
    curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && ready=1 && break
    sleep 0.05
  done
  [ -n "$ready" ] || { echo "the batching-$1 server on port $port never became ready" >&2; exit 1; }
}
stop() {
  kill "${servers[@]}" 2>/dev/null || true
  wait "${servers[@]}" 2>/dev/null || true
  servers=()
}
loadgen() { # round protocol concurrency [loadgen flags]
  local round=$1 protocol=$2 concurrency=$3
  shift 3
  taskset -c 1 target/release/loadgen --model mlp --protocol "$protocol" --concurrency "$concurrency" \
    --duration "$seconds" --warmup 2 --json "$@" 2>/dev/null | sed "s/^{/{\"round\": $round, /" >> "$results"
}
urls() { # [prefix]: the flags naming the server just started
  echo "--${1:-}url http://127.0.0.1:$port --${1:-}grpc-url http://127.0.0.1:$((port + 1000))"
}
for round in $(seq "$rounds"); do
  # Odd rounds run off first, even rounds on first, so neither mode always follows the other.
  order=(off on)
  [ $((round % 2)) = 0 ] && order=(on off)
  for protocol in "${protocols[@]}"; do
    # Concurrency 64: each mode alone on a fresh server.
    for mode in "${order[@]}"; do
      start "$mode"
      # shellcheck disable=SC2046 # the flags split on purpose
      loadgen "$round" "$protocol" 64 $(urls) --label "batching-$mode"
      stop
    done
    # Concurrency 1: both servers up, the client alternating between them one request at a time, so every stall
    # of the machine falls on both modes alike.
    start "${order[0]}"
    first=$(urls)
    start "${order[1]}"
    # shellcheck disable=SC2046
    loadgen "$round" "$protocol" 1 $first $(urls compare-) --label "batching-${order[0]}" \
      --compare-label "batching-${order[1]}"
    stop
  done
  echo "round $round of $rounds done" >&2
done
python3 load-tests/batching.py "$results"
