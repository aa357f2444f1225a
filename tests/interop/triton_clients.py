"""Drives a running infergate with Triton's own clients (tritonclient HTTP and gRPC) and perf_analyzer.

Run by tests/interop.rs, which starts the server on 127.0.0.1 with the bundled models:
    python triton_clients.py --http HOST:PORT --grpc HOST:PORT --golden DIR --token TOKEN [--perf SECONDS]
Every check raises on failure; the exit status is the verdict. perf_analyzer's figures are printed.
"""

import argparse
import csv
import json
import os
import pathlib
import queue
import subprocess
import sys
import sysconfig
import tempfile
import urllib.request

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

TOLERANCE = 1e-5
GOLDENS = ["iris_v1.json", "iris_v2.json", "mlp_v1.json", "gbt_v1.json"]
NUMPY = {"FP32": np.float32, "INT64": np.int64}


def load_goldens(folder):
    return [json.loads((pathlib.Path(folder) / name).read_text()) for name in GOLDENS]


def golden_input(golden):
    spec = golden["request"]["inputs"][0]
    data = np.array(spec["data"], dtype=NUMPY[spec["datatype"]]).reshape(spec["shape"])
    return spec["name"], spec["datatype"], data


def check_outputs(where, results, golden):
    for name, want in golden["outputs"].items():
        got = results(name)
        assert got is not None, f"{where}: no output {name}"
        assert list(got.shape) == want["shape"], f"{where}: {name} shape {got.shape} != {want['shape']}"
        expected = np.array(want["data"]).reshape(want["shape"])
        if want["datatype"] in ("INT64", "INT32"):
            assert np.array_equal(got, expected), f"{where}: {name} labels differ"
        else:
            assert np.allclose(got, expected, atol=TOLERANCE, rtol=0), f"{where}: {name} differs"


def expect_error(where, call, *fragments):
    try:
        call()
    except InferenceServerException as e:
        text = f"{e.status()} {e.message()}"
        for fragment in fragments:
            assert fragment in text, f"{where}: {fragment!r} not in {text!r}"
        return
    raise AssertionError(f"{where}: expected an error")


