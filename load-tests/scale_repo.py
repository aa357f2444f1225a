"""Makes a model repository of many small, distinct models for load-tests/scale.sh: copies of the bundled iris
classifier (version 2, a tree ensemble) and mlp (a three-layer perceptron), named m0000, m0001, ... Every copy has
weights of its own, so no two model files are alike and a server cannot share one loaded copy between models:

  - float initializers (the mlp's weights and biases) are multiplied element-wise by 1 + 1e-3 u, u uniform in
    [-1, 1] from a generator seeded with the model's number;
  - in ai.onnx.ml tree ensembles, the split thresholds (`nodes_values`) and leaf weights (`class_weights`,
    `target_weights`, `base_values`) get the same treatment.

The ONNX files are patched in place at the protobuf wire level (a float's bytes keep their length, so nothing else in
the file moves), which needs numpy only. Each model folder holds `model.toml` (the original's settings, served as a
single version: no `version_policy`) and `1/model.onnx`. A manifest, `scale-models.json` at the repository's top
(a plain file, which servers listing the repository skip), gives each model's input for load-tests/scale.py.

    python3 load-tests/scale_repo.py OUT_DIR [--models 1000] [--mlp-every 4] [--check 3]

--mlp-every K makes every K-th model an mlp copy and the others iris copies (0: iris only); --check N loads the
first N copies of each kind with onnxruntime (when installed) and checks their outputs are finite and differ.
"""

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"iris": ROOT / "models/iris", "mlp": ROOT / "models/mlp"}
SOURCE_VERSION = {"iris": 2, "mlp": 1}
MANIFEST = "scale-models.json"
# Tree-ensemble attributes whose floats may move slightly and still make a valid model.
TREE_FLOATS = {b"nodes_values", b"class_weights", b"target_weights", b"base_values"}
ONNX_TYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 10: "FP16", 11: "FP64"}


