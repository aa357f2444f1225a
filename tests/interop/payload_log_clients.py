"""Payload logging end to end, against infergate processes started here; one check per run (--check):

http: ids over REST and gRPC (tritonclient): the body's, else the x-request-id header or metadata, else a new UUIDv7,
  answered in the body and the header or metadata; ids a log cannot carry refused. Each request to a model logged
  at 100% reaches a CloudEvents SDK consumer (cloudevents_sink.py) as a request and a response event with that id,
  KServe's inference-logger types and extensions, and the tensors; 50% logs about half; the counter matches.
file: JSON-lines files rotated by size and closed at SIGTERM, read back with pandas: one row per request with every
  field and the tensors; mode "request" logs no outputs; exclude_inputs leaves the input out.
stalled: a consumer that never answers slows no request (against an unlogged model in the same server); what the
  bounded queue cannot hold is counted as dropped (queue_full).
crash: after SIGKILL mid-write closed files are whole; the next start cuts the open one after its last whole line.
Prints "payload log <check>: all checks passed" at the end."""

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone

import grpc
import numpy as np
import pandas as pd
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from cloudevents_sink import Sink, StalledSink
from tracing_clients import Gateway, get
from triton_clients import expect_error

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
SOURCE = "infergate-payload-test"
NAMESPACE = "payload-test"
RECORDS = "infergate_payload_log_records_total"
DROPPED = "infergate_payload_log_dropped_total"
DROP_REASONS = ("queue_full", "too_large", "no_sink", "send_failed", "rejected", "write_failed", "stopped")
FIELDS = {"id", "time", "model", "version", "variant", "latency_ms", "inputs", "outputs"}
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
CLOSED, OPEN = ".jsonl", ".jsonl.open"
FILE_NAME = re.compile(r"^payloads-\d{8}T\d{9}Z(-\d+)+\.jsonl$")  # the stamp, then a sequence number
NUMPY_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
PLAIN_TOML = 'backend = "auto"\nversion_policy = "all"\nmax_batch_size = 1024\n'


class Client:
    """One keep-alive REST connection: latencies measure the server, not connection setup."""

    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def infer(self, model, rows, body_id=None, headers=None, version=None):
        """Returns the status, the JSON answer and the x-request-id response header."""
        body = {"inputs": [iris_input(rows)]}
        if body_id is not None:
            body["id"] = body_id
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        self.connection.request("POST", path, json.dumps(body).encode(), {"content-type": "application/json",
                                                                          **(headers or {})})
        response = self.connection.getresponse()
        payload = response.read()
        answer = json.loads(payload) if payload.startswith(b"{") else payload.decode(errors="replace")
        return response.status, answer, response.getheader("x-request-id")


def iris_input(rows):
    return {"name": "X", "datatype": "FP32", "shape": [len(rows), 4], "data": [x for row in rows for x in row]}


def rows_for(i, count=1):
    """`count` iris rows that differ from request to request, so no record matches another request's tensors."""
    return [[round(4.3 + (i * 7 + r) % 36 * 0.1, 1), round(2.0 + (i + r) % 24 * 0.1, 1),
             round(1.0 + i % 59 * 0.1, 1), round(0.1 + r * 0.3, 1)] for r in range(count)]


def repository(models, work, name, tables, log_folder=None):
    """Iris copies (both versions; unversioned requests go to 2), each with its [logging] table, or none; and the
    folder the file sink writes to, made here as a deployment's volume would be."""
    if log_folder:
        os.makedirs(log_folder)
    root = os.path.join(work, name)
    for model, logging in tables.items():
        shutil.copytree(os.path.join(models, "iris"), os.path.join(root, model))
        with open(os.path.join(root, model, "model.toml"), "w") as f:
            f.write(PLAIN_TOML + (f"[logging]\n{logging}" if logging else ""))
    return root


