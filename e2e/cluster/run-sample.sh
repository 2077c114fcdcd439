#!/usr/bin/env bash
# The second half of `make up`: install the CRD, start the operator in the background (its log and
# pid under $DAVIT_STATE), apply the sample ModelDeployment, wait until it is Ready, show it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
python=${PYTHON:-$root/.venv/bin/python}
say() { printf '[sample %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

say "installing the ModelDeployment CRD"
kubectl apply --server-side --force-conflicts -f "$root/crds/" >&2
kubectl wait --for=condition=Established --timeout=60s crd/modeldeployments.serving.davit.dev >&2

pidfile=$DAVIT_STATE/operator.pid
if [[ -f $pidfile ]] && kill -0 "$(<"$pidfile")" 2>/dev/null; then
  say "operator already running (pid $(<"$pidfile"))"
else
  say "starting the operator (log: $DAVIT_STATE/operator.log)"
  nohup "$python" -m davit_operator >"$DAVIT_STATE/operator.log" 2>&1 &
  echo $! >"$pidfile"
fi

say "applying examples/resnet.yaml"
kubectl apply -f "$root/examples/resnet.yaml" >&2
say "waiting for md/resnet to be Ready"
if ! kubectl wait --for=condition=Ready --timeout=120s md/resnet >&2; then
  kubectl describe md/resnet >&2 || true
  tail -n 30 "$DAVIT_STATE/operator.log" >&2 || true
  exit 1
fi
kubectl get md -A
kubectl get deploy,svc,pdb,pods -l davit.dev/model=resnet -o wide
cat >&2 <<MSG

Next:  source e2e/cluster/env.sh     # kubectl now talks to the local cluster
       kubectl get md -w             # watch ModelDeployments
       make down                     # stop the operator and the cluster
MSG
