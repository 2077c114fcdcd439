"""Benchmark orchestration: setup outside the namespace, measurement inside it, then the report.

Phases:
1. setup (needs the package registries): system tools, peer venvs, the model repository;
2. measurement, re-executed inside `unshare -n` so every server and load generator shares a
   private loopback-only network: model by model, raw torch, then each server alone on the
   machine, each transport checked for correctness against local torch before its points;
3. report: results.json, results.md and throughput.png under the results directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench import models, payloads, report
from bench.apt import ensure_packages
from bench.loadgen import BodyFile, run_h2load, run_wrk
from bench.perfanalyzer import run as run_perf_analyzer
from bench.procmon import TreeMonitor
from bench.servers import PEERS, RunningServer, start_davit, start_peer
from bench.stats import LoadResult, mean_from_deltas
from bench.venvs import ensure_venv, installed_version, peer_specs

BENCH_DIR = Path(__file__).resolve().parent
IN_NETNS_ENV = "DAVIT_BENCH_IN_NETNS"
APT_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client"}
LIBB64 = ("libb64.so.0d", "libb64-0d")
# perf_analyzer cross-checks Davit. (Not PyTriton's Triton: it guards the statistics API that
# perf_analyzer reads behind an access token it generates internally.)
PERF_ANALYZER_TARGETS = ("davit",)


@dataclass(frozen=True)
class Options:
    quick: bool
    duration_s: float
    concurrency: tuple[int, ...]
    servers: tuple[str, ...]
    models: tuple[str, ...]
    peer_models: tuple[str, ...]
    torch_threads: int
    raw_threads: tuple[int, ...]
    max_batch_size: int
    max_queue_delay_ms: float
    instance_count: int
    perf_analyzer: bool
    work_dir: Path
    results_dir: Path
    use_netns: bool


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in _csv(text))


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="runtime/bench/run.py",
        description="Davit runtime benchmark: raw torch, Triton (PyTriton), KServe, MLServer.",
    )
    parser.add_argument("--quick", action="store_true", help="3 s points, c=1,32, Davit+Triton")
    parser.add_argument("--duration", type=float, help="seconds per load point (default 10)")
    parser.add_argument("--concurrency", type=_ints, help="default 1,8,32,64")
    parser.add_argument(
        "--servers", type=_csv, help="davit,triton,kserve,mlserver (default: all of them)"
    )
    parser.add_argument("--models", type=_csv, help="models Davit serves (default mlp,linear,cnn)")
    parser.add_argument("--peer-models", type=_csv, help="models the peers serve (default mlp)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per server")
    parser.add_argument("--raw-threads", type=_ints, help="raw torch thread counts (default 1,2)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    parser.add_argument(
        "--instance-count", type=int, default=1, help="Davit model instances (executor threads)"
    )
    parser.add_argument("--no-perf-analyzer", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / ".work")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--no-netns", action="store_true", help="skip the private network namespace (not root)"
    )
    ns = parser.parse_args(argv)
    quick = bool(ns.quick)
    return Options(
        quick=quick,
        duration_s=ns.duration or (3.0 if quick else 10.0),
        concurrency=ns.concurrency or ((1, 32) if quick else (1, 8, 32, 64)),
        servers=ns.servers or (("davit", "triton") if quick else ("davit", *PEERS)),
        models=ns.models or (("mlp",) if quick else ("mlp", "linear", "cnn")),
        peer_models=ns.peer_models or ("mlp",),
        torch_threads=ns.torch_threads,
        raw_threads=ns.raw_threads or ((ns.torch_threads,) if quick else (1, 2)),
        max_batch_size=ns.max_batch_size,
        max_queue_delay_ms=ns.max_queue_delay_ms,
        instance_count=ns.instance_count,
        perf_analyzer=not ns.no_perf_analyzer,
        work_dir=ns.work_dir.resolve(),
        results_dir=ns.results_dir.resolve(),
        use_netns=not ns.no_netns,
    )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- setup phase


def has_library(soname: str) -> bool:
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False)
    return soname in listing.stdout


def missing_apt_packages(need_perf_analyzer: bool) -> list[str]:
    missing = [pkg for tool, pkg in APT_PACKAGES.items() if shutil.which(tool) is None]
    if need_perf_analyzer and not has_library(LIBB64[0]):
        missing.append(LIBB64[1])
    if shutil.which("unshare") is None:
        missing.append("util-linux")
    return missing


def ensure_system_tools(need_perf_analyzer: bool) -> None:
    """Installs the Debian packages when running as root; otherwise says what to run."""
    ensure_packages(missing_apt_packages(need_perf_analyzer), log)


def setup(options: Options) -> None:
    wants_perf_analyzer = options.perf_analyzer and any(
        name in PERF_ANALYZER_TARGETS for name in options.servers
    )
    ensure_system_tools(wants_perf_analyzer)
    specs = peer_specs(installed_version("torch"))
    wanted = [PEERS[name].venv for name in options.servers if name in PEERS]
    if wants_perf_analyzer:
        wanted.append("perf_analyzer")
    for name in wanted:
        log(f"venv {name} (reused when up to date)")
        ensure_venv(options.work_dir, specs[name], options.work_dir / "logs" / f"venv-{name}.log")
    repo = options.work_dir / "repository"
    if repo.exists():
        shutil.rmtree(repo)
    for kind in sorted(set(options.models) | set(options.peer_models)):
        models.write_repository(
            repo,
            kind,
            max_batch_size=options.max_batch_size,
            max_queue_delay_ms=options.max_queue_delay_ms,
            instance_count=options.instance_count,
        )
    log(f"model repository {repo} (runtime builders: {models.runtime_provides_models()})")


def reexec_in_netns(argv: list[str]) -> int:
    """Runs this very command again inside a private network namespace with only loopback."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-r", "-n"]
    script = 'ip link set lo up && exec "$@"'
    cmd = [*unshare, "sh", "-c", script, "sh", sys.executable, *sys.argv[:1], *argv]
    env = {**os.environ, IN_NETNS_ENV: "1"}
    # unshare and sh exec into the measuring process, so this child is it; pass a SIGTERM on
    # and wait, so it can stop its servers (subprocess.run would SIGKILL it instead).
    child = subprocess.Popen(cmd, env=env)
    signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
    return child.wait()