def http_checks(url, goldens, token):
    client = httpclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert "binary_tensor_data" in metadata["extensions"], metadata
    for golden in goldens:
        model, version = golden["model"], golden["version"]
        assert client.is_model_ready(model, version)
        config = client.get_model_config(model, version)
        assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] > 0, config
        client.get_model_metadata(model, version)
        name, datatype, data = golden_input(golden)
        for binary in (True, False):
            infer_input = httpclient.InferInput(name, list(data.shape), datatype)
            infer_input.set_data_from_numpy(data, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in golden["outputs"]]
            result = client.infer(model, [infer_input], model_version=version, outputs=outputs, request_id="r1")
            check_outputs(f"http {model} v{version} binary={binary}", result.as_numpy, golden)
            assert result.get_response()["id"] == "r1"
    stats = client.get_inference_statistics("iris")
    assert stats["model_stats"] and stats["model_stats"][0]["inference_count"] > 0, stats

    # Bad input gets the right status, and the server keeps serving.
    expect_error("http unknown model", lambda: client.get_model_metadata("nope"), "404")
    wrong = httpclient.InferInput("X", [1, 5], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
    expect_error("http wrong shape", lambda: client.infer("iris", [wrong]), "400")

    # The repository: index for everyone, load and unload only with the token.
    index = client.get_model_repository_index()
    assert {"name": "iris", "version": "1", "state": "READY"} in index, index
    expect_error("http unload without token", lambda: client.unload_model("mlp"), "401")
    auth = {"Authorization": f"Bearer {token}"}
    expect_error("http unload with a wrong token", lambda: client.unload_model("mlp", headers={"Authorization": "Bearer x"}), "401")
    expect_error("http path trick", lambda: client.load_model("..", headers=auth), "400")
    client.unload_model("mlp", headers=auth)
    assert not client.is_model_ready("mlp")
    client.load_model("mlp", headers=auth)
    assert client.is_model_ready("mlp")
    print("tritonclient HTTP: ok")


def grpc_checks(url, goldens, token, http_url):
    client = grpcclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready()
    assert "statistics" in client.get_server_metadata().extensions
    for golden in goldens:
        model, version = golden["model"], golden["version"]
        assert client.is_model_ready(model, version)
        config = client.get_model_config(model, version).config
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size > 0, config
        assert len(config.input) == 1 and config.input[0].data_type == 11, config  # TYPE_FP32
        client.get_model_metadata(model, version)
        name, datatype, data = golden_input(golden)
        infer_input = grpcclient.InferInput(name, list(data.shape), datatype)
        infer_input.set_data_from_numpy(data)
        outputs = [grpcclient.InferRequestedOutput(o) for o in golden["outputs"]]
        result = client.infer(model, [infer_input], model_version=version, outputs=outputs, request_id="g1")
        check_outputs(f"grpc {model} v{version}", result.as_numpy, golden)
        assert result.get_response().id == "g1"
    stats = client.get_inference_statistics("iris", as_json=True)
    assert stats["model_stats"][0]["inference_count"], stats

    expect_error("grpc unknown model", lambda: client.get_model_metadata("nope"), "NOT_FOUND")
    wrong = grpcclient.InferInput("X", [1, 5], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
    expect_error("grpc wrong shape", lambda: client.infer("iris", [wrong]), "INVALID_ARGUMENT")

    index = client.get_model_repository_index(as_json=True)
    assert any(m["name"] == "iris" and m.get("state") == "READY" for m in index["models"]), index
    expect_error("grpc unload without token", lambda: client.unload_model("mlp"), "UNAUTHENTICATED")
    auth = {"authorization": f"Bearer {token}"}
    client.unload_model("mlp", headers=auth)
    assert not client.is_model_ready("mlp")
    assert health_check(url, "mlp") == NOT_SERVING
    client.load_model("mlp", headers=auth)
    assert client.is_model_ready("mlp")
    health_checks(url)
    stream_order(client)
    traffic_over_grpc(client, http_url, token)
    print("tritonclient gRPC: ok")


# grpc.health.v1 answers, encoded (HealthCheckResponse.status is field 1; SERVING = 1, NOT_SERVING = 2,
# SERVICE_UNKNOWN = 3), and the request for a service name.
SERVING, NOT_SERVING, SERVICE_UNKNOWN = b"\x08\x01", b"\x08\x02", b"\x08\x03"


def health_request(service):
    return b"\x0a" + bytes([len(service)]) + service.encode() if service else b""


def health_check(url, service):
    with grpc.insecure_channel(url) as channel:
        return channel.unary_unary("/grpc.health.v1.Health/Check")(health_request(service), timeout=5)


def health_checks(url):
    """The standard health service on the gRPC port, as Kubernetes' grpc probes call it: the server and each model
    as readiness says, NOT_FOUND for an unknown name; Watch answers the status at once (SERVICE_UNKNOWN for an
    unknown name, without ending)."""
    assert health_check(url, "") == SERVING
    assert health_check(url, "iris") == SERVING
    try:
        health_check(url, "nope")
        raise AssertionError("grpc health of an unknown model: expected NOT_FOUND")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    with grpc.insecure_channel(url) as channel:
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
        for service, first in (("", SERVING), ("mlp", SERVING), ("nope", SERVICE_UNKNOWN)):
            answers = watch(health_request(service), timeout=10)
            assert next(answers) == first, service
            answers.cancel()
    print("grpc.health.v1: ok")


def traffic_over_grpc(client, http_url, token):
    """A traffic policy on iris (set over REST), then gRPC requests: the routing key from the metadata or the
    `routing_key` parameter keeps a caller on one variant, and the answer names it."""
    policy = {"variants": [{"name": "one", "version": 1, "weight": 50}, {"name": "two", "version": 2, "weight": 50}]}
    put = urllib.request.Request(
        f"http://{http_url}/v2/models/iris/traffic",
        data=json.dumps(policy).encode(),
        method="PUT",
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    urllib.request.urlopen(put).read()
    row = grpcclient.InferInput("X", [1, 4], "FP32")
    row.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))

    def variant(response):
        return response.parameters["variant"].string_param

    seen = set()
    for i in range(40):
        key = {"x-routing-key": f"user-{i}"}
        by_metadata = [client.infer("iris", [row], headers=key).get_response() for _ in range(3)]
        by_parameter = client.infer("iris", [row], parameters={"routing_key": f"user-{i}"}).get_response()
        names = {variant(r) for r in by_metadata} | {variant(by_parameter)}
        assert len(names) == 1, f"user-{i} answered by {names}"
        expected_version = {"one": "1", "two": "2"}[names.pop()]
        assert by_parameter.model_version == expected_version, by_parameter
        seen.add(expected_version)
    assert seen == {"1", "2"}, f"40 keys all went to version(s) {seen}"
    pinned = client.infer("iris", [row], model_version="1").get_response()
    assert "variant" not in pinned.parameters and pinned.model_version == "1"
    delete = urllib.request.Request(
        f"http://{http_url}/v2/models/iris/traffic", method="DELETE", headers={"authorization": f"Bearer {token}"}
    )
    urllib.request.urlopen(delete).read()


def stream_order(client, count=1000):
    """1,000 requests on one stream, each with one distinct iris row: answers come back in order, each its own."""
    rows = np.random.default_rng(1).uniform(0.1, 8.0, size=(count, 4)).astype(np.float32)
    expected = []
    for row in rows[:50]:
        infer_input = grpcclient.InferInput("X", [1, 4], "FP32")
        infer_input.set_data_from_numpy(row.reshape(1, 4))
        expected.append(client.infer("iris", [infer_input], model_version="1").as_numpy("probabilities"))
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i, row in enumerate(rows):
        infer_input = grpcclient.InferInput("X", [1, 4], "FP32")
        infer_input.set_data_from_numpy(row.reshape(1, 4))
        client.async_stream_infer("iris", [infer_input], model_version="1", request_id=str(i))
    for i in range(count):
        result, error = answers.get(timeout=60)
        assert error is None, error
        assert result.get_response().id == str(i), f"answer {i} has id {result.get_response().id}"
        if i < len(expected):
            assert np.allclose(result.as_numpy("probabilities"), expected[i], atol=TOLERANCE), f"answer {i} differs"
    client.stop_stream()


def perf(url, protocol, seconds, out):
    """perf_analyzer at concurrency 1 and 8; returns the rows of its CSV report. It fails on any request error."""
    lib = pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cuda_runtime" / "lib"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    report = pathlib.Path(out) / f"perf_{protocol}.csv"
    command = [
        str(pathlib.Path(sys.executable).parent / "perf_analyzer"),
        "-m", "iris", "-u", url, "-i", protocol,
        "--concurrency-range", "1:8:7",
        "--measurement-interval", str(int(seconds * 1000)),
        "--stability-percentage", "500", "--max-trials", "10",
        "--percentile", "99", "-f", str(report),
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"perf_analyzer -i {protocol} failed:\n{run.stdout}\n{run.stderr}"
    with report.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2, rows
    for row in rows:
        print(
            f"perf_analyzer -i {protocol} concurrency {row['Concurrency']}: {float(row['Inferences/Second']):.0f} infer/s, "
            f"p99 {int(row['p99 latency']) / 1000:.2f} ms"
        )
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--golden", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--perf", type=float, default=2.0, help="seconds per perf_analyzer measurement")
    args = parser.parse_args()
    goldens = load_goldens(args.golden)
    http_checks(args.http, goldens, args.token)
    grpc_checks(args.grpc, goldens, args.token, args.http)
    with tempfile.TemporaryDirectory() as out:
        perf(args.http, "http", args.perf, out)
        perf(args.grpc, "grpc", args.perf, out)
    print("interoperability: all checks passed")


if __name__ == "__main__":
    main()
