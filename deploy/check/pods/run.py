"""Runs every deployment manifest as a cluster would, with podman, and checks it from outside the pod; then runs each
again with a planted fault, which must fail for the planted reason.

    run.py RENDERED_DIR KSERVE_DIR    (RENDERED_DIR: helm template / kustomize output of deploy/check/run.sh)

Cases: the standalone overlay's Deployment, the sidecar overlay (an application calling infergate on its socket),
the Helm chart's Deployment, the chart in sidecar mode, and the KServe runtimes (REST v2, gRPC v2) with the models in /mnt/models."""

import copy
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checks  # noqa: E402
import kubelet  # noqa: E402
import manifests  # noqa: E402
from probes import PodFailed  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
WORK = os.path.join(ROOT, "target", "deploy-image", "pods")
IMAGES = {"infergate": "localhost/infergate:latest", "curlimages/curl": "localhost/infergate-check/app:bookworm"}


def copy_models(path):
    """What KServe's storage initializer leaves in /mnt/models: the storageUri's folder, a model repository."""
    shutil.copytree(os.path.join(ROOT, "models"), path, dirs_exist_ok=True)


class Case:
    """One pod: how to find it in the manifests, which container is infergate, and what to check."""

    def __init__(self, name, file, find, server="infergate", fill=None, check=None):
        self.name, self.file, self.find, self.server = name, file, find, server
        self.fill, self.check = fill or {}, check

    def pod(self, rendered):
        return self.find(manifests.load(os.path.join(rendered, self.file)))


def through_service(running, lines):
    pod, ip = running.pod, running.ip
    lines.append(checks.triton_infer("HTTP", f"{ip}:{pod.service_port('http')}"))
    lines.append(checks.triton_infer("gRPC", f"{ip}:{pod.service_port('grpc')}"))
    return pod.scrape_targets(), ("", ip, pod.service_port("http"))


def sidecar(running, lines):
    app = running.pod.container("app")
    deadline = time.monotonic() + 20
    while not (answers := [line for line in running.logs(app, 5).splitlines() if '"model_name":"iris"' in line]):
        if time.monotonic() > deadline:
            raise PodFailed(f"the application got no prediction from its sidecar: {running.logs(app, 5)}")
        time.sleep(0.5)
    lines.append(f"the application's call to its sidecar: {answers[-1][:110]}")
    for port in (8000, 8001):
        lines.append(checks.closed(running.ip, port))
    # The application goes first (its shell ignores SIGTERM, so it is removed), then the sidecar drains.
    kubelet.podman("rm", "--force", "--time", "0", running.ctr(app))
    return running.pod.scrape_targets(), (running.netns(), "127.0.0.1", 8000)


def kserve(protocol):
    def check(running, lines):
        port, name = manifests.kserve_port(running.pod)
        if name == "h2c":
            lines.append(checks.triton_infer("gRPC", f"{running.ip}:{port}"))
            rest = 8080
        else:
            lines.append(checks.triton_infer("HTTP", f"{running.ip}:{port}"))
            rest = port
        if (name == "h2c") != (protocol == "grpc-v2"):
            raise PodFailed(f"the runtime for {protocol} declares port {name}:{port}")
        return running.pod.scrape_targets(), ("", running.ip, rest)

    return check


def runtime(name):
    return lambda docs: manifests.serving_runtime(docs, name)


CASES = [
    Case("standalone", "standalone.yaml", lambda d: manifests.deployment(d, "infergate"), check=through_service),
    Case("sidecar", "sidecar.yaml", lambda d: manifests.deployment(d, "infergate"), check=sidecar),
    Case("helm", "helm.yaml", lambda d: manifests.deployment(d, "infergate"), check=through_service),
    Case("helm-sidecar", "helm-sidecar.yaml", lambda d: manifests.deployment(d, "infergate"), check=sidecar),
    Case("kserve-v2", "kserve.yaml", runtime("kserve-infergate"), server="kserve-container",
         fill={manifests.KSERVE_MODELS: copy_models}, check=kserve("v2")),
    Case("kserve-grpc-v2", "kserve.yaml", runtime("kserve-infergate-grpc"), server="kserve-container",
         fill={manifests.KSERVE_MODELS: copy_models}, check=kserve("grpc-v2")),
]


