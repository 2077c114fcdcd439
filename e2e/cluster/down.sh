#!/usr/bin/env bash
# Stop the local Davit cluster and the operator that `make up` started, and remove their state.
# Safe to run when nothing is up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

cluster=davit
say() { printf '[down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

pidfile=$DAVIT_STATE/operator.pid
if [[ -f $pidfile ]]; then
  pid=$(<"$pidfile")
  # Only a live process that is really our operator: a stale file may name a reused pid.
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    ps -o command= -p "$pid" 2>/dev/null | grep -qE 'davit|kopf'; then
    say "stopping the operator (pid $pid)"
    kill "$pid" 2>/dev/null || true
    # Give it the time kopf needs to let go of its handlers, then insist.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
fi

if command -v kwokctl >/dev/null && kwokctl get clusters 2>/dev/null | grep -qx "$cluster"; then
  say "deleting cluster '$cluster' (its processes, certificates and etcd data)"
  # --kubeconfig: kwokctl removes the cluster's context from ours, never from ~/.kube/config
  # (up.sh did not add it there). Its JSON progress lines go to a log.
  kwokctl delete cluster --name "$cluster" --kubeconfig "$KUBECONFIG" >"$DAVIT_STATE/kwokctl-delete.log" 2>&1 || {
    cat "$DAVIT_STATE/kwokctl-delete.log" >&2
    exit 1
  }
else
  say "no cluster '$cluster' running"
fi
rm -f "$KUBECONFIG"
say "done"