# ----------------------------------------------------------------------------- measurement


def versions(options: Options) -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "torch": installed_version("torch"),
        "numpy": installed_version("numpy"),
        "davit": installed_version("davit"),
        "tritonclient (bench)": installed_version("tritonclient"),
    }
    probes = {
        "pytriton": ("nvidia-pytriton",),
        "kserve": ("kserve",),
        "mlserver": ("mlserver", "uvloop"),
        "perf_analyzer": ("tritonclient",),
    }
    for venv, packages in probes.items():
        python = options.work_dir / "venvs" / venv / "bin" / "python"
        if not python.exists():
            continue
        code = (
            "import sys, importlib.metadata as m;"
            "print(' '.join(m.version(p) for p in sys.argv[1:]))"
        )
        out = subprocess.run(
            [str(python), "-c", code, *packages], capture_output=True, text=True, check=False
        )
        for package, version in zip(packages, out.stdout.split(), strict=False):
            found[f"{package} ({venv} venv)"] = version
    for tool, flag in (("wrk", "-v"), ("h2load", "--version")):
        out = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
        first = (out.stdout + out.stderr).strip().splitlines()
        found[tool] = first[0] if first else "?"
    return found


def machine() -> dict[str, str]:
    cpu = "?"
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with Path("/proc/meminfo").open() as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "os": platform.platform(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def run_raw(options: Options, model: models.BenchModel) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for threads in options.raw_threads:
        cmd = [
            sys.executable,
            "-m",
            "bench.rawtorch",
            "--model-file",
            str(model.model_file),
            "--input-shape",
            ",".join(str(d) for d in model.input.shape),
            "--threads",
            str(threads),
            "--batches",
            "1,8,32,64",
            "--duration",
            str(options.duration_s / 2),
        ]
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=8 * options.duration_s + 120,
            check=True,
            env={**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)},
        )
        for line in out.stdout.splitlines():
            rows.append({"model": model.name, **json.loads(line)})
    return rows


@dataclass(frozen=True)
class Prepared:
    transport: str
    body: BodyFile
    url_path: str
    ok_response_bytes: int  # gRPC only


