#!/usr/bin/env python3
"""Checks the REST API description (docs/openapi.yaml) against a running server.

The description is validated with openapi-spec-validator first (any error fails the check). Then:

- `--list-operations` prints one line of JSON, every operation in document order with the listeners serving it
  (`[{"method": "GET", "path": "/v2/health/live", "listeners": ["rest", "metrics"]}, ...]`: a server on port
  8000 is "rest", one on 8002 "metrics", from the path's `servers` or else the top-level ones) and exits 0; it
  needs no server.
- Otherwise every executable example (one that carries `x-status`) is sent, in document order, to the listener
  its path is on (`--rest` or `--metrics`), and the answer must have that status and validate against the
  description with openapi-core's response validator, using the example's own path and operation. An
  `application/octet-stream` inference answer has its JSON part validated as `application/json` too, and its
  binary part must be the size the JSON announces; an example the server must take (2xx) must also fit the
  described request (openapi-core's request validator). Prints `ok METHOD PATH EXAMPLE STATUS` per example, then
  `OPENAPI_EXAMPLES_OK <count>` and exits 0; on any failure prints what differed and exits 1.

Examples are request bodies' named examples (`requestBody.content.<type>.examples`) and, for operations without
a body, the operation's `x-examples` entries (`{name, parameters, headers, x-status}`). Extensions read here:
`x-parameters` (path parameter values; default each path parameter's `example`), `x-headers` (request headers,
`${ADMIN_TOKEN}` replaced by `--admin-token`), `x-listener` (`rest` or `metrics`, for a path both serve),
`x-setup: {shm_create: {key, bytes, data_base64}}` (a POSIX shared-memory object created first, removed at
the end), `x-binary-data-base64` (binary tensor data sent after an `application/octet-stream` example's JSON,
whose length goes in `Inference-Header-Content-Length`) and `x-sign-mlflow-webhook: {secret, delivery_id}`
(the body signed as MLflow signs webhook deliveries, with the current time). A string `value` of a JSON media
type is sent verbatim, so malformed bodies can be written. Every HTTP call has a timeout of 10 s.

Usage:
  openapi_check.py [--spec docs/openapi.yaml] --list-operations
  openapi_check.py [--spec docs/openapi.yaml] --rest http://127.0.0.1:8000 --metrics http://127.0.0.1:8002 \
      --admin-token TOKEN
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

HTTP_TIMEOUT_S = 10.0
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
LISTENER_PORTS = {8000: "rest", 8002: "metrics"}
ADMIN_TOKEN_PLACEHOLDER = "${ADMIN_TOKEN}"
REPOSITORY = Path(__file__).resolve().parents[2]


class CheckFailed(Exception):
    pass


def load_spec(path):
    """The description, validated; any error of openapi-spec-validator is raised."""
    with open(path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    validate(spec)
    return spec


def resolve(spec, node):
    """Follows local `$ref`s (`#/components/...`) until a node without one."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise CheckFailed(f"cannot resolve $ref {ref!r}")
        seen.add(ref)
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def listener_of(url):
    port = urllib.parse.urlparse(url).port
    if port not in LISTENER_PORTS:
        raise CheckFailed(f"server {url} is on no known listener (port 8000 is rest, 8002 metrics)")
    return LISTENER_PORTS[port]


def servers_of(spec, path_item, operation):
    servers = path_item.get("servers") or operation.get("servers") or spec.get("servers") or []
    if not servers:
        raise CheckFailed("no servers are described")
    return [server["url"] for server in servers]


def operations(spec):
    """(path, method, path item, operation) in document order."""
    for path, item in spec["paths"].items():
        item = resolve(spec, item)
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, item, operation


def list_operations(spec):
    listed = []
    for path, method, item, operation in operations(spec):
        listeners = [listener_of(url) for url in servers_of(spec, item, operation)]
        listed.append({"method": method.upper(), "path": path, "listeners": listeners})
    return listed


@dataclass
class Example:
    name: str
    status: int
    media_type: str | None = None
    value: object = None
    has_body: bool = False
    parameters: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    listener: str | None = None
    setup: dict | None = None
    binary_base64: str | None = None
    sign: dict | None = None


def examples_of(spec, operation):
    """The executable examples of an operation: its request body's, then its `x-examples`."""
    body = resolve(spec, operation.get("requestBody", {}))
    for media_type, media in body.get("content", {}).items():
        for name, example in media.get("examples", {}).items():
            example = resolve(spec, example)
            if "x-status" not in example:
                continue
            yield Example(
                name=name,
                status=int(example["x-status"]),
                media_type=media_type,
                value=example.get("value"),
                has_body=True,
                parameters=dict(example.get("x-parameters") or {}),
                headers=dict(example.get("x-headers") or {}),
                listener=example.get("x-listener"),
                setup=example.get("x-setup"),
                binary_base64=example.get("x-binary-data-base64"),
                sign=example.get("x-sign-mlflow-webhook"),
            )
    for example in operation.get("x-examples", []):
        if "x-status" not in example:
            continue
        yield Example(
            name=example["name"],
            status=int(example["x-status"]),
            parameters=dict(example.get("parameters") or example.get("x-parameters") or {}),
            headers=dict(example.get("headers") or example.get("x-headers") or {}),
            listener=example.get("x-listener"),
            setup=example.get("x-setup"),
        )


