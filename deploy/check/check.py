"""Checks rendered Kubernetes manifests offline.

    check.py kubernetes FILE...   every core resource against the Kubernetes schemas, strictly (unknown fields fail)
    check.py kserve FILE...       KServe resources: their containers as core Containers, protocols and formats
    check.py alerts RULE ALERTS   a PrometheusRule's groups equal deploy/prometheus/alerts.yaml's
    check.py dashboard RENDERED DASHBOARD
                                  a ConfigMap labelled for Grafana's loader carries the dashboard, unchanged

Resources of other API groups are skipped by `kubernetes` (the Prometheus-operator kinds are checked by
validate-monitoring.mjs). Exits 1 on the first file with a failure, after reporting every failure in it.
"""

import json
import sys

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.31.0"
CUSTOM_GROUPS = ("monitoring.coreos.com/", "serving.kserve.io/")
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}


def documents(path: str) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def check_kubernetes(paths: list) -> list:
    failures, checked = [], 0
    for path in paths:
        for doc in documents(path):
            if str(doc.get("apiVersion", "")).startswith(CUSTOM_GROUPS):
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
                checked += 1
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
                failures.append(f"{path}: {name(doc)}: {getattr(e, 'message', e)}")
    if checked == 0 and not failures:
        failures.append(f"{' '.join(paths)}: no Kubernetes resource found")
    print(f"kubernetes {KUBERNETES_VERSION} (strict): {checked} valid")
    return failures


def as_pod(containers: list, volumes: list) -> dict:
    spec = {"containers": containers, "volumes": volumes}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}


def check_kserve(paths: list) -> list:
    failures, runtimes, services = [], {}, []
    for path in paths:
        for doc in documents(path):
            kind, spec = doc.get("kind"), doc.get("spec") or {}
            where = f"{path}: {name(doc)}"
            if kind in ("ClusterServingRuntime", "ServingRuntime"):
                if doc.get("apiVersion") != "serving.kserve.io/v1alpha1":
                    failures.append(f"{where}: apiVersion must be serving.kserve.io/v1alpha1")
                unknown = set(spec.get("protocolVersions", [])) - KSERVE_PROTOCOLS
                if unknown or not spec.get("protocolVersions"):
                    failures.append(f"{where}: protocolVersions {spec.get('protocolVersions')} (known: {KSERVE_PROTOCOLS})")
                formats = [f.get("name") for f in spec.get("supportedModelFormats", [])]
                if not formats:
                    failures.append(f"{where}: no supportedModelFormats")
                if not spec.get("containers"):
                    failures.append(f"{where}: no containers")
                try:
                    pod = as_pod(spec.get("containers", []), spec.get("volumes", []))
                    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
                except kubernetes_validate.ValidationError as e:
                    failures.append(f"{where}: containers: {e.message}")
                runtimes[doc.get("metadata", {}).get("name")] = formats
            elif kind == "InferenceService":
                if doc.get("apiVersion") != "serving.kserve.io/v1beta1":
                    failures.append(f"{where}: apiVersion must be serving.kserve.io/v1beta1")
                services.append((where, spec.get("predictor", {}).get("model", {})))
    for where, model in services:
        runtime, model_format = model.get("runtime"), model.get("modelFormat", {}).get("name")
        if runtime not in runtimes:
            failures.append(f"{where}: runtime {runtime!r} is not defined here")
        elif model_format not in runtimes[runtime]:
            failures.append(f"{where}: runtime {runtime} does not serve format {model_format!r}")
        if not model.get("storageUri"):
            failures.append(f"{where}: no storageUri")
    if not runtimes and not services:
        failures.append(f"{' '.join(paths)}: no KServe resource found")
    print(f"kserve: {len(runtimes)} runtime(s), {len(services)} inference service(s)")
    return failures


def check_alerts(rule_path: str, alerts_path: str) -> list:
    rules = [d for d in documents(rule_path) if d.get("kind") == "PrometheusRule"]
    alerts = (documents(alerts_path) or [{}])[0]
    if "groups" not in alerts:
        return [f"{alerts_path}: no alert groups"]
    if len(rules) != 1 or (rules[0].get("spec") or {}).get("groups") != alerts["groups"]:
        return [f"{rule_path}: the PrometheusRule's groups differ from {alerts_path}"]
    print(f"alerts: {rule_path} carries the {sum(len(g['rules']) for g in alerts['groups'])} rules of {alerts_path}")
    return []


def check_dashboard(rendered_path: str, dashboard_path: str) -> list:
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    maps = [d for d in documents(rendered_path) if d.get("kind") == "ConfigMap"
            and (d.get("metadata", {}).get("labels") or {}).get("grafana_dashboard") == "1"]
    if len(maps) != 1:
        return [f"{rendered_path}: {len(maps)} ConfigMaps labelled grafana_dashboard=1, expected one"]
    data = maps[0].get("data") or {}
    if list(data) != ["infergate.json"]:
        return [f"{rendered_path}: the dashboard ConfigMap holds {sorted(data)}, expected infergate.json"]
    try:
        shipped = json.loads(data["infergate.json"])
    except ValueError as e:
        return [f"{rendered_path}: the shipped dashboard is not JSON: {e}"]
    if shipped != dashboard:
        return [f"{rendered_path}: the shipped dashboard differs from {dashboard_path}"]
    print(f"dashboard: {rendered_path} ships the {len(dashboard['panels'])} panels of {dashboard_path}")
    return []


def main() -> int:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    command, paths = sys.argv[1], sys.argv[2:]
    checks = {"kubernetes": lambda: check_kubernetes(paths), "kserve": lambda: check_kserve(paths)}
    checks["alerts"] = lambda: check_alerts(*paths)
    checks["dashboard"] = lambda: check_dashboard(*paths)
    failures = checks[command]()
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
