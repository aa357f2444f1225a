#!/usr/bin/env bash
# Builds the container image with podman, offline: the Debian base image that deploy/Dockerfile names is made with
# debootstrap from the Debian mirror apt already uses, imported under that name; the image is then the Dockerfile's
# `prebuilt` target (the same runtime stage as the default target) with this checkout's release binary and ONNX
# Runtime's library. Also makes the stand-in for the sidecar example's application image (the base with curl).
#   deploy/check/image.sh      (BINARY: default target/release/infergate; ORT_DYLIB_PATH: the library to ship)
# Writes target/deploy-image/containers.conf; every podman command of the checks runs with it (CONTAINERS_CONF).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$PWD/target/deploy-image
binary=${BINARY:-target/release/infergate}
ort=${ORT_DYLIB_PATH:?the ONNX Runtime library to put in the image}
mkdir -p "$work"

# runc: crun needs cgroup v2 features some hosts lack. No default ulimits: some hosts refuse raising nofile/nproc.
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$work/containers.conf

base=$(sed -n 's/^FROM \(debian:[a-z]*-slim\) AS runtime-base$/\1/p' deploy/Dockerfile)
[ -n "$base" ] || { echo "deploy/Dockerfile: no 'FROM debian:<release>-slim AS runtime-base'" >&2; exit 1; }
release=${base#debian:}
release=${release%-slim}
app=localhost/infergate-check/app:$release

# A root filesystem of `release`, made by debootstrap (minbase, like Debian's slim images) and imported as `name`.
make_base() { # name, extra packages (comma-separated, may be empty)
  local name=$1 include=$2 rootfs
  if podman image exists "$name"; then
    echo "$name: already built"
    return
  fi
  local mirror
  mirror=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' | awk -v r="$release" '$1 == r { print $2; exit }')
  [ -n "$mirror" ] || { echo "apt knows no mirror of Debian $release (apt-get indextargets)" >&2; exit 1; }
  rootfs=$work/rootfs
  rm -rf "$rootfs"
  echo "== debootstrap $release ($mirror) for $name"
  mkdir -p "$work/debs"
  debootstrap --variant=minbase --cache-dir="$work/debs" ${include:+--include="$include"} \
    "$release" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$name" >/dev/null
  rm -rf "$rootfs"
}
make_base "localhost/$base" ""
make_base "$app" "curl,ca-certificates"

echo "== podman build --target prebuilt (deploy/Dockerfile)"
context=$work/context
rm -rf "$context" && mkdir -p "$context/dist"
cp -R models "$context/models"
cp "$binary" "$context/dist/infergate"
cp "$ort" "$context/dist/libonnxruntime.so.1.31.1"
podman build --pull=never --quiet --format docker --target prebuilt -f deploy/Dockerfile -t localhost/infergate:latest "$context" \
  >/dev/null
rm -rf "$context"
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' localhost/infergate:latest
