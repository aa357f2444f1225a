#!/usr/bin/env python3
"""Data drift report of one model's live inputs, from infergate's payload log, against its reference data.

The live side is every closed `*.jsonl` file of a `--payload-log-dir` folder (the `.jsonl.open` file being written
is left out); the reference side is the sample-traffic file `infergate reference --samples` reads, a KServe v2
inference request body holding many rows, so the report compares live traffic with what `reference.json` was built
from. Each row of the chosen input (the first, unless `--input` names another) becomes one row of features; the
report is Evidently's DataDriftPreset (a per-column statistical test, and the share of drifted columns).

    python tools/drift_report.py --log-dir /var/log/infergate --model iris --reference training-rows.json \\
        --features sepal_length,sepal_width,petal_length,petal_width --html drift.html

Prints a summary and exits 0 whatever the verdict; exits 2 when the inputs cannot be read. Requirements:
tools/drift-requirements.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


class InputError(Exception):
    """The log or the reference cannot give the rows asked for; the message says why."""


def rows_of(tensor: dict, where: str) -> np.ndarray:
    """A v2 JSON tensor as a [rows, features] float array (its first dimension is the batch)."""
    if tensor.get("datatype") == "BYTES":
        raise InputError(f"{where}: input '{tensor.get('name')}' is BYTES; only numeric inputs have drift here")
    shape = tensor.get("shape") or []
    if len(shape) < 1:
        raise InputError(f"{where}: input '{tensor.get('name')}' has no batch dimension (shape {shape})")
    # `data` is flat in row-major order, or nested; either way it holds prod(shape) values.
    values = np.asarray(tensor["data"], dtype=np.float64).ravel()
    width = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    if values.size != int(shape[0]) * width:
        raise InputError(f"{where}: input '{tensor.get('name')}' has {values.size} values for shape {shape}")
    return values.reshape(int(shape[0]), width)


def pick(tensors: list, name: str | None) -> dict | None:
    """The named tensor, or the first when no name is given; None when the named one is absent."""
    if name is None:
        return tensors[0] if tensors else None
    return next((t for t in tensors if t.get("name") == name), None)


def read_log(folder: Path, model: str | None, version: str | None, input_name: str | None):
    """The chosen input's rows of every matching record, and what was read (for the summary)."""
    files = sorted(folder.glob("*.jsonl"))  # names start with a UTC stamp, so this is the order written
    if not files:
        raise InputError(f"{folder}: no closed payload files (*.jsonl)")
    models, blocks, seen = set(), [], {"files": len(files), "records": 0, "without_input": 0, "input": input_name}
    for path in files:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{number}: not a JSON line ({e})") from e
                models.add(record.get("model"))
                if model is not None and record.get("model") != model:
                    continue
                if version is not None and str(record.get("version")) != version:
                    continue
                seen["records"] += 1
                # Mode "response" logs no inputs, and exclude_inputs may have left this one out.
                tensor = pick(record.get("inputs") or [], seen["input"])
                if tensor is None:
                    seen["without_input"] += 1
                    continue
                seen["input"] = tensor["name"]
                blocks.append(rows_of(tensor, f"{path}:{number}"))
    if model is None and len(models) > 1:
        raise InputError(f"{folder}: the log holds several models ({', '.join(sorted(map(str, models)))}); "
                         "name one with --model")
    if not blocks:
        raise InputError(f"{folder}: no logged inputs of model {model or '(any)'}"
                         f"{'' if version is None else ' version ' + version} (is the model's [logging] mode "
                         "'response', or the input excluded?)")
    widths = {b.shape[1] for b in blocks}
    if len(widths) != 1:
        raise InputError(f"{folder}: input '{seen['input']}' has rows of different widths {sorted(widths)}")
    return np.vstack(blocks), seen


