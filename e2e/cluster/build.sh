#!/usr/bin/env bash
# Build the local control plane from Go modules: kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl (k8s.io/kubernetes through a wrapper module), etcd, kwok and kwokctl;
# the Gateway API CRDs and Prometheus; helm on request.
# Binaries are cached by version under $DAVIT_CACHE/bin; a warm run only checks they exist.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${DAVIT_CACHE:-$HOME/.cache/davit}
export GOFLAGS=${GOFLAGS:--mod=mod}
export CGO_ENABLED=0

step() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

kube_dir=$cache/bin/kubernetes-$KUBE_VERSION
etcd_dir=$cache/bin/etcd-$ETCD_VERSION
kwok_dir=$cache/bin/kwok-$KWOK_VERSION
helm_dir=$cache/bin/helm-$HELM_VERSION
gateway_api_dir=$cache/gateway-api-$GATEWAY_API_VERSION
prometheus_dir=$cache/bin/prometheus-$PROMETHEUS_VERSION

build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=() b
  for b in "${want[@]}"; do [[ -x $kube_dir/$b ]] || missing+=("$b"); done
  ((${#missing[@]})) || { step "kubernetes $KUBE_VERSION: cached"; return; }
  local src=$cache/src/kubernetes-$KUBE_VERSION
  local staging=v0.${KUBE_VERSION#v1.}
  mkdir -p "$src" "$kube_dir"
  step "kubernetes $KUBE_VERSION: preparing wrapper module (staging modules at $staging)"
  (
    cd "$src"
    [[ -f go.mod ]] || go mod init davit.dev/localcluster/kubernetes >/dev/null 2>&1
    go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
    # ./staging paths, which Go ignores in a dependency: pin each to the published tag.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | while read -r m; do
      go mod edit -replace "$m=$m@$staging"
    done
    step "kubernetes $KUBE_VERSION: resolving modules (downloads on a cold cache)"
    go mod download k8s.io/kubernetes
    local ld="-s -w"
    local major=${KUBE_VERSION#v}; major=${major%%.*}
    local minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
    local pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for b in "${missing[@]}"; do
      step "kubernetes $KUBE_VERSION: go build $b (a cold build takes several minutes per binary)"
      go get "k8s.io/kubernetes/cmd/$b@$KUBE_VERSION" >/dev/null 2>&1 || true
      go build -trimpath -ldflags "$ld" -o "$kube_dir/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$kube_dir/$b.tmp" "$kube_dir/$b"
    done
  )
}

build_etcd() {
  [[ -x $etcd_dir/etcd ]] && { step "etcd $ETCD_VERSION: cached"; return; }
  local src=$cache/src/etcd-$ETCD_VERSION
  mkdir -p "$src" "$etcd_dir"
  step "etcd $ETCD_VERSION: go build"
  (
    cd "$src"
    [[ -f go.mod ]] || go mod init davit.dev/localcluster/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$etcd_dir/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
  )
}

build_go_install() { # name dir module@version binary...
  local name=$1 dir=$2 mod=$3; shift 3
  local b absent=0
  for b in "$@"; do [[ -x $dir/$b ]] || absent=1; done
  ((absent)) || { step "$name: cached"; return; }
  mkdir -p "$dir"
  step "$name: go install $mod"
  local p
  for p in "$@"; do
    GOBIN=$dir go install -trimpath -ldflags "-s -w" "${mod%@*}/cmd/$p@${mod#*@}"
  done
}

# The standard channel's CRDs, as the module carries them (the release's standard-install.yaml
# is the same files); up.sh applies them.
fetch_gateway_api() {
  [[ -f $gateway_api_dir/gateway.networking.k8s.io_httproutes.yaml ]] &&
    { step "gateway-api $GATEWAY_API_VERSION: cached"; return; }
  step "gateway-api $GATEWAY_API_VERSION: go mod download (CRDs)"
  local dir
  dir=$(cd /tmp && GOFLAGS= go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
    sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  [[ -d $dir/config/crd/standard ]] || { echo "build.sh: no CRDs in $dir" >&2; exit 1; }
  mkdir -p "$gateway_api_dir.tmp"
  cp "$dir"/config/crd/standard/gateway.networking.k8s.io_{gatewayclasses,gateways,httproutes,referencegrants}.yaml \
    "$gateway_api_dir.tmp/"
  chmod u+w "$gateway_api_dir.tmp"/*.yaml
  rm -rf "$gateway_api_dir" && mv "$gateway_api_dir.tmp" "$gateway_api_dir"
}

# Components to build: the control plane by default; `build.sh helm` for the chart tools only
# (the tests do not need helm, so a cold CI run does not pay for it).
components=("$@")
((${#components[@]})) || components=(kubernetes etcd kwok gateway-api prometheus)
for component in "${components[@]}"; do
  case $component in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) build_go_install "kwok $KWOK_VERSION" "$kwok_dir" "sigs.k8s.io/kwok@$KWOK_VERSION" kwok kwokctl ;;
    helm) build_go_install "helm $HELM_VERSION" "$helm_dir" "helm.sh/helm/v3@$HELM_VERSION" helm ;;
    gateway-api) fetch_gateway_api ;;
    # The v3 line's module version (v0.3XX.Y is Prometheus 3.XX.Y); ~5 min cold on 2 cores.
    prometheus) build_go_install "prometheus $PROMETHEUS_VERSION" "$prometheus_dir" \
      "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" prometheus ;;
    *) echo "build.sh: unknown component '$component' (kubernetes, etcd, kwok, helm, gateway-api, prometheus)" >&2; exit 2 ;;
  esac
done
step "done: ${components[*]} under $cache/bin"
