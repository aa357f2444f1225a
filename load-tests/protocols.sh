#!/usr/bin/env bash
# The bundled iris model at concurrency 8 over each transport: REST with JSON tensors and with binary tensors
# (loadgen), then REST and gRPC driven by Triton's perf_analyzer from .venv (scripts/test installs it). The server
# is pinned to core 0, the clients to core 1; the load average is printed with the figures.
#   load-tests/protocols.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
cargo build --release --quiet --bin infergate && cargo build --release --quiet -p infergate-load-tests --bin loadgen
http=18$((RANDOM % 900 + 100))
grpc=$((http + 1))
taskset -c 0 target/release/infergate --host 127.0.0.1 --http-port "$http" --grpc-port "$grpc" --metrics-port 0 \
  --model-repository models --log-level warn &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf "127.0.0.1:$http/v2/health/ready" >/dev/null && break; sleep 0.1; done
curl -sf "127.0.0.1:$http/v2/health/ready" >/dev/null || { echo "infergate never became ready" >&2; exit 1; }

for mode in json binary; do
  flag=""
  [ "$mode" = binary ] && flag="--binary"
  taskset -c 1 target/release/loadgen --url "http://127.0.0.1:$http" --model iris --concurrency 8 \
    --duration "$seconds" --warmup 2 --label "rest-$mode" $flag
done

if [ -x .venv/bin/perf_analyzer ]; then
  cuda_lib=$(ls -d .venv/lib/python3*/site-packages/nvidia/cuda_runtime/lib | head -n 1)
  for protocol in http grpc; do
    port=$http
    [ "$protocol" = grpc ] && port=$grpc
    LD_LIBRARY_PATH="$PWD/$cuda_lib" taskset -c 1 .venv/bin/perf_analyzer -m iris -u "127.0.0.1:$port" -i "$protocol" \
      --concurrency-range 8 --measurement-interval "$((seconds * 1000))" --stability-percentage 500 \
      --max-trials 5 --percentile 99 2>&1 | grep -E "Concurrency: 8|p99 latency" | sed "s/^/perf_analyzer $protocol: /"
  done
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
