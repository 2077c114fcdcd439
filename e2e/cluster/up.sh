#!/usr/bin/env bash
# Start the local Davit cluster: a real etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler (the binaries build.sh made) run by kwokctl's binary runtime on 127.0.0.1, plus kwok
# playing the kubelet for three fake nodes (two with 8 nvidia.com/gpu each, one CPU-only).
# Idempotent: when the cluster is already up and healthy it only refreshes the kubeconfig and nodes.
# Writes the kubeconfig to $DAVIT_STATE/kubeconfig; `source e2e/cluster/env.sh` to use it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
# shellcheck source=versions.env
source "$here/versions.env"

cluster=davit
nodes=(gpu-node-1 gpu-node-2 cpu-node-1)
say() { printf '[up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

binaries=(
  "$DAVIT_BIN_ETCD/etcd"
  "$DAVIT_BIN_KUBE/kube-apiserver" "$DAVIT_BIN_KUBE/kube-controller-manager"
  "$DAVIT_BIN_KUBE/kube-scheduler" "$DAVIT_BIN_KUBE/kubectl"
  "$DAVIT_BIN_KWOK/kwok" "$DAVIT_BIN_KWOK/kwokctl"
)
for b in "${binaries[@]}"; do
  [[ -x $b ]] || die "missing $b: run 'make cluster-build' (bash e2e/cluster/build.sh) first"
done
[[ -f $DAVIT_GATEWAY_API/gateway.networking.k8s.io_httproutes.yaml ]] ||
  die "missing the Gateway API CRDs in $DAVIT_GATEWAY_API: run 'make cluster-build' first"

# The cluster's own extensions: fake nodes, and the Gateway API (traffic.provider gatewayAPI).
install_extensions() {
  kubectl apply -f "$here/nodes/" >&2
  kubectl apply --server-side --force-conflicts -f "$DAVIT_GATEWAY_API/" >&2
  kubectl wait --for=condition=Established --timeout=60s crd/httproutes.gateway.networking.k8s.io >&2
}

# Succeeds when the API server answers and every one of our nodes reports Ready.
healthy() {
  api_ready || return 1
  local ready
  ready=$(kubectl --request-timeout=5s get nodes "${nodes[@]}" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null) || return 1
  [[ $(grep -c '^True$' <<<"$ready") -eq ${#nodes[@]} ]]
}

api_ready() { kubectl --request-timeout=5s get --raw /readyz >/dev/null 2>&1; }
default_service_account() { kubectl get serviceaccount default -n default -o name >/dev/null 2>&1; }

cluster_exists() { kwokctl get clusters 2>/dev/null | grep -qx "$cluster"; }

write_kubeconfig() {
  mkdir -p "$DAVIT_STATE"
  kwokctl get kubeconfig --name "$cluster" >"$KUBECONFIG.tmp"
  mv "$KUBECONFIG.tmp" "$KUBECONFIG"
}

# Polls `$@` once a second for up to $1 seconds, printing a progress line every 10 s.
wait_for() {
  local what=$1 limit=$2 waited=0
  shift 2
  until "$@"; do
    ((waited < limit)) || return 1
    ((waited % 10 == 0 && waited > 0)) && say "  still waiting for $what (${waited}s)"
    sleep 1
    waited=$((waited + 1))
  done
}

if cluster_exists; then
  write_kubeconfig
  if healthy; then
    install_extensions 2>/dev/null
    say "cluster '$cluster' is already up: $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
    say "kubeconfig: $KUBECONFIG"
    exit 0
  fi
  # A half-started or stopped cluster (a crash, a reboot): start from a clean slate.
  say "cluster '$cluster' exists but is not healthy: deleting it and starting afresh"
  kwokctl delete cluster --name "$cluster" --kubeconfig "$KUBECONFIG" >"$DAVIT_STATE/kwokctl-delete.log" 2>&1 || {
    cat "$DAVIT_STATE/kwokctl-delete.log" >&2
    die "kwokctl delete cluster failed"
  }
fi

# DAVIT_CLUSTER_CONFIG: a second kwokctl configuration layered over kwokctl.yaml (the operator
# benchmark's, kwokctl-bench.yaml: no client rate limits, a Service range for thousands).
configs=(--config "$here/kwokctl.yaml")
[[ -z ${DAVIT_CLUSTER_CONFIG:-} ]] || configs+=(--config "$DAVIT_CLUSTER_CONFIG")

mkdir -p "$DAVIT_STATE"
say "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok on 127.0.0.1"
say "  binaries: $DAVIT_BIN_KUBE, $DAVIT_BIN_ETCD, $DAVIT_BIN_KWOK"
say "  state:    $KWOK_WORKDIR/clusters/$cluster (logs under logs/)"
# --kubeconfig "": leave ~/.kube/config alone; ours is written below.
# Every binary is a local path, so kwokctl symlinks it instead of downloading anything.
# KWOK_KUBE_VERSION: kwokctl picks version-dependent defaults (secure port, flags) from it.
KWOK_KUBE_VERSION=$KUBE_VERSION kwokctl "${configs[@]}" create cluster \
  --name "$cluster" \
  --runtime binary \
  --kube-apiserver-binary "$DAVIT_BIN_KUBE/kube-apiserver" \
  --kube-controller-manager-binary "$DAVIT_BIN_KUBE/kube-controller-manager" \
  --kube-scheduler-binary "$DAVIT_BIN_KUBE/kube-scheduler" \
  --etcd-binary "$DAVIT_BIN_ETCD/etcd" \
  --kwok-controller-binary "$DAVIT_BIN_KWOK/kwok" \
  --kubeconfig "" \
  --timeout 5m >"$DAVIT_STATE/kwokctl-create.log" 2>&1 || {
  tail -n 40 "$DAVIT_STATE/kwokctl-create.log" >&2
  die "kwokctl create cluster failed (full output: $DAVIT_STATE/kwokctl-create.log)"
}

write_kubeconfig
say "waiting for the API server to answer"
wait_for "the API server" 120 api_ready ||
  die "API server not ready after 120s; see $KWOK_WORKDIR/clusters/$cluster/logs/"
say "API server ready: $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"

say "creating fake nodes (${nodes[*]}) and the Gateway API CRDs ($GATEWAY_API_VERSION)"
install_extensions
say "waiting for the nodes to be Ready"
wait_for "Ready nodes" 120 healthy || {
  kubectl get nodes >&2 || true
  die "nodes not Ready after 120s; see $KWOK_WORKDIR/clusters/$cluster/logs/kwok-controller.log"
}
# Pods are refused until the controller manager has made the namespace's default ServiceAccount.
say "waiting for the controller manager (default ServiceAccount)"
wait_for "the default ServiceAccount" 60 default_service_account ||
  die "no default ServiceAccount after 60s; see $KWOK_WORKDIR/clusters/$cluster/logs/kube-controller-manager.log"

kubectl get nodes -L nvidia.com/gpu.product,topology.kubernetes.io/zone >&2
say "cluster '$cluster' is up; kubeconfig: $KUBECONFIG (source e2e/cluster/env.sh to use it)"
