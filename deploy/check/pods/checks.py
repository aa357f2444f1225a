"""What is checked from outside a running pod: the Prometheus scrape, inference with Triton's clients, that a port
is closed to the network, and termination with requests in flight."""

import ctypes
import http.client
import json
import os
import socket
import threading
import time

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from probes import PodFailed


def golden_rows(count):
    """The first rows of the bundled iris model's golden request and its labels for them (tests/golden: an
    unversioned request is answered by the highest version, 2)."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "golden", "iris_v2.json")
    with open(path) as f:
        golden = json.load(f)
    data = golden["request"]["inputs"][0]["data"][: 4 * count]
    return np.array(data, dtype=np.float32).reshape(count, 4), golden["outputs"]["label"]["data"][:count]


ROWS, LABELS = golden_rows(2)
REQUEST = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})


def scrape(ip, targets):
    """GETs each (port, path) as Prometheus would; the exposition must parse and carry iris's request counts."""
    if not targets:
        raise PodFailed("no ServiceMonitor, PodMonitor or scrape annotation points at the pod")
    for port, path in targets:
        conn = http.client.HTTPConnection(ip, port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
        except OSError as e:
            raise PodFailed(f"scrape of {ip}:{port}{path} failed: {e}") from e
        finally:
            conn.close()
        if response.status != 200 or not response.getheader("content-type", "").startswith("text/plain"):
            raise PodFailed(f"scrape of :{port}{path}: {response.status} {response.getheader('content-type')}")
        samples = [line for line in body.splitlines() if line and not line.startswith("#")]
        for line in samples:
            name_and_labels, _, value = line.rpartition(" ")
            float(value)  # a sample ends with its value
            if not name_and_labels:
                raise PodFailed(f"scrape of :{port}{path}: not a sample: {line!r}")
        requests = [s for s in samples if s.startswith("infergate_requests_total{") and 'model="iris"' in s]
        if not requests or sum(float(s.rpartition(" ")[2]) for s in requests) <= 0:
            raise PodFailed(f"scrape of :{port}{path}: no infergate_requests_total for iris after inference")
        yield f"scraped :{port}{path}: {len(samples)} samples, iris requests counted"


CLIENTS = {
    "HTTP": (triton_http, lambda address: triton_http.InferenceServerClient(
        address, connection_timeout=10, network_timeout=10), {}),
    "gRPC": (triton_grpc, triton_grpc.InferenceServerClient, {"client_timeout": 10}),
}


def triton_infer(protocol, address):
    """Triton's client over `protocol` ("HTTP" or "gRPC"): the server and iris ready, and iris's golden labels."""
    module, connect, infer_options = CLIENTS[protocol]
    client = connect(address)
    try:
        if not (client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")):
            raise PodFailed(f"tritonclient {protocol} {address}: server or iris not ready")
        tensor = module.InferInput("X", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS)
        labels = client.infer("iris", [tensor], **infer_options).as_numpy("label").tolist()
    finally:
        client.close()
    if labels != LABELS:
        raise PodFailed(f"tritonclient {protocol} {address}: labels {labels}, want {LABELS}")
    return f"tritonclient {protocol} {address}: iris labels {labels}"


def closed(ip, port):
    """The port must refuse connections from outside the pod."""
    try:
        socket.create_connection((ip, port), timeout=2).close()
    except OSError:
        return f"{ip}:{port} refused from outside the pod"
    raise PodFailed(f"{ip}:{port} answers from outside the pod: the API must listen on the pod's loopback only")


def in_netns(netns, fn):
    """Runs fn in a thread that entered the network namespace at path `netns` (sockets it opens live there)."""
    result = {}

    def target():
        try:
            if netns:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(netns) as f:
                    if libc.setns(f.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
                        raise OSError(ctypes.get_errno(), f"setns {netns}")
            result["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            result["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class Drain:
    """Requests in flight across the termination: each sends its head and half its body before preStop, the rest
    after SIGTERM, and must be answered 200 with iris's outputs. Full requests keep coming during preStop (the
    endpoints are being removed) and must all be answered too."""

    def __init__(self, host, port, netns=None, in_flight=4):
        self.host, self.port, self.netns = host, port, netns
        body = REQUEST.encode()
        self.body = body
        head = (f"POST /v2/models/iris/infer HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode()
        self.conns = in_netns(netns, lambda: [socket.create_connection((host, port), timeout=10)
                                              for _ in range(in_flight)])
        for conn in self.conns:
            conn.sendall(head + body[: len(body) // 2])
        self.answers, self.during_pre_stop, self.errors = [], 0, []
        self.sigterm = threading.Event()
        self.finisher = None
        self.loop = threading.Thread(target=lambda: in_netns(netns, self.keep_asking), daemon=True)

    def keep_asking(self):
        while not self.sigterm.is_set():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request("POST", "/v2/models/iris/infer", body=self.body,
                             headers={"content-type": "application/json"})
                status = conn.getresponse().status
            except OSError as e:
                if not self.sigterm.is_set():
                    self.errors.append(f"during preStop: {e}")
                return
            finally:
                conn.close()
            if status != 200 and not self.sigterm.is_set():
                self.errors.append(f"during preStop: status {status}")
            self.during_pre_stop += 1
            time.sleep(0.05)

    def phase(self, name):
        if name == "preStop":
            self.loop.start()
        if name == "SIGTERM":
            self.sigterm.set()
            self.finisher = threading.Thread(target=self.finish)
            self.finisher.start()

    def finish(self):
        time.sleep(0.5)  # the server has the signal and is draining
        for conn in self.conns:
            try:
                conn.sendall(self.body[len(self.body) // 2:])
                reply = b""
                while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                status = reply.split(b" ", 2)[1] if reply else b"none"
                if status != b"200" or b'"outputs"' not in reply:
                    self.errors.append(f"in flight at SIGTERM: {reply[:200]!r}")
                else:
                    self.answers.append(200)
            except OSError as e:
                self.errors.append(f"in flight at SIGTERM: {e}")
            finally:
                conn.close()

    def result(self):
        if self.finisher:
            self.finisher.join(30)
        if self.loop.ident is not None:
            self.loop.join(30)
        if self.errors:
            raise PodFailed("requests lost in termination: " + "; ".join(self.errors[:5]))
        return (f"{len(self.answers)} requests in flight at SIGTERM all answered 200; "
                f"{self.during_pre_stop} answered during preStop")

