#!/usr/bin/env bash
# Two builds of the server on the bundled models, measured in the same rounds, so that a change can show it costs
# nothing:
#   load-tests/compare-builds.sh BASE_BINARY NEW_BINARY [seconds per run] [rounds]        (defaults: 10 s, 3 rounds)
#   LOADGEN=path      the load generator (default target/release/loadgen)
#   MODELS="iris"     the models to drive (default iris, and mlp when models/ has it)
#   WARMUP=seconds    loadgen's unrecorded warm-up before each run (default 2)
#   ALONE=0           side-by-side runs only (no throughput of each build alone; a third of the time)
#   PROTOCOLS="grpc" CONCURRENCIES="64"   fewer workloads (default rest-json rest-binary grpc, and 8 64)
#   BASE_FLAGS="..." NEW_FLAGS="..."       more flags for one build (e.g. tracing on for new only: load-tests/tracing.sh)
#   BASE_MODELS=dir NEW_MODELS=dir         another model repository for one build (default models/; it must hold
#                                          the models driven, e.g. a copy with [logging]: load-tests/payload_log.sh)
# Both builds run with the same flags (models/, loopback, free ports, --metrics-port 0, --log-level warn), from copies
# taken at the start (a rebuild of target/ during the runs changes nothing), pinned to core 0; loadgen is pinned to
# core 1. Each round starts both servers afresh and measures REST with JSON tensors, REST with binary tensors and
# gRPC, at concurrency 8 and 64, on each model:
#   - both builds at once, each caller alternating between them (loadgen --compare-url; the build that the callers
#     start on swaps each round), with each server's CPU time (user + system, /proc) read around the run: the CPU
#     time per request and the latencies, under the same conditions for both. With the server on one core, its CPU
#     time per request is the inverse of the throughput it can reach;
#   - unless ALONE=0, each build alone, back to back (base first in odd rounds, new first in even ones): the
#     throughput. Side by side both builds get the same req/s by construction, which is why it comes from these.
# load-tests/compare_builds.py then prints, per model, workload and concurrency, the medians over the rounds and the
# median of the per-round ratios new / base, and flags where new is more than 5% slower side by side (CPU time per
# request or p99 ratio > 1.05); it reports and exits 0, a human judges. This script stops with an error when loadgen
# fails, a server does not start or exits, or any request fails.
# Runs ONNX Runtime when ORT_DYLIB_PATH is set or the test environment (.venv) has it, tract otherwise.
# Results go to target/perf/compare-builds.jsonl (one JSON line per build and run), loadgen's output to
# target/perf/compare-builds.log, each server's to target/perf/compare-builds-base.log and -new.log.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 4 ]; then
  echo "usage: $0 BASE_BINARY NEW_BINARY [seconds per run (10)] [rounds (3)]" >&2
  exit 2
