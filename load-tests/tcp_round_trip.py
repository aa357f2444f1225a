"""The machine's own floor for a request over loopback TCP: one 64-byte message echoed back, client and server
pinned to different cores as in the load tests. Every server's latency at concurrency 1 includes this round trip.

    taskset -c 0 python3 load-tests/tcp_round_trip.py server 18620 &
    taskset -c 1 python3 load-tests/tcp_round_trip.py client 18620
"""

import json
import socket
import sys
import time


def serve(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    connection, _ = listener.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = connection.recv(4096)
        if not data:
            return
        connection.sendall(data)


def measure(port, count=20000):
    for _ in range(100):
        try:
            connection = socket.create_connection(("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        connection.sendall(b"x" * 64)
        received = 0
        while received < 64:
            received += len(connection.recv(4096))
        latencies.append(time.perf_counter() - began)
    connection.close()
    latencies.sort()
    quantile = lambda q: round(latencies[int(q * (count - 1))] * 1e6)
    print(json.dumps({"kind": "tcp", "p50_us": quantile(0.5), "p99_us": quantile(0.99)}))


if __name__ == "__main__":
    role, port = sys.argv[1], int(sys.argv[2])
    serve(port) if role == "server" else measure(port)