def read_reference(path: Path, input_name: str) -> np.ndarray:
    """The named input's rows of a KServe v2 request body (the file `infergate reference --samples` reads)."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read a JSON request body ({e})") from e
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not inputs:
        raise InputError(f"{path}: not a KServe v2 inference request body (no 'inputs')")
    tensor = pick(inputs, input_name) or (inputs[0] if len(inputs) == 1 else None)
    if tensor is None:
        raise InputError(f"{path}: no input named '{input_name}'")
    return rows_of(tensor, str(path))


def drift_report(reference: pd.DataFrame, live: pd.DataFrame):
    """Evidently's DataDriftPreset over every column, all of them numerical; returns the snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(live.columns))
    # With tests included, each column's ValueDrift carries Evidently's own verdict (FAIL = drift detected).
    return Report([DataDriftPreset()], include_tests=True).run(
        current_data=Dataset.from_pandas(live, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )


def summary(snapshot) -> list[str]:
    """Share of drifted columns, then each column's test, score and verdict."""
    result = snapshot.dict()
    verdicts = {t["metric_config"]["metric_id"]: t["status"] for t in result["tests"] if "metric_config" in t}
    lines, columns, counted = [], [], None
    for metric in result["metrics"]:
        kind = metric["config"]["type"]
        if kind.endswith(":DriftedColumnsCount"):
            counted = metric
        elif kind.endswith(":ValueDrift"):
            config = metric["config"]
            drifted = {"FAIL": "yes", "SUCCESS": "no"}.get(verdicts.get(metric["id"]), "?")
            columns.append((config["column"], config["method"], config["threshold"], metric["value"], drifted))
    if counted is not None:
        share, limit = counted["value"]["share"], counted["config"]["drift_share"]
        lines.append(f"drifted columns: {int(counted['value']['count'])} of {len(columns)} ({share:.0%}); "
                     f"dataset drift: {'yes' if share >= limit else 'no'} (at {limit:.0%} or more of the columns)")
    width = max([6] + [len(c[0]) for c in columns])
    lines.append(f"{'column':<{width}}  {'test':<26} {'threshold':>9} {'score':>10}  drifted")
    for column, method, threshold, score, drifted in columns:
        lines.append(f"{column:<{width}}  {method:<26} {threshold:>9.3g} {score:>10.4g}  {drifted}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-dir", type=Path, required=True, help="the --payload-log-dir folder")
    parser.add_argument("--reference", type=Path, required=True,
                        help="the sample traffic reference.json was built from (a KServe v2 request body)")
    parser.add_argument("--model", help="the model whose inputs are compared (needed when the log holds several)")
    parser.add_argument("--version", help="only requests this version answered")
    parser.add_argument("--input", help="the input compared [default: the first logged input]")
    parser.add_argument("--features", help="column names, comma-separated [default: INPUT[0], INPUT[1], ...]")
    parser.add_argument("--html", type=Path, help="write Evidently's HTML report here")
    args = parser.parse_args()
    try:
        live_rows, seen = read_log(args.log_dir, args.model, args.version, args.input)
        reference_rows = read_reference(args.reference, seen["input"])
        width = live_rows.shape[1]
        if reference_rows.shape[1] != width:
            raise InputError(f"live rows have {width} features, the reference's {reference_rows.shape[1]}")
        names = args.features.split(",") if args.features else [f"{seen['input']}[{i}]" for i in range(width)]
        if len(names) != width or len(set(names)) != width:
            raise InputError(f"--features names {len(names)} distinct columns; the input has {width}")
    except InputError as e:
        print(f"drift_report: {e}", file=sys.stderr)
        return 2
    live, reference = pd.DataFrame(live_rows, columns=names), pd.DataFrame(reference_rows, columns=names)
    snapshot = drift_report(reference, live)
    without = f" ({seen['without_input']} without it)" if seen["without_input"] else ""
    print(f"live: {len(live)} rows of input {seen['input']} from {seen['records']} records{without} in "
          f"{seen['files']} files; reference: {len(reference)} rows")
    print("\n".join(summary(snapshot)))
    if args.html:
        snapshot.save_html(str(args.html))
        print(f"report: {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
