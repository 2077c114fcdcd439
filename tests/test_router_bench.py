"""bench-router's pure parts: the peers' configurations, the table and the targets."""

from __future__ import annotations

from pathlib import Path

from bench.router_bench import (
    Point,
    Report,
    haproxy_config,
    markdown,
    nginx_config,
    router_config,
    table,
    targets,
)

from davit_router.config import parse


def test_both_peers_split_the_same_two_backends_90_10() -> None:
    haproxy = haproxy_config(8000, [9001, 9002], [90, 10])
    assert "server s0 127.0.0.1:9001 weight 90" in haproxy
    assert "server s1 127.0.0.1:9002 weight 10" in haproxy
    assert "bind 127.0.0.1:8000" in haproxy
    assert "nbthread 1" in haproxy  # one core, as the router
    assert "retry-on conn-failure 503" in haproxy  # the router's retry rule
    # A runtime answers its health on the protocol's path (nginx on any).
    assert "option httpchk GET /\n" in haproxy
    runtimes = haproxy_config(8000, [9001, 9002], [90, 10], health_path="/v2/health/ready")
    assert "option httpchk GET /v2/health/ready\n" in runtimes
    config = parse(router_config([9001, 9002], [90, 10]))  # the router accepts it
    assert [(r.weight, r.endpoints) for r in config.revisions] == [
        (90, ("127.0.0.1:9001",)),
        (10, ("127.0.0.1:9002",)),
    ]


def test_the_backends_answer_every_request_on_both_ports() -> None:
    text = nginx_config(Path("/w"), [9001, 9002])
    assert text.count("return 200") == 2
    assert "listen 127.0.0.1:9001" in text
    assert "listen 127.0.0.1:9002" in text
    assert "worker_processes 1;" in text


REPORT = Report(
    points=[
        Point("direct", 1, 20_000, 0.050, 0.100, 0),
        Point("haproxy", 1, 15_000, 0.070, 0.140, 0),
        Point("davit-router", 1, 5_000, 0.250, 0.500, 0),
        Point("haproxy", 32, 40_000, 0.800, 1.500, 0),
        Point("davit-router", 32, 8_000, 4.000, 6.000, 0),
    ],
    router_rss_mib=40.0,
    haproxy_rss_mib=10.0,
    duration_s=10,
    cpus=2,
)


def test_the_targets_read_the_same_run() -> None:
    found = {t.name: (t.measured, t.met) for t in targets(REPORT)}
    assert found["added p50 at c=1"] == ("0.200 ms", True)  # 0.25 - 0.05
    assert found["router throughput, one core, 1x512 FP32 binary"] == ("8,000 rps", False)
    assert found["router / HAProxy, best rps"] == ("0.20x", False)  # 8,000 / 40,000


def test_the_table_gives_ratios_to_haproxy_and_latency_added_over_direct() -> None:
    rows = table(REPORT.points).splitlines()
    assert "| 1 | davit-router | 5,000 | 0.250 | 0.500 | 0.200 | 0.33x |" in rows
    assert "| 32 | davit-router | 8,000 | 4.000 | 6.000 |  | 0.20x |" in rows
    assert "**missed**" in markdown(REPORT)


def test_the_runtimes_run_has_its_own_section_when_measured() -> None:
    assert "In front of real runtimes" not in markdown(REPORT)
    measured = Report(**{**REPORT.__dict__, "runtime_points": [
        Point("direct", 1, 3_000, 0.300, 0.500, 0),
        Point("davit-router", 1, 2_000, 0.500, 0.800, 0),
    ]})  # fmt: skip
    section = markdown(measured).split("## In front of real runtimes", 1)[1]
    assert "| 1 | davit-router | 2,000 | 0.500 | 0.800 | 0.200 |" in section
