#!/usr/bin/env bash
# Where a request's server time goes over TCP and over a Unix socket: the server (pinned to core 0) is sampled
# with perf while loadgen (core 1) drives REST with binary tensors at concurrency 64 on iris over each transport,
# and the samples are grouped (TCP/IP stack, Unix socket, wakeups, syscalls, kernel memory, infergate, libc) and
# turned into µs per request with the server CPU per request given (from load-tests/sockets.sh, measured without
# perf). Needs `perf` (Debian: linux-perf) and root or perf_event_paranoid <= 1.
#   load-tests/sockets_profile.sh TCP_US_PER_REQUEST UNIX_US_PER_REQUEST
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin infergate && cargo build --release --quiet -p infergate-load-tests --bin loadgen
out=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; rm -rf "$out"' EXIT
taskset -c 0 target/release/infergate serve --model-repository models --host 127.0.0.1 --http-port 18600 \
  --grpc-port 18601 --metrics-port 0 --http-socket "$out/http.sock" --log-level warn &
server=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18600/v2/health/ready >/dev/null && break; sleep 0.1; done
for transport in tcp unix; do
  url=http://127.0.0.1:18600; [ "$transport" = unix ] && url="unix:$out/http.sock"
  taskset -c 1 target/release/loadgen --url "$url" --model iris --protocol rest-binary --concurrency 64 \
    --duration 12 --warmup 1 --json >/dev/null &
  generator=$!
  sleep 4
  perf record -q -F 4000 -g -p "$server" -o "$out/$transport.data" -- sleep 5 2>/dev/null
  wait "$generator"
done
python3 load-tests/sockets_profile.py "$out" "${1:?TCP µs per request}" "${2:?Unix µs per request}"