fi
# The absolute path of the executable file $2, named $1 in the error.
executable() {
  if [ ! -f "$2" ] || [ ! -x "$2" ]; then
    echo "compare-builds: $1 '$2' is not an executable file" >&2
    return 1
  fi
  realpath "$2"
}
base_binary=$(executable BASE_BINARY "$1")
new_binary=$(executable NEW_BINARY "$2")
loadgen_binary=
[ -z "${LOADGEN:-}" ] || loadgen_binary=$(executable LOADGEN "$LOADGEN")
seconds=${3:-10}
rounds=${4:-3}
warmup=${WARMUP:-2}
if ! [[ $seconds =~ ^[0-9]+([.][0-9]+)?$ && $warmup =~ ^[0-9]+([.][0-9]+)?$ && $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "compare-builds: seconds ($seconds) and WARMUP ($warmup) must be numbers, rounds ($rounds) a count" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
if [ -z "$loadgen_binary" ]; then
  if [ ! -x target/release/loadgen ]; then
    echo "compare-builds: no target/release/loadgen; build it (cargo build --release -p infergate-load-tests" \
      "--bin loadgen) or name one with LOADGEN=path" >&2
    exit 2
  fi
  loadgen_binary=$PWD/target/release/loadgen
fi
models=()
if [ -n "${MODELS:-}" ]; then
  read -r -a models <<<"$MODELS"
else
  models=(iris)
  [ ! -d models/mlp ] || models+=(mlp)
fi
for model in "${models[@]}"; do
  [ -d "models/$model" ] || { echo "compare-builds: models/ has no model '$model'" >&2; exit 2; }
done
read -r -a protocols <<<"${PROTOCOLS:-rest-json rest-binary grpc}"
read -r -a concurrencies <<<"${CONCURRENCIES:-8 64}"
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  for lib in .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.*; do
    if [ -f "$lib" ]; then export ORT_DYLIB_PATH=$PWD/$lib; fi
  done
fi

out=target/perf
mkdir -p "$out"
results=$out/compare-builds.jsonl
log=$out/compare-builds.log
: >"$results"
: >"$log"
: >"$out/compare-builds-base.log"
: >"$out/compare-builds-new.log"
root=$(mktemp -d)
declare -A pid=() http=() grpc=()
stop() {
  local p
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null || true; done
  pid=()
}
cleanup() {
  stop
  rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Copies, so that both builds and the generator stay the same through every round.
cp "$base_binary" "$root/base"
cp "$new_binary" "$root/new"
cp "$loadgen_binary" "$root/loadgen"

# Two ports that are free now, for one server's REST and gRPC endpoints.
free_ports() {
  python3 -c '
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))'
}
# The end of build $1's server log, on stderr.
server_log() {
  echo "  $out/compare-builds-$1.log ends:" >&2
  tail -n 15 "$out/compare-builds-$1.log" | sed 's/^/    /' >&2
}
# Starts build $1 (base or new) on core 0 and waits until it is ready; sets pid, http and grpc for it. A server that
# exits before it is ready may have lost a port to another process: it is tried again on other ports, 3 times.
start() {
  local side=$1 attempt port_http port_grpc p status extra=()
  mkdir -p "$root/tmp-$side"
  local repository=${BASE_MODELS:-models}
  if [ "$side" = base ]; then read -r -a extra <<<"${BASE_FLAGS:-}"; else read -r -a extra <<<"${NEW_FLAGS:-}"; fi
  [ "$side" = base ] || repository=${NEW_MODELS:-models}
  for attempt in 1 2 3; do
    read -r port_http port_grpc < <(free_ports)
    # Its own TMPDIR: no server state left in the shared temporary folder by earlier runs reaches either build.
    TMPDIR=$root/tmp-$side taskset -c 0 "$root/$side" --host 127.0.0.1 --http-port "$port_http" \
      --grpc-port "$port_grpc" --metrics-port 0 --model-repository "$repository" --log-level warn "${extra[@]}" \
      >>"$out/compare-builds-$side.log" 2>&1 &
    p=$!
    for _ in $(seq 600); do
      kill -0 "$p" 2>/dev/null || break
      # Ready, and still ours: a server that lost a port to another process has exited by then.
      if curl -sf "http://127.0.0.1:$port_http/v2/health/ready" >/dev/null && kill -0 "$p" 2>/dev/null; then
        pid[$side]=$p
        http[$side]=$port_http
        grpc[$side]=$port_grpc
        return
      fi
      sleep 0.05
    done
    if kill -0 "$p" 2>/dev/null; then
      kill "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
      echo "compare-builds: the $side server was not ready after 30 s" >&2
      server_log "$side"
      exit 1
    fi
    status=0
    wait "$p" 2>/dev/null || status=$?
    echo "compare-builds: the $side server exited (status $status) before it was ready (attempt $attempt of 3)" >&2
  done
  echo "compare-builds: the $side server never became ready" >&2
  server_log "$side"
  exit 1
}
# Stops the script when either server is gone; $1 says after what.
check_servers() {
  local side status
  for side in base new; do
    if ! kill -0 "${pid[$side]}" 2>/dev/null; then
      status=0
      wait "${pid[$side]}" 2>/dev/null || status=$?
      unset "pid[$side]"
      echo "compare-builds: the $side server exited (status $status) during $1" >&2
      server_log "$side"
      exit 1
    fi
  done
}
# The CPU time (user + system, clock ticks) both servers have used so far: "base new".
cpu_ticks() {
  local side
  for side in base new; do
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/${pid[$side]}/stat"
  done | paste -sd' '
}
# One loadgen run on core 1 for round $1: $2 is `alone` or `side-by-side`, then the model, the protocol, the
# concurrency, and the loadgen flags naming the server(s) and their labels. Appends its figures, one JSON line per
# build, to the results; stops the script when loadgen fails, a server exits or a request fails.
measure() {
  local round=$1 run=$2 model=$3 protocol=$4 concurrency=$5 what report before after
  shift 5
  what="round $round, $model $protocol c=$concurrency, $run"
  before=$(cpu_ticks)
  if ! report=$(taskset -c 1 "$root/loadgen" --model "$model" --protocol "$protocol" --concurrency "$concurrency" \
    --duration "$seconds" --warmup "$warmup" --json "$@" 2>>"$log"); then
    echo "compare-builds: loadgen failed ($what); $log ends:" >&2
    tail -n 5 "$log" | sed 's/^/    /' >&2
    check_servers "$what"
    exit 1
  fi
  check_servers "$what"
  after=$(cpu_ticks)
  # loadgen exits 0 however many requests failed: every request must have been answered.
  if ! python3 - "$report" "$what" "$run" "$round" "$before" "$after" "$(getconf CLK_TCK)" >>"$results" <<'EOF'; then
import json, sys
report, what, run, round_ = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# Each server's CPU time over the run (both run on core 0, so in a side-by-side run they share it alike).
ticks = dict(zip(["base", "new"], (int(a) - int(b) for a, b in zip(sys.argv[6].split(), sys.argv[5].split()))))
tick_us = 1e6 / int(sys.argv[7])
try:
    runs = [json.loads(line) for line in report.splitlines() if line.strip()]
except ValueError:
    sys.exit(f"compare-builds: {what}: loadgen printed something other than JSON lines:\n{report}")
expected = 2 if run == "side-by-side" else 1
problems = [] if len(runs) == expected else [f"{len(runs)} result lines from loadgen, not {expected}"]
for r in runs:
    cpu = {"server_cpu_us_per_request": ticks[r["label"]] * tick_us / r["ok"]} if r["ok"] else {}
    print(json.dumps({"round": round_, "run": run, **r, **cpu}))
    if r["errors"] or not r["ok"]:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in r["errors_by_kind"].items())
        problems.append(f"{r['label']}: {r['ok']} answered, {r['errors']} not ({kinds})")
figures = ", ".join(
    f"{r['label']} {r['requests_per_second']:,.0f} req/s p99 {r['p99_us']:,} µs "
    f"cpu {ticks[r['label']] * tick_us / max(r['ok'], 1):.1f} µs/req" for r in runs)
print(f"  {what}: {figures}", file=sys.stderr)
for problem in problems:
    print(f"compare-builds: {what}: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
    echo "compare-builds: stopped; see $log and the server logs in $out" >&2
    exit 1
  fi
}

alone=${ALONE:-1}
runs=$((rounds * ${#models[@]} * ${#protocols[@]} * ${#concurrencies[@]} * (1 + 2 * alone)))
echo "compare-builds: base $base_binary ($(sha256sum "$root/base" | cut -c1-12))" >&2
echo "compare-builds: new  $new_binary ($(sha256sum "$root/new" | cut -c1-12))" >&2
[ -z "${BASE_FLAGS:-}" ] || echo "compare-builds: base flags: $BASE_FLAGS" >&2
[ -z "${NEW_FLAGS:-}" ] || echo "compare-builds: new flags: $NEW_FLAGS" >&2
backend="tract (no ONNX Runtime found)"
[ -z "${ORT_DYLIB_PATH:-}" ] || backend="ONNX Runtime ($ORT_DYLIB_PATH), where a model does not ask for tract"
echo "compare-builds: ${models[*]} x ${protocols[*]} x c=${concurrencies[*]}, $rounds round(s): $runs runs of" \
  "$warmup + $seconds s, about $(python3 -c "print(round($runs * ($warmup + $seconds) / 60, 1))") min" >&2
echo "compare-builds: backend: $backend" >&2
for round in $(seq "$rounds"); do
  # Odd rounds put base first, even rounds new first, so neither build always follows the other.
  order=(base new)
  [ $((round % 2)) = 1 ] || order=(new base)
  start "${order[0]}"
  start "${order[1]}"
  first=("--url" "http://127.0.0.1:${http[${order[0]}]}" "--grpc-url" "http://127.0.0.1:${grpc[${order[0]}]}")
  second=("--compare-url" "http://127.0.0.1:${http[${order[1]}]}"
    "--compare-grpc-url" "http://127.0.0.1:${grpc[${order[1]}]}")
  for model in "${models[@]}"; do
    for protocol in "${protocols[@]}"; do
      for concurrency in "${concurrencies[@]}"; do
        for side in "${order[@]}"; do
          [ "$alone" = 1 ] || continue
          measure "$round" alone "$model" "$protocol" "$concurrency" --url "http://127.0.0.1:${http[$side]}" \
            --grpc-url "http://127.0.0.1:${grpc[$side]}" --label "$side"
        done
        measure "$round" side-by-side "$model" "$protocol" "$concurrency" "${first[@]}" "${second[@]}" \
          --label "${order[0]}" --compare-label "${order[1]}"
      done
    done
  done
  stop
  echo "compare-builds: round $round of $rounds done" >&2
done
python3 load-tests/compare_builds.py "$results"
