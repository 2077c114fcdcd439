"""The operator benchmark's pure parts: request counters, who wrote what, quiet, targets."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from opbench import cluster, report
from opbench.apistats import (
    RequestKey,
    event_writes,
    is_operator_write,
    parse_labels,
    request_totals,
    writes_between,
)
from opbench.cluster import Collection, lister, relist_delay, wait_for
from opbench.quiet import quiet_since, seconds_until_quiet
from opbench.systems import DELETED_WITH_THE_OBJECTS, missing_children
from urllib3 import HTTPConnectionPool
from urllib3.exceptions import ProtocolError, ReadTimeoutError

METRICS = """# HELP apiserver_request_total [STABLE] Counter of apiserver requests...
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 7
apiserver_request_total{code="409",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="All",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 50
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="serving.davit.dev",resource="modeldeployments",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 4.0
apiserver_request_total_other{verb="APPLY",resource="deployments"} 99
apiserver_request_duration_seconds_bucket{le="0.1",resource="pods",verb="LIST"} 3
"""  # noqa: E501


def key(resource: str, verb: str, subresource: str = "") -> RequestKey:
    return RequestKey(resource, subresource, verb)


def test_request_totals_sum_over_codes_and_leave_out_dry_runs_and_other_metrics() -> None:
    assert request_totals(METRICS) == {
        key("deployments", "APPLY"): 8,
        key("pods", "LIST"): 3,
        key("modeldeployments", "PATCH", "status"): 4,
    }


def test_labels_unescape_quotes_and_backslashes() -> None:
    assert parse_labels(r'a="1",b="x\"y",c="back\\slash"') == {
        "a": "1",
        "b": 'x"y',
        "c": "back\\slash",
    }


def test_writes_between_keeps_only_writes_that_happened() -> None:
    before = Counter({key("deployments", "APPLY"): 5, key("pods", "LIST"): 1})
    after = Counter(
        {key("deployments", "APPLY"): 8, key("pods", "LIST"): 9, key("services", "APPLY"): 2}
    )
    assert writes_between(before, after) == {
        key("deployments", "APPLY"): 3,
        key("services", "APPLY"): 2,
    }


def test_writes_between_counts_from_zero_after_an_api_server_restart() -> None:
    before = Counter({key("deployments", "APPLY"): 500})
    after = Counter({key("deployments", "APPLY"): 4})
    assert writes_between(before, after) == {key("deployments", "APPLY"): 4}


@dataclass(frozen=True)
class Attribution:
    reason: str
    key: RequestKey
    deletes_are_operators: bool
    want: bool


ATTRIBUTIONS = [
    # Server-side apply of a child kind is the operator's; controllers apply pod conditions.
    Attribution("child applied", key("services", "APPLY"), True, True),
    Attribution(
        "a controller applying a pod condition", key("pods", "APPLY", "status"), True, False
    ),
    # Status and metadata patches of ModelDeployments are the operator's; the driver PUTs specs.
    Attribution("status patch", key("modeldeployments", "PATCH", "status"), True, True),
    Attribution("driver's spec change", key("modeldeployments", "PUT"), True, False),
    Attribution("driver's create", key("modeldeployments", "POST"), True, False),
    # The operator scales through the subresource; the HPA controller PUTs the model's scale.
    Attribution("scale", key("deployments", "PATCH", "scale"), True, True),
    Attribution("deployment controller's status", key("deployments", "PUT", "status"), True, False),
    Attribution("revision annotation by the controller", key("deployments", "PUT"), True, False),
    # Old revisions are deleted by the operator; in the delete phase by the garbage collector.
    Attribution("old revision deleted", key("deployments", "DELETE"), True, True),
    Attribution("garbage collector", key("deployments", "DELETE"), False, False),
    Attribution("pods are the ReplicaSet controller's", key("pods", "DELETE"), True, False),
    Attribution("kwok reports pod status", key("pods", "PATCH", "status"), True, False),
]


@pytest.mark.parametrize("case", ATTRIBUTIONS, ids=lambda c: c.reason)
def test_who_made_a_write(case: Attribution) -> None:
    got = is_operator_write(case.key, deletes_are_operators=case.deletes_are_operators)
    assert got is case.want


def test_event_writes_count_creates_and_updates_of_events_only() -> None:
    writes = Counter({key("events", "POST"): 3, key("events", "PATCH"): 2, key("pods", "POST"): 9})
    assert event_writes(writes) == 5


@dataclass(frozen=True)
class Quiet:
    reason: str
    samples: list[tuple[float, float]]
    want: float | None


QUIETS = [
    Quiet("one sample tells nothing", [(0.0, 0.0)], None),
    Quiet("not a whole window yet", [(0.0, 0.0), (1.0, 0.0)], None),
    # Busy (a whole core) until t=2, then idle for 3 s: quiet since the window's start.
    Quiet("burst then idle", [(0, 0), (1, 1), (2, 2), (3, 2), (4, 2), (5, 2)], 2),
    Quiet("still busy", [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)], None),
    # 2 % of a core is background noise (watch keep-alives), under the 5 % bar.
    Quiet("noise under the bar", [(0, 0), (3, 0.06)], 0),
    Quiet("busy at the end of the window", [(0, 0), (1, 0), (2, 0), (3, 0.5)], None),
]


@pytest.mark.parametrize("case", QUIETS, ids=lambda c: c.reason)
def test_quiet_since(case: Quiet) -> None:
    samples = [(float(t), float(c)) for t, c in case.samples]
    assert quiet_since(samples, window_s=3.0, max_share=0.05) == case.want


class FakeClock:
    """Monotonic time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_seconds_until_quiet_ends_where_the_quiet_began_not_where_it_was_confirmed() -> None:
    clock = FakeClock()
    # A whole core until t=5, then idle: the 3 s window that shows it is quiet ends at t=8.
    busy_until = 5.0
    got = seconds_until_quiet(
        lambda: min(clock.now, busy_until),
        since=-1.0,  # the operator was started 1 s before sampling began
        window_s=3.0,
        limit_s=60.0,
        clock=clock.time,
        sleep=clock.sleep,
    )
    assert got == pytest.approx(6.0)
    assert clock.now == pytest.approx(8.0)


def test_seconds_until_quiet_gives_the_limit_when_the_process_never_goes_quiet() -> None:
    clock = FakeClock()
    got = seconds_until_quiet(
        clock.time, since=0.0, window_s=3.0, limit_s=10.0, clock=clock.time, sleep=clock.sleep
    )
    assert got == 10.0


@dataclass(frozen=True)
class Relist:
    reason: str
    error: Exception
    want_delay_s: float


RELISTS = [
    # 410 Gone is how a watch from an expired resource version ends: list again at once.
    Relist("watch expired", ApiException(status=410), 0.0),
    Relist("API server error", ApiException(status=500), 1.0),
    Relist("connection reset", ProtocolError("Connection broken", ConnectionResetError()), 1.0),
    Relist(
        "read timeout", ReadTimeoutError(HTTPConnectionPool("api"), "/apis", "Read timed out."), 1.0
    ),
    Relist("socket timeout", TimeoutError(), 1.0),
    Relist("body that does not decode", ValueError("Expecting value"), 1.0),
]


@pytest.mark.parametrize("case", RELISTS, ids=lambda c: c.reason)
def test_relist_delay(case: Relist) -> None:
    assert relist_delay(case.error) == case.want_delay_s


class FlakyWatch:
    """A watch whose streams fail with `failures`, one a stream, then one that delivers m0 and
    stays open until the test ends."""

    def __init__(self, failures: list[Exception]) -> None:
        self._failures = failures
        self.ended = threading.Event()

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        if self._failures:
            raise self._failures.pop(0)
        yield {"type": "ADDED", "object": {"metadata": {"name": "m0"}}}
        self.ended.wait(5)


def test_a_collection_outlives_errors_that_are_not_api_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failures: list[Exception] = [
        ProtocolError("Connection broken", ConnectionResetError()),
        ValueError("Expecting value"),
    ]
    flaky = FlakyWatch(failures)
    monkeypatch.setattr(cluster, "RELIST_DELAY_S", 0.01)
    monkeypatch.setattr(watch, "Watch", lambda: flaky)
    monkeypatch.setattr(
        cluster,
        "lister",
        lambda api_client, kind: (
            lambda namespace, **kwargs: {
                "metadata": {"resourceVersion": "1"},
                "items": [],
            }
        ),
    )
    services = Collection(client.ApiClient(), "ns", "services")
    try:
        wait_for(lambda: "" if services.get("m0") else "m0", timeout=5)
    finally:
        services.close()
        flaky.ended.set()
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2, errors  # one line per failure
    assert "Connection broken" in errors[0]
    assert "Expecting value" in errors[1]


@pytest.mark.parametrize("kind", DELETED_WITH_THE_OBJECTS)
def test_every_kind_the_delete_phase_waits_for_can_be_listed(kind: str) -> None:
    assert callable(lister(client.ApiClient(), kind))


def test_wait_for_returns_once_nothing_is_pending() -> None:
    checks = iter(["2 services", "1 service", ""])
    wait_for(lambda: next(checks), timeout=5, interval=0.001)


def test_wait_for_names_what_was_still_pending_when_it_gave_up() -> None:
    with pytest.raises(TimeoutError, match=r"timed out after 0s waiting for 3 services"):
        wait_for(lambda: "3 services", timeout=0.01, interval=0.001)


@dataclass(frozen=True)
class Template:
    reason: str
    children: dict[str, list[object]]
    want_missing: list[str]


MADE = [object()]
TEMPLATES = [
    Template(
        "nothing made yet",
        {"Deployment": [], "Service": [], "PodDisruptionBudget": []},
        ["Deployment", "Service", "PodDisruptionBudget"],
    ),
    Template(
        "the Deployment before the rest",
        {"Deployment": MADE, "Service": [], "PodDisruptionBudget": []},
        ["Service", "PodDisruptionBudget"],
    ),
    Template(
        "only the Service missing",
        {"Deployment": MADE, "Service": [], "PodDisruptionBudget": MADE},
        ["Service"],
    ),
    Template("all made", {"Deployment": MADE, "Service": MADE, "PodDisruptionBudget": MADE}, []),
]


@pytest.mark.parametrize("case", TEMPLATES, ids=lambda c: c.reason)
def test_missing_children_of_the_template(case: Template) -> None:
    assert missing_children(case.children) == case.want_missing


def phase(wall_s: float, writes: dict[RequestKey, int], cpu: float | None = 5.0) -> dict[str, Any]:
    return {
        "wall_s": wall_s,
        "writes": report.encode_writes(writes),
        "cpu_percent": cpu,
        "peak_rss_mib": 70.0,
    }


def results(*, davit_ready_s: float, idle_writes: int, restart_writes: int) -> dict[str, Any]:
    n = 100
    creates = {
        key("deployments", "APPLY"): n,
        key("services", "APPLY"): n,
        key("poddisruptionbudgets", "APPLY"): n,
        key("modeldeployments", "PATCH", "status"): 2 * n,
        key("modeldeployments", "POST"): n,  # the driver's: not the operator's
        key("events", "POST"): 3 * n,
        key("pods", "POST"): n,
    }
    davit = {
        "system": "davit",
        "n": n,
        "children_per_model": 3.0,
        "rss_idle_mib": 64.0,  # +41 KB per model
        "rss_restarted_mib": 64.0,
        "reaction_s": [0.1, 0.2, 0.3],
        "phases": {
            "create": phase(davit_ready_s, creates),
            "idle": phase(120, {key("modeldeployments", "PATCH", "status"): idle_writes}, 0.5),
            "change": phase(20, {key("deployments", "APPLY"): n}),
            "restart": phase(5, {key("services", "APPLY"): restart_writes}, None) | {"replan_s": 2},
            "delete": phase(10, {key("deployments", "DELETE"): n}),
        },
    }
    peer = {
        "system": "peer",
        "n": n,
        "phases": {
            "create": phase(10, {key("deployments", "POST"): n}, None),
            "idle": phase(120, {}, None),
            "change": phase(15, {key("deployments", "PUT"): n}, None),
            "delete": phase(8, {key("deployments", "DELETE"): n}, None),
        },
    }
    # The same children written directly: the cluster's share of the work as Davit's.
    alike = {
        "system": "peer-children",
        "n": n,
        "phases": {
            "create": phase(
                10.5, {key("deployments", "POST"): n, key("services", "POST"): n}, None
            ),
            "idle": phase(120, {}, None),
            "change": phase(15, {key("deployments", "PUT"): n}, None),
            "delete": phase(9, {key("deployments", "DELETE"): n}, None),
        },
    }
    return {
        "options": {"sizes": [n], "idle_s": 120, "cores": 2},
        "rss_empty_mib": 60.0,
        "runs": [davit, peer, alike],
    }


def verdicts(doc: dict[str, Any]) -> dict[str, bool]:
    return {t.description.split(" (N=")[0]: t.met for t in report.targets(doc)}


def test_targets_met_when_every_figure_is_inside_its_bound() -> None:
    doc = results(davit_ready_s=11.0, idle_writes=0, restart_writes=0)
    got = verdicts(doc)
    assert all(got.values()), got
    # 5 writes per created model: 3 applies + 2 status patches (the driver's POST and Events apart).
    [writes] = [t for t in report.targets(doc) if t.description.startswith("operator writes per")]
    assert writes.measured == "5.00"
    assert writes.required == "≤ children + 2 = 5"


def test_targets_missed_are_reported_as_missed() -> None:
    got = verdicts(results(davit_ready_s=13.0, idle_writes=9, restart_writes=100))
    assert got["time to all Ready, Davit / Deployment controller"] is False  # 1.3x
    assert got["time to all Ready, Davit / the same children written directly"] is False
    assert got["operator writes while idle"] is False
    assert got["operator writes when a restart re-plans N=100"] is False
    assert got["operator CPU while idle"] is True


def test_render_shows_targets_phases_and_per_object_writes() -> None:
    text = report.render(results(davit_ready_s=11.0, idle_writes=0, restart_writes=0))
    assert (
        "| time to all Ready, Davit / Deployment controller (N=100) | 1.10x | ≤ 1.2x | met |"
        in text
    )
    assert "| 100 | create burst → all Ready | 11.0 | 10.0 | 1.10 | 10.5 | 1.05 | 5.00 |" in text
    assert "Writes per object, Deployment + Service + PDB (N=100)" in text
    assert "APPLY deployments (operator)" in text
    assert "median 200 ms" in text
