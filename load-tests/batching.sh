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
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$root"
}
trap cleanup EXIT
for mode in off on; do
  mkdir -p "$root/$mode/mlp/1"
  cp models/mlp/1/model.onnx "$root/$mode/mlp/1/"
done
echo 'max_batch_size = 0' > "$root/off/mlp/model.toml"
printf 'max_batch_size = 64\n[batching]\nmax_queue_delay_us = 0\nmax_queue_size = 1024\n' > "$root/on/mlp/model.toml"

# One run on a fresh server, so every run starts from the same state.
run() { # round mode protocol concurrency
  local port=$((18100 + RANDOM % 800)) ready=
  taskset -c 0 target/release/infergate --host 127.0.0.1 --http-port "$port" --grpc-port "$((port + 1000))" \
    --metrics-port 0 --model-repository "$root/$2" --log-level warn &
  server=$!
  for _ in $(seq 200); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && ready=1 && break; sleep 0.05; done
  [ -n "$ready" ] || { echo "the batching-$2 server on port $port never became ready" >&2; exit 1; }
  taskset -c 1 target/release/loadgen --url "http://127.0.0.1:$port" --grpc-url "http://127.0.0.1:$((port + 1000))" \
    --model mlp --concurrency "$4" --protocol "$3" --duration "$seconds" --warmup 2 --label "batching-$2" --json \
    2>/dev/null | sed "s/^{/{\"round\": $1, \"mode\": \"$2\", /" >> "$results"
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=
}
for round in $(seq "$rounds"); do
  # Odd rounds run off first, even rounds on first, so neither mode always follows the other.
  order=(off on)
  [ $((round % 2)) = 0 ] && order=(on off)
  for protocol in "${protocols[@]}"; do
    for concurrency in 64 1; do
      for mode in "${order[@]}"; do run "$round" "$mode" "$protocol" "$concurrency"; done
    done
  done
  echo "round $round of $rounds done" >&2
done
python3 load-tests/batching.py "$results"
