#!/usr/bin/env bash
# What payload logging costs, with load-tests/compare-builds.sh:
#   load-tests/payload_log.sh off BASE_BINARY NEW_BINARY [seconds] [rounds]
#       logging off: a build before payload logging against this one, same flags and models (the cost of the
#       request ids and of the checks on the request path).
#   load-tests/payload_log.sh sampled BINARY [percent (10)] [seconds] [rounds]
#       one build twice: the bundled models (base), and a copy of them whose model.toml logs `percent` % of the
#       requests, inputs and outputs, to the file sink (new: --payload-log-dir in a temporary folder).
# Other settings as compare-builds.sh says (MODELS, PROTOCOLS, CONCURRENCIES, ...); results in
# target/perf/compare-builds.jsonl, and the file sink's record and drop counts printed at the end.
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
    [ $# -ge 2 ] || { echo "usage: $0 sampled BINARY [percent] [seconds] [rounds]" >&2; exit 2; }
    binary=$2
    percent=${3:-10}
    shift 2
    [ $# -eq 0 ] || shift
    ;;
  *)
    echo "usage: $0 off BASE_BINARY NEW_BINARY [seconds] [rounds] | $0 sampled BINARY [percent] [seconds] [rounds]" >&2
    exit 2
    ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r models "$work/models"
for config in "$work"/models/*/model.toml; do
  printf '\n[logging]\npercent = %s\nmode = "both"\nsink = "file"\n' "$percent" >>"$config"
done
echo "payload_log: $percent % of the requests of every model logged to $work/log" >&2
NEW_MODELS="$work/models" NEW_FLAGS="--payload-log-dir $work/log" \
  load-tests/compare-builds.sh "$binary" "$binary" "$@"
lines=$(cat "$work"/log/*.jsonl* 2>/dev/null | wc -l)
bytes=$(du -sb "$work/log" | cut -f1)
echo "payload_log: $lines records, $bytes bytes written by the logged build" >&2
