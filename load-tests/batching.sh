#!/usr/bin/env bash
# Batching off (max_batch_size = 0) against eager batching (max_batch_size = 64, no delay) on the bundled mlp model,
# on one core: servers pinned to core 0, the load generator pinned to core 1, closed loop, one row per request.
# Each round measures, per protocol:
#   - concurrency 64: each mode alone on a fresh server, back to back (off first in odd rounds, on first in even
#     ones), so slow drifts of the machine hit both modes alike;
#   - concurrency 1: both servers up and one client alternating between them (loadgen --compare-url), so that even
#     a short stall hits both. Both servers share core 0, so whatever one does after answering overlaps the
#     other's next request: each mode pays for the other's background work alike.
# The summary gives the medians over the rounds and the median of the per-round ratios (load-tests/batching.py).
# At concurrency 64 each run also records the server's CPU time per request (user and kernel, from /proc) and its
# backend's share (from the server's statistics), which the summary splits into what both modes pay and what each
# adds.
#   load-tests/batching.sh [seconds per run] [rounds] [protocol ...]
#   protocols: rest-binary rest-json grpc (default), grpc-stream
# Runs ONNX Runtime when ORT_DYLIB_PATH is set or the test environment (.venv) has it, tract otherwise.
# Results go to target/perf/batching.jsonl, loadgen's own output to target/perf/batching.log.
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
log=$out/batching.log
: > "$results"
: > "$log"
root=$(mktemp -d)
servers=()
ports=()
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

# Starts a server for mode $1 on core 0, on the next port that works; sets `urls` (the loadgen flags naming it,
# with the prefix $2) and adds its pid to `servers`.
next_port=$((18100 + RANDOM % 400))
start() {
  local mode=$1 prefix=${2:-} port pid
  for _ in 1 2 3 4 5; do
    port=$next_port
    next_port=$((18100 + (next_port - 18100 + 1) % 800))
    taskset -c 0 target/release/infergate --host 127.0.0.1 --http-port "$port" --grpc-port "$((port + 1000))" \
      --metrics-port 0 --model-repository "$root/$mode" --log-level warn 2>>"$log" &
    pid=$!
    for _ in $(seq 200); do
      kill -0 "$pid" 2>/dev/null || break
      # Ready, and still ours: a server that lost the port to another process has exited by then.
      if curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && kill -0 "$pid" 2>/dev/null; then
        servers+=("$pid")
        ports+=("$port")
        urls=("--${prefix}url" "http://127.0.0.1:$port" "--${prefix}grpc-url" "http://127.0.0.1:$((port + 1000))")
        return
      fi
      sleep 0.05
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  echo "no batching-$mode server became ready; see $log" >&2
  exit 1
}
stop() {
  kill "${servers[@]}" 2>/dev/null || true
  wait "${servers[@]}" 2>/dev/null || true
  servers=()
  ports=()
}
# The server's CPU time so far (user and system, in clock ticks, from /proc), and from its statistics the rows it
# answered and the time its instance spent stacking, running and splitting batches, as one JSON object.
usage() { # pid port
  curl -sf "127.0.0.1:$2/v2/models/mlp/stats" | python3 -c '
import json, sys
stats = json.load(sys.stdin)["model_stats"][0]
user, system = map(int, open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()[11:13])
backend = sum(b[k]["ns"] for b in stats["batch_stats"] for k in ("compute_input", "compute_infer", "compute_output"))
print(json.dumps({"user": user, "system": system, "rows": stats["inference_count"], "backend_ns": backend}))' "$1"
}
loadgen() { # round protocol concurrency [loadgen flags]
  local round=$1 protocol=$2 concurrency=$3 report before after
  shift 3
  # At concurrency 64 one server runs: its CPU and backend time per row answered, over the whole run.
  [ "$concurrency" = 1 ] || before=$(usage "${servers[0]}" "${ports[0]}")
  if ! report=$(taskset -c 1 target/release/loadgen --model mlp --protocol "$protocol" --concurrency "$concurrency" \
    --duration "$seconds" --warmup 2 --json "$@" 2>>"$log"); then
    echo "loadgen failed (round $round, $protocol, c=$concurrency):" >&2
    tail -5 "$log" >&2
    exit 1
  fi
  [ "$concurrency" = 1 ] || after=$(usage "${servers[0]}" "${ports[0]}")
  python3 -c '
import json, sys
before, after = sys.argv[3], sys.argv[4]
for line in filter(None, sys.argv[1].splitlines()):
    run = {"round": int(sys.argv[2]), **json.loads(line)}
    if before and after:
        start, end = json.loads(before), json.loads(after)
        rows, tick_us = end["rows"] - start["rows"], 1e6 / int(sys.argv[5])
        run["server_user_us"] = (end["user"] - start["user"]) * tick_us / rows
        run["server_system_us"] = (end["system"] - start["system"]) * tick_us / rows
        run["backend_us"] = (end["backend_ns"] - start["backend_ns"]) / 1e3 / rows
    print(json.dumps(run))' "$report" "$round" "${before:-}" "${after:-}" "$(getconf CLK_TCK)" >> "$results"
}
for round in $(seq "$rounds"); do
  # Odd rounds run off first, even rounds on first, so neither mode always follows the other.
  order=(off on)
  [ $((round % 2)) = 0 ] && order=(on off)
  for protocol in "${protocols[@]}"; do
    for mode in "${order[@]}"; do
      start "$mode"
      loadgen "$round" "$protocol" 64 "${urls[@]}" --label "batching-$mode"
      stop
    done
    start "${order[0]}"
    first=("${urls[@]}")
    start "${order[1]}" compare-
    loadgen "$round" "$protocol" 1 "${first[@]}" "${urls[@]}" --label "batching-${order[0]}" \
      --compare-label "batching-${order[1]}"
    stop
  done
  echo "round $round of $rounds done" >&2
done
python3 load-tests/batching.py "$results"
