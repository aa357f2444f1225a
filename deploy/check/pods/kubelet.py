"""A pod started with podman the way the kubelet starts it: its own network namespace and address, the volumes of
its spec (ConfigMaps written out, emptyDirs as fresh folders), each container's command, args, env, user, groups,
read-only root and capabilities; init containers in order, native sidecars started and awaited through their
startup probes; then probes run from outside the pod, and termination by preStop, SIGTERM and the grace period."""

import json
import os
import shutil
import subprocess
import time

from probes import PodFailed, Prober

NETWORK = "infergate-check"
SUBNET = "169.254.88.0/24"


def podman(*args, check=True, timeout=120):
    run = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise PodFailed(f"podman {' '.join(args[:3])}: {run.stderr.strip()}")
    return run.stdout.strip()


def ensure_network():
    if subprocess.run(["podman", "network", "exists", NETWORK]).returncode != 0:
        podman("network", "create", "--subnet", SUBNET, NETWORK)


class RunningPod:
    def __init__(self, pod, case, ip, images, work, log):
        self.pod, self.case, self.ip, self.images, self.log = pod, case, ip, images, log
        self.work = os.path.join(work, case)
        self.volumes = {}
        self.started_at = {}
        self.probers = []

    # --- volumes ------------------------------------------------------------------------------------------------
    def make_volumes(self, fill):
        """Each volume of the spec as a host folder: ConfigMaps written out, emptyDirs empty and writable by all
        (as the kubelet makes them). `fill` may fill a named volume (as KServe's storage initializer does)."""
        shutil.rmtree(self.work, ignore_errors=True)
        for volume in self.pod.spec.get("volumes") or []:
            path = os.path.join(self.work, "volumes", volume["name"])
            os.makedirs(path)
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                config_map = self.pod.config_map(name)
                if config_map is None:
                    raise PodFailed(f"volume {volume['name']}: ConfigMap {name} is not in the manifests")
                items = volume["configMap"].get("items")
                keys = {i["key"]: i["path"] for i in items} if items else {k: k for k in config_map.get("data", {})}
                for key, file in keys.items():
                    with open(os.path.join(path, file), "w") as f:
                        f.write(config_map["data"][key])
                os.chmod(path, 0o755)
            elif "emptyDir" in volume:
                os.chmod(path, 0o777)
            else:
                raise PodFailed(f"volume {volume['name']}: only configMap and emptyDir volumes are run here")
            if volume["name"] in fill:
                fill[volume["name"]](path)
            self.volumes[volume["name"]] = path

    def mounts(self, container):
        args = []
        for m in container.get("volumeMounts") or []:
            if m["name"] not in self.volumes:
                raise PodFailed(f"container {container['name']}: volumeMount {m['name']!r} names no volume of the pod")
            source = self.volumes[m["name"]]
            if m.get("subPath"):
                source = os.path.join(source, m["subPath"])
                if not os.path.exists(source):
                    raise PodFailed(f"container {container['name']}: subPath {m['subPath']} is not in {m['name']}")
            mode = "ro" if m.get("readOnly") else "rw"
            args += ["-v", f"{source}:{m['mountPath']}:{mode}"]
        return args

    # --- containers ---------------------------------------------------------------------------------------------
    def ctr(self, container):
        return f"{self.case}-{container['name']}"

    def security(self, container):
        pod_sc = self.pod.spec.get("securityContext") or {}
        sc = {**pod_sc, **(container.get("securityContext") or {})}
        args = []
        user = sc.get("runAsUser")
        if user is not None:
            args += ["--user", f"{user}:{sc.get('runAsGroup', user)}"]
        elif sc.get("runAsNonRoot"):
            raise PodFailed(f"container {container['name']}: runAsNonRoot without runAsUser (the image's user decides)")
        if "fsGroup" in pod_sc:
            args += ["--group-add", str(pod_sc["fsGroup"])]
        if sc.get("readOnlyRootFilesystem"):
            # No tmpfs over /tmp, /run and /var/tmp: only the spec's volumes are writable, as in a pod.
            args += ["--read-only", "--read-only-tmpfs=false"]
        for cap in (sc.get("capabilities") or {}).get("drop") or []:
            args += ["--cap-drop", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        return args

    def env(self, container):
        args = []
        for e in container.get("env") or []:
            if "value" in e:
                args += ["-e", f"{e['name']}={e['value']}"]
            elif "secretKeyRef" in (e.get("valueFrom") or {}):
                if not e["valueFrom"]["secretKeyRef"].get("optional"):
                    raise PodFailed(f"env {e['name']}: the Secret it needs is not created here")
            elif (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") in self.downward_api():
                field = e["valueFrom"]["fieldRef"]["fieldPath"]
                args += ["-e", f"{e['name']}={self.downward_api()[field]}"]
            else:
                raise PodFailed(f"env {e['name']}: unsupported source {e.get('valueFrom')}")
        return args

    def downward_api(self):
        """The pod fields an env var may take (fieldRef), as the kubelet fills them."""
        return {"status.podIP": self.ip, "metadata.name": f"{self.pod.name}-{self.case}",
                "metadata.namespace": "infergate"}

    def image(self, container):
        image = container["image"]
        for prefix, local in self.images.items():
            if image.split(":")[0] == prefix:
                return local
        raise PodFailed(f"container {container['name']}: no local image stands for {image}")

    def start(self, container):
        # The kubelet ignores an image HEALTHCHECK: only the manifest's probes run.
        args = ["run", "-d", "--no-healthcheck", "--pod", self.case, "--name", self.ctr(container)]
        args += self.security(container) + self.env(container) + self.mounts(container)
        if container.get("command"):
            args += ["--entrypoint", json.dumps(container["command"])]
        args += [self.image(container)] + [str(a) for a in container.get("args") or []]
        podman(*args)
        self.started_at[container["name"]] = time.monotonic()
        self.log(f"started {container['name']} ({' '.join(str(a) for a in container.get('args') or [])})")

    def running(self, container):
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.ctr(container))
        return state.split()[0] == "running", state

    def logs(self, container, lines=30):
        run = subprocess.run(["podman", "logs", "--tail", str(lines), self.ctr(container)], capture_output=True,
                             text=True)
        return (run.stdout + run.stderr).strip()

    def run_pod(self, fill=None):
        """Creates the pod, runs init containers, starts native sidecars (awaiting their startup probes), then the
        containers, each with its probes running from outside the pod."""
        self.make_volumes(fill or {})
        podman("pod", "create", "--name", self.case, "--network", NETWORK, "--ip", self.ip)
        for container in self.pod.spec.get("initContainers") or []:
            if container.get("restartPolicy") == "Always":
                self.start(container)
                prober = Prober(self, container)
                self.probers.append(prober)
                prober.start()
                prober.await_started()
            else:
                self.start(container)
                code = podman("wait", self.ctr(container), timeout=300)
                if code != "0":
                    raise PodFailed(f"init container {container['name']} exited {code}: {self.logs(container)}")
                self.log(f"init container {container['name']} completed")
        for container in self.pod.spec["containers"]:
            self.start(container)
            prober = Prober(self, container)
            self.probers.append(prober)
            prober.start()

    def await_ready(self):
        for prober in self.probers:
            prober.await_ready()

    def netns(self):
        infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", self.case)
        return podman("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", infra)

    def terminate(self, container, during=None):
        """The kubelet's termination of one container: preStop, then SIGTERM, then SIGKILL when the pod's grace
        period runs out. `during(phase)` is called as each phase starts. Returns (seconds to exit, exit code)."""
        grace = self.pod.spec.get("terminationGracePeriodSeconds", 30)
        started = time.monotonic()
        for prober in self.probers:
            prober.stop()
        pre_stop = (container.get("lifecycle") or {}).get("preStop")
        if pre_stop:
            if during:
                during("preStop")
            command = pre_stop["exec"]["command"]
            run = subprocess.run(["podman", "exec", self.ctr(container), *command], capture_output=True, text=True,
                                 timeout=grace)
            if run.returncode != 0:
                raise PodFailed(f"preStop {command} failed: {run.stderr.strip()}")
            self.log(f"preStop {command} done after {time.monotonic() - started:.1f} s")
        # The checks learn of SIGTERM before it is sent: a refusal after this point is the drain's, not an error.
        if during:
            during("SIGTERM")
        podman("kill", "--signal", "TERM", self.ctr(container))
        left = max(grace - (time.monotonic() - started), 0.1)
        try:
            code = podman("wait", self.ctr(container), timeout=left)
        except subprocess.TimeoutExpired:
            podman("kill", "--signal", "KILL", self.ctr(container))
            raise PodFailed(f"{container['name']} still running {grace} s after termination began: killed")
        return time.monotonic() - started, int(code)

    def remove(self):
        for prober in self.probers:
            prober.stop()
        podman("pod", "rm", "--force", "--time", "0", self.case, check=False)

