#!/usr/bin/env bash
# TCP against a Unix domain socket on the bundled models, side by side in one run (load-tests/sockets.py): REST
# with binary tensors and gRPC, at concurrency 1, 8 and 64. The server is pinned to core 0, loadgen to core 1.
#   load-tests/sockets.sh [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin infergate && cargo build --release --quiet -p infergate-load-tests --bin loadgen
python3 load-tests/sockets.py --seconds "${1:-5}"
