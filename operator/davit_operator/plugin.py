"""`kubectl davit`: watch a rollout and steer it (promote, abort, retry, pause, resume), list
the revisions and go back to one (history, undo).

kubectl runs `kubectl-davit` (installed with the package) for `kubectl davit …`. It talks to the
API server with the user's kubeconfig, like kubectl: a control is a request the operator acts on
(planners/controls.py), so this command writes it, waits a few seconds for the operator to say
what became of it, and prints that.

The pure parts (which request a command makes, the status tree) are functions of plain dicts,
tested without a cluster; `main` does the I/O.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx2
from lightkube import ApiError, Client, ConfigError, KubeConfig
from lightkube.types import PatchType

from davit_operator import api, naming
from davit_operator.kube import (
    ControllerRevision,
    Deployment,
    EventResource,
    ModelDeploymentResource,
)
from davit_operator.planners.controls import CONTROL_ANNOTATION, Request
from davit_operator.planners.revision import POD_AFFECTING_FIELDS, revision_hash
from davit_operator.planners.rollout import Control

STOPPED = ("Aborted", "RolledBack")
# The Events the operator records for a control (planners/reconcile.control_events).
CONTROL_EVENTS = ("ControlAccepted", "ControlIgnored", "ControlRefused")


class PluginError(Exception):
    """What went wrong and what to do next, for the user's terminal."""


# ---- pure: which request, and the status tree ---------------------------------------------------


def request_for(md: dict[str, Any], control: Control, request_id: str) -> Request:
    """The request `control` makes of this ModelDeployment's rollout; PluginError when it
    cannot apply (no rollout running, or one in a state the control does not fit)."""
    name = md["metadata"]["name"]
    status = md.get("status") or {}
    canary = status.get("canaryRevision")
    if not canary:
        stable = status.get("stableRevision") or "none yet"
        raise PluginError(
            f"{name} has no rollout running (stable revision: {stable}): nothing to {control}. "
            "A rollout starts when the spec's model, runtime, resources or scheduling change."
        )
    outcome = next((r["outcome"] for r in status.get("revisions", []) if r["hash"] == canary), "")
    if control is Control.RETRY and outcome not in STOPPED:
        raise PluginError(
            f"the rollout of revision {canary} is not stopped: nothing to retry "
            "(retry starts an aborted or rolled-back rollout again)"
        )
    if control is not Control.RETRY and outcome in STOPPED:
        raise PluginError(
            f"the rollout of revision {canary} is {outcome.lower()}: `kubectl davit retry "
            f"{name}` starts it again, or change the spec"
        )
    paused = bool(status.get("paused"))
    if control is Control.PAUSE and paused:
        raise PluginError(f"the rollout of revision {canary} is paused already")
    if control is Control.RESUME and not paused:
        raise PluginError(f"the rollout of revision {canary} is not paused: nothing to resume")
    return Request(control, canary, request_id)


def _step_text(step: dict[str, Any]) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    if "pause" in step:
        duration = (step["pause"] or {}).get("duration")
        return f"pause {duration}" if duration else "pause (until promoted)"
    return "analysis"


def render_status(md: dict[str, Any], deployments: Sequence[dict[str, Any]]) -> str:
    """The rollout as a tree: phase, what it waits for, revisions with weights and replicas,
    steps, conditions."""
    meta, spec, status = md["metadata"], md.get("spec") or {}, md.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    progressing = conditions.get("Progressing", {})
    lines = [
        f"{meta['namespace']}/{meta['name']}  phase {status.get('phase', 'unknown')}  "
        f"ready {status.get('ready', '-')}",
    ]
    if progressing:
        lines.append(f"  {progressing.get('reason', '')}: {progressing.get('message', '')}")
    by_revision = {
        (d["metadata"].get("labels") or {}).get(naming.REVISION_LABEL): d for d in deployments
    }
    canary = status.get("canaryRevision")
    # What each revision gets, and apart from it the weight the steps set where traffic
    # has not followed yet (with provider none, until the replicas are split).
    planned = status.get("canaryWeight") or 0
    weight = status.get("actualWeight", planned)
    lines.append("  revisions")
    for record in reversed(status.get("revisions", [])):
        rev = record["hash"]
        role = {canary: "canary", status.get("stableRevision"): "stable"}.get(rev, "")
        share = {"canary": weight, "stable": 100 - weight}.get(role) if canary else None
        deployment = by_revision.get(rev)
        if deployment is not None:
            want = deployment.get("spec", {}).get("replicas", 0)
            ready = (deployment.get("status") or {}).get("readyReplicas", 0)
            pods = f"replicas {ready}/{want} ready"
        else:
            pods = "no Deployment"
        columns = [
            rev,
            record.get("version") or "-",
            (role or record["outcome"]).ljust(10),
            f"weight {share:>3} %" if share is not None else " " * 12,
            pods if deployment is not None or role else "",
            f"(set {planned} %)" if role == "canary" and planned != weight else "",
        ]
        lines.append("    " + "  ".join(columns).rstrip())
    lines += _analysis_lines(status)
    steps = (spec.get("rollout") or {}).get("steps") or []
    if steps and canary:
        done = status.get("currentStep") or 0
        lines.append(f"  steps ({done} of {len(steps)} completed)")
        for n, step in enumerate(steps):
            mark = "[x]" if n < done else ("[>]" if n == done else "[ ]")
            lines.append(f"    {mark} {n + 1}. {_step_text(step)}")
    lines.append("  conditions")
    width = max((len(c.get("reason", "")) for c in conditions.values()), default=0)
    for kind, condition in conditions.items():
        lines.append(
            f"    {kind:<12} {condition['status']:<7} {condition.get('reason', ''):<{width}} "
            f"{condition.get('message', '')}".rstrip()
        )
    return "\n".join(lines)


