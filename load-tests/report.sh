#!/usr/bin/env bash
# The CPU performance report of docs/performance.md, in one command:
#   load-tests/report.sh [seconds per run] [repetitions]
# Builds infergate, loadgen and floor (release), installs the FastAPI baseline (load-tests/baselines/fastapi) into
# .venv-baseline and the model tools into .venv-tools, makes a ResNet-18 (tools/make_resnet.py), then measures iris,
# mlp and resnet-18 at concurrency 1, 8 and 64 over REST JSON, REST binary and gRPC against infergate, REST JSON
# against the FastAPI baseline, and the in-process ONNX Runtime floor; each run `repetitions` times. Every server
# runs ONNX Runtime 1.31.1 with one intra-op thread, pinned to core 0; the load generator is pinned to core 1.
# Also records idle and loaded RSS and time to ready. Figures go to target/perf/results.jsonl; the table is written
# into docs/performance.md between its cpu-report markers (load-tests/report.py).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-4}
repetitions=${2:-3}
out=target/perf
rm -rf "$out" && mkdir -p "$out"
results="$out/results.jsonl"

cargo build --release --quiet -p infergate --bin infergate
cargo build --release --quiet -p infergate-load-tests --bins
if [ ! -x .venv-baseline/bin/python ]; then python3 -m venv .venv-baseline; fi
.venv-baseline/bin/pip install --quiet --disable-pip-version-check -r load-tests/baselines/fastapi/requirements.txt
if [ ! -x .venv-tools/bin/python ]; then python3 -m venv .venv-tools; fi
.venv-tools/bin/pip install --quiet --disable-pip-version-check -r tools/requirements.txt
ORT_DYLIB_PATH=$PWD/$(ls .venv-baseline/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.*)
export ORT_DYLIB_PATH

# One repository for every server: the highest version of each model, ONNX Runtime with one thread. infergate
# batches as it ships (eager batching: a free instance takes whatever is queued).
repo="$out/models"
for model in iris mlp; do
  mkdir -p "$repo/$model/1"
  version=$(ls models/$model | grep -E '^[0-9]+$' | sort -n | tail -n 1)
  cp "models/$model/$version/model.onnx" "$repo/$model/1/"
done
mkdir -p "$repo/resnet18/1"
.venv-tools/bin/python tools/make_resnet.py "$repo/resnet18/1/model.onnx" >/dev/null
for model in iris mlp resnet18; do
  batch=1024
  [ "$model" = resnet18 ] && batch=8
  printf 'backend = "ort"\nintra_op_threads = 1\nmax_batch_size = %s\n' "$batch" > "$repo/$model/model.toml"
done

server=
stop() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; server=; }
trap stop EXIT
rss_kb() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
# Starts a server pinned to core 0 and waits for readiness on $1; records its idle RSS and time to ready.
start() { # name port command...
  local name=$1 port=$2
  shift 2
  local began
  began=$(date +%s.%N)
  taskset -c 0 "$@" >"$out/$name.log" 2>&1 &
  server=$!
  for _ in $(seq 6000); do
    curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1 && break
    sleep 0.01
  done
  curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null || { echo "$name never became ready" >&2; cat "$out/$name.log" >&2; exit 1; }
  local ready
  ready=$(awk "BEGIN {print $(date +%s.%N) - $began}")
  sleep 2
  echo "{\"kind\": \"server\", \"server\": \"$name\", \"ready_seconds\": $ready, \"idle_rss_kb\": $(rss_kb "$server" VmRSS)}" >> "$results"
}
loaded() { # name: peak RSS after the runs
  echo "{\"kind\": \"loaded\", \"server\": \"$1\", \"peak_rss_kb\": $(rss_kb "$server" VmHWM)}" >> "$results"
}
measure() { # server model protocol concurrency port grpc-port
  for rep in $(seq "$repetitions"); do
    taskset -c 1 target/release/loadgen --url "http://127.0.0.1:$5" --grpc-url "http://127.0.0.1:$6" --model "$2" \
      --protocol "$3" --concurrency "$4" --duration "$seconds" --warmup 1 --label "$1" --timeout-ms 60000 --json \
      2>/dev/null | sed "s/^{/{\"kind\": \"run\", \"server\": \"$1\", \"rep\": $rep, /" >> "$results"
  done
}

# The machine's loopback round trip between the two cores: part of every server's latency at concurrency 1.
taskset -c 0 python3 load-tests/tcp_round_trip.py server 18620 &
echo_server=$!
taskset -c 1 python3 load-tests/tcp_round_trip.py client 18620 >> "$results"
wait "$echo_server" || true

# The floor: each model run back to back in-process on core 0, no server.
for model in iris mlp resnet18; do
  for rep in $(seq "$repetitions"); do
    taskset -c 0 target/release/floor --model-file "$repo/$model/1/model.onnx" --threads 1 --seconds "$seconds" \
      --label "$model" --json 2>/dev/null | sed "s/^{/{\"kind\": \"floor\", \"model\": \"$model\", \"rep\": $rep, /" >> "$results"
  done
done

# infergate on the report's repository, then on the bundled models alone (idle RSS and time to ready as shipped).
start infergate-bundled 18601 target/release/infergate --host 127.0.0.1 --http-port 18601 --grpc-port 18602 \
  --metrics-port 18603 --model-repository models --log-level warn
stop
start infergate 18601 target/release/infergate --host 127.0.0.1 --http-port 18601 --grpc-port 18602 \
  --metrics-port 18603 --model-repository "$repo" --log-level warn
for model in iris mlp resnet18; do
  for protocol in rest-json rest-binary grpc; do
    for concurrency in 1 8 64; do
      measure infergate "$model" "$protocol" "$concurrency" 18601 18602
    done
  done
done
loaded infergate
stop

start fastapi 18611 .venv-baseline/bin/python load-tests/baselines/fastapi/server.py --repository "$repo" --port 18611
for model in iris mlp resnet18; do
  for concurrency in 1 8 64; do
    measure fastapi "$model" rest-json "$concurrency" 18611 18611
  done
done
loaded fastapi
stop

echo "{\"kind\": \"machine\", \"cpus\": $(nproc), \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"load_average\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"seconds\": $seconds, \"repetitions\": $repetitions}" >> "$results"
python3 load-tests/report.py "$results" docs/performance.md
