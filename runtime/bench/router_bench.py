"""`make bench-router`: davit-router against HAProxy in front of the same fast static backends.

Everything on 127.0.0.1, in one run, side by side:
- backends: one nginx worker answering every request with a fixed small JSON body on two ports
  (nginx answers far faster than either proxy forwards, so the proxy is what is measured);
- peers: davit-router (two revisions, 90/10, one endpoint each) and HAProxy (the same two
  servers weighted 90/10, least-connections, kept-alive upstream connections, retries on
  connect failures and 503, passive health with `observe layer7`), each pinned to CPU 1;
- load: `wrk -t1` pinned to CPU 0 (with nginx) replaying a KServe v2 binary request of one
  1x512 FP32 tensor, closed loop at each concurrency;
- direct: the same load straight at a backend, the floor the proxies' added latency is read
  against;
- then the same three in front of two real `davit-runtime` processes (one per revision, a
  512x512 linear model, dynamic batching, on CPU 0 with wrk): what the router costs a model
  server that does real work.

Pure parts (configurations, the table, the targets) are unit-tested in tests/test_router_bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.apt import ensure_packages
from bench.loadgen import BodyFile, run_wrk
from bench.payloads import WireTensor, binary_body, write_body
from bench.stats import LoadResult

RESULTS = Path(__file__).resolve().parent / "results" / "router"
WORK = Path(__file__).resolve().parents[2] / ".run" / "bench-router"  # configs, logs, the body
APT_PACKAGES = {"wrk": "wrk", "haproxy": "haproxy", "nginx": "nginx-light"}
CONCURRENCY = (1, 32, 128)
RUNTIME_CONCURRENCY = (1, 32)
WEIGHTS = (90, 10)
URL_PATH = "/v2/models/bench/infer"
ANSWER = '{"model_name":"bench","model_version":"1","outputs":[]}'
PROXY_CPU, LOAD_CPU = "1", "0"


def log(message: str) -> None:
    print(f"[bench-router {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_config(work: Path, ports: Sequence[int]) -> str:
    """One worker, no logging, every request answered 200 with ANSWER on each port."""
    servers = "\n".join(
        f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 100000000;
        location / {{
            default_type application/json;
            return 200 '{ANSWER}';
        }}
    }}"""
        for port in ports
    )
    return f"""worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
{servers}
}}
"""


def haproxy_config(
    port: int, backends: Sequence[int], weights: Sequence[int], health_path: str = "/"
) -> str:
    """HAProxy doing what davit-router does for this load: a weighted split, least
    connections, upstream keep-alive, retries on connect failures and 503 only, and passive
    health (consecutive layer-7 errors mark a server down), in one thread."""
    servers = "\n".join(
        f"    server s{n} 127.0.0.1:{backend} weight {weight} check inter 2s "
        "observe layer7 error-limit 5 on-error mark-down"
        for n, (backend, weight) in enumerate(zip(backends, weights, strict=True))
    )
    return f"""global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    retries 2
    retry-on conn-failure 503
    option redispatch
    http-reuse always
frontend bench
    bind 127.0.0.1:{port}
    default_backend models
backend models
    balance leastconn
    option httpchk GET {health_path}
{servers}
"""


def router_config(backends: Sequence[int], weights: Sequence[int]) -> dict[str, object]:
    return {
        "model": "bench",
        "revisions": [
            {"name": f"rev{n}", "weight": weight, "endpoints": [f"127.0.0.1:{backend}"]}
            for n, (backend, weight) in enumerate(zip(backends, weights, strict=True))
        ],
    }


@dataclass(frozen=True)
class Point:
    target: str  # direct | davit-router | haproxy
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Report:
    points: list[Point]  # in front of the static backends: what the targets read
    router_rss_mib: float
    haproxy_rss_mib: float
    duration_s: float
    cpus: int
    runtime_points: list[Point] = field(default_factory=list)  # in front of real runtimes


def point(points: Sequence[Point], target: str, concurrency: int) -> Point | None:
    return next((p for p in points if p.target == target and p.concurrency == concurrency), None)


def table(points: Sequence[Point]) -> str:
    """Points as markdown: throughput and latency per concurrency, ratios to HAProxy, latency
    added over direct."""
    rows = [
        "| concurrency | target | rps | p50 ms | p99 ms | added p50 ms | rps / HAProxy |",
        "|---|---|---|---|---|---|---|",
    ]
    for concurrency in sorted({p.concurrency for p in points}):
        direct = point(points, "direct", concurrency)
        haproxy = point(points, "haproxy", concurrency)
        for target in ("direct", "haproxy", "davit-router"):
            found = point(points, target, concurrency)
            if found is None:
                continue
            added = f"{found.p50_ms - direct.p50_ms:.3f}" if direct and target != "direct" else ""
            ratio = f"{found.rps / haproxy.rps:.2f}x" if haproxy and haproxy.rps else ""
            rows.append(
                f"| {concurrency} | {target} | {found.rps:,.0f} | {found.p50_ms:.3f} | "
                f"{found.p99_ms:.3f} | {added} | {ratio if target != 'direct' else ''} |"
            )
    return "\n".join(rows)


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    required: str
    met: bool