def series(gateway, name, **labels):
    """The value of `name` with exactly these labels (in any order); 0 for a series not yet counted."""
    for line in get(f"http://{gateway.metrics}/metrics")[1].splitlines():
        if line.startswith((name + "{", name + " ")):
            head, value = line.rsplit(" ", 1)
            if dict(re.findall(r'(\w+)="([^"]*)"', head[len(name):])) == labels:
                return float(value)
    return 0.0


def wait_for(condition, what, timeout=30):
    """Polls `condition` until it returns something true; `what()` says what was missing at the deadline."""
    deadline = time.time() + timeout
    while not (result := condition()):
        if time.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what()}")
        time.sleep(0.05)
    return result


def assert_uuid7(value):
    assert isinstance(value, str) and UUID7.match(value), f"not a lowercase hyphenated UUIDv7: {value!r}"
    millis = int(value[:8] + value[9:13], 16)
    assert abs(millis / 1000 - time.time()) < 600, f"{value}: its timestamp is not now"


def same_tensors(logged, expected, what):
    """Same names, datatypes and shapes, and data equal once both are read as the datatype."""
    assert isinstance(logged, list) and len(logged) == len(expected), f"{what}: logged {logged}, expected {expected}"
    by_name = {tensor["name"]: tensor for tensor in logged}
    for want in expected:
        got = by_name.get(want["name"])
        assert got is not None, f"{what}: no tensor {want['name']} in {logged}"
        assert got["datatype"] == want["datatype"] and list(got["shape"]) == list(want["shape"]), f"{what}: {got}"
        dtype = NUMPY_TYPES[want["datatype"]]
        assert np.array_equal(np.asarray(got["data"], dtype=dtype).ravel(),
                              np.asarray(want["data"], dtype=dtype).ravel()), f"{what}: {got} != {want}"


def rest_requests(gateway):
    """Ids from the body, the header (the body wins over it), neither (generated), and at the 256-byte limit."""
    client, expected = Client(gateway.http), []
    for i in range(40):
        kind, rows, version = i % 4, rows_for(i, 1 + i % 3), "1" if i >= 36 else None
        body_id = {0: f"rest-body-{i}", 2: f"rest-both-{i}"}.get(kind, "z" * 256 if i == 35 else None)
        headers = {"x-request-id": f"rest-header-{i}"} if kind in (1, 2) else {}
        status, answer, header = client.infer("iris", rows, body_id, headers, version)
        assert status == 200, answer
        assert answer.get("id") == header, f"body id {answer.get('id')!r}, x-request-id {header!r}"
        if body_id or headers:
            assert answer["id"] == (body_id or headers["x-request-id"]), (i, answer["id"])
        else:
            assert_uuid7(answer["id"])
        assert answer["model_version"] == (version or "2"), answer
        expected.append({"id": answer["id"], "version": version or "2", "inputs": [iris_input(rows)],
                         "outputs": answer["outputs"]})
    print(f"REST: {len(expected)} ids from the body, the header or generated (UUIDv7), answered in both: ok")
    return expected


def grpc_outputs(result):
    return [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape),
             "data": result.as_numpy(o.name).ravel().tolist()} for o in result.get_response().outputs]


