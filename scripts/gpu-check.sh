#!/usr/bin/env bash
# GPU smoke test and measurements, for a machine with an NVIDIA GPU and ONNX Runtime's CUDA build.
#
#   ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1 scripts/gpu-check.sh [seconds per run] [results folder]
#
# ORT_DYLIB_PATH names the library of the `onnxruntime-gpu` wheel (libonnxruntime_providers_cuda.so beside it).
# The CUDA libraries it needs (cuBLAS, cuDNN, cuFFT, cuRAND, the CUDA runtime) are looked up in the `nvidia-*`
# Python packages of `python3` unless LD_LIBRARY_PATH already holds them. The binaries are target/release/infergate
# (built with `--features cuda`) and target/release/loadgen unless INFERGATE_BIN / LOADGEN_BIN say otherwise.
#
# One server serves a ResNet-18 (made by tools/make_resnet.py) and the bundled mlp, each on the CPU and on cuda:0,
# batching off and on (eager, and with a 500 µs queue delay), with TF32 (ONNX Runtime's default) and without. The
# check fails unless the GPU models report the CUDA provider, their outputs equal the CPU backend's within tolerance
# (one request, and concurrent requests batched together), and every load run answers without errors. Then each
# model and mode is measured at concurrency 1, 8 and 64 over REST with binary tensors; the table is printed and
# written, with the raw figures, into the results folder.
#
# GPU_CHECK_DEVICE=cpu runs every "gpu" model on the CPU instead: a rehearsal of the script on a machine without
# a GPU (the provider check is then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-4}
results=${2:-target/gpu-check}
device=${GPU_CHECK_DEVICE:-cuda:0}
infergate=${INFERGATE_BIN:-target/release/infergate}
loadgen=${LOADGEN_BIN:-target/release/loadgen}
python=${PYTHON:-python3}
: "${ORT_DYLIB_PATH:?set ORT_DYLIB_PATH to the CUDA build of libonnxruntime}"
export ORT_DYLIB_PATH
mkdir -p "$results"
results=$(cd "$results" && pwd)

if [ "$device" != cpu ]; then
  # The CUDA libraries of the nvidia-* wheels, found through the interpreter's search path.
  cuda_dirs=$("$python" - <<'EOF'
import glob, os, sys
wanted = ("libcudart.so", "libcublas.so", "libcublasLt.so", "libcudnn.so", "libcufft.so", "libcurand.so", "libnvrtc.so")
dirs = set()
for base in sys.path:
    for lib in glob.glob(os.path.join(base, "nvidia", "**", "lib*.so*"), recursive=True):
        if os.path.basename(lib).startswith(wanted):
            dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
EOF
)
  export LD_LIBRARY_PATH="$(dirname "$ORT_DYLIB_PATH")${cuda_dirs:+:$cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "CUDA libraries from: ${cuda_dirs:-LD_LIBRARY_PATH}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$results/gpu.txt"
  "$infergate" backends | tee "$results/backends.txt"
  grep -q 'cuda.*registers' "$results/backends.txt" || { echo "the CUDA execution provider does not register" >&2; exit 1; }
else
  echo "rehearsal on the CPU (GPU_CHECK_DEVICE=cpu)" | tee "$results/gpu.txt"
fi

root=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; rm -rf "$root"' EXIT
"$python" tools/make_resnet.py "$root/resnet18.onnx"
cpus=$(nproc)
for model in resnet18 mlp; do
  source=models/mlp/1/model.onnx
  [ "$model" = resnet18 ] && source=$root/resnet18.onnx
  batch=64
  [ "$model" = resnet18 ] && batch=32
  # name: device, max_batch_size, queue delay (µs), instances, intra-op threads
  for spec in "cpu_off cpu 0 0 2 $((cpus / 4))" "cpu_on cpu $batch 0 2 $((cpus / 4))" "gpu_off $device 0 0 2 1" \
    "gpu_on $device $batch 0 2 1" "gpu_delay $device $batch 500 2 1" "gpu_exact $device $batch 0 2 1"; do
    read -r name dev rows delay instances threads <<<"$spec"
    [ "$threads" -ge 1 ] || threads=1
    mkdir -p "$root/repo/${model}_$name/1"
    ln -s "$(cd "$(dirname "$source")" && pwd)/$(basename "$source")" "$root/repo/${model}_$name/1/model.onnx"
    cat >"$root/repo/${model}_$name/model.toml" <<EOF
backend = "ort"
device = "$dev"
intra_op_threads = $threads
max_batch_size = $rows
[batching]
max_queue_delay_us = $delay
max_queue_size = 1024
instances = $instances
EOF
    if [ "$device" != cpu ] && [ "$name" = gpu_exact ]; then
      printf '[cuda]\ntf32 = false\n' >>"$root/repo/${model}_$name/model.toml"
    fi
  done
done

port=$((18000 + RANDOM % 1000))
"$infergate" --host 127.0.0.1 --http-port "$port" --grpc-port 0 --metrics-port 0 \
  --model-repository "$root/repo" --log-level warn &
server=$!
started=$(date +%s.%N)
ready=
# GPU versions run cuDNN's algorithm search while they warm up: give them time.
for _ in $(seq 1500); do
  curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && ready=1 && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.2
done
[ -n "$ready" ] || { echo "infergate never became ready" >&2; curl -s "127.0.0.1:$port/v2/repository/index" >&2; exit 1; }
echo "ready after $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $started }") s" | tee "$results/ready.txt"
if [ "$device" != cpu ]; then
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | tee "$results/gpu-memory.txt"
fi
grep VmRSS "/proc/$server/status" | tee "$results/server-rss.txt"

curl -s "127.0.0.1:$port/v2/repository/index" >"$results/index.json"
"$python" scripts/gpu-check.py check "http://127.0.0.1:$port" "$device"

: >"$results/runs.jsonl"
for model in resnet18 mlp; do
  for name in cpu_off cpu_on gpu_off gpu_on gpu_delay gpu_exact; do
    for concurrency in 1 8 64; do
      "$loadgen" --url "http://127.0.0.1:$port" --model "${model}_$name" --concurrency "$concurrency" --binary \
        --duration "$seconds" --warmup 1 --label "${model}_$name" --json >>"$results/runs.jsonl"
    done
  done
done
"$python" scripts/gpu-check.py table "$results/runs.jsonl" | tee "$results/table.md"
