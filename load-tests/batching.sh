#!/usr/bin/env bash
# Batching on vs off on the bundled mlp model, in one go: the server pinned to core 0, the load generator to
# core 1. Prints one line per run (and JSON lines into $OUT_JSON if set).
#   load-tests/batching.sh [seconds] [protocol]      protocol: rest-json (default), rest-binary, grpc, grpc-stream
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
protocol=${2:-rest-json}
cargo build --release --quiet --bin infergate && cargo build --release --quiet -p infergate-load-tests --bin loadgen
root=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$root"' EXIT
for mode in off on; do
  mkdir -p "$root/$mode/mlp/1"
  cp models/mlp/1/model.onnx "$root/$mode/mlp/1/"
done
echo 'max_batch_size = 0' > "$root/off/mlp/model.toml"
printf 'max_batch_size = 64\n[batching]\nmax_queue_delay_us = 0\nmax_queue_size = 1024\n' > "$root/on/mlp/model.toml"

run() { # mode concurrency
  local port=18$((RANDOM % 900 + 100))
  taskset -c 0 target/release/infergate --host 127.0.0.1 --http-port "$port" --grpc-port "$((port + 1000))" --metrics-port 0 \
    --model-repository "$root/$1" --log-level warn &
  server=$!
  local ready=
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && ready=1 && break; sleep 0.1; done
  [ -n "$ready" ] || { echo "infergate on port $port never became ready" >&2; exit 1; }
  taskset -c 1 target/release/loadgen --url "http://127.0.0.1:$port" --grpc-url "http://127.0.0.1:$((port + 1000))" --model mlp --concurrency "$2" --protocol "$protocol" \
    --duration "$seconds" --warmup 2 --label "batching-$1-$protocol" --json >> "${OUT_JSON:-/dev/null}"
  kill "$server"; wait "$server" 2>/dev/null || true
}
run off 64
run on 64
run off 1
run on 1
