#!/usr/bin/env bash
# Batching off against eager batching on the bundled mlp model, on one core: two servers (max_batch_size = 0, and
# max_batch_size = 64 with no delay) pinned to core 0, the load generator pinned to core 1, closed loop, one row
# per request. Each round measures, per protocol, off then on at concurrency 64, then off then on at concurrency 1,
# so slow drifts of the machine hit both modes alike; the summary gives the medians over the rounds and the median
# of the per-round ratios (load-tests/batching.py).
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
    [ -f "$lib" ] && export ORT_DYLIB_PATH=$PWD/$lib
  done
fi
cargo build --release --quiet --bin infergate && cargo build --release --quiet -p infergate-load-tests --bin loadgen
out=target/perf
mkdir -p "$out"
results=$out/batching.jsonl
: > "$results"
root=$(mktemp -d)
declare -A pid port
cleanup() {
  for mode in "${!pid[@]}"; do kill "${pid[$mode]}" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
mkdir -p "$root/off/mlp/1" "$root/on/mlp/1"
cp models/mlp/1/model.onnx "$root/off/mlp/1/"
cp models/mlp/1/model.onnx "$root/on/mlp/1/"
echo 'max_batch_size = 0' > "$root/off/mlp/model.toml"
printf 'max_batch_size = 64\n[batching]\nmax_queue_delay_us = 0\nmax_queue_size = 1024\n' > "$root/on/mlp/model.toml"

for mode in off on; do
  port[$mode]=$((18100 + RANDOM % 800))
  [ "$mode" = on ] && [ "${port[on]}" = "${port[off]}" ] && port[on]=$((port[off] + 1))
  taskset -c 0 target/release/infergate --host 127.0.0.1 --http-port "${port[$mode]}" \
    --grpc-port "$((port[$mode] + 1000))" --metrics-port 0 --model-repository "$root/$mode" --log-level warn &
  pid[$mode]=$!
done
for mode in off on; do
  ready=
  for _ in $(seq 200); do curl -sf "127.0.0.1:${port[$mode]}/v2/health/ready" >/dev/null && ready=1 && break; sleep 0.1; done
  [ -n "$ready" ] || { echo "the batching-$mode server on port ${port[$mode]} never became ready" >&2; exit 1; }
done

run() { # round mode protocol concurrency
  local p=${port[$2]}
  taskset -c 1 target/release/loadgen --url "http://127.0.0.1:$p" --grpc-url "http://127.0.0.1:$((p + 1000))" \
    --model mlp --concurrency "$4" --protocol "$3" --duration "$seconds" --warmup 2 --label "batching-$2" --json \
    2>/dev/null | sed "s/^{/{\"round\": $1, \"mode\": \"$2\", /" >> "$results"
}
for round in $(seq "$rounds"); do
  for protocol in "${protocols[@]}"; do
    for concurrency in 64 1; do
      run "$round" off "$protocol" "$concurrency"
      run "$round" on "$protocol" "$concurrency"
    done
  done
  echo "round $round of $rounds done" >&2
done
python3 load-tests/batching.py "$results"
