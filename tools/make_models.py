"""Builds the bundled models in models/ and their golden outputs in tests/golden/.

Run with the pinned packages of tools/requirements.txt:
    python3 -m venv .venv-tools && .venv-tools/bin/pip install -r tools/requirements.txt
    .venv-tools/bin/python tools/make_models.py

The golden outputs are computed with the Python onnxruntime, so the server's answers are checked against
ONNX Runtime's own results for the same inputs.
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
GOLDEN = ROOT / "tests" / "golden"
FIXTURES = ROOT / "tests" / "fixtures"
OPSETS = {"": 17, "ai.onnx.ml": 3}


def iris_forest(n_estimators: int, max_depth: int, random_state: int) -> onnx.ModelProto:
    x, y = load_iris(return_X_y=True)
    clf = RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, random_state=random_state
    )
    clf.fit(x.astype(np.float32), y)
    return convert_sklearn(
        clf,
        initial_types=[("X", FloatTensorType([None, 4]))],
        options={id(clf): {"zipmap": False}},
        target_opset=OPSETS,
    )


def convert(model, features: int, **options) -> onnx.ModelProto:
    return convert_sklearn(
        model,
        initial_types=[("X", FloatTensorType([None, features]))],
        options={id(model): options} if options else None,
        target_opset=OPSETS,
    )


def gbt() -> onnx.ModelProto:
    """A 500-tree gradient-boosted binary classifier (depth 3) on 12 synthetic features."""
    x, y = make_classification(n_samples=2000, n_features=12, n_informative=8, random_state=11)
    clf = GradientBoostingClassifier(n_estimators=500, max_depth=3, learning_rate=0.05, random_state=11)
    clf.fit(x.astype(np.float32), y)
    return convert(clf, 12, zipmap=False)


def tree_fixtures() -> dict:
    """Small tree ensembles covering the operator's cases: (model, input rows)."""
    cls_x, cls_y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=3)
    cls_x = cls_x.astype(np.float32)
    multi_x, multi_y = load_iris(return_X_y=True)
    multi_x = multi_x.astype(np.float32)
    reg_x, reg_y = make_regression(n_samples=300, n_features=5, n_targets=2, random_state=5)
    reg_x = reg_x.astype(np.float32)
    rows = lambda x: np.concatenate([x[::15], x[:3] * 0 + np.float32(1e6)]).astype(np.float32)
    names = np.array(["setosa", "versicolor", "virginica"])
    return {
        "rf_binary": (
            convert(RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(cls_x, cls_y), 6, zipmap=False),
            rows(cls_x),
        ),
        "gbc_multiclass": (
            convert(GradientBoostingClassifier(n_estimators=15, max_depth=2, random_state=0).fit(multi_x, multi_y), 4, zipmap=False),
            rows(multi_x),
        ),
        "rf_strings": (
            convert(RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(multi_x, names[multi_y]), 4, zipmap=False),
            rows(multi_x),
        ),
        "gbr": (
            convert(GradientBoostingRegressor(n_estimators=25, max_depth=3, random_state=0).fit(reg_x, reg_y[:, 0]), 5),
            rows(reg_x),
        ),
        "rf_regressor": (
            two_targets(convert(RandomForestRegressor(n_estimators=8, max_depth=4, random_state=0).fit(reg_x, reg_y), 5)),
            rows(reg_x),
        ),
        "zipmap": (iris_with_zipmap(), rows(multi_x)),
    }


def unsupported() -> onnx.ModelProto:
    """An operator no backend implements, to check that load failures name it."""
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 8
    return model


def two_targets(model: onnx.ModelProto) -> onnx.ModelProto:
    """skl2onnx declares a regressor's output as [N, 1] even with two targets; declare what it computes."""
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2
    return model