def grpc_requests(gateway):
    """tritonclient's request_id, or none; metadata x-request-id through tritonclient's own stub, which shows the
    initial metadata the answer carries."""
    client, expected = grpcclient.InferenceServerClient(gateway.grpc), []
    for i in range(6):
        rows = rows_for(100 + i, 1 + i % 3)
        x = grpcclient.InferInput("X", [len(rows), 4], "FP32")
        x.set_data_from_numpy(np.array(rows, dtype=np.float32))
        result = client.infer("iris", [x], request_id=f"grpc-{i}" if i % 2 else "")
        request_id = result.get_response().id
        if i % 2:
            assert request_id == f"grpc-{i}", request_id
        else:
            assert_uuid7(request_id)
        outputs = grpc_outputs(result)
        expected.append({"id": request_id, "version": "2", "inputs": [iris_input(rows)], "outputs": outputs})
    with grpc.insecure_channel(gateway.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for i, (body_id, metadata) in enumerate((("", "grpc-metadata"), ("grpc-body", "grpc-ignored"), ("", None))):
            rows = rows_for(200 + i)
            request = service_pb2.ModelInferRequest(model_name="iris", id=body_id)
            tensor = request.inputs.add(name="X", datatype="FP32", shape=[1, 4])
            tensor.contents.fp32_contents.extend(rows[0])
            response, call = stub.ModelInfer.with_call(
                request, metadata=[("x-request-id", metadata)] if metadata else None, timeout=30)
            initial = dict(call.initial_metadata())
            assert response.id == initial.get("x-request-id"), f"id {response.id!r}, metadata {initial}"
            if metadata:
                assert response.id == (body_id or metadata), response.id
            else:
                assert_uuid7(response.id)
            outputs = grpc_outputs(grpcclient.InferResult(response))
            expected.append({"id": response.id, "version": "2", "inputs": [iris_input(rows)], "outputs": outputs})
    print(f"gRPC: {len(expected)} ids from request_id, metadata or generated, in the answer and its metadata: ok")
    return expected


def check_refused_ids(gateway):
    """Ids longer than 256 bytes or with control characters are refused (and so never logged)."""
    client = Client(gateway.http)
    for body_id, headers in (("a" * 257, None), ("line\nbreak", None), ("\u0001start", None),
                             (None, {"x-request-id": "h" * 257})):
        status, answer, _ = client.infer("iris", [IRIS_ROW], body_id, headers)
        assert status == 400, f"id {body_id!r} / headers {headers} answered {status}: {answer}"
    x = grpcclient.InferInput("X", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32))
    client = grpcclient.InferenceServerClient(gateway.grpc)
    expect_error("a 257-byte gRPC id", lambda: client.infer("iris", [x], request_id="g" * 257), "INVALID_ARGUMENT")
    print("ids over 256 bytes or with control characters: 400 / INVALID_ARGUMENT: ok")