def _analysis_lines(status: dict[str, Any]) -> list[str]:
    """The last measurement of the canary (or, with none running, of the newest revision
    measured): its verdict, both revisions' figures and the checks."""
    records = [r for r in status.get("revisions", []) if r.get("analysis")]
    canary = status.get("canaryRevision")
    record = next((r for r in records if r["hash"] == canary), records[-1] if records else None)
    if record is None:
        return []
    measured = record["analysis"]
    lines = [
        f"  analysis of {record['hash']}: {measured['verdict']}  "
        f"({measured['startedAt']} → {measured['endedAt']})"
    ]
    for role in ("canary", "stable"):
        figures = measured.get(role)
        if figures:
            p99 = figures.get("p99LatencyMs")
            latency = f"{p99:g} ms" if p99 is not None else "-"
            lines.append(
                f"    {role:<7} {figures['requests']:>7} requests  errors "
                f"{figures['errorRate'] * 100:.3g} %  p99 {latency}"
            )
    lines.append(f"    {measured['message']}")
    return lines


def render_history(md: dict[str, Any]) -> str:
    """The revisions, oldest first, numbered as `undo --to-revision` takes them."""
    status = md.get("status") or {}
    current = revision_hash(api.ModelDeploymentSpec.model_validate(md["spec"]))
    lines = ["REVISION  HASH        VERSION     OUTCOME      CREATED               MODEL"]
    for record in status.get("revisions", []):
        number = str(record.get("number") or "-")
        mark = " (spec)" if record["hash"] == current else ""
        lines.append(
            f"{number:<9} {record['hash']:<11} {record.get('version') or '-':<11} "
            f"{record['outcome']:<12} {record.get('createdAt') or '-':<21} "
            f"{record.get('modelUri') or '-'}{mark}"
        )
    return "\n".join(lines)


def undo_target(md: dict[str, Any], to_revision: int | None) -> dict[str, Any]:
    """The history record `undo` goes back to: number `to_revision`, or by default the newest
    revision other than the one the spec asks for now."""
    current = revision_hash(api.ModelDeploymentSpec.model_validate(md["spec"]))
    records = (md.get("status") or {}).get("revisions", [])
    if to_revision is not None:
        found = next((r for r in records if r.get("number") == to_revision), None)
        if found is None:
            numbers = ", ".join(str(r["number"]) for r in records if r.get("number"))
            raise PluginError(
                f"no revision {to_revision} in the history (kept: {numbers or 'none'}; "
                "`kubectl davit history` lists them)"
            )
        if found["hash"] == current:
            raise PluginError(f"revision {to_revision} is what the spec asks for already")
        return dict(found)
    earlier = [r for r in records if r["hash"] != current and r.get("number")]
    if not earlier:
        raise PluginError("no earlier revision in the history to go back to")
    return dict(max(earlier, key=lambda r: int(r["number"])))


def undo_patch(spec: dict[str, Any], restored: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch giving `spec` the restored revision's pod-affecting fields (and only those:
    replicas, autoscaling, rollout and traffic stay as they are)."""
    patch: list[dict[str, Any]] = []
    for name in POD_AFFECTING_FIELDS:
        if name in restored:
            patch.append({"op": "add", "path": f"/spec/{name}", "value": restored[name]})
        elif name in spec:
            patch.append({"op": "remove", "path": f"/spec/{name}"})
    return patch


# ---- I/O -----------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    """A client as kubectl would make it: --kubeconfig or $KUBECONFIG or ~/.kube/config, the
    current context unless --context names one, its namespace unless -n names one."""
    try:
        found = KubeConfig.from_file(args.kubeconfig) if args.kubeconfig else KubeConfig.from_env()
        config = found.get(context_name=args.context)
    except ConfigError as error:
        raise PluginError(f"no usable kubeconfig: {error}") from error
    if config is None:
        raise PluginError(f"context {args.context!r} is not in the kubeconfig")
    namespace = args.namespace or config.namespace
    return Client(config=config, namespace=namespace, field_manager="kubectl-davit")


def _read(client: Client, resource: Any, name: str, missing: str) -> dict[str, Any]:
    """The object, or PluginError saying `missing` when there is none."""
    try:
        return dict(client.get(resource, name))
    except ApiError as error:
        if error.status.code == 404:
            raise PluginError(missing) from error
        raise


def _get(client: Client, name: str) -> dict[str, Any]:
    return _read(
        client,
        ModelDeploymentResource,
        name,
        f"modeldeployment {client.namespace}/{name} not found "
        f"(kubectl get md -n {client.namespace} lists them)",
    )


def _deployments(client: Client, name: str) -> list[dict[str, Any]]:
    found = client.list(Deployment, labels={naming.MODEL_LABEL: name})
    return [dict(d) for d in found]


def _control_event(client: Client, name: str, since: datetime.datetime) -> dict[str, Any] | None:
    """The operator's word on the latest control, if recorded since `since`."""
    events = client.list(
        EventResource,
        fields={"involvedObject.kind": "ModelDeployment", "involvedObject.name": name},
    )
    found = [
        dict(e)
        for e in events
        if e["reason"] in CONTROL_EVENTS
        and datetime.datetime.fromisoformat(e["lastTimestamp"]) >= since
    ]
    return max(found, key=lambda e: str(e["lastTimestamp"]), default=None)


