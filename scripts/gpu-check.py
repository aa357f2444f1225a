"""Helpers of scripts/gpu-check.sh (standard library and numpy only).

    gpu-check.py check URL DEVICE   the GPU models report CUDA and answer what the CPU answers
    gpu-check.py table RUNS.jsonl   the markdown table of the load runs (fails on any error)
"""

import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MODES = {
    "cpu_off": "CPU, batching off",
    "cpu_on": "CPU, batching on (eager)",
    "gpu_off": "GPU, batching off",
    "gpu_on": "GPU, batching on (eager)",
    "gpu_delay": "GPU, batching on, 500 µs delay",
    "gpu_exact": "GPU, batching on, TF32 off",
}
# Largest difference allowed, relative to the largest CPU output: the CUDA provider uses TF32 for convolutions and
# matrix products, which keeps about 10 bits of mantissa, over the 18 layers of the ResNet.
TOLERANCE = {"resnet18": 5e-2, "mlp": 5e-3}
# Without TF32 (`tf32 = false`), and on the CPU, only the order of the sums differs.
EXACT_TOLERANCE = 1e-4


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def infer(base: str, model: str, rows: np.ndarray) -> np.ndarray:
    metadata = get(f"{base}/v2/models/{model}")
    tensor = metadata["inputs"][0]
    body = {
        "inputs": [
            {"name": tensor["name"], "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }
    output = post(f"{base}/v2/models/{model}/infer", body)["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def check(base: str, device: str) -> None:
    rng = np.random.default_rng(9)
    failures = []
    for model, shape in [("resnet18", (3, 224, 224)), ("mlp", (64,))]:
        if device != "cpu":
            provider = get(f"{base}/v2/models/{model}_gpu_on")["parameters"]["execution_provider"]
            print(f"{model}_gpu_on runs on {provider}")
            if provider != "CUDAExecutionProvider":
                failures.append(f"{model}_gpu_on reports {provider}")
        rows = rng.standard_normal((8, *shape)).astype(np.float32)
        reference = infer(base, f"{model}_cpu_off", rows)
        scale = float(np.abs(reference).max())

        def compare(what: str, got: np.ndarray, want: np.ndarray) -> None:
            limit = (EXACT_TOLERANCE if "exact" in what or "cpu" in what else TOLERANCE[model]) * scale
            diff = float(np.abs(got - want).max())
            same_class = int((got.argmax(axis=1) == want.argmax(axis=1)).sum())
            verdict = "ok" if diff <= limit else "MISMATCH"
            print(f"  {what:<36} max |diff| {diff:.2e} (limit {limit:.2e}), same top class {same_class}/8  {verdict}")
            if verdict != "ok":
                failures.append(f"{what}: max |diff| {diff:.2e} over the limit {limit:.2e}")

        print(f"{model}: 8 rows in one request, against {model}_cpu_off")
        for mode in ["cpu_on", "gpu_off", "gpu_on", "gpu_delay", "gpu_exact"]:
            compare(f"{model}_{mode}", infer(base, f"{model}_{mode}", rows), reference)
        print(f"{model}: 8 one-row requests at once (batched together where batching is on)")
        for mode in ["gpu_on", "gpu_delay"]:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda i, m=mode: infer(base, f"{model}_{m}", rows[i : i + 1]), range(8)))
            compare(f"{model}_{mode}, concurrent", np.concatenate(answers), reference)
    if failures:
        sys.exit("GPU check failed:\n  " + "\n  ".join(failures))
    print("GPU check passed")


def table(path: str) -> None:
    runs = [json.loads(line) for line in open(path) if line.strip()]
    errors = [f"{r['label']} c={r['concurrency']}: {r['errors']} errors" for r in runs if r["errors"]]
    by_key = {(r["label"], r["concurrency"]): r for r in runs}
    concurrencies = sorted({r["concurrency"] for r in runs})
    header = "| model | mode | " + " | ".join(f"c={c} req/s (p99 ms)" for c in concurrencies) + " |"
    print(header)
    print("|" + " --- |" * (2 + len(concurrencies)))
    for label in dict.fromkeys(r["label"] for r in runs):
        model, mode = label.split("_", 1)
        cells = []
        for c in concurrencies:
            r = by_key.get((label, c))
            cells.append(f"{r['requests_per_second']:,.0f} ({r['p99_us'] / 1000:.2f})" if r else "—")
        print(f"| {model} | {MODES.get(mode, mode)} | " + " | ".join(cells) + " |")
    if errors:
        sys.exit("load runs had errors:\n  " + "\n  ".join(errors))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2].rstrip("/"), sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)
