# shellcheck shell=bash
# Source me (bash): points kubectl at the local Davit cluster and puts the cached kubectl, helm and
# kwokctl first on PATH.
#   source e2e/cluster/env.sh && kubectl get nodes
# Exports DAVIT_CACHE, DAVIT_STATE, KUBECONFIG, KWOK_WORKDIR (kwokctl keeps the cluster's processes,
# certificates and etcd data under $DAVIT_STATE/kwok, so each checkout owns its own cluster) and
# DAVIT_BIN_{KUBE,ETCD,KWOK,HELM,PROMETHEUS}, the version-keyed binary folders that build.sh
# fills, and DAVIT_GATEWAY_API, the folder of the Gateway API CRDs it fetches.

_davit_env() {
  # Locals so that sourcing does not leave KUBE_VERSION etc. in the caller's shell.
  local KUBE_VERSION ETCD_VERSION KWOK_VERSION HELM_VERSION GATEWAY_API_VERSION
  local PROMETHEUS_VERSION here root dir
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  root=$(cd "$here/../.." && pwd)
  # shellcheck source=versions.env
  source "$here/versions.env"

  export DAVIT_CACHE=${DAVIT_CACHE:-$HOME/.cache/davit}
  export DAVIT_STATE=${DAVIT_STATE:-$root/.run}
  # kwokctl writes absolute paths (binary symlinks, certificates) into the cluster; relative
  # folders would break them.
  [[ $DAVIT_CACHE == /* ]] || DAVIT_CACHE=$PWD/$DAVIT_CACHE
  [[ $DAVIT_STATE == /* ]] || DAVIT_STATE=$PWD/$DAVIT_STATE
  export KUBECONFIG=$DAVIT_STATE/kubeconfig
  export KWOK_WORKDIR=$DAVIT_STATE/kwok
  export DAVIT_BIN_KUBE=$DAVIT_CACHE/bin/kubernetes-$KUBE_VERSION
  export DAVIT_BIN_ETCD=$DAVIT_CACHE/bin/etcd-$ETCD_VERSION
  export DAVIT_BIN_KWOK=$DAVIT_CACHE/bin/kwok-$KWOK_VERSION
  export DAVIT_BIN_HELM=$DAVIT_CACHE/bin/helm-$HELM_VERSION
  export DAVIT_BIN_PROMETHEUS=$DAVIT_CACHE/bin/prometheus-$PROMETHEUS_VERSION
  export DAVIT_GATEWAY_API=$DAVIT_CACHE/gateway-api-$GATEWAY_API_VERSION
  # kwokctl resolves kubectl from PATH first; naming ours as well keeps it from ever fetching one.
  export KWOK_KUBECTL_BINARY=$DAVIT_BIN_KUBE/kubectl

  # Move each folder to the front (dropping an earlier copy), so sourcing twice changes nothing.
  for dir in "$DAVIT_BIN_HELM" "$DAVIT_BIN_KWOK" "$DAVIT_BIN_KUBE"; do
    PATH=":$PATH:"
    PATH=${PATH//":$dir:"/:}
    PATH=${PATH#:}
    PATH=$dir:${PATH%:}
  done
  export PATH
}
_davit_env
unset -f _davit_env
