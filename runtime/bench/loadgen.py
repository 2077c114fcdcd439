"""Load generators: wrk (HTTP, one thread, Lua script) and h2load (gRPC over HTTP/2).

Both are closed loop: `concurrency` connections each keep one request in flight. Both run under
a hard timeout of the point's duration plus a margin, so a stuck server cannot stall the run.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import Body
from bench.stats import LoadResult, grpc_load_result, parse_h2load_log, parse_h2load_summary
from bench.stats import parse_wrk as parse_wrk_output

LUA_SCRIPT = Path(__file__).resolve().parent / "lua" / "v2_infer.lua"
GRPC_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
TIMEOUT_MARGIN_S = 30.0


@dataclass(frozen=True)
class BodyFile:
    path: Path
    body: Body


def wrk_command(
    port: int, url_path: str, body: BodyFile, concurrency: int, duration_s: float
) -> list[str]:
    return [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        f"http://127.0.0.1:{port}{url_path}",
        "--",
        str(body.path),
        body.body.content_type,
        "" if body.body.header_length is None else str(body.body.header_length),
    ]


def run_wrk(
    port: int, url_path: str, body: BodyFile, concurrency: int, duration_s: float
) -> LoadResult:
    completed = subprocess.run(
        wrk_command(port, url_path, body, concurrency, duration_s),
        capture_output=True,
        text=True,
        timeout=duration_s + TIMEOUT_MARGIN_S,
        check=False,
    )
    return parse_wrk_output(completed.stdout + completed.stderr)


def h2load_command(
    port: int, body: BodyFile, concurrency: int, duration_s: float, log_file: Path
) -> list[str]:
    return [
        "h2load",
        "-t1",
        f"-c{concurrency}",
        "-m1",
        "-D",
        str(max(1, round(duration_s))),
        "-d",
        str(body.path),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"--log-file={log_file}",
        f"http://127.0.0.1:{port}{GRPC_INFER_PATH}",
    ]


def run_h2load(
    port: int,
    body: BodyFile,
    concurrency: int,
    duration_s: float,
    ok_response_bytes: int,
    log_file: Path,
) -> LoadResult:
    log_file.unlink(missing_ok=True)
    completed = subprocess.run(
        h2load_command(port, body, concurrency, duration_s, log_file),
        capture_output=True,
        text=True,
        timeout=duration_s + TIMEOUT_MARGIN_S,
        check=False,
    )
    output = completed.stdout + completed.stderr
    log_file.with_suffix(".out").write_text(output)  # kept for debugging the last point
    summary = parse_h2load_summary(output)
    with log_file.open() as lines:
        latencies = parse_h2load_log(lines)
    return grpc_load_result(summary, latencies, ok_response_bytes)