def check_error_ids(gateway):
    """A refused request's answer carries an id too: the body's, else the caller's, else a new one (also in place
    of an invalid one)."""
    client = Client(gateway.http)
    # A body that cannot be decoded (3 values for a [1, 4] tensor) has no id the server could read.
    wrong_length = [[1.0, 2.0, 3.0]]
    for model, version, rows, body_id, headers, expected in (
            ("iris", "9", [IRIS_ROW], "error-body", {"x-request-id": "error-header"}, "error-body"),
            ("iris", None, wrong_length, "unread-body", {"x-request-id": "error-header"}, "error-header"),
            ("no-such-model", None, [IRIS_ROW], None, {"x-request-id": "error-unknown"}, "error-unknown"),
            ("no-such-model", None, [IRIS_ROW], None, None, None),
            ("iris", None, [IRIS_ROW], "bad\nid", {"x-request-id": "error-fallback"}, "error-fallback"),
            ("iris", None, [IRIS_ROW], "bad\nid", None, None)):
        status, answer, header = client.infer(model, rows, body_id, headers, version)
        assert status in (400, 404), (model, status, answer)
        if expected:
            assert header == expected, (model, body_id, headers, header)
        else:
            assert_uuid7(header)
    with grpc.insecure_channel(gateway.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for body_id, metadata, expected in (("grpc-error-body", "grpc-error-meta", "grpc-error-body"),
                                            ("", "grpc-error-meta", "grpc-error-meta"), ("", None, None)):
            request = service_pb2.ModelInferRequest(model_name="iris", id=body_id)
            tensor = request.inputs.add(name="X", datatype="FP32", shape=[1, 3])
            tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
            try:
                stub.ModelInfer(request, metadata=[("x-request-id", metadata)] if metadata else None, timeout=30)
                raise AssertionError("a wrong shape was answered")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
                sent = dict(e.initial_metadata() or ()) | dict(e.trailing_metadata() or ())
                if expected:
                    assert sent.get("x-request-id") == expected, sent
                else:
                    assert_uuid7(sent.get("x-request-id"))
    print("refused requests: their answers carry the body's id, the caller's, or a new one: ok")


def check_events(events, expected, started):
    """Exactly one request and one response event per request, with its id, extensions and tensors."""
    by_key = {}
    for event in events:
        key = (event["id"], event["type"])
        assert key not in by_key, f"event {key} received twice"
        by_key[key] = event
    for want in expected:
        request, response = by_key.pop((want["id"], REQUEST_TYPE), None), by_key.pop((want["id"], RESPONSE_TYPE), None)
        assert request and response, f"{want['id']}: request event {bool(request)}, response event {bool(response)}"
        for event in (request, response):
            assert event["specversion"] == "1.0" and event["headers"].get("ce-specversion") == "1.0", event
            assert event["source"] == SOURCE and event["datacontenttype"].startswith("application/json"), event
            assert started - timedelta(minutes=1) <= event["time"] <= datetime.now(timezone.utc), event["time"]
            extensions = event["extensions"]
            assert extensions.get("inferenceservicename") == "iris", extensions
            assert extensions.get("modelversion") == want["version"], (want["id"], extensions)
            assert extensions.get("component") == "predictor" and extensions.get("namespace") == NAMESPACE, extensions
            # No traffic policy: no variant answered.
            assert "endpoint" not in extensions, extensions
        assert request["data"]["id"] == want["id"], request["data"]
        same_tensors(request["data"]["inputs"], want["inputs"], f"{want['id']} request event")
        data = response["data"]
        assert (data["model_name"], data["model_version"], data["id"]) == ("iris", want["version"], want["id"]), data
        same_tensors(data["outputs"], want["outputs"], f"{want['id']} response event")
    assert not by_key, f"events for requests never answered: {sorted(by_key)[:5]}"


def check_http_sink(binary, models, work):
    root = repository(models, work, "http-models", {"iris": 'percent = 100\nmode = "both"\nsink = "http"\n',
                                                     "sampled": 'percent = 50\nsink = "http"\n'})
    sink = Sink()
    os.environ["POD_NAMESPACE"] = NAMESPACE
    gateway = Gateway(binary, root, ["--payload-log-url", f"http://127.0.0.1:{sink.port}/",
                                     "--payload-log-source", SOURCE], "http-sink")
    started = datetime.now(timezone.utc)
    try:
        # The sampled model's requests first: once the last iris events have arrived, all of these have too.
        client, sampled = Client(gateway.http), set()
        for i in range(400):
            status, answer, _ = client.infer("sampled", rows_for(i), f"sampled-{i}" if i % 2 else None)
            assert status == 200, answer
            sampled.add(answer["id"])
        expected = rest_requests(gateway) + grpc_requests(gateway)
        assert len({want["id"] for want in expected}) == len(expected), "an id was given to two requests"
        check_refused_ids(gateway)
        check_error_ids(gateway)

        def delivered():
            assert not sink.errors, f"POSTs the CloudEvents SDK refused: {sink.errors[:3]}"
            events = sink.events()
            iris = [e for e in events if e["extensions"].get("inferenceservicename") == "iris"]
            return len(iris) >= 2 * len(expected) and series(gateway, RECORDS, sink="http") == len(events) and events

        events = wait_for(delivered, lambda: f"{len(sink.events())} events, {series(gateway, RECORDS, sink='http')} "
                                             f"counted delivered, {2 * len(expected)} iris events expected")
        check_events([e for e in events if e["extensions"].get("inferenceservicename") == "iris"], expected, started)
        print(f"{2 * len(expected)} events (request and response per request) with ids, types, extensions and "
              "tensors, received through the CloudEvents SDK: ok")
        logged = [e for e in events if e["extensions"].get("inferenceservicename") == "sampled"]
        requests = {e["id"] for e in logged if e["type"] == REQUEST_TYPE}
        responses = {e["id"] for e in logged if e["type"] == RESPONSE_TYPE}
        assert len(requests) + len(responses) == len(logged) and requests == responses, "unpaired sampled events"
        assert requests <= sampled, f"ids never answered: {sorted(requests - sampled)[:5]}"
        assert 0.25 * len(sampled) <= len(requests) <= 0.75 * len(sampled), f"{len(requests)} of 400 logged at 50%"
        print(f"percent = 50: {len(requests)} of 400 requests logged, both events each: ok")
        dropped = {reason: series(gateway, DROPPED, sink="http", reason=reason) for reason in DROP_REASONS}
        assert not any(dropped.values()), f"events dropped though the consumer takes everything: {dropped}"
        print(f'{RECORDS}{{sink="http"}} {len(events)}, the events received: ok')
    finally:
        gateway.stop()
        sink.stop()


def whole_records(path):
    """The records of a closed file, which must be whole: every line a complete JSON object, the last one ended."""
    with open(path, "rb") as f:
        content = f.read()
    assert not content or content.endswith(b"\n"), f"{path}: the last line is cut: {content[-80:]!r}"
    try:
        records = [json.loads(line) for line in content.splitlines()]
    except ValueError as e:
        raise AssertionError(f"{path}: a line is not JSON ({e})")
    assert all(isinstance(record, dict) for record in records), f"{path}: a line is not a JSON object"
    if records:
        assert len(pd.read_json(path, lines=True)) == len(records), path
    return records


def check_file_sink(binary, models, work):
    folder = os.path.join(work, "payloads")
    root = repository(models, work, "file-models", {
        "iris": 'percent = 100\nmode = "both"\nsink = "file"\nexclude_inputs = []\n',
        "requests_only": 'mode = "request"\nsink = "file"\n',
        "redacted": 'sink = "file"\nexclude_inputs = ["X"]\n'}, folder)
    gateway = Gateway(binary, root, ["--payload-log-dir", folder, "--payload-log-max-file-bytes", "4096"],
                      "file-sink")
    started, sent = pd.Timestamp.now(tz="UTC"), {}
    try:
        client = Client(gateway.http)
        for i in range(330):
            model = "iris" if i < 300 else ("requests_only", "redacted")[i % 2]
            rows = rows_for(i, 1 + i % 3)
            status, answer, _ = client.infer(model, rows, f"file-{i}" if i % 2 else None)
            assert status == 200, answer
            sent[answer["id"]] = (model, rows, answer["outputs"])
    finally:
        gateway.stop()
    ended = pd.Timestamp.now(tz="UTC")
    names = sorted(os.listdir(folder))
    assert not [n for n in names if n.endswith(".open")], f"a file left open after SIGTERM: {names}"
    assert len(names) > 1 and all(FILE_NAME.match(n) for n in names), f"no rotation, or unexpected names: {names}"
    frames = []
    for name in names:
        path = os.path.join(folder, name)
        records = whole_records(path)
        for record in records:
            assert FIELDS <= set(record), f"{name}: fields missing: {FIELDS - set(record)}"
            assert isinstance(record["version"], str) and TIME.match(record["time"]), record
        frames.append(pd.read_json(path, lines=True))
    frame = pd.concat(frames, ignore_index=True)
    assert FIELDS | {"omitted_inputs"} <= set(frame.columns), frame.columns
    assert len(frame) == len(sent) and frame.id.is_unique and set(frame.id) == set(sent), \
        f"{len(frame)} rows for {len(sent)} requests; missing {sorted(set(sent) - set(frame.id))[:5]}"
    times = pd.to_datetime(frame.time, utc=True)
    assert times.min() >= started - pd.Timedelta(minutes=1) and times.max() <= ended, (times.min(), times.max())
    assert frame.variant.isna().all() and (frame.latency_ms >= 0).all(), frame[["variant", "latency_ms"]]
    for row in frame.itertuples():
        model, rows, outputs = sent[row.id]
        assert (row.model, str(row.version)) == (model, "2"), row
        if model == "redacted":
            assert row.omitted_inputs == ["X"] and row.inputs == [], row
        else:
            assert not isinstance(row.omitted_inputs, list), row
            same_tensors(row.inputs, [iris_input(rows)], f"{row.id} inputs")
        if model == "requests_only":
            assert not isinstance(row.outputs, list), f"mode request logged outputs: {row}"
        else:
            same_tensors(row.outputs, outputs, f"{row.id} outputs")
    print(f"{len(names)} files rotated by size and closed at SIGTERM; pandas reads {len(frame)} rows, one per request, "
          "with every field, the tensors sent and answered, mode request and exclude_inputs kept: ok")


def check_stalled_sink(binary, models, work):
    """Requests alternate between a model logged to a consumer that never answers and one not logged."""
    queue, in_flight = 64, 16  # in_flight: the most deliveries the sink is taken to have off its queue at once
    root = repository(models, work, "stalled-models", {"logged": 'mode = "request"\nsink = "http"\n', "plain": None})
    stalled = StalledSink()
    gateway = Gateway(binary, root, ["--payload-log-url", f"http://127.0.0.1:{stalled.port}/",
                                     "--payload-log-queue", str(queue)], "stalled-sink")
    try:
        client, latencies, sent, slow = Client(gateway.http), {"logged": [], "plain": []}, 0, 0
        for i in range(2040):
            model = ("logged", "plain")[i % 2]
            start = time.perf_counter()
            status, answer, _ = client.infer(model, [IRIS_ROW])
            took = time.perf_counter() - start
            assert status == 200 and {o["name"]: o["data"] for o in answer["outputs"]}["label"] == [0], answer
            sent += model == "logged"
            if i >= 40:  # the first 20 of each warm up
                latencies[model].append(took)
            # A request waiting on the consumer takes 2 s or more, and may be the next one on the connection, of
            # either model: more than 1% of them over 1 s fails at once (not after 2,000 such requests).
            slow += took > 1.0
            assert slow <= 20, f"{slow} requests over 1 s: requests wait on the stalled consumer"
        quantiles = {m: (statistics.median(v), np.quantile(v, 0.9)) for m, v in latencies.items()}
        text = {m: " / ".join(f"{q * 1000:.3f}" for q in qs) for m, qs in quantiles.items()}
        print(f"median / p90 ms: logged {text['logged']}, plain {text['plain']}; {slow} over 1 s")
        (logged_median, logged_p90), (median, p90) = quantiles["logged"], quantiles["plain"]
        # Logging costs a copy and a queue push: within noise of none. Room is left for a loaded 2-core machine.
        assert logged_median <= 1.5 * median + 0.0003, "logging to a stalled consumer slowed the median request"
        assert logged_p90 <= 2 * p90 + 0.002, "logging to a stalled consumer slowed the slowest tenth"
        assert stalled.connections > 0, "the server never tried to deliver"
        failed = series(gateway, DROPPED, sink="http", reason="send_failed")
        dropped = wait_for(lambda: series(gateway, DROPPED, sink="http", reason="queue_full"),
                           lambda: "no queue_full drop counted")
        assert sent - queue - in_flight - failed <= dropped <= sent, f"{dropped} queue_full drops of {sent} sent"
        assert series(gateway, RECORDS, sink="http") == 0, "a stalled consumer counted as delivered"
        print(f"stalled consumer: {dropped:.0f} of {sent} records dropped as queue_full, {failed:.0f} send_failed: ok")
    finally:
        # How long shutdown keeps trying a consumer that never answers is not what this checks.
        gateway.process.kill()
        gateway.process.wait(30)
        stalled.stop()


def files(folder, suffix):
    return sorted(n for n in os.listdir(folder) if n.endswith(suffix))


def kill_while_writing(gateway, folder, sent):
    """Requests from a thread, fast until several files are closed, then 10 a second, so that one file stays open
    across the sink's writes (lines are gathered and written together); SIGKILL while requests flow, once the open
    file holds lines. Returns the file left open, if the kill did not fall between two files."""
    stop, slow, closed_before = threading.Event(), threading.Event(), len(files(folder, CLOSED))

    def open_with_lines():
        try:  # a file may be closed and renamed while this looks
            return [n for n in files(folder, OPEN) if os.path.getsize(os.path.join(folder, n)) > 0]
        except OSError:
            return []

    def traffic():
        client = Client(gateway.http)
        while not stop.is_set() and len(sent) < 20000:
            request_id = f"crash-{len(sent)}"
            sent.add(request_id)
            try:
                client.infer("iris", rows_for(len(sent), 1 + len(sent) % 3), request_id)
            except (OSError, http.client.HTTPException):
                return
            if slow.is_set():
                time.sleep(0.1)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_for(lambda: len(sent) >= 300 and len(files(folder, CLOSED)) >= closed_before + 3,
                 lambda: f"{len(sent)} requests, {files(folder, CLOSED)} closed")
        slow.set()
        wait_for(open_with_lines, lambda: f"no open file with lines: {files(folder, OPEN)}")
    finally:
        gateway.process.kill()  # while the requests still flow
        gateway.process.wait(30)
        stop.set()
        thread.join(60)
    left = files(folder, OPEN)
    assert len(left) <= 1, f"more than one file open at once: {left}"
    return os.path.join(folder, left[0]) if left else None


def check_crash(binary, models, work):
    folder = os.path.join(work, "crash-payloads")
    root = repository(models, work, "crash-models", {"iris": 'percent = 100\nsink = "file"\n'}, folder)
    flags = ["--payload-log-dir", folder, "--payload-log-max-file-bytes", "2048"]
    sent, left = set(), None
    for _ in range(3):
        left = kill_while_writing(Gateway(binary, root, flags, "crash"), folder, sent)
        if left:
            break
        print("the kill fell between two files; again")
    assert left, "three kills in a row left no file open"
    names = files(folder, CLOSED)
    ids = [r["id"] for name in names for r in whole_records(os.path.join(folder, name))]
    print(f"SIGKILL after {len(sent)} requests: {len(names)} closed files, all whole ({len(ids)} records): ok")
    # A line torn in the middle, as a kill during a write leaves; whatever the kill left is kept before it.
    with open(left, "a+b") as f:
        f.write(b'{"id": "torn-by-the-test", "inputs": [{"name": "X", "da')
        f.seek(0)
        content = f.read()
    kept = content[:content.rfind(b"\n") + 1]
    gateway = Gateway(binary, root, flags, "crash-restart")
    try:
        client = Client(gateway.http)
        for i in range(5):
            sent.add(f"after-{i}")
            assert client.infer("iris", rows_for(i), f"after-{i}")[0] == 200
    finally:
        gateway.stop()
    closed = left.removesuffix(OPEN) + CLOSED
    assert not os.path.exists(left) and not files(folder, OPEN), f"open after a restart: {files(folder, OPEN)}"
    if kept:
        with open(closed, "rb") as f:
            assert f.read() == kept, f"{closed} is not the left file cut after its last complete line"
    else:
        assert not os.path.exists(closed) or os.path.getsize(closed) == 0, closed
    records = [r for name in files(folder, CLOSED) for r in whole_records(os.path.join(folder, name))]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) and set(ids) <= sent, f"records never sent or twice: {len(ids)} records"
    assert {f"after-{i}" for i in range(5)} <= set(ids), "the restarted server did not log"
    print(f"restart: the file left open cut after its last complete line ({len(kept)} bytes) and closed; "
          f"{len(records)} records, all whole: ok")


CHECKS = {"http": check_http_sink, "file": check_file_sink, "stalled": check_stalled_sink, "crash": check_crash}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", required=True, choices=sorted(CHECKS))
    parser.add_argument("--infergate", required=True)
    parser.add_argument("--models", required=True, help="the bundled models")
    parser.add_argument("--work", required=True, help="an empty folder for the test repositories and logs")
    args = parser.parse_args()
    CHECKS[args.check](args.infergate, args.models, args.work)
    print(f"payload log {args.check}: all checks passed")


if __name__ == "__main__":
    main()
