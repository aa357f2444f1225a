"""The reference "what most teams write" model server: FastAPI + uvicorn + ONNX Runtime, one process, KServe v2 JSON.

It serves the highest version of every model in a repository folder laid out as infergate's
(<repository>/<model>/<version>/model.onnx), answers the KServe v2 REST routes load tests use (health, model
metadata, infer with JSON tensors) and runs ONNX Runtime with one intra-op thread, as the comparison in
docs/performance.md does for every server.

    python server.py --repository models --port 8080
"""

import argparse
import os
import time

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException, Request

DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}
NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def load(repository, threads):
    sessions = {}
    for name in sorted(os.listdir(repository)):
        folder = os.path.join(repository, name)
        versions = [v for v in os.listdir(folder) if v.isdigit()] if os.path.isdir(folder) else []
        if not versions:
            continue
        version = max(versions, key=int)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        path = os.path.join(folder, version, "model.onnx")
        sessions[name] = (version, ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]))
    return sessions


def tensor_metadata(arg):
    shape = [d if isinstance(d, int) else -1 for d in arg.shape]
    return {"name": arg.name, "datatype": DATATYPES.get(arg.type, arg.type), "shape": shape}


def app_for(sessions):
    app = FastAPI()

    def session_of(name):
        if name not in sessions:
            raise HTTPException(status_code=404, detail=f"unknown model {name}")
        return sessions[name]

    @app.get("/v2/health/ready")
    def ready():
        return {"ready": True}

    @app.get("/v2/models/{name}")
    def metadata(name: str):
        version, session = session_of(name)
        return {
            "name": name,
            "versions": [version],
            "platform": "onnxruntime_onnx",
            "inputs": [tensor_metadata(i) for i in session.get_inputs()],
            "outputs": [tensor_metadata(o) for o in session.get_outputs()],
        }

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request):
        version, session = session_of(name)
        body = await request.json()
        feeds = {}
        for tensor in body.get("inputs", []):
            dtype = NUMPY.get(tensor.get("datatype"))
            if dtype is None:
                raise HTTPException(status_code=400, detail=f"unsupported datatype {tensor.get('datatype')}")
            feeds[tensor["name"]] = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, feeds)
        outputs = []
        for output, value in zip(session.get_outputs(), results):
            value = np.asarray(value)
            outputs.append({
                "name": output.name,
                "datatype": DATATYPES.get(output.type, "FP32"),
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            })
        return {"model_name": name, "model_version": version, "outputs": outputs}

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    started = time.monotonic()
    sessions = load(args.repository, args.threads)
    print(f"loaded {len(sessions)} models in {time.monotonic() - started:.2f} s", flush=True)
    uvicorn.run(app_for(sessions), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
