"""Request spans exported to a real OTLP receiver (otlp_receiver.py), from infergate processes started here.

Checks: a REST and a gRPC request carrying a client traceparent arrive as children of that trace (tracestate
kept) with their span tree (decode, queue, batch, encode) and attributes; a failed request is marked as one;
8 concurrent requests batched together give one batch span linked to all 8; a sampling ratio of 0 exports
nothing for requests without a sampled parent (and still follows a sampled one); OTLP over HTTP works like
gRPC; with an unreachable collector clients get the same answers at the same speed, and the drops are counted;
no metric counts a gRPC request as REST; grpcio's health stub answers as readiness does. Prints "tracing: all checks passed" at the end."""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from otlp_receiver import Receiver  # noqa: E402

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
STATE = "infergate-test=1"
SERVER_KIND = 2  # SPAN_KIND_SERVER
STATUS_ERROR = 2  # STATUS_CODE_ERROR


class Gateway:
    """One infergate process on loopback ports the system picks, read back from its "listening" log line."""

    def __init__(self, binary, repository, flags, pod, ready="/v2/health/ready"):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERGATE_", "OTEL_"))}
        env["POD_NAME"] = pod
        command = [binary, "serve", "--model-repository", repository, "--host", "127.0.0.1", "--http-port", "0",
                   "--grpc-port", "0", "--metrics-port", "0", "--log-format", "json", "--model-control-mode",
                   "none", *flags]
        # Its standard output is not the test's: a server left behind must not hold the test's pipe open.
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        env=env)
        self.log = []
        listening = threading.Event()

        def read_log():
            for line in self.process.stderr:
                self.log.append(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("message") == "infergate listening":
                    self.http, self.grpc, self.metrics = record["http_addr"], record["grpc_addr"], record["metrics_addr"]
                    listening.set()

        threading.Thread(target=read_log, daemon=True).start()
        if not listening.wait(60):
            self.process.kill()
            raise AssertionError("infergate did not start:\n" + "".join(self.log))
        deadline = time.time() + 60
        while get(f"http://{self.http}{ready}")[0] != 200:
            if time.time() > deadline:
                self.process.kill()
                raise AssertionError(f"{ready} never answered 200:\n" + "".join(self.log))
            time.sleep(0.05)

    def infer(self, model, rows, headers=None):
        body = json.dumps({"inputs": [{"name": "X", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                                       "data": [x for row in rows for x in row]}]}).encode()
        request = urllib.request.Request(f"http://{self.http}/v2/models/{model}/infer", body, method="POST",
                                         headers={"content-type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metric(self, series):
        text = get(f"http://{self.metrics}/metrics")[1]
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return None

    def stop(self):
        """SIGTERM: the server drains, then sends the spans still queued."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("infergate did not stop within 30 s:\n" + "".join(self.log))
        assert code == 0, f"infergate exited with {code}:\n" + "".join(self.log)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def traceparent(sampled=True):
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def wait_for(receiver, condition, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        spans = receiver.spans()
        if condition(spans):
            return spans
        time.sleep(0.1)
    raise AssertionError(f"{what}: not received within {timeout} s; got {len(receiver.spans())} spans")


def request_tree(spans, trace_id, client_span):
    """The request span of a trace (child of the client's span) and its children by name."""
    in_trace = [s for s in spans if s["trace_id"] == trace_id]
    roots = [s for s in in_trace if s["name"] == "infer"]
    assert len(roots) == 1, f"one request span expected in trace {trace_id}: {in_trace}"
    root = roots[0]
    assert root["parent_span_id"] == client_span, f"not a child of the client's span: {root}"
    assert root["trace_state"] == STATE, f"tracestate lost: {root['trace_state']!r}"
    assert root["kind"] == SERVER_KIND, root
    children = {s["name"]: s for s in in_trace if s["parent_span_id"] == root["span_id"]}
    for child in children.values():
        assert root["start"] <= child["start"] and child["end"] <= root["end"], f"child outside its parent: {child}"
    return root, children


def check_request_trees(gateway, receiver, models):
    """A REST and a gRPC request with a client traceparent, and a failing one."""
    rest_trace, rest_span, rest_parent = traceparent()
    status, answer = gateway.infer("iris", [IRIS_ROW], {"traceparent": rest_parent, "tracestate": STATE})
    assert status == 200, answer
    grpc_trace, grpc_span, grpc_parent = traceparent()
    client = grpcclient.InferenceServerClient(gateway.grpc)
    x = grpcclient.InferInput("X", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32))
    result = client.infer("iris", [x], headers={"traceparent": grpc_parent, "tracestate": STATE})
    assert result.as_numpy("label") is not None
    bad_trace, bad_span, bad_parent = traceparent()
    status, answer = gateway.infer("iris", [[1.0, 2.0]], {"traceparent": bad_parent, "tracestate": STATE})
    assert status == 400, answer

    def arrived(spans):
        names = {(s["trace_id"], s["name"]) for s in spans}
        return all((t, n) in names for t in (rest_trace, grpc_trace) for n in ("infer", "encode")) and \
            (bad_trace, "infer") in names

    spans = wait_for(receiver, arrived, "the spans of the REST, gRPC and failing requests")
    for protocol, trace_id, client_span in (("rest", rest_trace, rest_span), ("grpc", grpc_trace, grpc_span)):
        root, children = request_tree(spans, trace_id, client_span)
        assert set(children) == {"decode", "queue", "batch", "encode"}, f"{protocol}: children {sorted(children)}"
        attributes = root["attributes"]
        expected = {"protocol": protocol, "model": "iris", "version": 2, "outcome": "ok", "rows": 1}
        assert {k: attributes.get(k) for k in expected} == expected, f"{protocol}: {attributes}"
        batch = children["batch"]
        assert batch["attributes"].get("size") == 1 and (trace_id, root["span_id"]) in batch["links"], batch
        assert root["resource"].get("service.name") == "infergate-test", root["resource"]
        assert root["resource"].get("k8s.pod.name") == "traced", root["resource"]
        print(f"{protocol}: request span, child of the client's, with {sorted(children)}: ok")
    root, children = request_tree(spans, bad_trace, bad_span)
    attributes = root["attributes"]
    assert attributes.get("outcome") == "error" and attributes.get("error_type") == "invalid_input", attributes
    assert root["status"] == STATUS_ERROR and "batch" not in children, (root, children)
    print("failed request: outcome error, error_type invalid_input, status ERROR: ok")


def check_batch_links(gateway, receiver):
    """8 concurrent requests computed in one run: one batch span, linked to all 8 request spans."""
    parents = [traceparent() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: gateway.infer("batched", [IRIS_ROW], {"traceparent": p[2]}), parents))
    assert all(status == 200 for status, _ in answers), answers
    traces = {trace_id for trace_id, _, _ in parents}

    def arrived(spans):
        return sum(1 for s in spans if s["trace_id"] in traces and s["name"] == "infer") == 8 and \
            any(s["trace_id"] in traces and s["name"] == "batch" for s in spans)

    spans = wait_for(receiver, arrived, "the spans of 8 batched requests")
    requests = {(s["trace_id"], s["span_id"]) for s in spans if s["trace_id"] in traces and s["name"] == "infer"}
    batches = [s for s in spans if s["name"] == "batch" and s["trace_id"] in traces]
    assert len(batches) == 1, f"one batch span expected: {batches}"
    batch = batches[0]
    assert batch["attributes"].get("size") == 8 and batch["attributes"].get("rows") == 8, batch["attributes"]
    assert set(batch["links"]) == requests, f"links {batch['links']} != requests {requests}"
    queues = [s for s in spans if s["trace_id"] in traces and s["name"] == "queue"]
    assert len(queues) == 8, queues
    print("8 batched requests: one batch span linked to all 8: ok")


def check_ratio_zero(binary, repository, receiver, collector):
    gateway = Gateway(binary, repository, [*collector, "--trace-sample-ratio", "0"], "ratio-zero")
    try:
        for i in range(20):
            headers = {"traceparent": traceparent(sampled=False)[2]} if i % 2 else {}
            assert gateway.infer("iris", [IRIS_ROW], headers)[0] == 200
        sampled_trace, _, sampled_parent = traceparent()
        assert gateway.infer("iris", [IRIS_ROW], {"traceparent": sampled_parent})[0] == 200
    finally:
        gateway.stop()
    spans = [s for s in receiver.spans() if s["resource"].get("k8s.pod.name") == "ratio-zero"]
    assert spans and all(s["trace_id"] == sampled_trace for s in spans), \
        f"ratio 0 exported requests the caller did not sample: {[(s['trace_id'], s['name']) for s in spans]}"
    print(f"ratio 0: nothing exported for 20 unsampled requests; a sampled parent still traced: ok")


def check_http_protocol(binary, repository, receiver):
    collector = ["--otlp-endpoint", f"http://127.0.0.1:{receiver.http_port}", "--otlp-protocol", "http"]
    gateway = Gateway(binary, repository, [*collector, "--trace-sample-ratio", "1"], "over-http")
    try:
        trace_id, client_span, parent = traceparent()
        assert gateway.infer("iris", [IRIS_ROW], {"traceparent": parent, "tracestate": STATE})[0] == 200
        spans = wait_for(receiver, lambda spans: any(s["trace_id"] == trace_id and s["name"] == "infer"
                                                     for s in spans), "spans over OTLP/HTTP")
        root, children = request_tree(spans, trace_id, client_span)
        assert root["transport"] == "http" and "decode" in children, root
    finally:
        gateway.stop()
    print("OTLP over HTTP with protobuf: ok")


def check_unreachable_collector(binary, repository):
    """A collector nobody listens on changes nothing for clients: the same answers at the same speed as with a
    collector that takes every span (both servers trace every request); the lost spans are counted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    live = Receiver(keep=False)
    servers = {
        "unreachable": Gateway(binary, repository, ["--otlp-endpoint", f"http://127.0.0.1:{dead}",
                                                    "--trace-sample-ratio", "1"], "unreachable"),
        "reachable": Gateway(binary, repository, ["--otlp-endpoint", f"http://127.0.0.1:{live.grpc_port}",
                                                  "--trace-sample-ratio", "1"], "reachable"),
    }
    try:
        rows = [[5.0 + (i % 20) * 0.1, 3.0, 1.5, 0.2] for i in range(8)]
        latencies = {name: [] for name in servers}
        for round_ in range(400):
            answers = {}
            # Alternating which goes first, so neither always runs on a warmer cache.
            for name in sorted(servers, reverse=bool(round_ % 2)):
                started = time.perf_counter()
                answers[name] = servers[name].infer("iris", rows)
                latencies[name].append(time.perf_counter() - started)
            # The same answer but for the request id each server generates.
            answers = {name: (status, {k: v for k, v in body.items() if k != "id"}) for name, (status, body) in
                       answers.items()}
            assert answers["unreachable"] == answers["reachable"], answers
        p50 = {k: statistics.median(v) for k, v in latencies.items()}
        p99 = {k: sorted(v)[int(len(v) * 0.99)] for k, v in latencies.items()}
        print(f"unreachable collector: p50 {p50['unreachable'] * 1e3:.2f} ms, p99 {p99['unreachable'] * 1e3:.2f} ms; "
              f"reachable: p50 {p50['reachable'] * 1e3:.2f} ms, p99 {p99['reachable'] * 1e3:.2f} ms")
        # Exports never run on the request path: if they did, a dead collector would cost its timeout (seconds).
        assert p50["unreachable"] < 1.5 * p50["reachable"] + 0.0002, (p50, p99)
        assert p99["unreachable"] < 2 * p99["reachable"] + 0.002, (p50, p99)
        deadline = time.time() + 30
        dropped = 0.0
        while time.time() < deadline:
            dropped = sum(servers["unreachable"].metric(f'infergate_trace_spans_total{{outcome="{o}"}}') or 0.0
                          for o in ("export_failed", "queue_full"))
            if dropped > 0:
                break
            time.sleep(0.2)
        assert dropped > 0, "the spans the collector never got are not counted"
        assert servers["unreachable"].metric('infergate_trace_spans_total{outcome="exported"}') == 0.0
        assert servers["reachable"].metric('infergate_trace_spans_total{outcome="exported"}') > 0
        print(f"unreachable collector: same answers, {dropped:.0f} spans counted as dropped: ok")
    finally:
        for server in servers.values():
            server.stop()
        live.stop()


def check_protocol_label(binary, repository):
    """gRPC requests are counted as gRPC, never as REST, answered or failed."""
    gateway = Gateway(binary, repository, [], "grpc-only")
    try:
        client = grpcclient.InferenceServerClient(gateway.grpc)
        x = grpcclient.InferInput("X", [1, 4], "FP32")
        x.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32))
        for _ in range(5):
            client.infer("iris", [x])
        wrong = grpcclient.InferInput("X", [1, 2], "FP32")
        wrong.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
        try:
            client.infer("iris", [wrong])
            raise AssertionError("a wrong shape was answered")
        except grpcclient.InferenceServerException:
            pass
        text = get(f"http://{gateway.metrics}/metrics")[1]
    finally:
        gateway.stop()
    counted = {"rest": 0.0, "grpc": 0.0}
    for line in text.splitlines():
        if line.startswith(("infergate_requests_total{", "infergate_request_duration_seconds_count{")):
            for protocol in counted:
                if f'protocol="{protocol}"' in line:
                    counted[protocol] += float(line.split()[-1])
    # Each request counts once in the counter and once in the histogram.
    assert counted == {"rest": 0.0, "grpc": 12.0}, f"{counted}\n{text}"
    print("metrics: 6 gRPC requests counted under protocol grpc, none under rest: ok")


def check_grpc_health(binary, repository):
    """grpc.health.v1 through grpcio's health stub, as grpc_health_probe and Kubernetes' grpc probes ask: the server
    ("") and each model answer SERVING or NOT_SERVING exactly as REST readiness says; an unknown name is NOT_FOUND."""
    broken = os.path.join(os.path.dirname(repository), "with-broken")
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(os.path.join(repository, "iris"), os.path.join(broken, "iris"))
    os.makedirs(os.path.join(broken, "broken", "1"))
    with open(os.path.join(broken, "broken", "1", "model.onnx"), "wb") as f:
        f.write(b"not an onnx model")
    gateway = Gateway(binary, broken, [], "health", ready="/v2/models/iris/ready")
    try:
        with grpc.insecure_channel(gateway.grpc) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            seen = {}
            for service, path in (("", "/v2/health/ready"), ("iris", "/v2/models/iris/ready"),
                                  ("broken", "/v2/models/broken/ready")):
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                ready = get(f"http://{gateway.http}{path}")[0] == 200
                expected = health_pb2.HealthCheckResponse.SERVING if ready else \
                    health_pb2.HealthCheckResponse.NOT_SERVING
                assert status == expected, f"{service!r}: {status} while {path} says ready={ready}"
                seen[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            assert seen["iris"] == "SERVING" and seen["broken"] == "NOT_SERVING", seen
            try:
                stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
                raise AssertionError("an unknown model's health was answered")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND, e
    finally:
        gateway.stop()
    print(f"grpc.health.v1 (grpcio's health stub) as readiness says: {seen}: ok")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--infergate", required=True)
    parser.add_argument("--models", required=True, help="the bundled models")
    parser.add_argument("--work", required=True, help="an empty folder for the test repository")
    args = parser.parse_args()
    repository = os.path.join(args.work, "models")
    shutil.copytree(os.path.join(args.models, "iris"), os.path.join(repository, "iris"))
    batched = os.path.join(repository, "batched", "1")
    os.makedirs(batched)
    shutil.copy(os.path.join(args.models, "iris", "1", "model.onnx"), batched)
    # Up to 8 rows a run, waiting up to 3 s for them: 8 concurrent requests make one batch.
    with open(os.path.join(repository, "batched", "model.toml"), "w") as f:
        f.write("max_batch_size = 8\n[batching]\nmax_queue_delay_us = 3000000\n")

    receiver = Receiver()
    try:
        collector = ["--otlp-endpoint", f"http://127.0.0.1:{receiver.grpc_port}"]
        gateway = Gateway(args.infergate, repository, [*collector, "--trace-sample-ratio", "1",
                                                       "--trace-service-name", "infergate-test"], "traced")
        try:
            check_request_trees(gateway, receiver, repository)
            check_batch_links(gateway, receiver)
            exported = gateway.metric('infergate_trace_spans_total{outcome="exported"}')
            assert exported and exported > 0, exported
            print(f"infergate_trace_spans_total{{outcome=\"exported\"}} {exported:.0f}: ok")
        finally:
            gateway.stop()
        check_ratio_zero(args.infergate, repository, receiver, collector)
        check_http_protocol(args.infergate, repository, receiver)
        check_unreachable_collector(args.infergate, repository)
        check_protocol_label(args.infergate, repository)
        check_grpc_health(args.infergate, repository)
    finally:
        receiver.stop()
    print("tracing: all checks passed")


if __name__ == "__main__":
    main()
