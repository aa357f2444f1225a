#!/usr/bin/env bash
# On-demand loading under a memory budget, at scale: a repository of MODELS (1000) small models, each loaded on its
# first request, least recently used idle versions evicted to stay within --max-loaded-bytes.
#   1. makes the repository in a temporary folder (load-tests/scale_repo.py: copies of iris and mlp, each with
#      weights of its own);
#   2. calibrates: a server with no budget answers one request for each of CALIBRATION_MODELS (20) models; the
#      average measured cost of a loaded version is infergate_loaded_bytes / infergate_loaded_versions;
#   3. starts the server with --max-loaded-bytes = BUDGET_MODELS (50) × that cost, prints how long it took from
#      start to ready (listing the repository, loading nothing);
#   4. drives it open loop for DURATION (60) seconds at RATE (200) req/s, models drawn Zipf(ZIPF = 1.1)
#      (load-tests/scale.py), sampling its RSS and metrics every second.
#   load-tests/scale.sh [BINARY (target/release/infergate)]
# The report goes to target/perf/scale.json, the servers' logs to target/perf/scale.log, and a Markdown summary to
# stdout. Exits non-zero when a request failed or the RSS went over budget + baseline + MARGIN_MB (64) MiB.
# CONTROL_MODE=poll runs the driver against a server that loads every model at start, without calibration or
# budget (a dry run of the driver; use a small MODELS then). Ports: PORT_BASE (18100) to PORT_BASE + 99.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -le 1 ] || { echo "usage: $0 [BINARY]" >&2; exit 2; }
binary=${1:-target/release/infergate}
[ -x "$binary" ] || { echo "usage: $0 [BINARY]: no executable at $binary" >&2; exit 2; }
rate=${RATE:-200}
zipf=${ZIPF:-1.1}
margin_mb=${MARGIN_MB:-64}
models=${MODELS:-1000}
duration=${DURATION:-60}
budget_models=${BUDGET_MODELS:-50}
calibration_models=${CALIBRATION_MODELS:-20}
mode=${CONTROL_MODE:-on-demand}
port_base=${PORT_BASE:-18100}
python=.venv/bin/python
[ -x "$python" ] || python=python3
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  lib=$(ls "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -1 || true)
  [ -z "$lib" ] || export ORT_DYLIB_PATH=$lib
fi
out=target/perf
mkdir -p "$out"
report=$out/scale.json
log=$out/scale.log
: > "$log"
work=$(mktemp -d)
server=
stop() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=
  fi
}
cleanup() {
  stop
  rm -rf "$work"
}
trap cleanup EXIT

"$python" load-tests/scale_repo.py "$work/models" --models "$models"

# Starts the server with the extra flags given, on three consecutive ports (REST, gRPC, metrics) from port_base,
# trying another three when it does not come up; sets server (its pid), http, metrics and ready_seconds.
start() {
  local port begin elapsed_ms try
  for try in 1 2 3 4 5; do
    port=$((port_base + 3 * (RANDOM % 33)))
    begin=$(date +%s%N)
    NO_COLOR=1 "$binary" serve --model-repository "$work/models" --model-control-mode "$mode" \
      --http-host 127.0.0.1 --grpc-host 127.0.0.1 --metrics-host 127.0.0.1 \
      --http-port "$port" --grpc-port $((port + 1)) --metrics-port $((port + 2)) \
      --state-dir "$work/state" --shutdown-grace-seconds 5 "$@" >>"$log" 2>&1 &
    server=$!
    # Poll mode loads every model before it is ready, which takes a while with many of them.
    for _ in $(seq 6000); do
      kill -0 "$server" 2>/dev/null || break
      # Ready, and still ours: a server that lost a port to another process has exited by then.
      if curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && kill -0 "$server" 2>/dev/null; then
        elapsed_ms=$((($(date +%s%N) - begin) / 1000000))
        ready_seconds=$(printf '%d.%03d' $((elapsed_ms / 1000)) $((elapsed_ms % 1000)))
        http=http://127.0.0.1:$port
        metrics=http://127.0.0.1:$((port + 2))/metrics
        return
      fi
      sleep 0.02
    done
    stop
    # Another try only when a port was taken; any other error would come back.
    tail -3 "$log" | grep -q "Address already in use" || break
    echo "scale: a port was taken (try $try of 5)" >&2
  done
  echo "scale: no server became ready; the end of $log:" >&2
  tail -20 "$log" >&2
  exit 1
}

budget_flags=()
setup=()
if [ "$mode" = on-demand ]; then
  start
  echo "scale: calibration server ready in ${ready_seconds} s; one request to each of $calibration_models models" >&2
  calibration=$("$python" load-tests/scale.py --calibrate "$calibration_models" --repo "$work/models" \
    --url "$http" --metrics-url "$metrics" --server-pid "$server")
  stop
  cost=$(echo "$calibration" | "$python" -c 'import json, sys; print(round(json.load(sys.stdin)["average"]))')
  budget=$((budget_models * cost))
  echo "scale: calibration $calibration" >&2
  echo "scale: average measured cost $cost bytes per version; budget $budget bytes ($budget_models versions)" >&2
  budget_flags=(--max-loaded-bytes "$budget")
  setup=(--setup "cost_bytes=$cost" --setup "budget_models=$budget_models")
fi
start "${budget_flags[@]}"
echo "scale: server ($mode, ${budget_flags[*]:-no budget}) from start to ready in ${ready_seconds} s" >&2
status=0
"$python" load-tests/scale.py --repo "$work/models" --url "$http" --metrics-url "$metrics" --server-pid "$server" \
  --rate "$rate" --zipf "$zipf" --seconds "$duration" --out "$report" --check --margin-mb "$margin_mb" \
  --setup "ready_seconds=$ready_seconds" "${setup[@]}" >&2 || status=$?
stop
echo
"$python" load-tests/scale.py --markdown "$report"
echo
if [ "$status" = 0 ]; then
  echo "scale: passed (no failed request, RSS within budget + baseline + $margin_mb MiB); report in $report" >&2
else
  echo "scale: FAILED; report in $report, server log in $log" >&2
fi
exit "$status"
