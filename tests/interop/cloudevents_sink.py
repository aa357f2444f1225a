"""CloudEvents consumers for the payload-log tests. `Sink` is an HTTP endpoint that parses every POST with the
CloudEvents SDK's HTTP binding in binary content mode (as KServe's inference logger sends them, and as a Knative
event display reads them) and keeps each event for the test to query; a POST the SDK cannot parse is answered 400
and kept as an error. `StalledSink` accepts connections and never reads or answers, as a consumer that hangs does.

Run as a program (a load test's consumer), it only counts: it prints its port, then on SIGTERM or SIGINT the number
of events received.
    python tests/interop/cloudevents_sink.py
"""

import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings.http import HTTPMessage, from_binary_event
from cloudevents.core.v1.event import OPTIONAL_ATTRIBUTES, REQUIRED_ATTRIBUTES

CORE_ATTRIBUTES = set(REQUIRED_ATTRIBUTES) | set(OPTIONAL_ATTRIBUTES)


class Sink:
    """Listens on a loopback port chosen by the system (`port`); `events()` returns what arrived, in order."""

    def __init__(self, keep=True):
        self._lock = threading.Lock()
        self._events = []
        self._keep = keep
        self.errors = []
        self.received = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as a real consumer serves: the server may send many events over one connection.
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                accepted = sink.add(dict(self.headers.items()), self._body())
                # 202, not 200: any 2xx means delivered.
                self.send_response(202 if accepted else 400)
                self.send_header("content-length", "0")
                self.end_headers()

            def _body(self):
                if self.headers.get("transfer-encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("content-length", "0")))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size + 2)[:size])
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def add(self, headers, body):
        """Parses one POST; False (and an error kept) when it is not a valid binary-mode CloudEvent."""
        try:
            event = from_binary_event(HTTPMessage(headers=headers, body=body))
        except Exception as e:  # the SDK's validation errors have no common base worth naming
            with self._lock:
                self.errors.append(f"{e!r}: headers {headers}, body {body[:200]!r}")
            return False
        attributes = event.get_attributes()
        record = {
            "id": event.get_id(),
            "type": event.get_type(),
            "source": event.get_source(),
            "specversion": event.get_specversion(),
            "datacontenttype": event.get_datacontenttype(),
            "time": event.get_time(),
            "extensions": {k: v for k, v in attributes.items() if k not in CORE_ATTRIBUTES},
            "data": event.get_data(),
            "headers": {k.lower(): v for k, v in headers.items()},
        }
        with self._lock:
            self.received += 1
            if self._keep:
                self._events.append(record)
        return True

    def events(self):
        with self._lock:
            return list(self._events)

    def stop(self):
        self._http.shutdown()
        self._http.server_close()


class StalledSink:
    """Accepts every connection on a loopback port (`port`) and holds it open without reading or answering."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._socket.getsockname()[1]
        self._held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self._held.append(connection)

    @property
    def connections(self):
        return len(self._held)

    def stop(self):
        # shutdown wakes the accept() blocked in the other thread; close alone may not.
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        for connection in self._held:
            connection.close()


def main():
    sink = Sink(keep=False)
    print(sink.port, flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    sink.stop()
    print(f"events received: {sink.received}, refused: {len(sink.errors)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
