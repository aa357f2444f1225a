"""Binary tensors over TCP against Triton's system shared memory, side by side in one run: the same server (pinned
to core 0, --shared-memory) serves both. Two drivers, pinned to core 1: Triton's own perf_analyzer
(`--shared-memory none` or `system`, REST and gRPC), and a minimal REST client (one keep-alive connection with
TCP_NODELAY, one request at a time, the region written once), whose own cost is small beside the server's. Models
with ResNet-18's 600 KB image input: `image_mean` (averages each channel, so the request's transport is nearly all
of its cost) and `resnet18`. Prints Markdown tables: infer/s, p50, p99 and the server's CPU time per request (from
/proc/<pid>/stat and the model's inference count around each run).
    python3 load-tests/shared_memory.py --repository DIR [--seconds 5] [--concurrency 1,4]
load-tests/shared_memory.sh makes the models, builds the binary and runs it.
"""

import argparse
import csv
import json
import os
import pathlib
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from http.client import HTTPConnection

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
OUTPUT_ROOM = {"image_mean": 64, "resnet18": 4096}


def server_cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def get(url):
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def inferences(http, model):
    stats = get(f"http://{http}/v2/models/{model}/stats")["model_stats"]
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


def start_server(repository, http_port):
    command = ["taskset", "-c", "0", str(ROOT / "target/release/infergate"), "serve",
               "--model-repository", str(repository), "--host", "127.0.0.1", "--shared-memory",
               "--http-port", str(http_port), "--grpc-port", str(http_port + 1), "--metrics-port", "0",
               "--log-level", "warn"]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    sys.exit("infergate never became ready")


def perf(pid, http, url, model, protocol, shared, concurrency, seconds, out):
    lib = pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cuda_runtime" / "lib"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    report = pathlib.Path(out) / f"{model}-{protocol}-{shared}-{concurrency}.csv"
    command = ["taskset", "-c", "1", str(pathlib.Path(sys.executable).parent / "perf_analyzer"),
               "-m", model, "-u", url, "-i", protocol, "--shape", "input:1,3,224,224",
               "--shared-memory", shared, "--output-shared-memory-size", str(OUTPUT_ROOM[model]),
               "--concurrency-range", f"{concurrency}:{concurrency}",
               "--measurement-interval", str(int(seconds * 1000)),
               "--stability-percentage", "50", "--max-trials", "5", "--percentile", "99", "-f", str(report)]
    before_cpu, before_count = server_cpu_seconds(pid), inferences(http, model)
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        sys.exit(f"perf_analyzer {model} {protocol} {shared} c={concurrency} failed:\n{run.stdout}\n{run.stderr}")
    cpu, count = server_cpu_seconds(pid) - before_cpu, inferences(http, model) - before_count
    with report.open() as f:
        row = list(csv.DictReader(f))[0]
    return {"rate": float(row["Inferences/Second"]), "p50": int(row["p50 latency"]),
            "p99": int(row["p99 latency"]), "cpu_us": cpu * 1e6 / max(count, 1)}


def direct(pid, http, model, shared, seconds):
    """One REST request at a time on one keep-alive connection: the 600 KB input as binary data after the JSON, or
    in a region registered once (and filled once) with only its handle in the JSON."""
    host, port = http.split(":")
    image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    spec = {"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32"}
    headers = {"content-type": "application/octet-stream"}
    conn = HTTPConnection(host, int(port))
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = f"/infergate-measure-{os.getpid()}"
    if shared:
        pathlib.Path(f"/dev/shm{key}").write_bytes(image.tobytes())
        conn.request("POST", "/v2/systemsharedmemory/region/image/register",
                     body=json.dumps({"key": key, "byte_size": image.nbytes}), headers=headers)
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()
        answer.read()
        spec["parameters"] = {"shared_memory_region": "image", "shared_memory_byte_size": image.nbytes}
        body = json.dumps({"inputs": [spec]}).encode()
    else:
        spec["parameters"] = {"binary_data_size": image.nbytes}
        header = json.dumps({"inputs": [spec]}).encode()
        headers["inference-header-content-length"] = str(len(header))
        body = header + image.tobytes()
    latencies = []
    before_cpu, before_count = server_cpu_seconds(pid), inferences(http, model)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200, answer.status
        latencies.append(time.perf_counter() - start)
    cpu, count = server_cpu_seconds(pid) - before_cpu, inferences(http, model) - before_count
    if shared:
        conn.request("POST", "/v2/systemsharedmemory/region/image/unregister", body=b"", headers=headers)
        conn.getresponse().read()
        os.unlink(f"/dev/shm{key}")
    conn.close()
    us = np.array(latencies) * 1e6
    return {"rate": len(latencies) / sum(latencies), "p50": int(np.percentile(us, 50)),
            "p99": int(np.percentile(us, 99)), "cpu_us": cpu * 1e6 / max(count, 1)}


def row(model, protocol, concurrency, shared, r, ratio):
    label = "binary over TCP" if not shared else "shared memory"
    print(f"| {model} | {protocol} | {concurrency} | {label} | {r['rate']:.0f} | {r['p50']} | {r['p99']} | "
          f"{r['cpu_us']:.0f} | {f'{ratio:.2f}×' if shared else ''} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", required=True)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--models", default="image_mean,resnet18")
    parser.add_argument("--concurrency", default="1,4")
    args = parser.parse_args()
    http_port = 19000 + os.getpid() % 900 * 2
    http, grpc = f"127.0.0.1:{http_port}", f"127.0.0.1:{http_port + 1}"
    server = start_server(args.repository, http_port)
    header = ("| model | protocol | concurrency | input | infer/s | p50 µs | p99 µs | server CPU µs/req | "
              "shm/TCP infer/s |\n|---|---|---|---|---|---|---|---|---|")
    models = args.models.split(",")
    try:
        print(f"perf_analyzer (taskset -c 1), {args.seconds} s windows\n\n{header}")
        with tempfile.TemporaryDirectory() as out:
            for model in models:
                for protocol, url in (("http", http), ("grpc", grpc)):
                    for concurrency in map(int, args.concurrency.split(",")):
                        reports = {shared: perf(server.pid, http, url, model, protocol, shared, concurrency,
                                                args.seconds, out)
                                   for shared in ("none", "system")}
                        ratio = reports["system"]["rate"] / reports["none"]["rate"]
                        for shared, r in reports.items():
                            row(model, protocol, concurrency, shared == "system", r, ratio)
        print(f"\nminimal REST client (taskset -c 1, one request at a time), {args.seconds} s each\n\n{header}")
        for model in models:
            direct(server.pid, http, model, False, 1)  # warm-up
            reports = {shared: direct(server.pid, http, model, shared, args.seconds) for shared in (False, True)}
            ratio = reports[True]["rate"] / reports[False]["rate"]
            for shared, r in reports.items():
                row(model, "http", 1, shared, r, ratio)
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
