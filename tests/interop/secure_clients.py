"""Triton's clients against an infergate served over TLS with client certificates and API keys.

Run by tests/interop.rs, which makes the certificates with openssl and starts the server on 127.0.0.1:
    python secure_clients.py --http HOST:PORT --grpc HOST:PORT --certs DIR --key KEY --token TOKEN
Every check raises on failure; the exit status is the verdict.
"""

import argparse
import pathlib

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from triton_clients import expect_error


def iris_input(module, rows):
    data = np.tile(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32), (rows, 1))
    infer_input = module.InferInput("X", list(data.shape), "FP32")
    infer_input.set_data_from_numpy(data)
    return infer_input


def grpc_checks(url, certs, key, token):
    client = grpcclient.InferenceServerClient(
        url,
        ssl=True,
        root_certificates=str(certs / "ca.pem"),
        private_key=str(certs / "client.key"),
        certificate_chain=str(certs / "client.pem"),
    )
    keyed = {"x-api-key": key}
    assert client.is_server_live() and client.is_server_ready()
    expect_error("grpc infer without a key", lambda: client.infer("iris", [iris_input(grpcclient, 2)]), "UNAUTHENTICATED")
    expect_error("grpc metadata without a key", lambda: client.get_model_metadata("iris"), "UNAUTHENTICATED")
    result = client.infer("iris", [iris_input(grpcclient, 2)], headers=keyed)
    assert result.as_numpy("label").shape[0] == 2
    bearer = {"authorization": f"Bearer {key}"}
    assert client.get_model_metadata("iris", headers=bearer).name == "iris"
    # Past --max-request-rows: refused, naming the limit.
    expect_error("grpc rows limit", lambda: client.infer("iris", [iris_input(grpcclient, 9)], headers=keyed),
                 "INVALID_ARGUMENT", "--max-request-rows")
    # The API key does not manage models; the admin token does.
    expect_error("grpc load with an API key", lambda: client.load_model("iris", headers=bearer), "UNAUTHENTICATED")
    client.load_model("iris", headers={"authorization": f"Bearer {token}"})
    print("tritonclient gRPC over TLS: ok")


def http_checks(url, certs, key):
    client = httpclient.InferenceServerClient(
        url,
        ssl=True,
        ssl_options={
            "ca_certs": str(certs / "ca.pem"),
            "certfile": str(certs / "client.pem"),
            "keyfile": str(certs / "client.key"),
        },
    )
    assert client.is_server_live()
    expect_error("http infer without a key", lambda: client.infer("iris", [iris_input(httpclient, 2)]), "401")
    result = client.infer("iris", [iris_input(httpclient, 2)], headers={"x-api-key": key})
    assert result.as_numpy("label").shape[0] == 2
    print("tritonclient HTTP over TLS: ok")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--certs", required=True, type=pathlib.Path)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    grpc_checks(args.grpc, args.certs, args.key, args.token)
    http_checks(args.http, args.certs, args.key)
    print("secure clients: all checks passed")


if __name__ == "__main__":
    main()