def path_parameters(spec, item, operation):
    """The path parameters of an operation by name (the operation's override the path item's)."""
    found = {}
    for parameter in list(item.get("parameters", [])) + list(operation.get("parameters", [])):
        parameter = resolve(spec, parameter)
        if parameter.get("in") == "path":
            found[parameter["name"]] = parameter
    return found


def fill_path(template, declared, given):
    """The request path, and the parameter values used (the example's, else each parameter's `example`)."""
    values = {}
    path = template
    for name, parameter in declared.items():
        if name in given:
            value = given[name]
        elif "example" in parameter:
            value = parameter["example"]
        elif "example" in parameter.get("schema", {}):
            value = parameter["schema"]["example"]
        else:
            raise CheckFailed(f"path parameter {name!r} has no value: give it an example")
        values[name] = str(value)
        path = path.replace("{" + name + "}", urllib.parse.quote(str(value), safe=""))
    unknown = set(given) - set(declared)
    if unknown:
        raise CheckFailed(f"x-parameters names {sorted(unknown)}, which the path does not have")
    if "{" in path:
        raise CheckFailed(f"path {path} still has a template")
    return path, values


def is_json(media_type):
    base = media_type.split(";")[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


def encode_json(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def build_body(example):
    """The body bytes and the headers it brings."""
    if not example.has_body:
        return None, {}
    headers = {"Content-Type": example.media_type}
    media = example.media_type.split(";")[0].strip().lower()
    if is_json(media):
        return encode_json(example.value), headers
    if media == "application/octet-stream":
        header = encode_json(example.value) if example.value is not None else b""
        tail = base64.b64decode(example.binary_base64) if example.binary_base64 else b""
        if example.binary_base64 is not None:
            headers["Inference-Header-Content-Length"] = str(len(header))
        return header + tail, headers
    if isinstance(example.value, bytes):
        return example.value, headers
    return ("" if example.value is None else str(example.value)).encode("utf-8"), headers


def sign_webhook(sign, body):
    """The headers of an MLflow webhook delivery of `body`, signed now."""
    delivery_id = str(sign.get("delivery_id", "openapi-delivery"))
    timestamp = str(int(time.time()))
    mac = hmac.new(str(sign["secret"]).encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "x-mlflow-delivery-id": delivery_id,
        "x-mlflow-timestamp": timestamp,
        "x-mlflow-signature": "v1," + base64.b64encode(mac.digest()).decode(),
    }


class SharedMemoryObjects:
    """POSIX shared-memory objects (files in /dev/shm) the examples need; removed at the end."""

    def __init__(self):
        self.created = []

    def create(self, key, size, data_base64=None):
        name = key.lstrip("/")
        if not name or "/" in name or name in (".", ".."):
            raise CheckFailed(f"shared memory key {key!r} is not a name directly in /dev/shm")
        path = os.path.join("/dev/shm", name)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, int(size))
            data = base64.b64decode(data_base64) if data_base64 else b""
            if len(data) > int(size):
                raise CheckFailed(f"shared memory {key}: {len(data)} bytes of data for {size} bytes")
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)
        if path not in self.created:
            self.created.append(path)

    def remove_all(self):
        for path in self.created:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.created.clear()


def run_setup(setup, shm):
    if not setup:
        return
    for step, spec in setup.items():
        if step == "shm_create":
            shm.create(spec["key"], spec["bytes"], spec.get("data_base64"))
        else:
            raise CheckFailed(f"unknown x-setup step {step!r}")