def run_case(case, pod, ip):
    """Runs the pod and every check; returns the report's lines. Raises PodFailed on the first failure."""
    lines = []
    running = kubelet.RunningPod(pod, case.name, ip, IMAGES, WORK, lines.append)
    try:
        running.run_pod(case.fill)
        running.await_ready()
        server = pod.container(case.server)
        prober = next(p for p in running.probers if p.container is server)
        passes = [prober.counts[k]["first_pass"] for k in ("readiness", "startup") if k in prober.counts]
        prober.watcher.join(10)
        if prober.ready_after is None:
            raise PodFailed("the readiness probe passed for the kubelet but never for a probe asked every 0.1 s")
        lines.append(f"ready {prober.ready_after:.2f} s after the container started (its readiness route, asked every "
                     f"0.1 s); the kubelet's probes saw it at {next(p for p in passes if p is not None):.2f} s")
        targets, (netns, host, port) = case.check(running, lines)
        lines.extend(checks.scrape(ip, targets))
        for p in running.probers:
            p.await_liveness_window()
            lines.append(f"probes of {p.container['name']}: {p.summary()}")
        drain = checks.Drain(host, port, netns or None)
        took, code = running.terminate(server, during=drain.phase)
        try:
            lines.append(drain.result())
        except PodFailed as e:
            raise PodFailed(f"{e}\n(exit status {code}, {took:.1f} s after termination began)\n"
                            f"--- {case.server}'s log:\n{running.logs(server, 15)}") from None
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        if code != 0:
            raise PodFailed(f"exit status {code} after SIGTERM: {running.logs(server)}")
        lines.append(f"exited 0, {took:.1f} s after termination began (grace {grace} s)")
        return lines
    except (PodFailed, ValueError, subprocess.TimeoutExpired) as e:  # ValueError: the manifests name something absent
        raise PodFailed(f"{e}\n" + "\n".join(lines)) from None
    finally:
        running.remove()


# Planted faults: (case, what, change to the pod, the failure it must cause).
def probe_port(container, kind, port):
    def plant(pod):
        probe = pod.container(container)[f"{kind}Probe"]
        handler = next(h for h in ("httpGet", "grpc", "tcpSocket") if h in probe)
        probe[handler]["port"] = port
    return plant


def without_mount(container, volume):
    def plant(pod):
        c = pod.container(container)
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != volume]
    return plant


def without_volume(volume):
    def plant(pod):
        pod.spec["volumes"] = [v for v in pod.spec["volumes"] if v["name"] != volume]
    return plant


def config_line(config_map_prefix, key, old, new):
    def plant(pod):
        for doc in pod.docs:
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].startswith(config_map_prefix):
                doc["data"][key] = re.sub(old, new, doc["data"][key], flags=re.M)
    return plant


def monitor_port(port):
    def plant(pod):
        for doc in pod.docs:
            if doc.get("kind") == "ServiceMonitor":
                doc["spec"]["endpoints"][0]["port"] = port
    return plant