def prepare_transport(
    server: RunningServer, model: models.BenchModel, transport: str, work_dir: Path
) -> Prepared:
    """Builds the replayed body and checks one real response against local torch."""
    inputs = models.sample_input(model, 1)
    want = models.reference_output(model, inputs)
    wire = payloads.WireTensor(model.input.name, model.input.datatype)
    url_path = f"/v2/models/{model.name}/infer"
    body_dir = work_dir / "bodies" / server.name
    if transport == payloads.GRPC:
        body = payloads.grpc_body(model.name, wire, inputs)
        got, framed = payloads.grpc_infer(server.grpc_port, model.name, wire, inputs, 30.0)
    else:
        body = (
            payloads.json_body(model.name, wire, inputs)
            if transport == payloads.HTTP_JSON
            else payloads.binary_body(wire, model.output.name, inputs)
        )
        got = payloads.http_infer(server.http_port, url_path, body, model.output.datatype, 30.0)
        framed = 0
    if not models.outputs_match(got, want):
        diff = float(abs(got.astype("float64") - want).max()) if got.shape == want.shape else -1
        raise AssertionError(
            f"{server.name} {transport} {model.name}: output differs from local torch "
            f"(shape {got.shape} vs {want.shape}, max abs diff {diff})"
        )
    path = payloads.write_body(body, body_dir / f"{model.name}-{transport}.bin")
    return Prepared(transport, BodyFile(path, body), url_path, framed)


