"""`make bench-operator`: the operator against the Deployment controller on the local control plane.

For each N, in one run on one cluster: N ModelDeployments through every phase (create burst → all
Ready → idle → spec change → rolled out → operator restart → delete all), then N plain Deployments
with the same pod template through the same phases. Per phase: wall time, API writes by resource
and verb (the API server's apiserver_request_total), operator CPU and RSS; plus the delay from a
child's deletion to the operator's re-creating it. Writes results/results.json, results.md and
results.png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from bench.procmon import TreeMonitor
from kubernetes import client, config

from e2e_support import CLUSTER_DIR, REPO, OperatorProcess, cluster_env
from opbench import report
from opbench.apistats import writes_between
from opbench.cluster import (
    Collection,
    burst,
    create_namespace,
    delete_namespace,
    scrape_requests,
    wait_for,
)
from opbench.log import log
from opbench.quiet import seconds_until_quiet
from opbench.systems import (
    DELETED_WITH_THE_OBJECTS,
    Davit,
    PeerTemplate,
    PlainChildren,
    PlainDeployments,
    System,
    TemplateIncompleteError,
    peer_template,
)

RESULTS = Path(__file__).resolve().parent / "results"
# Room for 1,000 pods of each system plus the surge of a rollout (old and new pod side by side).
BENCH_NODES = 6
PODS_PER_NODE = 500
PHASE_TIMEOUT_S = 1800.0
TEMPLATE_TIMEOUT_S = 60.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench-operator", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="100,300,1000", help="comma-separated N (default %(default)s)"
    )
    parser.add_argument(
        "--idle", type=float, default=120.0, help="idle phase seconds (%(default)s)"
    )
    parser.add_argument(
        "--reaction-samples", type=int, default=20, help="Services deleted to time the reaction"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (%(default)s)")
    parser.add_argument(
        "--report-only", action="store_true", help="re-render results.md/png from results.json"
    )
    return parser.parse_args(argv)


def bench_env(state: Path) -> dict[str, str]:
    """The benchmark cluster's environment: its own state folder and kwokctl layer."""
    return cluster_env(
        {
            **os.environ,
            "DAVIT_STATE": str(state),
            "DAVIT_CLUSTER_CONFIG": str(CLUSTER_DIR / "kwokctl-bench.yaml"),
        }
    )


