"""Reaches a running infergate over its Unix sockets with Triton's and Python's own clients: tritonclient gRPC
dialling `unix:///PATH` (gRPC's own target syntax), and Python's standard HTTP client on the REST socket.

Run by tests/unix_sockets.rs, which starts the server with the bundled models and its TCP listeners off:
    python unix_socket_clients.py --http-socket PATH --grpc-socket PATH --golden DIR
Every check raises on failure; the exit status is the verdict.
"""

import argparse
import http.client
import json
import socket

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from triton_clients import check_outputs, golden_input, load_goldens


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: the same requests and answers, another transport."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def rest_checks(path, goldens):
    conn = UnixHTTPConnection(path)
    conn.request("GET", "/v2/health/ready")
    answer = conn.getresponse()
    assert answer.status == 200, answer.status
    answer.read()
    for golden in goldens:
        model, version = golden["model"], golden["version"]
        # One keep-alive connection carries every request.
        conn.request("POST", f"/v2/models/{model}/versions/{version}/infer", body=json.dumps(golden["request"]),
                     headers={"content-type": "application/json"})
        answer = conn.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 200, body
        outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in body["outputs"]}
        check_outputs(f"REST unix {model}/{version}", outputs.get, golden)
    conn.request("POST", "/v2/models/unknown/infer", body=b"{}", headers={"content-type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 404, answer.status
    answer.read()
    conn.close()


def grpc_checks(path, goldens):
    # Unchanged: gRPC's C core sends the socket's percent-encoded path as `:authority`, which the server makes valid.
    client = grpcclient.InferenceServerClient(f"unix://{path}")
    assert client.is_server_live() and client.is_server_ready()
    for golden in goldens:
        model, version = golden["model"], golden["version"]
        assert client.is_model_ready(model, version)
        name, datatype, data = golden_input(golden)
        infer_input = grpcclient.InferInput(name, list(data.shape), datatype)
        infer_input.set_data_from_numpy(data)
        outputs = [grpcclient.InferRequestedOutput(o) for o in golden["outputs"]]
        result = client.infer(model, [infer_input], model_version=version, outputs=outputs)
        check_outputs(f"gRPC unix {model}/{version}", result.as_numpy, golden)
    try:
        client.get_model_metadata("unknown")
        raise AssertionError("gRPC unix: an unknown model answered")
    except InferenceServerException as e:
        assert "NOT_FOUND" in str(e.status()), e
    client.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-socket", required=True)
    parser.add_argument("--grpc-socket", required=True)
    parser.add_argument("--golden", required=True)
    args = parser.parse_args()
    goldens = load_goldens(args.golden)
    rest_checks(args.http_socket, goldens)
    print(f"REST over {args.http_socket}: {len(goldens)} models answered as their goldens")
    grpc_checks(args.grpc_socket, goldens)
    print(f"tritonclient gRPC over unix://{args.grpc_socket}: {len(goldens)} models answered as their goldens")
    print("unix socket clients: all checks passed")


if __name__ == "__main__":
    main()
