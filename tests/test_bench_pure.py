"""The benchmark's pure parts: load-generator parsing, metrics arithmetic, targets, report."""

from __future__ import annotations

import math
from typing import Any

import pytest
from bench import perfanalyzer, report, venvs
from bench.stats import (
    H2Summary,
    LoadResult,
    check_targets,
    frame_grpc_message,
    grpc_load_result,
    mean_from_deltas,
    metric_total,
    parse_h2load_log,
    parse_h2load_summary,
    parse_wrk,
    percentile,
)

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8000/v2/models/mlp/infer
  1 threads and 32 connections
DAVIT-BENCH-RESULT {"requests":41000,"duration_us":10000000,"connect":0,"read":1,"write":0,"status":5,"timeout":2,"p50_us":7550,"p99_us":10410}
"""  # noqa: E501

H2LOAD_OUTPUT = """starting benchmark...
finished in 2.00s, 2270.50 req/s, 5.12MB/s
requests: 4541 total, 4573 started, 4541 done, 4541 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 4541 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 10.24MB (10737418) total, 45.41KB (46500) headers (space savings 93.02%), 9.47MB (9466000) data
"""  # noqa: E501


def test_parse_wrk_counts_status_errors_as_failures() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result == LoadResult(
        requests=40995, errors=8, duration_s=10.0, p50_ms=7.55, p99_ms=10.41
    )
    assert result.rps == pytest.approx(4099.5)


def test_parse_wrk_without_result_line_raises() -> None:
    with pytest.raises(ValueError, match="DAVIT-BENCH-RESULT"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_parse_h2load_summary() -> None:
    assert parse_h2load_summary(H2LOAD_OUTPUT) == H2Summary(
        duration_s=2.0,
        done=4541,
        succeeded=4541,
        failed=0,
        errored=0,
        timeout=0,
        data_bytes=9466000,
    )


@pytest.mark.parametrize(
    ("data_bytes", "want_ok", "want_errors"),
    [
        (4541 * 2085, 4541, 0),  # every response carried its message
        (4000 * 2085, 4000, 541),  # 541 trailers-only responses: gRPC errors behind HTTP 200
        (0, 0, 4541),
    ],
)
def test_grpc_load_result_counts_errors_from_missing_data(
    data_bytes: int, want_ok: int, want_errors: int
) -> None:
    summary = H2Summary(2.0, 4541, 4541, 0, 0, 0, data_bytes)
    result = grpc_load_result(summary, [1.0, 2.0, 3.0, 4.0], ok_response_bytes=2085)
    assert (result.requests, result.errors) == (want_ok, want_errors)
    assert (result.p50_ms, result.p99_ms) == (2.0, 4.0)


def test_parse_h2load_log_reads_elapsed_microseconds() -> None:
    lines = ["1700000000000000\t200\t1500\n", "1700000000001000\t200\t2500\n", "\n"]
    assert parse_h2load_log(lines) == [1.5, 2.5]


@pytest.mark.parametrize(
    ("values", "pct", "want"),
    [([1.0, 2.0, 3.0, 4.0], 50, 2.0), ([1.0, 2.0, 3.0, 4.0], 99, 4.0), ([5.0], 1, 5.0)],
)
def test_percentile_nearest_rank(values: list[float], pct: float, want: float) -> None:
    assert percentile(values, pct) == want


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_frame_grpc_message() -> None:
    assert frame_grpc_message(b"abc") == b"\x00\x00\x00\x00\x03abc"


METRICS = """# HELP davit_batch_size Samples per executed batch
# TYPE davit_batch_size histogram
davit_batch_size_bucket{le="1.0",model="mlp"} 10.0
davit_batch_size_sum{model="mlp"} 640.0
davit_batch_size_count{model="mlp"} 20.0
davit_batch_size_sum{model="cnn"} 7.0
davit_batch_size_count{model="cnn"} 7.0
"""


@pytest.mark.parametrize(
    ("name", "labels", "want"),
    [
        ("davit_batch_size_sum", {"model": "mlp"}, 640.0),
        ("davit_batch_size_count", {"model": "cnn"}, 7.0),
        ("davit_batch_size_count", None, 27.0),
    ],
)
def test_metric_total(name: str, labels: dict[str, str] | None, want: float) -> None:
    assert metric_total(METRICS, name, labels) == want


def test_metric_total_missing_is_nan() -> None:
    assert math.isnan(metric_total(METRICS, "davit_batch_size_sum", {"model": "linear"}))


@pytest.mark.parametrize(
    ("before", "after", "want"),
    [((100.0, 10.0), (740.0, 30.0), 32.0), ((5.0, 5.0), (5.0, 5.0), math.nan)],
)
def test_mean_from_deltas(
    before: tuple[float, float], after: tuple[float, float], want: float
) -> None:
    got = mean_from_deltas(before[0], before[1], after[0], after[1])
    assert got == want or (math.isnan(got) and math.isnan(want))


@pytest.mark.parametrize(
    ("davit32", "peer32", "raw32", "davit_p50", "raw_p50", "want_met"),
    [
        (3000.0, 800.0, 5000.0, 1.5, 1.2, [True, True, True]),
        (2000.0, 800.0, 5000.0, 1.8, 1.2, [False, False, False]),
        (2400.0, 800.0, 4800.0, 1.7, 1.2, [True, True, True]),  # boundaries are inclusive
    ],
)
def test_check_targets(
    davit32: float,
    peer32: float,
    raw32: float,
    davit_p50: float,
    raw_p50: float,
    want_met: list[bool],
) -> None:
    checks = check_targets(davit32, peer32, raw32, davit_p50, raw_p50)
    assert [c.met for c in checks] == want_met


def test_perf_analyzer_csv() -> None:
    text = (
        "Concurrency,Inferences/Second,Client Send,Client Recv,p50 latency,p90 latency,"
        "p95 latency,p99 latency\n1,534.062,3,1,1813,1998,2124,2854\n"
    )
    (point,) = perfanalyzer.parse_csv(text, "grpc")
    assert point == perfanalyzer.PerfAnalyzerPoint("grpc", 1, 534.062, 1.813, 2.854)


def test_peer_venvs_pin_torch_to_the_public_version() -> None:
    specs = venvs.peer_specs("2.15.0+cu132")
    assert "torch==2.15.0" in specs["kserve"].requirements
    assert "uvloop==0.21.0" in specs["mlserver"].requirements
    assert any(r.startswith("tritonclient") for r in specs["perf_analyzer"].requirements)
    assert venvs.marker_text(specs["kserve"]) == "kserve==0.21.0\ntorch==2.15.0\n"


def _point(server: str, transport: str, c: int, rps: float, p50: float) -> dict[str, Any]:
    return {
        "server": server,
        "transport": transport,
        "model": "mlp",
        "concurrency": c,
        "requests": int(rps * 10),
        "errors": 0,
        "duration_s": 10.0,
        "p50_ms": p50,
        "p99_ms": p50 * 2,
        "rps": rps,
        "cpu_percent": 100.0,
        "peak_rss_mb": 500.0,
        "mean_batch": 1.0 if c == 1 else 30.0,
    }


def _results(points: list[dict[str, Any]]) -> dict[str, Any]:
    raw = [
        {"model": "mlp", "threads": 1, "batch": b, "samples_per_s": s, "p50_ms": p, "p99_ms": p}
        for b, s, p in ((1, 1000.0, 1.0), (8, 2800.0, 2.8), (32, 7000.0, 4.5), (64, 9000.0, 7.0))
    ]
    return {
        "command": "runtime/bench/run.py",
        "started": "now",
        "wall_s": 1.0,
        "options": {
            "torch_threads": "1",
            "max_batch_size": "64",
            "max_queue_delay_ms": "2.0",
            "duration_s": "10.0",
        },
        "machine": {"cores": "2"},
        "versions": {"torch": "2.15.0"},
        "raw": raw,
        "points": points,
        "checks": [{"server": "davit", "transport": "grpc", "model": "mlp", "ok": True}],
        "perf_analyzer": [],
    }


def test_report_states_targets_with_the_compared_points() -> None:
    text = report.render(
        _results(
            [
                _point("davit", "http-binary", 1, 800.0, 1.3),
                _point("davit", "http-binary", 32, 4000.0, 7.0),
                _point("triton", "grpc", 32, 1000.0, 30.0),
            ]
        )
    )
    assert "| c=32 throughput vs best peer (x) | 4.00 | ≥ 3.00 | yes |" in text
    assert "| c=32 throughput vs raw torch batch 32 (x) | 0.57 | ≥ 0.50 | yes |" in text
    assert "| c=1 p50 minus raw batch-1 forward p50 (ms) | 0.30 | ≤ 0.50 | yes |" in text
    assert "Best peer at c=32: Triton via PyTriton (grpc), 1,000 rps." in text


def test_report_without_peers_does_not_claim_the_peer_target() -> None:
    text = report.render(
        _results(
            [
                _point("davit", "grpc", 1, 800.0, 1.3),
                _point("davit", "grpc", 32, 4000.0, 7.0),
            ]
        )
    )
    assert "best peer (x)" not in text
    assert "No peer was measured at c=32" in text
