#!/usr/bin/env bash
# `make kind-up`: Vigil on a local kind cluster, end to end.
#
#   1. the kind cluster of kind-config.yaml (pinned node image);
#   2. ingress-nginx (kind's provider manifest), cert-manager, KServe v0.20 in Standard mode
#      (its CRD and resources charts, Ingress class nginx), kube-prometheus-stack (the
#      Prometheus Operator; Grafana and Alertmanager off);
#   3. Vigil's image (`make image`, podman) loaded into the node: never pulled;
#   4. Secrets, then `helm install vigil charts/vigil -f charts/vigil/ci/kind-values.yaml`;
#   5. a model trained and registered into the cluster's MLflow and the online store loaded
#      into its Redis (both through port-forwards, from this machine's `vigil`);
#   6. one prediction through the ingress (http://127.0.0.1:8080, Host fraud-vigil.example.com).
#
# Needs kind, kubectl, helm (v3.8+ for OCI charts), podman and `make setup` done. Every version
# is pinned below. Re-running it reuses the cluster and upgrades the releases.
set -euo pipefail

KIND_VERSION="v0.27.0"
CLUSTER="vigil"
NAMESPACE="vigil"
IMAGE="localhost/vigil:dev"
INGRESS_NGINX_VERSION="controller-v1.12.1"
CERT_MANAGER_VERSION="v1.17.2"
KSERVE_VERSION="v0.20.0"
KUBE_PROMETHEUS_STACK_VERSION="78.3.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VIGIL="${VIGIL:-$ROOT/.venv/bin/vigil}"
WORK="$(mktemp -d)"
PIDS=()

say() { printf '== %s\n' "$*"; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

for program in kind kubectl helm podman curl; do
    command -v "$program" >/dev/null || die "$program is not installed"
done
[[ -x "$VIGIL" ]] || die "$VIGIL not found: run make setup first"
kind_version="$(kind version | awk '{print $2}')"
[[ "$kind_version" == "$KIND_VERSION" ]] \
    || echo "kind-up: kind-config.yaml is written for kind $KIND_VERSION, this is $kind_version" >&2

say "1/6 kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
    kind create cluster --config kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER"

say "2/6 ingress-nginx, cert-manager, KServe $KSERVE_VERSION (Standard), Prometheus Operator"
kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX_VERSION/deploy/static/provider/kind/deploy.yaml"
kubectl -n ingress-nginx wait --for=condition=Available deployment/ingress-nginx-controller --timeout=300s
helm upgrade --install cert-manager cert-manager \
    --repo https://charts.jetstack.io --version "$CERT_MANAGER_VERSION" \
    --namespace cert-manager --create-namespace --set crds.enabled=true --wait
helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
    --version "$KSERVE_VERSION" --namespace kserve --create-namespace --wait
helm upgrade --install kserve oci://ghcr.io/kserve/charts/kserve-resources \
    --version "$KSERVE_VERSION" --namespace kserve \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.ingressGateway.className=nginx \
    --set kserve.controller.gateway.disableIstioVirtualHost=true \
    --wait --timeout 600s
helm upgrade --install kube-prometheus-stack \
    oci://ghcr.io/prometheus-community/charts/kube-prometheus-stack \
    --version "$KUBE_PROMETHEUS_STACK_VERSION" --namespace monitoring --create-namespace \
    --set grafana.enabled=false --set alertmanager.enabled=false \
    --wait --timeout 600s

say "3/6 image $IMAGE into the node"
if ! podman image exists "$IMAGE"; then
    make image IMAGE="$IMAGE"
fi
podman save --format docker-archive -o "$WORK/vigil.tar" "$IMAGE"
kind load image-archive "$WORK/vigil.tar" --name "$CLUSTER"

say "4/6 helm install vigil"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
if ! kubectl -n "$NAMESPACE" get secret vigil-redis-auth >/dev/null 2>&1; then
    kubectl -n "$NAMESPACE" create secret generic vigil-redis-auth \
        --from-literal=password="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
fi
# The kind cluster has no PostgreSQL: MLflow keeps its tables in SQLite on its artifact volume.
kubectl -n "$NAMESPACE" create secret generic vigil-mlflow-backend \
    --from-literal=url="sqlite:////mlflow/artifacts/mlflow.db" --dry-run=client -o yaml \
    | kubectl apply -f -
helm upgrade --install vigil charts/vigil --namespace "$NAMESPACE" \
    -f charts/vigil/ci/kind-values.yaml
kubectl -n "$NAMESPACE" rollout status statefulset/vigil-redis --timeout=300s
kubectl -n "$NAMESPACE" rollout status deployment/vigil-mlflow --timeout=300s

say "5/6 train and register a model, load the online store (through port-forwards)"
kubectl -n "$NAMESPACE" port-forward svc/vigil-mlflow 15000:5000 >"$WORK/mlflow.log" 2>&1 &
PIDS+=("$!")
kubectl -n "$NAMESPACE" port-forward svc/vigil-redis 16379:6379 >"$WORK/redis.log" 2>&1 &
PIDS+=("$!")
sleep 3
password="$(kubectl -n "$NAMESPACE" get secret vigil-redis-auth -o jsonpath='{.data.password}' | base64 -d)"
export VIGIL_HOME="$ROOT/.vigil-kind"
export MLFLOW_TRACKING_URI="http://127.0.0.1:15000"
export VIGIL_REDIS__URL="redis://:$password@127.0.0.1:16379/0"
"$VIGIL" run fraud --local --simulate --rollout-target none
"$VIGIL" materialize
# The predictor could not load a model before one was registered: start it again.
kubectl -n "$NAMESPACE" rollout restart deployment/fraud-predictor
kubectl -n "$NAMESPACE" wait --for=condition=Ready inferenceservice/fraud --timeout=600s

say "6/6 one prediction through the ingress"
now="$(date -u '+%Y-%m-%d %H:%M:%S')"
printf '{"instances": [{"TX_DATETIME": "%s", "CUSTOMER_ID": 1, "TERMINAL_ID": 1, "TX_AMOUNT": 42.5}]}\n' \
    "$now" >"$WORK/request.json"
curl --fail-with-body --silent --show-error --retry 10 --retry-all-errors --retry-delay 3 \
    -H "Host: fraud-$NAMESPACE.example.com" -H "Content-Type: application/json" \
    --data @"$WORK/request.json" http://127.0.0.1:8080/v1/models/fraud:predict
echo
say "done: kubectl -n $NAMESPACE get inferenceservice fraud"