def slow(width: int = 256, layers: int = 512) -> onnx.ModelProto:
    """A deliberately slow model for tests that must keep an instance busy: `layers` x (MatMul by one shared
    width x width matrix, then Tanh), so the cost grows with the rows sent while the file stays small."""
    w = (np.random.default_rng(1).standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, current = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [current, "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]))
        current = f"t{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp(seed: int) -> onnx.ModelProto:
    """A 64 -> 256 -> 256 -> 10 perceptron with ReLU and a softmax, He-initialised from a fixed seed."""
    rng = np.random.default_rng(seed)
    sizes = [64, 256, 256, 10]
    initializers, nodes = [], []
    current = "input"
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"gemm{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out]))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"]))
            current = f"relu{i}"
        else:
            current = out
    nodes.append(helper.make_node("Softmax", [current], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def slow_mlp(width: int = 256, layers: int = 512) -> onnx.ModelProto:
    """The mlp's signature (input [batch, 64] -> probabilities [batch, 10]) with the cost of `slow`: a deliberately
    slow variant for the traffic tests (a shadow that must not delay the primary)."""
    rng = np.random.default_rng(3)
    w_in = (rng.standard_normal((64, width)) / 8.0).astype(np.float32)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    w_out = (rng.standard_normal((width, 10)) / np.sqrt(width)).astype(np.float32)
    nodes, current = [helper.make_node("MatMul", ["input", "w_in"], ["h"])], "h"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [current, "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]))
        current = f"t{i}"
    nodes.append(helper.make_node("MatMul", [current, "w_out"], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp_slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(a, n) for a, n in [(w_in, "w_in"), (w, "w"), (w_out, "w_out")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def passthrough() -> onnx.ModelProto:
    """One input per served datatype, each copied to an output: checks every datatype end to end."""
    types = {
        "BOOL": TensorProto.BOOL,
        "UINT8": TensorProto.UINT8,
        "UINT16": TensorProto.UINT16,
        "UINT32": TensorProto.UINT32,
        "UINT64": TensorProto.UINT64,
        "INT8": TensorProto.INT8,
        "INT16": TensorProto.INT16,
        "INT32": TensorProto.INT32,
        "INT64": TensorProto.INT64,
        "FP32": TensorProto.FLOAT,
        "FP64": TensorProto.DOUBLE,
        "BYTES": TensorProto.STRING,
    }
    nodes = [helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n in types]
    graph = helper.make_graph(
        nodes,
        "passthrough",
        [helper.make_tensor_value_info(f"in_{n}", t, ["batch", 2]) for n, t in types.items()],
        [helper.make_tensor_value_info(f"out_{n}", t, ["batch", 2]) for n, t in types.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def iris_with_zipmap() -> onnx.ModelProto:
    """The iris forest converted with its ZipMap, an ONNX-ML operator tract does not implement."""
    x, y = load_iris(return_X_y=True)
    clf = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0).fit(x.astype(np.float32), y)
    return convert_sklearn(
        clf, initial_types=[("X", FloatTensorType([None, 4]))], target_opset=OPSETS
    )


def iris_shuffled(source: pathlib.Path) -> onnx.ModelProto:
    """A saved iris forest with its class labels rotated (0 -> 1, 1 -> 2, 2 -> 0): the same trees, latency and class
    distribution on balanced rows, every label wrong. A rollout candidate only ground-truth feedback can tell apart."""
    model = onnx.load(str(source))
    (forest,) = [node for node in model.graph.node if node.op_type == "TreeEnsembleClassifier"]
    (labels,) = [a for a in forest.attribute if a.name == "classlabels_int64s"]
    labels.ints[:] = list(labels.ints[1:]) + list(labels.ints[:1])
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, name: str, version: int) -> pathlib.Path:
    path = MODELS / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.graph.name = f"{name}_v{version}"  # skl2onnx names graphs with a random id; keep builds reproducible
    path.write_bytes(model.SerializeToString())
    return path


def datatype(array: np.ndarray) -> str:
    if array.dtype.kind in "OU":
        return "BYTES"
    return {"float32": "FP32", "float64": "FP64", "int64": "INT64"}[array.dtype.name]


def golden(
    path: pathlib.Path, name: str, version: int, input_name: str, x: np.ndarray, file: str = ""
) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results = session.run(None, {input_name: x})
    # A ZipMap output (a list of {class: probability}) is served as the probability matrix that fed it.
    results = [
        np.array([[row[k] for k in sorted(row)] for row in r], dtype=np.float32) if isinstance(r, list) else r
        for r in results
    ]
    outputs = {
        meta.name: {
            "datatype": datatype(value),
            "shape": list(value.shape),
            "data": [str(v) for v in value.reshape(-1)] if datatype(value) == "BYTES" else value.reshape(-1).tolist(),
        }
        for meta, value in zip(session.get_outputs(), results)
    }
    record = {
        "model": name,
        "version": str(version),
        "onnxruntime": ort.__version__,
        "request": {
            "id": f"golden-{name}-{version}",
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.reshape(-1).tolist(),
                }
            ],
        },
        "outputs": outputs,
    }
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / (file or f"{name}_v{version}.json")).write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:
    iris_x, _ = load_iris(return_X_y=True)
    # The README's example rows first, then every fifth row of the data set.
    iris_rows = np.concatenate(
        [np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]), iris_x[::5]]
    ).astype(np.float32)
    for version, (trees, depth, seed) in {1: (100, 5, 42), 2: (200, 4, 7)}.items():
        path = save(iris_forest(trees, depth, seed), "iris", version)
        golden(path, "iris", version, "X", iris_rows)

    fixtures = {
        "passthrough": passthrough(),
        "slow": slow(),
        "unsupported": unsupported(),
        # The traffic tests' variants: the mlp's signature with other answers, and with a deliberate slowness.
        "mlp_other": mlp(seed=99),
        "mlp_slow": slow_mlp(),
        # The feedback tests' candidate: iris version 1 whose every label is wrong (same probabilities).
        "iris_shuffled": iris_shuffled(MODELS / "iris" / "1" / "model.onnx"),
    }
    for name, model in fixtures.items():
        path = FIXTURES / name / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        model.graph.name = name
        path.write_bytes(model.SerializeToString())

    # Tree ensembles checked on both backends against ONNX Runtime: tests/fixtures/trees/<name>/1/model.onnx.
    for name, (model, rows) in tree_fixtures().items():
        path = FIXTURES / "trees" / name / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        model.graph.name = name
        path.write_bytes(model.SerializeToString())
        golden(path, name, 1, "X", rows, file=f"trees_{name}.json")

    path = save(gbt(), "gbt", 1)
    gbt_rows = make_classification(n_samples=2000, n_features=12, n_informative=8, random_state=11)[0]
    golden(path, "gbt", 1, "X", gbt_rows[::60].astype(np.float32))

    path = save(mlp(seed=2024), "mlp", 1)
    mlp_rows = np.random.default_rng(7).standard_normal((8, 64)).astype(np.float32)
    golden(path, "mlp", 1, "input", mlp_rows)


if __name__ == "__main__":
    main()