def children_cpu_s() -> float:
    """CPU of reaped children: during a point the only one reaped is the load generator."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drive(
    server: RunningServer, prepared: Prepared, concurrency: int, duration_s: float, work_dir: Path
) -> LoadResult:
    if prepared.transport == payloads.GRPC:
        return run_h2load(
            server.grpc_port,
            prepared.body,
            concurrency,
            duration_s,
            prepared.ok_response_bytes,
            work_dir / "h2load.log",
        )
    return run_wrk(server.http_port, prepared.url_path, prepared.body, concurrency, duration_s)


def measure_server(
    server: RunningServer,
    model: models.BenchModel,
    options: Options,
    results: dict[str, Any],
    save: Any,
) -> None:
    for transport in server.transports:
        label = f"{server.name} {transport} {model.name}"
        try:
            prepared = prepare_transport(server, model, transport, options.work_dir)
        except Exception as error:  # recorded in the report, the run goes on
            log(f"{label}: correctness check FAILED: {error}")
            results["checks"].append(
                {
                    "server": server.name,
                    "transport": transport,
                    "model": model.name,
                    "ok": False,
                    "detail": str(error),
                }
            )
            save()
            continue
        results["checks"].append(
            {
                "server": server.name,
                "transport": transport,
                "model": model.name,
                "ok": True,
                "detail": "allclose",
            }
        )
        drive(server, prepared, min(8, max(options.concurrency)), 1.0, options.work_dir)  # warm
        for concurrency in options.concurrency:
            load_before = os.getloadavg()[0]  # other jobs on the machine skew a point
            before = server.batch_totals(model.name) if server.batch_totals else None
            monitor = TreeMonitor(server.process.pid)
            monitor.start()
            children_before = children_cpu_s()
            wall_before = time.monotonic()
            try:
                load = drive(server, prepared, concurrency, options.duration_s, options.work_dir)
            except Exception as error:
                monitor.stop()
                log(f"{label} c={concurrency}: load generator failed: {error}")
                continue
            usage = monitor.stop()
            loadgen_cpu = (
                100.0 * (children_cpu_s() - children_before) / (time.monotonic() - wall_before)
            )
            after = server.batch_totals(model.name) if server.batch_totals else None
            mean_batch = (
                mean_from_deltas(before[1], before[0], after[1], after[0])
                if before is not None and after is not None
                else float("nan")
            )
            point = {
                "server": server.name,
                "transport": transport,
                "model": model.name,
                "concurrency": concurrency,
                **asdict(load),
                "rps": load.rps,
                "cpu_percent": usage.cpu_percent,
                "peak_rss_mb": usage.peak_rss_mb,
                "mean_batch": mean_batch,
                "load1_before": load_before,
                "loadgen_cpu_percent": loadgen_cpu,
            }
            results["points"].append(point)
            save()
            log(
                f"{label} c={concurrency}: {load.rps:,.0f} rps p50 {load.p50_ms:.2f} ms "
                f"p99 {load.p99_ms:.2f} ms errors {load.errors} cpu {usage.cpu_percent:.0f}% "
                f"rss {usage.peak_rss_mb:.0f} MB batch {mean_batch:.1f} "
                f"loadgen cpu {loadgen_cpu:.0f}%"
            )


def run_perf_analyzer_on(server: RunningServer, options: Options, results: dict[str, Any]) -> None:
    venv = options.work_dir / "venvs" / "perf_analyzer"
    for protocol, port in (("http", server.http_port), ("grpc", server.grpc_port)):
        try:
            points, _ = run_perf_analyzer(
                venv,
                "mlp",
                protocol,
                port,
                [1, 32],
                max(2000, int(options.duration_s * 1000 / 2)),
                options.work_dir,
                timeout_s=12 * options.duration_s + 120,
            )
        except Exception as error:
            log(f"perf_analyzer {protocol}: FAILED: {error}")
            results["perf_analyzer"].append(
                {"server": server.name, "protocol": protocol, "error": str(error)[-1500:]}
            )
            continue
        for p in points:
            results["perf_analyzer"].append({"server": server.name, **asdict(p)})
            log(
                f"perf_analyzer {server.name} {protocol} c={p.concurrency}: "
                f"{p.infer_per_s:,.0f} infer/s p50 {p.p50_ms:.2f} ms p99 {p.p99_ms:.2f} ms"
            )


def server_starter(
    name: str, kind: str, options: Options, repo: Path, model: models.BenchModel
) -> Callable[[], RunningServer] | None:
    """How to start server `name` for model `kind`, or None when it does not serve it in this
    run (peers serve only --peer-models)."""
    if name == "davit":
        return (
            partial(start_davit, repo, options.torch_threads, options.work_dir)
            if kind in options.models
            else None
        )
    if kind not in options.peer_models:
        return None
    spec = PEERS[name]
    return partial(
        start_peer,
        spec,
        options.work_dir / "venvs" / spec.venv,
        model,
        threads=options.torch_threads,
        max_batch_size=options.max_batch_size,
        max_queue_delay_ms=options.max_queue_delay_ms,
        work_dir=options.work_dir,
    )


def measure(options: Options, argv: list[str]) -> dict[str, Any]:
    warnings.filterwarnings("ignore", category=FutureWarning)
    started = time.time()
    repo = options.work_dir / "repository"
    all_models = {
        kind: models.read_model(repo, kind)
        for kind in sorted(set(options.models) | set(options.peer_models))
    }
    results: dict[str, Any] = {
        "command": " ".join(["runtime/bench/run.py", *argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "options": {k: str(v) for k, v in asdict(options).items()},
        "machine": machine(),
        "versions": versions(options),
        "runtime_builders": models.runtime_provides_models(),
        "raw": [],
        "points": [],
        "checks": [],
        "perf_analyzer": [],
        "failures": [],
    }
    options.results_dir.mkdir(parents=True, exist_ok=True)
    json_path = options.results_dir / "results.json"

    def save() -> None:
        json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")

    # Model by model, every server back to back: the points compared with each other (the
    # targets are on the MLP) are taken minutes apart, not a quarter of an hour apart.
    kinds = list(dict.fromkeys([*options.models, *options.peer_models]))
    for kind in kinds:
        log(f"raw torch {kind} (threads {options.raw_threads})")
        results["raw"].extend(run_raw(options, all_models[kind]))
        save()
        for name in options.servers:
            start_server = server_starter(name, kind, options, repo, all_models[kind])
            if start_server is None:
                continue
            server: RunningServer | None = None
            try:
                server = start_server()
                log(f"{name} up (http {server.http_port}, grpc {server.grpc_port})")
                measure_server(server, all_models[kind], options, results, save)
                if name in PERF_ANALYZER_TARGETS and options.perf_analyzer and kind == "mlp":
                    run_perf_analyzer_on(server, options, results)
            except Exception as error:  # one server failing must not lose the others' numbers
                log(f"{name} {kind}: {error}")
                results["failures"].append({"server": name, "detail": f"{kind}: {error}"})
            finally:
                if server is not None:
                    log(f"{name} stopped (exit {server.stop()})")
            save()
    results["wall_s"] = time.time() - started
    results["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    save()
    return results


def exit_on_sigterm(signum: int, _frame: object) -> None:
    # Turn a SIGTERM (a timeout, Ctrl-C in a wrapper) into SystemExit so the `finally` blocks
    # stop the server this run started: peers live in their own sessions and would outlive it.
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if os.environ.get(IN_NETNS_ENV) == "1" or not options.use_netns:
        if not options.use_netns:
            setup(options)
        results = measure(options, argv)
        report.write(results, options.results_dir)
        log(f"wrote {options.results_dir}/results.md and throughput.png")
        return 0
    setup(options)
    return reexec_in_netns(argv)
