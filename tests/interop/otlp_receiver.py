"""A minimal OpenTelemetry collector for the tests: it takes OTLP trace exports over gRPC (the collector's
TraceService, built from the opentelemetry-proto definitions) and over HTTP with protobuf bodies (POST
/v1/traces), and keeps every span it receives, flattened, for the test to query.

Run as a program (load-tests/tracing.sh), it only counts: it prints its gRPC port, then on SIGTERM or SIGINT the
number of spans received.
    python tests/interop/otlp_receiver.py
"""

import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(key_values):
    return {kv.key: _value(kv.value) for kv in key_values}


class Receiver:
    """Starts both endpoints on loopback ports chosen by the system; `spans()` returns what arrived."""

    def __init__(self, keep=True):
        self._lock = threading.Lock()
        self._spans = []
        self._keep = keep
        self.received = 0
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                receiver.add(request, "http")
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def add(self, request, transport):
        if not self._keep:
            count = sum(len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans)
            with self._lock:
                self.received += count
            return
        flat = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    flat.append({
                        "transport": transport,
                        "resource": resource,
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "trace_state": span.trace_state,
                        "kind": span.kind,
                        "attributes": _attributes(span.attributes),
                        "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        "status": span.status.code,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                    })
        with self._lock:
            self._spans.extend(flat)
            self.received += len(flat)

    def spans(self):
        with self._lock:
            return list(self._spans)

    def stop(self):
        self._grpc.stop(0)
        self._http.shutdown()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver):
        self._receiver = receiver

    def Export(self, request, context):
        self._receiver.add(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    receiver = Receiver(keep=False)
    print(receiver.grpc_port, flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    receiver.stop()
    print(f"spans received: {receiver.received}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
