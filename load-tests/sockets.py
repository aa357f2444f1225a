"""TCP against a Unix domain socket, side by side in one run: the same server (pinned to core 0) serves both, and
loadgen (pinned to core 1) drives each transport in turn for every model, protocol and concurrency, so drift
touches both alike. Prints a Markdown table: req/s, p50, p99, and the server's CPU time per request (from
/proc/<pid>/stat around each run).
    python3 load-tests/sockets.py [--seconds 5] [--models iris,mlp] [--concurrency 1,8,64]
load-tests/sockets.sh builds the binaries and runs it.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start_server(folder, http_port):
    command = ["taskset", "-c", "0", str(ROOT / "target/release/infergate"), "serve",
               "--model-repository", str(ROOT / "models"), "--host", "127.0.0.1",
               "--http-port", str(http_port), "--grpc-port", str(http_port + 1), "--metrics-port", "0",
               "--http-socket", str(folder / "http.sock"), "--grpc-socket", str(folder / "grpc.sock"),
               "--log-level", "warn"]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    sys.exit("infergate never became ready")


def run(pid, endpoint, model, protocol, concurrency, seconds):
    """`endpoint`: (REST URL, gRPC URL) of one transport; gRPC runs read the model's metadata over REST."""
    rest, grpc = endpoint
    command = ["taskset", "-c", "1", str(ROOT / "target/release/loadgen"), "--url", rest, "--grpc-url", grpc,
               "--model", model,
               "--protocol", protocol, "--concurrency", str(concurrency), "--duration", str(seconds),
               "--warmup", "0", "--json"]
    before = server_cpu_seconds(pid)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = server_cpu_seconds(pid) - before
    report = json.loads(output.strip().splitlines()[-1])
    if report["errors"]:
        sys.exit(f"{endpoint} {model} {protocol} c={concurrency}: {report['errors_by_kind']}")
    report["cpu_us"] = cpu * 1e6 / max(report["ok"], 1)
    return report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--models", default="iris,mlp")
    parser.add_argument("--concurrency", default="1,8,64")
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="infergate-sockets-"))
    http_port = 18000 + os.getpid() % 900 * 2
    server = start_server(folder, http_port)
    transports = {
        "TCP": (f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{http_port + 1}"),
        "Unix": (f"unix:{folder / 'http.sock'}", f"unix:{folder / 'grpc.sock'}"),
    }
    print("| model | protocol | concurrency | transport | req/s | p50 µs | p99 µs | server CPU µs/req | Unix/TCP req/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for model in args.models.split(","):
            for protocol in ("rest-binary", "grpc"):
                for concurrency in map(int, args.concurrency.split(",")):
                    # Warm both paths (connections, the model's first batches), then measure each in turn.
                    for endpoint in transports.values():
                        run(server.pid, endpoint, model, protocol, concurrency, 1)
                    reports = {name: run(server.pid, endpoint, model, protocol, concurrency, args.seconds)
                               for name, endpoint in transports.items()}
                    ratio = reports["Unix"]["requests_per_second"] / reports["TCP"]["requests_per_second"]
                    for name, r in reports.items():
                        print(f"| {model} | {protocol} | {concurrency} | {name} | {r['requests_per_second']:.0f} | "
                              f"{r['p50_us']} | {r['p99_us']} | {r['cpu_us']:.1f} | "
                              f"{f'{ratio:.2f}×' if name == 'Unix' else ''} |", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