def bench_node(index: int) -> dict[str, Any]:
    name = f"bench-node-{index}"
    capacity = {"cpu": "1000", "memory": "4Ti", "pods": str(PODS_PER_NODE)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": f"zone-{'abc'[index % 3]}",
                "type": "kwok",
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


class Probe:
    """What a phase measures: the API's writes and, when the operator runs, its CPU and RSS."""

    def __init__(self, env: dict[str, str], pid: int | None) -> None:
        self._env = env
        self._before = scrape_requests(env)
        self._monitor = TreeMonitor(pid) if pid else None
        if self._monitor:
            self._monitor.start()
        self._started = time.monotonic()

    def finish(self, wall_s: float | None = None, **extra: Any) -> dict[str, Any]:
        usage = self._monitor.stop() if self._monitor else None
        writes = writes_between(self._before, scrape_requests(self._env))
        return {
            "wall_s": wall_s if wall_s is not None else time.monotonic() - self._started,
            "writes": report.encode_writes(writes),
            "cpu_percent": usage.cpu_percent if usage else None,
            "peak_rss_mib": usage.peak_rss_mb if usage else None,
            **extra,
        }


def wait_quiet(
    pid: int | None, *, since: float | None = None, window_s: float = 3.0, limit_s: float = 300.0
) -> float:
    """Seconds from `since` (default: now) until the process went quiet, returning once it has
    used ≤ 5 % of a core for `window_s` (its burst is over; the window is not in the figure);
    without a process, just `window_s` for the control plane's tail."""
    if pid is None:
        time.sleep(window_s)
        return window_s
    process = psutil.Process(pid)

    def cpu_seconds() -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    return seconds_until_quiet(
        cpu_seconds,
        since=time.monotonic() if since is None else since,
        window_s=window_s,
        limit_s=limit_s,
    )


def rss_mib(pid: int) -> float:
    rss: int = psutil.Process(pid).memory_info().rss
    return rss / 2**20


def reaction_delays(api_client: client.ApiClient, namespace: str, names: list[str]) -> list[float]:
    """Delete each model's Service; seconds until the operator has created it again."""
    core = client.CoreV1Api(api_client)
    delays = []
    for name in names:
        before = core.read_namespaced_service(name, namespace).metadata.uid
        core.delete_namespaced_service(name, namespace)
        started = time.monotonic()
        while time.monotonic() - started < 60:
            try:
                if core.read_namespaced_service(name, namespace).metadata.uid != before:
                    break
            except client.ApiException as error:
                if error.status != 404:
                    raise
            time.sleep(0.01)
        else:
            raise TimeoutError(f"Service {namespace}/{name} not re-created within 60 s")
        delays.append(time.monotonic() - started)
    return delays


def take_template(api_client: client.ApiClient, namespace: str) -> PeerTemplate:
    """What Davit renders for the benchmark's model, for the peers to write directly."""
    model = Davit(api_client, namespace)
    model.create("template")
    taken: list[PeerTemplate] = []

    def not_made_yet() -> str:
        try:
            taken.append(peer_template(api_client, namespace, "template"))
        except TemplateIncompleteError as incomplete:
            return f"the operator to make the template model's {incomplete}"
        return ""

    # The peers copy all three children, and the operator may have made some and not yet others.
    wait_for(not_made_yet, timeout=TEMPLATE_TIMEOUT_S, interval=0.5)
    [template] = taken
    model.delete("template")
    pods = Collection(api_client, namespace, "pods")
    try:
        pods.wait(lambda objs: not objs, timeout=120, what="the template model's pods to go")
    finally:
        pods.close()
    return template


def still_there(collections: list[Collection]) -> str:
    """What of `collections` is not gone yet ("" once all are empty), for wait_for."""
    left = [f"{count} {c.kind}" for c in collections if (count := len(c.snapshot()))]
    return f"the last {', '.join(left)} to go" if left else ""


def count_children(api_client: client.ApiClient, namespace: str) -> int:
    """Objects the operator made in the namespace: Deployments, Services, PDBs, HPAs, the
    ControllerRevisions that keep each revision's spec."""
    listers = (
        client.AppsV1Api(api_client).list_namespaced_deployment,
        client.AppsV1Api(api_client).list_namespaced_controller_revision,
        client.CoreV1Api(api_client).list_namespaced_service,
        client.PolicyV1Api(api_client).list_namespaced_pod_disruption_budget,
        client.AutoscalingV2Api(api_client).list_namespaced_horizontal_pod_autoscaler,
    )
    return sum(len(list_namespaced(namespace).items) for list_namespaced in listers)


def timed_burst(
    env: dict[str, str],
    pid: int | None,
    work: Callable[[str], None],
    names: list[str],
    objects: Collection,
    done: Callable[[dict[str, Any]], bool],
    what: str,
) -> dict[str, Any]:
    """`work` on every name at once; the phase's figures, its wall time ending when `done`
    holds for all of them (the writes are counted until the operator is quiet again)."""
    probe = Probe(env, pid)
    started = time.monotonic()
    burst(work, names)
    objects.wait(
        lambda objs: sum(done(o) for o in objs) == len(names),
        timeout=PHASE_TIMEOUT_S,
        what=f"{len(names)} {what}",
    )
    wall = time.monotonic() - started
    log(f"  all {len(names)} {what} after {wall:.1f}s")
    wait_quiet(pid)
    return probe.finish(wall)


def run_phases(
    system: System,
    names: list[str],
    *,
    env: dict[str, str],
    api_client: client.ApiClient,
    namespace: str,
    operator: OperatorProcess | None,
    opts: argparse.Namespace,
) -> dict[str, Any]:
    """One system through every phase; the operator (Davit only) runs throughout."""
    n = len(names)
    pid = operator.pid if operator else None
    objects = Collection(api_client, namespace, system.kind)
    phases: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    try:
        log(f"{system.label} N={n}: create burst")
        phases["create"] = timed_burst(
            env, pid, system.create, names, objects, system.ready, "ready"
        )
        if operator:
            extra["children_per_model"] = count_children(api_client, namespace) / n

        log(f"  idle {opts.idle:.0f}s")
        probe = Probe(env, pid)
        time.sleep(opts.idle)
        phases["idle"] = probe.finish()
        if operator:
            extra["rss_idle_mib"] = rss_mib(operator.pid)
            sample = random.Random(n).sample(names, min(opts.reaction_samples, n))
            log(f"  reaction: deleting {len(sample)} Services one by one")
            extra["reaction_s"] = reaction_delays(api_client, namespace, sample)
            wait_quiet(pid)

        log("  spec change of all")
        phases["change"] = timed_burst(
            env, pid, system.change, names, objects, system.rolled_out, "rolled out"
        )

        if operator:
            log("  operator restart")
            operator.stop()
            probe_env = Probe(env, None)
            started = time.monotonic()
            operator.start()
            replan = wait_quiet(operator.pid, since=started, limit_s=600)
            extra["rss_restarted_mib"] = rss_mib(operator.pid)
            # The phase lasts until the operator went quiet; the window wait_quiet then watched
            # to be sure is not the operator's time. Writes are still counted to here.
            phases["restart"] = probe_env.finish(replan, replan_s=replan)
            log(f"  re-planned after {replan:.1f}s")
            pid = operator.pid

        log("  delete all")
        # Listed before the clock starts: the phase times the deletes, not the watches' setup.
        dependents = [Collection(api_client, namespace, k) for k in DELETED_WITH_THE_OBJECTS]
        try:
            probe = Probe(env, pid)
            started = time.monotonic()
            burst(system.delete, names)
            wait_for(lambda: still_there([objects, *dependents]), timeout=PHASE_TIMEOUT_S)
        finally:
            for dependent in dependents:
                dependent.close()
        wall = time.monotonic() - started
        log(f"  all gone after {wall:.1f}s")
        wait_quiet(pid)
        phases["delete"] = probe.finish(wall)
    finally:
        objects.close()
    return {"system": system.key, "n": n, "phases": phases, **extra}


def run(opts: argparse.Namespace) -> dict[str, Any]:
    state = REPO / ".run" / "opbench"
    env = bench_env(state)
    subprocess.run(["bash", str(CLUSTER_DIR / "up.sh")], env=env, check=True)
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    api_client = config.new_client_from_config(config_file=env["KUBECONFIG"])
    core = client.CoreV1Api(api_client)
    for index in range(1, BENCH_NODES + 1):
        node = bench_node(index)
        try:
            core.create_node(node)
        except client.ApiException as error:
            if error.status != 409:
                raise
    sizes = [int(s) for s in opts.sizes.split(",") if s]
    results: dict[str, Any] = {
        "options": {"sizes": sizes, "idle_s": opts.idle, "cores": os.cpu_count()},
        "runs": [],
    }
    operator = OperatorProcess(env, state / "opbench-operator.log", verbose=False)
    template: PeerTemplate | None = None
    for n in sizes:
        names = [f"m{i:04d}" for i in range(n)]
        ns = f"opbench-davit-{n}"
        create_namespace(api_client, ns)
        # The operator runs for Davit's phases only: the peer's have the cluster to themselves.
        operator.start()
        try:
            if "rss_empty_mib" not in results:
                wait_quiet(operator.pid)
                results["rss_empty_mib"] = rss_mib(operator.pid)
                log(f"operator RSS with no ModelDeployment: {results['rss_empty_mib']:.1f} MiB")
            if template is None:
                template = take_template(api_client, ns)
            results["runs"].append(
                run_phases(
                    Davit(api_client, ns),
                    names,
                    env=env,
                    api_client=api_client,
                    namespace=ns,
                    operator=operator,
                    opts=opts,
                )
            )
        finally:
            operator.stop()
        delete_namespace(api_client, ns)
        for peer in (PlainDeployments, PlainChildren):
            ns = f"opbench-{peer.key}-{n}"
            create_namespace(api_client, ns)
            results["runs"].append(
                run_phases(
                    peer(api_client, ns, template),
                    names,
                    env=env,
                    api_client=api_client,
                    namespace=ns,
                    operator=None,
                    opts=opts,
                )
            )
            delete_namespace(api_client, ns)
        write(results, opts.out)  # a partial run still leaves its numbers
    return results


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(report.render(results))
    report.plot(results, out / "results.png")


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    results = json.loads((opts.out / "results.json").read_text()) if opts.report_only else run(opts)
    write(results, opts.out)
    log(f"wrote {opts.out}/results.md")
    print(report.render(results))
    return 0
