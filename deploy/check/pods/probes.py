"""A container's startup, readiness and liveness probes, run as the kubelet runs them: from outside the container
against the pod's address, on the manifest's initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold and
failureThreshold; readiness and liveness only once the startup probe has passed. What the kubelet would do about a
failure (restart the container, or keep the pod out of its Service) fails the check."""

import http.client
import socket
import subprocess
import threading
import time

import grpc


class PodFailed(Exception):
    pass


# With no startup probe, readiness must come within this (the deadline a rollout would wait is longer).
READY_WITHOUT_STARTUP_PROBE = 120.0


def timing(probe):
    return {
        "delay": probe.get("initialDelaySeconds", 0),
        "period": probe.get("periodSeconds", 10),
        "timeout": probe.get("timeoutSeconds", 1),
        "success": probe.get("successThreshold", 1),
        "failure": probe.get("failureThreshold", 3),
    }


class Prober(threading.Thread):
    KINDS = ("startup", "readiness", "liveness")

    def __init__(self, running, container):
        super().__init__(daemon=True)
        self.running, self.container = running, container
        self.probes = {k: container.get(f"{k}Probe") for k in self.KINDS if container.get(f"{k}Probe")}
        self.started, self.ready = threading.Event(), threading.Event()
        self.halt = threading.Event()
        self.failure = None
        self.counts = {k: {"passed": 0, "failed": 0, "first_pass": None} for k in self.probes}
        # When the server itself first answered its readiness probe's request (asked every 0.1 s, apart from the
        # kubelet's schedule, which only sees it at the next period).
        self.ready_after = None
        self.watcher = threading.Thread(target=self.watch_readiness, daemon=True)

    def start(self):
        super().start()
        self.watcher.start()

    def watch_readiness(self):
        probe = self.probes.get("readiness") or self.probes.get("startup")
        began = self.running.started_at[self.container["name"]]
        while probe and not self.halt.is_set() and time.monotonic() - began < 600:
            passed = False
            try:
                passed = self.attempt(probe)
            except PodFailed:
                return
            if passed:
                self.ready_after = time.monotonic() - began
                return
            time.sleep(0.1)

    # --- one probe ----------------------------------------------------------------------------------------------
    def attempt(self, probe):
        """True when the probe passes (HTTP 200-399, a TCP connection, exit status 0, gRPC SERVING)."""
        t = timing(probe)
        host = self.running.ip
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                host = get.get("host", host)
                port = self.running.pod.port_number(get["port"], self.container)
                conn = http.client.HTTPConnection(host, port, timeout=t["timeout"])
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                conn.request("GET", get.get("path", "/"), headers=headers)
                status = conn.getresponse().status
                conn.close()
                return 200 <= status < 400
            if "tcpSocket" in probe:
                port = self.running.pod.port_number(probe["tcpSocket"]["port"], self.container)
                socket.create_connection((probe["tcpSocket"].get("host", host), port), t["timeout"]).close()
                return True
            if "grpc" in probe:
                # grpc.health.v1.Health/Check with an empty service name; SERVING is field 1 = 1.
                # A channel of its own each time (no shared subchannel), so no earlier failure's backoff applies.
                options = [("grpc.use_local_subchannel_pool", 1)]
                with grpc.insecure_channel(f"{host}:{probe['grpc']['port']}", options=options) as channel:
                    check = channel.unary_unary("/grpc.health.v1.Health/Check")
                    return check(b"", timeout=t["timeout"]) == b"\x08\x01"
            if "exec" in probe:
                run = subprocess.run(["podman", "exec", self.running.ctr(self.container), *probe["exec"]["command"]],
                                     capture_output=True, timeout=t["timeout"] + 5)
                return run.returncode == 0
        except (OSError, http.client.HTTPException, grpc.RpcError, subprocess.TimeoutExpired):
            return False
        raise PodFailed(f"{self.container['name']}: unsupported probe {probe}")

    # --- the kubelet's loop -------------------------------------------------------------------------------------
    def fail(self, message):
        if self.failure is None:
            name = self.container["name"]
            self.failure = f"{name}: {message}\n--- last lines of {name}'s log:\n{self.running.logs(self.container)}"
        self.halt.set()

    def exited(self):
        running, state = self.running.running(self.container)
        if not running and not self.halt.is_set():
            self.fail(f"the container exited ({state}) while its probes ran")
            return True
        return False

    def run(self):
        try:
            self.loop()
        except Exception as e:  # a prober that breaks fails its check, it never passes silently
            self.fail(f"prober error: {e!r}")

    def loop(self):
        began = self.running.started_at[self.container["name"]]
        startup = self.probes.get("startup")
        if startup:
            t = timing(startup)
            failures = 0
            next_at = began + t["delay"]
            while not self.halt.wait(max(next_at - time.monotonic(), 0)):
                if self.exited():
                    return
                next_at += t["period"]
                if self.attempt(startup):
                    self.record("startup", True, began)
                    break
                self.record("startup", False, began)
                failures += 1
                if failures >= t["failure"]:
                    self.fail(f"startup probe failed {failures} times ({startup}): the kubelet restarts the container")
                    return
            else:
                return
        self.started.set()
        after = time.monotonic()
        due = {k: max(began + timing(self.probes[k])["delay"], after) for k in ("readiness", "liveness")
               if k in self.probes}
        streak = {k: 0 for k in due}
        if "readiness" not in self.probes:
            self.ready.set()
        while due and not self.halt.wait(max(min(due.values()) - time.monotonic(), 0)):
            if self.exited():
                return
            kind = min(due, key=due.get)
            t = timing(self.probes[kind])
            due[kind] += t["period"]
            passed = self.attempt(self.probes[kind])
            streak[kind] = streak[kind] + 1 if passed is False else 0
            if kind == "liveness" and streak[kind] >= t["failure"]:
                # Failed before the probe is counted: a check that waits for enough probes then sees the failure.
                self.fail(f"liveness probe failed {streak[kind]} times in a row ({self.probes[kind]}): "
                          "the kubelet restarts the container")
                self.record(kind, passed, began)
                return
            self.record(kind, passed, began)
            if kind == "readiness" and passed:
                self.ready.set()
            if kind == "readiness" and streak[kind] >= t["failure"]:
                self.ready.clear()

    def record(self, kind, passed, began):
        counts = self.counts[kind]
        counts["passed" if passed else "failed"] += 1
        if passed and counts["first_pass"] is None:
            counts["first_pass"] = time.monotonic() - began

    # --- what the checks wait for ---------------------------------------------------------------------------------
    def startup_window(self):
        startup = self.probes.get("startup")
        if not startup:
            return 0.0
        t = timing(startup)
        return t["delay"] + t["period"] * t["failure"]

    def wait_for(self, event, deadline, what):
        while not event.is_set():
            if self.failure:
                raise PodFailed(self.failure)
            if time.monotonic() > deadline:
                raise PodFailed(f"{self.container['name']}: {what}")
            time.sleep(0.05)
        if self.failure:
            raise PodFailed(self.failure)

    def await_started(self):
        began = self.running.started_at[self.container["name"]]
        self.wait_for(self.started, began + self.startup_window() + 5, "startup probe never decided")

    def await_ready(self):
        self.await_started()
        readiness = self.probes.get("readiness")
        if readiness:
            t = timing(readiness)
            window = t["delay"] + t["period"] * t["failure"] + 5
            if not self.probes.get("startup"):
                window = max(window, READY_WITHOUT_STARTUP_PROBE)
            self.wait_for(self.ready, time.monotonic() + window, f"readiness probe never passed in {window:.0f} s")

    def await_liveness_window(self):
        """Waits until liveness has been probed often enough that a failing one would have failed the check."""
        liveness = self.probes.get("liveness")
        if liveness:
            needed = timing(liveness)["failure"]
            while self.counts["liveness"]["passed"] + self.counts["liveness"]["failed"] < needed:
                if self.failure:
                    raise PodFailed(self.failure)
                time.sleep(0.2)
        if self.failure:
            raise PodFailed(self.failure)

    def summary(self):
        return {k: dict(v) for k, v in self.counts.items()}

    def stop(self):
        """The container is being terminated: its probes end (a failure after this is not theirs)."""
        self.halt.set()
