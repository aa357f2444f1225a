"""Registers bundled models in an MLflow tracking server the way ML teams do, for tests/mlflow.rs.

Usage: register.py TRACKING_URI REGISTERED_NAME [--webhook URL --secret SECRET]

Logs models/iris/1 and models/iris/2 with mlflow.onnx.log_model (signature taken from the graph) as versions 1
and 2 of REGISTERED_NAME, then models/iris/1 again as version 3 with a signature that does not match its graph
(FP64 input). With --webhook, registers a webhook for alias changes, signed with SECRET. Prints
{"versions": [1, 2, 3]} as the last line.
"""

import argparse
import json
import pathlib

import mlflow
import numpy as np
import onnx
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tensor_specs(values, override_dtype=None):
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        dtype = override_dtype or onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        specs.append(TensorSpec(np.dtype(dtype), shape, value.name))
    return Schema(specs)


def log(model_path, name, override_dtype=None):
    model = onnx.load(str(model_path))
    signature = ModelSignature(
        inputs=tensor_specs(model.graph.input, override_dtype), outputs=tensor_specs(model.graph.output)
    )
    with mlflow.start_run():
        info = mlflow.onnx.log_model(model, name="model", registered_model_name=name, signature=signature)
    return int(info.registered_model_version)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    parser.add_argument("name")
    parser.add_argument("--webhook")
    parser.add_argument("--secret")
    args = parser.parse_args()
    mlflow.set_tracking_uri(args.uri)
    if args.webhook:
        mlflow.MlflowClient().create_webhook(
            name="infergate", url=args.webhook, events=["model_version_alias.created"], secret=args.secret
        )
    versions = [
        log(ROOT / "models/iris/1/model.onnx", args.name),
        log(ROOT / "models/iris/2/model.onnx", args.name),
        log(ROOT / "models/iris/1/model.onnx", args.name, override_dtype=np.float64),
    ]
    print(json.dumps({"versions": versions}))


if __name__ == "__main__":
    main()