def send(base_url, method, path, body, headers):
    """One HTTP call, bounded by HTTP_TIMEOUT_S: (status, headers as a dict of lower-case names, body)."""
    url = urllib.parse.urlparse(base_url)
    if url.scheme != "http":
        raise CheckFailed(f"{base_url}: only http:// is supported")
    connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request(method.upper(), path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def mock_request(spec_url, method, path, template, values, headers, body, media_type):
    """The request as openapi-core sees it: on the described server, with the description's own path template."""
    return MockRequest(
        spec_url,
        method,
        path,
        path_pattern=template,
        view_args=values,
        headers=headers,
        data=body,
        content_type=media_type or "",
    )


def validate_answer(openapi, request, status, headers, data):
    """Validates one answer against the description's own operation (openapi-core's response validator)."""
    content_type = headers.get("content-type", "")
    response = MockResponse(data, status_code=status, headers=headers, content_type=content_type)
    openapi.validate_response(request, response)
    octet_stream = content_type.split(";")[0].strip().lower() == "application/octet-stream"
    if octet_stream and "inference-header-content-length" in headers:
        length = int(headers["inference-header-content-length"])
        header_json, binary = data[:length], data[length:]
        json_headers = {k: v for k, v in headers.items() if k != "inference-header-content-length"}
        json_headers["content-type"] = "application/json"
        as_json = MockResponse(header_json, status_code=status, headers=json_headers, content_type="application/json")
        openapi.validate_response(request, as_json)
        announced = sum(
            output.get("parameters", {}).get("binary_data_size", 0) for output in json.loads(header_json)["outputs"]
        )
        if announced != len(binary):
            raise CheckFailed(f"the JSON announces {announced} bytes of binary outputs; {len(binary)} follow")


def wait_ready(base_url, seconds):
    """Waits (bounded) for the server's readiness, so that the examples start on a loaded repository."""
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _, data = send(base_url, "get", "/v2/health/ready", None, {})
            if status == 200:
                return
            last = f"{status} {data[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise CheckFailed(f"{base_url} was not ready within {seconds} s: {last}")


def run_examples(spec, args):
    openapi = OpenAPI.from_dict(spec)
    bases = {"rest": args.rest, "metrics": args.metrics}
    shm = SharedMemoryObjects()
    count, failures = 0, []
    try:
        for template, method, item, operation in operations(spec):
            servers = servers_of(spec, item, operation)
            declared = path_parameters(spec, item, operation)
            for example in examples_of(spec, operation):
                label = f"{method.upper()} {template} {example.name}"
                try:
                    by_listener = {listener_of(url): url for url in reversed(servers)}
                    listener = example.listener or listener_of(servers[0])
                    if listener not in by_listener:
                        raise CheckFailed(f"{template} is not served by the {listener} listener")
                    base = bases[listener]
                    if not base:
                        raise CheckFailed(f"no URL given for the {listener} listener")
                    run_setup(example.setup, shm)
                    path, values = fill_path(template, declared, example.parameters)
                    body, headers = build_body(example)
                    for name, value in example.headers.items():
                        headers[name] = str(value).replace(ADMIN_TOKEN_PLACEHOLDER, args.admin_token or "")
                    if example.sign:
                        headers.update(sign_webhook(example.sign, body or b""))
                    request = mock_request(by_listener[listener], method, path, template, values, headers, body,
                                           example.media_type)
                    if 200 <= example.status < 300:
                        # A request the server must take has to fit what the description says it takes.
                        openapi.validate_request(request)
                    status, answer_headers, data = send(base, method, path, body, headers)
                    if status != example.status:
                        raise CheckFailed(f"status {status}, expected {example.status}: {data[:300]!r}")
                    validate_answer(openapi, request, status, answer_headers, data)
                except Exception as e:  # every failure is reported with its example, and the run goes on
                    detail = str(e) or type(e).__name__
                    cause = getattr(e, "__cause__", None)
                    if cause is not None and str(cause) not in detail:
                        detail += f" ({cause})"
                    failures.append(label)
                    print(f"FAIL {label}: {type(e).__name__}: {detail}", flush=True)
                    continue
                count += 1
                print(f"ok {method.upper()} {template} {example.name} {status}", flush=True)
    finally:
        shm.remove_all()
    return count, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPOSITORY / "docs" / "openapi.yaml"))
    parser.add_argument("--list-operations", action="store_true")
    parser.add_argument("--rest", help="the REST listener, e.g. http://127.0.0.1:8000")
    parser.add_argument("--metrics", help="the metrics listener, e.g. http://127.0.0.1:8002")
    parser.add_argument("--admin-token", default="")
    parser.add_argument("--wait-ready-secs", type=float, default=30.0,
                        help="how long to wait for the server's readiness first (0: not at all)")
    args = parser.parse_args()

    spec = load_spec(args.spec)
    if args.list_operations:
        print(json.dumps(list_operations(spec)))
        return 0
    if not args.rest or not args.metrics:
        parser.error("--rest and --metrics are needed to run the examples")
    if args.wait_ready_secs > 0:
        wait_ready(args.metrics, args.wait_ready_secs)
    count, failures = run_examples(spec, args)
    if failures:
        print(f"OPENAPI_EXAMPLES_FAILED {len(failures)} of {count + len(failures)}", flush=True)
        return 1
    if count == 0:
        print("no executable example found", flush=True)
        return 1
    print(f"OPENAPI_EXAMPLES_OK {count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