def targets(report: Report) -> list[Target]:
    """The issue's targets, as measured in this run."""
    found: list[Target] = []
    router1, direct1 = point(report.points, "davit-router", 1), point(report.points, "direct", 1)
    if router1 and direct1:
        added = router1.p50_ms - direct1.p50_ms
        found.append(Target("added p50 at c=1", f"{added:.3f} ms", "<= 0.2 ms", added <= 0.2))
    best = max((p.rps for p in report.points if p.target == "davit-router"), default=0.0)
    found.append(
        Target("router throughput, one core, 1x512 FP32 binary", f"{best:,.0f} rps",
               ">= 10,000 rps", best >= 10_000)
    )  # fmt: skip
    haproxy_best = max((p.rps for p in report.points if p.target == "haproxy"), default=0.0)
    if haproxy_best:
        ratio = best / haproxy_best
        found.append(Target("router / HAProxy, best rps", f"{ratio:.2f}x", ">= 0.5x", ratio >= 0.5))
    return found


def markdown(report: Report) -> str:
    goals = "\n".join(
        f"| {t.name} | {t.measured} | {t.required} | {'met' if t.met else '**missed**'} |"
        for t in targets(report)
    )
    return f"""# Router benchmark: davit-router vs HAProxy

`make bench-router` ({report.cpus} CPUs; each proxy pinned to CPU {PROXY_CPU}, wrk and the
nginx backends to CPU {LOAD_CPU}; {report.duration_s:.0f} s per point; all in one run). The
request is a KServe v2 binary inference request of one 1x512 FP32 tensor; the backends answer a
fixed small JSON body, so the proxies are what is measured. Method: `runtime/bench/router_bench.py`.

## Targets

| target | measured | required | |
|---|---|---|---|
{goals}

## Points

{table(report.points)}

RSS after the run: davit-router {report.router_rss_mib:.1f} MiB, HAProxy
{report.haproxy_rss_mib:.1f} MiB.
{runtimes_section(report)}"""


def runtimes_section(report: Report) -> str:
    if not report.runtime_points:
        return ""
    return f"""
## In front of real runtimes

The same request and proxies in front of two `davit-runtime` processes (one per revision, 90/10;
a 512x512 linear model with dynamic batching, one torch thread each, both on CPU {LOAD_CPU} with
wrk, the proxy alone on CPU {PROXY_CPU}). Direct is one runtime with wrk; through a proxy, two
runtimes and wrk share that core, so neither proxy reaches direct's figure: what compares is
the two proxies, side by side.

{table(report.runtime_points)}
"""


def plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({p.concurrency for p in report.points})
    names = ("direct", "haproxy", "davit-router")
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(names)
    for n, name in enumerate(names):
        values = [(point(report.points, name, c) or Point(name, c, 0, 0, 0, 0)).rps for c in levels]
        ax.bar([i + n * width for i in range(len(levels))], values, width, label=name)
    ax.set_xticks([i + width for i in range(len(levels))], [f"c={c}" for c in levels])
    ax.set_ylabel("requests per second")
    ax.set_title("1x512 FP32 binary inference requests through each proxy (one core)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---- processes ------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in APT_PACKAGES.items() if shutil.which(tool) is None]
    ensure_packages(missing, log, recommends=False)


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within 30 s")


@contextmanager
def started(command: list[str], port: int, what: str, log_path: Path) -> Iterator[int]:
    """Run `command` until the block ends; yields its pid once `port` answers."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, what)
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_mib(pid: int) -> float:
    import psutil  # the bench extra's; the pure parts above are tested without it

    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


def measure(
    name: str, port: int, body: BodyFile, duration_s: float,
    levels: Sequence[int] = CONCURRENCY, shown: str = "",
) -> list[Point]:  # fmt: skip
    points = []
    for concurrency in levels:
        result: LoadResult = run_wrk_pinned(port, body, concurrency, duration_s)
        log(f"{shown}{name} c={concurrency}: {result.rps:,.0f} rps, p50 {result.p50_ms:.3f} ms, "
            f"p99 {result.p99_ms:.3f} ms, {result.errors} errors")  # fmt: skip
        points.append(
            Point(name, concurrency, result.rps, result.p50_ms, result.p99_ms, result.errors)
        )
    return points


def run_wrk_pinned(port: int, body: BodyFile, concurrency: int, duration_s: float) -> LoadResult:
    # wrk shares CPU 0 with the backends; the proxy has CPU 1 to itself.
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    try:
        return run_wrk(port, URL_PATH, body, concurrency, duration_s)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def run(duration_s: float, work: Path, router_args: Sequence[str] = ()) -> Report:
    ensure_tools()
    work.mkdir(parents=True, exist_ok=True)
    inputs = np.linspace(-1, 1, 512, dtype=np.float32).reshape(1, 512)
    body = binary_body(WireTensor("input", "FP32"), "output", inputs)
    body_file = BodyFile(write_body(body, work / "body.bin"), body)
    backends = [free_port(), free_port()]
    (work / "nginx-body").mkdir(exist_ok=True)
    (work / "nginx.conf").write_text(nginx_config(work, backends))
    nginx = ["taskset", "-c", LOAD_CPU, "nginx", "-c", str(work / "nginx.conf"), "-p", str(work)]
    points: list[Point] = []
    with started(nginx, backends[-1], "nginx", work / "nginx.log"):
        points += measure("direct", backends[0], body_file, duration_s)
        (haproxy, haproxy_port), (router, router_port) = proxies(backends, work, router_args)
        with started(haproxy, haproxy_port, "haproxy", work / "haproxy.log") as pid:
            points += measure("haproxy", haproxy_port, body_file, duration_s)
            haproxy_rss = rss_mib(pid)
        with started(router, router_port, "davit-router", work / "router.log") as pid:
            points += measure("davit-router", router_port, body_file, duration_s)
            router_rss = rss_mib(pid)
    runtime_points = measure_runtimes(duration_s, work, body_file, router_args)
    return Report(points, router_rss, haproxy_rss, duration_s, os.cpu_count() or 1, runtime_points)


def proxies(
    backends: Sequence[int], work: Path, router_args: Sequence[str], health_path: str = "/"
) -> tuple[tuple[list[str], int], tuple[list[str], int]]:
    """HAProxy's and davit-router's commands (pinned to the proxy CPU) in front of
    `backends`, 90/10, with the ports they listen on; their configurations written to `work`.
    HAProxy checks `health_path` on each backend."""
    haproxy_port = free_port()
    config = haproxy_config(haproxy_port, backends, WEIGHTS, health_path)
    (work / "haproxy.cfg").write_text(config)
    haproxy = ["taskset", "-c", PROXY_CPU, "haproxy", "-f", str(work / "haproxy.cfg")]
    router_port, admin_port = free_port(), free_port()
    (work / "router.json").write_text(json.dumps(router_config(backends, WEIGHTS)))
    router = [
        "taskset", "-c", PROXY_CPU, sys.executable, "-m", "davit_router", "serve",
        "--config", str(work / "router.json"), "--host", "127.0.0.1",
        "--port", str(router_port), "--admin-port", str(admin_port), "--grpc-port", "-1",
        "--log-level", "WARNING", "--drain-seconds", "0", *router_args,
    ]  # fmt: skip
    return (haproxy, haproxy_port), (router, router_port)


def pin_threads(pid: int, cpu: int) -> None:
    """Every thread of `pid` onto `cpu` (sched_setaffinity on a pid moves its main thread only;
    the runtime's batcher and torch threads exist already)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def measure_runtimes(
    duration_s: float, work: Path, body: BodyFile, router_args: Sequence[str]
) -> list[Point]:
    # torch only here: the pure parts above are imported by the unit tests.
    from davit_runtime.testing import launch_server, write_model_repository

    folder = work / "runtimes"
    folder.mkdir(parents=True, exist_ok=True)
    repository = folder / "models"
    write_model_repository(repository, "bench", "linear", max_batch_size=8, max_queue_delay_ms=1)
    log("starting two davit-runtime processes")
    servers = [launch_server(repository, folder / f"runtime-{n}.log") for n in range(2)]
    try:
        for server in servers:
            pin_threads(server.process.pid, int(LOAD_CPU))
        backends = [int(server.http.rsplit(":", 1)[1]) for server in servers]
        points = measure("direct", backends[0], body, duration_s, RUNTIME_CONCURRENCY, "runtime ")
        (haproxy, haproxy_port), (router, router_port) = proxies(
            backends, folder, router_args, health_path="/v2/health/ready"
        )
        with started(haproxy, haproxy_port, "haproxy", folder / "haproxy.log"):
            points += measure("haproxy", haproxy_port, body, duration_s, RUNTIME_CONCURRENCY,
                              "runtimes ")  # fmt: skip
        with started(router, router_port, "davit-router", folder / "router.log"):
            points += measure("davit-router", router_port, body, duration_s,
                              RUNTIME_CONCURRENCY, "runtimes ")  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    return points


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench-router", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--router-arg",
        action="append",
        default=[],
        help="one more davit-router flag (repeatable), e.g. --router-arg=--no-uvloop",
    )
    args = parser.parse_args(argv)
    report = run(args.duration, WORK, args.router_arg)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(report))
    plot(report, args.out / "results.png")
    log(f"wrote {args.out}/results.md, results.json, results.png")
    for target in targets(report):
        log(f"{target.name}: {target.measured} (required {target.required})")
    return 0