def send_control(client: Client, name: str, control: Control, wait_seconds: float) -> int:
    md = _get(client, name)
    now = datetime.datetime.now(datetime.UTC)
    request = request_for(md, control, now.isoformat())
    patch = {"metadata": {"annotations": {CONTROL_ANNOTATION: request.encode()}}}
    client.patch(ModelDeploymentResource, name, patch, patch_type=PatchType.MERGE)
    print(f"{control} requested for revision {request.revision} of {client.namespace}/{name}")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if (_get(client, name).get("status") or {}).get("lastControl") == request.encode():
            event = _control_event(client, name, now.replace(microsecond=0))
            said = f"{event['reason']}: {event['message']}" if event else "acted on"
            print(f"the operator: {said}")
            return 0 if event is None or event["reason"] == "ControlAccepted" else 1
        time.sleep(0.5)
    print(
        f"the operator has not acted on it within {wait_seconds:.0f}s: is it running? "
        "The request stays, and is acted on when it is.",
        file=sys.stderr,
    )
    return 2


def undo(client: Client, name: str, to_revision: int | None) -> int:
    md = _get(client, name)
    record = undo_target(md, to_revision)
    kept = naming.history_name(name, record["hash"])
    revision = _read(
        client,
        ControllerRevision,
        kept,
        f"the spec of revision {record['number']} is not kept (ControllerRevision {kept} is "
        "gone: it was recorded before Davit kept revision specs)",
    )
    patch = undo_patch(md["spec"], revision["data"]["spec"])
    client.patch(ModelDeploymentResource, name, patch, patch_type=PatchType.JSON)
    print(
        f"{client.namespace}/{name}: the spec of revision {record['number']} "
        f"({record['hash']}, {record.get('version') or 'no version'}) rolls out again; "
        f"`kubectl davit status {name}` follows it"
    )
    return 0


def show_status(client: Client, name: str, watch: bool) -> int:
    while True:
        text = render_status(_get(client, name), _deployments(client, name))
        if not watch:
            print(text)
            return 0
        print("\033[H\033[2J" + text, flush=True)  # clear the screen, like `watch`
        time.sleep(2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubectl davit", description="Watch and steer Davit rollouts."
    )
    parser.add_argument("-n", "--namespace", help="the ModelDeployment's namespace")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="the rollout as a tree")
    status.add_argument("-w", "--watch", action="store_true", help="redraw every 2 s")
    promote = commands.add_parser("promote", help="end the current pause or analysis step")
    promote.add_argument("--full", action="store_true", help="skip every remaining step")
    commands.add_parser("abort", help="return all traffic to stable and stop the rollout")
    commands.add_parser("retry", help="start an aborted or rolled-back rollout again")
    commands.add_parser("pause", help="hold the rollout where it is")
    commands.add_parser("resume", help="go on from where pause held the rollout")
    commands.add_parser("history", help="the revisions, numbered")
    undo_command = commands.add_parser("undo", help="roll out an earlier revision's spec again")
    undo_command.add_argument(
        "--to-revision", type=int, help="its number in history (default: the previous one)"
    )
    for command in commands.choices.values():
        command.add_argument("name", help="the ModelDeployment")
        if command.prog.endswith(("promote", "abort", "retry", "pause", "resume")):
            command.add_argument(
                "--wait", type=float, default=10.0, help="seconds to wait for the operator"
            )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    controls: dict[str, Callable[[argparse.Namespace], Control]] = {
        "promote": lambda a: Control.PROMOTE_FULL if a.full else Control.PROMOTE,
        "abort": lambda _: Control.ABORT,
        "retry": lambda _: Control.RETRY,
        "pause": lambda _: Control.PAUSE,
        "resume": lambda _: Control.RESUME,
    }
    try:
        client = _client(args)
        if args.command == "status":
            return show_status(client, args.name, args.watch)
        if args.command == "history":
            print(render_history(_get(client, args.name)))
            return 0
        if args.command == "undo":
            return undo(client, args.name, args.to_revision)
        return send_control(client, args.name, controls[args.command](args), args.wait)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ApiError as error:
        print(f"error: the API server refused: {error.status.message}", file=sys.stderr)
        return 1
    except httpx2.TransportError as error:
        print(f"error: cannot reach the API server: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
