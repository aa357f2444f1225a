#!/usr/bin/env bash
# What tracing costs, with load-tests/compare-builds.sh:
#   load-tests/tracing.sh off BASE_BINARY NEW_BINARY [seconds] [rounds]
#       tracing off: a build before tracing against this one, same flags (the cost of the spans' call sites).
#   load-tests/tracing.sh sampled BINARY [seconds] [rounds]
#       one build twice: without tracing (base) and with every request traced and exported (new:
#       --otlp-endpoint to a local OTLP receiver, --trace-sample-ratio 1), the receiver on loadgen's core.
# Other settings as compare-builds.sh says (MODELS, PROTOCOLS, CONCURRENCIES, ...). Needs .venv (the test suite's:
# grpcio and opentelemetry-proto, for the receiver); results in target/perf/compare-builds.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  off)
    [ $# -ge 3 ] || { echo "usage: $0 off BASE_BINARY NEW_BINARY [seconds] [rounds]" >&2; exit 2; }
    shift
    exec load-tests/compare-builds.sh "$@"
    ;;
  sampled)
    [ $# -ge 2 ] || { echo "usage: $0 sampled BINARY [seconds] [rounds]" >&2; exit 2; }
    binary=$2
    shift 2
    ;;
  *)
    echo "usage: $0 off BASE_BINARY NEW_BINARY [seconds] [rounds] | $0 sampled BINARY [seconds] [rounds]" >&2
    exit 2
    ;;
esac
if [ ! -x .venv/bin/python ]; then echo "run scripts/test once first: it makes .venv" >&2; exit 1; fi
receiver_out=$(mktemp)
taskset -c 1 .venv/bin/python tests/interop/otlp_receiver.py >"$receiver_out" &
receiver=$!
trap 'kill "$receiver" 2>/dev/null || true; wait "$receiver" 2>/dev/null || true; rm -f "$receiver_out"' EXIT
for _ in $(seq 100); do [ -s "$receiver_out" ] && break; sleep 0.1; done
port=$(head -n 1 "$receiver_out")
[ -n "$port" ] || { echo "tracing: the OTLP receiver did not start" >&2; exit 1; }
echo "tracing: OTLP receiver on 127.0.0.1:$port" >&2
NEW_FLAGS="--otlp-endpoint http://127.0.0.1:$port --trace-sample-ratio 1" \
  load-tests/compare-builds.sh "$binary" "$binary" "$@"
