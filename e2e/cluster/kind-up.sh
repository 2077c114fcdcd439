#!/usr/bin/env bash
# The local Davit cluster on kind, for machines with Docker (and internet): a kind cluster named
# davit, kwok running inside it as the kubelet of the same fake GPU and CPU nodes as up.sh makes,
# kubeconfig at $DAVIT_STATE/kubeconfig. Needs kind and kubectl on PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
root=$(cd "$here/../.." && pwd)
state=${DAVIT_STATE:-$root/.run}
export KUBECONFIG=$state/kubeconfig
cluster=davit
kwok_release=https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION
say() { printf '[kind-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$state"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  say "kind cluster '$cluster' exists"
else
  # kind's default node image: kind publishes images only for some patch releases.
  say "creating kind cluster '$cluster'"
  kind create cluster --name "$cluster" --wait 120s
fi
kind get kubeconfig --name "$cluster" >"$KUBECONFIG"

say "installing kwok $KWOK_VERSION in the cluster (controller + fast pod/node stages) from $kwok_release"
kubectl apply -f "$kwok_release/kwok.yaml"
kubectl wait --for=condition=Established crd/stages.kwok.x-k8s.io --timeout=60s
kubectl apply -f "$kwok_release/stage-fast.yaml"
kubectl -n kube-system rollout status deployment/kwok-controller --timeout=180s

say "installing the Gateway API $GATEWAY_API_VERSION CRDs (traffic.provider gatewayAPI)"
kubectl apply --server-side -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"
kubectl wait --for=condition=Established crd/httproutes.gateway.networking.k8s.io --timeout=60s

say "creating fake nodes from $here/nodes/"
kubectl apply -f "$here/nodes/"
kubectl wait --for=condition=Ready node gpu-node-1 gpu-node-2 cpu-node-1 --timeout=120s
kubectl get nodes -L nvidia.com/gpu.product,topology.kubernetes.io/zone
say "kind cluster '$cluster' is up; kubeconfig: $KUBECONFIG"
