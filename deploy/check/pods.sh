#!/usr/bin/env bash
# The image and the manifests run as a cluster would run them (deploy/check/pods/run.py): builds the image
# (deploy/check/image.sh), then starts each rendered workload as a podman pod with its own address on a link-local
# network (169.254.88.0/24), with the manifest's user, read-only root, volumes and dropped capabilities, and checks
# it from outside: probes on their declared schedule, the Prometheus scrape, Triton's clients through the Service's
# ports, termination with requests in flight. Each workload is run again with a planted fault, which must fail.
# Needs root, podman (runc), debootstrap, and the rendered manifests of deploy/check/run.sh.
#   deploy/check/pods.sh       (PYTHON: an interpreter with tritonclient and PyYAML; default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
rendered=target/deploy-tools/rendered
[ -f "$rendered/standalone.yaml" ] || { echo "no rendered manifests in $rendered: run deploy/check/run.sh first" >&2; exit 1; }

started=$(date +%s)
deploy/check/image.sh
export CONTAINERS_CONF=$PWD/target/deploy-image/containers.conf
echo "== image built in $(($(date +%s) - started)) s"
"$python" deploy/check/pods/run.py "$rendered" deploy/kserve
