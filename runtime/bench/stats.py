"""Pure parsing and arithmetic for the benchmark (no processes, no I/O): unit-tested."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    """What one load-generator run measured."""

    requests: int  # completed successfully
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


WRK_MARKER = "DAVIT-BENCH-RESULT "


def parse_wrk(stdout: str) -> LoadResult:
    """Read the JSON line our Lua `done()` prints (see lua/v2_infer.lua)."""
    for line in stdout.splitlines():
        if line.startswith(WRK_MARKER):
            doc = json.loads(line[len(WRK_MARKER) :])
            errors = sum(int(doc[key]) for key in ("connect", "read", "write", "status", "timeout"))
            completed = int(doc["requests"])
            return LoadResult(
                requests=max(0, completed - int(doc["status"])),
                errors=errors,
                duration_s=int(doc["duration_us"]) / 1e6,
                p50_ms=float(doc["p50_us"]) / 1e3,
                p99_ms=float(doc["p99_us"]) / 1e3,
            )
    raise ValueError(f"no {WRK_MARKER.strip()} line in wrk output:\n{stdout[-2000:]}")


_H2_FINISHED = re.compile(r"finished in ([0-9.]+)(us|ms|s),")
_H2_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_H2_TRAFFIC = re.compile(r"\((\d+)\) data")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class H2Summary:
    duration_s: float
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    data_bytes: int


def parse_h2load_summary(stdout: str) -> H2Summary:
    finished = _H2_FINISHED.search(stdout)
    requests = _H2_REQUESTS.search(stdout)
    traffic = _H2_TRAFFIC.search(stdout)
    if finished is None or requests is None or traffic is None:
        raise ValueError(f"unexpected h2load output:\n{stdout[-2000:]}")
    return H2Summary(
        duration_s=float(finished.group(1)) * _UNIT_S[finished.group(2)],
        done=int(requests.group(3)),
        succeeded=int(requests.group(4)),
        failed=int(requests.group(5)),
        errored=int(requests.group(6)),
        timeout=int(requests.group(7)),
        data_bytes=int(traffic.group(1)),
    )


def parse_h2load_log(lines: Iterable[str]) -> list[float]:
    """Per-request latencies (ms) from `h2load --log-file`: start_us, status, elapsed_us."""
    latencies: list[float] = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            latencies.append(int(fields[2]) / 1e3)
    return latencies


def grpc_load_result(
    summary: H2Summary, latencies_ms: Sequence[float], ok_response_bytes: int
) -> LoadResult:
    """gRPC errors travel in trailers with HTTP 200, which h2load counts as success. A failed
    ModelInfer has no DATA frame, so successes are counted from the response bytes received."""
    by_bytes = summary.data_bytes // ok_response_bytes if ok_response_bytes > 0 else summary.done
    ok = min(summary.succeeded, by_bytes)
    errors = summary.done - ok + summary.errored + summary.timeout
    ordered = sorted(latencies_ms)
    return LoadResult(
        requests=ok,
        errors=errors,
        duration_s=summary.duration_s,
        p50_ms=percentile(ordered, 50),
        p99_ms=percentile(ordered, 99),
    )


def frame_grpc_message(message: bytes) -> bytes:
    """gRPC length-prefixed message: 1 byte compressed flag (0), 4 bytes big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_total(text: str, name: str, label_filter: dict[str, str] | None = None) -> float:
    """Sum of every sample called `name` in a Prometheus text exposition whose labels contain
    `label_filter` (NaN when there is none)."""
    total = 0.0
    seen = False
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        labels = match.group(2) or ""
        if label_filter and not all(f'{k}="{v}"' in labels for k, v in label_filter.items()):
            continue
        total += float(match.group(3))
        seen = True
    return total if seen else math.nan


def mean_from_deltas(
    sum_before: float, count_before: float, sum_after: float, count_after: float
) -> float:
    """Mean of a histogram (or of samples/batches counters) over an interval."""
    count = count_after - count_before
    if not count > 0:
        return math.nan
    return (sum_after - sum_before) / count


@dataclass(frozen=True)
class TargetCheck:
    description: str
    measured: float
    required: float
    met: bool


def check_targets(
    davit_rps_c32: float,
    best_peer_rps_c32: float,
    raw_samples_per_s_b32: float,
    davit_p50_c1_ms: float,
    raw_p50_b1_ms: float,
) -> list[TargetCheck]:
    """The issue's targets, same run, same model."""
    peer_ratio = davit_rps_c32 / best_peer_rps_c32 if best_peer_rps_c32 > 0 else math.inf
    raw_ratio = davit_rps_c32 / raw_samples_per_s_b32 if raw_samples_per_s_b32 > 0 else 0.0
    p50_gap = davit_p50_c1_ms - raw_p50_b1_ms
    return [
        TargetCheck("c=32 throughput vs best peer (x)", peer_ratio, 3.0, peer_ratio >= 3.0),
        TargetCheck("c=32 throughput vs raw torch batch 32 (x)", raw_ratio, 0.5, raw_ratio >= 0.5),
        TargetCheck("c=1 p50 minus raw batch-1 forward p50 (ms)", p50_gap, 0.5, p50_gap <= 0.5),
    ]