PLANTS = [
    ("standalone", "liveness probe on a closed port", probe_port("infergate", "liveness", 8009),
     r"liveness probe failed 3 times"),
    ("standalone", "no volume at the state directory", without_mount("infergate", "state"),
     r"state directory /var/lib/infergate is not writable"),
    ("standalone", "ServiceMonitor on a port the Service lacks", monitor_port("http-metrics"),
     r"has no port 'http-metrics'"),
    ("sidecar", "the metrics port on loopback too (where probes look)", config_line(
        "infergate-sidecar-config", "infergate.toml", r"^metrics_host = .*$", 'metrics_host = "127.0.0.1"'),
     r"startup probe failed 150 times"),
    ("sidecar", "no volume at the state directory", without_mount("infergate", "state"),
     r"state directory /var/lib/infergate is not writable"),
    ("sidecar", "the application without the shared-memory volume", without_mount("app", "shm"),
     r"no prediction from its sidecar"),
    ("sidecar", "the API on the pod's address", config_line(
        "infergate-sidecar-config", "infergate.toml", r"^http_host = .*$", 'http_host = "0.0.0.0"'),
     r":8000 answers from outside the pod"),
    ("helm", "startup probe on a closed port", probe_port("infergate", "startup", 8009),
     r"startup probe failed 60 times"),
    ("helm", "a mounted volume missing from the pod", without_volume("tmp"), r"volumeMount 'tmp' names no volume"),
    ("helm-sidecar", "liveness probe on the loopback-only REST port", probe_port("infergate", "liveness", 8000),
     r"liveness probe failed 3 times"),
    ("helm-sidecar", "the application without the sockets volume", without_mount("app", "sockets"),
     r"no prediction from its sidecar"),
    ("kserve-v2", "readiness probe on a closed port", probe_port("kserve-container", "readiness", 8009),
     r"readiness probe never passed"),
    ("kserve-v2", "no volume at the state directory", without_mount("kserve-container", "state"),
     r"state directory /var/lib/infergate is not writable"),
    ("kserve-grpc-v2", "gRPC readiness probe on the REST port", probe_port("kserve-container", "readiness", 8080),
     r"readiness probe never passed"),
]


def planted(rendered, index, plant, ip, results):
    name, what, change, expected = plant
    case = next(c for c in CASES if c.name == name)
    pod = case.pod(rendered)
    pod.docs = copy.deepcopy(pod.docs)
    change(pod)
    broken = Case(f"{name}-broken-{index}", case.file, case.find, case.server, case.fill, case.check)
    try:
        run_case(broken, pod, ip)
        results[index] = (False, f"{name} with {what}: every check passed, it must fail")
    except PodFailed as e:
        ok = re.search(expected, str(e)) is not None
        first = str(e).splitlines()[0][:200]
        results[index] = (ok, f"{name} with {what}: " + (f"failed: {first}" if ok else
                                                          f"failed, but not with /{expected}/: {e}"))
    except Exception:
        results[index] = (False, f"{name} with {what}: {traceback.format_exc()}")


def main():
    rendered = sys.argv[1]
    kubelet.ensure_network()
    shutil.copy(os.path.join(sys.argv[2], "cluster-serving-runtime.yaml"), os.path.join(rendered, "kserve.yaml"))
    for leftover in kubelet.podman("pod", "ps", "--format", "{{.Name}}").split():
        if leftover.startswith(tuple(c.name for c in CASES)):
            kubelet.podman("pod", "rm", "--force", "--time", "0", leftover, check=False)
    # The planted faults run side by side, in the background: some must wait out a whole startup window.
    results = {}
    background = [threading.Thread(target=planted, args=(rendered, i, plant, f"169.254.88.{100 + i}", results))
                  for i, plant in enumerate(PLANTS)]
    for thread in background:
        thread.start()
    failed = False
    for i, case in enumerate(CASES):
        print(f"== {case.name}", flush=True)
        try:
            for line in run_case(case, case.pod(rendered), f"169.254.88.{10 + i}"):
                print(f"  {line}", flush=True)
        except PodFailed as e:
            failed = True
            print(f"FAIL: {case.name}: {e}", flush=True)
        except Exception:
            failed = True
            print(f"FAIL: {case.name}: {traceback.format_exc()}", flush=True)
    print("== planted faults (each must fail for its reason)", flush=True)
    for thread in background:
        thread.join()
    for i in sorted(results):
        ok, line = results[i]
        failed |= not ok
        print(f"  {'ok' if ok else 'FAIL'}: {line}", flush=True)
    if len(results) != len(PLANTS):
        failed = True
        print("FAIL: a planted fault did not report", flush=True)
    print("pods: " + ("FAILED" if failed else "every case passed, every planted fault failed"), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