def varint(buf, pos):
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def fields(buf, start, end):
    """The fields of the protobuf message in buf[start:end]: (number, wire type, payload start, payload end)."""
    pos = start
    while pos < end:
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = varint(buf, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            size, pos = varint(buf, pos)
            after = pos + size
        elif wire == 5:
            after = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {pos}")
        yield number, wire, pos, after
        pos = after


def tensor_floats(buf, start, end, spans):
    """Adds the float32 payload of a TensorProto (raw_data or float_data) to spans."""
    items = list(fields(buf, start, end))
    if not any(n == 2 and buf[s] == 1 for n, w, s, _ in items if w == 0):  # data_type 1: FLOAT
        return
    for number, wire, s, e in items:
        if number == 9 or (number == 4 and wire in (2, 5)):  # raw_data, float_data (packed or one by one)
            spans.append((s, e))


def float_spans(buf):
    """Byte ranges of the little-endian float32 values that may be perturbed: float initializers and tree-ensemble
    weights and thresholds (ModelProto.graph = 7; GraphProto.node = 1, initializer = 5; NodeProto.attribute = 5;
    AttributeProto.name = 1, t = 5, floats = 7)."""
    spans = []
    for number, wire, gs, ge in fields(buf, 0, len(buf)):
        if number != 7 or wire != 2:
            continue
        for g_number, g_wire, s, e in fields(buf, gs, ge):
            if g_number == 5 and g_wire == 2:
                tensor_floats(buf, s, e, spans)
            elif g_number == 1 and g_wire == 2:
                for n_number, n_wire, ns, ne in fields(buf, s, e):
                    if n_number != 5 or n_wire != 2:
                        continue
                    attribute = list(fields(buf, ns, ne))
                    name = next((bytes(buf[a:b]) for n, _, a, b in attribute if n == 1), b"")
                    base = name.removesuffix(b"_as_tensor")
                    if base not in TREE_FLOATS:
                        continue
                    for a_number, a_wire, a, b in attribute:
                        if a_number == 7 and a_wire in (2, 5):
                            spans.append((a, b))
                        elif a_number == 5 and a_wire == 2:
                            tensor_floats(buf, a, b, spans)
    return spans


def graph_inputs(buf):
    """The graph's inputs as (name, KServe datatype, shape with dynamic dimensions as 1). GraphProto.input = 11,
    ValueInfoProto.name = 1, type = 2; TypeProto.tensor_type = 1; elem_type = 1, shape = 2; dim = 1, dim_value = 1."""
    inputs, initializers = [], set()
    graph = next((s, e) for n, w, s, e in fields(buf, 0, len(buf)) if n == 7 and w == 2)
    for number, wire, s, e in fields(buf, *graph):
        if number == 5 and wire == 2:
            initializers.update(bytes(buf[a:b]).decode() for n, _, a, b in fields(buf, s, e) if n == 8)
        if number != 11 or wire != 2:
            continue
        name, datatype, shape = "", "FP32", []
        for n, w, a, b in fields(buf, s, e):
            if n == 1:
                name = bytes(buf[a:b]).decode()
            elif n == 2:
                for tn, _, ta, tb in fields(buf, a, b):
                    if tn != 1:
                        continue
                    for en, ew, ea, eb in fields(buf, ta, tb):
                        if en == 1 and ew == 0:
                            datatype = ONNX_TYPES.get(varint(buf, ea)[0], "FP32")
                        elif en == 2:
                            for _, _, da, db in fields(buf, ea, eb):
                                dim = [varint(buf, x)[0] for m, w2, x, _ in fields(buf, da, db) if m == 1 and w2 == 0]
                                shape.append(dim[0] if dim and dim[0] > 0 else 1)
        inputs.append((name, datatype, shape))
    return [i for i in inputs if i[0] not in initializers]


def model_toml(source_dir):
    """The source's model.toml settings without its version policy (each copy serves its one version) and without
    its comments, which speak of the original."""
    path = source_dir / "model.toml"
    text = path.read_text() if path.exists() else ""
    lines = [line for line in text.splitlines()
             if not re.match(r"\s*(#|version_policy\s*=)", line) and line.strip()]
    return "\n".join(lines).replace("\n[", "\n\n[") + "\n"


def kind_of(index, mlp_every):
    return "mlp" if mlp_every and index % mlp_every == mlp_every - 1 else "iris"


def make(out, count, mlp_every):
    sources = {}
    for kind, folder in SOURCES.items():
        data = (folder / str(SOURCE_VERSION[kind]) / "model.onnx").read_bytes()
        spans = float_spans(data)
        if not spans:
            sys.exit(f"{folder}: found no float weights to perturb")
        name, datatype, shape = graph_inputs(data)[0]
        # The positions of every byte of the floats to perturb, so each copy is one gather and one scatter.
        positions = np.concatenate([np.arange(start, end) for start, end in spans])
        sources[kind] = {"data": data, "bytes": positions, "toml": model_toml(folder),
                         "input": {"name": name, "datatype": datatype, "shape": shape}}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest = []
    width = max(4, len(str(count - 1)))
    for index in range(count):
        kind = kind_of(index, mlp_every)
        source = sources[kind]
        buf = np.frombuffer(source["data"], dtype=np.uint8).copy()
        values = buf[source["bytes"]].view("<f4")
        factor = 1 + 1e-3 * np.random.default_rng(index).uniform(-1, 1, values.size).astype(np.float32)
        buf[source["bytes"]] = (values * factor).astype("<f4").view(np.uint8)
        name = f"m{index:0{width}d}"
        (out / name / "1").mkdir(parents=True)
        (out / name / "1" / "model.onnx").write_bytes(buf.tobytes())
        (out / name / "model.toml").write_text(f"# A copy of the bundled {kind} model with weights of its own.\n"
                                               + source["toml"])
        manifest.append({"name": name, "kind": kind, "inputs": [source["input"]]})
    (out / MANIFEST).write_text('{"models": [\n' + ",\n".join(json.dumps(m) for m in manifest) + "\n]}\n")
    return manifest


def check(out, manifest, per_kind):
    """Runs the first copies of each kind on one fixed input: outputs must be finite and differ between copies."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("scale_repo: onnxruntime not installed, --check skipped", file=sys.stderr)
        return
    rng = np.random.default_rng(0)
    for kind in SOURCES:
        models = [m for m in manifest if m["kind"] == kind][:per_kind]
        if not models:
            continue
        spec = models[0]["inputs"][0]
        feed = {spec["name"]: rng.uniform(0, 7, spec["shape"]).astype(np.float32)}
        outputs = []
        for m in models:
            session = ort.InferenceSession(str(out / m["name"] / "1" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
            result = np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in session.run(None, feed)])
            if not np.all(np.isfinite(result)):
                sys.exit(f"scale_repo: {m['name']} gives non-finite outputs")
            outputs.append(result)
        for i in range(len(outputs)):
            for j in range(i + 1, len(outputs)):
                if np.array_equal(outputs[i], outputs[j]):
                    sys.exit(f"scale_repo: {models[i]['name']} and {models[j]['name']} give the same outputs")
        print(f"scale_repo: {len(models)} {kind} copies checked, finite and distinct outputs", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="repository folder to create (replaced when it exists)")
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--mlp-every", type=int, default=4, help="every K-th model an mlp copy, 0: none")
    parser.add_argument("--check", type=int, default=0, metavar="N", help="run N copies of each kind")
    args = parser.parse_args()
    started = time.monotonic()
    manifest = make(args.out, args.models, args.mlp_every)
    size = sum(p.stat().st_size for p in args.out.rglob("model.onnx"))
    print(f"scale_repo: {len(manifest)} models ({sum(m['kind'] == 'mlp' for m in manifest)} mlp), "
          f"{size / 2**20:.1f} MiB, in {time.monotonic() - started:.1f} s, in {args.out}", file=sys.stderr)
    if args.check:
        check(args.out, manifest, args.check)


if __name__ == "__main__":
    main()
